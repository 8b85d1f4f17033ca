"""Figures of the identifiability and fitting analyses (matplotlib): the Fisher
eigen-spectrum, the correlation matrix of the estimates, a fit against its data.

Each returns the Figure and writes a PNG when given a path (then closes it, so that a
command-line run does not accumulate figures).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .run import _pyplot


def _finish(fig, path):
    if path is not None:
        fig.savefig(Path(path), dpi=110)
        _pyplot().close(fig)
    return fig


def eigen_spectrum(ax, ident, max_labels: int = 4) -> None:
    """Eigenvalues of the Fisher information relative to the largest, on a log axis, the
    non-identifiable ones in red; the smallest `max_labels` labelled with their directions."""
    ds = ident.dataset
    lam = np.asarray(ds["eigenvalue"].values, dtype=np.float64)
    rel = lam / lam[-1] if lam[-1] > 0 else np.zeros_like(lam)
    floor = 1e-18
    shown = np.clip(rel, floor, None)
    sloppy = ds["sloppy"].values
    k = np.arange(lam.size)
    ax.scatter(k[~sloppy], shown[~sloppy], color="tab:blue", zorder=3, label="identifiable")
    if sloppy.any():
        ax.scatter(k[sloppy], shown[sloppy], color="tab:red", marker="v", zorder=3, label="not identifiable")
    ax.vlines(k, floor, shown, color="0.7", lw=1)
    ax.axhline(ident.eig_rtol, color="tab:red", ls="--", lw=0.8)
    ax.set_yscale("log")
    ax.set_ylim(floor / 3, 3)
    labels = ds["direction_label"].values
    lines = []
    for i in range(min(max_labels, lam.size)):
        text = labels[i] if len(labels[i]) < 80 else labels[i][:77] + "..."
        lines.append(f"{i}: {text}")
    ax.text(0.0, -0.16, "\n".join(lines), transform=ax.transAxes, fontsize=7.5, va="top", ha="left",
            family="monospace")
    ax.set_xticks(k)
    ax.set_xlabel("direction (smallest eigenvalue first)")
    ax.set_ylabel("eigenvalue / largest")
    ax.set_title(f"Fisher eigen-spectrum ({ident.fisher.scale} inputs)")
    ax.grid(alpha=0.3, which="major")
    ax.legend(fontsize=7, loc="upper left")


def correlation_matrix(ax, ident):
    """The correlations of the estimates as a red-blue matrix in [-1, 1], values written
    in the cells when there are few inputs."""
    corr = ident.dataset["correlation"].values
    names = list(ident.dataset["input"].values)
    n = len(names)
    im = ax.imshow(corr, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    step = max(1, n // 30)
    ax.set_xticks(range(0, n, step))
    ax.set_xticklabels(names[::step], rotation=45, ha="right")
    ax.set_yticks(range(0, n, step))
    ax.set_yticklabels(names[::step])
    if n <= 12:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{corr[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if abs(corr[i, j]) > 0.6 else "black")
    ax.set_title("correlation of the estimates")
    return im


def identifiability_figure(ident, path=None, title: str = ""):
    """Eigen-spectrum and correlation matrix side by side."""
    plt = _pyplot()
    n = len(ident.fisher.input_names)
    side = max(4.0, min(0.45 * n + 2.5, 10.0))
    fig, (a, b) = plt.subplots(1, 2, figsize=(6.0 + side, max(4.5, side * 0.9)), constrained_layout=True,
                               gridspec_kw={"width_ratios": [6.0, side]})
    eigen_spectrum(a, ident)
    im = correlation_matrix(b, ident)
    fig.colorbar(im, ax=b, shrink=0.85)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def fit_figure(fit, path=None, title: str = ""):
    """The fitted outputs over time (lines) against the data (points with +-sigma bars), one
    panel per observed output, and the weighted residuals below."""
    plt = _pyplot()
    obs = list(dict.fromkeys(fit.data["output"]))
    n = len(obs)
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(4.3 * cols + 1, 4.2 * rows + 0.5), squeeze=False,
                             constrained_layout=True, gridspec_kw={"height_ratios": [3, 1] * rows})
    traj = fit.trajectory
    for k in range(rows * cols):
        ax, axr = axes[2 * (k // cols)][k % cols], axes[2 * (k // cols) + 1][k % cols]
        if k >= n:
            ax.set_visible(False)
            axr.set_visible(False)
            continue
        name = obs[k]
        j = list(traj.output_names).index(name)
        rows_k = fit.data["output"] == name
        d = fit.data[rows_k]
        ax.plot(traj.times, traj.outputs[:, j], color="tab:blue", lw=1.6, label="fit")
        if fit.start_trajectory is not None:
            ax.plot(traj.times, fit.start_trajectory[:, j], color="0.6", lw=1, ls="--", label="start")
        ax.errorbar(d["time"], d["value"], yerr=d["sigma"], fmt="o", ms=3.5, color="tab:orange",
                    elinewidth=0.8, label="data")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        axr.axhline(0, color="0.5", lw=0.7)
        axr.plot(d["time"], fit.residuals[rows_k.to_numpy()], "o", ms=3, color="tab:orange")
        axr.set_ylabel("residual / sigma", fontsize=8)
        axr.set_xlabel("time")
        axr.grid(alpha=0.3)
        if k == 0:
            ax.legend(fontsize=8)
    fig.suptitle(title or f"fit: cost {fit.cost:.4g}, {fit.iterations} iterations ({fit.method})")
    return _finish(fig, path)
