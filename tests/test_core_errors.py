"""Bad input raises a SensitivityError subclass whose message names the problem."""

import warnings

import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens
from sensitivity import InputError, ModelError, SolverError


def rhs(t, y, p):
    return jnp.stack([p["alpha"] * y[0] - p["beta"] * y[0] * y[1], p["W"].sum() * y[0] * y[1] - y[1]])


def make_model(**kw):
    args = dict(name="m", states=["prey", "predator"], parameters={"alpha": 1.0, "beta": 0.5,
                "W": np.ones((2, 3)) * 0.1}, rhs=rhs, y0=[1.0, 1.0])
    args.update(kw)
    return sens.ODEModel(**args)


MODEL = make_model()
TIMES = np.linspace(0, 1, 5)


@pytest.mark.parametrize("kwargs, words", [
    (dict(wrt=["alpah"]), ["alpah", "did you mean 'alpha'"]),
    (dict(wrt=["y0.pray"]), ["pray", "did you mean 'y0.prey'"]),
    (dict(wrt=["W[2,0]"]), ["W[2,0]", "out of range", "(2, 3)"]),
    (dict(wrt=["V[0,0]"]), ["unknown parameter 'V'"]),
    (dict(of=["predatr"]), ["predatr", "did you mean 'predator'"]),
    (dict(parameters={"W": np.ones(3)}), ["parameters.W", "shape (3,)", "(2, 3)"]),
    (dict(parameters={"alpha": float("nan")}), ["alpha", "not finite"]),
    (dict(y0=[1.0, 2.0, 3.0]), ["y0", "shape (3,)", "(2,)"]),
    (dict(y0={"prey": float("inf")}), ["y0", "non-finite"]),
    (dict(times=[0.0, 1.0, 0.5]), ["strictly increasing", "times[1] = 1.0"]),
    (dict(times=[0.0, float("nan")]), ["NaN"]),
    (dict(rtol=-1e-6), ["rtol", "positive"]),
    (dict(atol=0.0), ["atol", "positive"]),
    (dict(solver="kvaerno"), ["kvaerno", "did you mean"]),
])
def test_bad_problem_input(kwargs, words):
    args = dict(times=TIMES)
    args.update(kwargs)
    with pytest.raises(InputError) as err:
        sens.Problem(MODEL, **args)
    for word in words:
        assert word in str(err.value)


@pytest.mark.parametrize("kwargs, words", [
    (dict(y0=[1.0]), ["y0", "shape (1,)", "(2,)"]),
    (dict(states=["a", "a"]), ["repeat"]),
    (dict(parameters={"prey": 1.0}), ["both as state and parameter"]),
    (dict(parameters={"k": float("nan")}), ["'k'", "non-finite"]),
    (dict(y0={"prey": 1.0, "predatr": 2.0}), ["predatr", "did you mean 'predator'"]),
    (dict(rhs=3), ["callable"]),
])
def test_bad_model(kwargs, words):
    with pytest.raises(ModelError) as err:
        make_model(**kwargs)
    for word in words:
        assert word in str(err.value)


def test_errors_share_one_base_class():
    assert issubclass(InputError, sens.SensitivityError) and issubclass(SolverError, sens.SensitivityError)


def test_bad_vector_and_objective():
    prob = sens.Problem(MODEL, TIMES, wrt=["alpha", "beta"])
    with pytest.raises(InputError, match=r"v has shape \(3,\), expected \(2,\)"):
        sens.hvp(prob, lambda ys: ys.sum(), np.ones(3))
    with pytest.raises(InputError, match="must return a scalar"):
        sens.gradient(prob, lambda ys: ys, mode="adjoint")
    with pytest.raises(InputError, match="mode = 'backward'"):
        sens.jacobian(prob, mode="backward")


def blowup_rhs(t, y, p):
    return p["k"] * y ** 2


def test_max_steps_reached_says_when_and_what_to_try():
    model = sens.ODEModel("stiffish", ["y"], {"k": 1.0}, blowup_rhs, [1.0])
    prob = sens.Problem(model, np.linspace(0, 0.9, 10), max_steps=8)
    with pytest.raises(SolverError) as err:
        sens.simulate(prob)
    msg = str(err.value)
    assert "maximum number of solver steps" in msg and "max_steps (now 8)" in msg
    assert "before t = " in msg and "kvaerno5" in msg


def test_blow_up_to_infinity_is_reported_with_its_time():
    # y' = y^2, y(0) = 1 blows up at t = 1
    model = sens.ODEModel("blowup", ["y"], {"k": 1.0}, blowup_rhs, [1.0])
    prob = sens.Problem(model, np.linspace(0, 2, 10))
    with pytest.raises(SolverError) as err:
        sens.jacobian(prob, mode="forward")
    msg = str(err.value)
    assert "before t = 1.11111 (last good save at t = 0.888889)" in msg


def test_with_inputs_is_the_inverse_of_x0():
    prob = sens.Problem(MODEL, TIMES, wrt=["beta", "W[1,2]", "y0.predator"])
    moved = prob.with_inputs([0.7, 3.0, 2.5])
    np.testing.assert_array_equal(moved.x0(), [0.7, 3.0, 2.5])
    assert moved.parameters["W"][1, 2] == 3.0 and moved.parameters["W"][0, 0] == 0.1
    assert moved.y0.tolist() == [1.0, 2.5] and prob.parameters["W"][1, 2] == 0.1  # original untouched
    with pytest.raises(InputError, match=r"x has shape \(2,\)"):
        prob.with_inputs([1.0, 2.0])


def test_an_initial_state_below_atol_warns_and_the_suggested_atol_resolves_it():
    """Logistic growth from I0 = 1e-10 (an epidemic's first infected fraction): at the default
    atol = 1e-8 the solver does not resolve I0, and I(12) came out 0.649 against the closed
    form's 0.726. The warning names the state and suggests an atol; with it the closed form
    holds."""
    def rhs(t, y, p):
        return jnp.stack([p["r"] * y[0] * y[1], -p["r"] * y[0] * y[1]])
    I0, r, T = 1e-10, 2.0, 12.0
    m = sens.ODEModel("logistic_from_a_trace", ["I", "S"], {"r": r}, rhs, [I0, 1.0 - I0])
    with pytest.warns(sens.ToleranceWarning, match=r"'I' = 1e-10 is below atol = 1e-08.*atol=1e-16"):
        loose = sens.Problem(m, [T], t0=0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", sens.ToleranceWarning)
        tight = sens.Problem(m, [T], t0=0.0, atol=1e-16)
        loose.replace(y0={"I": 2e-10})  # said once per state and atol, not per fit step
    exact = I0 * np.exp(r * T) / (1 - I0 + I0 * np.exp(r * T))
    assert sens.simulate(loose).states[0, 0] < 0.95 * exact  # what the warning is about
    assert sens.simulate(tight).states[0, 0] == pytest.approx(exact, rel=1e-6)
