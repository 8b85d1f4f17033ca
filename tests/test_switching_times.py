"""Derivatives with respect to a switching time (a parameter at which the rhs jumps), on a
stiff model where differentiating the solver's step sequence goes wrong: every route
(forward, adjoint, Fisher information, Hessian-vector product) against central differences
of an independent solve, in a plain Problem and in a PEtab problem.

The model is the induction model of Beer et al. (2014), one of its strains: bacteria grow
only after a lag (lag = 0 before the switching time tau, 1 after) and drive a fast
dimerisation (kdim ~ 18) that makes the solve stiff."""

import math
from pathlib import Path

import jax.numpy as jnp
import libsbml
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import sensitivity as sens
from sensitivity.analyses.identifiability import fisher

RATES = dict(Bacmax=0.817, beta=0.0042, kdegi=3.845, kdim=18.19, ksyn=0.0958)
Y0 = [0.0138, 10.0, 0.0, 0.0]
T_END = 120.0
TIMES = np.linspace(0.0, T_END, 25)


def beer_rhs(t, y, p, xp=jnp):
    lag = xp.where(t < p["tau"], 0.0, 1.0)
    feed = xp.where(t < 60.0, 0.0, p["u"])  # a fixed-time breakpoint as well
    bac, glu, cglu, ind = y[0], y[1], y[2], y[3]
    return xp.stack([bac * p["beta"] * lag * (p["Bacmax"] - bac) / p["Bacmax"],
                     -bac * glu * p["ksyn"] + feed,
                     bac * glu * p["ksyn"] - cglu ** 2 * p["kdim"],
                     cglu ** 2 * p["kdim"] - ind * p["kdegi"]])


def reference(p) -> np.ndarray:
    """y at TIMES (n_t, 4) by SciPy's Radau, solved piece by piece between the switches."""
    ys = np.zeros((TIMES.size, 4))
    y = np.array(Y0)
    cuts = sorted({0.0, min(max(p["tau"], 0.0), T_END), 60.0, T_END})
    for a, b in zip(cuts[:-1], cuts[1:]):
        mid = 0.5 * (a + b)
        sol = solve_ivp(lambda t, u: beer_rhs(mid, u, p, np), (a, b), y,
                        method="Radau", rtol=1e-12, atol=1e-14, dense_output=True)
        inside = (TIMES >= a) & (TIMES <= b)
        ys[inside] = sol.sol(TIMES[inside]).T
        y = sol.y[:, -1]
    return ys


def objective(ys):
    return jnp.sum(ys[:, 3] ** 2) + jnp.sum(ys[:, 0])


def central(fn, p, name, rel=1e-5):
    h = max(rel * abs(p[name]), 1e-5) if name == "tau" else rel * abs(p[name])
    up, down = dict(p), dict(p)
    up[name] += h
    down[name] -= h
    return (fn(up) - fn(down)) / (2 * h)


@pytest.fixture(scope="module")
def plain():
    params = dict(RATES, tau=0.0015, u=0.02)
    model = sens.ODEModel("beer_lag", ["Bac", "Glu", "cGlu", "Ind"], params, beer_rhs, Y0,
                          breakpoints=["tau"])
    return sens.Problem(model, TIMES, wrt=["tau", "ksyn"], breakpoints=[60.0],
                        rtol=1e-10, atol=1e-12)


def test_plain_forward_and_adjoint_against_central_differences(plain):
    p = {k: float(v) for k, v in plain.parameters.items()}
    jac = sens.jacobian(plain, mode="forward")
    grad = sens.gradient(plain, objective, mode="adjoint")
    for i, name in enumerate(plain.input_names):
        fd_jac = central(reference, p, name)
        scale = np.abs(fd_jac).max()
        assert np.abs(np.asarray(jac.values)[:, :, i] - fd_jac).max() < 1e-4 * scale, name
        fd_grad = central(lambda q: float(objective(jnp.asarray(reference(q)))), p, name)
        assert abs(grad.grad[i] - fd_grad) < 1e-4 * abs(fd_grad), (name, grad.grad[i], fd_grad)


