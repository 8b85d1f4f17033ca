"""Rodas5P (sensitivity/rosenbrock.py): values against SciPy's Radau, the method's orders
measured with fixed steps, forward and adjoint sensitivities against finite differences and
the Kvaerno5 path, dense against banded linear algebra, and a dosed problem."""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import sensitivity as sens
from sensitivity import models
from sensitivity.integrate import solve
from sensitivity.models import brusselator_1d, robertson, van_der_pol
from sensitivity.solvers import linear as stiff_linear
from sensitivity.solvers.registry import solver_name
from sensitivity.solvers.rosenbrock import Rodas5P


def _scipy(model, times, params=None, y0=None, rtol=1e-12, atol=1e-14):
    p = {k: np.asarray(v) for k, v in (params or model.parameters).items()}
    f = jax.jit(lambda t, y: model.rhs(t, y, p))
    jac = jax.jit(jax.jacfwd(lambda t, y: model.rhs(t, y, p), argnums=1))
    sol = solve_ivp(lambda t, y: np.asarray(f(t, y)), (0.0, times[-1]), np.asarray(model.y0 if y0 is None else y0),
                    method="Radau", t_eval=times, rtol=rtol, atol=atol, jac=lambda t, y: np.asarray(jac(t, y)))
    assert sol.success
    return sol.y.T


# ----------------------------------------------------------------------------- values
def test_robertson_against_radau():
    times = np.concatenate([[0.0], np.logspace(-4, 5, 19)])
    prob = sens.Problem(robertson.model(), times=times, solver="rodas5p", rtol=1e-10, atol=1e-14)
    traj = sens.simulate(prob)
    ref = _scipy(prob.model, times)
    np.testing.assert_allclose(traj.states, ref, rtol=3e-8, atol=1e-13)
    assert traj.stats["num_steps"] < 1000  # Kvaerno5 needs ~3000 here
    auto = sens.Problem(robertson.model(), times=times)  # flagged stiff: "auto" picks Rodas5P, and says why
    assert solver_name(auto) == "rodas5p"
    assert "Solver rodas5p: model 'robertson' is flagged stiff; Rodas5P: linearly implicit" in \
        sens.plan(auto, probe_problem=False).explain()


def test_stiff_van_der_pol_against_radau():
    m = van_der_pol.model(mu=1000.0)
    times = np.linspace(0.0, 3000.0, 31)
    traj = sens.simulate(sens.Problem(m, times=times, solver="rodas5p", rtol=1e-9, atol=1e-9, max_steps=20000))
    ref = _scipy(m, times, rtol=1e-11, atol=1e-11)
    # the relaxation oscillation's jumps magnify phase errors: compare x, within 1e-5
    np.testing.assert_allclose(traj.states[:, 0], ref[:, 0], atol=1e-5)


# ----------------------------------------------------------------------------- orders
def _forced_vdp(t, y, args):
    """A smooth, non-autonomous nonlinear problem (the time derivative term is exercised)."""
    return jnp.stack([y[1], 2.0 * (1.0 - y[0] ** 2) * y[1] - y[0] + 0.3 * jnp.sin(t)])


def test_orders_with_fixed_steps():
    """Global error at the last step (order 5) and between steps through the dense output
    (order 5 too: the interpolant's local error O(h^5) is below the step's global error):
    halving h must divide the error by ~32. A wrong coefficient drops an order."""
    T, y0 = 2.0, np.array([2.0, 0.0])
    ts = np.array([0.37, 1.13, 1.71, T])
    ref = solve_ivp(lambda t, y: np.asarray(_forced_vdp(t, y, None)), (0.0, T), y0, method="DOP853",
                    t_eval=ts, rtol=1e-13, atol=1e-13).y.T

    @jax.jit
    def run(dt):
        return diffrax.diffeqsolve(diffrax.ODETerm(_forced_vdp), Rodas5P(), 0.0, T, dt, jnp.asarray(y0), None,
                                   saveat=diffrax.SaveAt(ts=ts), stepsize_controller=diffrax.ConstantStepSize(),
                                   max_steps=200).ys

    errs = []
    for n in (20, 40, 80):
        ys = np.asarray(run(T / n))
        errs.append((np.abs(ys[-1] - ref[-1]).max(), np.abs(ys[:-1] - ref[:-1]).max()))
    errs = np.array(errs)
    orders = np.log2(errs[:-1] / errs[1:])
    assert np.all(orders > 4.6), orders

    # the embedded estimate (k_8) of one step is O(h^5): order of the error estimate
    solver, term = Rodas5P(), diffrax.ODETerm(_forced_vdp)
    est = [np.abs(np.asarray(solver.step(term, 0.3, 0.3 + h, jnp.asarray(y0), None, None, False)[1])).max()
           for h in (0.04, 0.02)]
    assert 4.5 < np.log2(est[0] / est[1]) < 5.5


