"""Figures of multi-start fits and profile likelihoods (matplotlib), from plain arrays:
the waterfall of the starts' final values, the parameters of the best starts, and the
profiles with their threshold and confidence intervals.

Each returns the Figure and writes a PNG when given a path (then closes it).
"""

from __future__ import annotations

import numpy as np

from .analyses import _finish
from .run import _pyplot


def waterfall_figure(values, tol: float = 0.1, path=None, title: str = ""):
    """values (k,): the final objective of every start. Sorted ascending, as the difference
    to the best plus 1 on a log axis when they span decades; the starts within `tol` of the
    best in colour, failed starts (non-finite) counted in the title."""
    plt = _pyplot()
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    s = np.sort(v[ok])
    fig, ax = plt.subplots(figsize=(6, 4))
    if s.size:
        rel = s - s[0]
        near = rel <= tol
        k = np.arange(1, s.size + 1)
        y = rel + 1.0
        ax.plot(k, y, color="0.6", lw=1, zorder=1)
        ax.scatter(k[near], y[near], color="tab:red", zorder=3, label=f"within {tol:g} of the best ({near.sum()})")
        ax.scatter(k[~near], y[~near], color="tab:blue", zorder=2, label="other starts")
        if y.max() / y.min() > 100:
            ax.set_yscale("log")
        ax.legend(loc="upper left")
    ax.set_xlabel("start (sorted by final value)")
    ax.set_ylabel("objective - best + 1")
    failed = int((~ok).sum())
    ax.set_title(title or f"waterfall: {v.size} starts" + (f", {failed} failed" if failed else ""))
    fig.tight_layout()
    return _finish(fig, path)


def parameters_figure(names, X, values, lower=None, upper=None, best: int = 10, path=None, title: str = ""):
    """names (n,), X (k, n): the final parameters of k starts, values (k,): their final
    objective. The `best` best starts as lines across the parameters (the best in red),
    the bounds (n,) as dashed lines where finite."""
    plt = _pyplot()
    X = np.asarray(X, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(np.where(np.isfinite(v), v, np.inf), kind="stable")[:best]
    n = len(names)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.6 * n + 2), 4))
    idx = np.arange(n)
    for rank, k in enumerate(order[::-1]):
        first = k == order[0]
        ax.plot(idx, X[k], marker="o", color="tab:red" if first else "tab:blue", alpha=1.0 if first else 0.4,
                lw=2 if first else 1, zorder=3 if first else 2)
    for b in (lower, upper):
        if b is not None:
            b = np.asarray(b, dtype=np.float64)
            ax.scatter(idx[np.isfinite(b)], b[np.isfinite(b)], marker="_", s=200, color="0.3")
    ax.set_xticks(idx)
    ax.set_xticklabels(list(names), rotation=45, ha="right")
    ax.set_ylabel("estimate (estimation scale)")
    ax.set_title(title or f"parameters of the {len(order)} best starts (best in red)")
    fig.tight_layout()
    return _finish(fig, path)


def profiles_figure(profiles, threshold: float, path=None, title: str = ""):
    """profiles: a list of (name, grid (m,), delta (m,), estimate, interval (low, high),
    verdict): the profile nllh - best along each parameter's path, the threshold as a
    dashed line, the interval shaded."""
    plt = _pyplot()
    n = len(profiles)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols)) if n else 1
    fig, axes = plt.subplots(rows, max(cols, 1), figsize=(4 * max(cols, 1), 3.2 * rows), squeeze=False)
    for ax, (name, grid, delta, est, (lo, hi), verdict) in zip(axes.flat, profiles):
        ax.plot(grid, delta, color="tab:blue", marker=".", ms=3)
        ax.axhline(threshold, color="tab:red", ls="--", lw=1)
        a = lo if np.isfinite(lo) else (np.min(grid) if len(grid) else est)
        b = hi if np.isfinite(hi) else (np.max(grid) if len(grid) else est)
        ax.axvspan(a, b, color="tab:green", alpha=0.12)
        ax.axvline(est, color="0.4", lw=0.8)
        ax.set_title(f"{name}: {verdict}", fontsize=9)
        ax.set_xlabel(f"{name} (estimation scale)")
        ax.set_ylabel("nllh - best")
        top = max(2.0 * threshold, float(np.nanmin([np.nanmax(delta) if len(delta) else 0, 3 * threshold])))
        ax.set_ylim(-0.05 * top, top)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, path)


