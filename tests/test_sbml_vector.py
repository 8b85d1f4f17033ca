"""The SBML rates as arrays of monomials (`importers.sbml_vector`): which terms join the arrays,
the model simulated through them against SciPy on the hand-written rates, its parameter
derivatives against central differences of those SciPy solutions, and a large benchmark
model (when ../shared holds it) whose rhs is a few array operations with the values and
Jacobian of the unrolled code."""

from pathlib import Path

import jax
import jax.numpy as jnp
import libsbml
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import sensitivity as sens
from sensitivity.importers import sbml, sbml_vector

C1, C2 = 2.0, 0.5
P = dict(k1=0.8, k2=0.3, k3=0.25, k4=0.1, k5=0.4, k6=0.6, k7=0.2, k9=0.05, Vmax=0.7, Km=0.9, tsw=3.0)
Y0 = dict(A=1.0, B=1.5, C=0.2, D=0.1, E=0.3, F=2.0)  # E an amount, F a boundary species


def _xml() -> str:
    """Mass action across two compartments (A + B <-> C, 2 A -> D, a reversible A <-> B in
    one law, A^2 / B), a rate constant from an assignment rule (kr = k1 / 2), a boundary
    species feeding A, C's degradation at a rate constant that switches in time (a factor free
    of states: the arrays read its value), an amount species E drained by Michaelis-Menten,
    and B's degradation through a piecewise that holds B: the last two stay unrolled."""
    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId("monomials")
    for cid, size in (("c1", C1), ("c2", C2)):
        c = m.createCompartment()
        c.setId(cid), c.setSize(size), c.setConstant(True), c.setSpatialDimensions(3)
    for pid, v in P.items():
        p = m.createParameter()
        p.setId(pid), p.setValue(v), p.setConstant(True)
    for rid, law in (("kr", "k1 / 2"), ("sw", "piecewise(k5, time < tsw, 0) * exp(k2)")):
        rp = m.createParameter()
        rp.setId(rid), rp.setConstant(False)
        rule = m.createAssignmentRule()
        rule.setVariable(rid), rule.setMath(libsbml.parseL3Formula(law))
    for sid, v in Y0.items():
        s = m.createSpecies()
        s.setId(sid), s.setCompartment("c2" if sid == "D" else "c1"), s.setConstant(False)
        s.setBoundaryCondition(sid == "F"), s.setHasOnlySubstanceUnits(sid == "E")
        (s.setInitialAmount if sid == "E" else s.setInitialConcentration)(v)

    def reaction(rid, reactants, products, law):
        r = m.createReaction()
        r.setId(rid), r.setReversible(False), r.setFast(False)
        for refs, make in ((reactants, r.createReactant), (products, r.createProduct)):
            for sid, n in refs:
                ref = make()
                ref.setSpecies(sid), ref.setStoichiometry(n), ref.setConstant(True)
        r.createKineticLaw().setMath(libsbml.parseL3Formula(law))

    reaction("r1", [("A", 1), ("B", 1)], [("C", 1)], "c1 * k1 * A * B")
    reaction("r2", [("C", 1)], [("A", 1), ("B", 1)], "c1 * k2 * C")
    reaction("r3", [("A", 2)], [("D", 1)], "c1 * k3 * A^2")
    reaction("r4", [("D", 1)], [("E", 1)], "c2 * kr * D")
    reaction("r5", [("E", 1)], [], "Vmax * E / (Km + E)")
    reaction("r6", [("F", 1)], [("A", 1)], "c1 * k4 * F")
    reaction("r7", [("B", 1)], [], "c1 * piecewise(k5 * B, time < tsw, 0)")
    reaction("r8", [("A", 1)], [("B", 1)], "c1 * (k6 * A - k7 * B)")
    reaction("r9", [("A", 1)], [], "c1 * k9 * A^2 / B")
    reaction("r10", [("C", 1)], [], "c1 * sw * C")
    return libsbml.writeSBMLToString(doc)


