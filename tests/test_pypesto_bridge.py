"""`PetabProblem.to_pypesto()`: pyPESTO's problem with our objective, against independent
answers. On Boehm_JProteomeRes2014 (../shared/petab; skipped when absent or without pyPESTO):
pyPESTO's objective equals the problem's nllh, gradient and Fisher information; its gradient
equals central differences of its own values (tight tolerances, where they are accurate);
pyPESTO's bounds, scales and fixed parameters are the PEtab table's. Priors (Schwen): pyPESTO's
prior equals the problem's own. The exports: a quadratic profile read by pyPESTO's own
interval routine gives the closed-form interval; draws of a known Gaussian come back through
pyPESTO's sample result and ArviZ unchanged. (The comparison with pyPESTO's AMICI objective
needs an AMICI build of the model: benchmarks/profiles.py prints it.)
"""

from __future__ import annotations

import copy
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2

from sensitivity.analyses import pypesto_bridge as bridge
from sensitivity.analyses.profile import ProfileResult
from sensitivity.analyses.sample import SampleResult
from sensitivity.core.errors import InputError

PETAB = Path(__file__).resolve().parents[1].parent / "shared" / "petab"
pytestmark = pytest.mark.skipif(importlib.util.find_spec("pypesto") is None,
                                reason='needs pyPESTO (pip install -e ".[pypesto]")')
needs_data = pytest.mark.skipif(not (PETAB / "Boehm_JProteomeRes2014").is_dir(), reason="needs ../shared/petab")


def _load(name, **options):
    from sensitivity.importers import petab
    return petab.load(PETAB / name / f"{name}.yaml", **options)


@pytest.fixture(scope="module")
def boehm():
    prob = _load("Boehm_JProteomeRes2014")
    return prob, prob.to_pypesto()


@needs_data
def test_problem_is_the_petab_tables(boehm):
    prob, pp = boehm
    P = prob.petab
    assert pp.x_names == list(P.x_ids)
    assert [pp.x_names[i] for i in pp.x_free_indices] == list(prob.x_names)
    np.testing.assert_array_equal(pp.lb, prob.lower)
    np.testing.assert_array_equal(pp.ub, prob.upper)
    assert [pp.x_scales[i] for i in pp.x_free_indices] == list(prob.scales)
    np.testing.assert_array_equal(pp.x_fixed_vals, np.asarray(P.x_nominal_fixed_scaled))
    assert pp.objective.has_grad and pp.objective.has_hess and not pp.objective.has_res


@needs_data
def test_value_gradient_and_hessian_are_ours(boehm):
    prob, pp = boehm
    rng = np.random.default_rng(0)
    for x in (prob.x_nominal, prob.x_nominal + 0.05 * rng.standard_normal(len(prob.x_names))):
        f, g, H = pp.objective(x, sensi_orders=(0, 1, 2))
        ref = prob.gradient(x)
        assert f == ref.value == pp.objective(x)
        np.testing.assert_array_equal(g, ref.grad)
        np.testing.assert_array_equal(H, prob.fisher(x))


@needs_data
def test_gradient_matches_central_differences_of_its_values(boehm):
    tight = _load("Boehm_JProteomeRes2014", rtol=1e-11, atol=1e-11)
    obj = tight.to_pypesto().objective
    x, h = tight.x_nominal, 1e-5
    g = obj(x, sensi_orders=(1,))
    fd = np.array([(obj(x + h * e) - obj(x - h * e)) / (2 * h) for e in np.eye(x.size)])
    assert np.linalg.norm(fd - g) < 1e-4 * np.linalg.norm(g)


@needs_data
def test_fixing_in_pypesto_and_a_petab_fixed_parameter(boehm):
    prob, pp = boehm
    # fixing one more parameter, as pyPESTO's profiler does: the others' gradient is ours
    q = copy.deepcopy(pp)
    i = pp.x_names.index(prob.x_names[0])
    q.fix_parameters(i, prob.x_nominal[0])
    g = q.objective(prob.x_nominal[1:], sensi_orders=(1,))
    np.testing.assert_array_equal(g, prob.gradient().grad[1:])
    # a parameter the PEtab table fixes cannot be freed
    q = copy.deepcopy(pp)
    j = pp.x_fixed_indices[0]
    q.unfix_parameters(list(pp.x_fixed_indices))  # the full vector
    x = np.array([prob.x_nominal[list(prob.x_names).index(k)] if k in prob.x_names
                  else dict(zip(prob.petab.x_ids, prob.petab.x_nominal_scaled))[k] for k in pp.x_names])
    x[j] += 0.5
    with pytest.raises(InputError, match=pp.x_names[j]):
        q.objective(x)


