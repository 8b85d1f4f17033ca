"""Our ESDIRK solver (`solvers.esdirk`, Kvaerno5's tableau with our chord iteration and
stage derivatives by custom_root) against diffrax's own Kvaerno5 (dense LU, with the
iterating `chord.Chord`) and against central differences: solutions, forward tangents
(ForwardMode) and adjoint gradients (RecursiveCheckpointAdjoint), on small heat_1d and
brusselator_1d models, with the banded and the dense linear algebra."""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sensitivity.core import sparsity
from sensitivity.models import brusselator_1d, heat_1d
from sensitivity.solvers import banded
from sensitivity.solvers.esdirk import BandedNewton, DenseNewton, esdirk_class
from sensitivity.solvers.newton.chord import Chord

RTOL, ATOL = 1e-8, 1e-10


def _setup(model, times):
    """(solve(solver, x, adjoint) -> ys, x0, banded layout): x = (parameters..., y0)."""
    names = list(model.parameters)
    st = sparsity.analyse(sparsity.detect(model.rhs, 0.0, model.y0, model.parameters))
    layout = banded.Layout(st, banded.block_size(st.reordered_bandwidth, model.n_states))
    term = diffrax.ODETerm(lambda t, y, p: model.rhs(t, y, p))
    ts = jnp.asarray(times)
    k = len(names)

    def solve(solver, x, adjoint):
        p = {name: x[i] for i, name in enumerate(names)}
        return diffrax.diffeqsolve(term, solver, 0.0, ts[-1], None, x[k:], p, saveat=diffrax.SaveAt(ts=ts),
                                   stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
                                   max_steps=4096, adjoint=adjoint).ys

    x0 = jnp.concatenate([jnp.asarray([model.parameters[n] for n in names], dtype=float), jnp.asarray(model.y0)])
    return solve, x0, layout


def _loss(ys):
    return jnp.sum(jnp.sin(ys) ** 2)


def _solvers(layout):
    Ours = esdirk_class(diffrax.Kvaerno5)
    return {"diffrax": diffrax.Kvaerno5(root_finder=diffrax.with_stepsize_controller_tols(Chord)()),
            "dense": Ours(linear=DenseNewton()), "banded": Ours(linear=BandedNewton(layout))}


@pytest.fixture(scope="module")
def bruss():
    """brusselator_1d, 16 states: solve, x0, solvers, and jitted ys of diffrax's and ours (banded)."""
    m = brusselator_1d.model(n=16)
    solve, x0, layout = _setup(m, np.linspace(0.5, 4.0, 8))
    solvers = _solvers(layout)
    ys = {k: jax.jit(lambda x, s=solvers[k]: solve(s, x, diffrax.RecursiveCheckpointAdjoint()))
          for k in ("diffrax", "banded")}
    return solve, x0, solvers, ys


def test_solution_matches_diffrax_kvaerno5_heat_and_brusselator(bruss):
    # the same method and Newton test; the chord matrix is taken at (t0, y0) here and at
    # the second stage in diffrax: the two differ by Newton errors (< tolerance)
    _, x0, _, ys = bruss
    np.testing.assert_allclose(ys["banded"](x0), ys["diffrax"](x0), rtol=1e-7, atol=1e-9)
    m = heat_1d.model(n=12)
    solve, x, layout = _setup(m, np.linspace(0.02, 0.3, 6))
    solvers = _solvers(layout)
    ref = solve(solvers["diffrax"], x, diffrax.RecursiveCheckpointAdjoint())
    ours = solve(solvers["dense"], x, diffrax.RecursiveCheckpointAdjoint())
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-9)
    # another tableau of the family: Kvaerno3 (4 stages, not stiffly accurate in b)
    ref3 = solve(diffrax.Kvaerno3(root_finder=diffrax.with_stepsize_controller_tols(Chord)()), x,
                 diffrax.RecursiveCheckpointAdjoint())
    ours3 = solve(esdirk_class(diffrax.Kvaerno3)(linear=BandedNewton(layout)), x, diffrax.RecursiveCheckpointAdjoint())
    np.testing.assert_allclose(ours3, ref3, rtol=1e-7, atol=1e-9)


def test_forward_and_adjoint_derivatives_match_diffrax_and_central_differences(bruss):
    solve, x0, solvers, ys = bruss
    idx = jnp.asarray([0, 1, 3 + 2, 3 + 11])  # A, B and the initial values y0[2], y0[11]

    def loss(solver, adjoint, xi):
        return _loss(solve(solver, x0.at[idx].set(xi), adjoint))

    xi = x0[idx]
    ours = solvers["banded"]
    grad = jax.jit(jax.grad(lambda v: loss(ours, diffrax.RecursiveCheckpointAdjoint(), v)))(xi)
    fwd = jax.jit(jax.jacfwd(lambda v: loss(ours, diffrax.ForwardMode(), v)))(xi)
    ref = jax.jit(jax.grad(lambda v: loss(solvers["diffrax"], diffrax.RecursiveCheckpointAdjoint(), v)))(xi)
    scale = np.abs(ref).max()
    np.testing.assert_allclose(fwd, grad, rtol=1e-9, atol=1e-11 * scale)  # same stage derivatives
    np.testing.assert_allclose(grad, ref, rtol=1e-6, atol=1e-8 * scale)
    eps = 1e-5
    fd = np.array([(_loss(ys["banded"](x0.at[idx[i]].add(eps))) - _loss(ys["banded"](x0.at[idx[i]].add(-eps))))
                   / (2 * eps) for i in range(len(idx))])
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6 * scale)


def test_dense_and_banded_newton_factors_solve_the_same_newton_matrix():
    """The two linear algebras of `esdirk` on one Newton matrix I - gh J and on a linear map:
    solves and transposed solves against numpy."""
    m = brusselator_1d.model(n=16)
    p = {k: jnp.asarray(v) for k, v in m.parameters.items()}
    y = jnp.asarray(m.y0) + 0.1 * jnp.arange(16.0) / 16
    f = lambda v: m.rhs(0.0, v, p)  # noqa: E731
    J = np.asarray(jax.jacfwd(f)(y))
    M = np.eye(16) - 0.3 * J
    r = jnp.asarray(np.random.default_rng(0).standard_normal(16))
    _, _, layout = _setup(m, [1.0])
    for lin in (DenseNewton(), BandedNewton(layout)):
        def run(y, r, lin=lin):
            fac = lin.factor(lin.jacobian(f, y), 0.3)
            lf = lin.linear_factors(lambda v: jnp.asarray(M) @ v, y)
            return lin.solve(fac, r), lin.solve_t(fac, r), lin.solve(lf, r)
        x, xt, xl = jax.jit(run)(y, r)
        np.testing.assert_allclose(x, np.linalg.solve(M, r), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(xt, np.linalg.solve(M.T, r), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(xl, np.linalg.solve(M, r), rtol=1e-10, atol=1e-12)
