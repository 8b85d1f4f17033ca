"""What Sobol, Morris and DGSM share: the problem over the ranged inputs, model
evaluation through `ensemble`, and the labelled result with `to_salib` and `plot`."""

from __future__ import annotations

import warnings
from typing import Callable, Mapping

import numpy as np

from ...ad.objective import scalar_objective
from ...ad.quadrature import with_quadrature
from ...core.errors import InputError
from ...core.problem import Problem
from ..ensemble import ensemble
from .sampling import Range, parse_ranges


def setup(problem: Problem, ranges: Mapping, of=None, at=None) -> tuple[Problem, tuple[Range, ...]]:
    """The problem whose inputs are the ranged ones (the others stay at their values),
    with outputs `of` and save times `at` when given, and the parsed ranges."""
    if not isinstance(problem, Problem):
        raise InputError(f"problem must be a sensitivity.Problem, got {type(problem).__name__}")
    rs = parse_ranges(problem, ranges)
    changes: dict = {"wrt": [r.name for r in rs]}
    if of is not None:
        changes["of"] = of
    if at is not None:
        changes["times"] = np.atleast_1d(np.asarray(at, dtype=np.float64))
        changes["t0"] = problem.t0
    try:
        return problem.replace(**changes), rs
    except InputError as exc:
        where = "at" if str(exc).startswith(("times", "t0", "the time span")) else "of"
        raise InputError(f"{where}: {exc}") from None


_OBJECTIVES: dict = {}  # objective -> its jitted vmap (a new jit per call would trace and compile again)


def objective_values(objective: Callable, outputs: np.ndarray) -> np.ndarray:
    """objective(ys) for every sample's outputs (n, n_times, n_of) -> (n,), in one jitted
    vmap (kept per objective); NaN rows stay NaN."""
    import jax
    import jax.numpy as jnp


    try:
        g = _OBJECTIVES.get(objective)
    except TypeError:  # an unhashable callable: jit it afresh
        return np.asarray(jax.jit(jax.vmap(scalar_objective(objective)))(jnp.asarray(outputs)))
    if g is None:
        if len(_OBJECTIVES) > 32:
            _OBJECTIVES.pop(next(iter(_OBJECTIVES)))
        g = _OBJECTIVES[objective] = jax.jit(jax.vmap(scalar_objective(objective)))
    return np.asarray(g(jnp.asarray(outputs)))


def evaluate(problem: Problem, X: np.ndarray, objective: Callable | None, **ensemble_options):
    """Y for every row of X: the outputs (n, n_times, n_of), or objective values (n,) with
    an objective; and the ensemble Dataset (status, timings). An integral objective is
    a quadrature state of the solve (`ad.quadrature`), not a sum over the save times."""
    if objective is not None:
        problem, objective = with_quadrature(problem, objective)
    ds = ensemble(problem, X, task="simulate", **ensemble_options)
    Y = ds["outputs"].values
    if objective is not None:
        Y = objective_values(objective, Y)
        Y = np.where(ds["status"].values != 0, np.nan, Y)
    return Y, ds


def complete_groups(Y: np.ndarray, group: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Y (n group, ...) grouped in consecutive blocks of `group` rows; the blocks holding a
    failed (NaN) sample are dropped, with a warning. Returns (kept Y, dropped block indices)."""
    flat = Y.reshape(Y.shape[0], -1)
    bad_rows = ~np.all(np.isfinite(flat), axis=1)
    bad = np.flatnonzero(bad_rows.reshape(-1, group).any(axis=1))
    if bad.size:
        warnings.warn(f"{what}: {bad.size} of {Y.shape[0] // group} sample groups hold a failed solve and "
                      f"are left out (groups {bad[:10].tolist()}{' ...' if bad.size > 10 else ''}); "
                      "the ensemble's status says why", RuntimeWarning, stacklevel=3)
        keep = np.ones(Y.shape[0] // group, dtype=bool)
        keep[bad] = False
        Y = Y.reshape((-1, group) + Y.shape[1:])[keep].reshape((-1,) + Y.shape[1:])
    if Y.shape[0] == 0:
        raise InputError(f"{what}: every sample group holds a failed solve; nothing to analyse")
    return Y, bad


def extra_dims(problem: Problem, objective) -> tuple[tuple[str, ...], dict]:
    """The dimensions an index has besides `input`: (time, output), or none for an objective."""
    if objective is not None:
        return (), {}
    return ("time", "output"), {"time": problem.times, "output": list(problem.of)}


class GSAResult:
    """A global sensitivity result: `data`, an xarray Dataset whose variables have an
    `input` dimension (and `time`, `output` unless an objective was analysed), the samples
    and the ensemble's attributes. `to_salib()` gives SALib's dict for one output and time,
    `to_frame()` a pandas table, `plot()` a PNG."""

    method = ""
    salib_keys: tuple[str, ...] = ()

    def __init__(self, data, samples=None):
        self.data = data
        self.samples = samples

    def __getitem__(self, key):
        return self.data[key]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(\n{self.data!r}\n)"

    def select(self, output: str | None = None, time: float | None = None):
        """The Dataset at one output (default: the first) and one save time (default: the
        last), or the Dataset itself for a scalar objective."""
        ds = self.data
        if "output" in ds.dims:
            outs = list(ds["output"].values)
            if output is None:
                output = outs[0]
            if output not in outs:
                raise InputError(f"output = '{output}' is not analysed; outputs: {', '.join(map(str, outs))}")
            ds = ds.sel(output=output)
        if "time" in ds.dims:
            ds = ds.isel(time=-1) if time is None else ds.sel(time=time, method="nearest")
        return ds

    def to_salib(self, output: str | None = None, time: float | None = None) -> dict:
        """SALib's result keys (e.g. S1, S1_conf, ST, ST_conf, names) as arrays over the
        inputs, for one output and save time (see `select`)."""
        ds = self.select(output, time)
        out = {k: np.asarray(ds[k].values, dtype=np.float64) for k in self.salib_keys}
        out["names"] = [str(n) for n in ds["input"].values]
        return out

    def to_frame(self, output: str | None = None, time: float | None = None):
        """A pandas DataFrame indexed by input with the SALib keys as columns."""
        import pandas as pd

        d = self.to_salib(output, time)
        names = d.pop("names")
        return pd.DataFrame(d, index=pd.Index(names, name="input"))

    def to_netcdf(self, path) -> None:
        """Write `data` as NetCDF (h5netcdf)."""
        self.data.to_netcdf(path, engine="h5netcdf")
