"""Results on disk: labelled arrays (NetCDF), tables (CSV), the summary (JSON), written
atomically into one folder, and the checks that the folder can be written at all.

`output_folder(target, force)` is a context manager that yields a fresh temporary folder
next to the target and renames it to the target only when the block succeeds: a failed
or interrupted run leaves no half-written result that looks complete (at most a hidden
`.NAME.partial-*` folder if the process is killed outright). An existing result is only
replaced with force=True.

`check_output_dir(target)` runs before any work: it finds the nearest folder that exists
on the way to `target` and makes a test folder and file there, removing both. A path
below an existing file, a read-only file system, a virtual one (/proc, /sys), missing
permissions or a full disk fail there, naming the path and the reason, instead of after
all the computing.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import shutil
import uuid
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ...analyses.metrics import heatmap_values, nearest_indices, time_integrated
from ...core.errors import OutputExistsError, OutputPathError
from ...plots import run as plot
from ...plots.fit import marginals_figure

RESULTS_FILE = "results.nc"
SUMMARY_FILE = "summary.json"
RANKING_FILE = "ranking.csv"
TRAJECTORY_FILE = "trajectory.csv"
CONFIG_FILE = "config.yaml"
MULTISTART_FILE = "multistart.csv"
PROFILE_INTERVALS_FILE = "profile_intervals.csv"
SAMPLE_FILES = ("samples.nc", "samples.csv", "sample_diagnostics.csv")


# --------------------------------------------------------------------------- can it be written?
def check_target(target: Path, force: bool) -> None:
    """Raise OutputExistsError if `target` exists (and force is off) or is a file."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"output path {target} exists and is not a folder; choose another "
                                "with --out DIR or output.dir")
    if target.exists() and not force and any(target.iterdir()):
        raise OutputExistsError(f"output folder {target} already holds a result; rerun with --force to "
                                "replace it, or choose another folder with --out DIR")


_VIRTUAL = ("/proc", "/sys", "/dev")


def _reason(exc: OSError, folder: Path) -> str:
    text = exc.strerror or str(exc)
    if str(folder.resolve()).startswith(_VIRTUAL) and str(folder.resolve()) != "/":
        text += f"; {folder} is on a virtual file system ({', '.join(_VIRTUAL)} are not for results)"
    elif exc.errno == errno.EROFS:
        text += "; the file system is mounted read-only"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        text += f"; you may not create files in {folder}"
    elif exc.errno == errno.ENOSPC:
        text += "; the disk is full"
    return text


def check_output_dir(target: str | Path) -> None:
    """Raise `OutputPathError` unless the folder `target` can be created (or replaced) and
    written: every existing part of its path must be a folder, and the nearest existing one
    must take a test folder and file (removed again). Writes nothing that stays."""
    target = Path(target).expanduser()
    full = Path(os.path.abspath(target))
    hint = "; choose another with --out DIR or output.dir"
    for part in [full, *full.parents]:
        if part.exists() and not part.is_dir():
            if part == full:
                raise OutputPathError(f"output folder {target}: {part} exists and is not a folder{hint}")
            raise OutputPathError(f"output folder {target}: {part} is a file, so no folder can be "
                                  f"created below it{hint}")
    # results are written beside the target (then renamed): its parent must take new entries
    folder = next((p for p in full.parents if p.exists()), full)
    probe = folder / f".sensitivity-write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError as exc:
        raise OutputPathError(f"output folder {target}: cannot create folders in {folder}: "
                              f"{_reason(exc, folder)}{hint}") from None
    try:
        with open(probe / "test", "wb") as fh:
            fh.write(b"sensitivity write test\n")
    except OSError as exc:
        raise OutputPathError(f"output folder {target}: cannot write files in {folder}: "
                              f"{_reason(exc, folder)}{hint}") from None
    finally:
        for path in (probe / "test", probe):
            try:
                path.unlink() if path.is_file() else path.rmdir()
            except OSError:
                pass


