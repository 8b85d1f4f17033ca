"""Variance-based (Sobol') sensitivity indices from Saltelli's design.

For inputs x_1..x_D independent, the first-order index S_i = V[E(Y | x_i)] / V(Y) and the
total index S_Ti = E[V(Y | x_~i)] / V(Y). From N base rows of two independent matrices A,
B and the D matrices AB^(i) (A with column i from B), N (D + 2) model runs:

    S_i  ~ mean(f(B) (f(AB^(i)) - f(A))) / V         (Saltelli et al. 2010)
    S_Ti ~ mean((f(A) - f(AB^(i)))^2) / (2 V)         (Jansen 1999)

with V the variance of f over the rows of A and B, and f centred by its mean over all runs
first (the first-order estimator is not invariant to a shift of f); confidence intervals by bootstrap over
the N base rows (normal approximation, Z std), as SALib's `analyze.sobol` does, so the
numbers agree with SALib's on the same samples and, with the same seed, the intervals too.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from ...core.problem import Problem
from ...plots.gsa import sobol_bars, sobol_over_time
from .common import GSAResult, complete_groups, evaluate, extra_dims, setup
from .sampling import saltelli_design, to_values


def _first(A, AB, B, var):
    return np.mean(B[:, None] * (AB - A[:, None]), axis=0) / var


def _total(A, AB, var):
    return 0.5 * np.mean((A[:, None] - AB) ** 2, axis=0) / var


def sobol_indices(Y: np.ndarray, d: int, num_resamples: int = 100, conf_level: float = 0.95,
                  seed: int | None = 0) -> dict:
    """First and total Sobol indices from model values on Saltelli's design.

    Y: (N (d + 2), ...) in the layout of `saltelli_design` (trailing axes: several outputs
    at once). Returns S1, S1_conf, ST, ST_conf, each of shape (d, ...). NaN where the output
    does not vary. The bootstrap draws N x num_resamples row indices from
    numpy.random.default_rng(seed), as SALib does with the same (non-zero) seed.
    """
    from scipy.stats import norm

    Y = np.asarray(Y, dtype=np.float64)
    Y = Y - Y.mean(axis=0)  # the first-order estimator is not shift-invariant: centre, as SALib does
    extra = Y.shape[1:]
    Yg = Y.reshape(Y.shape[0] // (d + 2), d + 2, -1)  # (N, d + 2, K): outputs flattened
    N, K = Yg.shape[0], Yg.shape[2]
    r = np.random.default_rng(seed).integers(N, size=(N, num_resamples))
    z = norm.ppf(0.5 + conf_level / 2)
    out = {k: np.empty((d, K)) for k in ("S1", "S1_conf", "ST", "ST_conf")}
    block = max(1, 2**22 // max(N * d, 1))  # outputs at a time: temporaries of ~32 MiB
    for lo in range(0, K, block):
        cols = slice(lo, min(K, lo + block))
        part = _indices(Yg[:, :, cols], d, r, z)
        for k in out:
            out[k][:, cols] = part[k]
    return {k: v.reshape((d,) + extra) for k, v in out.items()}


def _indices(Yg: np.ndarray, d: int, r: np.ndarray, z: float) -> dict:
    """The indices and bootstrap half-widths for values Yg (N, d + 2, k) -> each (d, k)."""
    A, AB, B = Yg[:, 0], Yg[:, 1:d + 1], Yg[:, d + 1]
    num_resamples = r.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        var = np.var(np.concatenate([A, B]), axis=0)
        var = np.where(var > 0, var, np.nan)
        S1, ST = _first(A, AB, B, var), _total(A, AB, var)
        # every resample's means at once: a resample draws rows with multiplicities, so its
        # mean of any per-row quantity g is counts @ g / N, counts (num_resamples, N); the
        # quantities: A, B, A^2, B^2, B (AB_i - A), (A - AB_i)^2
        N = A.shape[0]
        counts = np.bincount((r.T + N * np.arange(num_resamples)[:, None]).ravel(),
                             minlength=N * num_resamples).reshape(num_resamples, N).astype(np.float64)
        G = np.concatenate([A[:, None], B[:, None], A[:, None] ** 2, B[:, None] ** 2,
                            B[:, None] * (AB - A[:, None]), (A[:, None] - AB) ** 2], axis=1)  # (N, 4 + 2d, k)
        M = (counts @ G.reshape(N, -1)).reshape((num_resamples,) + G.shape[1:]) / N
        mean = 0.5 * (M[:, 0] + M[:, 1])
        v = 0.5 * (M[:, 2] + M[:, 3]) - mean ** 2  # the variance over the resampled A and B rows
        v = np.where(v > 0, v, np.nan)[:, None]
        s1 = M[:, 4:4 + d] / v
        st = 0.5 * M[:, 4 + d:] / v
    return {"S1": S1, "S1_conf": z * s1.std(axis=0, ddof=1), "ST": ST, "ST_conf": z * st.std(axis=0, ddof=1)}


class SobolResult(GSAResult):
    """Sobol indices: `data` holds S1, S1_conf, ST, ST_conf with dimensions (input, time,
    output), or (input,) for a scalar objective, and the output variance; `.to_salib()`,
    `.to_frame()`, `.plot()`."""

    method = "sobol"
    salib_keys = ("S1", "S1_conf", "ST", "ST_conf")

    def plot(self, path, output: str | None = None, time: float | None = None, over_time: bool = False):
        """Bars of S1 and ST with their confidence intervals at one output and time; with
        over_time=True, the indices of every input over the save times instead."""
        if over_time:
            return sobol_over_time(self, path, output)
        return sobol_bars(self, path, output, time)


def sobol(problem: Problem, ranges: Mapping, n: int = 1024, of=None, at=None,
          objective: Callable | None = None, num_resamples: int = 100, conf_level: float = 0.95,
          seed: int | None = 0, **ensemble_options) -> SobolResult:
    """First-order (Saltelli 2010) and total (Jansen) Sobol indices of every output at every
    save time (or at the times `at`), or of a scalar objective(ys), ys (n_times, n_of).

    ranges: input name -> (low, high) or a distribution (see `gsa.sampling`); inputs not
    named keep their values. n: base rows (a power of 2); the model runs n (D + 2) times,
    through `sens.ensemble` (`ensemble_options` such as batch, executor, store, resume,
    progress go there). Sample groups holding a failed solve are left out, with a warning.
    Returns a `SobolResult` (indices of shape (D, n_times, n_of), or (D,) for an objective).
    """
    import xarray as xr

    prob, rs = setup(problem, ranges, of, at)
    d = len(rs)
    U = saltelli_design(n, d, seed)
    X = to_values(U, rs)
    Y, ens = evaluate(prob, X, objective, **ensemble_options)
    Yk, dropped = complete_groups(Y, d + 2, "sobol")
    idx = sobol_indices(Yk, d, num_resamples, conf_level, seed)
    dims, coords = extra_dims(prob, objective)
    D = ("input",) + dims
    Yg = Yk.reshape((-1, d + 2) + Yk.shape[1:])
    variance = np.var(np.concatenate([Yg[:, 0], Yg[:, d + 1]]), axis=0)
    long = {"S1": "first-order Sobol index (Saltelli 2010)", "ST": "total Sobol index (Jansen)"}
    data = {}
    for k, v in idx.items():
        base = k.split("_")[0]
        name = long[base] + (f": half-width of the {conf_level:.0%} bootstrap interval" if "conf" in k else "")
        data[k] = (D, v, {"long_name": name})
    data["variance"] = (dims, variance, {"long_name": "output variance over the A and B samples"})
    ds = xr.Dataset(data, coords={"input": [r.name for r in rs], **coords})
    ds.attrs.update(method="sobol", n=int(n), n_runs=int(X.shape[0]), groups_dropped=int(dropped.size),
                    num_resamples=int(num_resamples), conf_level=float(conf_level),
                    seed=-1 if seed is None else int(seed), model=prob.model.name,
                    objective=str(getattr(objective, "__qualname__", objective)) if objective else "",
                    **{f"ensemble_{k}": v for k, v in ens.attrs.items() if k in
                       ("batch", "chunks", "compiles", "compile_seconds", "run_seconds", "wall_seconds",
                        "executor", "n_failed", "chunks_resumed", "chunks_computed")},
                    ranges=repr({r.name: r.to_dict() for r in rs}))
    return SobolResult(ds, samples=ens)