def _rates(t, y, p, F=Y0["F"]):
    """The model's rates written out by hand (concentrations; E an amount; F fixed)."""
    A, B, C, D, E = y
    v = dict(r1=C1 * p["k1"] * A * B, r2=C1 * p["k2"] * C, r3=C1 * p["k3"] * A ** 2, r4=C2 * p["k1"] / 2 * D,
             r5=p["Vmax"] * E / (p["Km"] + E), r6=C1 * p["k4"] * F, r7=C1 * p["k5"] * B * (t < p["tsw"]),
             r8=C1 * (p["k6"] * A - p["k7"] * B), r9=C1 * p["k9"] * A ** 2 / B,
             r10=C1 * p["k5"] * (t < p["tsw"]) * np.exp(p["k2"]) * C)
    return [(-v["r1"] + v["r2"] - 2 * v["r3"] + v["r6"] - v["r8"] - v["r9"]) / C1,
            (-v["r1"] + v["r2"] - v["r7"] + v["r8"]) / C1,
            (v["r1"] - v["r2"] - v["r10"]) / C1,
            (v["r3"] - v["r4"]) / C2,
            v["r4"] - v["r5"]]


TS = np.array([0.0, 0.5, 1.5, 2.9, 4.0, 6.0])  # the first save time is the start
STATES = ["A", "B", "C", "D", "E"]


def _scipy(p):
    y0 = [Y0[s] for s in STATES]
    out = []
    for a, b, ts in ((0.0, p["tsw"], TS[TS <= p["tsw"]]), (p["tsw"], TS[-1], TS[TS > p["tsw"]])):
        sol = solve_ivp(_rates, (a, b), y0, t_eval=ts, args=(p,), method="Radau", rtol=1e-12, atol=1e-12)
        out.append(sol.y.T)
        y0 = solve_ivp(_rates, (a, b), y0, args=(p,), method="Radau", rtol=1e-12, atol=1e-12).y[:, -1]
    return np.concatenate(out)


@pytest.fixture(scope="module")
def model():
    old = sbml_vector.MIN_MONOMIAL_TERMS
    sbml_vector.MIN_MONOMIAL_TERMS = 1  # this small model through the arrays
    try:
        yield sbml.from_string(_xml(), source="monomials")
    finally:
        sbml_vector.MIN_MONOMIAL_TERMS = old


def test_mass_action_terms_join_the_arrays_and_the_rest_stays_unrolled():
    sm = sbml.from_string(_xml(), source="monomials_split")
    mono, rest, factors = sbml_vector.split(sm.states, sm.parameters, sm.rules, sm.state_rates, minimum=1)
    assert mono is not None
    # the switch's two factors free of states, computed once by the unrolled code
    assert sorted(str(f).split("(")[0] for f in factors) == ["Piecewise", "exp"], factors
    # left unrolled: E's Michaelis-Menten drain, B's piecewise degradation; no other term
    left = {s: str(e) for s, e in rest.items() if e != 0}
    assert set(left) == {"B", "E"}, left
    assert "r7" in left["B"] and "r5" in left["E"]  # the reactions' rates, by name
    # a monomial per rate and compartment it is divided by: r1, r2, r6, r8 (two), r9 (B in the
    # denominator), r10 (sw C) once; r3 for A (k3 A^2) and D (c1 k3 A^2 / c2); r4 for D and for
    # the amount E
    assert mono.num.shape[0] == 12 and mono.den.shape[1] == 1
    # below the threshold the model keeps the unrolled code alone
    assert sbml_vector.split(sm.states, sm.parameters, sm.rules, sm.state_rates, minimum=10**6)[0] is None


def test_rates_through_the_arrays_equal_the_hand_written_ones(model):
    pv = jnp.asarray(model.parameter_values)
    rng = np.random.default_rng(0)
    for t in (1.0, 4.0):
        y = rng.uniform(0.2, 2.0, len(model.states))
        p = dict(P, **{k: float(v) for k, v in zip(model.parameters, model.parameter_values) if k in P})
        ours = np.asarray(model.rhs(t, jnp.asarray(y), pv, t))
        want = dict(zip(STATES, _rates(t, y[[model.states.index(s) for s in STATES]], p,
                                       F=y[model.states.index("F")])))
        for s, w in want.items():
            np.testing.assert_allclose(ours[model.states.index(s)], w, rtol=1e-13, atol=1e-15)
        assert ours[model.states.index("F")] == 0.0  # a boundary species does not move


