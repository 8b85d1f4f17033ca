"""Plots of global sensitivity results (PNG files, matplotlib's Agg backend): Sobol bars
with confidence intervals, Sobol indices over time, Morris mu*-sigma, DGSM bars."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .run import _pyplot


def _where(ds, result) -> str:
    parts = []
    if "output" in result.data.dims:
        parts.append(str(ds["output"].values))
    if "time" in result.data.dims:
        parts.append(f"t = {float(ds['time'].values):.4g}")
    return ", ".join(parts) if parts else "objective"


def _save(fig, path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return path


def sobol_bars(result, path, output=None, time=None) -> Path:
    """First-order and total indices per input, bars with their bootstrap intervals."""
    plt = _pyplot()
    ds = result.select(output, time)
    names = [str(n) for n in ds["input"].values]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(4.5, 0.7 * len(names) + 2), 3.6))
    w = 0.38
    ax.bar(x - w / 2, ds["S1"].values, w, yerr=ds["S1_conf"].values, capsize=3, label="first order S1")
    ax.bar(x + w / 2, ds["ST"].values, w, yerr=ds["ST_conf"].values, capsize=3, label="total ST")
    ax.set_xticks(x, names, rotation=30 if len(names) > 6 else 0)
    ax.set_ylabel("Sobol index")
    ax.axhline(0, color="k", lw=0.6)
    ax.legend(frameon=False)
    ax.set_title(f"{result.data.attrs.get('model', '')}: Sobol indices ({_where(ds, result)}), "
                 f"n = {result.data.attrs.get('n')}", fontsize=10)
    return _save(fig, path)


def sobol_over_time(result, path, output=None) -> Path:
    """S1 (solid) and ST (dashed) of every input over the save times, with bands."""
    plt = _pyplot()
    data = result.data
    outs = list(data["output"].values)
    ds = data.sel(output=output or outs[0])
    t = ds["time"].values
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for i, name in enumerate(ds["input"].values):
        c = f"C{i % 10}"
        s1, st = ds["S1"].values[i], ds["ST"].values[i]
        ax.plot(t, s1, color=c, label=f"{name} S1")
        ax.fill_between(t, s1 - ds["S1_conf"].values[i], s1 + ds["S1_conf"].values[i], color=c, alpha=0.15)
        ax.plot(t, st, color=c, ls="--", label=f"{name} ST")
    ax.set_xlabel("time")
    ax.set_ylabel("Sobol index")
    ax.set_ylim(-0.05, 1.05)
    ax.legend(frameon=False, fontsize=8, ncol=2)
    ax.set_title(f"{data.attrs.get('model', '')}: Sobol indices of {output or outs[0]} over time", fontsize=10)
    return _save(fig, path)


def morris_scatter(result, path, output=None, time=None) -> Path:
    """mu* against sigma with each input labelled; sigma / mu* > 1 hints at interactions
    or non-linearity (the dashed line is sigma = mu*)."""
    plt = _pyplot()
    ds = result.select(output, time)
    ms, sg = ds["mu_star"].values, ds["sigma"].values
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.errorbar(ms, sg, xerr=ds["mu_star_conf"].values, fmt="o", capsize=3)
    for name, a, b in zip(ds["input"].values, ms, sg):
        ax.annotate(str(name), (a, b), textcoords="offset points", xytext=(4, 4), fontsize=9)
    top = float(np.nanmax(np.r_[ms + np.nan_to_num(ds['mu_star_conf'].values), sg, 1e-300])) * 1.1
    ax.plot([0, top], [0, top], "k--", lw=0.7)
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("mu* (mean |elementary effect|)")
    ax.set_ylabel("sigma")
    ax.set_title(f"{result.data.attrs.get('model', '')}: Morris ({_where(ds, result)})", fontsize=10)
    return _save(fig, path)


def dgsm_bars(result, path) -> Path:
    """The DGSM upper bound on each total Sobol index, with its interval."""
    plt = _pyplot()
    ds = result.data
    names = [str(n) for n in ds["input"].values]
    fig, ax = plt.subplots(figsize=(max(4.5, 0.6 * len(names) + 2), 3.6))
    ax.bar(np.arange(len(names)), ds["dgsm"].values, yerr=ds["dgsm_conf"].values, capsize=3)
    ax.set_xticks(np.arange(len(names)), names, rotation=30 if len(names) > 6 else 0)
    ax.set_ylabel("upper bound on S_T")
    ax.axhline(1.0, color="k", ls=":", lw=0.8)  # S_T <= 1 anyway: a bound above 1 says little
    ax.set_yscale("log" if np.nanmax(ds["dgsm"].values) > 100 * np.nanmin(ds["dgsm"].values) > 0 else "linear")
    ax.set_title(f"{ds.attrs.get('model', '')}: DGSM bound on the total Sobol index", fontsize=10)
    return _save(fig, path)
