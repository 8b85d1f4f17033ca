"""Newton iterations of the implicit solvers: the chord
iteration that iterates (`sensitivity.chord`), and the Jacobian/factorisation kept across
ESDIRK steps (`sensitivity.reuse`, `Problem(jacobian_reuse=True)`) against the path that
rebuilds the Newton matrix every step, for values, forward Jacobians and adjoint
gradients, on a banded 50-state problem and on Robertson."""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import sensitivity as sens
from sensitivity.models import brusselator_1d, robertson
from sensitivity.solvers import linear as stiff_linear


def _bruss_pattern(n):
    N = n // 2
    tri = np.eye(N, k=-1) + np.eye(N) + np.eye(N, k=1)
    return np.block([[tri, np.eye(N)], [np.eye(N), tri]]) != 0


def _sumsq(ys):
    return jnp.sum(ys ** 2)


# ------------------------------------------------------------------- the chord iteration
def test_chord_converges_where_verychord_rejected_half_the_steps():
    """diffrax 0.7.2's VeryChord fails every stage that needs a third chord iteration;
    Kvaerno5 then rejects about half its steps on the Brusselator. With `Chord` the solve
    takes a fraction of the steps and still matches a tight Radau reference."""
    m = brusselator_1d.model(n=20)
    times = np.linspace(0.5, 10.0, 20)
    prob = sens.Problem(m, times=times, t0=0.0, solver="kvaerno5", rtol=1e-6, atol=1e-8)
    ours = sens.simulate(prob)
    p = {k: jnp.asarray(v) for k, v in m.parameters.items()}
    term = diffrax.ODETerm(lambda t, y, a: m.rhs(t, y, a))
    old = diffrax.diffeqsolve(term, diffrax.Kvaerno5(), 0.0, times[-1], None, jnp.asarray(m.y0), p,
                              saveat=diffrax.SaveAt(ts=jnp.asarray(times)),
                              stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-8), max_steps=10_000)
    old_steps = int(old.stats["num_steps"])
    assert int(old.stats["num_rejected_steps"]) > 0.4 * old_steps  # the pathology
    assert ours.stats["num_steps"] < 0.2 * old_steps
    f = jax.jit(lambda t, y: m.rhs(t, y, p))
    jac = jax.jit(jax.jacfwd(lambda t, y: m.rhs(t, y, p), argnums=1))
    ref = solve_ivp(lambda t, y: np.asarray(f(t, y)), (0.0, times[-1]), m.y0, method="Radau", t_eval=times,
                    rtol=1e-11, atol=1e-12, jac=lambda t, y: np.asarray(jac(t, y))).y.T
    # global error of a 5th-order solve at rtol 1e-6 over ~10 oscillation-free time units:
    # a few 1e-4 relative (SciPy's BDF at the same tolerances: ~3e-5)
    np.testing.assert_allclose(ours.states, ref, rtol=0, atol=1e-3 * np.abs(ref).max())


# ------------------------------------------------------------------- reuse vs rebuild
@pytest.fixture(scope="module")
def bruss_pair():
    """The 50-state Brusselator (banded path: declared pattern), without and with reuse."""
    base = brusselator_1d.model(n=50)
    m = sens.ODEModel(base.name, 50, base.parameters, base.rhs, base.y0, stiff=True,
                      jacobian_sparsity=_bruss_pattern(50))
    probs = [sens.Problem(m, times=np.linspace(0.5, 6.0, 12), t0=0.0, wrt=["A", "B", "y0.u[3]"],
                          of=["u[0]", "u[12]", "u[45]"], solver="kvaerno5", rtol=1e-8, atol=1e-9,
                          jacobian_reuse=r) for r in (False, True)]
    assert stiff_linear.choose(probs[1]).kind == "banded"
    return probs


@pytest.fixture(scope="module")
def bruss_forward(bruss_pair):
    return [sens.jacobian(p, mode="forward") for p in bruss_pair]


def test_reuse_equals_rebuild_banded_values_forward_and_counts(bruss_forward):
    plain, reuse = bruss_forward
    # the same discretisation; the two differ by Newton errors (kappa = 1e-2 of the
    # tolerance per stage) and the step sequences they lead to: a few tolerances
    np.testing.assert_allclose(reuse.outputs, plain.outputs, rtol=1e-6, atol=1e-8)
    scale = np.abs(plain.values).max()
    np.testing.assert_allclose(reuse.values, plain.values, rtol=1e-5, atol=1e-6 * scale)
    st = reuse.stats
    steps = st["num_accepted_steps"]
    assert st["jacobian_evaluations"] >= 1 and st["factorisations"] >= st["jacobian_evaluations"]
    assert st["jacobian_evaluations"] < steps / 3 and st["factorisations"] < steps
    assert "jacobian_evaluations" not in plain.stats


def test_reuse_banded_adjoint_gradient_equals_rebuild_chain_rule(bruss_pair, bruss_forward):
    """The adjoint sweep through the reuse solver (transposed banded solves at the stage
    roots) against the gradient of the rebuild path by the chain rule on its forward
    Jacobian: sum_t,o 2 y_to dy_to/dx."""
    g = sens.gradient(bruss_pair[1], _sumsq, mode="adjoint")
    plain = bruss_forward[0]
    chain = np.einsum("to,toi->i", 2.0 * plain.outputs, plain.values)
    np.testing.assert_allclose(g.value, np.sum(plain.outputs ** 2), rtol=1e-7)
    np.testing.assert_allclose(g.grad, chain, rtol=1e-5, atol=1e-6 * np.abs(chain).max())


