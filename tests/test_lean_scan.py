"""The lean Rosenbrock step with its stages as a lax.scan (`lean_step(scan=True)`, what large
PEtab models compile) against the unrolled step and against central differences of the step
map: the new state and error estimate, their forward tangents in (y, args), and the reverse
derivative of a short solve, on a non-autonomous nonlinear model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sensitivity.solvers.lean import rosenbrock_solve
from sensitivity.solvers.rosenbrock import TABLEAUS, lean_step


def f(t, y, p):
    a, b = p[0], p[1]
    return jnp.stack([-a * y[0] * y[1] + jnp.sin(t), a * y[0] * y[1] - b * y[1] ** 2, b * y[1] ** 2 - 0.3 * y[2]])


Y = jnp.array([1.2, 0.4, 0.1])
P = jnp.array([1.5, 0.7])
T, H = 0.3, 0.05


@pytest.mark.parametrize("method", ["rodas5p", "rodas4"])
def test_scanned_step_equals_the_unrolled_one_and_its_tangent_central_differences(method):
    tab = TABLEAUS[method]

    def step(y, p, scan):
        return lean_step(f, T, y, H, p, False, tab, scan=scan)

    for a, b in zip(step(Y, P, True), step(Y, P, False)):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    dy, dp = jnp.array([0.3, -0.2, 0.5]), jnp.array([0.1, -0.4])
    scanned = jax.jvp(lambda y, p: step(y, p, True), (Y, P), (dy, dp))[1]
    unrolled = jax.jvp(lambda y, p: step(y, p, False), (Y, P), (dy, dp))[1]
    eps = 1e-6
    central = [(u - v) / (2 * eps) for u, v in zip(step(Y + eps * dy, P + eps * dp, True),
                                                    step(Y - eps * dy, P - eps * dp, True))]
    for s, u, c in zip(scanned, unrolled, central):
        np.testing.assert_allclose(s, u, rtol=1e-11, atol=1e-14)
        np.testing.assert_allclose(s, c, rtol=1e-6, atol=1e-10)


def test_reverse_derivative_of_a_scanned_solve_equals_the_unrolled_one():
    ts = jnp.array([0.5, 1.0, 2.0])

    def loss(p, scan, kind):
        ys, _, _, ok, _ = rosenbrock_solve(f, Y, 0.0, 2.0, ts, p, (1e-8, 1e-8), 1000, kind=kind,
                                           method="rodas5p", scan_stages=scan)
        return jnp.sum(ys ** 2)

    g_scan = jax.grad(loss)(P, True, "checkpointed")
    np.testing.assert_allclose(g_scan, jax.grad(loss)(P, False, "checkpointed"), rtol=1e-9)
    np.testing.assert_allclose(jax.jacfwd(loss)(P, True, "lax"), g_scan, rtol=1e-9)


def test_a_vmapped_solve_whose_samples_end_at_different_times_has_finite_reverse_derivatives():
    """Under `jax.vmap` the loop runs until the last sample is done, and a done sample still
    computes (and discards) a step: its reverse derivative must not pick up that step's
    arithmetic (h = 0 made W infinite and the gradient NaN). Each sample's gradient equals
    that of its own solve, and forward mode's."""
    ts = jnp.array([0.5, 1.0, 2.0])
    ps = jnp.stack([P, P * jnp.array([3.0, 4.0])])  # the second takes more steps

    def loss(p, kind):
        ys, _, _, ok, _ = rosenbrock_solve(f, Y, 0.0, 2.0, ts, p, (1e-8, 1e-8), 1000, kind=kind, method="rodas5p")
        return jnp.sum(ys ** 2)

    steps = [int(rosenbrock_solve(f, Y, 0.0, 2.0, ts, p, (1e-8, 1e-8), 1000, method="rodas5p")[-1]) for p in ps]
    assert steps[0] != steps[1], steps
    g = jax.vmap(jax.grad(lambda p: loss(p, "checkpointed")))(ps)
    assert np.all(np.isfinite(np.asarray(g)))
    for p, gi in zip(ps, g):
        np.testing.assert_allclose(gi, jax.grad(lambda p_: loss(p_, "checkpointed"))(p), rtol=1e-9)
        np.testing.assert_allclose(gi, jax.jacfwd(lambda p_: loss(p_, "lax"))(p), rtol=1e-9)


