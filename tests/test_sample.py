"""NUTS on exact gradients against a known posterior: a model linear in its parameters
(y = c + a t + b t^2 / 2) with Gaussian noise and a flat prior has the Gaussian posterior
N(beta, (X^T W X)^-1) of weighted least squares; the samples' mean and covariance agree
within Monte Carlo error (from ArviZ's effective sample size)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import sensitivity as sens

pytest.importorskip("blackjax")
pytest.importorskip("arviz")

T = np.linspace(0.25, 3.0, 12)
SIGMA = 0.5


def _linear(t, y, p):
    return jnp.stack([p["a"] + p["b"] * t + 0.0 * y[0]])


def test_linear_gaussian_posterior():
    model = sens.ODEModel("linear", ["y"], {"a": 1.0, "b": -0.4}, _linear, {"y": 2.0})
    prob = sens.Problem(model, np.linspace(0, 3, 7), wrt=["a", "b", "y0.y"], rtol=1e-11, atol=1e-11)
    rng = np.random.default_rng(4)
    X = np.column_stack([T, T ** 2 / 2, np.ones_like(T)])
    y = X @ np.array([1.0, -0.4, 2.0]) + SIGMA * rng.standard_normal(T.size)
    data = pd.DataFrame({"time": T, "output": "y", "value": y})
    W = np.eye(T.size) / SIGMA ** 2
    cov = np.linalg.inv(X.T @ W @ X)
    beta = cov @ X.T @ W @ y
    fit = sens.fit(prob, data, sigma=SIGMA, log_params=False, method="least_squares")
    res = sens.sample(fit, n=300, chains=2, warmup=200, seed=1)
    assert res.samples.shape == (2, 300, 3) and res.divergent.sum() == 0
    assert np.all(res.rhat < 1.05) and np.all(res.ess_bulk > 150)
    sd = np.sqrt(np.diag(cov))
    # the mean within 4 Monte Carlo standard errors sd / sqrt(ESS)
    assert np.all(np.abs(res.mean - beta) < 4 * sd / np.sqrt(res.ess_bulk)), (res.mean - beta) / sd
    # the covariance: variances within 4 x sqrt(2 / ESS) relative, correlations within 4 / sqrt(ESS)
    rel = np.diag(res.covariance) / np.diag(cov) - 1
    assert np.all(np.abs(rel) < 4 * np.sqrt(2 / res.ess_bulk)), rel
    corr = res.covariance / np.outer(np.sqrt(np.diag(res.covariance)), np.sqrt(np.diag(res.covariance)))
    np.testing.assert_allclose(corr, cov / np.outer(sd, sd), atol=4 / np.sqrt(res.ess_bulk.min()))
    # the log posterior is -nllh: its maximum at beta, values at the samples equal to the closed form
    flat = res.samples.reshape(-1, 3)[:50]
    chi = ((flat @ X.T - y) / SIGMA) ** 2
    np.testing.assert_allclose(res.log_posterior.reshape(-1)[:50], -0.5 * chi.sum(axis=1), rtol=1e-8, atol=1e-8)
    assert list(res.to_frame().index) == ["a", "b", "y0.y"]


def test_bounded_parameters_stay_within_bounds():
    """A bounded parameter is sampled through the sigmoid map: no draw leaves its bounds and
    a flat likelihood gives a flat posterior on the bounded interval."""
    model = sens.ODEModel("flat", ["y"], {"a": 1.0}, lambda t, y, p: jnp.stack([0.0 * p["a"] + 0.0 * y[0]]),
                          {"y": 1.0})
    prob = sens.Problem(model, np.linspace(0, 1, 3), wrt=["a", "y0.y"], rtol=1e-10, atol=1e-10)
    data = pd.DataFrame({"time": [0.5, 1.0], "output": "y", "value": [1.0, 1.1]})
    res = sens.sample(prob, data, sigma=0.1, log_params=False, bounds={"a": (0.0, 2.0)}, n=200, chains=2,
                      warmup=150)
    a = res.samples[:, :, 0].reshape(-1)
    assert a.min() > 0 and a.max() < 2
    # uniform on (0, 2): mean 1, sd 2 / sqrt(12), within Monte Carlo error
    assert abs(a.mean() - 1.0) < 4 * (2 / np.sqrt(12)) / np.sqrt(res.ess_bulk[0])