# --------------------------------------------------------------------------- the folder
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
    normalized_jacobian (time, output, input) when normalised (for time inputs scaled by the
    horizon, see `runners.local`), measure (input: what each input's column holds),
    input_value (input), time_integrated (output, input), and for an objective: gradient (input) and hessian
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
    measures = getattr(analysis, "measures", ()) or ()
    if analysis.normalized:
        data["normalized_jacobian"] = (("time", "output", "input"), np.asarray(analysis.sensitivities),
                                       {"long_name": "d ln output / d ln input (NaN where the output is 0); "
                                                     "for time inputs d ln output / d (time / horizon)",
                                        "time_inputs": list(getattr(analysis, "time_inputs", ())),
                                        "horizon": float(getattr(analysis, "horizon", np.nan))})
    if measures:
        data["measure"] = (("input",), np.array(measures, dtype=str),
                           {"long_name": "what normalized_jacobian (else jacobian) holds for each input"})
    data["time_integrated"] = (("output", "input"), time_integrated(jac.times, analysis.sensitivities),
                               {"long_name": "integral over time of |" +
                                getattr(analysis, "label", "d ln y / d ln p" if analysis.normalized else "dy/dp")
                                + "| (trapezoid rule)"})
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


def write_heatmaps(folder: Path, problem, analysis, view: str = "magnitude", at_times=None) -> list[str]:
    """heatmap.png (and heatmap_at_times.png for `at_times`) into `folder`; returns the names.

    view "magnitude": the time-integrated |S| per output and input, the values ranking.csv
    gives for each output, so a sensitivity that changes sign does not cancel; at chosen
    times |S(t)|. view "signed": the signed time integral (signs cancel) and S(t). The view
    is named in every title and in the colour-bar label.
    """
    label, times, S = analysis.label, problem.times, analysis.sensitivities
    jac = analysis.jacobian
    span = f"t in [{times[0]:g}, {times[-1]:g}]"
    signed = view == "signed"
    if signed:
        title, bar = f"{problem.model.name}: signed time integral over {span} (signs cancel)", \
            f"integral of {label} dt (signed)"
    else:
        title, bar = f"{problem.model.name}: time-integrated |S| over {span}", f"integral of |{label}| dt"
    plot.heatmap([heatmap_values(times, S, view)], jac.input_names, jac.output_names, [title], bar,
                 folder / "heatmap.png", signed=signed)
    files = ["heatmap.png"]
    if at_times:
        idx = nearest_indices(times, at_times)
        what = f"{label} (signed)" if signed else f"|{label}|"
        plot.heatmap([S[k] if signed else np.abs(S[k]) for k in idx], jac.input_names, jac.output_names,
                     [f"t = {times[k]:.4g}" for k in idx], what, folder / "heatmap_at_times.png",
                     suptitle=f"{problem.model.name}: {what} at chosen times", signed=signed)
        files.append("heatmap_at_times.png")
    return files


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


# --------------------------------------------------------------------------- after a fit
def _safe(name: str) -> str:
    """A parameter name as a piece of a file name."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in str(name))


def write_multistart(folder: Path, fit, plots: bool = True, best: int = 10, tol: float = 0.1) -> list[str]:
    """A multi-start fit (`FitResult` or `LikelihoodFit`) into `folder`: multistart.csv with
    one row per start in start order (start, final_value: the objective at its end (cost =
    1/2 sum r^2 for a Problem, nllh for PEtab), converged: the optimiser's flag, at_best:
    within `tol` of the best, iterations, the final parameters, then start_<name>: where it
    began), and waterfall.png and multistart_parameters.png. Returns the file names."""
    import pandas as pd

    table = fit.starts
    names = list(fit.input_names)
    v = fit.start_values()
    ok = np.isfinite(v)
    best_value = v[ok].min() if ok.any() else np.inf
    out = pd.DataFrame({"start": table["start"].to_numpy(int), "final_value": v,
                        "converged": table["success"].to_numpy(bool), "at_best": ok & (v <= best_value + tol),
                        "iterations": table["iterations"].to_numpy(int)})
    for nm in names:
        out[nm] = table[nm].to_numpy(float)
    for nm in names:
        out[f"start_{nm}"] = table[f"start_{nm}"].to_numpy(float)
    out.to_csv(folder / MULTISTART_FILE, index=False, float_format="%.10g")
    files = [MULTISTART_FILE]
    if plots:
        fit.waterfall(folder / "waterfall.png", tol=tol)
        fit.parameters(folder / "multistart_parameters.png", best=best)
        files += ["waterfall.png", "multistart_parameters.png"]
    return files


def write_profiles(folder: Path, prof, plots: bool = True, title: str = "") -> list[str]:
    """A `ProfileResult` into `folder`: profile_<name>.csv per parameter (delta_nllh and
    every parameter along the path, estimation scale), profile_intervals.csv (one row per
    parameter: scale, estimate, lower, upper, verdict, points, and the interval on the
    natural scale) and profiles.png. Returns the file names."""
    files = []
    for name in prof.profiles:
        f = f"profile_{_safe(name)}.csv"
        prof.path(name).to_csv(folder / f, index=False, float_format="%.10g")
        files.append(f)
    table = prof.to_frame()
    scale = table["scale"].to_numpy(str)
    with np.errstate(over="ignore"):
        for col in ("lower", "upper"):
            x = table[col].to_numpy(float)
            table[f"{col}_natural"] = np.where(scale == "log", np.exp(x), np.where(scale == "log10", 10.0 ** x, x))
    table.to_csv(folder / PROFILE_INTERVALS_FILE, float_format="%.10g")
    files.append(PROFILE_INTERVALS_FILE)
    if plots:
        prof.plot(folder / "profiles.png", title=title)
        files.append("profiles.png")
    return files


def write_samples(folder: Path, s, plots: bool = True, title: str = "") -> list[str]:
    """A `SampleResult` into `folder`: samples.nc (ArviZ InferenceData: posterior and sample
    statistics), samples.csv (chain, draw, log_posterior, divergent, one column per
    parameter on the estimation scale), sample_diagnostics.csv (mean, sd, quantiles, R-hat,
    ESS per parameter), posterior_marginals.png and, where the result draws them
    (`plot_trace`, `plot_pairs`, `plot_predictive`), trace.png, posterior_pairs.png and
    posterior_predictive.png. Returns the file names."""
    import pandas as pd

    s.to_arviz().to_netcdf(str(folder / SAMPLE_FILES[0]))
    c, d, n = s.samples.shape
    draws = pd.DataFrame({"chain": np.repeat(np.arange(c), d), "draw": np.tile(np.arange(d), c),
                          "log_posterior": np.asarray(s.log_posterior, dtype=np.float64).reshape(-1)})
    if getattr(s, "divergent", None) is not None:
        draws["divergent"] = np.asarray(s.divergent, bool).reshape(-1)
    for i, name in enumerate(s.names):
        draws[name] = s.samples[:, :, i].reshape(-1)
    draws.to_csv(folder / SAMPLE_FILES[1], index=False, float_format="%.10g")
    s.to_frame().to_csv(folder / SAMPLE_FILES[2], float_format="%.10g")
    files = list(SAMPLE_FILES)
    if plots:
        for method, name in (("plot_trace", "trace.png"), ("plot_pairs", "posterior_pairs.png"),
                             ("plot_predictive", "posterior_predictive.png")):
            draw = getattr(s, method, None)  # the plots the result draws itself, where it has them
            if callable(draw):
                try:
                    draw(folder / name)
                except Exception as exc:  # noqa: BLE001 - a figure that fails must not lose the draws
                    warnings.warn(f"{name} was not drawn ({type(exc).__name__}: {exc}); the samples are written",
                                  RuntimeWarning, stacklevel=2)
                    continue
                files.append(name)
        own = getattr(s, "plot_marginals", None)
        if callable(own):
            own(folder / "posterior_marginals.png", title=title)
        else:
            marginals_figure(s.names, s.samples, s.scales, path=folder / "posterior_marginals.png", title=title)
        files.append("posterior_marginals.png")
    return files
