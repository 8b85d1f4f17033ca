"""`analysis: {identifiability, fit}` in a YAML config: validated with the rest of the file
(every problem at once, nothing compiled), run by `sensitivity run`, written as NetCDF, CSV,
PNG and summary entries that agree with the library."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import sensitivity as sens
from sensitivity.app import cli
from sensitivity.app.config import run as config

MODEL = '''
import jax.numpy as jnp
import sensitivity as sens


def rhs(t, y, p):
    return jnp.stack([-p["k"] * p["V"] * y[0] + p["b"] * y[1], -p["b"] * y[1]])


def obs(t, y, p):
    return p["A"] * y[0]


def model():
    return sens.ODEModel("kv_yaml", ["x", "z"], {"k": 0.5, "V": 2.0, "b": 0.3, "A": 3.0}, rhs,
                         {"x": 1.0, "z": 2.0}, observables={"obs": obs})
'''

CONFIG = '''
model: kv.py:model
time: {start: 0.0, stop: 5.0, points: 12}
solver: {rtol: 1.0e-10, atol: 1.0e-10}
sensitivity: {wrt: [k, V, b, A], mode: forward, probe: never}
analysis:
  identifiability: {sigma: 0.1, max_subset: 2}
  fit:
    data: obs.csv
    sigma: 0.1
    wrt: [k, b, A]
    start: {k: 1.5, b: 0.1, A: 1.0}
output: {plots: [trajectories]}
'''

DATA_TIMES = np.array([0.2, 0.7, 1.3, 2.0, 2.9, 3.6, 4.4, 5.0])


def _folder(tmp_path: Path, config_text: str = CONFIG) -> Path:
    (tmp_path / "kv.py").write_text(textwrap.dedent(MODEL))
    (tmp_path / "run.yaml").write_text(textwrap.dedent(config_text).lstrip())
    return tmp_path / "run.yaml"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("analysis_yaml")
    path = _folder(folder)
    from sensitivity import models

    m = models.load(str(folder / "kv.py:model"))
    truth = sens.simulate(sens.Problem(m, DATA_TIMES, t0=0.0, rtol=1e-10, atol=1e-10)).outputs[:, 0]
    pd.DataFrame({"time": DATA_TIMES, "obs": truth}).to_csv(folder / "obs.csv", index=False)
    out = folder / "result"
    code = cli.main(["run", str(path), "--out", str(out), "-q"])
    assert code == 0
    return out, m


def test_files_are_written(run):
    out, _ = run
    summary = json.loads((out / "summary.json").read_text())
    for name in ("identifiability.nc", "identifiability.csv", "collinearity.csv", "identifiability.png",
                 "fit.nc", "fit.csv", "fit_path.csv", "fit_starts.csv", "fit.png"):
        assert (out / name).stat().st_size > 0, name
        assert name in summary["files"]


def test_identifiability_flags_k_and_v(run):
    out, _ = run
    summary = json.loads((out / "summary.json").read_text())["analysis"]["identifiability"]
    assert summary["non_identifiable"] == [["k", "V"]] and not summary["identifiable"]
    with xr.open_dataset(out / "identifiability.nc", engine="h5netcdf") as ds:
        v0 = ds["eigenvector"].isel(direction=0).to_series()
        assert abs(abs(v0["k"]) - 2 ** -0.5) < 1e-6 and v0["k"] * v0["V"] < 0
        assert ds["collinearity"].sel(subset="k,V") > 1e6
        assert int(ds["sloppy"].isel(direction=0)) == 1
    table = pd.read_csv(out / "collinearity.csv", index_col=0)
    assert table.index[0] == "k,V" and not table["identifiable"].iloc[0]


def test_fit_recovers_the_identifiable_inputs(run):
    out, m = run
    fit = json.loads((out / "summary.json").read_text())["analysis"]["fit"]
    assert fit["success"]
    for name in ("k", "b", "A"):
        assert fit["estimates"][name] == pytest.approx(float(m.parameters[name]), rel=1e-6)
    frame = pd.read_csv(out / "fit.csv", index_col=0)
    assert list(frame.index) == ["k", "b", "A"]
    assert frame.loc["k", "start"] == 1.5
    with xr.open_dataset(out / "fit.nc", engine="h5netcdf") as ds:
        assert ds.sizes["observation"] == len(DATA_TIMES)
        np.testing.assert_allclose(ds["residual"].values, 0.0, atol=1e-4)


def test_validate_lists_every_analysis_problem(tmp_path):
    bad = CONFIG.replace("start: {k: 1.5, b: 0.1, A: 1.0}", "start: {kk: 1.5}\n    starts: 3") \
                .replace("data: obs.csv", "data: missing.csv") \
                .replace("{sigma: 0.1, max_subset: 2}", "{sigma: -1, max_subset: 2, scale: ln}")
    path = _folder(tmp_path, bad)
    with pytest.raises(sens.ConfigError) as info:
        config.load(path)
    text = "\n".join(info.value.problems)
    assert "analysis.identifiability.sigma" in text and "positive" in text
    assert "analysis.identifiability.scale" in text
    assert "analysis.fit.ranges" in text  # starts without ranges
    assert "analysis.fit.start.kk" in text and "did you mean 'k'" in text
    assert "missing.csv" in text and "not found" in text


def test_one_analysis_block_holds_global_and_local_entries(tmp_path):
    """identifiability and fit sit beside sobol, morris and dgsm in the same block."""
    both = CONFIG.replace("analysis:\n", "analysis:\n  ranges: {k: [0.25, 1.0], b: [0.1, 0.5]}\n"
                                         "  sobol: {n: 64}\n")
    path = _folder(tmp_path, both)
    pd.DataFrame({"time": DATA_TIMES, "obs": np.ones(DATA_TIMES.size)}).to_csv(tmp_path / "obs.csv", index=False)
    spec = config.load(path)
    a = spec.config.analysis
    assert a.sobol.n == 64 and a.identifiability.sigma == 0.1 and a.fit.wrt == ["k", "b", "A"]
    assert spec.resolved()["analysis"]["fit"]["start"] == {"k": 1.5, "b": 0.1, "A": 1.0}
