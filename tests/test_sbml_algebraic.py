"""Algebraic rules and fast reactions of the SBML import (sensitivity/importers/sbml_algebraic.py),
on small SBML files written here with libsbml, against closed forms and SciPy: the time
courses, forward and adjoint derivatives, the consistent state after an event, and the
refusals by name."""

import libsbml
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

import sensitivity as sens
from sensitivity.importers import sbml

TS = np.linspace(0.0, 2.0, 5)


def make(tmp_path, build, name):
    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId(name)
    c = m.createCompartment()
    c.setId("c"), c.setSize(1.0), c.setConstant(True), c.setSpatialDimensions(3)
    build(m)
    path = tmp_path / f"{name}.xml"
    libsbml.writeSBMLToFile(doc, str(path))
    return path


def species(m, sid, conc, boundary=False):
    s = m.createSpecies()
    s.setId(sid), s.setCompartment("c"), s.setHasOnlySubstanceUnits(False)
    s.setBoundaryCondition(boundary), s.setConstant(False), s.setInitialConcentration(conc)


def param(m, pid, value, constant=True):
    p = m.createParameter()
    p.setId(pid), p.setConstant(constant)
    if value is not None:
        p.setValue(value)


def reaction(m, rid, reactants, products, law, fast=False, modifiers=()):
    r = m.createReaction()
    r.setId(rid), r.setReversible(False), r.setFast(fast)
    for sid in reactants:
        ref = r.createReactant()
        ref.setSpecies(sid), ref.setStoichiometry(1), ref.setConstant(True)
    for sid in products:
        ref = r.createProduct()
        ref.setSpecies(sid), ref.setStoichiometry(1), ref.setConstant(True)
    for sid in modifiers:
        r.createModifier().setSpecies(sid)
    r.createKineticLaw().setMath(libsbml.parseL3Formula(law))


def algebraic(m, formula):
    m.createAlgebraicRule().setMath(libsbml.parseL3Formula(formula))


def rate_rule(m, var, formula):
    r = m.createRateRule()
    r.setVariable(var), r.setMath(libsbml.parseL3Formula(formula))


def both_modes(model, wrt, of, objective=None, **kw):
    """Forward Jacobian and adjoint gradient of sum(outputs) (tsit5, tight tolerances)."""
    prob = sens.Problem(model, TS, wrt=wrt, of=of, solver="tsit5", rtol=1e-10, atol=1e-12, **kw)
    J = sens.jacobian(prob, mode="forward")
    g = sens.gradient(prob, lambda ys: ys.sum(), mode="adjoint")
    return J, g


def test_linear_rule_becomes_an_assignment_rule(tmp_path):
    # S1 + S2 - T = 0 with S2 only a modifier: S2 = T - S1, S1' = k S2 = k (T - S1), so
    # S1 = T - (T - S1_0) exp(-k t) and dS1/dk = t (T - S1_0) exp(-k t)
    def build(m):
        species(m, "S1", 0.5)
        species(m, "S2", 0.5)
        param(m, "T", 2.0)
        param(m, "k", 0.8)
        algebraic(m, "S1 + S2 - T")
        reaction(m, "r", [], ["S1"], "c * k * S2", modifiers=["S2"])
    sm = sbml.read(make(tmp_path, build, "explicit"))
    assert "S2" in sm.rules and "S2" not in sm.states
    J, g = both_modes(sm.ode_model(), ["k"], ["S1", "S2"])
    S1 = 2.0 - 1.5 * np.exp(-0.8 * TS)
    np.testing.assert_allclose(J.outputs, np.c_[S1, 2.0 - S1], rtol=1e-8)
    dS1 = TS * 1.5 * np.exp(-0.8 * TS)
    np.testing.assert_allclose(J.values[:, :, 0], np.c_[dS1, -dS1], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g.grad, [0.0], atol=1e-8)   # S1 + S2 = T whatever k


def test_coupled_linear_rules_are_solved_together(tmp_path):
    # x + y = a and x - y = b, both x and y in both rules: x = (a + b) / 2, y = (a - b) / 2
    def build(m):
        param(m, "x", None, constant=False)
        param(m, "y", None, constant=False)
        param(m, "a", 3.0)
        param(m, "b", 1.0)
        algebraic(m, "x + y - a")
        algebraic(m, "x - y - b")
    sm = sbml.read(make(tmp_path, build, "block"))
    import jax.numpy as jnp
    w = dict(zip(sm.rules, np.asarray(sm.rule_values(0.0, jnp.asarray(sm.initial(jnp.asarray(sm.parameter_values))),
                                                     jnp.asarray(sm.parameter_values)))))
    assert w["x"] == pytest.approx(2.0) and w["y"] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def cubic(tmp_path_factory):
    # x' = -k x (a rate rule), z^3 + z - x = 0 (nonlinear in z: a DAE variable; its value
    # 0 in the file is inconsistent and is solved for)
    def build(m):
        param(m, "x", 2.0, constant=False)
        param(m, "z", 0.0, constant=False)
        param(m, "k", 0.7)
        param(m, "x0", 2.0)
        ia = m.createInitialAssignment()
        ia.setSymbol("x"), ia.setMath(libsbml.parseL3Formula("x0"))
        rate_rule(m, "x", "-k * x")
        algebraic(m, "z^3 + z - x")
    return sbml.read(make(tmp_path_factory.mktemp("cubic"), build, "cubic"))


