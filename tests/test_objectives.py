"""Objectives that integrate over time, through doses and events, against closed forms and
central differences, in every derivative route and from YAML."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens
from sensitivity import models
from sensitivity.ad.quadrature import with_quadrature
from sensitivity.analyses.gsa.common import evaluate
from sensitivity.analyses.metrics import Objective
from sensitivity.app import cli
from sensitivity.solvers import linear as stiff_linear

# ----------------------------------------------------------------------------- oral PK, AUC
# 100 mg every 12 h x 10, AUC of C over 0-120 h; save times every 2 h: the dose times are
# save times, as in a run whose grid holds them
PK = {"ka": 1.0, "CL": 5.0, "V": 50.0}
N_DOSES, EVERY, AMOUNT, T_END = 10, 12.0, 100.0, 120.0
TIMES = np.linspace(0.0, T_END, 61)
WRT = ["ka", "CL", "V", "dose[4].time", "dose[9].time", "dose[9].amount"]


def auc_closed_form(x):
    """integral_0^T C dt by superposition of Bateman functions, x = (ka, CL, V, t4, t9, D9):
    each dose i contributes D ka / (V (ka - k)) ((1 - e^{-k u}) / k - (1 - e^{-ka u}) / ka),
    u = T - t_i, k = CL / V."""
    ka, CL, V, t4, t9, d9 = x
    k = CL / V
    tds = jnp.arange(N_DOSES) * EVERY
    tds = tds.at[4].set(t4).at[9].set(t9)
    amounts = jnp.full(N_DOSES, AMOUNT).at[9].set(d9)
    u = T_END - tds
    return jnp.sum(amounts * ka / (V * (ka - k)) * ((1 - jnp.exp(-k * u)) / k - (1 - jnp.exp(-ka * u)) / ka))


X_PK = np.array([PK["ka"], PK["CL"], PK["V"], 4 * EVERY, 9 * EVERY, AMOUNT])
AUC = Objective("integral", (0,), times=tuple(TIMES))


@pytest.fixture(scope="module")
def pk():
    return sens.Problem(models.get("pk_one_compartment_oral"), TIMES, parameters=PK, wrt=WRT,
                        doses=sens.doses("depot", AMOUNT, every=EVERY, count=N_DOSES), rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def exact():
    return (float(auc_closed_form(jnp.asarray(X_PK))), np.asarray(jax.grad(auc_closed_form)(jnp.asarray(X_PK))),
            np.asarray(jax.hessian(auc_closed_form)(jnp.asarray(X_PK))))


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_auc_and_its_gradient_through_doses_match_the_closed_form(pk, exact, mode):
    """The trapezoid over this grid was off by 0.4 in the AUC and took one-sided derivatives
    at the dose times (d AUC / d dose[4].time -0.8 against -0.0017)."""
    value, grad, _ = exact
    g = sens.gradient(pk, AUC, mode=mode)
    assert g.mode == mode
    assert g.value == pytest.approx(value, rel=1e-8)
    np.testing.assert_allclose(g.grad, grad, rtol=1e-6, atol=1e-8 * np.abs(grad).max())
    assert g.grad[3] == pytest.approx(-0.00165907, rel=1e-4)  # the table: the exact value


def test_auc_dose_time_derivative_against_central_differences(pk):
    """d AUC / d dose[j].time against central differences of the toolkit's own AUC values
    (the dose times are values: the shifted problems reuse the compiled function)."""
    g = sens.gradient(pk, AUC, mode="forward")
    for i, h in ((3, 1e-3), (4, 1e-3), (0, 1e-5)):
        x = pk.x0()
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        fd = (sens.gradient(pk.with_inputs(up), AUC, mode="forward").value
              - sens.gradient(pk.with_inputs(down), AUC, mode="forward").value) / (2 * h)
        assert g.grad[i] == pytest.approx(fd, rel=1e-5, abs=1e-7), pk.input_names[i]


def test_auc_second_order_matches_the_closed_form(pk, exact):
    """Hessian (forward over forward) and HVP (reverse over forward, the tangent system
    carrying the jumps) of the quadrature state against the closed form's Hessian."""
    _, _, H_exact = exact
    H = sens.hessian(pk, AUC, mode="fwd-over-fwd")
    np.testing.assert_allclose(H, H_exact, rtol=1e-5, atol=1e-7 * np.abs(H_exact).max())
    v = np.array([0.3, -0.2, 0.01, 1.0, -0.5, 0.02])
    hv = sens.hvp(pk, AUC, v, mode="rev-over-fwd")
    np.testing.assert_allclose(hv, H_exact @ v, rtol=1e-5, atol=1e-7 * np.abs(H_exact @ v).max())