def marginals_figure(names, samples, scales=None, path=None, title: str = ""):
    """names (n,), samples (chains, draws, n): a histogram of each parameter's draws per
    chain (overlaid; chains that disagree show as shifted histograms), with the mean of all
    draws as a vertical line; the x axis on the estimation scale `scales` (n,)."""
    plt = _pyplot()
    X = np.asarray(samples, dtype=np.float64)
    n = len(names)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols)) if n else 1
    fig, axes = plt.subplots(rows, max(cols, 1), figsize=(3.4 * max(cols, 1), 2.8 * rows), squeeze=False)
    for i, (ax, name) in enumerate(zip(axes.flat, names)):
        flat = X[:, :, i].ravel()
        flat = flat[np.isfinite(flat)]
        edges = np.histogram_bin_edges(flat, bins=30) if flat.size else 10
        for c in range(X.shape[0]):
            ax.hist(X[c, :, i], bins=edges, histtype="step", density=True, color=f"C{c % 10}", lw=1)
        if flat.size:
            ax.axvline(flat.mean(), color="0.2", lw=1, ls="--")
        scale = scales[i] if scales is not None else ""
        ax.set_xlabel(f"{name}" + (f" ({scale})" if scale else ""))
        ax.set_yticks([])
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(title or f"posterior marginals: {X.shape[0]} chains x {X.shape[1]} draws")
    fig.tight_layout()
    return _finish(fig, path)


def trace_figure(names, samples, divergent=None, scales=None, marginals_only: bool = False, path=None,
                 title: str = ""):
    """names (n,), samples (chains, draws, n): per parameter a row with its draws against
    the iteration (one colour per chain; divergent (chains, draws) draws marked in red) and
    its marginal (a histogram per chain) beside it; marginals_only: the histograms alone."""
    plt = _pyplot()
    X = np.asarray(samples, dtype=np.float64)
    c, d, n = X.shape
    if marginals_only:
        cols = min(n, 4)
        rows = int(np.ceil(n / cols)) if n else 1
        fig, axes = plt.subplots(rows, max(cols, 1), figsize=(3.4 * max(cols, 1), 2.6 * rows), squeeze=False)
        hist_axes, trace_axes = list(axes.flat), [None] * n
    else:
        fig, axes = plt.subplots(n, 2, figsize=(10, 1.8 * n + 0.6), squeeze=False,
                                 gridspec_kw={"width_ratios": [3, 1]})
        hist_axes, trace_axes = list(axes[:, 1]), list(axes[:, 0])
    div = np.zeros((c, d), bool) if divergent is None else np.asarray(divergent, bool)
    for i, name in enumerate(names):
        label = f"{name}" + (f" ({scales[i]})" if scales is not None else "")
        flat = X[:, :, i].ravel()
        flat = flat[np.isfinite(flat)]
        edges = np.histogram_bin_edges(flat, bins=30) if flat.size else 10
        ha = hist_axes[i]
        for k in range(c):
            ha.hist(X[k, :, i], bins=edges, histtype="step", density=True, color=f"C{k % 10}", lw=1)
        ha.set_yticks([])
        ta = trace_axes[i]
        if ta is None:
            ha.set_xlabel(label)
            continue
        for k in range(c):
            ta.plot(np.arange(d), X[k, :, i], color=f"C{k % 10}", lw=0.6, alpha=0.8)
            kd = np.flatnonzero(div[k])
            if kd.size:
                ta.scatter(kd, X[k, kd, i], color="tab:red", s=8, zorder=3)
        ta.set_ylabel(label, fontsize=8)
        ta.set_xlim(0, max(d - 1, 1))
    if not marginals_only and n:
        trace_axes[-1].set_xlabel("draw")
    for ax in hist_axes[n:]:
        ax.axis("off")
    fig.suptitle(title or f"{c} chains x {d} draws" + (f", {int(div.sum())} divergent" if div.any() else ""))
    fig.tight_layout()
    return _finish(fig, path)


