"""SBML import: small SBML files written here with libsbml, one construct each, compared
with a hand-written right-hand side / initial state of the same system (evaluated at random
states and parameters, no solve), plus one simulation against a hand-written ODEModel and
the refusals of unsupported constructs."""

import jax.numpy as jnp
import libsbml
import numpy as np
import pytest

import sensitivity as sens
from sensitivity.importers import sbml

RNG = np.random.default_rng(0)


def make(tmp_path, build, name="m"):
    """Write an SBML L3V1 file whose model `build(model)` fills in; return its path."""
    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId(name)
    build(m)
    path = tmp_path / f"{name}.xml"
    libsbml.writeSBMLToFile(doc, str(path))
    return path


def comp(m, cid, size):
    c = m.createCompartment()
    c.setId(cid), c.setSize(size), c.setConstant(True), c.setSpatialDimensions(3)


def species(m, sid, c, conc=None, amount=None, hosu=False, boundary=False, constant=False):
    s = m.createSpecies()
    s.setId(sid), s.setCompartment(c), s.setHasOnlySubstanceUnits(hosu)
    s.setBoundaryCondition(boundary), s.setConstant(constant)
    if conc is not None:
        s.setInitialConcentration(conc)
    if amount is not None:
        s.setInitialAmount(amount)


def param(m, pid, value, constant=True):
    p = m.createParameter()
    p.setId(pid), p.setValue(value), p.setConstant(constant)


def reaction(m, rid, reactants, products, law, local=None):
    r = m.createReaction()
    r.setId(rid), r.setReversible(False)
    if hasattr(r, "setFast"):
        r.setFast(False)
    for sid, n in reactants:
        ref = r.createReactant()
        ref.setSpecies(sid), ref.setStoichiometry(n), ref.setConstant(True)
    for sid, n in products:
        ref = r.createProduct()
        ref.setSpecies(sid), ref.setStoichiometry(n), ref.setConstant(True)
    kl = r.createKineticLaw()
    for pid, v in (local or {}).items():
        lp = kl.createLocalParameter()
        lp.setId(pid), lp.setValue(v)
    kl.setMath(libsbml.parseL3Formula(law))
    return r


def check_rhs(model: sbml.SBMLModel, expected, t=0.7, n=3):
    """rhs at random states and parameters equals expected(t, y, p) (p a dict)."""
    for _ in range(n):
        y = RNG.uniform(0.1, 2.0, len(model.states))
        pv = RNG.uniform(0.1, 2.0, len(model.parameters))
        p = dict(zip(model.parameters, pv))
        got = np.asarray(model.rhs(t, jnp.asarray(y), jnp.asarray(pv), t))
        want = expected(t, dict(zip(model.states, y)), p)
        if isinstance(want, dict):  # by state name
            want = [want[s] for s in model.states]
        want = np.asarray(want, dtype=float)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_mass_action_with_compartment_stoichiometry_and_local_parameter(tmp_path):
    def build(m):
        comp(m, "V", 2.0)
        species(m, "A", "V", conc=1.0)
        species(m, "B", "V", conc=0.5)
        species(m, "C", "V", conc=0.0)
        param(m, "kg", 0.3)
        # A + B -> 2 C, v = V k A B with a local k; C -> A, v = V kg C
        reaction(m, "r1", [("A", 1), ("B", 1)], [("C", 2)], "V * k * A * B", local={"k": 1.5})
        reaction(m, "r2", [("C", 1)], [("A", 1)], "V * kg * C")
    model = sbml.read(make(tmp_path, build))
    assert model.states == ("A", "B", "C")
    assert set(model.parameters) == {"V", "kg", "r1_k"}

    def f(t, y, p):
        v1 = p["r1_k"] * y["A"] * y["B"]  # the volume cancels: d[S]/dt = n v / V
        v2 = p["kg"] * y["C"]
        return [-v1 + v2, -v1, 2 * v1 - v2]
    check_rhs(model, f)


