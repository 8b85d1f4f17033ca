"""The command line end to end: bad inputs fail fast with one message (as subprocesses),
every config in configs/ runs (in-process, on a small time grid), and what lands on disk
is read back and checked against the library and against sums written out here.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from matplotlib.image import imread
from scipy.integrate import trapezoid

import sensitivity as sens
from sensitivity import models
from sensitivity.ad.cost import stored_calibration
from sensitivity.app import cli
from sensitivity.app.config import run as config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
QUICK = ["--set", "sensitivity.probe=never", "-q"]
# save times per config run: few, for speed (compiling dominates); the two neural ODE
# configs on the 51 times of data/spiral.csv, so that they share one compiled Jacobian
POINTS = {"neural_ode": 51, "neural_ode_loss": 51}


def run_cli(*args, cwd=None, timeout=300):
    """`python -m sensitivity ARGS` in a fresh process: (exit status, stdout, stderr)."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "sensitivity", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def assert_clean_failure(code, err, expected_code=2):
    assert code == expected_code, err
    assert "Traceback" not in err
    assert "compiling" not in err  # it failed before any JAX compile


# --------------------------------------------------------------------------- bad inputs
GOOD = """
model: lotka_volterra
time: {start: 0, stop: 5, points: 20}
solver: {rtol: 1.0e-8, atol: 1.0e-8}
sensitivity: {wrt: [alpha, beta]}
"""

BAD_CASES = {
    "malformed_yaml": ("model: lotka_volterra\ntime: {start: 0, stop: 5\nsolver: {rtol: 1e-8}\n",
                       ["malformed YAML at line 3"]),
    "unknown_key": (GOOD.replace("rtol:", "rtl:"),
                    ["solver.rtl: unknown key (did you mean 'rtol'?)", "valid keys here: method, rtol"]),
    "wrong_type": (GOOD.replace("points: 20", "points: twenty"), ["time.points = 'twenty': must be a whole number"]),
    "negative_tolerance": (GOOD.replace("atol: 1.0e-8", "atol: -1.0e-8"),
                           ["solver.atol = -1e-08: must be greater than 0"]),
    "stop_before_start": (GOOD.replace("stop: 5", "stop: 0"), ["time.stop: stop = 0 must be greater than start = 0"]),
    "unknown_model": (GOOD.replace("lotka_volterra", "lotka-volterra"),
                      ["model: 'lotka-volterra' is not a registered model (did you mean 'lotka_volterra'?)"]),
    "unknown_wrt": (GOOD.replace("[alpha, beta]", "[alpha, btea]"),
                    ["sensitivity.wrt[1] = 'btea'", "(did you mean 'beta'?)"]),
    "unknown_of": (GOOD.replace("{wrt: [alpha, beta]}", "{of: [prey, fox]}"),
                   ["sensitivity.of[1] = 'fox'", "outputs: prey, predator"]),
    "missing_data": (GOOD.replace("{wrt: [alpha, beta]}",
                                  "{objective: {type: sum_of_squares, data: data/none.csv}}"),
                     ["sensitivity.objective.data: file 'data/none.csv' not found"]),
}


MULTI = """
model: lotka_volterra
parameters: {alpah: 1.0}
time: {start: 0, stop: 5, points: 1}
solver: {rtol: 0, method: rk4}
sensitivity: {wrt: [alpha, y0.fox], normalize: ln}
outptu: {dir: x}
"""


PETAB_RUN = """
petab: problem.yaml
solver: {method: rodas5p, rtol: 1.0e-8}
"""


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    """Every bad config run as its own `python -m sensitivity` process (one at a time:
    concurrent processes importing JAX compete for a small machine's few cores and gain nothing)."""
    folder = tmp_path_factory.mktemp("bad")
    jobs = {case: ("run", write(folder, f"{case}.yaml", text), "--out", folder / f"out_{case}")
            for case, (text, _) in BAD_CASES.items()}
    jobs["validate_multi"] = ("validate", write(folder, "multi.yaml", MULTI))
    jobs["validate_good"] = ("validate", write(folder, "good.yaml", GOOD))
    write(folder, "problem.yaml", "format_version: 1\n")  # validate only checks that it exists
    jobs["validate_petab"] = ("validate", write(folder, "petab.yaml", PETAB_RUN))
    jobs["validate_petab_bad"] = ("validate", write(folder, "petab_bad.yaml", PETAB_RUN + "mode: sideways\n"
                                                    "fit: {enabled: true, tries: 3}\n"))
    return folder, {case: run_cli(*args, cwd=folder) for case, args in jobs.items()}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_fails_fast_with_one_message(bad_runs, case):
    folder, results = bad_runs
    code, out, err = results[case]
    assert_clean_failure(code, err)
    for e in BAD_CASES[case][1]:
        assert e in err, err
    assert not (folder / f"out_{case}").exists()


