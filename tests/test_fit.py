"""sens.fit on simulated logistic-growth data: recovery of the true inputs from a 3x-off
start, standard errors against the Fisher information and against the scatter of repeated
fits to fresh noise, both optimisers, data formats, bounds, multi-start and bad input."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import sensitivity as sens
from sensitivity.analyses.fit import fit, read_data, union_times

SIGMA = 0.1
T_DATA = np.linspace(0.3, 9.7, 15)  # between the grid's points: merged into the save times
OFF = {"r": 0.8 * 3, "K": 10.0 / 3, "y0.N": 0.5 * 3}


def _rhs(t, y, p):
    return jnp.stack([p["r"] * y[0] * (1 - y[0] / p["K"])])


@pytest.fixture(scope="module")
def problem():
    model = sens.ODEModel("logistic", ["N"], {"r": 0.8, "K": 10.0}, _rhs, {"N": 0.5})
    return sens.Problem(model, np.linspace(0, 10, 21), wrt=["r", "K", "y0.N"], rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def clean(problem):
    """Exact model values at the data times (the merged grid, so the fit reuses the compile)."""
    merged = problem.replace(times=union_times(problem.times, T_DATA), t0=problem.t0)
    y = sens.simulate(merged).outputs[:, 0]
    return pd.DataFrame({"time": T_DATA, "output": "N", "value": np.interp(T_DATA, merged.times, y)})


def _noisy(clean, seed):
    rng = np.random.default_rng(seed)
    return clean.assign(value=clean["value"] + SIGMA * rng.standard_normal(len(clean)))


@pytest.fixture(scope="module")
def noisy_fit(problem, clean):
    return fit(problem, _noisy(clean, 0), sigma=SIGMA, start=OFF, method="least_squares")


def test_recovers_true_inputs_without_noise(problem, clean):
    res = fit(problem, clean, sigma=SIGMA, start=OFF)
    assert res.method == "least_squares" and "least_squares" in res.notes[0]  # auto: 3 inputs
    assert res.success
    np.testing.assert_allclose(res.x, problem.x0(), rtol=1e-6)
    assert res.cost < 1e-10
    assert res.iterations > 3 and res.evaluations["jacobian"] >= res.iterations
    assert res.evaluations["solver_steps"] > res.evaluations["simulate"] + res.evaluations["jacobian"]
    assert res.path["cost"].iloc[0] > 1e3 * res.path["cost"].iloc[-1]
    np.testing.assert_allclose(res.start, [OFF["r"], OFF["K"], OFF["y0.N"]])


def test_noisy_fit_standard_errors_are_the_fishers(problem, noisy_fit):
    res = noisy_fit
    assert res.success
    # the estimate lies within 4 standard errors of the truth
    assert np.all(np.abs(res.x - problem.x0()) < 4 * res.standard_error)
    # independent: Fisher information on the data times only, linear scale, at the estimate
    at_data = problem.replace(times=T_DATA, t0=0.0).with_inputs(res.x)
    F = sens.fisher(at_data, sigma=SIGMA, scale="linear").matrix
    np.testing.assert_allclose(res.standard_error, np.sqrt(np.diag(np.linalg.inv(F))), rtol=1e-6)
    np.testing.assert_allclose(res.standard_error_log, res.standard_error / res.x, rtol=1e-12)
    # the residuals are the weighted misfits at the data; NLL = cost + sum ln sigma + n/2 ln 2 pi
    assert res.cost == pytest.approx(0.5 * np.sum(res.residuals ** 2))
    n = len(res.residuals)
    assert res.nll == pytest.approx(res.cost + n * np.log(SIGMA) + 0.5 * n * np.log(2 * np.pi))


def test_standard_errors_match_the_scatter_of_repeated_fits(problem, clean, noisy_fit):
    """Fits to 30 fresh noise draws scatter with about the Fisher standard errors."""
    estimates = np.array([fit(problem, _noisy(clean, seed), sigma=SIGMA, start=problem.x0(),
                              method="least_squares").x for seed in range(1, 31)])
    ratio = estimates.std(axis=0, ddof=1) / noisy_fit.standard_error
    # the sample sd of 30 draws is within ~+-35 % of the true sd with probability > 0.99
    assert np.all((ratio > 0.6) & (ratio < 1.45)), ratio


def test_trust_ncg_agrees_with_least_squares(problem, clean, noisy_fit):
    res = fit(problem, _noisy(clean, 0), sigma=SIGMA, start=problem.x0() * 1.3, method="trust-ncg")
    assert res.method == "trust-ncg" and res.success
    assert res.evaluations["hvp"] > 0 and res.evaluations["gradient"] > 0
    np.testing.assert_allclose(res.x, noisy_fit.x, rtol=1e-4)
    assert res.cost == pytest.approx(noisy_fit.cost, rel=1e-7)


def test_unknown_sigma_is_estimated_from_the_residuals(problem, clean, noisy_fit):
    res = fit(problem, _noisy(clean, 0), sigma=None, start=problem.x0())
    s = res.sigma_estimated
    assert s == pytest.approx(np.sqrt(2 * noisy_fit.cost * SIGMA ** 2 / (15 - 3)), rel=1e-6)
    np.testing.assert_allclose(res.x, noisy_fit.x, rtol=1e-6)
    np.testing.assert_allclose(res.standard_error, noisy_fit.standard_error * s / SIGMA, rtol=1e-5)


def test_bounds_and_multistart(problem, clean):
    with pytest.warns(sens.FitWarning, match="far beyond the noise"):
        res = fit(problem, clean, sigma=SIGMA, start=problem.x0() * [1, 0.5, 1], bounds={"K": (1.0, 8.0)})
    assert res.x[1] == pytest.approx(8.0, rel=1e-6)  # the bound is active
    assert res.cost > 1.0
    assert res.optimizer_success and not res.success  # the optimum within the bounds misses the data
    # from a poor start, 3 local fits from the best of 24 Sobol points screened by sens.ensemble
    ranges = {"r": (0.1, 3.0), "K": (2.0, 40.0)}
    multi = fit(problem, clean, sigma=SIGMA, start={"r": 5.0, "K": 1.0, "y0.N": 5.0}, starts=3, screen=24,
                ranges=ranges)
    assert len(multi.starts) == 4 and multi.starts["cost"].min() == pytest.approx(multi.cost)
    np.testing.assert_allclose(multi.x, problem.x0(), rtol=1e-5)
    assert "sens.ensemble" in multi.notes[-1] and "24 Sobol points" in multi.notes[-1]
    # without screening: the Sobol points themselves, one local fit each
    plain = fit(problem, clean, sigma=SIGMA, start=problem.x0() * 1.2, starts=2, screen=0, ranges=ranges)
    assert len(plain.starts) == 3 and "one after another" in plain.notes[-1]


def test_screening_costs_match_single_solves(problem, clean):
    """The vmapped ensemble's costs equal those of one simulate per point."""
    from sensitivity.analyses.fit import _sample_starts, _screen

    merged = problem.replace(times=union_times(problem.times, T_DATA), t0=problem.t0)
    X = _sample_starts(merged, {"r": (0.2, 2.0), "K": (5.0, 20.0), "y0.N": (0.1, 1.0)}, 24, True, 3)
    rows = np.searchsorted(merged.times, T_DATA)
    cols = np.zeros(15, dtype=int)
    w = np.full(15, 1 / SIGMA)
    target = clean["value"].to_numpy()
    got = _screen(merged, X, rows, cols, target, w)
    for x, c in zip(X[:6], got[:6]):
        y = sens.simulate(merged.with_inputs(x)).outputs[rows, 0]
        assert c == pytest.approx(0.5 * np.sum(((y - target) * w) ** 2), rel=1e-9)


