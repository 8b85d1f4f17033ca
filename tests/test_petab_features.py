"""PEtab features on a problem written here, against its closed form: A <-> B with rates
k, k2 (A + B conserved, so the preequilibration Jacobian is singular), a preequilibration
condition, per-condition parameter (numeric and parameter-id) and species overrides, an
initial assignment, observable parameters that differ between rows (time-point specific),
a steady-state measurement (time = inf),
normal and Laplace noise, lin and log10 transformations, lin / log / log10 parameter scales.
The nllh and its gradient (jax.grad of the closed form) are compared with the import's."""

import functools
import math
import textwrap

import jax
import jax.numpy as jnp
import libsbml
import numpy as np
import pytest

import sensitivity as sens
from sensitivity.analyses.likelihood import PetabLikelihood

PARAMS = [  # id, scale, lower, upper, nominal, estimate
    ("total", "log10", 0.01, 100, 2.0, 1),
    ("k_c1", "log", 0.01, 10, 0.8, 1),
    ("k2", "lin", 0.0, 5, 0.2, 1),
    ("scale_A", "lin", 0.1, 10, 1.5, 0),
    ("sigma", "log10", 0.001, 10, 0.1, 1),
    ("offset", "lin", 0.0, 1, 0.05, 1),
]


def _sbml(path):
    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId("ab")
    c = m.createCompartment()
    c.setId("c"), c.setSize(1.0), c.setConstant(True)
    for sid in ("A", "B"):
        s = m.createSpecies()
        s.setId(sid), s.setCompartment("c"), s.setInitialConcentration(0.0)
        s.setHasOnlySubstanceUnits(False), s.setBoundaryCondition(False), s.setConstant(False)
    for pid, v in (("k", 0.3), ("k2", 0.2), ("total", 2.0)):
        p = m.createParameter()
        p.setId(pid), p.setValue(v), p.setConstant(True)
    ia = m.createInitialAssignment()
    ia.setSymbol("A"), ia.setMath(libsbml.parseL3Formula("total"))
    for rid, a, b, law in (("r1", "A", "B", "c * k * A"), ("r2", "B", "A", "c * k2 * B")):
        r = m.createReaction()
        r.setId(rid), r.setReversible(False), r.setFast(False)
        x = r.createReactant()
        x.setSpecies(a), x.setStoichiometry(1), x.setConstant(True)
        y = r.createProduct()
        y.setSpecies(b), y.setStoichiometry(1), y.setConstant(True)
        r.createKineticLaw().setMath(libsbml.parseL3Formula(law))
    libsbml.writeSBMLToFile(doc, str(path))


MEAS = [  # obs, preeq, cond, value, time, observableParameters, noiseParameters
    ("obs_A", "pre", "c1", 0.9, 0.0, "scale_A", "sigma"),
    ("obs_A", "pre", "c1", 0.7, 1.0, "scale_A", "sigma"),
    ("obs_A", "pre", "c1", 0.5, 4.0, "2.0", "sigma"),       # time-point-specific override
    ("obs_B", "pre", "c1", 1.2, 2.0, "", "0.1"),
    ("obs_A", "", "c2", 2.5, 0.5, "scale_A", "sigma"),
    ("obs_B", "", "c2", 1.1, 1.0, "", "0.1"),
    ("obs_B", "", "c2", 1.9, 3.0, "", "0.2"),
    ("obs_A", "", "c2", 0.9, "inf", "scale_A", "sigma"),    # a steady-state measurement
]


def _write_problem(d, pre_k: float = 0.3):
    """The problem's files in folder d; `pre_k` the rate k of the preequilibration."""
    _sbml(d / "model.xml")
    (d / "conditions.tsv").write_text(f"conditionId\tk\tB\npre\t{pre_k}\t\nc1\tk_c1\t\nc2\t1.0\t0.5\n")
    (d / "observables.tsv").write_text(textwrap.dedent("""\
        observableId\tobservableFormula\tnoiseFormula\tobservableTransformation\tnoiseDistribution
        obs_A\tobservableParameter1_obs_A * A\tnoiseParameter1_obs_A\tlin\tnormal
        obs_B\tB + offset\tnoiseParameter1_obs_B\tlog10\tlaplace
        """))
    rows = ["observableId\tpreequilibrationConditionId\tsimulationConditionId\tmeasurement\ttime\t"
            "observableParameters\tnoiseParameters"]
    rows += ["\t".join(str(v) for v in r) for r in MEAS]
    (d / "measurements.tsv").write_text("\n".join(rows) + "\n")
    prow = ["parameterId\tparameterScale\tlowerBound\tupperBound\tnominalValue\testimate"]
    prow += ["\t".join(str(v) for v in r) for r in PARAMS]
    (d / "parameters.tsv").write_text("\n".join(prow) + "\n")
    (d / "problem.yaml").write_text(textwrap.dedent("""\
        format_version: 1
        parameter_file: parameters.tsv
        problems:
        - condition_files: [conditions.tsv]
          measurement_files: [measurements.tsv]
          observable_files: [observables.tsv]
          sbml_files: [model.xml]
        """))
    return d / "problem.yaml"