def pair_figure(names, samples, divergent=None, max_points: int = 2000, path=None, title: str = ""):
    """names (n,), samples (chains, draws, n): the draws of every pair of parameters as a
    scatter (lower triangle; at most `max_points` evenly thinned draws, divergent ones in
    red) and each parameter's histogram on the diagonal."""
    plt = _pyplot()
    X = np.asarray(samples, dtype=np.float64)
    c, d, n = X.shape
    flat = X.reshape(-1, n)
    div = np.zeros(c * d, bool) if divergent is None else np.asarray(divergent, bool).reshape(-1)
    keep = np.unique(np.linspace(0, flat.shape[0] - 1, min(max_points, flat.shape[0])).astype(int))
    size = max(1.6, min(2.6, 14.0 / max(n, 1)))
    fig, axes = plt.subplots(n, n, figsize=(size * n + 0.5, size * n + 0.5), squeeze=False)
    for i in range(n):
        for j in range(n):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            if i == j:
                ax.hist(flat[:, i], bins=30, color="tab:blue", alpha=0.7)
                ax.set_yticks([])
            else:
                ok = keep[~div[keep]]
                ax.scatter(flat[ok, j], flat[ok, i], s=2, alpha=0.3, color="tab:blue", rasterized=True)
                bad = np.flatnonzero(div)
                if bad.size:
                    ax.scatter(flat[bad, j], flat[bad, i], s=6, color="tab:red")
            if i == n - 1:
                ax.set_xlabel(names[j], fontsize=8)
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i], fontsize=8)
            elif j > 0:
                ax.set_yticklabels([])
            ax.tick_params(labelsize=6)
    fig.suptitle(title or f"pairs: {c} chains x {d} draws" + (f", {int(div.sum())} divergent (red)" if div.any()
                                                                 else ""))
    fig.tight_layout()
    return _finish(fig, path)


def predictive_figure(bands, data, level: float = 0.95, path=None, title: str = ""):
    """bands: a DataFrame (panel, time, median, lower, upper, pred_lower, pred_upper, log):
    per panel the posterior median of the observable, its credible band at `level` and the
    predictive band (with the noise); data: a DataFrame (panel, time, value) drawn as
    points. A panel whose `log` is true has a log y axis."""
    plt = _pyplot()
    panels = list(dict.fromkeys(bands["panel"]))
    n = len(panels)
    cols = min(n, 3)
    rows = int(np.ceil(n / cols)) if n else 1
    fig, axes = plt.subplots(rows, max(cols, 1), figsize=(4.2 * max(cols, 1), 3.2 * rows), squeeze=False)
    pct = f"{100 * level:g} %"
    for ax, p in zip(axes.flat, panels):
        b = bands[bands["panel"] == p]
        t = b["time"].to_numpy(float)
        ax.fill_between(t, b["pred_lower"], b["pred_upper"], color="tab:blue", alpha=0.15,
                        label=f"predictive {pct}")
        ax.fill_between(t, b["lower"], b["upper"], color="tab:blue", alpha=0.35, label=f"credible {pct}")
        ax.plot(t, b["median"], color="tab:blue", lw=1.2, label="median")
        dd = data[data["panel"] == p]
        ax.scatter(dd["time"], dd["value"], color="k", s=10, zorder=3, label="data")
        if bool(b["log"].iloc[0]):
            ax.set_yscale("log")
        ax.set_title(str(p), fontsize=9)
        ax.set_xlabel("time")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    if n:
        axes.flat[0].legend(fontsize=7)
    fig.suptitle(title or "posterior predictive")
    fig.tight_layout()
    return _finish(fig, path)