def test_dense_output_saves_inside_the_steps_against_scipy_and_differentiates_the_same_solve():
    """Rodas5P's dense output (order 4) at 400 save times: the steps no longer stop at
    them (far fewer steps than landing), the values agree with SciPy's Radau at tight
    tolerances to the solve's tolerance, and the forward and reverse derivatives of the
    interpolated solve agree with each other and with central differences of it."""
    from scipy.integrate import solve_ivp

    ts = jnp.linspace(0.0, 4.0, 401)[1:]
    tol = (1e-9, 1e-9)

    def solve(p, dense, kind="lax"):
        return rosenbrock_solve(f, Y, 0.0, 4.0, ts, p, tol, 5000, kind=kind, method="rodas5p", dense_output=dense)

    ys, _, _, ok, steps = solve(P, True)
    steps_landing = int(solve(P, False)[-1])
    assert bool(ok) and int(steps) < steps_landing / 4, (int(steps), steps_landing)
    ref = solve_ivp(lambda t, y: np.asarray(f(t, jnp.asarray(y), P)), (0.0, 4.0), np.asarray(Y), method="Radau",
                    t_eval=np.asarray(ts), rtol=1e-12, atol=1e-14).y.T
    # within the tolerance, as a solve with few save times (landing on 400 over-resolves)
    assert float(np.max(np.abs(np.asarray(ys) - ref) / (tol[1] + tol[0] * np.abs(ref)))) < 1.5

    def loss(p, kind):
        return jnp.sum(solve(p, True, kind)[0] ** 2)

    g_fwd = jax.jacfwd(lambda p: loss(p, "lax"))(P)
    g_rev = jax.grad(lambda p: loss(p, "checkpointed"))(P)
    np.testing.assert_allclose(g_rev, g_fwd, rtol=1e-9)
    for j in range(2):  # the step sizes are those of the solve at P: differences of the same discrete map
        e = jnp.zeros(2).at[j].set(1e-6 * P[j])
        fd = (loss(P + e, "lax") - loss(P - e, "lax")) / (2 * e[j])
        np.testing.assert_allclose(g_fwd[j], fd, rtol=1e-4)


def test_a_step_saves_every_time_of_a_cluster_larger_than_its_window(monkeypatch):
    """The dense output interpolates at most `lean.DENSE_WINDOW` save times per step, and a
    step ends no later than the next time beyond them: 300 save times within 1e-3 of each
    other (and 100 spread out) are all saved, against SciPy's Radau, and as a solve that
    interpolates at every save time in every step gives them (its steps are the same
    except where the window cuts one short)."""
    from scipy.integrate import solve_ivp

    from sensitivity.solvers import lean
    ts = jnp.asarray(np.unique(np.concatenate([np.linspace(1.0, 1.001, 300), np.linspace(0.0, 4.0, 101)[1:]])))
    tol = (1e-9, 1e-9)

    def solve():
        return rosenbrock_solve(f, Y, 0.0, 4.0, ts, P, tol, 5000, method="rodas5p", dense_output=True)

    ys, _, _, ok, steps = solve()
    window = lean.DENSE_WINDOW
    monkeypatch.setattr(lean, "DENSE_WINDOW", 10_000)  # no window: every save time in every step
    ys_all, _, _, _, steps_all = solve()
    assert bool(ok) and int(steps) <= int(steps_all) + 3 * len(ts) // window
    ref = solve_ivp(lambda t, y: np.asarray(f(t, jnp.asarray(y), P)), (0.0, 4.0), np.asarray(Y), method="Radau",
                    t_eval=np.asarray(ts), rtol=1e-12, atol=1e-14).y.T
    for got in (ys, ys_all):
        assert float(np.max(np.abs(np.asarray(got) - ref) / (tol[1] + tol[0] * np.abs(ref)))) < 1.5


def test_the_dense_coefficients_and_their_tangents_scanned_unrolled_and_central_differences():
    tab = TABLEAUS["rodas5p"]

    def coefficients(y, p, scan):
        return lean_step(f, T, y, H, p, False, tab, scan=scan, dense=True)[2]

    dy, dp = jnp.array([0.3, -0.2, 0.5]), jnp.array([0.1, -0.4])
    np.testing.assert_allclose(coefficients(Y, P, True), coefficients(Y, P, False), rtol=1e-12, atol=1e-13)
    tangents = [jax.jvp(lambda y, p: coefficients(y, p, scan), (Y, P), (dy, dp))[1] for scan in (True, False)]
    eps = 1e-6
    central = (coefficients(Y + eps * dy, P + eps * dp, False) - coefficients(Y - eps * dy, P - eps * dp, False)) / (2 * eps)
    np.testing.assert_allclose(tangents[0], tangents[1], rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(tangents[1], central, rtol=1e-6, atol=2e-9)  # the H K sums cancel: rounding / eps