# ----------------------------------------------------------------------------- sensitivities
OBJ_W = jnp.asarray(np.random.default_rng(3).uniform(0.5, 1.5, (8, 3)))


def _objective(ys):
    return jnp.sum(OBJ_W * ys)


@pytest.fixture(scope="module")
def rob():
    """Robertson with all three rate constants and y0 of the first species as inputs."""
    times = np.array([0.0, 1e-3, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4])
    return sens.Problem(robertson.model(), times=times, wrt=["k1", "k2", "k3", "y0.y1"], solver="rodas5p",
                        rtol=1e-10, atol=1e-14)


def _fd(prob, rel=1e-5):
    """Central differences of the outputs (n_times, n_of, n_inputs), relative steps."""
    cols = []
    for name, x in zip(prob.input_names, prob.x0()):
        h = rel * abs(x)
        out = []
        for s in (+1, -1):
            if name.startswith("y0."):
                y0 = prob.model.y0.copy()
                y0[prob.model.states.index(name[3:])] = x + s * h
                out.append(sens.simulate(prob.replace(y0=y0)).outputs)
            else:
                out.append(sens.simulate(prob.replace(parameters={name: x + s * h})).outputs)
        cols.append((out[0] - out[1]) / (2 * h))
    return np.stack(cols, axis=-1)


@pytest.fixture(scope="module")
def rob_forward(rob):
    return sens.jacobian(rob, mode="forward")


@pytest.fixture(scope="module")
def rob_references(rob):
    """Central finite differences of Rodas5P solves, and Kvaerno5's forward Jacobian."""
    return _fd(rob), sens.jacobian(rob.replace(solver="kvaerno5"), mode="forward").values


def test_forward_jacobian_against_finite_differences_and_kvaerno5(rob_forward, rob_references):
    J = rob_forward.values
    fd, kv = rob_references
    scale = np.abs(J).max(axis=(0, 1))  # per input
    assert (np.abs(J - fd) / scale).max() < 1e-5  # FD truncation ~1e-10 and solver noise 1e-10 / 1e-5
    assert (np.abs(J - kv) / scale).max() < 1e-6


def test_adjoint_gradient_against_finite_differences_forward_and_kvaerno5(rob, rob_forward, rob_references):
    """Reverse mode through the checkpointed adjoint equals the chain rule through forward
    tangents to rounding (both differentiate the same discrete scheme), and the chain rule
    through finite differences and through Kvaerno5's Jacobian to the tolerances above."""
    g = sens.gradient(rob, _objective, mode="adjoint")
    assert g.variant == "checkpoint"
    W = np.asarray(OBJ_W)
    chain = np.einsum("to,toi->i", W, rob_forward.values)
    np.testing.assert_allclose(g.grad, chain, rtol=1e-8)  # rounding, amplified by the stiff steps
    np.testing.assert_allclose(g.value, float(np.sum(W * rob_forward.outputs)), rtol=1e-12)
    fd, kv = rob_references
    scale = np.einsum("to,toi->i", W, np.abs(rob_forward.values))  # per input
    assert (np.abs(g.grad - np.einsum("to,toi->i", W, fd)) / scale).max() < 1e-5
    assert (np.abs(g.grad - np.einsum("to,toi->i", W, kv)) / scale).max() < 1e-6


def test_lean_rodas5p_equals_the_diffrax_class_and_differentiates_its_own_steps(rob, rob_forward, rob_references):
    """solver="rodas5p_lean" (the lean Rodas5P loop PEtab runs): the same tableau with
    Hairer's controller, so the values agree with the diffrax class and finite differences
    to the tolerances, forward and adjoint differentiate the same discrete solve (equal to
    rounding); a dosed problem runs the diffrax class (the loop does not cut solves)."""
    lean = rob.replace(solver="rodas5p_lean")
    J = sens.jacobian(lean, mode="forward")
    scale = np.abs(rob_forward.values).max(axis=(0, 1))
    assert (np.abs(J.values - rob_references[0]) / scale).max() < 1e-5
    assert (np.abs(J.values - rob_forward.values) / scale).max() < 1e-6
    np.testing.assert_allclose(J.outputs, rob_forward.outputs, rtol=1e-7, atol=1e-14)
    g = sens.gradient(lean, _objective, mode="adjoint")
    np.testing.assert_allclose(g.grad, np.einsum("to,toi->i", np.asarray(OBJ_W), J.values), rtol=1e-8)
    dosed = lean.replace(doses=[sens.Dose(time=1.0, state="y1", amount=0.1)])
    assert not solve.lean_rodas_applies(dosed, "forward") and solve.lean_rodas_applies(lean, "checkpoint")
    assert not solve.lean_rodas_applies(lean, "direct")


