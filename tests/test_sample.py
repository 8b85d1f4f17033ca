"""Posterior sampling against a known posterior: a model linear in its parameters
(y = c + a t + b t^2 / 2) with Gaussian noise and a flat prior has the Gaussian posterior
N(beta, (X^T W X)^-1) of weighted least squares; NUTS (the nllh traced into one vmapped
program, and on the host through a callback) and adaptive Metropolis give its mean and
covariance within Monte Carlo error (from ArviZ's effective sample size), and the
posterior predictive bands of the output are those of the Gaussian x(t)^T beta."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import sensitivity as sens
from sensitivity.analyses.likelihood import prior_function

pytest.importorskip("blackjax")
az = pytest.importorskip("arviz")

T = np.linspace(0.25, 3.0, 12)
SIGMA = 0.5
X = np.column_stack([T, T ** 2 / 2, np.ones_like(T)])


def _linear(t, y, p):
    return jnp.stack([p["a"] + p["b"] * t + 0.0 * y[0]])


@pytest.fixture(scope="module")
def case():
    model = sens.ODEModel("linear", ["y"], {"a": 1.0, "b": -0.4}, _linear, {"y": 2.0})
    prob = sens.Problem(model, np.linspace(0, 3, 7), wrt=["a", "b", "y0.y"], rtol=1e-11, atol=1e-11)
    rng = np.random.default_rng(4)
    y = X @ np.array([1.0, -0.4, 2.0]) + SIGMA * rng.standard_normal(T.size)
    data = pd.DataFrame({"time": T, "output": "y", "value": y})
    W = np.eye(T.size) / SIGMA ** 2
    cov = np.linalg.inv(X.T @ W @ X)
    beta = cov @ X.T @ W @ y
    fit = sens.fit(prob, data, sigma=SIGMA, log_params=False, method="least_squares")
    return prob, data, y, beta, cov, fit


@pytest.fixture(scope="module")
def nuts(case):
    return sens.sample(case[-1], n=300, chains=2, warmup=200, seed=1)


def _check_gaussian(res, beta, cov, k: float = 4.0):
    """The samples' mean within k Monte Carlo standard errors sd / sqrt(ESS), variances within
    k sqrt(2 / ESS) relative with the ESS of the squared deviations (the variance's own),
    correlations within k / sqrt(ESS) of the least."""
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(res.mean - beta) < k * sd / np.sqrt(res.ess_bulk)), (res.mean - beta) / sd
    sq = (res.samples - res.mean) ** 2
    ess_sq = np.array([float(az.ess(sq[:, :, i], method="mean")) for i in range(sq.shape[2])])
    rel = np.diag(res.covariance) / np.diag(cov) - 1
    assert np.all(np.abs(rel) < k * np.sqrt(2 / ess_sq)), (rel, ess_sq)
    s = np.sqrt(np.diag(res.covariance))
    np.testing.assert_allclose(res.covariance / np.outer(s, s), cov / np.outer(sd, sd),
                               atol=k / np.sqrt(min(res.ess_bulk.min(), ess_sq.min())))


def test_linear_gaussian_posterior(case, nuts):
    _, _, y, beta, cov, _ = case
    res = nuts
    assert res.backend == "jax" and res.method == "nuts"
    assert res.samples.shape == (2, 300, 3) and res.divergent.sum() == 0
    assert np.all(res.rhat < 1.05) and np.all(res.ess_bulk > 150)
    _check_gaussian(res, beta, cov)
    # warm-up from the Laplace approximation, here the posterior itself: the trees of a
    # whitened Gaussian (a few leapfrog steps) from the first step on
    assert res.evaluations.shape == (2, 500) and res.evaluations[:, :200].mean() < 8
    # the log posterior is -nllh: its values at the samples equal the closed form
    flat = res.samples.reshape(-1, 3)[:50]
    chi = ((flat @ X.T - y) / SIGMA) ** 2
    np.testing.assert_allclose(res.log_posterior.reshape(-1)[:50], -0.5 * chi.sum(axis=1), rtol=1e-8, atol=1e-8)
    assert list(res.to_frame().index) == ["a", "b", "y0.y"]


def test_traced_nllh_equals_the_host(case):
    """The traced nllh and its derivative (forward sensitivities through custom_jvp) against
    the evaluator's nllh and gradient on the host, at points off the estimate."""
    lik = case[-1].likelihood
    f = jax.jit(jax.value_and_grad(lik.nllh_function()))
    for x in (lik.x0, lik.x0 + np.array([0.3, -0.2, 0.5])):
        v, g = f(jnp.asarray(x))
        v_ref, g_ref = lik.value_and_grad(x)
        np.testing.assert_allclose(float(v), v_ref, rtol=1e-9)
        np.testing.assert_allclose(np.asarray(g), g_ref, rtol=1e-6, atol=1e-8)


def test_callback_backend_gives_the_posterior(case):
    """The host path (the nllh through jax.pure_callback, chains one after another)."""
    _, _, _, beta, cov, fit = case
    res = sens.sample(fit, n=150, chains=2, warmup=100, seed=2, backend="callback")
    assert res.backend == "callback" and res.divergent.sum() == 0
    _check_gaussian(res, beta, cov)


def test_adaptive_metropolis_gives_the_posterior(case):
    _, _, _, beta, cov, fit = case
    res = sens.sample(fit, method="adaptive_metropolis", n=4000, chains=4, warmup=2000, seed=3)
    assert res.method == "adaptive_metropolis" and res.samples.shape == (4, 4000, 3)
    assert np.all(res.rhat < 1.05) and np.all(res.ess_bulk > 300)
    # a random walk's acceptance near the scale adaptation's target 0.234
    assert 0.1 < res.acceptance.mean() < 0.45
    _check_gaussian(res, beta, cov)


def test_predictive_bands_are_the_gaussian_ones(case, nuts):
    """f(t) = x(t)^T p: its posterior is N(x^T beta, x^T C x); with the noise, variance
    x^T C x + sigma^2. The bands' median and widths from 600 draws, within sampling error."""
    _, _, _, beta, cov, _ = case
    bands, data = nuts.predictive(draws=600, level=0.9, times=T)
    assert list(bands["panel"].unique()) == ["y"] and len(data) == T.size
    xs = np.column_stack([T, T ** 2 / 2, np.ones_like(T)])
    m, s = xs @ beta, np.sqrt(np.einsum("ij,jk,ik->i", xs, cov, xs))
    z = stats.norm.ppf(0.95)
    sd = np.sqrt(np.diag(cov))
    ess = nuts.ess_bulk.min()
    np.testing.assert_allclose(bands["median"], m, atol=5 * sd.max() / np.sqrt(ess))
    np.testing.assert_allclose((bands["upper"] - bands["lower"]) / (2 * z * s), 1.0, atol=0.25)
    sp = np.sqrt(s ** 2 + SIGMA ** 2)
    np.testing.assert_allclose((bands["pred_upper"] - bands["pred_lower"]) / (2 * z * sp), 1.0, atol=0.2)


def test_diagnostics_exports_and_figures(nuts, tmp_path):
    res = nuts
    text = res.summary()
    assert "R-hat max" in text and "ESS bulk min" in text and "divergent" in text
    idata = res.to_arviz()
    np.testing.assert_array_equal(idata.posterior["b"].values, res.samples[:, :, 1])
    assert idata.sample_stats["diverging"].values.shape == (2, 300)
    d = res.draws()
    assert len(d) == 600 and list(d.columns[:5]) == ["chain", "draw", "a", "b", "y0.y"]
    np.testing.assert_array_equal(d["a"].to_numpy(), res.samples[:, :, 0].reshape(-1))
    for name, fig in (("trace", res.plot_trace), ("marginals", res.plot_marginals), ("pairs", res.plot_pairs),
                      ("predictive", res.plot_predictive)):
        path = tmp_path / f"{name}.png"
        fig(path)
        assert path.stat().st_size > 5000, name


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


@pytest.mark.parametrize("scale", ["lin", "log", "log10"])
def test_prior_function_against_scipy(scale):
    """PEtab objective priors as a JAX function: -log density from scipy.stats, over the
    linear value with the change of variables to the parameter scale (parameterScale*: over
    x itself)."""
    x = np.array([0.3, 0.7, 0.2, 0.4, 0.6, 0.5, 0.45])
    lin = {"lin": x, "log": np.exp(x), "log10": 10.0 ** x}[scale]
    dlog = {"lin": np.zeros_like(x), "log": x, "log10": np.log(np.log(10.0)) + x * np.log(10.0)}[scale]
    priors = [(0, "normal", 1.0, 0.5), (1, "laplace", 1.5, 0.3), (2, "uniform", 0.0, 3.0),
              (3, "lognormal", 0.2, 0.4), (4, "loglaplace", -0.1, 0.7), (5, "parameterScaleNormal", 0.2, 0.3),
              (6, "parameterScaleUniform", 0.0, 1.0)]
    expected = [-stats.norm.logpdf(lin[0], 1.0, 0.5) - dlog[0],
                -stats.laplace.logpdf(lin[1], 1.5, 0.3) - dlog[1],
                -stats.uniform.logpdf(lin[2], 0.0, 3.0) - dlog[2],
                -stats.lognorm.logpdf(lin[3], 0.4, scale=np.exp(0.2)) - dlog[3],
                -stats.laplace.logpdf(np.log(lin[4]), -0.1, 0.7) + np.log(lin[4]) - dlog[4],
                -stats.norm.logpdf(x[5], 0.2, 0.3),
                -stats.uniform.logpdf(x[6], 0.0, 1.0)]
    for (i, kind, a, b), e in zip(priors, expected):
        f = prior_function([(i, kind, a, b)], [scale] * x.size)
        np.testing.assert_allclose(float(f(jnp.asarray(x))), e, rtol=1e-12, err_msg=kind)
    out = prior_function([(2, "uniform", 0.0, 0.1)], [scale] * x.size)(jnp.asarray(x))
    assert np.isinf(float(out))


def test_unknown_method_and_backend_name_the_choices(case):
    with pytest.raises(sens.InputError, match="adaptive_metropolis"):
        sens.sample(case[-1], method="am")
    with pytest.raises(sens.InputError, match="callback"):
        sens.sample(case[-1], backend="host")
    with pytest.raises(sens.InputError, match="laplace"):
        sens.sample(case[-1], mass_matrix="fisher")
    with pytest.raises(sens.InputError, match=r"mass_matrix has shape \(2, 2\); expected \(3, 3\)"):
        sens.sample(case[-1], mass_matrix=np.eye(2))


def test_laplace_approximation_is_the_least_squares_gaussian(case):
    """The Gaussian that seeds NUTS (mode by L-BFGS, Hessian by central differences of the
    exact gradient) is, for a model linear in its parameters, the posterior itself:
    N(beta, (X^T W X)^-1) of weighted least squares, from a start off the mode; and on a
    bounded parameter the mode and curvature of the density on the real line (z) with the
    map's log-Jacobian: for a flat likelihood on (lo, hi), the soft clip's density, flat
    inside the box with exponential tails: mode in the middle, its closed-form curvature."""
    from sensitivity.analyses.sample import SOFT, _laplace, _Map

    _, _, _, beta, cov, fit = case
    lik = fit.likelihood
    transform = _Map(lik.lower, lik.upper)
    assert np.all(transform.kind == 0)  # unbounded: z = x
    z, C, note = _laplace(lik, transform, beta + np.array([0.3, -0.2, 0.4]))
    assert "Laplace" in note
    np.testing.assert_allclose(z, beta, atol=1e-6 * np.sqrt(np.diag(cov)).max())
    np.testing.assert_allclose(C, cov, rtol=1e-4, atol=1e-6 * np.abs(cov).max())

    class Lik:  # flat in x0 on (0, 2); (x1 - 3)^2 / 2 on (1, inf)
        lower, upper = np.array([0.0, 1.0]), np.array([2.0, np.inf])

        def value_and_grad(self, x):
            return 0.5 * (x[1] - 3) ** 2, np.array([0.0, x[1] - 3])

    z, C, _ = _laplace(Lik(), _Map(Lik.lower, Lik.upper), np.array([1.5, -3.0]))
    # x0 = (softplus(k z0) - softplus(k (z0 - 2))) / k, k = SOFT / 2: U = -log(s(k z0) -
    # s(k (z0 - 2))), symmetric about the box's middle z0 = 1, curvature there
    # 2 k^2 s(K / 2) s(-K / 2) with K = SOFT;
    # x1 = 1 + y, y = exp(z1): U = (y - 2)^2 / 2 - z1, mode y = 1 + sqrt 2, curvature
    # y^2 + (y - 2) y = 4 + 2 sqrt 2
    k, half = SOFT / 2, 1 / (1 + np.exp(-SOFT / 2))
    np.testing.assert_allclose(z, [1.0, np.log(1 + np.sqrt(2))], atol=1e-6)
    np.testing.assert_allclose(C, np.diag([1 / (2 * k ** 2 * half * (1 - half)), 1 / (4 + 2 * np.sqrt(2))]),
                               rtol=1e-5, atol=1e-9)


def test_unconverged_mode_search_gives_the_curvature_scales(case):
    """Where the mode search stops short (one L-BFGS iteration here), the mass matrix is the
    inverse of the diagonal of the curvature at the best point found: for the linear model
    the exact Hessian X^T W X (unbounded parameters: z = x)."""
    from sensitivity.analyses.sample import _laplace, _Map

    _, _, _, beta, cov, fit = case
    lik = fit.likelihood
    z, C, note = _laplace(lik, _Map(lik.lower, lik.upper), beta + np.array([3.0, -2.0, 4.0]), max_iter=1)
    assert "did not converge" in note and "diagonal" in note
    np.testing.assert_allclose(C, np.diag(1.0 / np.diag(X.T @ X / SIGMA ** 2)), rtol=1e-6)


def test_vmapped_chains_from_the_identity_give_the_posterior(case):
    """Stan's start (identity mass matrix, chains at the estimate) with the chains as one
    vmapped program: the same posterior."""
    _, _, _, beta, cov, fit = case
    res = sens.sample(fit, n=200, chains=2, warmup=200, seed=5, mass_matrix="identity", vmap_chains=True)
    assert res.backend == "jax" and res.divergent.sum() == 0 and res.evaluations.shape == (2, 400)
    _check_gaussian(res, beta, cov)


def test_the_map_into_the_bounds_has_a_finite_gradient_far_from_zero():
    # a linear-scale parameter with bounds [0, 1e5] sampled at 5e4: exp(z) in the one-bound
    # branch it does not take must not reach the reverse pass (0 * inf = NaN); against the
    # host-side derivatives of the same map
    import jax
    import jax.numpy as jnp

    from sensitivity.analyses.sample import _Map

    m = _Map(np.array([0.0, -5.0, 0.0]), np.array([1e5, 5.0, np.inf]))
    z = np.array([5e4, 1.0, 0.3])
    g = np.asarray(jax.grad(lambda z_: jnp.sum(m.forward(z_)[0]) + m.forward(z_)[1])(jnp.asarray(z)))
    _, dx, _, dlogj = m.derivatives(z)
    np.testing.assert_allclose(g, dx + dlogj, rtol=1e-10)