def test_validate_lists_every_problem(bad_runs):
    code, out, err = bad_runs[1]["validate_multi"]
    assert_clean_failure(code, err)
    for key in ["parameters.alpah", "time.points", "solver.rtol", "solver.method", "sensitivity.wrt[1]",
                "sensitivity.normalize", "outptu: unknown key (did you mean 'output'?)"]:
        assert f"  - {key}" in err, err
    assert "7 problems found" in err
    code, out, err = bad_runs[1]["validate_good"]
    assert code == 0 and "valid" in out and "2 inputs (alpha, beta)" in out, out + err


def test_solver_failure_says_where_and_what_to_try(tmp_path):
    path = write(tmp_path, "c.yaml", GOOD + "\n".join(["", "output: {plots: []}", ""]))
    code, out, err = run_cli("run", path, "--set", "solver.max_steps=4", "--out", tmp_path / "out")
    assert code == 1 and "Traceback" not in err, err
    assert "the solver tsit5 failed" in err and "raise max_steps (now 4)" in err, err
    assert not (tmp_path / "out").exists() and list(tmp_path.glob(".out*")) == []


def test_help_and_usage_errors(capsys):
    for command in ("run", "validate", "plan", "models", "calibrate"):
        with pytest.raises(SystemExit) as info:
            cli.main([command, "--help"])
        assert info.value.code == 0
        assert f"usage: sensitivity {command}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        cli.main(["run", "x.yaml", "--mode", "sideways"])
    assert info.value.code == 2 and "invalid choice: 'sideways'" in capsys.readouterr().err
    assert cli.main(["run", "no/such/file.yaml"]) == 2
    assert "config file no/such/file.yaml not found" in capsys.readouterr().err


def test_models_lists_the_registry(capsys):
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for name in models.available():
        m = models.get(name)
        assert m.summary() in out
    assert "states:     prey, predator" in out and "alpha=1" in out


# --------------------------------------------------------------------------- a full run
OBS = "time,prey,predator\n1.3,6.0,9.5\n2.7,2.1,\n4.1,1.0,6.0\n"
FULL = """
model: lotka_volterra
parameters: {alpha: 1.1}
time: {start: 0.0, stop: 6.0, points: 25}
solver: {rtol: 1.0e-9, atol: 1.0e-9}
sensitivity:
  wrt: [alpha, beta, gamma, delta, y0.prey]
  normalize: log
  probe: never
  objective: {type: sum_of_squares, data: obs.csv, sigma: 0.5}
  hessian: true
output: {heatmap_times: [2.0, 5.0], top_inputs: 3}
"""


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("full")
    (folder / "obs.csv").write_text(OBS)
    path = write(folder, "lv.yaml", FULL)
    out = folder / "result"
    assert cli.main(["run", str(path), "--out", str(out), "-q"]) == 0
    return path, out


def hand_built_problem():
    """The problem FULL describes, built without the config code."""
    times = np.union1d(np.linspace(0.0, 6.0, 25), [1.3, 2.7, 4.1])
    return sens.Problem(models.get("lotka_volterra"), times=times, parameters={"alpha": 1.1},
                        wrt=["alpha", "beta", "gamma", "delta", "y0.prey"], rtol=1e-9, atol=1e-9)


def test_full_run_writes_every_file(full_run):
    _, out = full_run
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["results.nc", "summary.json", "ranking.csv", "trajectory.csv", "config.yaml",
                            "heatmap.png", "heatmap_at_times.png", "trajectories.png", "sensitivities.png"])
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []


def test_full_run_arrays_match_the_library(full_run):
    _, out = full_run
    prob = hand_built_problem()
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        ds = ds.load()
    assert ds.jacobian.dims == ("time", "output", "input")
    assert list(ds.input.values) == ["alpha", "beta", "gamma", "delta", "y0.prey"]
    assert list(ds.output.values) == ["prey", "predator"]
    np.testing.assert_allclose(ds.time.values, prob.times)
    J = sens.jacobian(prob, mode="forward")
    np.testing.assert_allclose(ds.jacobian.values, J.values, rtol=1e-6, atol=1e-9)
    y = sens.simulate(prob).outputs
    np.testing.assert_allclose(ds.outputs.values, y, rtol=1e-7)
    # d ln y / d ln p, computed here from the Jacobian and the input values
    p = np.array([1.1, 0.1, 1.5, 0.75, 10.0])
    np.testing.assert_allclose(ds.normalized_jacobian.values, J.values * p / y[:, :, None], rtol=1e-6)
    np.testing.assert_allclose(ds.input_value.values, p)
    # the objective and its gradient by the chain rule through the Jacobian
    obs = [(1.3, 0, 6.0), (1.3, 1, 9.5), (2.7, 0, 2.1), (4.1, 0, 1.0), (4.1, 1, 6.0)]
    value, grad = 0.0, np.zeros(5)
    for t, j, d in obs:
        k = int(np.argmin(abs(prob.times - t)))
        r = (y[k, j] - d) / 0.5
        value += r * r
        grad += 2 * r / 0.5 * J.values[k, j]
    np.testing.assert_allclose(ds.gradient.values, grad, rtol=1e-6)
    assert ds.gradient.attrs["objective_value"] == pytest.approx(value, rel=1e-8)
    # the Hessian: symmetric, and the derivative of the gradient (central differences)
    H = ds.hessian.values
    np.testing.assert_allclose(H, H.T, rtol=1e-6, atol=1e-8)
    spec = config.load(full_run[0])
    for i, (name, h) in enumerate(zip(ds.input.values, [1e-5, 1e-6, 1e-5, 1e-5, 1e-4])):
        def grad_at(x):
            changed = spec.problem.replace(y0={"prey": x}) if name == "y0.prey" else \
                spec.problem.replace(parameters={name: x})
            return sens.gradient(changed, spec.objective, mode="forward").grad
        fd = (grad_at(p[i] + h) - grad_at(p[i] - h)) / (2 * h)
        np.testing.assert_allclose(H[:, i], fd, rtol=2e-4, atol=1e-4 * np.abs(H).max())
    np.testing.assert_allclose(ds.observations.values[1], [2.1, np.nan])


def test_full_run_ranking_and_summary(full_run):
    path, out = full_run
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        S, times, inputs = ds.normalized_jacobian.values, ds.time.values, list(ds.input.values)
    score = trapezoid(np.nan_to_num(np.abs(S)), times, axis=0).sum(axis=0)
    rows = (out / "ranking.csv").read_text().splitlines()
    assert rows[0] == "rank,input,score,share,prey,predator,measure"
    ranked = [r.split(",") for r in rows[1:]]
    assert [r[1] for r in ranked] == [inputs[i] for i in np.argsort(-score, kind="stable")]
    np.testing.assert_allclose([float(r[2]) for r in ranked], np.sort(score)[::-1], rtol=1e-8)

    s = json.loads((out / "summary.json").read_text())
    assert s["status"] == "complete" and s["jacobian"]["mode"] in ("forward", "adjoint")
    assert s["jacobian"]["plan"]["chosen"]["mode"] == s["jacobian"]["mode"]
    assert "inputs" in s["jacobian"]["plan"]["explanation"]
    for stage in ("simulate", "jacobian", "gradient"):
        assert {"compile", "run", "wall"} <= set(s["timings"][stage])
    assert s["solver_stats"]["simulate"]["num_steps"] > 0
    assert set(s["versions"]) >= {"sensitivity", "jax", "diffrax", "numpy"}
    assert s["config"]["sensitivity"]["objective"]["sigma"] == 0.5
    assert s["config"]["solver"]["max_steps"] == 100000  # defaults filled in
    assert s["problem"]["n_times"] == 28 and s["objective"]["type"] == "sum_of_squares"
    assert len(s["objective"]["hessian"]) == 5
    resolved = config.load(out / "config.yaml", overrides=[f"sensitivity.objective.data={path.parent / 'obs.csv'}"])
    assert resolved.problem.times.size == 28  # the written config reruns as the same problem


def test_heatmap_is_a_picture(full_run):
    """heatmap.png: magnitudes (time-integrated |S|, tests/test_heatmap.py checks the values)."""
    _, out = full_run
    img = imread(out / "heatmap.png")[..., :3]
    assert img.std() > 0.05
    for name in ("heatmap_at_times.png", "trajectories.png", "sensitivities.png"):
        assert imread(out / name).std() > 0.02