def test_auc_against_the_model_with_the_auc_as_an_explicit_state(pk):
    """The same model written with the AUC as its own third state, saved at the end: the
    objective ys[-1, auc] of that problem is what the quadrature state computes."""
    def rhs(t, y, p):
        absorption = p["ka"] * y[0]
        return jnp.stack([-absorption, absorption - p["CL"] / p["V"] * y[1], y[1] / p["V"]])

    m = sens.ODEModel("pk_with_auc", ["depot", "central", "auc"], dict(PK), rhs, [0.0, 0.0, 0.0])
    ref = sens.Problem(m, TIMES, wrt=WRT, of=["auc"], rtol=1e-10, atol=1e-10,
                       doses=sens.doses("depot", AMOUNT, every=EVERY, count=N_DOSES))
    r = sens.gradient(ref, lambda ys: ys[-1, 0], mode="forward")
    g = sens.gradient(pk, AUC, mode="adjoint")
    assert g.value == pytest.approx(r.value, rel=1e-9)
    np.testing.assert_allclose(g.grad, r.grad, rtol=1e-6, atol=1e-9)


def test_integral_window_and_a_state_output(pk):
    """A window inside the span ([24, 96]) and a state (the central amount) integrated:
    the AUC of C over [24, 96] is the central amount's integral / V."""
    prob = pk.replace(of=["C", "central"])
    both = sens.gradient(prob, Objective("integral", (0,), times=(24.0, 96.0)), mode="forward")
    amount = sens.gradient(prob, Objective("integral", (1,), times=(24.0, 96.0)), mode="forward")
    assert both.value == pytest.approx(amount.value / PK["V"], rel=1e-8)

    def windowed(x):
        return auc_closed_form(x)  # over [0, 120]: subtract [0, 24] and [96, 120] below

    x = jnp.asarray(X_PK)
    k = PK["CL"] / PK["V"]
    tds = np.arange(N_DOSES) * EVERY

    def partial(T):  # integral_0^T C dt of the default schedule
        u = np.clip(T - tds, 0.0, None)
        a = PK["ka"]
        return np.sum(AMOUNT * a / (PK["V"] * (a - k)) * ((1 - np.exp(-k * u)) / k - (1 - np.exp(-a * u)) / a))

    assert float(windowed(x)) == pytest.approx(partial(T_END), rel=1e-12)
    assert both.value == pytest.approx(partial(96.0) - partial(24.0), rel=1e-8)
    with pytest.raises(sens.InputError, match=r"window \[-1, 96\] must lie inside"):
        sens.gradient(prob, Objective("integral", (0,), times=(-1.0, 96.0)), mode="forward")


# ----------------------------------------------------------------------------- through events
def decay(t, y, p):
    return -p["k"] * y


def half_way(t, y, p):
    return y[0] - 0.5


def refill(t, y, p):
    return jnp.ones_like(y)


REFILL = sens.Event(half_way, reset=refill, direction=-1, max_occurrences=12)


def sawtooth_integral(k, T):
    """integral_0^T y dt for y' = -k y, y(0) = 1, reset to 1 whenever y falls to 1/2:
    period P = ln 2 / k, each full period adds (1 - 1/2) / k, then the rest."""
    P = jnp.log(2.0) / k
    m = jnp.floor(jax.lax.stop_gradient(T / P))
    return m * 0.5 / k + (1 - jnp.exp(-k * (T - m * P))) / k


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_integral_through_state_events_matches_the_closed_form(mode):
    """The quadrature state rides through the event's reset (q does not jump) and the
    event time's implicit derivative moves it."""
    m = sens.ODEModel("sawtooth", ["y"], {"k": 0.8}, decay, [1.0], events=[REFILL])
    times = np.linspace(0.0, 6.0, 7)  # coarse: the trapezoid is far off here
    prob = sens.Problem(m, times, wrt=["k"], rtol=1e-10, atol=1e-10)
    g = sens.gradient(prob, Objective("integral", (0,), times=tuple(times)), mode=mode)
    assert g.value == pytest.approx(float(sawtooth_integral(0.8, 6.0)), rel=1e-7)
    assert g.grad[0] == pytest.approx(float(jax.grad(sawtooth_integral)(0.8, 6.0)), rel=1e-6)


