"""A linear-scale parameter with a large value (an initial amount of 2000, as the initial
conditions of Lang_PLOSComputBiol2024 of ~1e10) has a finite reverse-mode gradient: exp or
10** of that value in the branch its scale does not select is inf, and the reverse pass through
a `where` must not turn that into 0 * inf = NaN. A problem written here, against its closed
form: dA/dt = -k A, A(0) = A0 set by the condition table to the estimated A0 (linear scale),
k on log10 scale, observable A / 1000 with sigma 0.05; the nllh's gradient by jax.grad of the
closed form, and by central differences of the importer's own nllh."""

import textwrap

import jax
import jax.numpy as jnp
import libsbml
import numpy as np
import pytest

import sensitivity as sens

X_NOMINAL = np.array([2000.0, -0.3])  # A0 (lin), log10 k
MEAS = [(0.0, 2.1), (0.5, 1.2), (1.5, 0.55), (3.0, 0.2)]
SIGMA = 0.05


def _sbml(path):
    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId("decay")
    c = m.createCompartment()
    c.setId("c"), c.setSize(1.0), c.setConstant(True)
    s = m.createSpecies()
    s.setId("A"), s.setCompartment("c"), s.setInitialConcentration(1.0)
    s.setHasOnlySubstanceUnits(False), s.setBoundaryCondition(False), s.setConstant(False)
    p = m.createParameter()
    p.setId("k"), p.setValue(0.5), p.setConstant(True)
    r = m.createReaction()
    r.setId("r1"), r.setReversible(False), r.setFast(False)
    x = r.createReactant()
    x.setSpecies("A"), x.setStoichiometry(1), x.setConstant(True)
    r.createKineticLaw().setMath(libsbml.parseL3Formula("c * k * A"))
    libsbml.writeSBMLToFile(doc, str(path))


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    d = tmp_path_factory.mktemp("large_linear")
    _sbml(d / "model.xml")
    (d / "conditions.tsv").write_text("conditionId\tA\nc1\tA0\n")
    (d / "observables.tsv").write_text(
        f"observableId\tobservableFormula\tnoiseFormula\nobs_A\tA / 1000\t{SIGMA}\n")
    (d / "measurements.tsv").write_text("observableId\tsimulationConditionId\tmeasurement\ttime\n" + "".join(
        f"obs_A\tc1\t{y}\t{t}\n" for t, y in MEAS))
    (d / "parameters.tsv").write_text(
        "parameterId\tparameterScale\tlowerBound\tupperBound\tnominalValue\testimate\n"
        "A0\tlin\t100\t1e5\t2000\t1\nk\tlog10\t0.01\t10\t0.5\t1\n")
    (d / "problem.yaml").write_text(textwrap.dedent("""\
        format_version: 1
        parameter_file: parameters.tsv
        problems:
          - sbml_files: [model.xml]
            condition_files: [conditions.tsv]
            measurement_files: [measurements.tsv]
            observable_files: [observables.tsv]
        """))
    p = sens.petab.load(d / "problem.yaml")
    p.rtol = p.atol = 1e-10
    return p


def closed_form_nllh(x):
    a0, k = x[0], 10.0 ** x[1]
    total = 0.0
    for t, y in MEAS:
        r = (y - a0 * jnp.exp(-k * t) / 1000.0) / SIGMA
        total = total + 0.5 * r * r + jnp.log(jnp.sqrt(2 * jnp.pi) * SIGMA)
    return total


def test_theta_reverse_mode_is_finite_for_large_linear_values(problem):
    assert list(problem.x_names) == ["A0", "k"]
    jac = jax.jacrev(problem.theta)(jnp.asarray(X_NOMINAL))
    assert np.all(np.isfinite(np.asarray(jac)))


def test_adjoint_gradient_of_a_large_linear_initial_value(problem):
    # the reverse sweep is where 0 * inf arose; forward mode never saw the unselected branch
    g = problem.gradient(X_NOMINAL, mode="adjoint")
    assert g.value == pytest.approx(float(closed_form_nllh(X_NOMINAL)), rel=1e-7)
    exact = np.asarray(jax.grad(closed_form_nllh)(jnp.asarray(X_NOMINAL)))
    np.testing.assert_allclose(g.grad, exact, rtol=1e-5)
    # central differences of the importer's own nllh, steps relative to each component's size
    h = np.array([1e-2, 1e-5])
    cd = np.array([(problem.nllh(X_NOMINAL + h[i] * e) - problem.nllh(X_NOMINAL - h[i] * e)) / (2 * h[i])
                   for i, e in enumerate(np.eye(2))])
    np.testing.assert_allclose(g.grad, cd, rtol=1e-4)