def test_amounts_concentrations_boundary_and_constant_species(tmp_path):
    def build(m):
        comp(m, "V", 4.0)
        species(m, "S", "V", amount=8.0, hosu=True)      # an amount
        species(m, "X", "V", amount=8.0)                 # a concentration: 8 / 4
        species(m, "E", "V", conc=3.0, boundary=True)    # fixed by the environment
        species(m, "K", "V", conc=2.0, constant=True)
        param(m, "k", 0.5)
        reaction(m, "deg", [("S", 1), ("E", 1)], [("X", 1)], "k * S * E * K")
    model = sbml.read(make(tmp_path, build))
    y0 = np.asarray(model.initial(jnp.asarray(model.parameter_values)))
    np.testing.assert_allclose(y0, [8.0, 2.0, 3.0, 2.0])

    def f(t, y, p):
        v = p["k"] * y["S"] * y["E"] * y["K"]            # amount / time
        return [-v, v / p["V"], 0.0, 0.0]
    check_rhs(model, f)


def test_assignment_rule_rate_rule_function_definition(tmp_path):
    def build(m):
        comp(m, "c", 1.0)
        species(m, "A", "c", conc=1.0)
        param(m, "k", 2.0)
        param(m, "w", 0.0, constant=False)
        param(m, "P", 3.0, constant=False)
        fd = m.createFunctionDefinition()
        fd.setId("hill")
        fd.setMath(libsbml.parseL3Formula("lambda(x, K, x^2 / (K^2 + x^2))"))
        rule = m.createAssignmentRule()
        rule.setVariable("w"), rule.setMath(libsbml.parseL3Formula("k * hill(A, P)"))
        rr = m.createRateRule()
        rr.setVariable("P"), rr.setMath(libsbml.parseL3Formula("-0.1 * P + w"))
        reaction(m, "r", [("A", 1)], [], "c * w * A")
    model = sbml.read(make(tmp_path, build))
    assert set(model.states) == {"A", "P"} and "w" in model.rules

    def f(t, y, p):
        w = p["k"] * y["A"] ** 2 / (y["P"] ** 2 + y["A"] ** 2)
        return {"A": -w * y["A"], "P": -0.1 * y["P"] + w}
    check_rhs(model, f)
    y = jnp.asarray([0.5, 1.5] if model.states == ("A", "P") else [1.5, 0.5])
    pv = jnp.asarray(model.parameter_values)
    k = model.parameter_values[list(model.parameters).index("k")]
    np.testing.assert_allclose(model.rule_values(0.0, y, pv)[0], k * 0.25 / (2.25 + 0.25), rtol=1e-14)


def test_initial_assignments_make_y0_a_function_of_parameters(tmp_path):
    def build(m):
        comp(m, "c", 2.0)
        species(m, "A", "c", conc=1.0)
        species(m, "B", "c", conc=1.0)
        param(m, "a0", 3.0)
        param(m, "ratio", 0.25)
        for sid, formula in (("A", "a0 * ratio"), ("B", "a0 - A")):
            ia = m.createInitialAssignment()
            ia.setSymbol(sid), ia.setMath(libsbml.parseL3Formula(formula))
        reaction(m, "r", [("A", 1)], [("B", 1)], "c * A")
    model = sbml.read(make(tmp_path, build))
    names = list(model.parameters)
    for a0, ratio in ((3.0, 0.25), (5.0, 0.5)):
        pv = model.parameter_values.copy()
        pv[names.index("a0")], pv[names.index("ratio")] = a0, ratio
        np.testing.assert_allclose(model.initial(jnp.asarray(pv)), [a0 * ratio, a0 - a0 * ratio])
    import jax
    pv = jnp.asarray(model.parameter_values)
    J = jax.jacfwd(model.initial)(pv)   # y0 sensitivities follow the parameters
    np.testing.assert_allclose(J[:, names.index("a0")], [0.25, 0.75])


def test_piecewise_of_time_gives_breakpoints_and_csymbol_time(tmp_path):
    def build(m):
        comp(m, "c", 1.0)
        species(m, "A", "c", conc=0.0)
        param(m, "T", 2.0)
        param(m, "u", 1.0)
        # an infusion u until time T, plus a time-dependent decay
        reaction(m, "r", [], [("A", 1)], "piecewise(u, time < T, 0) - A * time / (1 + time)")
    model = sbml.read(make(tmp_path, build))
    assert model.n_breakpoints == 1
    np.testing.assert_allclose(model.breakpoints(jnp.asarray(model.parameter_values)), [2.0])
    for t in (0.5, 3.0):
        check_rhs(model, lambda t_, y, p: [((p["u"] if t_ < p["T"] else 0.0) - y["A"] * t_ / (1 + t_)) / p["c"]], t=t)
    # the condition sees tc: at t = 1.0 on a segment whose midpoint lies after T, the input is off
    pv = jnp.asarray(model.parameter_values)
    assert float(model.rhs(1.0, jnp.zeros(1), pv, 2.5)[0]) == 0.0