def test_plain_fisher_and_hvp_against_central_differences(plain):
    p = {k: float(v) for k, v in plain.parameters.items()}
    names = plain.input_names
    fd = np.stack([central(reference, p, n) for n in names], axis=-1)  # (n_t, 4, n_in)
    J = fd.reshape(-1, len(names)) * np.array([p[n] for n in names])  # log scale
    F = fisher(plain, sigma=1.0, scale="log")
    F = np.asarray(getattr(F, "matrix", F))
    np.testing.assert_allclose(F, J.T @ J, rtol=1e-3, atol=1e-6 * np.abs(J.T @ J).max())
    # H v by central differences of the adjoint gradient (itself checked above)
    x = np.array([p[n] for n in names])
    v = x * np.array([1.0, -0.5])
    hv = np.asarray(sens.hvp(plain, objective, v))
    h = 1e-5
    grads = [sens.gradient(plain.with_inputs(x + s * h * v), objective, mode="adjoint").grad for s in (1, -1)]
    hv_fd = (grads[0] - grads[1]) / (2 * h)
    np.testing.assert_allclose(hv, hv_fd, rtol=1e-3, atol=1e-6 * np.abs(hv_fd).max())


# ------------------------------------------------------------------------------ PEtab
def _beer_petab(d: Path) -> Path:
    """The same model as SBML (lag an assignment rule `piecewise(0, time - tau < 0, 1)`), one
    condition, Bac and Ind measured; tau, ksyn and kdim estimated on log10 scale."""
    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId("beer_lag")
    c = m.createCompartment()
    c.setId("medium"), c.setSize(1.0), c.setConstant(True)
    for sid, x0 in zip(("Bac", "Glu", "cGlu", "Ind"), Y0):
        s = m.createSpecies()
        s.setId(sid), s.setCompartment("medium"), s.setInitialConcentration(x0)
        s.setHasOnlySubstanceUnits(False), s.setBoundaryCondition(False), s.setConstant(False)
    for pid, v in {**RATES, "tau": 1.0}.items():
        p = m.createParameter()
        p.setId(pid), p.setValue(v), p.setConstant(True)
    lag = m.createParameter()
    lag.setId("lag"), lag.setValue(0.0), lag.setConstant(False)
    rule = m.createAssignmentRule()
    rule.setVariable("lag"), rule.setMath(libsbml.parseL3Formula("piecewise(0, time - tau < 0, 1)"))
    laws = {"Bac": "medium * Bac * beta * lag * (Bacmax - Bac) / Bacmax",
            "Glu": "medium * -Bac * Glu * ksyn",
            "cGlu": "medium * (Bac * Glu * ksyn - cGlu^2 * kdim)",
            "Ind": "medium * (cGlu^2 * kdim - Ind * kdegi)"}
    for sid, law in laws.items():
        r = m.createReaction()
        r.setId(f"make_{sid}"), r.setReversible(False), r.setFast(False)
        prod = r.createProduct()
        prod.setSpecies(sid), prod.setStoichiometry(1), prod.setConstant(True)
        for other in ("Bac", "Glu", "cGlu", "Ind"):
            if other != sid and other in law:
                r.createModifier().setSpecies(other)
        r.createKineticLaw().setMath(libsbml.parseL3Formula(law))
    libsbml.writeSBMLToFile(doc, str(d / "model.xml"))
    (d / "conditions.tsv").write_text("conditionId\ttau\nc1\ttau_c1\n")
    (d / "observables.tsv").write_text("observableId\tobservableFormula\tnoiseFormula\n"
                                       "obs_bac\tBac\t0.01\nobs_ind\tInd\t0.002\n")
    ref = reference(dict(RATES, tau=2.0, u=0.0))
    rows = ["observableId\tsimulationConditionId\ttime\tmeasurement"]
    for k, t in enumerate(TIMES[1:], start=1):
        rows += [f"obs_bac\tc1\t{t}\t{ref[k, 0] * 1.02}", f"obs_ind\tc1\t{t}\t{ref[k, 3] * 0.97}"]
    (d / "measurements.tsv").write_text("\n".join(rows) + "\n")
    (d / "parameters.tsv").write_text(
        "parameterId\tparameterScale\tlowerBound\tupperBound\tnominalValue\testimate\n"
        "tau_c1\tlog10\t1e-5\t1e5\t0.0015\t1\n"
        f"ksyn\tlog10\t1e-5\t1e5\t{RATES['ksyn']}\t1\nkdim\tlog10\t1e-5\t1e5\t{RATES['kdim']}\t1\n")
    (d / "problem.yaml").write_text(
        "format_version: 1\nparameter_file: parameters.tsv\nproblems:\n"
        "- condition_files: [conditions.tsv]\n  measurement_files: [measurements.tsv]\n"
        "  observable_files: [observables.tsv]\n  sbml_files: [model.xml]\n")
    return d / "problem.yaml"


