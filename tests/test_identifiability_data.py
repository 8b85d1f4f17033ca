"""The Fisher information of a data table counts its values at their sampling times only:
checked against the closed form of a model whose outputs are linear in its inputs,
x(t) = a t + b t^2 / 2 and z(t) = b t, so J_x(t) = (t, t^2 / 2), J_z(t) = (0, t)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import sensitivity as sens
from sensitivity.analyses.identifiability import fisher, identifiability
from sensitivity.core.errors import InputError

A, B = 0.7, 1.3


def _rhs(t, y, p):
    return jnp.stack([p["a"] + p["b"] * t, p["b"] + 0.0 * y[1]])


@pytest.fixture(scope="module")
def problem():
    model = sens.ODEModel("linear_in_p", ["x", "z"], {"a": A, "b": B}, _rhs, {"x": 0.0, "z": 0.0},
                          observables={"x_obs": lambda t, y, p: y[0], "z_obs": lambda t, y, p: y[1]})
    # save times that differ from the data's: the old count took every one of these
    return sens.Problem(model, np.linspace(0.0, 5.0, 11), wrt=["a", "b"], rtol=1e-10, atol=1e-10)


# x at 1, 2.5 (twice: a replicate) and 4; z at 3; sigma per row
DATA = pd.DataFrame({"time": [1.0, 2.5, 2.5, 4.0, 3.0], "output": ["x_obs", "x_obs", "x_obs", "x_obs", "z_obs"],
                     "value": [0.0] * 5, "sigma": [0.1, 0.2, 0.2, 0.1, 0.5]})


def _closed_form(rows):
    F = np.zeros((2, 2))
    for t, o, s in rows:
        J = np.array([t, t * t / 2]) if o == "x_obs" else np.array([0.0, t])
        F += np.outer(J, J) / s ** 2
    return F


def test_fisher_of_data_counts_its_sampling_times_only(problem):
    fi = fisher(problem, scale="linear", data=DATA)
    expected = _closed_form(zip(DATA["time"], DATA["output"], DATA["sigma"]))
    np.testing.assert_allclose(fi.matrix, expected, rtol=1e-7)
    assert fi.n_observations == len(DATA)
    np.testing.assert_array_equal(fi.jacobian.times, [1.0, 2.5, 3.0, 4.0])  # the data's, not the save times
    assert fi.weights.shape == (4, 2) and np.count_nonzero(fi.weights) == 4  # the replicate sums into one cell
    # log scale: d y / d ln p = J diag(p)
    D = np.diag([A, B])
    np.testing.assert_allclose(fisher(problem, scale="log", data=DATA).matrix, D @ expected @ D, rtol=1e-7)
    # without data the save times count: another matrix (the case the data argument is for)
    every = fisher(problem, sigma=0.1, scale="linear")
    assert every.n_observations == 22 and not np.allclose(every.matrix, expected, rtol=1e-2)


def test_sigma_argument_and_of_with_data(problem):
    table = DATA.drop(columns="sigma")
    fi = fisher(problem, sigma={"x_obs": 0.1, "z_obs": 0.5}, scale="linear", data=table)
    rows = [(t, o, 0.1 if o == "x_obs" else 0.5) for t, o in zip(table["time"], table["output"])]
    np.testing.assert_allclose(fi.matrix, _closed_form(rows), rtol=1e-7)
    only_x = fisher(problem, sigma=0.3, scale="linear", data=table, of=["x_obs"])
    np.testing.assert_allclose(only_x.matrix, _closed_form([(t, o, 0.3) for t, o, _ in rows if o == "x_obs"]),
                               rtol=1e-7)
    assert only_x.n_observations == 4


def test_identifiability_with_data_has_the_closed_form_errors(problem):
    ident = identifiability(problem, scale="linear", data=DATA, max_subset=2)
    cov = np.linalg.inv(_closed_form(zip(DATA["time"], DATA["output"], DATA["sigma"])))
    np.testing.assert_allclose(ident.dataset["standard_error"].values, np.sqrt(np.diag(cov)), rtol=1e-6)
    assert f"{len(DATA)} observations" in ident.summary()
    # one value of x at one time cannot separate a from b: flagged
    single = identifiability(problem, scale="linear", data=DATA.iloc[:1], max_subset=2)
    assert not single.identifiable


def test_data_errors_name_the_element(problem):
    with pytest.raises(InputError, match="before the problem's start"):
        fisher(problem, data=pd.DataFrame({"time": [-1.0], "output": ["x_obs"], "value": [1.0]}))
    with pytest.raises(InputError, match="no value for measured output 'z_obs'"):
        fisher(problem, sigma={"x_obs": 0.1}, data=DATA.drop(columns="sigma"))
    with pytest.raises(InputError, match="data is for a Problem"):
        identifiability(np.eye(2), data=DATA)


# --------------------------------------------------------------------------- from YAML and the CLI
MODEL = '''
import jax.numpy as jnp
import sensitivity as sens


def rhs(t, y, p):
    return jnp.stack([p["a"] + p["b"] * t, p["b"] + 0.0 * y[1]])


def model():
    return sens.ODEModel("linear_in_p", ["x", "z"], {"a": 0.7, "b": 1.3}, rhs, {"x": 0.0, "z": 0.0},
                         observables={"x_obs": lambda t, y, p: y[0], "z_obs": lambda t, y, p: y[1]})
'''

CONFIG = '''
model: lin.py:model
time: {start: 0.0, stop: 5.0, points: 11}
solver: {rtol: 1.0e-10, atol: 1.0e-10}
sensitivity: {wrt: [a, b], mode: forward, probe: never}
analysis:
  identifiability: {data: obs.csv, scale: linear, max_subset: 2}
output: {plots: []}
'''


def _config(folder, text=CONFIG):
    import textwrap

    (folder / "lin.py").write_text(textwrap.dedent(MODEL))
    DATA.to_csv(folder / "obs.csv", index=False)
    (folder / "run.yaml").write_text(textwrap.dedent(text).lstrip())
    return folder / "run.yaml"


def test_yaml_identifiability_counts_the_data_as_the_python_call(problem, tmp_path):
    import json

    import xarray as xr

    from sensitivity.app import cli

    path = _config(tmp_path)
    assert cli.main(["validate", str(path)]) == 0
    out = tmp_path / "result"
    assert cli.main(["run", str(path), "--out", str(out), "-q"]) == 0
    with xr.open_dataset(out / "identifiability.nc", engine="h5netcdf") as ds:
        V, lam = ds["eigenvector"].values, ds["eigenvalue"].values
        se, n_obs = ds["standard_error"].values, int(ds.attrs["n_observations"])
    expected = fisher(problem, scale="linear", data=DATA)  # the Python call on the same table
    np.testing.assert_allclose(V @ np.diag(lam) @ V.T, expected.matrix, rtol=1e-7)
    cov = np.linalg.inv(_closed_form(zip(DATA["time"], DATA["output"], DATA["sigma"])))
    np.testing.assert_allclose(se, np.sqrt(np.diag(cov)), rtol=1e-6)
    assert n_obs == len(DATA)
    summary = json.loads((out / "summary.json").read_text())["analysis"]["identifiability"]
    assert summary["n_observations"] == len(DATA)


def test_yaml_identifiability_takes_the_fit_data_unless_told_otherwise(tmp_path):
    from sensitivity.app.config import run as config

    fit = "  fit: {data: obs.csv, sigma: {x_obs: 0.1, z_obs: 0.5}, log_params: false}\n"
    with_fit = CONFIG.replace("{data: obs.csv, scale: linear, max_subset: 2}\n",
                              "{scale: linear, max_subset: 2}\n" + fit)
    analysis = config.load(_config(tmp_path, with_fit)).config.analysis
    assert analysis.identifiability_data() == ("obs.csv", {"x_obs": 0.1, "z_obs": 0.5})
    save_times = with_fit.replace("{scale: linear,", "{data: false, scale: linear,")
    assert config.load(_config(tmp_path, save_times)).config.analysis.identifiability_data() == (None, 1.0)
    # validate names the missing file, an empty name and outputs the data does not measure
    for text, expected in ((CONFIG.replace("data: obs.csv", "data: nowhere.csv"),
                            "analysis.identifiability.data: file 'nowhere.csv' not found"),
                           (CONFIG.replace("data: obs.csv", "data: ''"), "analysis.identifiability.data"),
                           (CONFIG.replace("max_subset: 2}", "max_subset: 2, of: [z_obs], sigma: {z_obs: 1.0}}")
                            .replace("data: obs.csv", "data: only_x.csv"), "measures none of these outputs")):
        DATA[DATA["output"] == "x_obs"].to_csv(tmp_path / "only_x.csv", index=False)
        with pytest.raises(sens.ConfigError) as info:
            config.load(_config(tmp_path, text))
        assert any(expected in p for p in info.value.problems), info.value.problems
