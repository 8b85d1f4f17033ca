"""Morris' elementary effects screening.

r trajectories of D + 1 points on a grid of `levels` levels in the unit cube, each step
changing one input by Delta = levels / (2 (levels - 1)). The elementary effect of input i
on one trajectory is EE_i = (f(x + Delta e_i) - f(x)) / Delta (signed by the direction of
the step), with Delta in unit-cube coordinates, as in SALib. Over the trajectories:

    mu = mean EE_i,   mu* = mean |EE_i| (Campolongo et al. 2007),   sigma = std EE_i (ddof 1)

and a bootstrap interval of mu*. The same numbers as SALib's `analyze.morris` on the same
samples.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from ...core.problem import Problem
from ...plots.gsa import morris_scatter
from .common import GSAResult, complete_groups, evaluate, extra_dims, setup
from .sampling import morris_design, to_values


def elementary_effects(U: np.ndarray, Y: np.ndarray, d: int, levels: int) -> np.ndarray:
    """EE (d, r, ...) from trajectories U (r (d + 1), d) in the unit cube (or any monotone
    map of it) and values Y (r (d + 1), ...)."""
    delta = levels / (2.0 * (levels - 1))
    Ug = np.asarray(U, dtype=np.float64).reshape(-1, d + 1, d)
    Y = np.asarray(Y, dtype=np.float64)
    Yg = Y.reshape((-1, d + 1) + Y.shape[1:])
    r = Ug.shape[0]
    step = np.diff(Ug, axis=1)  # (r, d, d): step k changes one input
    which = np.argmax(np.abs(step), axis=2)  # (r, d) the input changed at step k
    sign = np.sign(np.take_along_axis(step, which[..., None], axis=2)[..., 0])  # (r, d)
    dy = np.diff(Yg, axis=1)  # (r, d, ...)
    ee = np.empty((d, r) + Y.shape[1:])
    rows = np.arange(r)
    for k in range(d):
        ee[which[:, k], rows] = (sign[:, k].reshape((r,) + (1,) * (Y.ndim - 1)) * dy[:, k]) / delta
    return ee


def morris_measures(ee: np.ndarray, num_resamples: int = 100, conf_level: float = 0.95,
                    seed: int | None = 0) -> dict:
    """mu, mu_star, sigma, mu_star_conf (each (d, ...)) from elementary effects (d, r, ...)."""
    from scipy.stats import norm

    r = ee.shape[1]
    rng = np.random.default_rng(seed)
    boot = np.empty((ee.shape[0], num_resamples) + ee.shape[2:])
    for j in range(ee.shape[0]):  # SALib's order of draws: one index matrix per input
        idx = rng.integers(r, size=(num_resamples, r))
        boot[j] = np.mean(np.abs(ee[j][idx]), axis=1)
    return {"mu": ee.mean(axis=1), "mu_star": np.abs(ee).mean(axis=1), "sigma": ee.std(axis=1, ddof=1),
            "mu_star_conf": norm.ppf(0.5 + conf_level / 2) * boot.std(axis=1, ddof=1)}


class MorrisResult(GSAResult):
    """Morris measures: `data` holds mu, mu_star, sigma, mu_star_conf with dimensions
    (input, time, output), or (input,) for an objective; `.to_salib()`, `.plot()`."""

    method = "morris"
    salib_keys = ("mu", "mu_star", "sigma", "mu_star_conf")

    def plot(self, path, output: str | None = None, time: float | None = None):
        """mu* against sigma, one labelled point per input."""
        return morris_scatter(self, path, output, time)


def morris(problem: Problem, ranges: Mapping, trajectories: int = 20, levels: int = 4, of=None,
           at=None, objective: Callable | None = None, num_resamples: int = 100,
           conf_level: float = 0.95, seed: int | None = 0, **ensemble_options) -> MorrisResult:
    """Morris screening: mu, mu* and sigma of the elementary effects of every input, for
    every output at every save time (or at `at`), or for a scalar objective(ys).

    ranges: input name -> (low, high) or a distribution (see `gsa.sampling`). The model runs
    trajectories (D + 1) times through `sens.ensemble` (`ensemble_options` go there).
    Trajectories holding a failed solve are left out, with a warning.
    """
    import xarray as xr

    prob, rs = setup(problem, ranges, of, at)
    d = len(rs)
    U = morris_design(trajectories, d, levels, seed)
    X = to_values(U, rs)
    Y, ens = evaluate(prob, X, objective, **ensemble_options)
    Yk, dropped = complete_groups(Y, d + 1, "morris")
    if dropped.size:
        keep = np.setdiff1d(np.arange(U.shape[0] // (d + 1)), dropped)
        U = U.reshape(-1, d + 1, d)[keep].reshape(-1, d)
    ee = elementary_effects(U, Yk, d, levels)
    m = morris_measures(ee, num_resamples, conf_level, seed)
    dims, coords = extra_dims(prob, objective)
    long = {"mu": "mean elementary effect", "mu_star": "mean |elementary effect|",
            "sigma": "standard deviation of the elementary effects",
            "mu_star_conf": f"half-width of the {conf_level:.0%} bootstrap interval of mu_star"}
    data = {k: (("input",) + dims, v, {"long_name": long[k]}) for k, v in m.items()}
    ds = xr.Dataset(data, coords={"input": [r.name for r in rs], **coords})
    ds.attrs.update(method="morris", trajectories=int(trajectories), levels=int(levels),
                    n_runs=int(X.shape[0]), groups_dropped=int(dropped.size), model=prob.model.name,
                    delta=levels / (2.0 * (levels - 1)), seed=-1 if seed is None else int(seed),
                    ranges=repr({r.name: r.to_dict() for r in rs}),
                    **{f"ensemble_{k}": v for k, v in ens.attrs.items() if k in
                       ("batch", "chunks", "compiles", "wall_seconds", "executor", "n_failed")})
    return MorrisResult(ds, samples=ens)
