"""Global sensitivity: Sobol on the Ishigami function written as an ODE against its
analytic indices, Sobol and Morris against SALib on the same samples, DGSM against its
analytic value and finite-difference DGSM, ranges and distributions."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens
from sensitivity import models
from sensitivity.analyses.gsa.dgsm import dgsm_measures
from sensitivity.analyses.gsa.sampling import parse_ranges, salib_problem, saltelli_design, to_values
from sensitivity.models import ishigami

BATCH = 256  # one compiled solve for every ensemble of this module
SEED = 3  # SALib draws its bootstrap from default_rng(seed) only for a non-zero seed


def final_value(ys):
    return ys[-1, 0]


@pytest.fixture(scope="module")
def prob():
    # the save times and tolerances of CONFIG below, so that the CLI test reuses the compiles
    return sens.Problem(models.get("ishigami"), [0.0, 1.0], rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def sobol_result(prob):
    return sens.sobol(prob, ishigami.RANGES, n=4096, seed=SEED, batch=BATCH)


def test_ishigami_ode_is_the_ishigami_function(prob, sobol_result):
    x = sobol_result.samples["x"].values
    f = np.sin(x[:, 0]) + 7 * np.sin(x[:, 1]) ** 2 + 0.1 * x[:, 2] ** 4 * np.sin(x[:, 0])
    np.testing.assert_allclose(sobol_result.samples["outputs"].values[:, -1, 0], f, rtol=1e-8, atol=1e-8)


def test_sobol_ishigami_against_analytic_indices(sobol_result):
    exact = ishigami.analytic_indices()
    got = sobol_result.to_salib()
    assert got["names"] == ["x1", "x2", "x3"]
    for key in ("S1", "ST"):
        err = np.abs(got[key] - np.array(exact[key]))
        assert np.all(err <= 0.02), (key, got[key], exact[key])
        assert np.all(err <= got[key + "_conf"]), (key, err, got[key + "_conf"])
    assert sobol_result.data.attrs["n_runs"] == 4096 * 5
    assert sobol_result.data.attrs["ensemble_compiles"] <= 1
    assert abs(float(sobol_result["variance"].values[-1, 0]) - exact["variance"]) / exact["variance"] < 0.02


def test_sobol_equals_salib_on_the_same_samples(prob, sobol_result):
    from SALib.analyze import sobol as salib_sobol
    from SALib.sample import sobol as salib_sampler

    rs = parse_ranges(prob, ishigami.RANGES)
    Y = sobol_result.samples["outputs"].values[:, -1, 0]
    ref = salib_sobol.analyze(salib_problem(rs), Y, calc_second_order=False, seed=SEED)
    got = sobol_result.to_salib()
    for key in ("S1", "S1_conf", "ST", "ST_conf"):
        np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=1e-10, err_msg=key)
    # the design is SALib's layout: its sampler, with the same scrambled sequence, gives it
    salib_X = salib_sampler.sample(salib_problem(rs), 64, calc_second_order=False, seed=SEED)
    np.testing.assert_allclose(to_values(saltelli_design(64, 3, SEED), rs), salib_X, rtol=1e-14)


def test_sobol_of_an_objective_and_at_times(prob):
    res = sens.sobol(prob, ishigami.RANGES, n=256, seed=SEED, objective=final_value, batch=BATCH)
    assert res["S1"].dims == ("input",)
    # at selects save times: y(t) = t f(x), so the indices are the same at every time t > 0
    at = sens.sobol(prob, ishigami.RANGES, n=256, seed=SEED, at=[0.25, 1.0], batch=BATCH)
    full = sens.sobol(prob, ishigami.RANGES, n=256, seed=SEED, batch=BATCH)
    assert np.all(np.isnan(full["S1"].values[:, 0, 0]))  # y(0) = 0 does not vary: no index
    assert at["S1"].dims == ("input", "time", "output") and at["time"].values.tolist() == [0.25, 1.0]
    np.testing.assert_allclose(at["S1"].values[:, 0, 0], at["S1"].values[:, 1, 0], atol=1e-9)
    np.testing.assert_allclose(res["S1"].values, at["S1"].values[:, 1, 0], atol=1e-9)
    np.testing.assert_allclose(full["ST"].values[:, 1, 0], at["ST"].values[:, 1, 0], atol=1e-9)
    frame = at.to_frame(time=0.25)
    assert list(frame.columns) == ["S1", "S1_conf", "ST", "ST_conf"] and list(frame.index) == ["x1", "x2", "x3"]


def test_morris_equals_salib_on_the_same_samples(prob, tmp_path):
    from SALib.analyze import morris as salib_morris

    res = sens.morris(prob, ishigami.RANGES, trajectories=40, levels=4, seed=SEED, batch=BATCH)
    rs = parse_ranges(prob, ishigami.RANGES)
    X = res.samples["x"].values
    Y = res.samples["outputs"].values[:, -1, 0]
    ref = salib_morris.analyze(salib_problem(rs), X, Y, num_levels=4, seed=SEED)
    got = res.to_salib()
    for key in ("mu", "mu_star", "sigma", "mu_star_conf"):
        np.testing.assert_allclose(got[key], ref[key], rtol=0, atol=1e-10, err_msg=key)
    # x2 enters as 7 sin^2(x2): its elementary effects on the 4-level grid are exact numbers
    assert got["mu_star"][1] > got["mu_star"][2]
    assert res.plot(tmp_path / "morris.png").stat().st_size > 1000


def test_dgsm_against_analytic_and_finite_differences(prob, tmp_path):
    a, b, pi = 7.0, 0.1, math.pi
    # nu_i = E[(df/dx_i)^2] for x uniform on [-pi, pi]^3
    nu = np.array([0.5 * (1 + 2 * b * pi ** 4 / 5 + b ** 2 * pi ** 8 / 9), a ** 2 / 2, 8 * b ** 2 * pi ** 6 / 7])
    res = sens.dgsm(prob, ishigami.RANGES, n=1024, objective=final_value, seed=SEED, batch=BATCH)
    got = res.to_salib()
    np.testing.assert_allclose(got["vi"], nu, rtol=0.02)
    # the bound holds: S_Ti <= dgsm_i
    assert np.all(got["dgsm"] >= np.array(ishigami.analytic_indices()["ST"]))
    # finite-difference DGSM (central differences, h = 1e-5) at the same points
    X = res.samples["x"].values
    h = 1e-5
    rows = [X]
    for j in range(3):
        E = np.zeros_like(X)
        E[:, j] = h
        rows += [X + E, X - E]
    sub = prob.replace(wrt=["x1", "x2", "x3"])
    Y = sens.ensemble(sub, np.concatenate(rows), batch=BATCH)["outputs"].values[:, -1, 0].reshape(7, -1)
    G = np.stack([(Y[1 + 2 * j] - Y[2 + 2 * j]) / (2 * h) for j in range(3)], axis=1)
    fd = dgsm_measures(X, Y[0], G, parse_ranges(prob, ishigami.RANGES), seed=SEED)
    np.testing.assert_allclose(got["vi"], fd["vi"], rtol=1e-6)
    np.testing.assert_allclose(got["dgsm"], fd["dgsm"], rtol=1e-6)
    np.testing.assert_allclose(res.samples["gradient"].values, G, rtol=1e-5, atol=1e-6)
    assert res.plot(tmp_path / "dgsm.png").stat().st_size > 1000


def test_ranges_and_distributions(prob):
    rs = parse_ranges(prob, {"x1": (0.1, 10.0, "log-uniform"), "x2": {"mean": 1.0, "sd": 0.5,
                                                                      "distribution": "normal"},
                             "x3": {"low": -1, "high": 2}})
    assert [r.distribution for r in rs] == ["log-uniform", "normal", "uniform"]
    u = np.array([[0.0, 0.5, 0.0], [0.5, 0.975, 1.0], [1.0, 0.5, 0.5]])
    v = to_values(u, rs)
    np.testing.assert_allclose(v[:, 0], [0.1, 1.0, 10.0])
    np.testing.assert_allclose(v[1, 1], 1.0 + 0.5 * 1.959963984540054)
    np.testing.assert_allclose(v[:, 2], [-1.0, 2.0, 0.5])
    for bad, match in [({"x9": (0, 1)}, "ranges.x9: .*no parameter"),
                       ({"x1": (1.0, 0.0)}, "low = 1 must be below high = 0"),
                       ({"x1": (0.0, 1.0, "log-uniform")}, "log-uniform range needs low > 0"),
                       ({"x1": (0.0, 1.0, "beta")}, "distribution 'beta' is unknown"),
                       ({"x1": {"mean": 1.0}, }, "needs low and high"),
                       ({}, "ranges must be a mapping")]:
        with pytest.raises(sens.InputError, match=match):
            parse_ranges(prob, bad)
    with pytest.raises(sens.InputError, match="dgsm needs an objective"):
        sens.dgsm(prob, ishigami.RANGES, n=8)


def test_sobol_drops_groups_with_a_failed_solve():
    # exponential growth y' = k y to t = 1 takes ~22 k steps: a budget of 600 fails for k > ~27
    model = sens.ODEModel("growth", ["y"], {"k": 1.0}, lambda t, y, p: p["k"] * y, [1.0])
    prob = sens.Problem(model, [1.0], t0=0.0, max_steps=600, rtol=1e-10, atol=1e-10)
    with pytest.warns(RuntimeWarning, match="sample groups hold a failed solve"):
        res = sens.sobol(prob, {"k": (0.1, 30.0)}, n=64, objective=lambda ys: jnp.log(ys[-1, 0]))
    assert 0 < res.data.attrs["groups_dropped"] < 64
    assert res.samples.attrs["n_failed"] > 0
    # log y(1) = k: all of the variance is k's
    np.testing.assert_allclose(res["S1"].values, [1.0], atol=0.05)
    np.testing.assert_allclose(res["ST"].values, [1.0], atol=0.05)


# --------------------------------------------------------------------------- YAML and CLI
CONFIG = """
model: ishigami
time: {start: 0.0, stop: 1.0, points: 2}
solver: {rtol: 1.0e-10, atol: 1.0e-10}
sensitivity: {wrt: [x1, x2, x3], objective: {type: final_value}}
analysis:
  ranges: {x1: [-3.141592653589793, 3.141592653589793], x2: [-3.141592653589793, 3.141592653589793],
           x3: [-3.141592653589793, 3.141592653589793]}
  batch: 256
  sobol: {n: 256, seed: 3}
  morris: {trajectories: 16, objective: true}
  dgsm: {n: 64}