# ----------------------------------------------------------------------------- dense vs banded
def _bruss_pattern(n):
    N = n // 2
    tri = np.eye(N, k=-1) + np.eye(N) + np.eye(N, k=1)
    return np.block([[tri, np.eye(N)], [np.eye(N), tri]]) != 0


@pytest.fixture(scope="module")
def bruss_pair():
    base = brusselator_1d.model(n=50)
    dense = sens.ODEModel(base.name, 50, base.parameters, base.rhs, base.y0, stiff=True, jacobian_sparsity="dense")
    band = sens.ODEModel(base.name, 50, base.parameters, base.rhs, base.y0, stiff=True,
                         jacobian_sparsity=_bruss_pattern(50))
    probs = [sens.Problem(m, times=np.linspace(0.0, 2.0, 6), wrt=["A", "B", "y0.u[3]"],
                          of=["u[0]", "u[12]", "u[30]"], solver="rodas5p", rtol=1e-9, atol=1e-9)
             for m in (dense, band)]
    assert [stiff_linear.choose(p).kind for p in probs] == ["dense", "banded"]
    assert stiff_linear.rosenbrock_for(probs[0]).layout is None
    assert stiff_linear.rosenbrock_for(probs[1]).layout is not None
    return probs


def test_banded_equals_dense_values_forward_and_adjoint(bruss_pair):
    dense, band = (sens.jacobian(p, mode="forward") for p in bruss_pair)
    np.testing.assert_allclose(band.outputs, dense.outputs, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(band.values, dense.values, rtol=1e-8, atol=1e-10 * np.abs(dense.values).max())
    # the banded adjoint (transposed block solves) against the chain rule through dense tangents
    gb = sens.gradient(bruss_pair[1], lambda ys: jnp.sum(ys ** 2), mode="adjoint")
    np.testing.assert_allclose(gb.grad, np.einsum("to,toi->i", 2.0 * dense.outputs, dense.values), rtol=1e-8)
    ref = _scipy(bruss_pair[0].model, np.array([0.0, 2.0]), rtol=1e-12, atol=1e-12)[-1]
    idx = [bruss_pair[0].model.states.index(s) for s in ("u[0]", "u[12]", "u[30]")]
    np.testing.assert_allclose(band.outputs[-1], ref[idx], rtol=1e-8)


# ----------------------------------------------------------------------------- doses
def test_doses_against_bateman_superposition():
    """Oral PK with three bolus doses (segments of the solve) against the closed form."""
    model = models.get("pk_one_compartment_oral")
    times = np.linspace(0.0, 36.0, 13)
    doses = [sens.Dose(t, "depot", 320.0) for t in (0.0, 12.0, 24.0)]
    prob = sens.Problem(model, times, wrt=["ka", "CL", "V"], doses=doses, solver="rodas5p", rtol=1e-10, atol=1e-10)
    res = sens.jacobian(prob, mode="forward")

    def bateman(x):
        ka, CL, V = x[0], x[1], x[2]
        k = CL / V
        s = jnp.asarray(times)[:, None] - jnp.array([0.0, 12.0, 24.0])[None, :]
        after = s >= 0
        s = jnp.where(after, s, 0.0)
        term = 320.0 * ka / (V * (ka - k)) * (jnp.exp(-k * s) - jnp.exp(-ka * s))
        return jnp.sum(jnp.where(after, term, 0.0), axis=1)

    x = jnp.asarray(prob.x0())
    C, J = np.asarray(bateman(x)), np.asarray(jax.jacfwd(bateman)(x))
    np.testing.assert_allclose(res.outputs[:, 0], C, rtol=1e-7, atol=1e-10 * C.max())
    assert (np.abs(res.values[:, 0, :] - J) / np.abs(J).max(axis=0)).max() < 1e-7