def test_data_formats_are_equivalent(clean, tmp_path):
    long = read_data(clean, ["N"])
    wide = read_data(pd.DataFrame({"time": T_DATA, "N": clean["value"]}), ["N"])
    arrays = read_data({"time": T_DATA, "output": ["N"] * 15, "value": clean["value"].to_numpy()}, ["N"])
    path = tmp_path / "obs.csv"
    pd.DataFrame({"time": T_DATA, "N": clean["value"]}).to_csv(path, index=False)
    for other in (wide, arrays, read_data(path, ["N"])):
        pd.testing.assert_frame_equal(long, other, check_dtype=False)


def test_result_outputs(noisy_fit, tmp_path):
    frame = noisy_fit.to_frame()
    assert list(frame.index) == ["r", "K", "y0.N"] and (frame["standard_error"] > 0).all()
    ds = noisy_fit.to_xarray()
    assert ds["fitted_outputs"].dims == ("time", "output") and ds.sizes["observation"] == 15
    assert abs(float(ds["correlation"].sel(input="r", input_2="r")) - 1) < 1e-12
    noisy_fit.plot(tmp_path / "fit.png")
    assert (tmp_path / "fit.png").stat().st_size > 10_000
    assert "r =" in noisy_fit.summary()


def test_bad_input_raises_input_errors(problem, clean):
    with pytest.raises(sens.InputError, match="output 'M'"):
        fit(problem, clean.assign(output="M"))
    with pytest.raises(sens.InputError, match="log_params"):
        fit(problem, clean, start={"r": -1.0})
    with pytest.raises(sens.InputError, match="outside bounds"):
        fit(problem, clean, bounds={"K": (20.0, 30.0)})
    with pytest.raises(sens.InputError, match="method"):
        fit(problem, clean, method="newton")
    with pytest.raises(sens.InputError, match="ranges"):
        fit(problem, clean, starts=3)
    with pytest.raises(sens.InputError, match="before the problem's start"):
        fit(problem, clean.assign(time=clean["time"] - 1.0))


