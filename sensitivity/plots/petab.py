"""Figures of a PEtab problem's fit: the simulation on a fine time grid per experiment, its
noise band, the data with error bars, on the observable's scale; and the figures of the
problem's visualization table (PEtab `visualizationFiles`), one per plotId.

From tables and a simulation function, so this module imports neither JAX nor the PEtab
importer (the runner passes `petab_rows.simulate_rows`):

    curves = fit_curves(measurements, observables, simulate)   # simulate(rows) -> (simulation, sigma)
    observable_figures(curves, folder)                         # folder/<observableId>.png
    visualization_figures(curves, visualization, conditions, folder)  # folder/vis_<plotId>.png

The band is value +- sigma on the observable's transformed scale: lin  [y - s, y + s];
log  [y e^-s, y e^s]; log10  [y 10^-s, y 10^s] (multiplicative, drawn on a log axis). Error
bars on data points where the measurement table gives the noise as numbers (noiseParameters
that are numbers, or a noise formula that is one), of the same form.

Visualization table (PEtab 1): plotId, plotName, plotTypeSimulation (LinePlot, BarPlot,
ScatterPlot), plotTypeData (MeanAndSD, MeanAndSEM, replicate, provided), datasetId, xValues
(time, or a condition-table column: a dose response), xOffset, xLabel, xScale (lin, log,
log10, order), yValues (observableId), yOffset, yLabel, yScale (lin, log, log10),
legendEntry. What a figure cannot follow is written on it and returned as a note.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .analyses import _finish
from .run import _pyplot

OBS, SIM, PRE, TIME = "observableId", "simulationConditionId", "preequilibrationConditionId", "time"
OP, NP, MEAS = "observableParameters", "noiseParameters", "measurement"
DATASET, REPLICATE = "datasetId", "replicateId"
VIS_COLUMNS = ("plotId", "plotName", "plotTypeSimulation", "plotTypeData", "datasetId", "xValues", "xOffset",
               "xLabel", "xScale", "yValues", "yOffset", "yLabel", "yScale", "legendEntry")
MAX_LEGEND = 12


def _text(v) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip()


def _number(v) -> float | None:
    try:
        out = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(out) else out


def band(value, sigma, transformation) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) of value +- sigma on the observable's scale, each (n,): lin y -+ s,
    log y e^-+s, log10 y 10^-+s; transformation a str or (n,) of str."""
    y = np.asarray(value, dtype=np.float64)
    s = np.asarray(sigma, dtype=np.float64)
    tr = np.broadcast_to(np.asarray(transformation, dtype=object), y.shape)
    base = np.array([{"log": math.e, "log10": 10.0}.get(str(t), 0.0) for t in tr.ravel()]).reshape(y.shape)
    mult = base > 0
    with np.errstate(over="ignore"):  # a sigma of hundreds on a log scale: a band to infinity
        factor = np.power(np.where(mult, base, 1.0), np.where(mult, s, 0.0))
    return np.where(mult, y / factor, y - s), np.where(mult, y * factor, y + s)


# --------------------------------------------------------------------------- the simulation
@dataclass
class Curves:
    """The simulation of a problem for its figures.

    measured: the measurement table's rows with columns simulation, sigma, transformation,
    lower, upper (the band at the row) and noise_given (the table gives the row's noise as
    numbers). grid: rows observableId, preequilibrationConditionId, simulationConditionId,
    time, simulation, sigma, transformation, lower, upper: per measured (observable,
    experiment) a fine time grid from the experiment's start to its last finite time, the
    measurement times included. at_measured: the (observable, pre, sim) whose observable
    parameters differ between time points: no grid, drawn at the measurement times;
    band_at_measured: those whose noise parameters differ: the line on the grid (its sigma
    that of the first measured row), the band at the measurement times; not_finite: those
    whose simulation is not finite (NaN) at some grid times; unbounded: those whose band is
    (a sigma of hundreds on a log scale). transformations:
    observableId -> lin | log | log10. names: observableId -> observableName. notes: what the
    figures could not do."""

    measured: object
    grid: object
    at_measured: set
    transformations: dict
    names: dict = field(default_factory=dict)
    notes: list = field(default_factory=list)
    band_at_measured: set = field(default_factory=set)
    not_finite: set = field(default_factory=set)
    unbounded: set = field(default_factory=set)


