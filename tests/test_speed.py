"""The fast per-call path keeps results: slices vs scatters, folded checks, cached plans."""

import pickle

import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens
from sensitivity import api


def rhs(t, y, p):
    return p["W"] @ jnp.tanh(y) - p["k"] * y


W = np.array([[0.0, 0.4], [-0.3, 0.1]])


def make_model():
    return sens.ODEModel("speed_probe", ["a", "b"], {"W": W, "k": 0.5}, rhs, [1.0, -0.5])


TIMES = np.linspace(0.0, 2.0, 9)


def loss(ys):
    return jnp.sum(ys ** 2)


def test_whole_array_inputs_as_slices_match_scattered_entries():
    """wrt=["W", "y0.a", "y0.b"] writes x into W and y0 as slices; naming the same entries
    in another order writes them by scatter. Both must give the same Jacobian (permuted)
    and it must match central finite differences (h = 1e-6, tolerance 1e-6)."""
    model = make_model()
    whole = sens.Problem(model, TIMES, wrt=["W", "y0.a", "y0.b"])
    order = ["y0.b", "W[1,1]", "W[0,0]", "y0.a", "W[1,0]", "W[0,1]"]
    scattered = whole.replace(wrt=order)
    J1 = sens.jacobian(whole, mode="forward").values
    J2 = sens.jacobian(scattered, mode="forward").values
    perm = [whole.input_names.index(name) for name in order]
    np.testing.assert_allclose(J2, J1[:, :, perm], rtol=1e-12, atol=1e-14)
    x0, h = whole.x0(), 1e-6
    for i in range(whole.n_inputs):
        e = np.zeros_like(x0)
        e[i] = h
        fd = (sens.simulate(whole.with_inputs(x0 + e)).outputs
              - sens.simulate(whole.with_inputs(x0 - e)).outputs) / (2 * h)
        np.testing.assert_allclose(J1[:, :, i], fd, rtol=1e-5, atol=1e-6)


def test_folded_check_still_raises_on_a_failed_solve():
    prob = sens.Problem(make_model(), TIMES, max_steps=2)
    with pytest.raises(sens.SolverError, match="max_steps"):
        sens.simulate(prob)


def test_a_repeated_auto_call_does_not_plan_again(monkeypatch):
    prob = sens.Problem(make_model(), TIMES, wrt=["k", "y0.a"])
    first = sens.gradient(prob, loss, mode="auto", probe_problem=True)
    calls = []
    monkeypatch.setattr(api, "_plan", lambda *a, **k: calls.append(a) or pytest.fail("planned again"))
    monkeypatch.setattr(api, "probe", lambda *a, **k: pytest.fail("probed again"))
    again = sens.gradient(prob, loss, mode="auto", probe_problem=True)
    assert again.plan is first.plan and not calls
    np.testing.assert_array_equal(again.grad, first.grad)
    # a problem of the same structure with other values reuses the decision too
    moved = prob.replace(parameters={"k": 0.7})
    assert sens.plan(moved, loss, probe_problem=True) is first.plan


def test_structure_keys_are_cached_and_problems_pickle():
    prob = sens.Problem(make_model(), TIMES, wrt=["W"])
    assert prob.structure_key(fn="x") is prob.structure_key(fn="x")
    moved = prob.with_inputs(prob.x0() + 0.1)
    assert moved.wrt is prob.wrt  # shared refs: keys compare by identity
    assert moved.structure_key(fn="x") == prob.structure_key(fn="x")
    sens.simulate(prob)  # fills the per-problem caches with device arrays and closures
    back = pickle.loads(pickle.dumps(prob))
    np.testing.assert_array_equal(back.x0(), prob.x0())
    np.testing.assert_array_equal(sens.simulate(back).states, sens.simulate(prob).states)


def test_fused_trajectory_and_jacobian_match_the_separate_calls():
    from sensitivity.api import trajectory_and_jacobian

    prob = sens.Problem(make_model(), TIMES, wrt=["W", "y0.a", "y0.b"])
    traj, jac = trajectory_and_jacobian(prob, "forward")
    alone = sens.simulate(prob)
    np.testing.assert_allclose(traj.states, alone.states, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(jac.values, sens.jacobian(prob, mode="forward").values)
    assert traj.stats == alone.stats
    assert trajectory_and_jacobian(prob, "adjoint") is None  # only forward mode fuses
