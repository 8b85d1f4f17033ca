"""A condition-table column that sets an entity the model defines by an initial assignment or
an assignment rule replaces that definition for the conditions that give a value, and keeps
it where the column is empty (PEtab). A problem written here, against its closed form:
dA/dt = -g A with A(0) = u, where u is set by an initial assignment (u = 3) and g by an
assignment rule (g = 2 k); condition c1 sets u, c2 sets g to an estimated parameter, c3 sets
neither. The nllh and its gradient (jax.grad of the closed form) are compared with the import's."""

import math
import textwrap

import jax
import jax.numpy as jnp
import libsbml
import numpy as np
import pytest

import sensitivity as sens

PARAMS = [("k", "log10", 0.01, 10, 0.4, 1), ("k2", "lin", 0.0, 5, 0.7, 1), ("sigma", "lin", 0.01, 1, 0.1, 0)]
CONDITIONS = {"c1": (5.0, None), "c2": (None, "k2"), "c3": (None, None)}  # (u, g); None: the model's
MEAS = [("c1", 0.5, 3.9), ("c1", 2.0, 1.1), ("c2", 1.0, 1.6), ("c2", 3.0, 0.4), ("c3", 1.0, 1.2), ("c3", 2.5, 0.2)]


def _sbml(path):
    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId("decay")
    c = m.createCompartment()
    c.setId("c"), c.setSize(1.0), c.setConstant(True)
    s = m.createSpecies()
    s.setId("A"), s.setCompartment("c"), s.setInitialConcentration(0.0)
    s.setHasOnlySubstanceUnits(False), s.setBoundaryCondition(False), s.setConstant(False)
    for pid, v, const in (("k", 0.4, True), ("u", float("nan"), True), ("g", float("nan"), False)):
        p = m.createParameter()
        p.setId(pid), p.setConstant(const)
        if not math.isnan(v):
            p.setValue(v)
    ia = m.createInitialAssignment()
    ia.setSymbol("u"), ia.setMath(libsbml.parseL3Formula("3"))
    ia = m.createInitialAssignment()
    ia.setSymbol("A"), ia.setMath(libsbml.parseL3Formula("u"))
    rule = m.createAssignmentRule()
    rule.setVariable("g"), rule.setMath(libsbml.parseL3Formula("2 * k"))
    r = m.createReaction()
    r.setId("r1"), r.setReversible(False), r.setFast(False)
    x = r.createReactant()
    x.setSpecies("A"), x.setStoichiometry(1), x.setConstant(True)
    r.createKineticLaw().setMath(libsbml.parseL3Formula("c * g * A"))
    libsbml.writeSBMLToFile(doc, str(path))


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    d = tmp_path_factory.mktemp("overrides")
    _sbml(d / "model.xml")
    rows = ["conditionId\tu\tg"] + [f"{cid}\t{'' if u is None else u}\t{'' if g is None else g}"
                                     for cid, (u, g) in CONDITIONS.items()]
    (d / "conditions.tsv").write_text("\n".join(rows) + "\n")
    (d / "observables.tsv").write_text("observableId\tobservableFormula\tnoiseFormula\nobs_A\tA\tsigma\n")
    (d / "measurements.tsv").write_text("observableId\tsimulationConditionId\tmeasurement\ttime\n" + "".join(
        f"obs_A\t{cid}\t{y}\t{t}\n" for cid, t, y in MEAS))
    (d / "parameters.tsv").write_text(
        "parameterId\tparameterScale\tlowerBound\tupperBound\tnominalValue\testimate\n"
        + "".join("\t".join(str(v) for v in p) + "\n" for p in PARAMS))
    (d / "problem.yaml").write_text(textwrap.dedent("""\
        format_version: 1
        parameter_file: parameters.tsv
        problems:
          - sbml_files: [model.xml]
            condition_files: [conditions.tsv]
            measurement_files: [measurements.tsv]
            observable_files: [observables.tsv]
        """))
    return sens.petab.load(d / "problem.yaml")


def closed_form_nllh(x):
    k, k2, sigma = 10.0 ** x[0], x[1], 0.1
    total = 0.0
    for cid, t, y in MEAS:
        u, g = CONDITIONS[cid]
        a0 = 3.0 if u is None else u
        rate = 2.0 * k if g is None else k2
        a = a0 * jnp.exp(-rate * t)
        total = total + 0.5 * math.log(2 * math.pi * sigma ** 2) + 0.5 * ((a - y) / sigma) ** 2
    return total


def test_condition_values_replace_initial_assignments_and_rules(problem):
    x = jnp.asarray(problem.x_nominal)
    g = problem.gradient()
    assert problem.nllh() == pytest.approx(float(closed_form_nllh(x)), rel=1e-6)
    np.testing.assert_allclose(g.grad, np.asarray(jax.grad(closed_form_nllh)(x)), rtol=1e-5)


def test_minus_infinity_on_a_log_scale_is_the_value_zero(problem):
    """A log-scale parameter at -inf (a nominal value 0: a rate switched off) is the value 0,
    its derivative 0; NaN, +inf and -inf on a linear scale are refused, naming the parameter."""
    x = np.array([-np.inf, 0.7])
    g = problem.gradient(x)
    assert g.value == pytest.approx(float(closed_form_nllh(jnp.asarray(x))), rel=1e-6)
    np.testing.assert_allclose(g.grad, np.asarray(jax.grad(closed_form_nllh)(jnp.asarray(x))), rtol=1e-5, atol=1e-12)
    assert g.grad[0] == 0.0
    for bad, name in (([np.nan, 0.7], "k"), ([np.inf, 0.7], "k"), ([0.0, -np.inf], "k2")):
        with pytest.raises(sens.InputError, match=name):
            problem.nllh(np.array(bad))