def _column(df, col):
    return [_text(v) for v in df[col]] if col in df else [""] * len(df)


def _noise_given(df, observables) -> np.ndarray:
    """(n,) bool: the row's noise is given as numbers (its noiseParameters, or the noise
    formula itself when it is a number)."""
    formula = {str(o): _text(f) for o, f in zip(observables.index, observables.get("noiseFormula", []))}
    out = []
    for o, p in zip(df[OBS], _column(df, NP)):
        if p:
            out.append(all(_number(part) is not None for part in p.split(";")))
        else:
            out.append(_number(formula.get(str(o), "")) is not None)
    return np.array(out, dtype=bool)


def fit_curves(measurements, observables, simulate, n_grid: int = 200, starts=None) -> Curves:
    """Simulate the measured rows and a grid of n_grid times per experiment in one call.

    measurements: the measurement table (DataFrame: observableId, simulationConditionId,
    time, measurement[, preequilibrationConditionId, observableParameters, noiseParameters,
    datasetId, replicateId]). observables: the observable table (index observableId;
    observableTransformation, observableName, noiseFormula). simulate(rows) -> (simulation
    (n,), sigma (n,)) at measurement rows (e.g. `petab_rows.simulate_rows`). starts: a
    mapping (pre, sim) -> start time of the experiment (default 0)."""
    import pandas as pd

    mdf = measurements.reset_index(drop=True).copy()
    for col in (PRE, OP, NP):
        mdf[col] = _column(mdf, col)
    mdf[SIM] = _column(mdf, SIM)
    mdf[OBS] = mdf[OBS].astype(str)
    t = mdf[TIME].to_numpy(float)
    trans = {}
    names = {}
    for o in dict.fromkeys(mdf[OBS]):
        tr = _text(observables.loc[o].get("observableTransformation", "lin")) if o in observables.index else ""
        trans[o] = tr or "lin"
        names[o] = _text(observables.loc[o].get("observableName", "")) if o in observables.index else ""
    starts = starts or {}
    grid, at_measured, band_at_measured, notes = [], set(), set(), []
    for (pre, sim), e in mdf.groupby([PRE, SIM], sort=False):
        finite = t[e.index][np.isfinite(t[e.index])]
        if finite.size == 0:
            continue
        t0 = float(starts.get((pre, sim), 0.0))
        ts = np.unique(np.concatenate([np.linspace(t0, finite.max(), n_grid), finite]))
        ts = ts[ts >= t0]
        for o, r in e.groupby(OBS, sort=False):
            ops, nps = list(dict.fromkeys(r[OP])), list(dict.fromkeys(r[NP]))
            if len(ops) > 1:
                at_measured.add((o, pre, sim))
                notes.append(f"observable '{o}' under '{_experiment(pre, sim)}': its {OP} differ between "
                             "time points; simulation and band drawn at the measurement times only")
                continue
            if len(nps) > 1:  # the simulation does not depend on them: the line on the grid
                band_at_measured.add((o, pre, sim))
                notes.append(f"observable '{o}' under '{_experiment(pre, sim)}': its {NP} differ between "
                             "time points; noise band drawn at the measurement times only")
            grid.append(pd.DataFrame({OBS: o, PRE: pre, SIM: sim, TIME: ts, OP: ops[0], NP: nps[0]}))
    grid = pd.concat(grid, ignore_index=True) if grid else pd.DataFrame(columns=[OBS, PRE, SIM, TIME, OP, NP])
    cols = [OBS, PRE, SIM, TIME, OP, NP]
    both = pd.concat([mdf[cols], grid[cols]], ignore_index=True)
    value, sigma = simulate(both)
    value, sigma = np.asarray(value, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    n = len(mdf)
    for df, sl in ((mdf, slice(0, n)), (grid, slice(n, None))):
        df["simulation"], df["sigma"] = value[sl], sigma[sl]
        df["transformation"] = [trans[o] for o in df[OBS]]
        df["lower"], df["upper"] = band(df["simulation"], df["sigma"], df["transformation"].to_numpy(object))
    mdf["noise_given"] = _noise_given(mdf, observables)
    bad = ~np.isfinite(grid["simulation"].to_numpy(float))
    not_finite = set(zip(grid.loc[bad, OBS], grid.loc[bad, PRE], grid.loc[bad, SIM]))
    for o, pre, sim in sorted(not_finite):
        n_bad = int(np.sum(bad & (grid[OBS] == o).to_numpy() & (grid[PRE] == pre).to_numpy()
                           & (grid[SIM] == sim).to_numpy()))
        notes.append(f"observable '{o}' under '{_experiment(pre, sim)}': the simulation is not finite at {n_bad} "
                     "grid times (not drawn there)")
    unbounded_keys = set()
    for o in trans:
        sel = (grid[OBS] == o).to_numpy() & ~bad
        unbounded = sel & ~np.isfinite(grid["upper"].to_numpy(float))
        if unbounded.any():
            unbounded_keys |= set(zip(grid.loc[unbounded, OBS], grid.loc[unbounded, PRE], grid.loc[unbounded, SIM]))
            notes.append(f"observable '{o}': sigma up to {np.nanmax(grid.loc[unbounded, 'sigma']):.3g} on its "
                         f"{trans[o]} scale: a noise band without bound, not drawn")
    if np.any(np.isinf(t)):
        notes.append("measurements at time = inf (steady state) are drawn at the right edge of time axes")
    return Curves(mdf, grid, at_measured, trans, names, notes, band_at_measured, not_finite, unbounded_keys)


def _experiment(pre: str, sim: str) -> str:
    return f"{pre} -> {sim}" if pre else sim


# --------------------------------------------------------------------------- drawing pieces
def _log_axis(trans: str) -> bool:
    return trans in ("log", "log10")


def _inf_x(ax_times: np.ndarray) -> float:
    finite = ax_times[np.isfinite(ax_times)]
    return 1.05 * finite.max() if finite.size and finite.max() > 0 else 1.0


def _draw_series(ax, curves: Curves, o: str, pre: str, sim: str, color, label: str, x_offset=0.0, y_offset=0.0,
                 data: str = "points", rows=None):
    """One observable under one experiment over time: the grid's line and band (or, where
    the parameters vary, the measured rows'), data as points with error bars where given
    (data: "points" | "MeanAndSD" | "MeanAndSEM" | "replicate" | "provided")."""
    m = curves.measured
    if rows is None:
        rows = m[(m[OBS] == o) & (m[PRE] == pre) & (m[SIM] == sim)]
    t_all = rows[TIME].to_numpy(float)
    x_inf = _inf_x(t_all)
    if (o, pre, sim) in curves.at_measured:
        line = rows[np.isfinite(t_all)].sort_values(TIME, kind="stable")
        style = dict(ls="--", marker=".")
    else:
        g = curves.grid
        line = g[(g[OBS] == o) & (g[PRE] == pre) & (g[SIM] == sim)]
        style = dict(ls="-")
    tt = line[TIME].to_numpy(float) + x_offset
    label = f" {label}" if label.startswith("_") else label  # matplotlib hides labels that start with _
    ax.plot(tt, line["simulation"].to_numpy(float) + y_offset, color=color, label=label, lw=1.4, **style)
    if (o, pre, sim) in curves.band_at_measured:
        line = rows[np.isfinite(t_all)].sort_values(TIME, kind="stable")
        tt = line[TIME].to_numpy(float) + x_offset
    ax.fill_between(tt, line["lower"].to_numpy(float) + y_offset, line["upper"].to_numpy(float) + y_offset,
                    color=color, alpha=0.18, lw=0)
    steady = rows[np.isinf(t_all)]
    if len(steady):
        ax.errorbar([x_inf + x_offset] * len(steady), steady["simulation"].to_numpy(float) + y_offset,
                    yerr=_yerr(steady), color=color, marker="_", ms=14, ls="none")
    _draw_data(ax, rows.assign(**{TIME: np.where(np.isinf(t_all), x_inf, t_all)}), TIME, color, x_offset, y_offset,
               data)


def _yerr(rows):
    y = rows["simulation"].to_numpy(float)
    return np.vstack([y - rows["lower"].to_numpy(float), rows["upper"].to_numpy(float) - y])


def _data_band(y, s, trans):
    lo, hi = band(y, s, trans)
    return np.vstack([y - lo, hi - y])


def _draw_data(ax, rows, xcol: str, color, x_offset=0.0, y_offset=0.0, data: str = "points"):
    """The data of `rows` against column xcol: every point with error bars where the table
    gives the noise ("points"), or per x the mean with SD or SEM, every replicate, or the
    mean with the provided noise."""
    if not len(rows):
        return
    trans = rows["transformation"].to_numpy(object)
    if data == "replicate" and REPLICATE in rows:  # each replicate's points joined, in time order
        for _, rep in rows.groupby(rows[REPLICATE].astype(str), sort=False):
            rep = rep.sort_values(xcol, kind="stable")
            ax.plot(rep[xcol].to_numpy(float) + x_offset, rep[MEAS].to_numpy(float) + y_offset, ":", color=color,
                    lw=0.8)
    if data in ("points", "replicate"):
        x = rows[xcol].to_numpy(float) + x_offset
        y = rows[MEAS].to_numpy(float)
        given = rows["noise_given"].to_numpy(bool)
        ax.plot(x[~given], y[~given] + y_offset, "o", color=color, ms=3.5, mec="k", mew=0.4)
        if given.any():
            err = _data_band(y[given], rows["sigma"].to_numpy(float)[given], trans[given])
            ax.errorbar(x[given], y[given] + y_offset, yerr=err, fmt="o", color=color, ms=3.5, mec="k", mew=0.4,
                        capsize=2, elinewidth=0.8)
        return
    stats = rows.groupby(xcol, sort=True).agg(mean=(MEAS, "mean"), sd=(MEAS, "std"), n=(MEAS, "size"),
                                              sigma=("sigma", "mean"), tr=("transformation", "first"),
                                              given=("noise_given", "all"))
    x = stats.index.to_numpy(float) + x_offset
    y = stats["mean"].to_numpy(float)
    if data == "provided":
        ok = stats["given"].to_numpy(bool)
        err = np.where(ok, _data_band(y, stats["sigma"].to_numpy(float), stats["tr"].to_numpy(object)), 0.0)
    else:
        sd = np.nan_to_num(stats["sd"].to_numpy(float))
        err = sd / np.sqrt(stats["n"].to_numpy(float)) if data == "MeanAndSEM" else sd
        err = np.vstack([np.minimum(err, np.where(y > 0, y * (1 - 1e-9), np.inf)), err])  # a log axis stays > 0
    ax.errorbar(x, y + y_offset, yerr=err, fmt="o", color=color, ms=3.5, mec="k", mew=0.4, capsize=2,
                elinewidth=0.8)


def _limits(ax) -> bool:
    """Narrow the y axis to the data and the simulation (the lines drawn, error bars
    included) when the noise bands would stretch it more than 4-fold; True if it did."""
    log = ax.get_yscale() == "log"
    ys = [np.asarray(ln.get_ydata(), dtype=float).ravel() for ln in ax.lines]
    y = np.concatenate(ys) if ys else np.zeros(0)
    y = y[np.isfinite(y) & (y > 0)] if log else y[np.isfinite(y)]
    if y.size == 0:
        return False
    f, inv = (np.log10, lambda v: 10.0 ** v) if log else ((lambda v: v), (lambda v: v))
    lo, hi = float(f(y.min())), float(f(y.max()))
    span = hi - lo if hi > lo else max(abs(hi), 1.0) * 0.1
    cur = ax.get_ylim()
    if log and min(cur) <= 0:
        return False
    if f(cur[1]) - f(cur[0]) <= 4 * span:
        return False
    ax.set_ylim(inv(lo - 0.15 * span), inv(hi + 0.15 * span))
    return True


BAND_CLIPPED = "the noise band reaches beyond the axis, which shows the data and the simulation"


def _legend(ax, fontsize=6):
    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    if len(handles) > MAX_LEGEND:
        handles = handles[:MAX_LEGEND - 1]
        labels = labels[:MAX_LEGEND - 1] + [f"... {len(labels) - MAX_LEGEND + 1} more"]
        handles.append(ax.plot([], [], color="w")[0])
    ax.legend(handles, labels, fontsize=fontsize)


def _layout(fig, notes: list[str], max_lines: int = 6):
    """tight_layout with the notes (wrapped, at most max_lines lines) below the axes; the
    figure grows by their height."""
    lines = [ln for n in notes for ln in _wrap(n).splitlines()]
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + ["... (all notes: notes.txt)"]
    if lines:
        w, h = fig.get_size_inches()
        extra = 0.11 * len(lines) + 0.05
        fig.set_size_inches(w, h + extra)
        fig.text(0.01, 0.005, "\n".join(lines), fontsize=6, va="bottom", color="0.3")
        fig.tight_layout(rect=(0, extra / (h + extra), 1, 1))
    else:
        fig.tight_layout()


def _figure_notes(curves: Curves, keys) -> list[str]:
    """The notes of a figure that draws the (observable, pre, sim) `keys`: one per
    observable and kind, the experiments named."""
    keys = list(dict.fromkeys(keys))
    out = []
    for group, what in ((curves.at_measured, f"{OP} differ between time points under {{}}: simulation and band "
                                              "drawn at the measurement times only"),
                        (curves.band_at_measured, f"{NP} differ between time points under {{}}: noise band drawn "
                                                  "at the measurement times only"),
                        (curves.not_finite, "the simulation is not finite at some grid times under {}: not drawn "
                                            "there"),
                        (curves.unbounded, "sigma is so large under {} that the noise band has no bound: not "
                                           "drawn")):
        for o in dict.fromkeys(k[0] for k in keys):
            exps = [_experiment(pre, sim) for (oo, pre, sim) in keys if oo == o and (oo, pre, sim) in group]
            if exps:
                named = ", ".join(exps[:3]) + (f" and {len(exps) - 3} more" if len(exps) > 3 else "")
                out.append(f"'{o}': " + what.format(named))
    m = curves.measured
    inf = np.isinf(m[TIME].to_numpy(float))
    if any(((m[OBS] == o) & (m[PRE] == pre) & (m[SIM] == sim) & inf).any() for o, pre, sim in keys):
        out.append("time = inf (steady state): drawn at the right edge")
    return out


def _wrap(text: str, width: int = 150) -> str:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + len(w) + 1 > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    return "\n".join(lines + [cur])


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(name)).strip("_") or "plot"