@needs_data
def test_pickles_and_copies(boehm):
    prob, pp = boehm
    v = prob.nllh()
    assert pickle.loads(pickle.dumps(pp)).objective(prob.x_nominal) == v
    assert copy.deepcopy(pp).objective(prob.x_nominal) == v


@pytest.mark.skipif(not (PETAB / "Schwen_PONE2014").is_dir(), reason="needs ../shared/petab")
def test_priors_are_the_problems_own():
    prob = _load("Schwen_PONE2014")
    assert prob.priors
    pp = prob.to_pypesto()
    rng = np.random.default_rng(1)
    x = np.clip(prob.x_nominal + 0.1 * rng.standard_normal(len(prob.x_names)), prob.lower, prob.upper)
    v, g = prob.prior(x)
    pv, pg = pp.x_priors(x, sensi_orders=(0, 1))
    assert pv == pytest.approx(v, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(pg, g, rtol=1e-12, atol=1e-12)
    assert prob.to_pypesto(priors=False).x_priors is None


def _quadratic_profile(se=0.3, x_hat=1.2, level=0.95):
    """A ProfileResult of nllh = (x - x_hat)^2 / (2 se^2) in one parameter (and a second
    parameter b = 2 x along the path), on a fine grid."""
    thr = chi2.ppf(level, 1) / 2
    grid = x_hat + np.linspace(-3, 3, 601) * se
    delta = (grid - x_hat) ** 2 / (2 * se ** 2)
    z = np.sqrt(2 * thr) * se
    prof = dict(grid=grid, delta=delta, path=np.column_stack([grid, 2 * grid]), interval=(x_hat - z, x_hat + z),
                sides=("closed", "closed"), verdict="identifiable")
    return ProfileResult(("a", "b"), ("lin", "lin"), np.array([x_hat, 2 * x_hat]), 5.0, level, thr,
                         "optimization", "exact", {"a": prof}), x_hat, z


def test_profile_exports():
    res, x_hat, z = _quadratic_profile()
    df = bridge.profiles_frame(res)
    assert list(df["parameter"].unique()) == ["a"] and len(df) == 601
    np.testing.assert_allclose(df["ratio"], np.exp(-df["delta_nllh"]))
    np.testing.assert_allclose(df["b"], 2 * df["value"])
    assert df.loc[df["inside"], "value"].min() >= x_hat - z - 1e-12
    # pyPESTO's own interval routine on the exported profile: the closed form to the grid's accuracy
    from pypesto.profile import calculate_approximate_ci, chi2_quantile_to_ratio

    out = bridge.to_pypesto_result(res)
    pr = out.profile_result.list[0]
    assert pr[1] is None and out.optimize_result[0].fval == 5.0
    lo, hi = calculate_approximate_ci(pr[0].x_path[0], pr[0].ratio_path, chi2_quantile_to_ratio(0.95))
    assert lo == pytest.approx(x_hat - z, abs=1e-4) and hi == pytest.approx(x_hat + z, abs=1e-4)


def test_sample_exports():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((2, 500, 2)) * np.array([1.0, 3.0]) + np.array([0.5, -1.0])
    lp = -0.5 * (((X - np.array([0.5, -1.0])) / np.array([1.0, 3.0])) ** 2).sum(-1)
    res = SampleResult(("a", "b"), ("lin", "lin"), X, lp, np.zeros((2, 500), bool), np.ones((2, 500)),
                       np.ones(2), np.ones(2), np.full(2, 1000.0), np.full(2, 1000.0))
    out = bridge.to_pypesto_result(res)
    np.testing.assert_array_equal(out.sample_result.trace_x, X)
    np.testing.assert_array_equal(out.sample_result.trace_neglogpost, -lp)
    # back through ArviZ, one pyPESTO result per chain: the same draws; iid draws have ESS ~ n
    singles = [bridge.to_pypesto_result(SampleResult(("a", "b"), ("lin", "lin"), X[c:c + 1], lp[c:c + 1],
                                                     *(np.zeros((1, 500)),) * 2, np.ones(1), np.ones(2),
                                                     np.ones(2), np.ones(2))) for c in range(2)]
    idata = bridge.pypesto_samples_to_arviz(singles, names=["a", "b"])
    np.testing.assert_array_equal(idata.posterior["b"].values, X[:, :, 1])
    import arviz as az

    ess = az.ess(idata)
    assert 600 < float(ess["a"]) < 1500
