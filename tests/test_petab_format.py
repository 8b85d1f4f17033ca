"""PEtab format features on problems written here, against closed forms: SBML events in a
PEtab problem (a time event at an estimated time, a state event assigning a parameter, a
trigger already true at t = 0 with initialValue false / true), a mapping table, NaN in the
condition table (keep the model's value), a noise formula of a state, and a sample of the PEtab
test suite's cases (PEtab 1 and 2.0, from ../shared/petab-test-suite) against their expected
llh, chi2 and simulations."""

import math
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import libsbml
import numpy as np
import pytest

import sensitivity as sens

PARAMS = [  # id, scale, lower, upper, nominal, estimate
    ("k_fast", "log10", 0.01, 10, 0.7, 1),   # mapped to the model's k (mapping table)
    ("k_slow", "lin", 0.0, 5, 0.3, 1),
    ("t_dose", "lin", 1.5, 4, 2.0, 1),
    ("dose", "log", 0.1, 10, 1.5, 1),
    ("a0_c1", "lin", 1.1, 10, 2.0, 1),
]
MEAS = [  # observable, condition, time, measurement
    ("obs_A", "c1", 0.0, 2.1), ("obs_A", "c1", 0.5, 1.3), ("obs_A", "c1", 1.5, 0.9),
    ("obs_A", "c1", 2.0, 2.3),   # at the dose time: the state after the event
    ("obs_A", "c1", 3.0, 1.6), ("obs_A", "c1", 5.0, 0.9),
    ("obs_B", "c1", 1.0, 4.2), ("obs_A", "c2", 1.0, 1.5), ("obs_A", "c2", 4.0, 0.8),
    ("obs_B", "c2", 2.0, 5.8), ("obs_D", "c1", 1.0, 6.5),
]


def _write_problem_yaml(d: Path, mapping: bool = False) -> Path:
    """The PEtab version-1 problem file over the tables written in `d` (and mapping.tsv)."""
    mapping_line = "  mapping_files: [mapping.tsv]\n" if mapping else ""
    (d / "problem.yaml").write_text(
        "format_version: 1\nparameter_file: parameters.tsv\nproblems:\n"
        "- condition_files: [conditions.tsv]\n  measurement_files: [measurements.tsv]\n"
        f"  observable_files: [observables.tsv]\n{mapping_line}  sbml_files: [model.xml]\n")
    return d / "problem.yaml"


def _sbml(path):
    """A' = -k A; k switches to k_slow when A falls below 1 (a state event on a parameter);
    A jumps by `dose` at t = t_dose (a time event); B = 2 A(0) from t = 0 (trigger A > 0 true at
    the start, initialValue false); a twin with initialValue true never fires; D = 7 from t = 0
(`time >= 0`, initialValue false)."""
    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId("ev")
    c = m.createCompartment()
    c.setId("c"), c.setSize(1.0), c.setConstant(True)
    for sid, x0 in (("A", 2.0), ("B", 0.0), ("D", 0.0)):
        s = m.createSpecies()
        s.setId(sid), s.setCompartment("c"), s.setInitialConcentration(x0)
        s.setHasOnlySubstanceUnits(False), s.setBoundaryCondition(False), s.setConstant(False)
    for pid, v, const in (("k", 0.7, False), ("k_slow", 0.3, True), ("t_dose", 2.0, True), ("dose", 1.5, True)):
        p = m.createParameter()
        p.setId(pid), p.setValue(v), p.setConstant(const)
    r = m.createReaction()
    r.setId("decay"), r.setReversible(False), r.setFast(False)
    x = r.createReactant()
    x.setSpecies("A"), x.setStoichiometry(1), x.setConstant(True)
    r.createKineticLaw().setMath(libsbml.parseL3Formula("c * k * A"))

    def event(eid, trigger, assigns, initial_value=True):
        ev = m.createEvent()
        ev.setId(eid), ev.setUseValuesFromTriggerTime(True)
        tr = ev.createTrigger()
        tr.setMath(libsbml.parseL3Formula(trigger)), tr.setInitialValue(initial_value), tr.setPersistent(True)
        for var, formula in assigns:
            ea = ev.createEventAssignment()
            ea.setVariable(var), ea.setMath(libsbml.parseL3Formula(formula))

    event("slow_down", "A < 1", [("k", "k_slow")])
    event("dosing", "time >= t_dose", [("A", "A + dose")])
    event("label", "A > 0", [("B", "2 * A")], initial_value=False)
    # true at t0 with initialValue true: never fires (a trigger of its own: two events with one
    # trigger fire together, which the PEtab solve refuses by name)
    event("never", "A > -1", [("B", "100")], initial_value=True)
    event("start", "time >= 0", [("D", "7")], initial_value=False)   # true at t = 0: fires there
    libsbml.writeSBMLToFile(doc, str(path))