# --------------------------------------------------------------------------- per observable
def observable_figures(curves: Curves, folder, title: str = "") -> list[Path]:
    """folder/<observableId>.png per measured observable: per experiment the simulation on
    the grid (line), its noise band, the data (points; error bars where given); a log y axis
    for log and log10 observables. Returns the paths."""
    plt = _pyplot()
    folder = Path(folder)
    m = curves.measured
    files = []
    for o in dict.fromkeys(m[OBS]):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        exps = list(dict.fromkeys(zip(m.loc[m[OBS] == o, PRE], m.loc[m[OBS] == o, SIM])))
        for k, (pre, sim) in enumerate(exps):
            _draw_series(ax, curves, o, pre, sim, f"C{k % 10}", _experiment(pre, sim))
        trans = curves.transformations[o]
        if _log_axis(trans):
            ax.set_yscale("log")
        ax.set_xlabel("time")
        name = curves.names.get(o) or o
        ax.set_ylabel(f"{name} ({trans})" if _log_axis(trans) else name)
        ax.set_title((f"{title}: " if title else "") + f"{o} (lines: simulation, band: +- sigma, points: data)",
                     fontsize=8)
        _legend(ax)
        clipped = [BAND_CLIPPED] if _limits(ax) else []
        _layout(fig, _figure_notes(curves, [(o, pre, sim) for pre, sim in exps]) + clipped)
        path = folder / f"{_safe(o)}.png"
        _finish(fig, path)
        files.append(path)
    return files