@pytest.fixture(scope="module")
def problem(tmp_path_factory):
    return sens.petab.load(_write_problem(tmp_path_factory.mktemp("petab_ab")), rtol=1e-10, atol=1e-10)


def closed_form_nllh(x, pre_k: float = 0.3):
    """The problem's nllh from the closed-form solution, x on the parameter scales."""
    total, k_c1, k2, sigma, offset = 10 ** x[0], jnp.exp(x[1]), x[2], 10 ** x[3], x[4]
    scale_A = 1.5

    def a_of(t, a0, tot, k):
        a_inf = tot * k2 / (k + k2)
        if math.isinf(t):
            return a_inf
        return a_inf + (a0 - a_inf) * jnp.exp(-(k + k2) * t)

    a_pre = total * k2 / (pre_k + k2)                     # steady state of the preequilibration
    out = 0.0
    for obs, pre, cond, m, t, op, noise in MEAS:
        if cond == "c1":
            A = a_of(t, a_pre, total, k_c1)
            B = total - A
        else:
            A = a_of(float(t), total, total + 0.5, 1.0)         # t = inf: A_inf
            B = total + 0.5 - A
        if obs == "obs_A":
            s = (scale_A if op == "scale_A" else float(op)) * A
            out += 0.5 * jnp.log(2 * math.pi * sigma ** 2) + 0.5 * ((s - m) / sigma) ** 2
        else:
            b = float(noise)
            out += jnp.log(2 * b) + jnp.abs(jnp.log10(B + offset) - math.log10(m)) / b + math.log(m * math.log(10))
    return out


def test_names_scales_and_nominal_values(problem):
    assert problem.x_names == ("total", "k_c1", "k2", "sigma", "offset")
    assert problem.scales == ("log10", "log", "lin", "log10", "lin")
    np.testing.assert_allclose(problem.x_nominal, [math.log10(2.0), math.log(0.8), 0.2, -1.0, 0.05])


def test_nllh_equals_the_closed_form(problem):
    for x in (problem.x_nominal, problem.x_nominal + np.array([0.1, -0.2, 0.05, 0.1, 0.02])):
        assert problem.nllh(x) == pytest.approx(float(closed_form_nllh(jnp.asarray(x))), abs=1e-7)


def test_gradients_equal_the_closed_form(problem):
    x = problem.x_nominal + np.array([0.1, -0.2, 0.05, 0.1, 0.02])
    want = np.asarray(jax.grad(closed_form_nllh)(jnp.asarray(x)))
    for mode in ("forward", "adjoint"):
        g = problem.gradient(x, mode=mode)
        np.testing.assert_allclose(g.grad, want, rtol=1e-6, atol=1e-8)


def test_value_gradient_fisher_equals_the_separate_calls(problem):
    """One forward sweep gives nllh, gradient and Fisher information: the values of the
    separate calls (which the tests above hold to the closed form) at the same x."""
    x = problem.x_nominal + np.array([0.1, -0.2, 0.05, 0.1, 0.02])
    value, grad, F = problem.value_gradient_fisher(x)
    assert value == pytest.approx(problem.nllh(x), rel=1e-10)
    np.testing.assert_allclose(grad, problem.gradient(x, mode="forward").grad, rtol=1e-10, atol=0)
    np.testing.assert_allclose(F, problem.fisher(x), rtol=1e-10, atol=0)
    np.testing.assert_allclose(grad, np.asarray(jax.grad(closed_form_nllh)(jnp.asarray(x))), rtol=1e-6, atol=1e-8)
    v2, g2, H2 = PetabLikelihood(problem).value_grad_hessian(x)  # the likelihood passes them on
    assert v2 == value and np.array_equal(g2, grad) and np.array_equal(H2, F)


@pytest.mark.parametrize("solver", ["rodas5p", "kvaerno5"])
def test_a_slow_preequilibration_has_the_steady_states_value_and_derivatives(tmp_path_factory, solver):
    """Preequilibration with rates 1e-3 (relaxation time ~300): the solve stops where the rhs
    is small, not at the steady state, and its derivatives are those of the stopped
    trajectory. The Newton step with its matrix held constant (`steady_state.newton_polish`)
    gives the steady state's value and the implicit function theorem's derivatives, with
    A + B conserved (a singular Jacobian, not symmetric at k2 != k). Without the step, or
    with a plain pseudo-inverse step that ignores the conservation law, the nllh and the
    gradient miss the closed form by more than the tolerances below; with it they meet them."""
    prob = sens.petab.load(_write_problem(tmp_path_factory.mktemp("petab_slow"), pre_k=0.001),
                           solver=solver, rtol=1e-8, atol=1e-8)
    x = np.array(prob.x_nominal)
    x[2] = 0.002  # k2
    closed = functools.partial(closed_form_nllh, pre_k=0.001)
    assert prob.nllh(x) == pytest.approx(float(closed(jnp.asarray(x))), abs=1e-5)
    if solver == "rodas5p":  # the default; kvaerno5 checks the diffrax steady solve's wiring
        want = np.asarray(jax.grad(closed)(jnp.asarray(x)))
        for mode in ("forward", "adjoint"):
            g = prob.gradient(x, mode=mode).grad
            assert np.abs(g - want).max() < 1.5e-5 * np.abs(want).max(), (mode, g, want)