def test_linear_parameters(problem, clean, noisy_fit):
    """log_params=False fits p itself: same optimum, same (natural-scale) standard errors."""
    res = fit(problem, _noisy(clean, 0), sigma=SIGMA, start=problem.x0() * [1.5, 0.7, 1.3], log_params=False)
    assert res.success and res.fisher.scale == "linear"
    np.testing.assert_allclose(res.x, noisy_fit.x, rtol=1e-6)
    np.testing.assert_allclose(res.standard_error, noisy_fit.standard_error, rtol=1e-5)


def test_auto_takes_trust_ncg_when_the_jacobian_is_dear():
    """400 inputs, 200 save times: a Jacobian costs far more than a gradient (cost model
    only, nothing is compiled)."""
    from sensitivity.analyses.fit import _choose_method, _Evaluator

    def rhs(t, y, p):
        return jnp.tanh(p["W"] @ y) - y

    model = sens.ODEModel("wide", 20, {"W": np.zeros((20, 20))}, rhs, np.ones(20))
    p = sens.Problem(model, np.linspace(0.1, 1, 200), wrt=["W"], of=["u[0]"])
    ev = _Evaluator(p, np.arange(3), np.zeros(3, dtype=int), np.zeros(3), np.ones(3), True, "auto")
    method, why = _choose_method(p, "auto", ev)
    assert method == "trust-ncg" and "gradients" in why


def test_replicates_add_information(problem, clean, noisy_fit):
    """Every datum twice (replicates at the same times): the same estimate, standard errors
    smaller by sqrt(2)."""
    twice = pd.concat([_noisy(clean, 0)] * 2, ignore_index=True)
    res = fit(problem, twice, sigma=SIGMA, start=noisy_fit.x)
    np.testing.assert_allclose(res.x, noisy_fit.x, rtol=1e-6)
    np.testing.assert_allclose(res.standard_error, noisy_fit.standard_error / np.sqrt(2), rtol=1e-5)
    assert res.fisher.n_observations == 15  # distinct (time, output) points, each weighted twice


# --------------------------------------------------------------------------- how good a fit is
def _lv_rhs(t, y, p):
    x, z = y[0], y[1]
    return jnp.stack([p["alpha"] * x - p["beta"] * x * z, p["delta"] * x * z - p["gamma"] * z])


LV_TRUE = {"alpha": 1.0, "beta": 0.1, "gamma": 1.5, "delta": 0.75}


@pytest.fixture(scope="module")
def lotka_volterra():
    """Noise-free predator-prey data, 30 times x 2 outputs = 60 values, sigma 0.5."""
    model = sens.ODEModel("lotka_volterra", ["prey", "predator"], LV_TRUE, _lv_rhs, {"prey": 10.0, "predator": 5.0})
    prob = sens.Problem(model, np.linspace(0, 15, 30), wrt=list(LV_TRUE), rtol=1e-8, atol=1e-8)
    out = sens.simulate(prob).outputs
    data = pd.DataFrame({"time": np.repeat(prob.times, 2), "output": ["prey", "predator"] * 30,
                         "value": out.reshape(-1)})
    return prob, data


def test_a_local_minimum_is_not_a_success(lotka_volterra):
    """From a start 2x off, least squares stops at a local minimum with its own ftol
    criterion met; chi2/dof against sigma says it is no fit."""
    prob, data = lotka_volterra
    with pytest.warns(sens.FitWarning, match=r"chi2/dof = .*far beyond the noise.*local minimum\? try starts=10"):
        res = fit(prob, data, sigma=0.5, start=prob.x0() * 2)
    assert res.optimizer_success and not res.success and not res.converged
    assert res.dof == 60 - 4 and res.cost > 100
    # independent: chi2 from a fresh simulation at the estimate
    y = sens.simulate(prob.with_inputs(res.x)).outputs.reshape(-1)
    chi2 = float(np.sum(((y - data["value"].to_numpy()) / 0.5) ** 2))
    assert res.chi2 == pytest.approx(chi2, rel=1e-6) and res.chi2_dof == pytest.approx(chi2 / 56, rel=1e-6)
    assert res.chi2_dof > 100 and res.p_value < 1e-100
    assert "NOT a fit" in res.summary() and "far beyond the noise" in res.summary()


def test_multistart_finds_the_fit_and_says_so(lotka_volterra):
    prob, data = lotka_volterra
    ranges = {k: (v / 3, v * 3) for k, v in LV_TRUE.items()}
    res = fit(prob, data, sigma=0.5, start=prob.x0() * 2, starts=3, ranges=ranges)
    np.testing.assert_allclose(res.x, prob.x0(), rtol=1e-5)
    assert res.success and res.optimizer_success and res.chi2_dof < 1e-6
    assert "about the size of the noise" in res.summary() and "converged" in res.summary()


def test_sigma_estimated_is_not_judged(problem, clean):
    res = fit(problem, _noisy(clean, 3), sigma=None, start=problem.x0())
    assert res.success and np.isnan(res.p_value) and "by construction" in res.quality