def test_an_integral_objective_on_an_array_needs_its_times():
    with pytest.raises(sens.InputError, match="ys has 3 rows, times 2"):
        Objective("integral", (0,), times=(0.0, 1.0))(np.ones((3, 1)))


# ----------------------------------------------------------------------------- from YAML
def test_yaml_integral_objective_runs_exactly(tmp_path):
    """`objective: {type: integral}` in a run config: the summary's value and gradient are
    the closed form's, though the run's grid (every 4 h) makes a trapezoid 1.6 off."""
    path = tmp_path / "pk.yaml"
    path.write_text(
        "model: pk_one_compartment_oral\nparameters: {ka: 1.0, CL: 5.0, V: 50.0}\n"
        "time: {start: 0.0, stop: 120.0, points: 31}\n"
        "solver: {rtol: 1.0e-10, atol: 1.0e-10}\n"
        "doses: {state: depot, amount: 100.0, every: 12.0, count: 10}\n"
        "sensitivity:\n  wrt: [ka, CL, V, 'dose[4].time', 'dose[9].time', 'dose[9].amount']\n"
        "  probe: never\n  objective: {type: integral, outputs: [C]}\n"
        "output: {plots: []}\n")
    out = tmp_path / "result"
    assert cli.main(["run", str(path), "--out", str(out), "-q"]) == 0
    s = json.loads((out / "summary.json").read_text())
    x = jnp.asarray(X_PK)
    assert s["objective"]["value"] == pytest.approx(float(auc_closed_form(x)), rel=1e-8)
    grad = np.array([s["objective"]["gradient"][n] for n in WRT])
    exact = np.asarray(jax.grad(auc_closed_form)(x))
    np.testing.assert_allclose(grad, exact, rtol=1e-6, atol=1e-8 * np.abs(exact).max())


def test_ensemble_gradients_of_an_integral_are_exact(pk):
    """`sens.ensemble(task="gradient")` (and so DGSM) integrates as the single calls do."""
    X = np.stack([X_PK, X_PK * np.array([1.2, 0.9, 1.1, 1.0, 1.0, 1.5]) + np.array([0, 0, 0, 1.0, -2.0, 0])])
    ds = sens.ensemble(pk, X, task="gradient", objective=AUC)
    for i in range(2):
        x = jnp.asarray(X[i])
        assert ds["value"].values[i] == pytest.approx(float(auc_closed_form(x)), rel=1e-8)
        exact = np.asarray(jax.grad(auc_closed_form)(x))
        np.testing.assert_allclose(ds["gradient"].values[i], exact, rtol=1e-6, atol=1e-8 * np.abs(exact).max())


# ----------------------------------------------------------------------------- save time = dose time
@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_a_save_time_on_a_dose_time_sees_the_dose(mode):
    """depot(t) = sum over doses with t_i <= t of D_i e^{-ka (t - t_i)}: a save time equal to
    a dose time holds the value just after the dose (at t0, inside, and at the last time),
    and its derivative with respect to that dose's time is the side where the dose stays
    at or before the save time: d depot(t_i) / d t_i = ka D_i."""
    ka, D = 0.7, np.array([100.0, 50.0, 80.0])
    tds = np.array([0.0, 6.0, 12.0])  # the last dose on the last save time
    times = np.linspace(0.0, 12.0, 7)  # 0, 2, ..., 12: every dose time is a save time
    doses = [sens.Dose(t, "depot", d) for t, d in zip(tds, D)]
    prob = sens.Problem(models.get("pk_one_compartment_oral"), times, of=["depot"], parameters={"ka": ka},
                        wrt=["ka", "dose.time", "dose.amount"], doses=doses, rtol=1e-11, atol=1e-11)

    def depot(x):
        k, t_d, d = x[0], x[1:4], x[4:7]
        s = jnp.asarray(times)[:, None] - t_d[None, :]
        return jnp.sum(jnp.where(s >= 0, d * jnp.exp(-k * jnp.where(s >= 0, s, 0.0)), 0.0), axis=1)

    x = jnp.asarray(prob.x0())
    res = sens.jacobian(prob, mode=mode)
    np.testing.assert_allclose(res.outputs[:, 0], depot(x), rtol=1e-8)
    assert res.outputs[0, 0] == pytest.approx(100.0) and res.outputs[-1, 0] > 80.0  # after the dose
    np.testing.assert_allclose(res.values[:, 0, :], jax.jacfwd(depot)(x), rtol=1e-6, atol=1e-8)
    on = [int(np.flatnonzero(times == t)[0]) for t in tds]  # the save on each dose
    for j, k in enumerate(on):
        assert res.values[k, 0, 1 + j] == pytest.approx(ka * D[j], rel=1e-6)


