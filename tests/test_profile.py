"""Profile likelihoods against known answers.

A model linear in its parameters (y = c + a t + b t^2 / 2, from dy/dt = a + b t, y(0) = c)
with Gaussian noise has an exactly quadratic profile: the interval is the weighted least-
squares estimate +- sqrt(chi2.ppf(level, 1)) times the standard error from the exact
covariance (X^T W X)^-1, computed here in closed form. Both methods, to 1e-3 standard
errors. A model that sees a and b only as their product (y = a b t) has flat profiles.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2

import sensitivity as sens

T = np.linspace(0.25, 3.0, 12)
SIGMA = 0.5
TRUE = {"a": 1.0, "b": -0.4, "y0.y": 2.0}


def _linear(t, y, p):
    return jnp.stack([p["a"] + p["b"] * t + 0.0 * y[0]])


def _product(t, y, p):
    return jnp.stack([p["a"] * p["b"] + 0.0 * y[0]])


@pytest.fixture(scope="module")
def linear():
    model = sens.ODEModel("linear", ["y"], {"a": 1.0, "b": -0.4}, _linear, {"y": 2.0})
    prob = sens.Problem(model, np.linspace(0, 3, 7), wrt=["a", "b", "y0.y"], rtol=1e-11, atol=1e-11)
    rng = np.random.default_rng(4)
    X = np.column_stack([T, T ** 2 / 2, np.ones_like(T)])
    y = X @ np.array([TRUE["a"], TRUE["b"], TRUE["y0.y"]]) + SIGMA * rng.standard_normal(T.size)
    data = pd.DataFrame({"time": T, "output": "y", "value": y})
    # the closed form: weighted least squares
    W = np.eye(T.size) / SIGMA ** 2
    cov = np.linalg.inv(X.T @ W @ X)
    beta = cov @ X.T @ W @ y
    fit = sens.fit(prob, data, sigma=SIGMA, log_params=False, method="least_squares")
    return prob, data, fit, beta, np.sqrt(np.diag(cov))


@pytest.mark.parametrize("method", ["optimization", "integration"])
def test_linear_gaussian_intervals_are_exact(linear, method):
    _, _, fit, beta, se = linear
    np.testing.assert_allclose(fit.x, beta, atol=1e-8)
    res = sens.profile(fit, level=0.95, method=method)
    z = np.sqrt(chi2.ppf(0.95, 1))
    assert res.threshold == pytest.approx(chi2.ppf(0.95, 1) / 2)
    for k, (name, b, s) in enumerate(zip(fit.input_names, beta, se)):
        lo, hi = res.intervals[name]
        assert lo == pytest.approx(b - z * s, abs=1e-3 * s)
        assert hi == pytest.approx(b + z * s, abs=1e-3 * s)
        p = res.profiles[name]
        assert p["verdict"] == "identifiable"
        # the profile is the quadratic (c - b)^2 / (2 s^2) at every point of the path
        np.testing.assert_allclose(p["delta"], (p["grid"] - b) ** 2 / (2 * s ** 2), atol=1e-6)
    assert res.to_frame().loc["a", "verdict"] == "identifiable"


def test_profile_of_a_problem_with_data_and_plot(linear, tmp_path):
    prob, data, _, beta, se = linear
    res = sens.profile(prob, data, sigma=SIGMA, log_params=False, parameters=["b"], level=0.68)
    z = np.sqrt(chi2.ppf(0.68, 1))
    lo, hi = res.intervals["b"]
    assert (lo, hi) == (pytest.approx(beta[1] - z * se[1], abs=1e-3 * se[1]),
                        pytest.approx(beta[1] + z * se[1], abs=1e-3 * se[1]))
    assert list(res.profiles) == ["b"]
    res.plot(tmp_path / "profiles.png")
    assert (tmp_path / "profiles.png").stat().st_size > 0
    path = res.path("b")
    assert list(path.columns) == ["delta_nllh", "a", "b", "y0.y"] and path["b"].is_monotonic_increasing


@pytest.mark.parametrize("method", ["optimization", "integration"])
def test_product_only_is_flat(method):
    model = sens.ODEModel("product", ["y"], {"a": 2.0, "b": 0.5}, _product, {"y": 0.0})
    prob = sens.Problem(model, np.linspace(0, 2, 5), wrt=["a", "b"], rtol=1e-10, atol=1e-10)
    t = np.linspace(0.5, 2.0, 4)
    data = pd.DataFrame({"time": t, "output": "y", "value": 1.0 * t + np.array([0.05, -0.03, 0.02, -0.04])})
    res = sens.profile(prob, data, sigma=0.1, method=method, max_distance=3.0)
    for name in ("a", "b"):
        p = res.profiles[name]
        assert p["verdict"] == "structurally non-identifiable (flat)", (name, p["verdict"], p["delta"].max())
        assert p["interval"] == (-np.inf, np.inf)
        # along the path the product a b stays at its estimate
        ab = np.exp(p["path"][:, 0] + p["path"][:, 1])
        np.testing.assert_allclose(ab, ab[0], rtol=1e-4)
        assert np.ptp(p["grid"]) == pytest.approx(6.0, rel=1e-6)


def test_bad_input(linear):
    _, _, fit, _, _ = linear
    with pytest.raises(sens.InputError, match="'c' is not an estimated parameter"):
        sens.profile(fit, parameters=["c"])
    with pytest.raises(sens.InputError, match="method = 'newton' is unknown"):
        sens.profile(fit, method="newton")


class _Failing:
    """A likelihood whose solves fail (SolverError) on a band of b and whose curvature fails
    beyond a point, as an ODE solve fails at some trial points along a real profile."""

    def __init__(self, lik, band, no_hessian):
        self.lik, self.band, self.no_hessian, self.failures = lik, band, no_hessian, 0

    def __getattr__(self, name):
        return getattr(self.lik, name)

    def _check(self, x):
        if self.band[0] < x[1] < self.band[1]:
            self.failures += 1
            raise sens.SolverError("the solve failed at this trial point")

    def value_and_grad(self, x):
        self._check(x)
        return self.lik.value_and_grad(x)

    def hessian(self, x):
        self._check(x)
        if x[1] > self.no_hessian:
            self.failures += 1
            raise sens.SolverError("the curvature failed at this trial point")
        return self.lik.hessian(x)


@pytest.mark.parametrize("method", ["optimization", "integration"])
def test_failed_solves_along_the_path_are_recovered(linear, method):
    from sensitivity.analyses.likelihood import LikelihoodFit

    _, _, fit, beta, se = linear
    lik = _Failing(fit.likelihood, (beta[1] + 0.6 * se[1], beta[1] + 0.7 * se[1]), beta[1] + 0.3 * se[1])
    x = np.asarray(fit.likelihood.x0, dtype=np.float64)
    lf = LikelihoodFit(tuple(lik.names), tuple(lik.scales), x, lik.value(x), lik.lower, lik.upper, None, True, lik)
    res = sens.profile(lf, parameters=["b"], level=0.95, method=method)
    z = np.sqrt(chi2.ppf(0.95, 1))
    lo, hi = res.intervals["b"]
    assert lik.failures > 0
    assert (lo, hi) == (pytest.approx(beta[1] - z * se[1], abs=1e-3 * se[1]),
                        pytest.approx(beta[1] + z * se[1], abs=1e-3 * se[1]))
    assert res.profiles["b"]["verdict"] == "identifiable"
