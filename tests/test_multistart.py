"""Multi-start fits: every local result kept in start order, the fraction of starts at the
best value and the plots, on a problem with two kinds of minimum (y = f(p) t with
f(p) = (p^2 - 1)^2 + 0.3 p: two roots of f near p = -1 fit the data y = 0 exactly, a local
minimum of f near p = +1 does not), checked against SciPy on the closed form; and a PEtab
problem through the same `sens.fit`."""

from __future__ import annotations

from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest
from scipy.optimize import least_squares

import sensitivity as sens

T = np.linspace(0.5, 2.0, 4)
SIGMA = 0.1
STARTS = np.array([[-2.0], [-0.5], [0.5], [1.5], [2.5], [-1.2]])
PETAB = Path(__file__).resolve().parents[1].parent / "shared" / "petab"


def _f(p):
    return (p ** 2 - 1) ** 2 + 0.3 * p


def _rhs(t, y, p):
    return jnp.stack([_f(p["p"]) + 0.0 * y[0]])


@pytest.fixture(scope="module")
def multi():
    model = sens.ODEModel("two_minima", ["y"], {"p": 1.5}, _rhs, {"y": 0.0})
    prob = sens.Problem(model, np.linspace(0, 2, 5), wrt=["p"], rtol=1e-10, atol=1e-10)
    data = pd.DataFrame({"time": T, "output": "y", "value": 0.0})
    return sens.fit(prob, data, sigma=SIGMA, log_params=False, start={"p": 1.5}, starts=STARTS,
                    method="least_squares")


def _closed_form(p0):
    r = least_squares(lambda p: _f(p[0]) * T / SIGMA, [p0], xtol=1e-12, ftol=1e-12, gtol=1e-12)
    return r.x[0], 0.5 * float(r.fun @ r.fun)


def test_every_start_kept_in_order_against_scipy(multi):
    table = multi.starts
    starts = np.r_[1.5, STARTS[:, 0]]
    assert list(table["start"]) == list(range(starts.size))
    np.testing.assert_allclose(table["start_p"], starts)
    ref = np.array([_closed_form(p0) for p0 in starts])
    np.testing.assert_allclose(table["p"], ref[:, 0], atol=1e-5)
    np.testing.assert_allclose(table["cost"], ref[:, 1], atol=1e-6)
    # the best is a root of f; the fraction counts the starts that found one
    assert abs(_f(multi.x[0])) < 1e-6
    expected = np.mean(ref[:, 1] <= ref[:, 1].min() + 0.1)
    assert 0 < expected < 1
    assert multi.fraction_at_best() == pytest.approx(expected)
    assert multi.fraction_at_best(tol=1e6) == 1.0


def test_plots(multi, tmp_path):
    fig = multi.waterfall(tmp_path / "w.png")
    assert (tmp_path / "w.png").stat().st_size > 0
    ax = fig.axes[0]
    # the waterfall's points: the sorted values less the best, plus 1
    ys = np.sort(np.concatenate([c.get_offsets()[:, 1] for c in ax.collections]))
    v = np.sort(multi.start_values())
    np.testing.assert_allclose(ys, v - v[0] + 1.0, rtol=1e-12)
    multi.parameters(tmp_path / "p.png", best=3)
    assert (tmp_path / "p.png").stat().st_size > 0


@pytest.mark.skipif(not (PETAB / "Boehm_JProteomeRes2014").is_dir(), reason="needs ../shared/petab")
def test_petab_problem_through_fit():
    prob = sens.petab.load(PETAB / "Boehm_JProteomeRes2014" / "Boehm_JProteomeRes2014.yaml")
    res = sens.fit(prob, None, starts=np.array([prob.x_nominal + 0.05]), max_iter=40)
    assert list(res.starts["start"]) == [0, 1] and res.input_names == prob.x_names
    # each row's value is the problem's own nllh at that row's parameters
    for _, row in res.starts.iterrows():
        x = row[list(prob.x_names)].to_numpy(float)
        assert np.all(x >= prob.lower - 1e-12) and np.all(x <= prob.upper + 1e-12)
        assert row["nllh"] == pytest.approx(prob.nllh(x), rel=1e-10, abs=1e-8)
        assert row["nllh"] <= prob.nllh(row[[f"start_{n}" for n in prob.x_names]].to_numpy(float))
    assert res.nllh == pytest.approx(res.starts["nllh"].min())
    assert 0 < res.fraction_at_best() <= 1
