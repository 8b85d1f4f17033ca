"""Closed forms: exponential decay and a linear system y' = A y against scipy's expm_frechet."""

import numpy as np
import pytest
from scipy.linalg import expm, expm_frechet

import sensitivity as sens


def decay_rhs(t, y, p):
    return -p["k"] * y


@pytest.fixture(scope="module")
def decay():
    model = sens.ODEModel(name="decay", states=["y"], parameters={"k": 0.5}, rhs=decay_rhs, y0=[2.0])
    return sens.Problem(model, times=np.linspace(0, 5, 40), wrt=["k", "y0.y"], rtol=1e-12, atol=1e-12,
                        solver="dopri8")


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_decay_jacobian_matches_closed_form(decay, mode):
    t, k, y0 = decay.times, 0.5, 2.0
    res = sens.jacobian(decay, mode=mode)
    assert res.values.shape == (40, 1, 2) and res.mode == mode
    np.testing.assert_allclose(res.outputs[:, 0], y0 * np.exp(-k * t), rtol=1e-8)
    np.testing.assert_allclose(res.values[:, 0, 0], -t * y0 * np.exp(-k * t), rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(res.values[:, 0, 1], np.exp(-k * t), rtol=1e-7)


def test_decay_normalized_sensitivity_is_minus_k_t(decay):
    # d ln y / d ln k = -k t for y = y0 exp(-k t)
    res = sens.jacobian(decay, mode="forward")
    np.testing.assert_allclose(res.normalized()[:, 0, 0], -0.5 * decay.times, rtol=1e-7, atol=1e-12)


A0 = np.array([[-1.0, 0.5, 0.0], [0.2, -0.8, 0.3], [0.0, 0.4, -1.5]])


def linear_rhs(t, y, p):
    return p["A"] @ y


@pytest.fixture(scope="module")
def linear():
    model = sens.ODEModel(name="linear", states=["a", "b", "c"], parameters={"A": A0},
                          rhs=linear_rhs, y0=[1.0, -0.5, 2.0])
    return sens.Problem(model, times=np.linspace(0, 2, 9)[1:], t0=0.0, wrt=["A"], rtol=1e-12, atol=1e-12,
                        solver="dopri8")


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_linear_system_jacobian_matches_expm_frechet(linear, mode):
    y0 = np.array([1.0, -0.5, 2.0])
    res = sens.jacobian(linear, mode=mode)
    assert res.input_names[:2] == ("A[0,0]", "A[0,1]") and res.values.shape == (8, 3, 9)
    for k, t in enumerate(linear.times):
        np.testing.assert_allclose(res.outputs[k], expm(A0 * t) @ y0, rtol=1e-8)
        for flat, (i, j) in enumerate(np.ndindex(3, 3)):
            E = np.zeros((3, 3))
            E[i, j] = 1.0
            expected = expm_frechet(A0 * t, E * t, compute_expm=False) @ y0
            np.testing.assert_allclose(res.values[k, :, flat], expected, rtol=1e-7, atol=1e-10)


def test_entry_input_selects_one_column(linear):
    sub = linear.replace(wrt=["A[1,2]", "y0.b"])
    res = sens.jacobian(sub, mode="forward")
    full = sens.jacobian(linear, mode="forward")
    np.testing.assert_allclose(res.values[:, :, 0], full.column("A[1,2]"), rtol=1e-12)
    t = linear.times[-1]
    np.testing.assert_allclose(res.values[-1, :, 1], expm(A0 * t)[:, 1], rtol=1e-7)


def test_outputs_mix_observables_and_states():
    model = sens.ODEModel(name="decay_obs", states=["y"], parameters={"k": 0.5}, rhs=decay_rhs, y0=[2.0],
                          observables={"half": lambda t, y, p: 0.5 * y[0]})
    assert sens.Problem(model, times=[0.0, 1.0]).of == ("half",)
    prob = sens.Problem(model, times=np.linspace(0, 2, 5), of=["half", "y"], wrt=["k"], rtol=1e-10, atol=1e-12)
    res = sens.jacobian(prob, mode="forward")
    t = prob.times
    np.testing.assert_allclose(res.outputs, np.stack([np.exp(-0.5 * t), 2 * np.exp(-0.5 * t)], 1), rtol=1e-8)
    np.testing.assert_allclose(res.values[:, 1, 0], 2 * res.values[:, 0, 0], rtol=1e-12)
    with pytest.raises(sens.InputError, match="did you mean 'half'"):
        sens.Problem(model, times=[0.0, 1.0], of=["halff"])