@pytest.fixture(scope="module")
def petab_path(tmp_path_factory):
    return _beer_petab(tmp_path_factory.mktemp("beer_lag"))


@pytest.mark.parametrize("solver", ["rodas5p", "kvaerno5"])
def test_petab_switching_time_gradients_and_fisher(petab_path, solver):
    prob = sens.petab.load(petab_path, solver=solver, rtol=1e-10, atol=1e-10)
    for tau in (math.log10(0.0015), math.log10(7.0)):
        x = np.array([tau, math.log10(RATES["ksyn"]), math.log10(RATES["kdim"])])
        fwd = prob.gradient(x, mode="forward").grad
        adj = prob.gradient(x, mode="adjoint").grad
        h = 1e-5
        fd = np.array([(prob.nllh(x + h * e) - prob.nllh(x - h * e)) / (2 * h) for e in np.eye(3)])
        np.testing.assert_allclose(fwd, fd, rtol=1e-4, atol=1e-6 * np.abs(fd).max())
        np.testing.assert_allclose(adj, fwd, rtol=1e-6, atol=1e-9 * np.abs(fd).max())
        # the Fisher information from the simulated observables' central differences
        sim = lambda z: prob.simulate(z)["simulation"].to_numpy()  # noqa: E731
        sigma = np.where(prob.simulate(x)["observableId"].to_numpy() == "obs_bac", 0.01, 0.002)
        S = np.stack([(sim(x + h * e) - sim(x - h * e)) / (2 * h) for e in np.eye(3)], axis=1) / sigma[:, None]
        F = prob.fisher(x)
        np.testing.assert_allclose(F, S.T @ S, rtol=1e-3, atol=1e-6 * np.abs(S.T @ S).max())


# ------------------------------------------------------- a switching time that is an expression
def test_sbml_switching_time_expression_in_a_plain_problem(tmp_path, switch_sbml):
    """The solve is cut at 2 t_on + 1/2 (a SwitchTime), so d/d t_on has the moving jump;
    no DiscontinuityWarning. Closed form: A = 2 exp(-k (t - s)) after s = 2 t_on + 1/2."""
    import warnings
    model = sens.sbml.read(switch_sbml(tmp_path / "sw.xml", "2 * t_on + 0.5")).ode_model()
    assert [type(b).__name__ for b in model.breakpoints] == ["SwitchTime"]
    ts = np.array([0.0, 1.0, 2.0, 3.0, 3.7, 5.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error", sens.DiscontinuityWarning)
        prob = sens.Problem(model, ts, wrt=["k", "t_on"], rtol=1e-10, atol=1e-10)
    k, s = 0.8, 2.5
    a = np.where(ts < s, 2.0, 2.0 * np.exp(-k * (ts - s)))
    da = np.stack([np.where(ts < s, 0.0, -(ts - s) * a), np.where(ts < s, 0.0, 2.0 * k * a)], axis=1)
    jac = np.asarray(sens.jacobian(prob, mode="forward").values)[:, 0, :]
    np.testing.assert_allclose(jac, da, atol=1e-7)
    grad = sens.gradient(prob, lambda ys: jnp.sum(ys ** 2), mode="adjoint").grad
    np.testing.assert_allclose(grad, 2 * a @ da, rtol=1e-7)


def test_switch_time_names_its_bad_parameter():
    bad = sens.SwitchTime("2*t_of", lambda p: 2 * p["t_of"], ("t_of",))
    with pytest.raises(sens.ModelError, match="t_of"):
        sens.ODEModel("m", ["A"], {"k": 1.0, "t_on": 1.0}, lambda t, y, p: -p["k"] * y, [1.0], breakpoints=[bad])
