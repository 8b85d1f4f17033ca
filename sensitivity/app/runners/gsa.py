"""The `analysis:` block of a YAML run: compute Sobol, Morris and DGSM through the public
API, and write their results (NetCDF + CSV) and plots into the result folder.

Called by `sensitivity run` (cli.py) after the local sensitivities. Finished chunks of each
ensemble stream to a store beside the result folder (`.NAME.chunks/<method>/`), so that
`--resume` after an interrupt computes only the chunks that are missing; the store is
removed once the result folder is written.
"""

from __future__ import annotations

import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ...analyses.gsa import dgsm, morris, sobol

METHODS = ("sobol", "morris", "dgsm")


def store_root(output_dir: Path) -> Path:
    """The chunk stores of a run: a hidden folder beside its result folder."""
    output_dir = Path(output_dir)
    return output_dir.parent / f".{output_dir.name}.chunks"


def run_analyses(spec, executor=None, resume: bool = False, stage=None, progress: bool | None = None,
                 check=None) -> dict:
    """Run every method of spec.config.analysis on spec.problem; returns name -> result.

    executor: as for `sens.ensemble` (None: the config's `executor:`, else in process).
    check: called after every chunk (the CLI's Ctrl-C check: a run stops between chunks).
    """
    cfg = spec.config.analysis
    if cfg is None:
        return {}
    ex_cfg = getattr(spec.config, "executor", None)
    if executor is None and ex_cfg is not None:
        executor = ex_cfg.target()
    retries = ex_cfg.retries if ex_cfg is not None else 2
    stage = stage or (lambda label: nullcontext())
    root = store_root(spec.output_dir)
    common = dict(executor=executor, resume=resume, retries=retries, progress=progress, check=check)
    if cfg.batch:
        common["batch"] = cfg.batch
    out = {}
    p = spec.problem
    for name, m in cfg.methods().items():
        ranges = cfg.ranges_of(m)
        opts = dict(common, store=root / name, seed=m.seed, num_resamples=m.num_resamples,
                    conf_level=m.conf_level)
        started = time.perf_counter()
        if name == "sobol":
            label = f"Sobol indices: {m.n} x ({len(ranges)} + 2) = {m.n * (len(ranges) + 2)} solves"
            with stage(label):
                out[name] = sobol(p, ranges, m.n, of=m.of, at=m.at,
                                  objective=spec.objective if m.objective else None, **opts)
        elif name == "morris":
            label = f"Morris screening: {m.trajectories} x ({len(ranges)} + 1) solves"
            with stage(label):
                out[name] = morris(p, ranges, m.trajectories, m.levels, of=m.of, at=m.at,
                                   objective=spec.objective if m.objective else None, **opts)
        else:
            with stage(f"DGSM: {m.n} exact gradients of the objective"):
                out[name] = dgsm(p, ranges, m.n, objective=spec.objective, mode=m.mode, **opts)
        out[name].data.attrs["wall_seconds"] = time.perf_counter() - started
    return out


def write_analyses(folder: Path, results: dict, log_time: bool = False) -> list[str]:
    """Each result as NAME.nc (all indices, labelled), NAME.csv (one row per input, and per
    output and time when there are several) and NAME.png (plus sobol_over_time.png when
    Sobol indices have a time axis). Returns the file names."""
    files = []
    for name, res in results.items():
        res.to_netcdf(folder / f"{name}.nc")
        _write_csv(res, folder / f"{name}.csv")
        res.plot(folder / f"{name}.png")
        files += [f"{name}.nc", f"{name}.csv", f"{name}.png"]
        if name == "sobol" and "time" in res.data.dims and res.data.sizes["time"] > 1:
            res.plot(folder / "sobol_over_time.png", over_time=True)
            files.append("sobol_over_time.png")
    return files


def _write_csv(res, path: Path) -> None:
    df = res.data[list(res.salib_keys)].to_dataframe().reset_index()
    order = [c for c in ("output", "time", "input") if c in df.columns]
    df = df[order + list(res.salib_keys)]
    df.to_csv(path, index=False, float_format="%.10g")


def summary(results: dict) -> dict:
    """A JSON-ready digest: per method its settings and, for one output and time (the
    first output, the last time) or the objective, the SALib-keyed values."""
    out = {}
    for name, res in results.items():
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in res.data.attrs.items()
                 if isinstance(v, (int, float, str, np.generic))}
        d = res.to_salib()
        out[name] = {"settings": attrs,
                     "at": {k: str(res.select()[k].values) for k in ("output", "time") if k in res.data.dims},
                     "indices": {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in d.items()}}
    return out


def clear_stores(output_dir: Path) -> None:
    """Remove the chunk stores of a finished run."""
    shutil.rmtree(store_root(output_dir), ignore_errors=True)