def test_simulation_and_parameter_derivatives_against_scipy(model):
    prob = sens.Problem(model.ode_model(), TS, wrt=["k1", "k3", "k9", "tsw"], of=STATES, rtol=1e-10, atol=1e-12)
    J = sens.jacobian(prob, mode="forward")
    np.testing.assert_allclose(J.outputs, _scipy(P), rtol=1e-7, atol=1e-9)
    for j, k in enumerate(["k1", "k3", "k9", "tsw"]):
        h = 1e-4 * P[k]
        fd = (_scipy(dict(P, **{k: P[k] + h})) - _scipy(dict(P, **{k: P[k] - h}))) / (2 * h)
        np.testing.assert_allclose(J.values[:, :, j], fd, rtol=1e-5, atol=1e-7, err_msg=k)


LARGE = Path(__file__).resolve().parents[2] / "shared" / "petab" / "Lang_PLOSComputBiol2024"


@pytest.mark.skipif(not LARGE.exists(), reason="../shared/petab/Lang_PLOSComputBiol2024 is not here")
def test_a_large_model_runs_through_a_few_array_operations():
    xml = next(LARGE.glob("*.xml")).read_text()
    vector = sbml.from_string(xml, source="lang")  # 1,417 monomial terms: above the threshold
    old = sbml_vector.MIN_MONOMIAL_TERMS
    sbml_vector.MIN_MONOMIAL_TERMS = 10**9
    try:
        unrolled = sbml.from_string(xml, source="lang_unrolled")
    finally:
        sbml_vector.MIN_MONOMIAL_TERMS = old
    pv = jnp.asarray(vector.parameter_values)
    y = vector.initial(pv) * (1 + 0.3 * jnp.sin(jnp.arange(len(vector.states)))) + 0.01
    sizes = {}
    for name, sm in (("vector", vector), ("unrolled", unrolled)):
        sizes[name] = len(jax.make_jaxpr(lambda y_, sm=sm: sm.rhs(0.5, y_, pv, 0.5))(y).eqns)
    assert vector.rate_arrays is not None and unrolled.rate_arrays is None
    assert sizes["vector"] < 60 < 1000 < sizes["unrolled"], sizes
    a, b = vector.rhs(0.5, y, pv, 0.5), unrolled.rhs(0.5, y, pv, 0.5)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * float(jnp.max(jnp.abs(b))))
    Ja = jax.jacfwd(lambda y_: vector.rhs(0.5, y_, pv, 0.5))(y)
    Jb = jax.jacfwd(lambda y_: unrolled.rhs(0.5, y_, pv, 0.5))(y)
    np.testing.assert_allclose(Ja, Jb, rtol=1e-12, atol=1e-12 * float(jnp.max(jnp.abs(Jb))))


def test_the_arrays_derivatives_equal_those_of_their_plain_formula(model):
    """The arrays' custom JVP (Jacobians from the monomials' partials) against JAX's
    derivatives of the plain gathers and products (`_values`): first derivatives in the
    states, the parameters and the state-free factors, forward and reverse, and second ones
    (the forward sensitivities of an implicit step differentiate the Jacobian)."""
    R = model.rate_arrays
    assert R is not None and R.den.shape[1] > 0  # a denominator factor is covered
    rng = np.random.default_rng(1)
    p = jnp.asarray(rng.uniform(0.2, 2.0, R.n_params))
    y = jnp.asarray(rng.uniform(0.2, 2.0, R.n_states))
    w = jnp.asarray(rng.uniform(0.2, 2.0, R.n_factors))

    def plain(p, y, w):
        return R._values(R._x(p, y, w))

    for argnum in range(3):
        np.testing.assert_allclose(jax.jacfwd(R, argnum)(p, y, w), jax.jacfwd(plain, argnum)(p, y, w),
                                   rtol=1e-13, atol=1e-13)
        np.testing.assert_allclose(jax.jacrev(R, argnum)(p, y, w), jax.jacrev(plain, argnum)(p, y, w),
                                   rtol=1e-13, atol=1e-13)
    v = jnp.asarray(rng.normal(size=R.n_states))

    def second(fn):  # d/d(p, y) of J_y v: the derivative of the Jacobian along v
        return jax.jacfwd(lambda p_, y_: jax.jvp(lambda z: fn(p_, z, w), (y_,), (v,))[1], (0, 1))(p, y)

    for a, b in zip(second(R), second(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
