"""Plots of a sensitivity run, as PNG files (matplotlib, Agg backend).

`heatmap` (inputs x outputs: magnitudes on a sequential scale, or signed values on diverging
colours centred on zero), `trajectories` (outputs
over time, with data points) and `sensitivity_courses` (the top inputs' sensitivities over
time). Each takes arrays and names, writes one file and returns its path.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np


def _pyplot():
    """pyplot on a non-interactive backend, unless one was chosen already (a notebook's
    inline backend stays as it is)."""

    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _margins(fig, left: float, bottom: float, top: float, right: float = 0.25,
             wspace: float | None = None, hspace: float | None = None) -> None:
    """Place the axes with margins given in inches (fig.subplots_adjust takes fractions of
    the figure). The three figures of every run use this instead of constrained layout,
    which draws each figure once more to measure it (about half of a figure's time);
    the margins come from the label lengths instead."""
    w, h = fig.get_size_inches()
    fig.subplots_adjust(left=min(left / w, 0.6), right=1.0 - right / w, bottom=min(bottom / h, 0.6),
                        top=max(1.0 - top / h, 0.45), wspace=wspace, hspace=hspace)


def _text_inches(labels, fontsize: float = 10.0) -> float:
    """About how wide the longest of `labels` is in inches at `fontsize` points (0.6 em per
    character, DejaVu Sans's average)."""
    longest = max((len(str(s)) for s in labels), default=0)
    return longest * fontsize * 0.6 / 72.0


def _log_time(ax) -> None:
    """A log time axis with decade ticks only (minor log ticks make drawing slow)."""
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())


def symmetric_limit(values: np.ndarray) -> float:
    """The colour limit a of a diverging scale [-a, a]: the largest finite |value| (1 if
    there is none, so an all-zero map still draws)."""
    finite = np.abs(np.asarray(values, dtype=np.float64))
    finite = finite[np.isfinite(finite)]
    a = float(finite.max()) if finite.size else 0.0
    return a if a > 0 else 1.0


def heatmap(panels: Sequence[np.ndarray], input_names: Sequence[str], output_names: Sequence[str],
            titles: Sequence[str], colorbar_label: str, path: Path, suptitle: str = "",
            signed: bool = False) -> Path:
    """Heatmaps of sensitivities, one panel per matrix of shape (n_outputs, n_inputs), drawn
    inputs (rows) x outputs (columns), NaN in grey, with the values written in the cells
    when there are few of them.

    signed=False (the default): magnitudes (every value >= 0, e.g. the time-integrated |S|
    of `analyses.metrics.heatmap_values`) on one sequential scale from 0 to the largest.
    signed=True: signed values on one symmetric diverging scale centred on zero
    (TwoSlopeNorm with vcenter 0, vmin = -a, vmax = a). Say which in the titles and label.
    """
    plt = _pyplot()
    from matplotlib.colors import Normalize, TwoSlopeNorm

    n_in, n_out = len(input_names), len(output_names)
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in panels])
    a = symmetric_limit(stacked)
    if signed:
        norm = TwoSlopeNorm(vcenter=0.0, vmin=-a, vmax=a)
        cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.8")
    else:
        if np.any(stacked[np.isfinite(stacked)] < 0):
            raise ValueError("heatmap: signed=False draws magnitudes, but a panel has negative values; "
                             "pass their absolute values, or signed=True for a signed view")
        norm = Normalize(vmin=0.0, vmax=a)
        cmap = plt.get_cmap("viridis").with_extremes(bad="0.8")
    k = len(panels)
    width = min(4.0 + k * (1.2 + 0.7 * min(n_out, 20)), 20.0)
    height = max(3.5, min(2.0 + 0.32 * n_in, 14.0))
    fig, axes = plt.subplots(1, k, figsize=(width, height), squeeze=False)
    rotate = n_out > 3
    below = _text_inches(output_names) * (0.71 if rotate else 0.0)
    _margins(fig, left=_text_inches(input_names) + 0.75, bottom=below + 0.55,
             top=0.4 + 0.35 * bool(suptitle), right=0.3, wspace=0.08)
    annotate = n_in * n_out <= 80
    for n, (ax, panel, title) in enumerate(zip(axes[0], panels, titles)):
        M = np.asarray(panel, dtype=np.float64).T  # (n_inputs, n_outputs)
        im = ax.imshow(np.ma.masked_invalid(M), cmap=cmap, norm=norm, aspect="auto",
                       interpolation="nearest")
        xstep = max(1, n_out // 30)
        ax.set_xticks(range(0, n_out, xstep))
        ax.set_xticklabels(list(output_names)[::xstep], rotation=45 if rotate else 0,
                           ha="right" if rotate else "center")
        step = max(1, n_in // 40)
        ax.set_yticks(range(0, n_in, step))
        ax.set_yticklabels(list(input_names)[::step] if n == 0 else [])  # the rows of every panel are the same
        ax.set_xlabel("output")
        if n == 0:
            ax.set_ylabel("input")
        ax.set_title(title)
        if annotate:
            for i in range(n_in):
                for j in range(n_out):
                    v = M[i, j]
                    if np.isfinite(v):
                        dark = abs(v) > 0.6 * a if signed else v < 0.5 * a  # viridis is dark at 0
                        ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize=8,
                                color="white" if dark else "black")
    cbar = fig.colorbar(im, ax=axes[0].tolist(), shrink=0.9)
    cbar.set_label(colorbar_label)
    if suptitle:
        fig.suptitle(suptitle)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def trajectories(times: np.ndarray, outputs: np.ndarray, output_names: Sequence[str], path: Path,
                 log_time: bool = False, observations=None, title: str = "") -> Path:
    """The outputs (n_times, n_outputs) over time, one line each, with the observed data
    (an `Observations`, optional) as points in the same colour."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    _margins(fig, left=0.85, bottom=0.6, top=0.4)
    colors = {}
    for j, name in enumerate(output_names):
        (line,) = ax.plot(times, outputs[:, j], label=name, lw=1.6)
        colors[name] = line.get_color()
    if observations is not None:
        for j, name in enumerate(observations.columns):
            ax.plot(observations.times, observations.values[:, j], "o", ms=4,
                    color=colors.get(name), label=f"{name} (data)")
    if log_time:
        _log_time(ax)
    ax.set_xlabel("time")
    ax.set_ylabel("output")
    ax.set_title(title or "trajectories")
    if len(output_names) <= 12:
        ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def sensitivity_courses(times: np.ndarray, S: np.ndarray, input_names: Sequence[str],
                        output_names: Sequence[str], top: Sequence[str], ylabel: str, path: Path,
                        log_time: bool = False, max_panels: int = 9) -> Path:
    """Sensitivities over time of the inputs in `top`, one panel per output. S has shape
    (n_times, n_outputs, n_inputs). With more than `max_panels` outputs, the panels show
    the outputs most sensitive to those inputs (largest summed |S|), in model order."""
    plt = _pyplot()
    idx = [list(input_names).index(name) for name in top]
    shown = list(range(len(output_names)))
    if len(shown) > max_panels:
        weight = np.nansum(np.abs(S[:, :, idx]), axis=(0, 2))
        shown = sorted(np.argsort(-weight, kind="stable")[:max_panels].tolist())
    n = len(shown)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols + 1.5, 3.0 * rows + 0.6), squeeze=False,
                             sharex=True)
    _margins(fig, left=0.9, bottom=0.6, top=0.65, wspace=0.3, hspace=0.35)
    for k in range(rows * cols):
        ax = axes[k // cols][k % cols]
        if k >= n:
            ax.set_visible(False)
            continue
        j = shown[k]
        for i, name in zip(idx, top):
            ax.plot(times, S[:, j, i], label=name, lw=1.4)
        ax.axhline(0.0, color="0.5", lw=0.6)
        ax.set_title(output_names[j])
        if log_time:
            _log_time(ax)
        ax.grid(alpha=0.3)
        if k % cols == 0:
            ax.set_ylabel(ylabel)
        if k // cols == rows - 1 or k + cols >= n:
            ax.set_xlabel("time")
    axes[0][0].legend(fontsize=8, title="input", title_fontsize=8)
    extra = f" ({n} of {len(output_names)} outputs, the most sensitive)" if n < len(output_names) else ""
    k = len(top)
    fig.suptitle(f"sensitivities of the top {k} input{'s' * (k != 1)}{extra}")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
