"""Derivative-based global sensitivity measures (DGSM) from exact gradients.

For a scalar objective f(x) and inputs with distributions of Poincare constant C_i,

    nu_i = E[(df/dx_i)^2],   S_Ti <= C_i nu_i / V(f)        (Sobol' and Kucherenko 2009;
                                                             Lamboni et al. 2013)

with C_i = (b - a)^2 / pi^2 for x_i uniform on [a, b] and sd^2 for a normal. For a
log-uniform input the bound is taken in z = ln x_i (uniform on [ln a, ln b]):
df/dz = x_i df/dx_i. The gradients are exact: one `sens.ensemble(task="gradient")` over N
scrambled Sobol' points (for a Tsit5 solve without events, `lean_rk`'s discrete adjoint:
a few solves per gradient whatever D; else forward or adjoint as the cost model chooses),
so DGSM costs N gradients where SALib's finite differences cost N (D + 1) solves. The variance V comes
from the same N objective values.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from ...core.errors import InputError
from ...core.problem import Problem
from ...plots.gsa import dgsm_bars
from ..ensemble import ensemble
from .common import GSAResult, complete_groups, setup
from .sampling import sobol_points, to_values


def dgsm_measures(X: np.ndarray, values: np.ndarray, grads: np.ndarray, ranges, num_resamples: int = 100,
                  conf_level: float = 0.95, seed: int | None = 0) -> dict:
    """vi = E[(df/dx_i)^2] (in ln x_i for a log-uniform input), vi_std, dgsm = C_i vi / V (the
    bound on S_Ti), dgsm_conf (bootstrap half-width), each (d,), from points X (N, d), values
    (N,) and gradients (N, d)."""
    from scipy.stats import norm

    g = np.asarray(grads, dtype=np.float64).copy()
    for j, r in enumerate(ranges):
        if r.distribution == "log-uniform":
            g[:, j] *= X[:, j]
    C = np.array([r.poincare for r in ranges])
    g2 = g ** 2
    V = np.var(values)
    if not V > 0:
        raise InputError("dgsm: the objective does not vary over the ranges (variance 0); no bound to give")
    N = g2.shape[0]
    idx = np.random.default_rng(seed).integers(0, N, size=(num_resamples, N))
    boot = np.stack([C * g2[i].mean(axis=0) / np.var(values[i]) for i in idx])
    return {"vi": g2.mean(axis=0), "vi_std": g2.std(axis=0), "dgsm": C * g2.mean(axis=0) / V,
            "dgsm_conf": norm.ppf(0.5 + conf_level / 2) * boot.std(axis=0, ddof=1), "variance": V}


class DGSMResult(GSAResult):
    """DGSM: `data` holds vi, vi_std, dgsm (the upper bound on each total Sobol index) and
    dgsm_conf over `input`; `.to_salib()` (SALib's keys), `.plot()`."""

    method = "dgsm"
    salib_keys = ("vi", "vi_std", "dgsm", "dgsm_conf")

    def plot(self, path, **_):
        """Bars of the DGSM bound on S_T with confidence intervals."""
        return dgsm_bars(self, path)


def dgsm(problem: Problem, ranges: Mapping, n: int = 1024, objective: Callable | None = None,
         mode: str = "auto", num_resamples: int = 100, conf_level: float = 0.95, seed: int | None = 0,
         **ensemble_options) -> DGSMResult:
    """DGSM of a scalar objective(ys), ys (n_times, n_of), over `ranges` (input name ->
    (low, high) or a distribution): nu_i = E[(df/dx_i)^2] from exact gradients at n
    scrambled Sobol' points and the upper bound C_i nu_i / V on each total Sobol index.

    mode: "auto" (the cost model picks forward or adjoint gradients), "forward", "adjoint".
    `ensemble_options` (batch, executor, store, ...) go to `sens.ensemble`. Samples whose
    solve failed are left out, with a warning. Returns a `DGSMResult` over the inputs.
    """
    import xarray as xr


    if objective is None:
        raise InputError("dgsm needs an objective: objective(ys) -> scalar, ys (n_times, n_of)")
    prob, rs = setup(problem, ranges)
    d = len(rs)
    X = to_values(sobol_points(n, d, seed), rs)
    ens = ensemble(prob, X, task="gradient", objective=objective, mode=mode, **ensemble_options)
    both = np.concatenate([ens["value"].values[:, None], ens["gradient"].values, X], axis=1)
    kept, dropped = complete_groups(both, 1, "dgsm")
    m = dgsm_measures(kept[:, 1 + d:], kept[:, 0], kept[:, 1:1 + d], rs, num_resamples, conf_level, seed)
    V = m.pop("variance")
    long = {"vi": "E[(d objective / d input)^2] (in ln input for a log-uniform one)",
            "vi_std": "standard deviation of (d objective / d input)^2",
            "dgsm": "DGSM upper bound on the total Sobol index: C vi / V",
            "dgsm_conf": f"half-width of the {conf_level:.0%} bootstrap interval of dgsm"}
    data = {k: (("input",), v, {"long_name": long[k]}) for k, v in m.items()}
    ds = xr.Dataset(data, coords={"input": [r.name for r in rs]})
    ds["poincare"] = (("input",), np.array([r.poincare for r in rs]), {"long_name": "Poincare constant C"})
    ds.attrs.update(method="dgsm", n=int(n), variance=float(V), samples_dropped=int(dropped.size),
                    gradients=int(X.shape[0]), mode=ens.attrs["mode"], model=prob.model.name,
                    seed=-1 if seed is None else int(seed), ranges=repr({r.name: r.to_dict() for r in rs}),
                    **{f"ensemble_{k}": v for k, v in ens.attrs.items() if k in
                       ("batch", "chunks", "compiles", "wall_seconds", "executor", "n_failed")})
    return DGSMResult(ds, samples=ens)
