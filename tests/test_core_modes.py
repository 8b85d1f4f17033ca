"""Forward, adjoint and second-order routes agree with each other and with finite differences."""

import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens
from sensitivity.ad import adjoint, forward


def lv_rhs(t, y, p):
    x, z = y[0], y[1]
    return jnp.stack([p["alpha"] * x - p["beta"] * x * z, p["delta"] * x * z - p["gamma"] * z])


def loss(ys):
    return jnp.sum((ys - 2.0) ** 2) / ys.shape[0]


WRT = ["alpha", "beta", "gamma", "delta", "y0.prey"]


@pytest.fixture(scope="module")
def prob():
    model = sens.ODEModel("lv", ["prey", "predator"], dict(alpha=1.5, beta=1.0, gamma=3.0, delta=1.0),
                          lv_rhs, [10.0, 5.0])
    return sens.Problem(model, np.linspace(0.0, 4.0, 25), wrt=WRT, rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def jac_forward(prob):
    return sens.jacobian(prob, mode="forward")


def relative(a, b):
    return np.max(np.abs(a - b)) / np.max(np.abs(b))


def test_forward_and_adjoint_jacobians_agree(prob, jac_forward):
    rev = sens.jacobian(prob, mode="adjoint")
    assert rev.mode == "adjoint" and rev.variant == "checkpoint"
    assert relative(rev.values, jac_forward.values) < 1e-8
    np.testing.assert_allclose(rev.outputs, jac_forward.outputs, rtol=1e-12)


def test_backsolve_adjoint_agrees_to_solver_tolerance(prob, jac_forward):
    J, _ = adjoint.jacobian(prob.replace(times=prob.times[::4]), "backsolve")
    assert relative(J, jac_forward.values[::4]) < 1e-5


def test_jvp_and_vjp_are_consistent_with_the_jacobian(prob, jac_forward):
    rng = np.random.default_rng(1)
    v = rng.standard_normal(len(WRT))
    w = rng.standard_normal((25, 2))
    Jv, _ = forward.jvp(prob, v)
    wJ, _ = adjoint.vjp(prob, w)
    np.testing.assert_allclose(Jv, jac_forward.values @ v, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(wJ, np.einsum("tm,tmn->n", w, jac_forward.values), rtol=1e-8)


@pytest.fixture(scope="module")
def grad(prob):
    return sens.gradient(prob, loss, mode="adjoint")


def test_gradient_modes_agree_and_match_central_differences(prob, grad):
    fwd = sens.gradient(prob, loss, mode="forward")
    assert fwd.mode == "forward" and grad.mode == "adjoint"
    np.testing.assert_allclose(fwd.value, grad.value, rtol=1e-12)
    np.testing.assert_allclose(fwd.grad, grad.grad, rtol=1e-8)
    x0, h = prob.x0(), 1e-5

    def value_at(x):
        return sens.gradient(prob.with_inputs(x), loss, mode="adjoint").value

    fd = np.array([(value_at(x0 + h * e) - value_at(x0 - h * e)) / (2 * h) for e in np.eye(5)])
    np.testing.assert_allclose(grad.grad, fd, rtol=1e-5)


@pytest.fixture(scope="module")
def hess(prob):
    return sens.hessian(prob, loss, mode="fwd-over-fwd")


def test_hessian_is_symmetric(hess):
    assert hess.shape == (5, 5)
    assert np.max(np.abs(hess - hess.T)) < 1e-8 * np.max(np.abs(hess))


@pytest.mark.parametrize("method", ["fwd-over-rev", "rev-over-fwd"])
def test_hvp_matches_dense_hessian(prob, hess, method):
    v = np.array([1.0, -0.5, 0.2, 0.3, 0.1])
    hv = sens.hvp(prob, loss, v, mode=method)
    # fwd-over-rev differentiates the same discrete solve; rev-over-fwd solves the tangent
    # system with its own steps, so it agrees to about the solver tolerance
    assert relative(hv, hess @ v) < (1e-9 if method == "fwd-over-rev" else 1e-6)


def test_hvp_matches_finite_differences_of_the_gradient(prob, grad):
    v = np.array([0.3, 0.1, -0.2, 0.5, 0.05])
    h = 1e-5
    x0 = prob.x0()

    def grad_at(x):
        return sens.gradient(prob.with_inputs(x), loss, mode="adjoint").grad

    fd = (grad_at(x0 + h * v) - grad_at(x0 - h * v)) / (2 * h)
    assert relative(sens.hvp(prob, loss, v), fd) < 1e-5


def test_hessian_by_hvps_matches_forward_over_forward(prob, hess):
    H = sens.hessian(prob, loss, mode="rev-over-fwd")
    assert relative(H, hess) < 1e-6


def test_auto_mode_runs_the_plans_choice(prob, jac_forward):
    res = sens.jacobian(prob)
    assert res.mode == res.plan.mode == "forward"  # n = 5 inputs, m = 50 outputs
    assert relative(res.values, jac_forward.values) < 1e-12
    g = sens.gradient(prob, loss)
    assert g.mode == g.plan.mode
