"""Sampling a PEtab problem on its traced nllh, against the PEtab test suite's case 0001
(conversion reaction A <-> B, four estimated parameters, two measurements): the traced
nllh equals the suite's expected log-likelihood, its derivative the host's exact gradient,
the traced simulation the suite's expected simulations; the chains stay within the bounds
and the posterior predictive bands are those of the draws' own simulations."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
import yaml

import sensitivity as sens

pytest.importorskip("blackjax")
pytest.importorskip("arviz")
pytest.importorskip("petab")

CASE = Path(__file__).resolve().parents[1] / "../shared/petab-test-suite/cases/v1.0.0/sbml/0001"
pytestmark = pytest.mark.skipif(not CASE.is_dir(), reason="../shared/petab-test-suite is absent")


@pytest.fixture(scope="module")
def problem():
    return sens.petab.load(CASE / "_0001.yaml", rtol=1e-10, atol=1e-10)


def test_traced_nllh_and_simulation_against_the_suite(problem):
    solution = yaml.safe_load((CASE / "_0001_solution.yaml").read_text())
    x = problem.x_nominal
    f = jax.jit(jax.value_and_grad(problem.nllh_function()))
    v, g = f(jnp.asarray(x))
    np.testing.assert_allclose(float(v), -solution["llh"], atol=solution["tol_llh"])
    ref = problem.gradient(x)
    np.testing.assert_allclose(np.asarray(g), ref.grad, rtol=1e-6, atol=1e-9)
    sim, sigma, ok = jax.jit(problem.simulation_function())(jnp.asarray(x))
    expected = pd.read_csv(CASE / "_simulations.tsv", sep="\t")["simulation"].to_numpy()
    assert bool(ok)
    np.testing.assert_allclose(np.asarray(sim), expected, atol=solution["tol_simulations"])
    np.testing.assert_allclose(np.asarray(sigma), 0.5)  # the noise formula


def test_sample_a_petab_problem(problem):
    res = sens.sample(problem, method="nuts", n=150, chains=2, warmup=150, seed=0)
    assert res.backend == "jax" and res.samples.shape == (2, 150, 4)
    X = res.samples.reshape(-1, 4)
    assert np.all(X > problem.lower) and np.all(X < problem.upper)
    # the log posterior is -nllh (flat prior): at a few draws, against the host's nllh
    for c, d in ((0, 0), (1, 77), (0, 149)):
        np.testing.assert_allclose(res.log_posterior[c, d], -problem.nllh(res.samples[c, d]), rtol=1e-8)
    bands, data = res.predictive(draws=50, level=0.9)
    assert list(bands["panel"]) == ["obs_a | c0"] * 2 and len(data) == 2
    # the bands are quantiles of the draws' simulations: within their range, median inside
    sims = np.stack([problem.simulate(x)["simulation"].to_numpy() for x in X[::30]])
    assert np.all(bands["lower"].to_numpy() <= bands["upper"].to_numpy())
    assert np.all(bands["pred_lower"].to_numpy() <= bands["lower"].to_numpy() + 1e-12)
    assert np.all((sims.min(0) - 1e-9 <= bands["upper"].to_numpy()) & (bands["lower"].to_numpy() <= sims.max(0) + 1e-9))