# --------------------------------------------------------------------------- visualization table
def visualization_figures(curves: Curves, visualization, conditions, folder, title: str = "",
                          ) -> tuple[list[Path], list[str]]:
    """folder/vis_<plotId>.png per plotId of a PEtab visualization table (a DataFrame; the
    rows of one plotId are its datasets). conditions: the condition table (index
    conditionId) for xValues other than time. Returns (paths, notes: what was not followed)."""
    plt = _pyplot()
    folder = Path(folder)
    vis = visualization.reset_index() if "plotId" not in visualization.columns else visualization
    vis = vis.reset_index(drop=True)
    files, all_notes = [], []
    unused = [c for c in vis.columns if c not in VIS_COLUMNS and c != "index"]
    for pid, spec in vis.groupby("plotId", sort=False):
        notes = [f"column{'s' if len(unused) > 1 else ''} {', '.join(unused)} of the visualization table "
                 "not supported (ignored)"] if unused else []
        kinds = {(_text(v) or "LinePlot") for v in spec.get("plotTypeSimulation", ["LinePlot"] * len(spec))}
        kind = sorted(kinds)[0]
        if len(kinds) > 1:
            notes.append(f"plotTypeSimulation differs between its datasets ({', '.join(sorted(kinds))}); drawn as "
                         f"{kind}")
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        first = spec.iloc[0]
        if kind == "ScatterPlot":
            _scatter(ax, curves, spec, notes)
        elif kind == "BarPlot":
            _bars(ax, curves, spec, notes)
        else:
            if kind != "LinePlot":
                notes.append(f"plotTypeSimulation '{kind}' is unknown (LinePlot, BarPlot, ScatterPlot); drawn as "
                             "LinePlot")
            _lines(ax, curves, spec, conditions, notes)
            xs = _text(first.get("xScale", "")) or "lin"
            if xs in ("log", "log10"):
                ax.set_xscale("log")
            elif xs not in ("lin", "order"):
                notes.append(f"xScale '{xs}' is unknown (lin, log, log10, order); linear axis")
        if kind != "ScatterPlot":
            ys = _text(first.get("yScale", ""))
            if not ys:  # the observables' scale
                trs = {curves.transformations.get(o, "lin") for o in _observables_of(curves, spec)}
                ys = "log" if trs and all(_log_axis(t) for t in trs) else "lin"
            if ys in ("log", "log10"):
                ax.set_yscale("log")
            elif ys != "lin":
                notes.append(f"yScale '{ys}' is unknown (lin, log, log10); linear axis")
            if kind != "BarPlot" and _limits(ax):
                notes.append(BAND_CLIPPED)
        if _text(first.get("xLabel", "")):
            ax.set_xlabel(_text(first["xLabel"]))
        if _text(first.get("yLabel", "")):
            ax.set_ylabel(_text(first["yLabel"]))
        ax.set_title((f"{title}: " if title else "") + (_text(first.get("plotName", "")) or str(pid)), fontsize=8)
        _legend(ax)
        notes = list(dict.fromkeys(notes))
        keys = [(o, pre, sim) for _, row in spec.iterrows() for o, r in _dataset_rows(curves, row, [])
                for pre, sim in zip(r[PRE], r[SIM])]
        _layout(fig, notes + _figure_notes(curves, keys))
        path = folder / f"vis_{_safe(pid)}.png"
        _finish(fig, path)
        files.append(path)
        all_notes += [f"plot '{pid}': {n}" for n in notes]
    return files, all_notes


