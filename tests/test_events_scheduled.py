"""Scheduled events (delays, priorities, persistence, compound triggers, t0 firing) against
closed forms: values, and forward and adjoint derivatives through delayed executions."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens


# ----------------------------------------------------------------------------- a delayed reset
def _decay(t, y, p):
    return jnp.array([-p["k"] * y[0], 0.0])


def _below_half(t, y, p):
    return y[0] - 0.5


def _refill(t, y, p):  # y = 1, and x records y (at the trigger or the execution time)
    return jnp.array([1.0, y[0]])


def _delay(t, y, p):
    return p["d"]


def _decay_model(at_trigger: bool):
    ev = sens.Event(_below_half, _refill, direction=-1, delay=_delay, targets=[0, 1],
                    values_at_trigger=at_trigger)
    return sens.ODEModel(f"delayed_refill_{at_trigger}", ["y", "x"], {"k": 1.0, "d": 1.0}, _decay,
                         [1.0, 0.0], events=[ev])


TIMES = np.array([0.0, 0.5, 1.2, 1.9, 2.6, 3.3, 4.0, 4.7])  # no save time on an event


def decay_closed_form(x, times, at_trigger: bool):
    """(n_times, 2): y decays from 1, triggers at y = 1/2 (t1 = ln 2 / k) and is refilled
    to 1 a delay d later, periodically; x is y's value at the trigger (1/2) or at the
    execution (exp(-k (t1 + d)))."""
    k, d = x[0], x[1]
    period = jnp.log(2.0) / k + d
    y = jnp.exp(-k * jnp.mod(times, period))
    recorded = 0.5 if at_trigger else jnp.exp(-k * period)
    return jnp.stack([y, jnp.where(times >= period, recorded, 0.0)], axis=1)


@pytest.fixture(scope="module")
def decay_problem():
    return sens.Problem(_decay_model(True), TIMES, wrt=["k", "d"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_delayed_event_values_and_derivatives(decay_problem, mode):
    x = jnp.array([1.0, 1.0])
    want = decay_closed_form(x, jnp.asarray(TIMES), True)
    dwant = jax.jacfwd(decay_closed_form)(x, jnp.asarray(TIMES), True)  # (n_times, 2, 2)
    res = sens.jacobian(decay_problem, mode=mode)
    np.testing.assert_allclose(res.outputs, want, atol=1e-8)
    np.testing.assert_allclose(res.values, dwant, atol=1e-6)


def test_values_from_the_execution_time():
    traj = sens.simulate(sens.Problem(_decay_model(False), TIMES, rtol=1e-10, atol=1e-12))
    want = decay_closed_form(jnp.array([1.0, 1.0]), jnp.asarray(TIMES), False)
    np.testing.assert_allclose(traj.states, want, atol=1e-8)


# ----------------------------------------------------------------------------- time triggers
# states: a (priorities), c (t0 firing), b (compound trigger), n / q (persistence), f (a
# delayed execution at the same time as the prioritised ones); no dynamics, so the solver
# takes long steps across several triggers (the earliest crossing must still come first)
STATES = ["a", "c", "b", "n", "q", "f"]


def _still(t, y, p):
    return jnp.zeros(6)


def _set(i, value):
    def reset(t, y, p):
        return y.at[i].set(value(y, p))
    return reset


def _after(T):
    def cond(t, y, p):
        return jnp.stack([t - T])
    return cond


def _window(a, b):
    def cond(t, y, p):
        return jnp.stack([t - a, t - b])
    return cond


def _inside(g):
    return (g[0] > 0) & (g[1] < 0)


def _first(g):
    return g[0] >= 0


def _prio(sign):
    def priority(t, y, p):
        return sign * p["pr"]
    return priority


EVENTS = [
    # at t = 1: a + 1 and 2 a, in the order of their priorities (pr > 0: doubled first)
    sens.Event(_after(1.0), _set(0, lambda y, p: y[0] + 1), trigger=_first, priority=_prio(-1.0), targets=[0],
               values_at_trigger=False),
    sens.Event(_after(1.0), _set(0, lambda y, p: 2 * y[0]), trigger=_first, priority=_prio(1.0), targets=[0],
               values_at_trigger=False),
    # true at t0, initial value false: fires at t0
    sens.Event(_after(0.0), _set(1, lambda y, p: y[1] + 10), trigger=_first, initial_value=False, targets=[1]),
    # a window 2 < t < 3: fires once, at 2
    sens.Event(_window(2.0, 3.0), _set(2, lambda y, p: y[2] + 1), trigger=_inside, targets=[2]),
    # triggered at 3, false again at 3.5, delay 1: cancelled when not persistent
    sens.Event(_window(3.0, 3.5), _set(3, lambda y, p: 1.0), trigger=_inside, delay=lambda t, y, p: 1.0,
               persistent=False, targets=[3]),
    sens.Event(_window(3.0, 3.5), _set(4, lambda y, p: 1.0), trigger=_inside, delay=lambda t, y, p: 1.0,
               targets=[4]),
    # triggered at 0.5, executed at 1 after the prioritised ones (no priority), a's value then
    sens.Event(_after(0.5), _set(5, lambda y, p: y[0]), trigger=_first, delay=lambda t, y, p: 0.5,
               values_at_trigger=False, targets=[5]),
]
TIMES2 = np.array([0.0, 0.75, 1.5, 2.5, 3.25, 4.5, 5.0])


@pytest.fixture(scope="module")
def timed():
    y0 = np.array([1.0, 0, 0, 0, 0, 0])
    model = sens.ODEModel("scheduled_time_events", STATES, {"pr": 1.0}, _still, y0, events=EVENTS)
    return model


@pytest.mark.parametrize("pr, a_after", [(1.0, 3.0), (-1.0, 4.0)])
def test_priorities_t0_compound_and_persistence(timed, pr, a_after):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traj = sens.simulate(sens.Problem(timed, TIMES2, parameters={"pr": pr}, rtol=1e-10, atol=1e-12))
    ys = np.asarray(traj.states)
    T = TIMES2
    np.testing.assert_array_equal(ys[:, 0], np.where(T >= 1, a_after, 1.0))   # a: 1 -> 2*1 + 1 or (1 + 1)*2
    np.testing.assert_array_equal(ys[:, 1], np.full(T.size, 10.0))          # c: fired at t0
    np.testing.assert_array_equal(ys[:, 2], np.where(T >= 2, 1.0, 0.0))      # b: once in the window
    np.testing.assert_array_equal(ys[:, 3], np.zeros(T.size))                # n: cancelled
    np.testing.assert_array_equal(ys[:, 4], np.where(T >= 4, 1.0, 0.0))      # q: persistent, at 3 + 1
    np.testing.assert_array_equal(ys[:, 5], np.where(T >= 1, a_after, 0.0))  # f: after both


def test_scheduled_and_plain_events_do_not_mix():
    plain = sens.Event(_below_half, _refill, direction=-1)
    model = sens.ODEModel("mixed_events", ["y", "x"], {"k": 1.0, "d": 1.0}, _decay, [1.0, 0.0],
                          events=[plain, _decay_model(True).events[0]])
    with pytest.raises(sens.InputError, match="mixed"):
        sens.simulate(sens.Problem(model, TIMES))


def test_event_checks_its_scheduled_fields():
    with pytest.raises(sens.InputError, match="targets"):
        sens.Event(_below_half, _refill, direction=-1, delay=_delay)
    with pytest.raises(sens.InputError, match="terminal"):
        sens.Event(_below_half, None, direction=-1, delay=_delay, terminal=True)
