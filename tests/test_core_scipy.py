"""An independent solver: SciPy's solve_ivp on the forward sensitivity equations
s' = f_y s + f_p, s(0) = dy0/dp, for Lotka-Volterra (non-stiff) and Robertson (stiff)."""

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import sensitivity as sens


def lv_rhs(t, y, p):
    x, z = y[0], y[1]
    return jnp.stack([p["alpha"] * x - p["beta"] * x * z, p["delta"] * x * z - p["gamma"] * z])


def lv_sensitivity_system(p):
    a, b, g, d = p

    def f(t, w):
        x, z = w[:2]
        S = w[2:].reshape(2, 5)  # columns: alpha, beta, gamma, delta, y0.prey
        fy = np.array([[a - b * z, -b * x], [d * z, d * x - g]])
        fp = np.array([[x, -x * z, 0, 0, 0], [0, 0, -z, x * z, 0]])
        return np.concatenate([[a * x - b * x * z, d * x * z - g * z], (fy @ S + fp).ravel()])
    return f


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_lotka_volterra_against_scipy_sensitivity_equations(mode):
    p = dict(alpha=1.5, beta=1.0, gamma=3.0, delta=1.0)
    model = sens.ODEModel("lv", ["prey", "predator"], p, lv_rhs, [10.0, 5.0])
    times = np.linspace(0.0, 6.0, 31)
    prob = sens.Problem(model, times, wrt=["alpha", "beta", "gamma", "delta", "y0.prey"],
                        rtol=1e-11, atol=1e-11, solver="dopri8")
    S0 = np.zeros((2, 5))
    S0[0, 4] = 1.0
    ref = solve_ivp(lv_sensitivity_system(list(p.values())), (0, 6), np.concatenate([[10.0, 5.0], S0.ravel()]),
                    t_eval=times, method="DOP853", rtol=1e-12, atol=1e-12)
    expected = ref.y[2:].T.reshape(-1, 2, 5)
    res = sens.jacobian(prob, mode=mode)
    scale = np.abs(expected).max(axis=0, keepdims=True)  # relative to each entry's size over time
    assert np.max(np.abs(res.values - expected) / scale) < 1e-6


def robertson_rhs(t, y, p):
    y1, y2, y3 = y[0], y[1], y[2]
    r1, r2, r3 = p["k1"] * y1, p["k2"] * y2 * y2, p["k3"] * y2 * y3
    return jnp.stack([-r1 + r3, r1 - r2 - r3, r2])


def robertson_sensitivity_system(k1, k2, k3):
    def f(t, w):
        y1, y2, y3 = w[:3]
        S = w[3:].reshape(3, 3)
        fy = np.array([[-k1, k3 * y3, k3 * y2],
                       [k1, -2 * k2 * y2 - k3 * y3, -k3 * y2],
                       [0, 2 * k2 * y2, 0]])
        fp = np.array([[-y1, 0, y2 * y3], [y1, -y2 * y2, -y2 * y3], [0, y2 * y2, 0]])
        dy = [-k1 * y1 + k3 * y2 * y3, k1 * y1 - k2 * y2 ** 2 - k3 * y2 * y3, k2 * y2 ** 2]
        return np.concatenate([dy, (fy @ S + fp).ravel()])

    def jac(t, w):  # block-triangular Jacobian of the augmented system, for Radau
        eps = 1e-7
        base = f(t, w)
        return np.stack([(f(t, w + eps * e) - base) / eps for e in np.eye(12)], axis=1)
    return f, jac


@pytest.fixture(scope="module")
def robertson_reference():
    k = (0.04, 3e7, 1e4)
    times = np.logspace(-3, np.log10(40.0), 12)
    f, jac = robertson_sensitivity_system(*k)
    ref = solve_ivp(f, (0, 40.0), np.concatenate([[1.0, 0, 0], np.zeros(9)]), t_eval=times,
                    method="Radau", jac=jac, rtol=1e-10, atol=1e-14)
    assert ref.success
    return times, ref.y[3:].T.reshape(-1, 3, 3)


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_robertson_stiff_against_scipy_radau(robertson_reference, mode):
    times, expected = robertson_reference
    model = sens.ODEModel("robertson", ["y1", "y2", "y3"], dict(k1=0.04, k2=3e7, k3=1e4),
                          robertson_rhs, [1.0, 0.0, 0.0], stiff=True)
    prob = sens.Problem(model, times, t0=0.0, rtol=1e-10, atol=1e-14)
    res = sens.jacobian(prob, mode=mode)
    # normalised per (output, input) by its largest magnitude over time: the entries span 20 decades
    scale = np.abs(expected).max(axis=0, keepdims=True)
    assert np.max(np.abs(res.values - expected) / scale) < 1e-5