def _dataset_rows(curves: Curves, row, notes: list):
    """The measured rows of one dataset row of the visualization table (its datasetId and
    yValues; either may be empty), per observable: [(observableId, rows)]."""
    m = curves.measured
    sel = np.ones(len(m), dtype=bool)
    did = _text(row.get("datasetId", ""))
    if did:
        if DATASET not in m:
            notes.append(f"datasetId '{did}': the measurement table has no datasetId column; all its rows used")
        else:
            sel &= (m[DATASET].astype(str) == did).to_numpy()
    y = _text(row.get("yValues", ""))
    if y:
        sel &= (m[OBS] == y).to_numpy()
    if not sel.any():
        notes.append(f"dataset '{did or y or '?'}': no measurements")
        return []
    rows = m[sel]
    return [(o, r) for o, r in rows.groupby(OBS, sort=False)]


def _observables_of(curves: Curves, spec) -> set:
    out = set()
    for _, row in spec.iterrows():
        out |= {o for o, _ in _dataset_rows(curves, row, [])}
    return out


def _label(row, o, pre, sim, n_series: int) -> str:
    entry = _text(row.get("legendEntry", ""))
    if entry and n_series == 1:
        return entry
    base = entry or _text(row.get("datasetId", "")) or o
    return f"{base} ({o}, {_experiment(pre, sim)})" if n_series > 1 else base


