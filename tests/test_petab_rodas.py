"""The lean Rosenbrock loop of the PEtab pipeline (sensitivity/solvers/lean_rodas.py, on the
loop of solvers/lean.py and the stage kernel of solvers/rosenbrock.py) against closed forms
and SciPy: values at save times, steady states, and its forward and reverse derivatives
(exact for the discrete solve, so they agree to rounding with each other and to the
tolerance with the closed-form sensitivities)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.linalg import expm

from sensitivity.solvers import lean_rodas as petab_rodas

TOL = jnp.asarray([1e-9, 1e-9])
TS = jnp.asarray([0.0, 0.3, 1.0, 2.5, 2.5, 4.0])  # a repeated time, as in padded PEtab arrays


def _matrix(p):
    # stiff (eigenvalues ~ -1000 and ~ -p1), parameters in every entry
    return jnp.array([[-p[0], p[1], 0.0], [p[0], -p[1] - p[2], 1.0], [0.0, p[2], -1.0]])


def _linear(t, y, p):
    return _matrix(p) @ y


P = jnp.array([1000.0, 0.5, 2.0])
Y0 = jnp.array([1.0, 0.0, 0.5])


def _closed(p):
    A = np.asarray(_matrix(p))
    return np.stack([expm(A * float(t)) @ np.asarray(Y0) for t in TS])


@pytest.mark.parametrize("method", sorted(petab_rodas.TABLEAUS))
def test_values_at_save_times_match_the_matrix_exponential(method):
    ys, y_end, t_end, ok, n = jax.jit(
        lambda p: petab_rodas.solve(_linear, Y0, 0.0, 4.0, TS, p, TOL, 10_000, autonomous=True,
                                    method=method))(P)
    assert bool(ok) and float(t_end) == 4.0 and 5 < int(n) < 2000
    want = _closed(P)
    assert np.max(np.abs(np.asarray(ys) - want)) < 1e-7
    assert np.allclose(y_end, want[-1], atol=1e-7)


def test_time_dependent_rhs_matches_scipy():
    def f(t, y, k):
        return -k * (y - jnp.sin(t))

    ys, *_ , ok, _ = petab_rodas.solve(f, jnp.array([1.0]), 0.0, 4.0, TS, 50.0, TOL, 10_000,
                                       method="rodas5p")
    ref = solve_ivp(lambda t, y: -50.0 * (y - np.sin(t)), (0, 4), [1.0], method="Radau",
                    dense_output=True, rtol=1e-12, atol=1e-12)
    assert bool(ok) and np.max(np.abs(np.asarray(ys)[:, 0] - ref.sol(np.asarray(TS))[0])) < 1e-7


def test_steady_state_stops_where_the_rate_is_below_the_tolerance():
    # y' = k1 - k2 y: steady state k1 / k2; the stop needs |f| < atol + rtol |y|
    def f(t, y, k):
        return k[0] - k[1] * y

    k = jnp.array([2.0, 0.5])
    _, y, t, ok, _ = petab_rodas.solve(f, jnp.array([0.0]), 0.0, jnp.inf, jnp.zeros(1), k, TOL, 10_000,
                                       autonomous=True, method="rodas5p",
                                       steady=lambda t, y: jnp.all(jnp.abs(f(t, y, k)) < 1e-9 + 1e-9 * jnp.abs(y)))
    assert bool(ok) and np.isfinite(float(t))
    assert abs(float(y[0]) - 4.0) < 1e-8 / 0.5 * 1.01


@pytest.fixture(scope="module")
def derivatives():
    def out(p, kind):
        ys = petab_rodas.solve(_linear, Y0 * p[1], 0.0, 4.0, TS, p, TOL, 10_000, kind=kind,
                               autonomous=True, method="rodas5p")[0]
        return jnp.sum(ys ** 2)

    fwd = jax.jit(jax.jacfwd(lambda p: out(p, "lax")))(P)
    rev = jax.jit(jax.grad(lambda p: out(p, "checkpointed")))(P)
    return out, np.asarray(fwd), np.asarray(rev)


def test_forward_and_reverse_derivatives_agree(derivatives):
    _, fwd, rev = derivatives
    assert np.linalg.norm(fwd - rev) < 1e-10 * np.linalg.norm(fwd)


def test_derivative_matches_the_closed_form(derivatives):
    # d/dp sum_t |expm(A(p) t) y0(p)|^2 by central differences of the closed form
    _, fwd, _ = derivatives

    def exact(p):
        A = np.asarray(_matrix(p))
        return sum(float(np.sum((expm(A * float(t)) @ (np.asarray(Y0) * p[1])) ** 2)) for t in TS)

    p = np.asarray(P)
    fd = np.array([(exact(p + h * e) - exact(p - h * e)) / (2 * h)
                   for e, h in zip(np.eye(3), 1e-6 * np.maximum(np.abs(p), 1.0))])
    assert np.linalg.norm(fwd - fd) < 1e-6 * np.linalg.norm(fd)


def test_above_the_explicit_inverse_size_the_lu_path_matches_the_closed_form_and_its_derivatives():
    # 12 coupled copies of the stiff system (36 states > EXPLICIT_INVERSE_MAX): W is
    # LU-factorised instead of inverted; values against expm, forward against reverse, and the
    # derivative against central differences of the closed form
    from sensitivity.solvers.rosenbrock import EXPLICIT_INVERSE_MAX

    k = 12
    n = 3 * k
    assert n > EXPLICIT_INVERSE_MAX
    ring = jnp.roll(jnp.eye(k), 1, axis=1) * 0.05  # a weak coupling, so the matrix is not block-diagonal

    def big(p):
        return jnp.kron(jnp.eye(k), _matrix(p)) + jnp.kron(ring, jnp.eye(3))

    y0 = jnp.tile(Y0, k)

    def out(p, kind):
        ys = petab_rodas.solve(lambda t, y, p_: big(p_) @ y, y0 * p[1], 0.0, 4.0, TS, p, TOL, 10_000,
                               kind=kind, autonomous=True, method="rodas5p")[0]
        return ys

    def loss(p, kind):
        ys = out(p, kind)
        return jnp.sum(ys ** 2), ys

    fwd, ys = jax.jit(jax.jacfwd(lambda p: loss(p, "lax"), has_aux=True))(P)
    fwd, ys = np.asarray(fwd), np.asarray(ys)
    A = np.asarray(big(P))
    want = np.stack([expm(A * float(t)) @ (np.asarray(y0) * float(P[1])) for t in TS])
    assert np.max(np.abs(ys - want)) < 1e-7 * max(1.0, np.max(np.abs(want)))
    rev = np.asarray(jax.jit(jax.grad(lambda p: loss(p, "checkpointed")[0]))(P))
    assert np.linalg.norm(fwd - rev) < 1e-10 * np.linalg.norm(fwd)

    def exact(p):
        B = np.asarray(big(jnp.asarray(p)))
        return sum(float(np.sum((expm(B * float(t)) @ (np.asarray(y0) * p[1])) ** 2)) for t in TS)

    p = np.asarray(P)
    fd = np.array([(exact(p + h * e) - exact(p - h * e)) / (2 * h)
                   for e, h in zip(np.eye(3), 1e-6 * np.maximum(np.abs(p), 1.0))])
    assert np.allclose(fwd, fd, rtol=1e-5, atol=1e-8 * np.max(np.abs(fd)))