def test_nonlinear_rule_is_a_dae_with_implicit_function_derivatives(cubic):
    assert "z" in cubic.states
    J, g = both_modes(cubic.ode_model(), ["k"], ["z"])
    x = 2.0 * np.exp(-0.7 * TS)
    z = np.array([brentq(lambda v, xi=xi: v ** 3 + v - xi, -10, 10, xtol=1e-15) for xi in x])
    np.testing.assert_allclose(J.outputs[:, 0], z, rtol=1e-8)
    dz = (-TS * x) / (3 * z ** 2 + 1)          # dz/dk = (dx/dk) / (dg/dz)
    np.testing.assert_allclose(J.values[:, 0, 0], dz, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g.grad, [dz.sum()], rtol=1e-6)


def test_nonlinear_rule_initial_value_depends_on_the_parameters(cubic):
    # x(0) = x0 (an initial assignment): z(0) solves z^3 + z = x0, dz(0)/dx0 = 1 / (3 z^2 + 1)
    prob = sens.Problem(cubic.ode_model(), np.array([0.0, 1.0]), wrt=["x0"], of=["z"], solver="tsit5",
                        rtol=1e-10, atol=1e-12)
    J = sens.jacobian(prob, mode="forward")
    z0 = brentq(lambda v: v ** 3 + v - 2.0, -10, 10, xtol=1e-15)
    z1 = brentq(lambda v: v ** 3 + v - 2.0 * np.exp(-0.7), -10, 10, xtol=1e-15)
    np.testing.assert_allclose(J.values[:, 0, 0], [1 / (3 * z0 ** 2 + 1), np.exp(-0.7) / (3 * z1 ** 2 + 1)],
                               rtol=1e-6)


def fast_linear(tmp_path, event):
    # A <-> B fast (kf A - kr B), B -> C slow (k B); with `event`, one at t = 1.3 adds 1 to A
    def build(m):
        for sid, v in (("A", 1.0), ("B", 0.0), ("C", 0.0)):
            species(m, sid, v)
        for pid, v in (("kf", 2.0), ("kr", 1.0), ("k", 0.5)):
            param(m, pid, v)
        reaction(m, "fast", ["A"], ["B"], "c * (kf * A - kr * B)", fast=True)
        reaction(m, "slow", ["B"], ["C"], "c * k * B")
        if event:
            ev = m.createEvent()
            ev.setId("dose"), ev.setUseValuesFromTriggerTime(True)
            tr = ev.createTrigger()
            tr.setMath(libsbml.parseL3Formula("time > 1.3")), tr.setInitialValue(True), tr.setPersistent(True)
            ea = ev.createEventAssignment()
            ea.setVariable("A"), ea.setMath(libsbml.parseL3Formula("A + 1"))
    return sbml.read(make(tmp_path, build, f"fast_linear_{int(event)}")).ode_model()


KF, KR, K = 2.0, 1.0, 0.5
Q = KF / (KF + KR)