def _data_kind(row, notes) -> str:
    kind = _text(row.get("plotTypeData", "")) or "MeanAndSD"
    if kind not in ("MeanAndSD", "MeanAndSEM", "replicate", "provided"):
        notes.append(f"plotTypeData '{kind}' is unknown (MeanAndSD, MeanAndSEM, replicate, provided); MeanAndSD")
        return "MeanAndSD"
    return kind


def _lines(ax, curves: Curves, spec, conditions, notes):
    """LinePlot: per dataset the simulation over time (grid, band) or, with xValues a
    condition-table column, over that column's value per condition (a dose response)."""
    color = 0
    for _, row in spec.iterrows():
        xv = _text(row.get("xValues", "")) or "time"
        dx, dy = _number(row.get("xOffset", 0)) or 0.0, _number(row.get("yOffset", 0)) or 0.0
        data = _data_kind(row, notes)
        if data == "replicate" and REPLICATE not in curves.measured:
            notes.append("plotTypeData 'replicate': the measurement table has no replicateId; every point drawn")
        parts = _dataset_rows(curves, row, notes)
        series = [(o, pre, sim, r2) for o, r in parts for (pre, sim), r2 in r.groupby([PRE, SIM], sort=False)]
        if xv == "time":
            for o, pre, sim, r in series:
                _draw_series(ax, curves, o, pre, sim, f"C{color % 10}", _label(row, o, pre, sim, len(series)),
                             dx, dy, data, rows=r)
                color += 1
            if not _text(row.get("xLabel", "")):
                ax.set_xlabel("time")
            continue
        for o, r in parts:
            x = _condition_values(r, xv, conditions, notes)
            if x is None:
                continue
            r = r.assign(_x=x)
            if (_text(row.get("xScale", "")) or "lin") == "order":
                levels = np.unique(x[np.isfinite(x)])
                r = r.assign(_x=np.searchsorted(levels, x).astype(float))
            c = f"C{color % 10}"
            color += 1
            n_times = r.groupby("_x")[TIME].nunique().max()
            for k, (tv, rt) in enumerate(r.groupby(TIME, sort=True)):
                sim_line = rt.groupby("_x", sort=True).agg(y=("simulation", "mean"), lo=("lower", "mean"),
                                                          hi=("upper", "mean"))
                xx = sim_line.index.to_numpy(float) + dx
                lab = _label(row, o, "", "", 1) + (f", t = {tv:g}" if n_times > 1 else "")
                ls = ["-", "--", ":", "-."][k % 4]
                ax.plot(xx, sim_line["y"].to_numpy(float) + dy, color=c, ls=ls, lw=1.4, label=lab)
                ax.fill_between(xx, sim_line["lo"].to_numpy(float) + dy, sim_line["hi"].to_numpy(float) + dy,
                                color=c, alpha=0.15, lw=0)
                _draw_data(ax, rt, "_x", c, dx, dy, "points" if data == "replicate" else data)
            if not _text(row.get("xLabel", "")):
                ax.set_xlabel(xv)