def test_existing_result_needs_force(full_run, tmp_path):
    path, out = full_run
    before = (out / "summary.json").read_text()
    code, stdout, err = run_cli("run", path, "--out", out, "--set", "output.plots=[]")
    assert code == 2 and "already holds a result; rerun with --force" in err
    assert (out / "summary.json").read_text() == before
    assert cli.main(["run", str(path), "--out", str(out), "--force", "--set", "output.plots=[]", "-q"]) == 0
    assert not (out / "heatmap.png").exists()  # replaced, not merged


def test_plan_prints_the_decision(full_run, capsys):
    path, _ = full_run
    assert cli.main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Jacobian: 28 times x 2 outputs = 56 outputs, 5 inputs -> forward")
    assert "forward chosen" in out and "Gradient of the objective (sum_of_squares)" in out
    assert "Hessian (5 x 5) ->" in out


def test_calibrate_stores_and_prints_the_measured_constants(tmp_path, capsys, monkeypatch):
    # The measurement itself (sensitivity.api.calibrate_machine) compiles a neural ODE's
    # probes, ~30 s on a cold cache; here it is replaced by a stand-in whose numbers the
    # command must store and print unchanged.
    measured = sens.Calibration(0.0123, 1.75, 0.0456, None, "stand-in measurement")
    calls = []
    monkeypatch.setattr(sens.api, "calibrate_machine", lambda repeats=3: calls.append(repeats) or measured)
    target = tmp_path / "sub" / "cal.json"
    assert cli.main(["calibrate", "--file", str(target), "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert calls == [2]
    data = json.loads(target.read_text())
    assert (data["tangent"], data["record"], data["cotangent"]) == (0.0123, 1.75, 0.0456)
    assert "a = 0.0123" in out and "r = 1.75" in out and "b = 0.0456" in out and f"saved to {target}" in out
    loaded = stored_calibration(target)
    assert (loaded.tangent, loaded.record, loaded.cotangent) == (0.0123, 1.75, 0.0456)


# --------------------------------------------------------------------------- configs/
def objective_gradient_from_jacobian(spec, ds) -> tuple[float, np.ndarray]:
    """The config's objective and its gradient computed here from the written outputs and
    Jacobian by the chain rule (independent of the code path of sens.gradient)."""
    obj_cfg, p = spec.config.sensitivity.objective, spec.problem
    y, J, t = ds.outputs.values, ds.jacobian.values, ds.time.values
    if obj_cfg.type == "sum_of_squares":
        value, grad = 0.0, np.zeros(J.shape[2])
        obs = spec.observations
        for i, ti in enumerate(obs.times):
            k = int(np.argmin(abs(t - ti)))
            for c, name in enumerate(obs.columns):
                if np.isfinite(obs.values[i, c]):
                    sigma = obj_cfg.sigma.get(name, 1.0) if isinstance(obj_cfg.sigma, dict) else obj_cfg.sigma
                    j = p.of.index(name)
                    r = (y[k, j] - obs.values[i, c]) / sigma
                    value += r * r
                    grad += 2 * r / sigma * J[k, j]
        return value, grad
    cols = [p.of.index(n) for n in (obj_cfg.outputs or p.of)]
    if obj_cfg.type == "final_value":
        return y[-1, cols].sum(), J[-1, cols].sum(axis=0)
    # the integral of the ODE, not a trapezoid of the save grid: the model with the integral
    # as an explicit extra state, its value at the last save time minus the first
    g = sens.gradient(auc_state_problem(p, [p.of[c] for c in cols]), lambda ys: ys[-1, 0] - ys[0, 0],
                      mode="forward")
    return g.value, g.grad


def _state_of(i):
    return lambda t, y, q: y[i]


def auc_state_problem(p, names):
    """p with its model augmented by auc' = sum of the outputs `names`, the one output."""
    m, n = p.model, p.model.n_states
    hs = [m.observables[k] if k in m.observables else _state_of(m.states.index(k)) for k in names]

    def rhs(t, z, q):
        y = z[:n]
        return jnp.concatenate([jnp.asarray(m.rhs(t, y, q)).reshape(n),
                                jnp.reshape(sum(h(t, y, q) for h in hs), (1,))])

    aug = sens.ODEModel(m.name + "_auc", list(m.states) + ["auc_"], dict(m.parameters), rhs, np.append(m.y0, 0.0))
    return sens.Problem(aug, p.times, wrt=list(p.input_names), of=["auc_"], parameters=dict(p.parameters),
                        y0=np.append(p.y0, 0.0), t0=p.t0, doses=list(p.doses), rtol=p.rtol, atol=p.atol)


@pytest.mark.skipif(not CONFIGS, reason="configs/ holds no config yet")
@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_config_runs(path, tmp_path):
    out = tmp_path / "out"
    points = POINTS.get(path.stem, 12)
    assert cli.main(["run", str(path), "--out", str(out), "--points", str(points), *QUICK]) == 0
    spec = config.load(path, overrides=["sensitivity.probe=never"], points=points)
    p = spec.problem
    s = json.loads((out / "summary.json").read_text())
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        ds = ds.load()
    assert ds.jacobian.dims == ("time", "output", "input")
    assert list(ds.input.values) == list(p.input_names) and list(ds.output.values) == list(p.of)
    assert ds.jacobian.shape == (p.times.size, len(p.of), p.n_inputs)
    assert np.all(np.isfinite(ds.jacobian.values))
    # the library on the same Problem (compiled already: same structure)
    J = sens.jacobian(p, mode=s["jacobian"]["mode"], probe_problem=False)
    np.testing.assert_allclose(ds.jacobian.values, J.values, rtol=1e-10, atol=1e-12)
    # at t = t0 the outputs are the initial state, which moves only with its own y0 input
    if not p.model.observables and p.times[0] == p.t0:
        idx = [p.model.states.index(o) for o in p.of]
        np.testing.assert_allclose(ds.outputs.values[0], p.y0[idx], rtol=1e-12)
        expected = np.array([[1.0 if name == f"y0.{o}" else 0.0 for name in p.input_names] for o in p.of])
        np.testing.assert_allclose(ds.jacobian.values[0], expected, atol=1e-12)
    # the ranking file agrees with the written sensitivities
    S = ds.normalized_jacobian.values if "normalized_jacobian" in ds else ds.jacobian.values
    score = trapezoid(np.nan_to_num(np.abs(S)), ds.time.values, axis=0).sum(axis=0)
    with open(out / "ranking.csv", newline="") as fh:
        ranked = list(csv.DictReader(fh))
    np.testing.assert_allclose([float(r["score"]) for r in ranked],
                               [score[p.input_names.index(r["input"])] for r in ranked], rtol=1e-8)
    assert {r["input"] for r in ranked} == set(p.input_names)
    for measure in {r["measure"] for r in ranked}:  # ranked within each measure (time inputs apart)
        group = [float(r["score"]) for r in ranked if r["measure"] == measure]
        assert group == sorted(group, reverse=True)
    if spec.objective is not None:
        value, grad = objective_gradient_from_jacobian(spec, ds)
        assert s["objective"]["value"] == pytest.approx(value, rel=1e-7)
        np.testing.assert_allclose(ds.gradient.values, grad, rtol=1e-5, atol=1e-7 * np.abs(grad).max())
    if "heatmap" in spec.config.output.plots:
        assert imread(out / "heatmap.png")[..., :3].std() > 0.02


@pytest.mark.skipif(not (ROOT / "configs" / "lotka_volterra.yaml").exists(), reason="no LV config yet")
def test_readme_command_as_a_subprocess(tmp_path):
    code, out, err = run_cli("run", ROOT / "configs" / "lotka_volterra.yaml", "--out", tmp_path / "lv",
                             "--points", "12", cwd=ROOT)  # the grid test_every_config_runs compiled
    assert code == 0, err
    assert "results in" in out and "compiling and simulating" in err
    assert (tmp_path / "lv" / "summary.json").exists() and (tmp_path / "lv" / "heatmap.png").exists()


def test_ctrl_c_leaves_no_result(tmp_path):
    config_path = write(tmp_path, "lv.yaml", GOOD)
    proc = subprocess.Popen([sys.executable, "-m", "sensitivity", "run", str(config_path), "--out",
                             str(tmp_path / "res" / "lv")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tmp_path)
    seen = ""
    while "Jacobian" not in seen:  # interrupt once the sensitivities have started
        line = proc.stderr.readline()
        assert line, seen
        seen += line
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, seen + err
    assert "interrupted; no result was written" in err and "Traceback" not in err
    assert not (tmp_path / "res").exists() or list((tmp_path / "res").iterdir()) == []


def test_validate_checks_a_petab_run_config(bad_runs):
    """A run config with a `petab:` key is checked against its own schema, as `run` does."""
    code, out, err = bad_runs[1]["validate_petab"]
    assert code == 0 and "valid. PEtab problem" in out and "problem.yaml" in out, (out, err)
    code, out, err = bad_runs[1]["validate_petab_bad"]
    assert code == 2 and "mode" in err and "fit.tries" in err, err