@pytest.fixture(scope="module")
def rob_pair():
    m = robertson.model()
    return [sens.Problem(m, times=np.array([0.1, 1.0, 10.0, 40.0]), t0=0.0, wrt=["k1", "k3"],
                         solver="kvaerno5", rtol=1e-8, atol=1e-12, jacobian_reuse=r) for r in (False, True)]


def test_reuse_on_robertson_values_forward_and_adjoint_vs_finite_differences(rob_pair):
    plain, reuse = (sens.jacobian(p, mode="forward") for p in rob_pair)
    m = rob_pair[0].model
    p = {k: jnp.asarray(v) for k, v in m.parameters.items()}
    f = jax.jit(lambda t, y: m.rhs(t, y, p))
    jac = jax.jit(jax.jacfwd(lambda t, y: m.rhs(t, y, p), argnums=1))
    ref = solve_ivp(lambda t, y: np.asarray(f(t, y)), (0.0, 40.0), m.y0, method="Radau", t_eval=rob_pair[0].times,
                    rtol=1e-13, atol=1e-16, jac=lambda t, y: np.asarray(jac(t, y))).y.T
    # both carry a global error of ~1e-7 at rtol 1e-8 (local errors accumulate over the steps);
    # reuse changes the Newton iterates and so the step sequence, not the accuracy
    err_plain, err_reuse = (np.abs(r.outputs - ref).max() for r in (plain, reuse))
    assert err_plain < 1e-6 and err_reuse < 2.0 * err_plain + 1e-9
    np.testing.assert_allclose(reuse.outputs[-1], robertson.REFERENCE_T40, rtol=1e-6)  # 7 digits published
    np.testing.assert_allclose(reuse.values, plain.values, rtol=1e-4, atol=1e-4 * np.abs(plain.values).max())
    prob = rob_pair[1]
    g = sens.gradient(prob, _sumsq, mode="adjoint")
    # central differences, relative step 1e-4: truncation ~1e-8 relative, solver noise
    # (rtol 1e-8) / 1e-4 ~ 1e-4 relative of the values' scale
    x0, fd = prob.x0(), []
    for i in range(x0.size):
        h = 1e-4 * x0[i]
        f = [sens.gradient(prob.with_inputs(x0 + s * h * np.eye(x0.size)[i]), _sumsq, mode="adjoint").value
             for s in (1.0, -1.0)]
        fd.append((f[0] - f[1]) / (2 * h))
    np.testing.assert_allclose(g.grad, fd, rtol=2e-3)
    chain = np.einsum("to,toi->i", 2.0 * reuse.outputs, reuse.values)
    np.testing.assert_allclose(g.grad, chain, rtol=1e-5)
    st = reuse.stats
    assert st["factorisations"] < st["num_accepted_steps"]


# ------------------------------------------------------------------- a stale matrix fails
def test_newton_failure_on_a_stale_jacobian_is_recovered_by_a_refresh():
    """y' = -k(t) y with k rising from 1 to 1e4 around t = 1: a Jacobian kept from before
    the rise makes the chord iteration diverge after it; the step is recomputed with a
    fresh Jacobian (counted in `newton_retries`) and the solution matches the closed form
    y = exp(-K(t)), K(t) = t + 1e4 w softplus((t - 1) / w)."""
    w = 0.02

    def rhs(t, y, p):
        k = 1.0 + p["K"] * jax.nn.sigmoid((t - 1.0) / w)
        return -k * y

    m = sens.ODEModel("switch", 2, {"K": 1e4}, rhs, np.array([1.0, 2.0]), stiff=True)
    times = np.array([0.5, 0.9, 1.0, 1.001, 1.01, 1.02, 1.05])
    prob = sens.Problem(m, times=times, t0=0.0, solver="kvaerno5", rtol=1e-8, atol=1e-12, jacobian_reuse=True)
    tr = sens.simulate(prob)
    assert tr.stats["newton_retries"] >= 1
    K = times + 1e4 * w * np.logaddexp(0.0, (times - 1.0) / w) - 1e4 * w * np.logaddexp(0.0, -1.0 / w)
    exact = np.exp(-K)[:, None] * m.y0[None, :]
    np.testing.assert_allclose(tr.states, exact, rtol=1e-5, atol=1e-12)
    plain = sens.simulate(prob.replace(jacobian_reuse=False))
    np.testing.assert_allclose(tr.states, plain.states, rtol=1e-6, atol=1e-12)


def test_jacobian_reuse_must_be_a_bool():
    with pytest.raises(sens.InputError, match="jacobian_reuse"):
        sens.Problem(robertson.model(), times=[1.0], t0=0.0, jacobian_reuse="yes")


def test_reuse_derivative_solves_stay_banded(bruss_pair):
    """Item 3: the stage solves' tangents (implicit function theorem at each root) run the
    banded solver on the reuse path too: no n x n array in the traced forward program
    (tracing only; the reverse sweep transposes the same solves, which
    test_stiff_structure checks on the path without reuse)."""
    from sensitivity.integrate import solve

    prob = bruss_pair[1]
    values, x = solve.values_of(prob), jnp.asarray(prob.x0())
    f = solve.output_function(prob, "forward")
    jaxpr = str(jax.make_jaxpr(lambda x: jax.jacfwd(lambda x: f(x, values)[0])(x))(x))
    assert "f64[50,50]" not in jaxpr


def test_plan_says_reuse_is_on(rob_pair):
    assert "Jacobian reuse: on" in sens.plan(rob_pair[1]).explain()
    assert "Jacobian reuse" not in sens.plan(rob_pair[0]).explain()