def test_gsa_samples_of_an_integral_are_exact(pk):
    """Sobol/Morris evaluate an objective on ensembles of solves: the integral is the
    quadrature state there too, not a sum over the save grid."""
    X = np.stack([X_PK, X_PK * np.array([0.8, 1.1, 0.9, 1.0, 1.0, 0.7]) + np.array([0, 0, 0, -1.5, 0.5, 0])])
    Y, _ = evaluate(pk, X, AUC)
    np.testing.assert_allclose(Y, [float(auc_closed_form(jnp.asarray(x))) for x in X], rtol=1e-8)


def test_the_quadrature_state_keeps_a_declared_sparsity_pattern():
    """A banded model stays banded with its quadrature state: q's row holds the integrated
    output's state (and q's diagonal), and no state depends on q; unnamed states go on."""
    base = models.get("brusselator_1d", n=20)
    tri = np.eye(10, k=-1) + np.eye(10) + np.eye(10, k=1)
    pattern = np.block([[tri, np.eye(10)], [np.eye(10), tri]]) != 0
    m = sens.ODEModel(base.name, 20, base.parameters, base.rhs, base.y0, stiff=True, jacobian_sparsity=pattern)
    prob = sens.Problem(m, np.linspace(0.0, 2.0, 6), wrt=["A"], of=["u[0]", "u[12]"], solver="rodas5p")
    aug, increase = with_quadrature(prob, Objective("integral", (1,)))
    assert aug.model.states[-1] == "u[20]" and aug.of == ("u[20]",) and aug.input_names == prob.input_names
    q = aug.model.jacobian_sparsity
    assert sorted(q.cols[q.rows == 20].tolist()) == [12, 20] and not np.any((q.cols == 20) & (q.rows < 20))
    assert stiff_linear.choose(aug).kind == stiff_linear.choose(prob).kind
    assert (increase.first, increase.last) == (0, 1) and aug.times.tolist() == [0.0, 2.0]


def fall(t, y, p):
    return -p["k"] * y


def reaches(t, y, p):
    return y[0] - p["c"]


STOP = sens.Event(reaches, terminal=True)


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_integral_through_a_terminal_event_counts_the_held_outputs(mode):
    """After a terminal event the outputs hold their value at the event, t_e = ln(1 / c) / k;
    the integral over [0, T] is (1 - c) / k + c (T - t_e), as a trapezoid of the held
    outputs would approach."""
    def closed(k, c, T=5.0):
        return (1 - c) / k + c * (T - jnp.log(1 / c) / k)

    m = sens.ODEModel("stopping", ["y"], {"k": 0.9, "c": 0.3}, fall, [1.0], events=[STOP])
    times = np.linspace(0.0, 5.0, 6)
    prob = sens.Problem(m, times, wrt=["k", "c"], rtol=1e-10, atol=1e-10)
    g = sens.gradient(prob, Objective("integral", (0,)), mode=mode)
    assert g.value == pytest.approx(float(closed(0.9, 0.3)), rel=1e-8)
    np.testing.assert_allclose(g.grad, np.asarray(jax.grad(closed, argnums=(0, 1))(0.9, 0.3)), rtol=1e-6)