output: {plots: []}
"""


def test_cli_runs_the_analysis_block(tmp_path, prob):
    import json

    import xarray as xr

    from sensitivity.app import cli
    from sensitivity.app.runners.gsa import store_root

    cfg = tmp_path / "ish.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "res"
    # an interrupted run left Sobol chunks in the store: --resume computes only the rest
    store = store_root(out) / "sobol"
    first = sens.sobol(prob, ishigami.RANGES, n=256, seed=3, batch=256, chunk=1, store=store)
    assert first.data.attrs["ensemble_chunks"] == 5
    sorted(store.glob("batch-*.npz"))[2].unlink()
    assert cli.main(["run", str(cfg), "--out", str(out), "-q", "--set", "sensitivity.probe=never",
                     "--resume"]) == 0
    for name in ("sobol", "morris", "dgsm"):
        for ext in ("nc", "csv", "png"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
    assert not store_root(out).exists()  # the store goes once the result is written
    summary = json.loads((out / "summary.json").read_text())
    s = summary["analysis"]["sobol"]
    assert s["settings"]["ensemble_chunks_resumed"] == 4 and s["settings"]["ensemble_chunks_computed"] == 1
    with xr.open_dataset(out / "sobol.nc", engine="h5netcdf") as ds:
        np.testing.assert_allclose(ds["S1"].values, first["S1"].values, rtol=1e-12)
        assert ds["S1"].dims == ("input", "time", "output")
    header = (out / "sobol.csv").read_text().splitlines()[0]
    assert header == "output,time,input,S1,S1_conf,ST,ST_conf"
    assert summary["analysis"]["morris"]["indices"]["names"] == ["x1", "x2", "x3"]
    assert summary["analysis"]["dgsm"]["settings"]["gradients"] == 64


def test_config_problems_in_the_analysis_block(tmp_path, capsys):
    from sensitivity.app import cli

    bad = CONFIG.replace("x3: [-3.141592653589793, 3.141592653589793]}", "x4: [1, 0]}")
    bad = bad.replace("sobol: {n: 256, seed: 3}", "sobol: {n: 100}").replace(
        "sensitivity: {wrt: [x1, x2, x3], objective: {type: final_value}}", "sensitivity: {wrt: [x1, x2, x3]}")
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(bad + "executor: {local: 2, address: tcp://h:1}\n")
    with pytest.raises(sens.ConfigError) as info:
        from sensitivity.app.config import run as config
        config.load(cfg)
    text = "\n".join(info.value.problems)
    assert "analysis.sobol.n: 100 is not a power of 2" in text
    assert "analysis.ranges.x4: " in text and "no parameter" in text
    assert "analysis.dgsm: needs sensitivity.objective" in text
    assert "analysis.morris: needs sensitivity.objective" in text
    assert "executor: give one of local: N and address" in text
    assert cli.main(["validate", str(cfg)]) == 2
    good = tmp_path / "good.yaml"
    good.write_text(CONFIG + "executor: {local: 3, retries: 1}\n")
    spec = config.load(good)
    assert spec.config.executor.target() == "local:3" and spec.config.executor.retries == 1
    assert spec.config.analysis.ranges_of(spec.config.analysis.sobol)["x1"] == [-math.pi, math.pi]
    capsys.readouterr()
    assert cli.main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert "analysis.sobol: 256 x (3 + 2) = 1280 solves" in out and "ensembles run local:3" in out
