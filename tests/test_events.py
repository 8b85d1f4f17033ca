"""Doses, breakpoints and state events: every derivative against an independent
reference (closed forms, SciPy split solves with finite differences)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens
from sensitivity import models

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


def test_pk_seven_doses_against_bateman_superposition_forward(pk):
    assert pk.input_names[3:10] == tuple(f"dose[{j}].amount" for j in range(7))
    assert pk.input_names[10:] == tuple(f"dose[{j}].time" for j in range(7))
    C, J = _pk_reference(pk)
    res = sens.jacobian(pk, mode="forward")
    np.testing.assert_allclose(res.outputs[:, 0], C, rtol=1e-6, atol=1e-9 * C.max())
    scale = np.abs(J).max(axis=0)  # per input: relative to the derivative's size over time
    err = np.abs(res.values[:, 0, :] - J) / scale
    assert err.max() < 1e-6, dict(zip(res.input_names, err.max(axis=0)))


W_PK = jnp.asarray(np.random.default_rng(1).uniform(0.5, 1.5, PK_TIMES.size))


def weighted_concentration(ys):
    return jnp.sum(W_PK * ys[:, 0])


def test_pk_seven_doses_against_bateman_superposition_adjoint(pk):
    """One backward sweep: w^T dC/dx for every input (17 of them) against the closed form."""
    C, J = _pk_reference(pk)
    g = sens.gradient(pk, weighted_concentration, mode="adjoint")
    assert g.mode == "adjoint" and g.variant == "checkpoint"
    assert abs(g.value / float(W_PK @ C) - 1) < 1e-8
    ref = np.asarray(W_PK) @ J
    err = np.abs(g.grad - ref) / (np.asarray(W_PK) @ np.abs(J))
    assert err.max() < 1e-6, dict(zip(pk.input_names, err))


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


def test_pk_doses_on_the_jacobian_reuse_solver(pk):
    """Kvaerno5 keeping its Newton Jacobian and factorisation across steps restarts them in
    every dose segment: values, the forward Jacobian (dose times included) and an adjoint
    gradient still match the closed form."""
    prob = pk.replace(solver="kvaerno5", jacobian_reuse=True, rtol=1e-10, atol=1e-10)
    C, J = _pk_reference(prob)
    tr = sens.simulate(prob)
    assert tr.stats["jacobian_evaluations"] >= len(prob.doses)  # the reuse solver ran, once per segment at least
    assert tr.stats["jacobian_evaluations"] < tr.stats["num_steps"]  # and kept its Jacobian within segments
    res = sens.jacobian(prob, mode="forward")
    np.testing.assert_allclose(res.outputs[:, 0], C, rtol=1e-6, atol=1e-8 * C.max())
    err = np.abs(res.values[:, 0, :] - J) / np.abs(J).max(axis=0)
    assert err.max() < 1e-5, dict(zip(res.input_names, err.max(axis=0)))
    g = sens.gradient(prob, weighted_concentration, mode="adjoint")
    ref = np.asarray(W_PK) @ J
    err = np.abs(g.grad - ref) / (np.asarray(W_PK) @ np.abs(J))
    assert err.max() < 1e-5, dict(zip(prob.input_names, err))


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



def test_only_a_parameter_compared_with_t_warns_through_a_packed_parameter_vector():
    # the SBML import packs parameters into one vector and unpacks p[i]: a rate k that only
    # multiplies a piecewise-of-time input must not warn; the switching time compared with
    # t must (as an expression 2 * t_on it is no declared breakpoint)
    # (by index, or by one jnp.unstack as the generated code does)
    unpackers = {"index": lambda pv: (pv[0], pv[1], pv[2]), "unstack": jnp.unstack}
    for how, unpack in unpackers.items():
        def rhs(t, y, p, unpack=unpack):
            k, t_on, d = unpack(jnp.stack([p["k"], p["t_on"], p["d"]]))
            return jnp.stack([jnp.where(t < 2.0 * t_on, k * 3.0, 0.0) - d * y[0]])

        model = sens.ODEModel(f"packed_switch_{how}", ["x"], {"k": 1.0, "t_on": 2.0, "d": 0.5}, rhs, [0.0])
        times = np.linspace(0.0, 10.0, 5)
        with warnings.catch_warnings():
            warnings.simplefilter("error", sens.DiscontinuityWarning)
            sens.Problem(model, times, wrt=["k", "d"])
        with pytest.warns(sens.DiscontinuityWarning, match=r"\['t_on'\]"):
            sens.Problem(model, times, wrt=["k", "t_on", "d"])

# ----------------------------------------------------------------------------- bouncing ball
def ball_rhs(t, y, p):  # height, velocity, time since the last bounce
    return jnp.stack([y[1], -p["g"], jnp.ones_like(y[2])])


def ball_hits_ground(t, y, p):
    return y[0]


def ball_bounce(t, y, p):
    # the ball restarts a hair below the ground (as a root finder may leave it) and rising: with
    # direction=None the restarted solve must not take that for a new crossing
    return jnp.stack([y[0] - 1e-12, -p["e"] * y[1], jnp.zeros_like(y[2])])


BALL_EVENT = sens.Event(ball_hits_ground, reset=ball_bounce, direction=None, max_occurrences=5)
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


W_BALL = jnp.asarray(np.random.default_rng(2).standard_normal((BALL_TIMES.size, 2)))


def ball_weighted(ys):
    return jnp.sum(W_BALL * ys)


def _ball_reference(ball):
    x = jnp.asarray(ball.x0())
    ref, tk = ball_closed_form(x, jnp.asarray(ball.times))
    assert float(tk[3]) < BALL_TIMES[-1] < float(tk[4])  # the last save is after the fourth bounce
    J = jax.jacfwd(lambda x_: ball_closed_form(x_, jnp.asarray(ball.times))[0])(x)
    return np.asarray(ref), np.asarray(J)


def test_bouncing_ball_against_closed_form_forward(ball):
    """Height and time since the last bounce (so the bounce times t_k = t - since) and their
    derivatives by g, e and the initial height, through four located and reset events."""
    ref, J = _ball_reference(ball)
    res = sens.jacobian(ball, mode="forward")
    np.testing.assert_allclose(res.outputs, ref, rtol=1e-7, atol=1e-8)
    np.testing.assert_allclose(res.values, J, rtol=1e-6, atol=1e-7)


def test_bouncing_ball_against_closed_form_adjoint(ball):
    ref, J = _ball_reference(ball)
    g = sens.gradient(ball, ball_weighted, mode="adjoint")
    assert abs(g.value - float(np.sum(np.asarray(W_BALL) * ref))) < 1e-7
    np.testing.assert_allclose(g.grad, np.einsum("to,toi->i", np.asarray(W_BALL), J), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------- fitting with doses
FIT_TRUE = np.array([1.57, 2.8, 32.0])  # ka, CL, V


def _fit_data():
    x = jnp.concatenate([jnp.asarray(FIT_TRUE), jnp.full(7, 320.0), jnp.arange(7) * 12.0])
    return np.asarray(bateman(x, jnp.asarray(PK_TIMES), 7))


FIT_DATA = jnp.asarray(_fit_data())


def fit_loss(ys):
    return jnp.sum((ys[:, 0] - FIT_DATA) ** 2)


def test_fit_ka_cl_v_from_twice_off_with_auto_gradient_hvp_hessian():
    from scipy.optimize import minimize

    model = models.get("pk_one_compartment_oral")
    start = sens.Problem(model, PK_TIMES, wrt=["ka", "CL", "V"], parameters=dict(zip(["ka", "CL", "V"], 2 * FIT_TRUE)),
                         doses=sens.doses("depot", 320.0, every=12.0, count=7), rtol=1e-10, atol=1e-10)
    compiles = []

    def fun(logx):  # in log parameters: d loss / d log p = p * d loss / d p
        g = sens.gradient(start.with_inputs(np.exp(logx)), fit_loss, mode="auto", probe_problem=False)
        compiles.append(g.timings["compile"])
        return g.value, g.grad * np.exp(logx)

    # bounds at 10x keep the line search away from absurd trial values (V ~ 1e-7 is stiff)
    bounds = [(np.log(v / 10), np.log(v * 10)) for v in start.x0()]
    opt = minimize(fun, np.log(start.x0()), jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 200})
    np.testing.assert_allclose(np.exp(opt.x), FIT_TRUE, rtol=1e-5)
    assert sum(c > 0 for c in compiles) == 1  # every iteration reused one compiled gradient

    at = start.with_inputs(np.exp(opt.x))
    H = sens.hessian(at, fit_loss)  # "auto"
    # against central differences of our own gradient (checked against closed forms above)
    grad = lambda x: sens.gradient(at.with_inputs(x), fit_loss, mode="forward").grad  # noqa: E731
    x0 = at.x0()
    H_fd = np.empty((3, 3))
    for j in range(3):
        h = 1e-5 * x0[j]
        e = np.zeros(3)
        e[j] = h
        H_fd[:, j] = (grad(x0 + e) - grad(x0 - e)) / (2 * h)
    np.testing.assert_allclose(H, H_fd, rtol=1e-5, atol=1e-7 * np.abs(H_fd).max())
    v = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(sens.hvp(at, fit_loss, v), H @ v, rtol=1e-6, atol=1e-9 * np.abs(H @ v).max())


# ----------------------------------------------------------------------------- bad inputs
def test_bad_dose_event_and_breakpoint_inputs_name_the_field():
    pk = models.get("pk_one_compartment_oral")
    ts = np.linspace(0.0, 48.0, 5)
    with pytest.raises(sens.InputError, match=r"doses\[0\].state = 'dpot'.*did you mean 'depot'"):
        sens.Problem(pk, ts, doses=[sens.Dose(0.0, "dpot", 1.0)])
    with pytest.raises(sens.InputError, match=r"doses\[1\].time = 50 is outside the time span \[0, 48\]"):
        sens.Problem(pk, ts, doses=[sens.Dose(0.0, "depot", 1.0), sens.Dose(50.0, "depot", 1.0)])
    with pytest.raises(sens.InputError, match="count = -1 must be a non-negative integer"):
        sens.doses("depot", 1.0, every=12.0, count=-1)
    with pytest.raises(sens.InputError, match="every = 0.0 must be a positive number"):
        sens.doses("depot", 1.0, every=0.0, count=3)
    with pytest.raises(sens.InputError, match=r"Dose.amount = nan must be finite"):
        sens.Dose(0.0, "depot", float("nan"))
    schedule = sens.doses("depot", 1.0, every=12.0, count=3)
    with pytest.raises(sens.InputError, match=r"wrt\[1\] = 'dose\[3\].time': dose index 3 is out of range.*3 doses"):
        sens.Problem(pk, ts, wrt=["ka", "dose[3].time"], doses=schedule)
    with pytest.raises(sens.InputError, match=r"wrt\[0\] = 'dose.amount': the problem has no doses"):
        sens.Problem(pk, ts, wrt=["dose.amount"])
    with pytest.raises(sens.InputError, match=r"wrt\[0\] = 'dose\[x\].time' is not a dose input"):
        sens.Problem(pk, ts, wrt=["dose[x].time"], doses=schedule)
    with pytest.raises(sens.InputError, match=r"breakpoints\[0\] = 'kaa' is not a scalar parameter.*did you mean 'ka'"):
        sens.Problem(pk, ts, breakpoints=["kaa"])
    with pytest.raises(sens.ModelError, match=r"breakpoints\[0\] = 'tswitch' is not a parameter.*did you mean 't_switch'"):
        seir = models.get("seir_intervention")
        sens.ODEModel("x", seir.states, seir.parameters, seir.rhs, seir.y0, breakpoints=["tswitch"])
    with pytest.raises(sens.InputError, match="Event.direction = 'sideways' is not valid"):
        sens.Event(ball_hits_ground, direction="sideways")
    with pytest.raises(sens.InputError, match="Event.reset = 3 must be callable"):
        sens.Event(ball_hits_ground, reset=3)
    with pytest.raises(sens.InputError, match=r"events\[0\] = 'bounce' is not a sensitivity.Event"):
        sens.Problem(pk, ts, events=["bounce"])


def test_yaml_doses_block_and_its_validation(tmp_path):
    from sensitivity.app.config import run as config

    base = ("model: pk_one_compartment_oral\ntime: {start: 0.0, stop: 48.0, points: 9}\n"
            "sensitivity: {wrt: [ka, 'dose[1].amount', dose.time]}\n")
    good = tmp_path / "good.yaml"
    good.write_text(base + "doses:\n  - {time: 30.0, state: depot, amount: 50.0}\n"
                           "  - {state: depot, amount: 100.0, every: 24.0, count: 2}\nbreakpoints: [40.0]\n")
    spec = config.load(good)
    assert [(d.time, d.amount) for d in spec.problem.doses] == [(0.0, 100.0), (24.0, 100.0), (30.0, 50.0)]
    assert spec.problem.input_names == ("ka", "dose[1].amount", "dose[0].time", "dose[1].time", "dose[2].time")
    assert spec.problem.fixed_breakpoints == (40.0,)
    bad = tmp_path / "bad.yaml"
    bad.write_text(base + "doses: [{time: 60.0, state: dpot, amount: 1.0}, {state: depot, amount: 1.0, "
                          "every: 12.0, count: -2}]\nbreakpoints: [t_swich]\n")
    with pytest.raises(sens.ConfigError) as info:
        config.load(bad)
    text = "\n".join(info.value.problems)
    assert "doses[1].count = -2: must be greater than or equal to 0" in text
    bad.write_text(base + "doses: [{time: 60.0, state: dpot, amount: 1.0}]\nbreakpoints: [t_swich]\n")
    with pytest.raises(sens.ConfigError) as info:
        config.load(bad)
    text = "\n".join(info.value.problems)
    assert "doses[0].state = 'dpot': model 'pk_one_compartment_oral' has no such state (did you mean 'depot'?)" in text
    assert "doses[0].time: dose time 60 is outside the time span [0, 48]" in text
    assert "breakpoints[0] = 't_swich': not a scalar parameter" in text


# ----------------------------------------------------------------------------- terminal event
def decay_rhs(t, y, p):  # an amount decaying, and a clock
    return jnp.stack([-p["k"] * y[0], jnp.ones_like(y[1])])


def below_threshold(t, y, p):
    return y[0] - p["c"]


def test_terminal_event_holds_the_state_at_the_event_and_its_time_derivative():
    """y' = -k y stops when y = c, at t_e = ln(y0 / c) / k; later saves hold the event state,
    so the clock there reads t_e, with d t_e / dk = -t_e / k, d t_e / dc = -1 / (k c)."""
    stop = sens.Event(below_threshold, direction=-1, terminal=True)
    model = sens.ODEModel("decay_to_threshold", ["y", "clock"], {"k": 0.5, "c": 0.25}, decay_rhs,
                          {"y": 1.0, "clock": 0.0})
    times = np.array([0.0, 1.0, 2.0, 3.0, 5.0])
    prob = sens.Problem(model, times, wrt=["k", "c", "y0.y"], events=[stop], rtol=1e-11, atol=1e-11)
    res = sens.jacobian(prob, mode="forward")
    k, c, y0 = 0.5, 0.25, 1.0
    te = np.log(y0 / c) / k  # 2.77
    before = times < te
    np.testing.assert_allclose(res.outputs[before, 0], y0 * np.exp(-k * times[before]), rtol=1e-9)
    np.testing.assert_allclose(res.outputs[~before], [[c, te]] * int((~before).sum()), rtol=1e-9)
    dte = np.array([-te / k, -1 / (k * c), 1 / (k * y0)])
    np.testing.assert_allclose(res.values[~before, 1, :], np.tile(dte, (int((~before).sum()), 1)), rtol=1e-7)
    # before the event: the plain decay's derivatives (dy/dk = -t y, dy/dy0 = e^{-kt})
    t = times[before]
    np.testing.assert_allclose(res.values[before, 0, 0], -t * y0 * np.exp(-k * t), atol=1e-9)
    np.testing.assert_allclose(res.values[before, 0, 2], np.exp(-k * t), rtol=1e-9)
    # after the event y is held at c: it moves with c only
    np.testing.assert_allclose(res.values[~before, 0, :], np.tile([0.0, 1.0, 0.0], (int((~before).sum()), 1)), atol=1e-9)


# ----------------------------------------------------------------------------- fixed-time breakpoints
def infusion_rhs(t, y, p):  # a constant-rate infusion from t = 2 to t = 5, first-order elimination
    return jnp.stack([jnp.where((t >= 2.0) & (t < 5.0), p["r"], 0.0) - p["k"] * y[0]])


def test_fixed_time_breakpoints_step_onto_the_discontinuity():
    """Model-level fixed times (an SBML piecewise in time) go to the step controller: the
    solve matches the closed form to 1e-9 and the controller rejects fewer steps."""
    ts = np.linspace(0.0, 8.0, 9)
    k, r = 0.7, 3.0
    exact = np.where(ts < 2, 0, np.where(ts < 5, r / k * (1 - np.exp(-k * (ts - 2))),
                                         r / k * (1 - np.exp(-3 * k)) * np.exp(-k * (ts - 5))))
    declared = sens.ODEModel("infusion", ["A"], {"r": r, "k": k}, infusion_rhs, [0.0], breakpoints=[2.0, 5.0])
    prob = sens.Problem(declared, ts, rtol=1e-10, atol=1e-10)
    assert prob.fixed_breakpoints == (2.0, 5.0) == prob.replace(rtol=1e-9).fixed_breakpoints
    tr = sens.simulate(prob)
    np.testing.assert_allclose(tr.outputs[:, 0], exact, rtol=0, atol=1e-9)
    plain = sens.simulate(sens.Problem(sens.ODEModel("infusion_plain", ["A"], {"r": r, "k": k}, infusion_rhs, [0.0]),
                                       ts, rtol=1e-10, atol=1e-10))
    assert tr.stats["num_rejected_steps"] < plain.stats["num_rejected_steps"]


def test_more_events_than_max_occurrences_is_a_solver_error(ball):
    """Six bounces before t = 3.9 with max_occurrences=5: a SolverError, not a silent stop."""
    later = ball.replace(times=np.array([0.5, 1.0, 2.5, 3.2, 3.9]), t0=0.0)
    with pytest.raises(sens.SolverError, match="fired more often than their max_occurrences"):
        sens.jacobian(later, mode="forward")


def test_bouncing_ball_hessian_against_closed_form(ball):
    """Second order through located, reset events: d^2 (w . outputs) / d(g, e, h0)^2."""
    x = jnp.asarray(ball.x0())
    ref = jax.hessian(lambda x_: ball_weighted(ball_closed_form(x_, jnp.asarray(ball.times))[0]))(x)
    H = sens.hessian(ball, ball_weighted)  # "auto": forward-over-forward for 3 inputs
    np.testing.assert_allclose(H, np.asarray(ref), rtol=1e-6, atol=1e-8 * np.abs(ref).max())


def test_hvp_with_dose_inputs_carries_the_moving_jump():
    """Reverse-over-forward HVP (the tangent jumps by dJ + (f- - f+) dtau at each dose) for
    inputs that include a dose time and a dose amount, against the Hessian of the closed form."""
    model = models.get("pk_one_compartment_oral")
    wrt = ["ka", "CL", "V", "dose[2].amount", "dose[3].time"]
    prob = sens.Problem(model, PK_TIMES, wrt=wrt, parameters={"ka": 1.2, "CL": 3.0, "V": 30.0},
                        doses=sens.doses("depot", 320.0, every=12.0, count=7), rtol=1e-11, atol=1e-11)
    x = jnp.concatenate([jnp.asarray([1.2, 3.0, 30.0]), jnp.full(7, 320.0), jnp.arange(7) * 12.0])
    full = jax.hessian(lambda x_: fit_loss(bateman(x_, jnp.asarray(PK_TIMES), 7)[:, None]))(x)
    pick = np.array([0, 1, 2, 3 + 2, 10 + 3])
    H = np.asarray(full)[np.ix_(pick, pick)]
    v = np.array([1.0, -2.0, 0.05, 0.01, 0.3])
    hv = sens.hvp(prob, fit_loss, v)  # "auto" = rev-over-fwd
    np.testing.assert_allclose(hv, H @ v, rtol=1e-6, atol=1e-8 * np.abs(H @ v).max())
    with pytest.raises(sens.InputError, match="'fwd-over-rev' cannot differentiate a solve whose segment bounds"):
        sens.hvp(prob, fit_loss, v, mode="fwd-over-rev")


def test_event_directions_follow_the_documentation():
    """None, 0 and "both" fire on both crossings; +1/"up" rising, -1/"down" falling; a bool
    is itself (True equals the key 1 and False the key 0 of the table, which is "both")."""
    from sensitivity.core.schedule import crossing

    assert [crossing(d) for d in (None, 0, "both")] == [None, None, None]
    assert [crossing(d) for d in (1, "up", "rising", True)] == [True] * 4
    assert [crossing(d) for d in (-1, "down", "falling", False)] == [False] * 4



# ----------------------------------------------------------------------------- a reset off the root
def grow_rhs(t, y, p):  # y grows; n counts the events
    return jnp.stack([p["r"] * y[0], jnp.zeros_like(y[1])])


def grow_at_one(t, y, p):
    return y[0] - 1.0


def grow_drop(t, y, p):  # the first event drops y by a, every later one by b
    return jnp.stack([y[0] - jnp.where(y[1] < 0.5, p["a"], p["b"]), y[1] + 1.0])


def _grow_drop_closed_form(x, times):
    """y' = r y from y0 = 1/2; at y = 1 it drops to 1 - a, then to 1 - b at each later
    crossing: event times t1 = ln 2 / r, t2 = t1 - ln(1 - a) / r, t_k+1 = t_k - ln(1 - b) / r."""
    r, a, b = x
    t1 = jnp.log(2.0) / r
    t2 = t1 - jnp.log(1 - a) / r
    k = jnp.floor((times - t2) / (-jnp.log(1 - b) / r))  # the later events up to each time
    tk = t2 - k * jnp.log(1 - b) / r
    return jnp.where(times < t1, 0.5 * jnp.exp(r * times),
                     jnp.where(times < t2, (1 - a) * jnp.exp(r * (times - t1)), (1 - b) * jnp.exp(r * (times - tk))))


def test_a_reset_off_the_root_keeps_the_next_crossing_in_the_first_step():
    """The first drop is small (a = 0.002): the solver's first step after it passes the next
    crossing, which is found only when the restart starts from g's own (negative) side,
    not from the side the flow moves to. Values and d/d(r, a, b) against the closed form."""
    ev = sens.Event(grow_at_one, reset=grow_drop, direction=1, max_occurrences=8)
    x = np.array([1.0, 0.002, 0.5])
    model = sens.ODEModel("grow_drop", ["y", "n"], dict(zip("rab", x)), grow_rhs, [0.5, 0.0])
    times = np.array([0.0, 0.5, 0.7, 0.8, 1.2, 1.6, 2.5])
    res = sens.jacobian(sens.Problem(model, times, wrt=["r", "a", "b"], events=[ev], rtol=1e-10, atol=1e-12),
                        mode="forward")
    np.testing.assert_allclose(res.outputs[:, 1], [0, 0, 2, 2, 2, 3, 4])
    np.testing.assert_allclose(res.outputs[:, 0], _grow_drop_closed_form(x, times), rtol=1e-8)
    J = jax.jacfwd(_grow_drop_closed_form)(jnp.asarray(x), jnp.asarray(times))
    np.testing.assert_allclose(res.values[:, 0, :], J, rtol=1e-6, atol=1e-8)


# ----------------------------------------------------------------------------- crossings inside one step
def still_rhs(t, y, p):  # n (events so far) is constant, z the time since the last event
    return jnp.stack([jnp.zeros_like(y[0]), jnp.ones_like(y[1])])


def sine_up(t, y, p):
    return jnp.sin(p["w"] * t - 1.0)


def count_and_restart(t, y, p):
    return jnp.stack([y[0] + 1.0, jnp.zeros_like(y[1])])


def test_a_root_function_that_turns_twice_within_a_step_is_not_missed():
    """The root function sin(w t - 1) depends on time only; the states move linearly, so the
    error control alone takes steps over several of its periods. Rising crossings at
    t_k = (1 + 2 pi k) / w: n(t) counts them, z(t) = t - t_last, dz/dw = (1 + 2 pi k) / w^2."""
    ev = sens.Event(sine_up, reset=count_and_restart, direction=1, max_occurrences=8)
    w = 10.0
    model = sens.ODEModel("sine_counter", ["n", "z"], {"w": w}, still_rhs, [0.0, 0.0])
    times = np.array([0.0, 0.5, 1.0, 2.5])
    res = sens.jacobian(sens.Problem(model, times, wrt=["w"], events=[ev], rtol=1e-10, atol=1e-12),
                        mode="forward")
    k = np.floor((w * times - 1.0) / (2 * np.pi))  # the last crossing's index (-1: none yet)
    np.testing.assert_allclose(res.outputs[:, 0], k + 1)
    t_last = np.where(k >= 0, (1 + 2 * np.pi * k) / w, 0.0)
    np.testing.assert_allclose(res.outputs[:, 1], times - t_last, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(res.values[:, 1, 0], np.where(k >= 0, (1 + 2 * np.pi * k) / w ** 2, 0.0),
                               rtol=1e-6, atol=1e-9)
