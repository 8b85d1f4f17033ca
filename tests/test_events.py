"""Doses, breakpoints and state events (issue 9): every derivative against an independent
reference (closed forms, SciPy split solves with finite differences)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens
from sensitivity import compiled, models

# ----------------------------------------------------------------------------- oral PK
PK_TIMES = np.linspace(0.0, 84.0, 29)  # every 3 h: the dose times 0, 12, ... are save times
PK_WRT = ["ka", "CL", "V", "dose.amount", "dose.time"]
PK_TRUE = {"ka": 1.57, "CL": 2.8, "V": 32.0}


def bateman(x, times, n_doses):
    """C(t) by superposition of Bateman functions; x = (ka, CL, V, amounts..., times...).
    A save time equal to a dose time sees the dose (right-continuous), as the solver does."""
    ka, CL, V = x[0], x[1], x[2]
    amounts, tds = x[3:3 + n_doses], x[3 + n_doses:]
    k = CL / V
    s = times[:, None] - tds[None, :]
    after = s >= 0
    s = jnp.where(after, s, 0.0)
    term = amounts * ka / (V * (ka - k)) * (jnp.exp(-k * s) - jnp.exp(-ka * s))
    return jnp.sum(jnp.where(after, term, 0.0), axis=1)


@pytest.fixture(scope="module")
def pk():
    model = models.get("pk_one_compartment_oral")
    schedule = models.factory("pk_one_compartment_oral").__globals__["default_doses"]()
    return sens.Problem(model, PK_TIMES, wrt=PK_WRT, doses=schedule, rtol=1e-11, atol=1e-11)


def _pk_reference(prob):
    x = jnp.asarray(prob.x0())
    n = len(prob.doses)
    C = bateman(x, jnp.asarray(prob.times), n)
    J = jax.jacfwd(bateman)(x, jnp.asarray(prob.times), n)
    return np.asarray(C), np.asarray(J)


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_pk_seven_doses_against_bateman_superposition(pk, mode):
    assert pk.input_names[3:10] == tuple(f"dose[{j}].amount" for j in range(7))
    assert pk.input_names[10:] == tuple(f"dose[{j}].time" for j in range(7))
    C, J = _pk_reference(pk)
    res = sens.jacobian(pk, mode=mode)
    np.testing.assert_allclose(res.outputs[:, 0], C, rtol=1e-6, atol=1e-9 * C.max())
    scale = np.abs(J).max(axis=0)  # per input: relative to the derivative's size over time
    err = np.abs(res.values[:, 0, :] - J) / scale
    assert err.max() < 1e-6, dict(zip(res.input_names, err.max(axis=0)))


def test_new_dose_times_and_amounts_do_not_recompile(pk):
    """One compiled function per dose count: other times/amounts are values, not structure."""
    sens.jacobian(pk, mode="forward")  # compiled (or cached) by the test above
    moved = pk.replace(doses=sens.doses("depot", 250.0, every=11.0, count=7, start=1.5))
    res = sens.jacobian(moved, mode="forward")
    assert res.timings["compile"] == 0.0
    C, J = _pk_reference(moved)
    np.testing.assert_allclose(res.outputs[:, 0], C, rtol=1e-6, atol=1e-9 * C.max())
    assert np.abs(res.values[:, 0, :] - J).max() < 1e-6 * np.abs(J).max()
    # the schedule is sorted by time: dose[0] is the earliest whatever the order given
    shuffled = pk.replace(doses=[sens.Dose(24.0, "depot", 1.0), sens.Dose(0.0, "depot", 2.0)], wrt=PK_WRT)
    assert [d.time for d in shuffled.doses] == [0.0, 24.0]
    assert shuffled.input_names[3:] == ("dose[0].amount", "dose[1].amount", "dose[0].time", "dose[1].time")


# ----------------------------------------------------------------------------- SEIR switch
SEIR_TIMES = np.array([0.0, 20.0, 45.0, 60.0])


def _seir_scipy(p, t_end=60.0):
    """I(t_end) by SciPy (LSODA... here DOP853) split at t_switch, tight tolerances."""
    from scipy.integrate import solve_ivp

    def f(beta):
        def rhs(t, y):
            S, E, I, R = y
            inf = beta * S * I / y.sum()
            return [-inf, inf - p["sigma"] * E, p["sigma"] * E - p["gamma"] * I, p["gamma"] * I]
        return rhs
    y0 = np.array([1.0e6 - 10.0, 0.0, 10.0, 0.0])
    a = solve_ivp(f(p["beta0"]), (0.0, p["t_switch"]), y0, method="DOP853", rtol=1e-13, atol=1e-10)
    b = solve_ivp(f(p["beta1"]), (p["t_switch"], t_end), a.y[:, -1], method="DOP853", rtol=1e-13, atol=1e-10)
    return b.y[2, -1]


def test_seir_breakpoint_derivative_against_scipy_split_solve():
    model = models.get("seir_intervention")
    with warnings.catch_warnings():
        warnings.simplefilter("error", sens.DiscontinuityWarning)  # declared: no warning
        prob = sens.Problem(model, SEIR_TIMES, wrt=["t_switch", "beta0", "beta1"], of=["I"],
                            rtol=1e-11, atol=1e-8)
    res = sens.jacobian(prob, mode="forward")
    p = {k: float(v) for k, v in prob.parameters.items()}
    assert abs(res.outputs[-1, 0] / _seir_scipy(p) - 1) < 1e-7
    for i, name in enumerate(prob.input_names):
        h = 1e-3 * p[name]
        up, down = dict(p), dict(p)
        up[name] += h
        down[name] -= h
        fd = (_seir_scipy(up) - _seir_scipy(down)) / (2 * h)
        assert abs(res.values[-1, 0, i] / fd - 1) < 1e-5, (name, res.values[-1, 0, i], fd)
    assert res.values[-1, 0, 0] > 0  # a later intervention: more infectious people at day 60


def test_undeclared_switch_parameter_warns():
    seir = models.get("seir_intervention")
    bare = sens.ODEModel("seir_switch_undeclared", seir.states, seir.parameters, seir.rhs, seir.y0)
    with pytest.warns(sens.DiscontinuityWarning, match="t_switch"):
        sens.Problem(bare, SEIR_TIMES, wrt=["t_switch", "beta0"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", sens.DiscontinuityWarning)
        sens.Problem(bare, SEIR_TIMES, wrt=["beta0", "sigma"])  # the switch time is not an input
        sens.Problem(bare, SEIR_TIMES, wrt=["t_switch"], breakpoints=["t_switch"])  # declared here
        sens.Problem(models.get("pk_two_compartment"), SEIR_TIMES)  # no comparison with t at all


# ----------------------------------------------------------------------------- bouncing ball
def ball_rhs(t, y, p):  # height, velocity, time since the last bounce
    return jnp.stack([y[1], -p["g"], jnp.ones_like(y[2])])


def ball_hits_ground(t, y, p):
    return y[0]


def ball_bounce(t, y, p):
    return jnp.stack([y[0], -p["e"] * y[1], jnp.zeros_like(y[2])])


BALL_EVENT = sens.Event(ball_hits_ground, reset=ball_bounce, direction=-1, max_occurrences=5)
BALL_TIMES = np.array([0.5, 1.0, 2.5, 3.2, 3.5])


def ball_closed_form(x, times):
    """(height, time since last bounce) at `times`, x = (g, e, h0): dropped from rest."""
    g, e, h0 = x[0], x[1], x[2]
    v1 = jnp.sqrt(2 * g * h0)
    k = jnp.arange(6)
    # bounce times: t_1 = v1/g, t_{k+1} = t_k + 2 e^k v1 / g
    tk = v1 / g + jnp.concatenate([jnp.zeros(1), jnp.cumsum(2 * e ** k[1:] * v1 / g)])
    last = jnp.sum(times[:, None] >= tk[None, :], axis=1)  # bounces so far
    t_last = jnp.where(last > 0, tk[jnp.maximum(last - 1, 0)], 0.0)
    s = times - t_last
    speed = jnp.where(last > 0, e ** jnp.maximum(last - 1, 0) * e * v1, 0.0)
    h = jnp.where(last > 0, speed * s - g / 2 * s ** 2, h0 - g / 2 * times ** 2)
    return jnp.stack([h, s], axis=1), tk


@pytest.fixture(scope="module")
def ball():
    model = sens.ODEModel("bouncing_ball", ["h", "v", "since"], {"g": 9.81, "e": 0.6}, ball_rhs,
                          {"h": 5.0, "v": 0.0, "since": 0.0}, events=[BALL_EVENT])
    return sens.Problem(model, BALL_TIMES, t0=0.0, wrt=["g", "e", "y0.h"], of=["h", "since"],
                        rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_bouncing_ball_against_closed_form(ball, mode):
    x = jnp.asarray(ball.x0())
    ref, tk = ball_closed_form(x, jnp.asarray(ball.times))
    assert float(tk[3]) < BALL_TIMES[-1]  # the last save is after the fourth bounce
    J = jax.jacfwd(lambda x_: ball_closed_form(x_, jnp.asarray(ball.times))[0])(x)
    res = sens.jacobian(ball, mode=mode)
    np.testing.assert_allclose(res.outputs, np.asarray(ref), rtol=1e-7, atol=1e-8)
    # the time of the last bounce before each save, t - since, and its derivatives
    np.testing.assert_allclose(res.values, np.asarray(J), rtol=1e-6, atol=1e-7)
