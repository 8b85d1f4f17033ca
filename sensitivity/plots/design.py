"""The figure of an experimental design (matplotlib): the chosen measurements on the
predicted outputs with their uncertainty bands, the criterion against the number of
measurements, and the standard errors before and after. Takes arrays; returns the Figure
and writes a PNG when given a path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .run import _pyplot

MAX_PANELS = 9  # output panels shown, those with chosen measurements first


def design_figure(series: Sequence[dict], path_values: np.ndarray, criterion: str, input_names: Sequence[str],
                  se_before: np.ndarray, se_after: np.ndarray, path=None, title: str = "", scale: str = "log",
                  value_fixed: float = float("nan")):
    """series: per output (and condition), a dict of arrays over its candidate times:
    label, time (m,), value (m,) the prediction, band_before / band_after (m,) the half
    widths of the bands (NaN: not determined), chosen (m,) counts, fixed_times (k,).
    path_values: (n,) the criterion after 1..n measurements (value_fixed: with none);
    se_before, se_after: (p,)."""
    plt = _pyplot()
    order = sorted(range(len(series)), key=lambda i: -int(np.sum(series[i]["chosen"])))[:MAX_PANELS]
    k = max(len(order), 1)
    cols = min(k, 3)
    rows = -(-k // cols)
    fig = plt.figure(figsize=(4.4 * max(cols, 2) + 0.5, 3.2 * rows + 3.6), constrained_layout=True)
    grid = fig.add_gridspec(rows + 1, max(cols, 2))
    for j, i in enumerate(order):
        s = series[i]
        ax = fig.add_subplot(grid[j // cols, j % cols] if k > 1 else grid[0, :])
        t, y = np.asarray(s["time"]), np.asarray(s["value"])
        bb, ba = np.asarray(s["band_before"]), np.asarray(s["band_after"])
        if np.all(np.isfinite(bb)):
            ax.fill_between(t, y - bb, y + bb, color="0.85", label="+-2 s.e. before")
        if np.all(np.isfinite(ba)):
            ax.fill_between(t, y - ba, y + ba, color="tab:blue", alpha=0.3, label="+-2 s.e. after")
        ax.plot(t, y, color="tab:blue", lw=1.4)
        chosen = np.asarray(s["chosen"])
        hit = chosen > 0
        if hit.any():
            ax.scatter(t[hit], y[hit], s=30 + 25 * (chosen[hit] - 1), color="tab:red", zorder=4,
                       label="chosen (size: replicates)")
        ft = np.asarray(s.get("fixed_times", []))
        if ft.size:
            ax.plot(ft, np.interp(ft, t, y), "k|", ms=9, mew=1.2, label="measured")
        ax.set_title(str(s["label"]), fontsize=9)
        ax.set_xlabel("time")
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(fontsize=7)
    ax = fig.add_subplot(grid[rows, 0])
    pv = np.concatenate([[value_fixed], np.asarray(path_values, dtype=np.float64)])
    ns = np.arange(pv.size)
    ok = np.isfinite(pv)
    ax.plot(ns[ok], pv[ok], "o-", ms=3.5, color="tab:purple")
    ax.set_xlabel("measurements (greedy, nested)")
    ax.set_ylabel(f"criterion {criterion}")
    ax.set_title(f"{criterion} against the number of measurements", fontsize=9)
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(grid[rows, 1:])
    p = len(input_names)
    xs = np.arange(p)
    before = np.asarray(se_before, dtype=np.float64)
    after = np.asarray(se_after, dtype=np.float64)
    finite = np.concatenate([before[np.isfinite(before)], after[np.isfinite(after)]])
    top = float(finite.max()) * 3 if finite.size else 1.0
    ax.bar(xs - 0.2, np.where(np.isfinite(before), before, top), width=0.4, color="0.6",
           hatch=None, label="before (at top: not determined)")
    ax.bar(xs + 0.2, np.where(np.isfinite(after), after, top), width=0.4, color="tab:blue", label="after")
    ax.set_yscale("log")
    ax.set_xticks(xs)
    ax.set_xticklabels(list(input_names), rotation=45 if p > 4 else 0, ha="right" if p > 4 else "center",
                       fontsize=8)
    ax.set_ylabel(f"standard error ({scale} scale)")
    ax.set_title("Cramer-Rao standard errors", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(Path(path), dpi=110)
        plt.close(fig)
    return fig