def test_fast_reaction_is_at_equilibrium_with_closed_form_derivatives(tmp_path):
    # W = A + B decays as W' = -k q W, q = kf / (kf + kr); B = q W, A = (1 - q) W, C = 1 - W
    # (A = 1, B = 0 in the file: equilibrated at the start)
    W = np.exp(-K * Q * TS)
    J, g = both_modes(fast_linear(tmp_path, False), ["kf", "k"], ["A", "B", "C"])
    np.testing.assert_allclose(J.outputs, np.c_[(1 - Q) * W, Q * W, 1.0 - W], rtol=1e-8, atol=1e-12)
    dq = KR / (KF + KR) ** 2
    dWkf, dWk = -K * TS * W * dq, -Q * TS * W
    want_kf = np.c_[-dq * W + (1 - Q) * dWkf, dq * W + Q * dWkf, -dWkf]
    want_k = np.c_[(1 - Q) * dWk, Q * dWk, -dWk]
    np.testing.assert_allclose(J.values[:, :, 0], want_kf, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(J.values[:, :, 1], want_k, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g.grad, [want_kf.sum(), want_k.sum()], rtol=1e-6, atol=1e-9)


def test_fast_reaction_equilibrates_again_after_an_event(tmp_path):
    # at t = 1.3 the event adds 1 to A: W jumps by 1 and A, B are at equilibrium again at once
    te = 1.3
    W1 = np.exp(-K * Q * te)
    after = TS > te
    W = np.where(after, (W1 + 1.0) * np.exp(-K * Q * (TS - te)), np.exp(-K * Q * TS))
    prob = sens.Problem(fast_linear(tmp_path, True), TS, of=["A", "B", "C"], solver="tsit5", rtol=1e-10, atol=1e-12)
    out = sens.simulate(prob).outputs
    np.testing.assert_allclose(out, np.c_[(1 - Q) * W, Q * W, 1.0 + after - W], rtol=1e-8, atol=1e-12)


def test_nonlinear_fast_reaction_against_scipy(tmp_path):
    # A + B <-> C fast (kf A B - kr C), C -> 0 slow (k C): the totals TA = A + C, TB = B + C
    # follow TA' = TB' = -k C with C the root in [0, min(TA, TB)] of kf (TA - C)(TB - C) = kr C
    kf, kr, k = 3.0, 0.5, 0.4

    def build(m):
        for sid, v in (("A", 1.0), ("B", 2.0), ("C", 0.0)):
            species(m, sid, v)
        for pid, v in (("kf", kf), ("kr", kr), ("k", k)):
            param(m, pid, v)
        reaction(m, "bind", ["A", "B"], ["C"], "c * (kf * A * B - kr * C)", fast=True)
        reaction(m, "decay", ["C"], [], "c * k * C")
    model = sbml.read(make(tmp_path, build, "fast_binding")).ode_model()

    def complex_(ta, tb):
        s = ta + tb + kr / kf
        return (s - np.sqrt(s * s - 4 * ta * tb)) / 2

    ref = solve_ivp(lambda t, u: [-k * complex_(*u)] * 2, (0, TS[-1]), [1.0, 2.0], t_eval=TS, rtol=1e-12, atol=1e-14)
    C = complex_(*ref.y)
    want = np.c_[ref.y[0] - C, ref.y[1] - C, C]
    out = sens.simulate(sens.Problem(model, TS, of=["A", "B", "C"], solver="tsit5", rtol=1e-10, atol=1e-12)).outputs
    np.testing.assert_allclose(out, want, rtol=1e-7, atol=1e-10)
    # d C / d kf by central differences of the reference
    h = 1e-5

    def C_of(kf_):
        def cx(ta, tb):
            s = ta + tb + kr / kf_
            return (s - np.sqrt(s * s - 4 * ta * tb)) / 2
        r = solve_ivp(lambda t, u: [-k * cx(*u)] * 2, (0, TS[-1]), [1.0, 2.0], t_eval=TS, rtol=1e-12, atol=1e-14)
        return cx(*r.y)
    fd = (C_of(kf + h) - C_of(kf - h)) / (2 * h)
    J = sens.jacobian(sens.Problem(model, TS, wrt=["kf"], of=["C"], solver="tsit5", rtol=1e-10, atol=1e-12),
                      mode="forward")
    np.testing.assert_allclose(J.values[:, 0, 0], fd, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("case, match", [
    ("ambiguous", "ambiguous"),
    ("overdetermined", "determines no variable"),
    ("singular", "consistent initial state|do not determine the fluxes"),
    ("event", "which an algebraic rule determines"),
])
def test_refused_by_name(tmp_path, case, match):
    def build(m):
        species(m, "A", 1.0)
        species(m, "B", 0.0)
        param(m, "k", 0.0 if case == "singular" else 1.0)
        param(m, "u", 1.0, constant=case != "ambiguous" and case != "event")
        param(m, "v", 2.0, constant=case not in ("ambiguous", "event"))
        if case == "event":
            algebraic(m, "v^3 - u")
            rate_rule(m, "u", "1")
            ev = m.createEvent()
            ev.setId("ev"), ev.setUseValuesFromTriggerTime(True)
            tr = ev.createTrigger()
            tr.setMath(libsbml.parseL3Formula("time > 1")), tr.setInitialValue(True), tr.setPersistent(True)
            ea = ev.createEventAssignment()
            ea.setVariable("v"), ea.setMath(libsbml.parseL3Formula("3"))
        elif case != "singular":
            algebraic(m, "u - v")
        reaction(m, "r", ["A"], ["B"], "c * k * A", fast=case == "singular")
    with pytest.raises(sens.ModelError, match=match):
        sbml.read(make(tmp_path, build, f"refuse_{case}"))