def _write_problem(d: Path):
    _sbml(d / "model.xml")
    # c1: A from an estimated parameter, B NaN (the model's 0); c2: A = 3, B NaN
    (d / "conditions.tsv").write_text("conditionId\tA\tB\nc1\ta0_c1\tNaN\nc2\t3.0\t\n")
    (d / "observables.tsv").write_text(textwrap.dedent("""\
        observableId\tobservableFormula\tnoiseFormula
        obs_A\tA\t0.1
        obs_B\tB\t0.1 + 0.05 * B
        obs_D\tD\t0.5
        """))
    rows = ["observableId\tsimulationConditionId\ttime\tmeasurement"]
    rows += ["\t".join(str(v) for v in r) for r in MEAS]
    (d / "measurements.tsv").write_text("\n".join(rows) + "\n")
    prow = ["parameterId\tparameterScale\tlowerBound\tupperBound\tnominalValue\testimate"]
    prow += ["\t".join(str(v) for v in r) for r in PARAMS]
    (d / "parameters.tsv").write_text("\n".join(prow) + "\n")
    (d / "mapping.tsv").write_text("petabEntityId\tmodelEntityId\nk_fast\tk\n")
    return _write_problem_yaml(d, mapping=True)


def test_events_that_fire_together_are_refused_by_name(tmp_path):
    # a twin of "label" with the same trigger: both fire together, which needs the scheduled
    # solve; the PEtab solve applies one event per crossing, so it refuses instead of guessing
    path = _write_problem(tmp_path)
    doc = libsbml.readSBMLFromFile(str(tmp_path / "model.xml"))
    ev = doc.getModel().createEvent()
    ev.setId("label_twin"), ev.setUseValuesFromTriggerTime(True)
    tr = ev.createTrigger()
    tr.setMath(libsbml.parseL3Formula("A > 0")), tr.setInitialValue(False), tr.setPersistent(True)
    ea = ev.createEventAssignment()
    ea.setVariable("D"), ea.setMath(libsbml.parseL3Formula("1"))
    libsbml.writeSBMLToFile(doc, str(tmp_path / "model.xml"))
    with pytest.raises(sens.ModelError, match="event '.*' of model 'ev'.*does not schedule"):
        sens.petab.load(path)


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    path = _write_problem(tmp_path_factory.mktemp("petab_events"))
    return sens.petab.load(path, rtol=1e-10, atol=1e-10)


def _a_of(t, a0, k1, k2, T, d):
    """A(t): decay at k1 until A = 1 (t* = ln(a0) / k1), then at k2; + d at T (> t*)."""
    t_star = jnp.log(a0) / k1
    before_dose = jnp.where(t < t_star, a0 * jnp.exp(-k1 * t), jnp.exp(-k2 * (t - t_star)))
    after_dose = (jnp.exp(-k2 * (T - t_star)) + d) * jnp.exp(-k2 * (t - T))
    return jnp.where(t < T, before_dose, after_dose)


