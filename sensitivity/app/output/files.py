"""Results on disk: labelled arrays (NetCDF), tables (CSV), the summary (JSON), written
atomically into one folder.

`output_folder(target, force)` is a context manager that yields a fresh temporary folder
next to the target and renames it to the target only when the block succeeds: a failed
or interrupted run leaves no half-written result that looks complete (at most a hidden
`.NAME.partial-*` folder if the process is killed outright). An existing result is only
replaced with force=True.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ...core.errors import OutputExistsError

RESULTS_FILE = "results.nc"
SUMMARY_FILE = "summary.json"
RANKING_FILE = "ranking.csv"
TRAJECTORY_FILE = "trajectory.csv"
CONFIG_FILE = "config.yaml"


def check_target(target: Path, force: bool) -> None:
    """Raise OutputExistsError if `target` exists (and force is off) or is a file."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"output path {target} exists and is not a folder; choose another "
                                "with --out DIR or output.dir")
    if target.exists() and not force and any(target.iterdir()):
        raise OutputExistsError(f"output folder {target} already holds a result; rerun with --force to "
                                "replace it, or choose another folder with --out DIR")


@contextmanager
def output_folder(target: str | Path, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; on success it becomes `target` (replacing
    an existing one only with force), on any error or interrupt it is deleted."""
    target = Path(target)
    check_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = target.parent / f".{target.name}.partial-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        check_target(target, force)
        old = None
        if target.exists():
            old = target.parent / f".{target.name}.old-{tag}"
            os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            if old is not None:
                os.replace(old, target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- writers
def dataset(analysis, problem, observations=None):
    """The run's labelled arrays as an `xarray.Dataset`.

    Variables: outputs (time, output), states (time, state), jacobian (time, output, input),
    normalized_jacobian (time, output, input) when normalised, input_value (input),
    time_integrated (output, input), and for an objective: gradient (input) and hessian
    (input, input_2). Coordinates carry the names.
    """
    import xarray as xr

    jac, traj = analysis.jacobian, analysis.trajectory
    inputs = list(jac.input_names)
    coords = {"time": np.asarray(jac.times), "output": list(jac.output_names), "input": inputs,
              "state": list(traj.state_names)}
    data = {
        "outputs": (("time", "output"), np.asarray(traj.outputs),
                    {"long_name": "model outputs at the save times"}),
        "states": (("time", "state"), np.asarray(traj.states), {"long_name": "model states"}),
        "jacobian": (("time", "output", "input"), np.asarray(jac.values),
                     {"long_name": "d output / d input", "mode": jac.mode, "variant": str(jac.variant)}),
        "input_value": (("input",), np.asarray(jac.input_values), {"long_name": "value of each input"}),
    }
    from ...analyses.metrics import time_integrated

    if analysis.normalized:
        data["normalized_jacobian"] = (("time", "output", "input"), np.asarray(analysis.sensitivities),
                                       {"long_name": "d ln output / d ln input (NaN where the output is 0)"})
    data["time_integrated"] = (("output", "input"), time_integrated(jac.times, analysis.sensitivities),
                               {"long_name": "integral over time of |" +
                                ("d ln y / d ln p" if analysis.normalized else "dy/dp") + "| (trapezoid rule)"})
    if analysis.gradient is not None:
        g = analysis.gradient
        data["gradient"] = (("input",), np.asarray(g.grad),
                            {"long_name": "d objective / d input", "objective_value": float(g.value),
                             "mode": g.mode})
    if analysis.hessian is not None:
        coords["input_2"] = inputs
        data["hessian"] = (("input", "input_2"), np.asarray(analysis.hessian),
                           {"long_name": "d2 objective / d input d input_2"})
    if observations is not None:
        coords["observation_time"] = np.asarray(observations.times)
        coords["observed_output"] = list(observations.columns)
        data["observations"] = (("observation_time", "observed_output"), np.asarray(observations.values),
                                {"long_name": "data of the sum_of_squares objective (NaN: missing)"})
    ds = xr.Dataset(data, coords=coords)
    ds.attrs.update({"model": problem.model.name, "t0": float(problem.t0),
                     "created_by": "sensitivity run"})
    return ds


def write_netcdf(ds, path: Path) -> Path:
    """Write an xarray Dataset as NetCDF-4 (engine h5netcdf)."""
    ds.to_netcdf(path, engine="h5netcdf")
    return path


def write_csv(rows: Sequence[dict], path: Path, float_format: str = "{:.10g}") -> Path:
    """Write dict rows as CSV with the first row's keys as header."""
    with open(path, "w", newline="") as fh:
        if not rows:
            return path
        w = csv.writer(fh)
        keys = list(rows[0])
        w.writerow(keys)
        for r in rows:
            w.writerow([float_format.format(r[k]) if isinstance(r[k], float) else r[k] for k in keys])
    return path


def write_trajectory_csv(times, outputs, names, path: Path) -> Path:
    """The outputs (n_times, n_outputs) as CSV: columns time, then one per output."""
    rows = [{"time": float(t), **{n: float(v) for n, v in zip(names, row)}}
            for t, row in zip(times, np.asarray(outputs))]
    return write_csv(rows, path)


def jsonable(value):
    """Plain JSON data: numpy scalars and arrays to Python numbers and lists, non-finite
    floats to None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(data: dict, path: Path) -> Path:
    """Write data as indented JSON (through `jsonable`)."""
    path.write_text(json.dumps(jsonable(data), indent=2) + "\n")
    return path


def write_yaml(data: dict, path: Path) -> Path:
    """Write data as YAML (key order kept)."""
    import yaml

    path.write_text(yaml.safe_dump(jsonable(data), sort_keys=False))
    return path


def read_summary(folder: str | Path) -> dict:
    """The summary.json of a result folder."""
    return json.loads((Path(folder) / SUMMARY_FILE).read_text())


def open_results(folder: str | Path):
    """The labelled arrays of a result folder, as an xarray Dataset (loaded in memory)."""
    import xarray as xr

    with xr.open_dataset(Path(folder) / RESULTS_FILE, engine="h5netcdf") as ds:
        return ds.load()