def _decay_rhs(t, y, p):
    return jnp.stack([-p["k"] * y[0], p["k"] * y[0] - p["r2_k2"] * y[1]])


def test_ode_model_simulates_like_the_hand_written_model(tmp_path):
    def build(m):
        comp(m, "c", 1.0)
        species(m, "A", "c", conc=2.0)
        species(m, "B", "c", conc=0.0)
        param(m, "k", 0.7)
        reaction(m, "r1", [("A", 1)], [("B", 1)], "c * k * A")
        reaction(m, "r2", [("B", 1)], [], "c * k2 * B", local={"k2": 0.3})
    path = make(tmp_path, build)
    model = sens.sbml.load(path)
    assert sens.sbml.load(path).structure_key() == model.structure_key()   # one compile per file
    ref = sens.ODEModel("ref", ["A", "B"], {"c": 1.0, "k": 0.7, "r2_k2": 0.3}, _decay_rhs, [2.0, 0.0])
    ts = np.linspace(0, 5, 11)
    a = sens.simulate(sens.Problem(model, ts, of=["A", "B"], solver="tsit5")).outputs
    b = sens.simulate(sens.Problem(ref, ts, solver="tsit5")).outputs
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    k, k2 = 0.7, 0.3   # and the closed form, to the solver's accuracy
    exact = np.c_[2 * np.exp(-k * ts), 2 * k / (k2 - k) * (np.exp(-k * ts) - np.exp(-k2 * ts))]
    np.testing.assert_allclose(a, exact, rtol=1e-5, atol=1e-7)


def test_event_resets_a_state_like_the_closed_form(tmp_path):
    # A' = -k A from A = 2; when A falls below 0.5 it is reset to 2: t* = ln 4 / k
    def build(m):
        comp(m, "c", 1.0)
        species(m, "A", "c", conc=2.0)
        param(m, "k", 0.7)
        reaction(m, "r", [("A", 1)], [], "c * k * A")
        ev = m.createEvent()
        ev.setId("refill"), ev.setUseValuesFromTriggerTime(True)
        tr = ev.createTrigger()
        tr.setMath(libsbml.parseL3Formula("A < 0.5")), tr.setInitialValue(False), tr.setPersistent(True)
        ea = ev.createEventAssignment()
        ea.setVariable("A"), ea.setMath(libsbml.parseL3Formula("2"))
    model = sens.sbml.load(make(tmp_path, build, name="refill"))
    assert len(model.events) == 1
    ts = np.linspace(0.0, 3.0, 7)
    k, t_star = 0.7, np.log(4) / 0.7
    exact = np.where(ts < t_star, 2 * np.exp(-k * ts), 2 * np.exp(-k * (ts - t_star)))
    out = sens.simulate(sens.Problem(model, ts, of=["A"], solver="tsit5")).outputs[:, 0]
    np.testing.assert_allclose(out, exact, rtol=1e-6)


def test_delay_function_is_refused_by_name(tmp_path):
    def build(m):
        comp(m, "c", 1.0)
        species(m, "A", "c", conc=1.0)
        param(m, "k", 1.0)
        reaction(m, "r", [("A", 1)], [], "c * delay(A, 1) * k")
    with pytest.raises(sens.ModelError, match="delay"):
        sbml.read(make(tmp_path, build, name="m_delay"))


def _decay_with_events(tmp_path, name, events):
    """A' = -k A from A = 2 (k = 0.5) with `events(m)` added; the model read."""
    def build(m):
        comp(m, "c", 1.0)
        species(m, "A", "c", conc=2.0)
        param(m, "k", 0.5)
        reaction(m, "r", [("A", 1)], [], "c * k * A")
        events(m)
    return sens.sbml.load(make(tmp_path, build, name=name))