def test_simulation_table(problem):
    sim = problem.simulate()
    assert list(sim["simulation"].isna()) == [False] * len(MEAS) and "measurement" not in sim


def test_cli_writes_a_result_folder(problem, tmp_path):
    from sensitivity.app import cli
    out = tmp_path / "res"
    assert cli.main(["petab", str(problem.path), "--out", str(out), "--rtol", "1e-10", "--atol", "1e-10",
                     "--fit", "--maxiter", "20", "-q"]) == 0
    for f in ("summary.json", "simulation.tsv", "gradient.csv", "fisher.csv", "plots/obs_A.png"):
        assert (out / f).is_file(), f
    import json
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nllh_nominal"] == pytest.approx(problem.nllh(), abs=1e-9)
    assert summary["fit"]["nllh"] < summary["nllh_nominal"]        # the fit improved on the start
    x_fit = np.array([summary["fit"]["x"][n] for n in problem.x_names])
    assert problem.nllh(x_fit) == pytest.approx(summary["fit"]["nllh"], abs=1e-9)
    assert cli.main(["petab", str(problem.path), "--out", str(out), "-q"]) != 0   # no silent overwrite


def test_run_config_with_petab_key_and_sbml_model(problem, tmp_path):
    from sensitivity.app import cli
    from sensitivity.app.config import run as config
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"petab: {problem.path}\nsolver: {{rtol: 1.0e-10, atol: 1.0e-10}}\n"
                   f"output: {{dir: {tmp_path / 'out'}, plots: false}}\n")
    assert cli.main(["run", str(cfg), "-q"]) == 0 and (tmp_path / "out" / "summary.json").is_file()
    # an SBML file as the model of an ordinary run config
    sb = tmp_path / "sbml.yaml"
    sb.write_text(f"model: {problem.path.parent / 'model.xml'}\ntime: {{stop: 5.0, points: 11}}\n"
                  "sensitivity: {wrt: [k, k2], of: [A, B]}\n")
    spec = config.load(sb)
    assert spec.problem.model.states == ("A", "B") and spec.problem.input_names == ("k", "k2")


@pytest.mark.parametrize("kind, a, b", [
    ("normal", 3.0, 0.3), ("laplace", 3.0, 0.3), ("logNormal", 0.5, 0.4), ("logLaplace", 0.5, 0.4),
    ("parameterScaleNormal", 0.3, 0.5), ("parameterScaleLaplace", 0.3, 0.5),
])
@pytest.mark.parametrize("scale", ["lin", "log", "log10"])
def test_priors_are_normalised_densities_on_the_parameter_scale(kind, a, b, scale):
    # exp(-prior) integrates to 1 over x (the parameter-scale value), and its derivative is
    # the finite difference of the value
    from scipy.integrate import quad

    from sensitivity.importers.petab import _prior_term
    if kind.startswith("parameterScale"):
        lo, hi = -40.0, 40.0
    elif scale == "lin" and kind.startswith("log"):
        lo, hi = 1e-9, 60.0
    elif scale == "lin":
        lo, hi = -40.0, 40.0
    else:
        lo, hi = -40.0 if scale == "log" else -18.0, 8.0 if scale == "log" else 3.5
    mass = quad(lambda x: math.exp(-_prior_term(x, scale, kind, a, b)[0]), lo, hi, limit=400, points=[0.0, 0.3, 0.5])[0]
    assert mass == pytest.approx(1.0, abs=2e-4)
    x, h = 0.37, 1e-6
    fd = (_prior_term(x + h, scale, kind, a, b)[0] - _prior_term(x - h, scale, kind, a, b)[0]) / (2 * h)
    assert _prior_term(x, scale, kind, a, b)[1] == pytest.approx(fd, rel=1e-6, abs=1e-8)


def test_priors_add_to_nllh_and_gradient(problem):
    # the fixture's problem has no priors: nllh(priors=True) equals nllh
    assert problem.prior()[0] == 0.0
    assert problem.nllh(priors=True) == problem.nllh()


def test_identifiability_of_a_petab_problem(problem):
    """sens.identifiability takes a PEtab problem: the Cramer-Rao errors of its estimated
    parameters (estimation scale) from its Fisher information at the nominal values."""
    res = sens.identifiability(problem)
    F = problem.fisher()
    np.testing.assert_allclose(res.fisher.matrix, F)
    assert tuple(res.dataset["input"].values) == tuple(problem.x_names)
    np.testing.assert_allclose(res.dataset["standard_error"].values, np.sqrt(np.diag(np.linalg.inv(F))), rtol=1e-8)