def closed_form_nllh(x):
    k1, k2, T, d, a0_c1 = 10 ** x[0], x[1], x[2], jnp.exp(x[3]), x[4]
    out = 0.0
    for obs, cond, t, meas in MEAS:
        a0 = a0_c1 if cond == "c1" else 3.0
        if obs == "obs_A":
            y, sigma = _a_of(t, a0, k1, k2, T, d), 0.1
        elif obs == "obs_D":
            y, sigma = 7.0, 0.5   # `time >= 0` with initialValue false fires at t = 0
        else:
            y = 2 * a0   # B set at t = 0 by the initialValue-false event only
            sigma = 0.1 + 0.05 * y   # a noise formula of the model's state
        out += 0.5 * jnp.log(2 * math.pi * sigma ** 2) + 0.5 * ((y - meas) / sigma) ** 2
    return out


def test_events_mapping_and_nan_overrides_match_the_closed_form(problem):
    assert problem.x_names == ("k_fast", "k_slow", "t_dose", "dose", "a0_c1")
    x = problem.x_nominal
    assert 1.0 < 2.0 * np.exp(-0.7 * 2.0) + 1.5  # the dose lifts A above 1 again (a second crossing)
    np.testing.assert_allclose(problem.nllh(x), float(closed_form_nllh(jnp.asarray(x))), rtol=1e-7)
    sim = problem.simulate(x)
    row = sim[(sim.simulationConditionId == "c1") & (sim.time == 2.0)]
    np.testing.assert_allclose(row.simulation, float(_a_of(2.0, 2.0, 0.7, 0.3, 2.0, 1.5)), rtol=1e-7)


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_event_gradients_match_the_closed_form(problem, mode):
    # the event times move with k_fast, a0 (state event) and t_dose (time event)
    x = problem.x_nominal + np.array([0.05, -0.02, 0.1, 0.1, 0.2])
    g = problem.gradient(x, mode=mode)
    ref = np.asarray(jax.grad(closed_form_nllh)(jnp.asarray(x)))
    np.testing.assert_allclose(g.grad, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


PRE_MEAS = [("keep", 1.0, 4.1), ("keep", math.inf, 3.9), ("reset", 0.3, 0.5), ("reset", 2.0, 2.6),
            ("reset", 5.0, 5.1), ("reset", math.inf, 6.2)]


def _preeq_event_problem(d: Path) -> Path:
    """A' = s - k A (a rate rule), A(0) = 0, s(0) = c; the event `A > 1` sets s = s + c. The
    preequilibration runs to the steady state through the event (A crosses 1 once):
    s = 2c, A = 2c/k, the trigger true at its end. Condition `keep` simulates on from there
    (the trigger stays true: no second firing); `reset` sets A = 0, so A rises again and the
    event fires when A crosses 1: s = 3c."""
    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId("preeq_event")
    comp = m.createCompartment()
    comp.setId("cell"), comp.setSize(1.0), comp.setConstant(True)
    s_ = m.createSpecies()
    s_.setId("A"), s_.setCompartment("cell"), s_.setInitialConcentration(0.0), s_.setHasOnlySubstanceUnits(False)
    s_.setBoundaryCondition(False), s_.setConstant(False)
    for pid, v, const in (("k", 0.5, True), ("c", 1.0, True), ("s", 0.0, False)):
        p = m.createParameter()
        p.setId(pid), p.setValue(v), p.setConstant(const)
    m.createInitialAssignment().setSymbol("s")
    m.getInitialAssignment(0).setMath(libsbml.parseL3Formula("c"))
    rr = m.createRateRule()
    rr.setVariable("A"), rr.setMath(libsbml.parseL3Formula("s - k * A"))
    ev = m.createEvent()
    ev.setId("boost"), ev.setUseValuesFromTriggerTime(True)
    tr = ev.createTrigger()
    tr.setMath(libsbml.parseL3Formula("A > 1")), tr.setInitialValue(True), tr.setPersistent(True)
    ea = ev.createEventAssignment()
    ea.setVariable("s"), ea.setMath(libsbml.parseL3Formula("s + c"))
    libsbml.writeSBMLToFile(doc, str(d / "model.xml"))
    (d / "conditions.tsv").write_text("conditionId\tA\npre\t0\nkeep\t\nreset\t0\n")
    (d / "observables.tsv").write_text("observableId\tobservableFormula\tnoiseFormula\nobs_A\tA\t0.1\n")
    rows = ["observableId\tpreequilibrationConditionId\tsimulationConditionId\ttime\tmeasurement"]
    rows += [f"obs_A\tpre\t{cond}\t{t}\t{v}" for cond, t, v in PRE_MEAS]
    (d / "measurements.tsv").write_text("\n".join(rows) + "\n")
    (d / "parameters.tsv").write_text("parameterId\tparameterScale\tlowerBound\tupperBound\tnominalValue\t"
                                      "estimate\nk\tlin\t0.1\t2\t0.5\t1\nc\tlin\t0.1\t5\t1.0\t1\n")
    return _write_problem_yaml(d)


def _preeq_event_nllh(x):
    k, c = x[0], x[1]
    t1 = -jnp.log(1 - k / (2 * c)) / k   # `reset`: A = (2c/k)(1 - e^{-kt}) reaches 1
    out = 0.0
    for cond, t, meas in PRE_MEAS:
        if cond == "keep":
            y = 2 * c / k
        elif math.isinf(t):
            y = 3 * c / k
        else:
            y = jnp.where(t < t1, 2 * c / k * (1 - jnp.exp(-k * t)),
                          3 * c / k + (1 - 3 * c / k) * jnp.exp(-k * (t - t1)))
        out += 0.5 * jnp.log(2 * math.pi * 0.01) + 0.5 * ((y - meas) / 0.1) ** 2
    return out


def test_events_during_preequilibration_and_steady_state_match_the_closed_form(tmp_path):
    prob = sens.petab.load(_preeq_event_problem(tmp_path), rtol=1e-10, atol=1e-10)
    x = prob.x_nominal + np.array([0.05, 0.1])
    np.testing.assert_allclose(prob.nllh(x), float(_preeq_event_nllh(jnp.asarray(x))), rtol=1e-7)
    ref = np.asarray(jax.grad(_preeq_event_nllh)(jnp.asarray(x)))
    for mode in ("forward", "adjoint"):
        np.testing.assert_allclose(prob.gradient(x, mode=mode).grad, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())


def test_bad_mapping_is_an_input_error(tmp_path):
    path = _write_problem(tmp_path)
    (tmp_path / "mapping.tsv").write_text("petabEntityId\tmodelEntityId\nk_fast\tnot_there\n")
    with pytest.raises(sens.InputError, match="modelEntityId 'not_there'"):
        sens.petab.load(path, validate=False)


# ---------------------------------------------------------------- the PEtab test suite
# A fixed sample of ../shared/petab-test-suite, run by benchmarks/petab_suite.py's run_case
# against each case's expected llh, chi2 and simulations: one case per feature (the
# benchmark runs them all). PEtab 1: conditions and numeric overrides, time-point-specific
# overrides, log10, preequilibration, compartment size, preequilibration with rate rules.
# PEtab 2.0: placeholders, log-normal noise, noise placeholders, several periods with an
# SBML event and a compartment change, preequilibration then a start at t0 = 10, a noise
# formula of the observable, a compartment changed with its species, expressions of
# parameters at the start, a start at t0 = 5, two conditions at one time, truncated priors
# of every PEtab 2.0 type (each parameter's log density against the solution's).
SUITE_ROOT = Path(__file__).resolve().parents[2] / "shared" / "petab-test-suite" / "cases"
SUITE_SAMPLE = [("v1.0.0/sbml", c) for c in ("0001", "0006", "0007", "0009", "0012", "0018")] + [
    ("v2.0.0/sbml", c) for c in ("0003", "0007", "0014", "0016", "0018", "0021", "0022", "0024", "0027", "0029",
                                 "0031")]
SUITE_REFUSED = {("v2.0.0/pysb", "0001"): "language 'pysb'"}
needs_suite = pytest.mark.skipif(not SUITE_ROOT.is_dir(), reason="../shared/petab-test-suite is absent")


@pytest.fixture(scope="module")
def suite_runner():
    import importlib.util
    spec = importlib.util.spec_from_file_location("petab_suite", Path(__file__).resolve().parents[1]
                                                  / "benchmarks" / "petab_suite.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@needs_suite
@pytest.mark.parametrize("version, case", SUITE_SAMPLE, ids=lambda v: v)
def test_petab_test_suite_case(suite_runner, version, case):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = suite_runner.run_case(version, case, SUITE_ROOT)
    assert out["status"] == "pass", f"{version} {case}: {out['status']}: {out['reason']}"


@needs_suite
@pytest.mark.parametrize("key", sorted(SUITE_REFUSED), ids=lambda k: "-".join(k))
def test_petab_test_suite_case_refused_by_name(suite_runner, key):
    out = suite_runner.run_case(*key, SUITE_ROOT)
    assert out["status"] == "refused" and SUITE_REFUSED[key] in out["reason"], out


def test_suite_simulation_comparison_matches_rows_by_key(suite_runner):
    """Rows matched by observable, experiment and time whatever their order; a missing row
    is an infinite difference (hand-computed)."""
    import pandas as pd
    want = pd.DataFrame({"observableId": ["a", "a", "b"], "experimentId": ["e1", "e2", "e1"],
                         "time": [0.0, 0.0, 1.0], "simulation": [1.0, 2.0, 3.0]})
    got = want.iloc[[2, 0, 1]].assign(simulation=[3.0005, 1.0, 1.999])
    assert suite_runner.compare_simulations(got, want) == pytest.approx(1e-3)
    assert suite_runner.compare_simulations(got.iloc[:2], want) == math.inf


@needs_suite
def test_petab_v2_prior_gradient_matches_central_differences():
    """The derivative of every PEtab 2.0 prior type (case 0024: truncated, and an implicit
    uniform one) at a point inside the bounds, against central differences of the value."""
    prob = sens.petab.load(SUITE_ROOT / "v2.0.0" / "sbml" / "0024" / "_0024.yaml")
    x = prob.x_nominal * 0.97
    h = 1e-6
    fd = np.array([(prob.prior(x + h * e)[0] - prob.prior(x - h * e)[0]) / (2 * h) for e in np.eye(x.size)])
    np.testing.assert_allclose(prob.prior(x)[1], fd, atol=1e-7)
    assert np.count_nonzero(fd) >= 9   # the uniform ones are flat


@needs_suite
def test_petab_v2_period_event_gradient_matches_central_differences():
    """PEtab 2.0 case 0028: A set to A + 5 at t = 7 (a later period with an expression of the
    state): the forward and adjoint gradients of nllh equal central differences."""
    prob = sens.petab.load(SUITE_ROOT / "v2.0.0" / "sbml" / "0028" / "_0028.yaml", rtol=1e-10, atol=1e-10)
    x = prob.x_nominal
    h = 1e-5
    fd = np.array([(prob.nllh(x + h * e) - prob.nllh(x - h * e)) / (2 * h) for e in np.eye(x.size)])
    for mode in ("forward", "adjoint"):
        np.testing.assert_allclose(prob.gradient(x, mode=mode).grad, fd, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- variable compartments
def test_species_in_a_growing_compartment_follow_the_closed_form(tmp_path):
    """V' = g (rate rule), X (a concentration) decays by k V X (amount/time), Y (an amount,
    hasOnlySubstanceUnits) by k2 Y; an event at t = 1 sets the concentration X = 5. Amount
    n = [X] V: n(t) = n0 e^{-k t}, n(1+) = 5 V(1)."""
    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId("grow")
    c = m.createCompartment()
    c.setId("V"), c.setSize(2.0), c.setConstant(False)
    for sid, hosu in (("X", False), ("Y", True)):
        s = m.createSpecies()
        s.setId(sid), s.setCompartment("V"), s.setHasOnlySubstanceUnits(hosu)
        s.setBoundaryCondition(False), s.setConstant(False)
        s.setInitialConcentration(3.0) if sid == "X" else s.setInitialAmount(1.0)
    for pid, v in (("g", 0.5), ("k", 0.4), ("k2", 0.3)):
        p = m.createParameter()
        p.setId(pid), p.setValue(v), p.setConstant(True)
    rr = m.createRateRule()
    rr.setVariable("V"), rr.setMath(libsbml.parseL3Formula("g"))
    for rid, sid, law in (("rx", "X", "k * V * X"), ("ry", "Y", "k2 * Y")):
        r = m.createReaction()
        r.setId(rid), r.setReversible(False), r.setFast(False)
        x = r.createReactant()
        x.setSpecies(sid), x.setStoichiometry(1), x.setConstant(True)
        r.createKineticLaw().setMath(libsbml.parseL3Formula(law))
    ev = m.createEvent()
    ev.setId("refill"), ev.setUseValuesFromTriggerTime(True)
    tr = ev.createTrigger()
    tr.setMath(libsbml.parseL3Formula("time >= 1")), tr.setInitialValue(True), tr.setPersistent(True)
    ea = ev.createEventAssignment()
    ea.setVariable("X"), ea.setMath(libsbml.parseL3Formula("5"))
    path = tmp_path / "grow.xml"
    libsbml.writeSBMLToFile(doc, str(path))
    model = sens.sbml.load(path)
    ts = np.array([0.0, 0.5, 0.9, 1.5, 3.0])
    out = sens.simulate(sens.Problem(model, ts, of=["X", "Y", "V"], solver="tsit5", rtol=1e-10, atol=1e-10)).outputs
    V = 2.0 + 0.5 * ts
    n = np.where(ts < 1.0, 6.0 * np.exp(-0.4 * ts), 5.0 * 2.5 * np.exp(-0.4 * (ts - 1.0)))
    np.testing.assert_allclose(out[:, 0], n / V, rtol=1e-7)
    np.testing.assert_allclose(out[:, 1], np.exp(-0.3 * ts), rtol=1e-7)
    np.testing.assert_allclose(out[:, 2], V, rtol=1e-9)


@pytest.mark.parametrize("change, match", [
    (lambda y: y.replace("format_version: 1", "format_version: 3"), "format_version 3"),
    (lambda y: y.replace("sbml_files: [model.xml]", "sbml_files: [model.xml, model.xml]"), "multiple models"),
    (lambda y: y + y[y.index("- condition_files"):], "single model"),
])
def test_unsupported_problem_files_are_refused(tmp_path, change, match):
    path = _write_problem(tmp_path)
    path.write_text(change(path.read_text()))
    with pytest.raises(sens.InputError, match=match):
        sens.petab.load(path)


def test_sbml_load_fires_initial_value_false_events_at_t0(tmp_path):
    """sens.sbml.load (the ODEModel route): `time >= 0` with initialValue false sets S1 = 2 k at
    t = 0 (SBML test-suite case 00929 with initialValue false); its twin with initialValue
    true does not fire. S1' = -k S1: S1 = 2 k e^{-k t}, and dS1/dk follows."""
    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId("t0fire")
    c = m.createCompartment()
    c.setId("C"), c.setSize(1.0), c.setConstant(True)
    for sid in ("S1", "S2"):
        s = m.createSpecies()
        s.setId(sid), s.setCompartment("C"), s.setInitialAmount(1.5e-4), s.setHasOnlySubstanceUnits(False)
        s.setBoundaryCondition(False), s.setConstant(False)
    p = m.createParameter()
    p.setId("k"), p.setValue(0.7), p.setConstant(True)
    r = m.createReaction()
    r.setId("r"), r.setReversible(False), r.setFast(False)
    x = r.createReactant()
    x.setSpecies("S1"), x.setStoichiometry(1), x.setConstant(True)
    r.createKineticLaw().setMath(libsbml.parseL3Formula("k * S1 * C"))
    for eid, var, iv in (("fires", "S1", False), ("does_not", "S2", True)):
        ev = m.createEvent()
        ev.setId(eid), ev.setUseValuesFromTriggerTime(True)
        tr = ev.createTrigger()
        tr.setMath(libsbml.parseL3Formula("time >= 0")), tr.setInitialValue(iv), tr.setPersistent(True)
        ea = ev.createEventAssignment()
        ea.setVariable(var), ea.setMath(libsbml.parseL3Formula("2 * k"))
    path = tmp_path / "t0fire.xml"
    libsbml.writeSBMLToFile(doc, str(path))
    model = sens.sbml.load(path)
    ts = np.array([0.0, 0.5, 2.0])
    prob = sens.Problem(model, ts, of=["S1", "S2"], wrt=["k"], solver="tsit5", rtol=1e-10, atol=1e-10)
    out = sens.simulate(prob).outputs
    np.testing.assert_allclose(out[:, 0], 1.4 * np.exp(-0.7 * ts), rtol=1e-7)
    np.testing.assert_allclose(out[:, 1], 1.5e-4, rtol=1e-9)
    jac = sens.jacobian(prob, mode="forward").values[:, 0, 0]
    np.testing.assert_allclose(jac, (2 - 1.4 * ts) * np.exp(-0.7 * ts), rtol=1e-6)


def test_invalid_sbml_in_a_problem_names_the_sbml_error(tmp_path):
    path = _write_problem(tmp_path)
    xml = (tmp_path / "model.xml").read_text()
    (tmp_path / "model.xml").write_text(xml.replace(' fast="false"', ""))
    with pytest.raises(sens.InputError, match="'fast' is missing"):
        sens.petab.load(path)


def test_an_event_triggered_by_another_events_assignment_fires_too(tmp_path):
    """X = 2 (no reactions); at t = 1 a time event sets X = 0.5, which makes the trigger
    X < 1 of a second event true: it sets Y = 3 at t = 1 (a cascade; no root to find)."""
    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId("cascade")
    c = m.createCompartment()
    c.setId("c"), c.setSize(1.0), c.setConstant(True)
    for sid, x0 in (("X", 2.0), ("Y", 0.0)):
        s = m.createSpecies()
        s.setId(sid), s.setCompartment("c"), s.setInitialConcentration(x0), s.setHasOnlySubstanceUnits(False)
        s.setBoundaryCondition(False), s.setConstant(False)
    p = m.createParameter()
    p.setId("t_cut"), p.setValue(1.0), p.setConstant(True)
    for eid, trig, var, val in (("cut", "time >= t_cut", "X", "0.5"), ("low", "X < 1", "Y", "3")):
        ev = m.createEvent()
        ev.setId(eid), ev.setUseValuesFromTriggerTime(True)
        tr = ev.createTrigger()
        tr.setMath(libsbml.parseL3Formula(trig)), tr.setInitialValue(True), tr.setPersistent(True)
        ea = ev.createEventAssignment()
        ea.setVariable(var), ea.setMath(libsbml.parseL3Formula(val))
    libsbml.writeSBMLToFile(doc, str(tmp_path / "model.xml"))
    (tmp_path / "conditions.tsv").write_text("conditionId\nc0\n")
    (tmp_path / "observables.tsv").write_text("observableId\tobservableFormula\tnoiseFormula\n"
                                              "obs_X\tX\t1\nobs_Y\tY\t1\n")
    (tmp_path / "measurements.tsv").write_text("observableId\tsimulationConditionId\ttime\tmeasurement\n"
                                               "obs_X\tc0\t0.5\t2\nobs_Y\tc0\t0.5\t0\n"
                                               "obs_X\tc0\t2\t0.5\nobs_Y\tc0\t2\t3\n")
    (tmp_path / "parameters.tsv").write_text("parameterId\tparameterScale\tlowerBound\tupperBound\tnominalValue\t"
                                             "estimate\nt_cut\tlin\t0.5\t1.5\t1.0\t1\n")
    _write_problem_yaml(tmp_path)
    sim = sens.petab.load(tmp_path / "problem.yaml").simulate()
    np.testing.assert_allclose(sim["simulation"], [2.0, 0.0, 0.5, 3.0], atol=1e-9)


def test_a_state_event_firing_too_often_is_a_solver_error_that_says_so(tmp_path, monkeypatch):
    from sensitivity.integrate import sbml_events
    monkeypatch.setattr(sbml_events, "PIECES_PER_STATE_EVENT", 0)   # no restart after an event
    path = _write_problem(tmp_path)
    prob = sens.petab.load(path, rtol=1e-8, atol=1e-8)
    prob.max_steps = 99_999   # not the fixture's compiled function (the structure key holds it)
    with pytest.raises(sens.SolverError, match="fires more than 0 times"):
        prob.nllh()


def _switch_problem(d: Path, write_sbml) -> Path:
    """A' = -k A once t >= t_on (an SBML piecewise of time), A(0) = 2; t_on and k estimated:
    a switching time that moves with a parameter."""
    write_sbml(d / "model.xml")
    (d / "conditions.tsv").write_text("conditionId\nc1\n")
    (d / "observables.tsv").write_text("observableId\tobservableFormula\tnoiseFormula\nobs_A\tA\t0.1\n")
    rows = ["observableId\tsimulationConditionId\ttime\tmeasurement"]
    rows += [f"obs_A\tc1\t{t}\t{v}" for t, v in SWITCH_MEAS]
    (d / "measurements.tsv").write_text("\n".join(rows) + "\n")
    (d / "parameters.tsv").write_text(
        "parameterId\tparameterScale\tlowerBound\tupperBound\tnominalValue\testimate\n"
        "k\tlog10\t0.01\t10\t0.8\t1\nt_on\tlin\t0.2\t2.5\t1.0\t1\n")
    return _write_problem_yaml(d)


SWITCH_MEAS = [(0.5, 2.05), (1.5, 1.3), (2.0, 0.95), (3.0, 0.4)]


def _switch_nllh(x):
    k, t_on = 10 ** x[0], x[1]
    out = 0.0
    for t, meas in SWITCH_MEAS:
        y = jnp.where(t < t_on, 2.0, 2.0 * jnp.exp(-k * (t - t_on)))
        out += 0.5 * jnp.log(2 * math.pi * 0.1 ** 2) + 0.5 * ((y - meas) / 0.1) ** 2
    return out


@pytest.mark.parametrize("solver", ["rodas5p", "rodas4"])
def test_an_estimated_switching_time_has_the_closed_forms_gradient(tmp_path, solver, switch_sbml):
    """A switching time that moves with an estimated parameter, on the lean Rosenbrock loops:
    nllh and its gradient (d/d t_on included) equal the closed form."""
    prob = sens.petab.load(_switch_problem(tmp_path, switch_sbml), solver=solver, rtol=1e-10, atol=1e-10)
    x = prob.x_nominal + np.array([0.05, 0.2])
    ref = np.asarray(jax.grad(_switch_nllh)(jnp.asarray(x)))
    for mode in ("forward", "adjoint"):
        g = prob.gradient(x, mode=mode)
        np.testing.assert_allclose(g.value, float(_switch_nllh(jnp.asarray(x))), rtol=1e-7)
        np.testing.assert_allclose(g.grad, ref, rtol=1e-5, atol=1e-6 * np.abs(ref).max())