def test_delayed_event_resets_after_its_delay_like_the_closed_form(tmp_path):
    # triggered at t = 1, executed at t = 1 + 0.75 with the value 2 * A(trigger time)
    model = _decay_with_events(tmp_path, "delayed", lambda m: _event(m, "ev", "time > 1", {"A": "2 * A"},
                                                                      delay="0.75"))
    ts = np.array([0.0, 0.5, 1.5, 1.9, 3.0])   # the first save time is t0
    k, te = 0.5, 1.75
    a_at_exec = 2 * np.exp(-k * 1.0) * 2   # trigger-time value of 2 * A
    exact = np.where(ts < te, 2 * np.exp(-k * ts), a_at_exec * np.exp(-k * (ts - te)))
    out = sens.simulate(sens.Problem(model, ts, of=["A"], solver="tsit5", rtol=1e-9, atol=1e-12)).outputs[:, 0]
    np.testing.assert_allclose(out, exact, rtol=1e-6)


@pytest.mark.parametrize("high, expected", [("set", 6.0), ("triple", 2.0)])
def test_event_priorities_order_simultaneous_assignments(tmp_path, high, expected):
    # at t = 1 two events fire: "set" A := 2 and "triple" A := 3 A, values taken at execution;
    # the higher priority runs first, so set-then-triple gives 6 and triple-then-set gives 2
    def events(m):
        for eid, formula in (("set", "2"), ("triple", "3 * A")):
            _event(m, eid, "time > 1", {"A": formula}, trigger_values=False)
            m.getEvent(eid).createPriority().setMath(libsbml.parseL3Formula("10" if eid == high else "1"))
    model = _decay_with_events(tmp_path, f"prio_{high}", events)
    ts = np.array([0.0, 0.5, 2.0])
    out = sens.simulate(sens.Problem(model, ts, of=["A"], solver="tsit5", rtol=1e-9, atol=1e-12)).outputs[:, 0]
    np.testing.assert_allclose(out, [2.0, 2 * np.exp(-0.25), expected * np.exp(-0.5)], rtol=1e-6)


def test_missing_file_is_a_model_error(tmp_path):
    with pytest.raises(sens.ModelError, match="cannot be read"):
        sens.sbml.load(tmp_path / "nope.xml")