def _condition_values(rows, column: str, conditions, notes):
    """(n,) the condition table's value of `column` for each row's simulation condition, or
    None (with a note) where it is not a number."""
    if conditions is None or column not in getattr(conditions, "columns", ()):
        notes.append(f"xValues '{column}' is neither 'time' nor a column of the condition table; dataset left out")
        return None
    values = [_number(conditions.loc[c, column]) if c in conditions.index else None for c in rows[SIM]]
    if any(v is None for v in values):
        notes.append(f"xValues '{column}': not a number under every condition of the dataset; dataset left out")
        return None
    return np.array(values, dtype=float)


def _scatter(ax, curves: Curves, spec, notes):
    """ScatterPlot: simulation against data per dataset, with the line of equality; log
    axes for log and log10 observables."""
    lo, hi, logs = np.inf, -np.inf, []
    for k, (_, row) in enumerate(spec.iterrows()):
        for o, r in _dataset_rows(curves, row, notes):
            d, s = r[MEAS].to_numpy(float), r["simulation"].to_numpy(float)
            ax.plot(d, s, "o", color=f"C{k % 10}", ms=3.5, mec="k", mew=0.4,
                    label=_text(row.get("legendEntry", "")) or _text(row.get("datasetId", "")) or o)
            lo, hi = min(lo, d.min(), s.min()), max(hi, d.max(), s.max())
            logs.append(_log_axis(curves.transformations.get(o, "lin")))
    if np.isfinite(lo):
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=0.8, ls="--")
    if logs and all(logs):
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("data")
    ax.set_ylabel("simulation")


