"""The cost model: decisions on clear-cut shapes, consistent plans, memory, calibration files."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens
from sensitivity.ad.cost import Calibration, calibrated, make_plan, save_calibration, stored_calibration


def lv_rhs(t, y, p):
    x, z = y[0], y[1]
    return jnp.stack([p["alpha"] * x - p["beta"] * x * z, p["delta"] * x * z - p["gamma"] * z])


def mlp_rhs(t, y, p):
    return p["W2"] @ jnp.tanh(p["W1"] @ y) - y


@pytest.fixture(scope="module")
def one_rate_many_outputs():
    model = sens.ODEModel("lv", ["prey", "predator"], dict(alpha=1.5, beta=1.0, gamma=3.0, delta=1.0),
                          lv_rhs, [10.0, 5.0])
    return sens.Problem(model, np.linspace(0, 10, 500), wrt=["alpha"])  # n = 1, m = 1000


@pytest.fixture(scope="module")
def many_weights_one_loss():
    rng = np.random.default_rng(0)
    model = sens.ODEModel("mlp", 4, dict(W1=rng.standard_normal((125, 4)) / 2,
                                         W2=rng.standard_normal((4, 125)) / 11), mlp_rhs, np.ones(4))
    return sens.Problem(model, np.linspace(0, 1, 10), wrt=["W1", "W2"])  # n = 1000


def loss(ys):
    return jnp.sum(ys ** 2)


@pytest.mark.parametrize("probe", [False, True])
def test_forward_for_one_input_and_a_thousand_outputs(one_rate_many_outputs, probe):
    p = sens.plan(one_rate_many_outputs, probe_problem=probe)
    assert (p.n_inputs, p.n_outputs, p.mode) == (1, 1000, "forward")
    assert p.estimate("adjoint").solves > 10 * p.chosen.solves


@pytest.mark.parametrize("probe", [False, True])
def test_adjoint_for_a_thousand_inputs_and_one_output(many_weights_one_loss, probe):
    p = sens.plan(many_weights_one_loss, loss, probe_problem=probe)
    assert (p.n_inputs, p.n_outputs, p.mode, p.variant) == (1000, 1, "adjoint", "checkpoint")
    assert p.estimate("forward").solves > 5 * p.chosen.solves


def test_plan_fields_are_consistent(one_rate_many_outputs):
    p = sens.plan(one_rate_many_outputs, probe_problem=True)
    assert p.chosen in p.candidates and p.steps > 0
    assert p.calibration.source == "a probe of this problem"
    for c in p.candidates:
        assert c.seconds == pytest.approx(c.solves * p.calibration.solve_seconds)
        assert c.fits == (c.memory_bytes <= p.memory_budget)
    assert p.chosen.solves == min(c.solves for c in p.candidates if c.fits and c.variant != "backsolve")
    data = json.loads(json.dumps(p.to_dict()))
    assert data["chosen"] == {"mode": "forward", "variant": None}
    assert data["explanation"] == p.explain()


def test_explain_names_n_m_and_the_mode(one_rate_many_outputs):
    text = sens.plan(one_rate_many_outputs, probe_problem=False).explain()
    assert "n = 1 inputs" in text and "m = 1000 outputs" in text and "forward chosen" in text
    assert "1000 backward sweeps" in text


def test_forced_mode_is_recorded_not_reasoned():
    p = make_plan("jacobian", 1, 1000, 2, 500, Calibration(), force=("adjoint", "checkpoint"))
    assert p.mode == "adjoint" and p.forced and "forced by the caller" in p.explain()


def test_memory_budget_reduces_checkpoints_then_falls_back_to_backsolve():
    shape = dict(task="gradient", n_inputs=100, n_outputs=1, n_states=100_000, n_times=10,
                 calibration=Calibration(), steps=10_000)
    roomy = make_plan(memory_budget=2**40, **shape)
    assert roomy.variant == "checkpoint" and roomy.chosen.checkpoints == 446  # diffrax: ~sqrt(2 max_steps)
    tight = make_plan(memory_budget=200 * 2**20, **shape)
    ck = tight.estimate("adjoint", "checkpoint")
    assert tight.variant == "checkpoint" and 2 <= ck.checkpoints < 446 and ck.fits
    assert ck.solves > roomy.chosen.solves  # recomputation costs time
    assert "over the" in tight.explain()
    tiny = make_plan(memory_budget=15 * 2**20, **shape)
    assert tiny.variant == "backsolve" and "backsolve" in tiny.explain()


def test_calibration_from_timings():
    cal = calibrated(Calibration(), solve_seconds=1.0, jvp_seconds=1.8, vjp1_seconds=2.5,
                     vjp_seconds=3.2, tangents=8, cotangents=8)
    assert cal.tangent == pytest.approx(0.1) and cal.cotangent == pytest.approx(0.1)
    assert cal.record == pytest.approx(2.4)


def test_calibration_round_trips_through_its_file(tmp_path, monkeypatch):
    cal = Calibration(tangent=0.07, record=1.3, cotangent=0.2, solve_seconds=0.01, source="test")
    path = save_calibration(cal, tmp_path / "cal.json")
    back = stored_calibration(path)
    assert (back.tangent, back.record, back.cotangent) == (0.07, 1.3, 0.2)
    assert str(path) in back.source
    monkeypatch.setenv("SENSITIVITY_CALIBRATION", str(path))
    p = make_plan("gradient", 3, 1, 2, 5, stored_calibration())
    assert p.calibration.tangent == 0.07
    (tmp_path / "bad.json").write_text('{"tangent": -1}')
    with pytest.raises(sens.SensitivityError, match="invalid"):
        stored_calibration(tmp_path / "bad.json")


def test_close_call_on_a_cheap_problem_is_not_worth_a_probe(one_rate_many_outputs):
    prob = one_rate_many_outputs.replace(times=np.linspace(0, 1, 5))
    p = sens.plan(prob, loss)  # n = 1, scalar objective: forward and adjoint within 3x
    assert "not probed" in p.explain()
    assert p.calibration.source != "a probe of this problem" and p.calibration.solve_seconds > 0
    assert p.steps > 0 and p.chosen.seconds is not None


def test_few_checkpoints_warn_of_binomial_recomputation():
    # C(4 + r, r) >= 5116 steps first at r = 17: each step recomputed ~17 times forward
    p = make_plan("gradient", 4, 1, 2, 10, Calibration(), steps=5116, checkpoints=4)
    ck = p.estimate("adjoint", "checkpoint")
    assert "~17x forward recomputation" in ck.note
    assert ck.solves == pytest.approx(Calibration().record * 17 + Calibration().cotangent)


@pytest.mark.parametrize("n_states, n_params, measured", [
    (4, 72, "forward"),    # Beer_MolBioSystems2014: forward 0.72x the adjoint's time
    (10, 50, "forward"),   # Giordano_Nature2020: 0.57x
    (34, 13, "forward"),   # Laske_PLOSComputBiol2019: 0.85x
    (14, 39, "adjoint"),   # Raia_CancerResearch2011: adjoint 0.81x the forward's time
    (36, 56, "adjoint"),   # Alkan_SciSignal2018: 0.37x
    (25, 46, "adjoint"),   # Isensee_JCB2018: 0.57x
])
def test_lean_loop_constants_pick_the_mode_measured_faster(n_states, n_params, measured):
    """The Rodas5P loop's constants against the faster mode timed on PEtab benchmark
    problems (`benchmarks/petab.py --modes auto,forward,adjoint`): a tangent's cost grows
    with the states, so a flat one cannot be right for both a 4-state model with 72
    parameters and a 36-state model with 56."""
    from sensitivity.solvers import lean_rodas
    plan = make_plan(task="gradient", n_inputs=n_params, n_outputs=1, n_states=n_states, n_times=20,
                     calibration=Calibration(**lean_rodas.calibration(n_states)))
    assert plan.mode == measured, plan.explain()