def test_y0_sensitivities_follow_initial_assignments_in_the_core(tmp_path):
    # A' = -k A with A(0) = a0 (an initial assignment): A = a0 exp(-k t), so
    # dA/da0 = exp(-k t), dA/dk = -t A; B is a plain species (B(0) = 1, B' = k A)
    def build(m):
        comp(m, "c", 1.0)
        species(m, "A", "c", conc=1.0)
        species(m, "B", "c", conc=1.0)
        param(m, "a0", 3.0)
        param(m, "k", 0.5)
        ia = m.createInitialAssignment()
        ia.setSymbol("A"), ia.setMath(libsbml.parseL3Formula("a0"))
        reaction(m, "r", [("A", 1)], [("B", 1)], "c * k * A")
    model = sens.sbml.load(make(tmp_path, build, name="ia_core"))
    ts = np.linspace(0.0, 2.0, 5)
    prob = sens.Problem(model, ts, wrt=["a0", "k"], of=["A", "B"], parameters={"a0": 2.0}, solver="tsit5")
    J = sens.jacobian(prob, mode="forward")
    A = 2.0 * np.exp(-0.5 * ts)
    np.testing.assert_allclose(J.outputs[:, 0], A, rtol=1e-7)
    np.testing.assert_allclose(J.outputs[:, 1], 1.0 + 2.0 - A, rtol=1e-7)
    np.testing.assert_allclose(J.values[:, 0, 0], np.exp(-0.5 * ts), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(J.values[:, 0, 1], -ts * A, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(J.values[:, 1, 0], 1 - np.exp(-0.5 * ts), rtol=1e-6, atol=1e-9)


def test_switching_times_become_model_breakpoints(tmp_path):
    def build(m):
        comp(m, "c", 1.0)
        species(m, "A", "c", conc=0.0)
        param(m, "T", 2.0)
        reaction(m, "r", [], [("A", 1)], "c * (piecewise(1, time < T, 0) + piecewise(2, time >= 5, 0))")
    model = sens.sbml.load(make(tmp_path, build, name="switches"))
    assert model.breakpoints == ("T", 5.0)


def _event(m, eid, trigger, assigns, delay=None, trigger_values=True, persistent=True):
    """An event of model `m` (delay: a formula, or None for none)."""
    ev = m.createEvent()
    ev.setId(eid), ev.setUseValuesFromTriggerTime(trigger_values)
    if delay is not None:
        ev.createDelay().setMath(libsbml.parseL3Formula(delay))
    tr = ev.createTrigger()
    tr.setMath(libsbml.parseL3Formula(trigger)), tr.setInitialValue(False), tr.setPersistent(persistent)
    for var, formula in assigns.items():
        ea = ev.createEventAssignment()
        ea.setVariable(var), ea.setMath(libsbml.parseL3Formula(formula))


def test_rate_of_reaction_ids_and_stoichiometry_set_by_a_rule(tmp_path):
    # P' = 2 (rate rule); q = rateOf(P) = 2; flux = the rate of reaction r (c k A); the
    # reactant's stoichiometry n is set by an assignment rule to 1 + P, so A' = -(1 + P) k A;
    # z = arccot(2) = atan(1/2)
    def build(m):
        comp(m, "c", 2.0)
        species(m, "A", "c", conc=1.0)
        param(m, "k", 0.5)
        for pid in ("P", "q", "flux", "z"):
            param(m, pid, 1.0, constant=False)
        rr = m.createRateRule()
        rr.setVariable("P"), rr.setMath(libsbml.parseL3Formula("2"))
        for var, formula in (("q", "rateOf(P)"), ("flux", "r"), ("n", "1 + P"), ("z", "arccot(2)")):
            rule = m.createAssignmentRule()
            rule.setVariable(var), rule.setMath(libsbml.parseL3Formula(formula))
        r = reaction(m, "r", [("A", 1)], [], "c * k * A")
        r.getReactant(0).setId("n"), r.getReactant(0).setConstant(False)
    model = sbml.read(make(tmp_path, build, name="rates"))
    check_rhs(model, lambda t, y, p: {"A": -(1 + y["P"]) * p["k"] * y["A"], "P": 2.0})
    y = jnp.asarray([0.8 if s == "A" else 0.3 for s in model.states])
    pv = jnp.asarray(model.parameter_values)
    got = dict(zip(model.rules, np.asarray(model.rule_values(0.0, y, pv))))
    np.testing.assert_allclose([got["q"], got["flux"], got["n"], got["z"]], [2.0, 2.0 * 0.5 * 0.8, 1.3, np.arctan(0.5)])


def test_models_without_species_or_parameters_simulate(tmp_path):
    # no species, no reactions: x' = 1 from 2 (a parameter with a rate rule), y = 3 x; no
    # parameter at all, so the default inputs are the initial values
    def build(m):
        param(m, "x", 2.0, constant=False)
        param(m, "y", 0.0, constant=False)
        rr = m.createRateRule()
        rr.setVariable("x"), rr.setMath(libsbml.parseL3Formula("1"))
        rule = m.createAssignmentRule()
        rule.setVariable("y"), rule.setMath(libsbml.parseL3Formula("3 * x"))
    model = sens.sbml.load(make(tmp_path, build, name="bare"))
    ts = np.linspace(0.0, 1.0, 3)
    prob = sens.Problem(model, ts, of=["x", "y"], solver="tsit5")
    assert [r.name for r in prob.wrt] == ["y0.x"]
    np.testing.assert_allclose(sens.simulate(prob).outputs, np.c_[2 + ts, 3 * (2 + ts)], rtol=1e-10)

    def only_rules(m):  # nothing changes at all: one constant placeholder state
        param(m, "a", 1.5)
        param(m, "b", 0.0, constant=False)
        rule = m.createAssignmentRule()
        rule.setVariable("b"), rule.setMath(libsbml.parseL3Formula("2 * a"))
    model = sens.sbml.load(make(tmp_path, only_rules, name="rules_only"))
    out = sens.simulate(sens.Problem(model, ts, of=["b"], solver="tsit5")).outputs
    np.testing.assert_allclose(out[:, 0], 3.0)


def test_required_package_that_is_not_read_is_refused(tmp_path):
    doc = libsbml.SBMLDocument(libsbml.SBMLNamespaces(3, 1, "distrib", 1))
    doc.setPackageRequired("distrib", True)
    m = doc.createModel()
    m.setId("pkg")
    comp(m, "c", 1.0)
    path = tmp_path / "pkg.xml"
    libsbml.writeSBMLToFile(doc, str(path))
    with pytest.raises(sens.ModelError, match="package 'distrib' is required"):
        sbml.read(path)