def _bars(ax, curves: Curves, spec, notes):
    """BarPlot: per dataset the mean of the data (error bar by plotTypeData) beside the mean
    of the simulation with its band."""
    import pandas as pd

    labels = []
    for k, (_, row) in enumerate(spec.iterrows()):
        data = _data_kind(row, notes)
        parts = _dataset_rows(curves, row, notes)
        if not parts:
            continue
        r = parts[0][1] if len(parts) == 1 else pd.concat([p for _, p in parts])
        d = r[MEAS].to_numpy(float)
        sd = float(np.std(d, ddof=1)) if d.size > 1 else 0.0
        err = sd / math.sqrt(d.size) if data == "MeanAndSEM" else sd
        if data == "provided":
            y = float(np.mean(d))
            e = _data_band(np.array([y]), np.array([r["sigma"].mean()]), r["transformation"].iloc[0])
            err = e if bool(r["noise_given"].all()) else 0.0
        ax.bar(k - 0.2, d.mean(), width=0.4, color=f"C{k % 10}", alpha=0.5, yerr=err, capsize=3,
               label="data" if k == 0 else None)
        s = r["simulation"].to_numpy(float)
        ys = float(np.mean(s))
        e = np.array([[ys - r["lower"].mean()], [r["upper"].mean() - ys]])
        ax.bar(k + 0.2, ys, width=0.4, color=f"C{k % 10}", hatch="//", edgecolor="k", yerr=e, capsize=3,
               label="simulation (+- sigma)" if k == 0 else None)
        labels.append(_text(row.get("legendEntry", "")) or _text(row.get("datasetId", "")) or parts[0][0])
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=6)


# --------------------------------------------------------------------------- all of them
def fit_figures(measurements, observables, simulate, folder, conditions=None, visualization=None, title="",
                n_grid: int = 200, starts=None) -> tuple[list[Path], list[str]]:
    """The per-observable figures and, with a visualization table, one figure per plotId
    (see the module's docstring). Returns (paths, notes)."""
    curves = fit_curves(measurements, observables, simulate, n_grid=n_grid, starts=starts)
    files = observable_figures(curves, folder, title=title)
    notes = list(curves.notes)
    if visualization is not None and len(visualization):
        more, vis_notes = visualization_figures(curves, visualization, conditions, folder, title=title)
        files += more
        notes += vis_notes
    return files, notes
