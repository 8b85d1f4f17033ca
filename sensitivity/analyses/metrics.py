"""Metrics of sensitivities over time, and the config's scalar objectives.

Pure functions of arrays (`trapezoid`, `time_integrated`, `time_mean`, `heatmap_values`,
`rank_inputs`, `nearest_indices`) and `Objective` (sum_of_squares, final_value, integral: JAX-traceable
functions of the outputs; an integral is differentiated as a quadrature state of the ODE,
`ad.quadrature`). No JAX at import.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core.errors import InputError


def trapezoid(times: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Integral over time by the trapezoid rule along axis 0.

    times (n_times,), values (n_times, ...) -> (...). sum_k (t_k+1 - t_k) (v_k + v_k+1) / 2.
    """
    times = np.asarray(times, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if times.size < 2:
        return np.zeros(values.shape[1:])
    dt = np.diff(times).reshape((-1,) + (1,) * (values.ndim - 1))
    return ((values[1:] + values[:-1]) * dt).sum(axis=0) / 2.0


def time_integrated(times: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Time-integrated absolute sensitivity, integral of |S(t)| dt, per output and input.

    S (n_times, n_outputs, n_inputs) -> (n_outputs, n_inputs). NaN entries (a normalised
    sensitivity where the output is zero) count as 0.
    """
    return trapezoid(times, np.nan_to_num(np.abs(S), nan=0.0, posinf=0.0, neginf=0.0))


def time_mean(times: np.ndarray, S: np.ndarray) -> np.ndarray:
    """Signed time average (1 / (t_end - t_0)) integral of S(t) dt, shape (n_outputs, n_inputs);
    NaN entries count as 0. With one save time, that time's values."""
    S = np.nan_to_num(np.asarray(S, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if len(times) < 2:
        return S[0]
    return trapezoid(times, S) / float(times[-1] - times[0])


HEATMAP_VIEWS = ("magnitude", "signed")


def heatmap_values(times: np.ndarray, S: np.ndarray, view: str = "magnitude") -> np.ndarray:
    """What a run's heatmap shows, (n_outputs, n_inputs) from S (n_times, n_outputs, n_inputs).

    view "magnitude" (the default): integral |S(t)| dt, the ranking's per-output values; a
    sensitivity that changes sign does not cancel. "signed": integral S(t) dt, where positive
    and negative stretches cancel (a large S of both signs can show as ~0). NaN counts as 0.
    """
    if view == "magnitude":
        return time_integrated(times, S)
    if view == "signed":
        return trapezoid(times, np.nan_to_num(np.asarray(S, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0))
    raise InputError(f"heatmap view '{view}' is unknown; valid: {', '.join(HEATMAP_VIEWS)}")


def rank_inputs(times: np.ndarray, S: np.ndarray, input_names, output_names, measures=None) -> list[dict]:
    """Inputs ranked by their time-integrated absolute sensitivity summed over outputs.

    Returns one row per input, most influential first: rank (1-based), input, score
    (sum_j integral |S_j(t)| dt), share (score / sum of scores), and one column per output
    (that output's integral). Ties keep the input order.

    measures: one string per input saying what its column of S is (e.g. "d ln y / d ln p",
    or for a time input "d ln y / d (tau / H)"), or None when all are alike. Scores of
    different measures do not compare, so inputs are then ranked within their measure, the
    measure most inputs share first, share is relative to that measure's total, and a last
    column "measure" names it.
    """
    per = time_integrated(times, S)  # (n_outputs, n_inputs)
    score = per.sum(axis=0)
    n = len(input_names)
    groups = list(measures) if measures is not None else [""] * n
    kinds = sorted(dict.fromkeys(groups), key=lambda m: (-groups.count(m), groups.index(m)))
    total = {m: float(sum(score[i] for i in range(n) if groups[i] == m)) for m in kinds}
    order = sorted(range(n), key=lambda i: (kinds.index(groups[i]), -score[i]))
    rows = []
    for rank, i in enumerate(order, start=1):
        whole = total[groups[i]]
        row = {"rank": rank, "input": input_names[i], "score": float(score[i]),
               "share": float(score[i] / whole) if whole > 0 else 0.0}
        row.update({name: float(per[j, i]) for j, name in enumerate(output_names)})
        if measures is not None:
            row["measure"] = measures[i]
        rows.append(row)
    return rows


def nearest_indices(times: np.ndarray, wanted) -> list[int]:
    """Indices of the save times nearest to each wanted time (duplicates dropped, in order)."""
    out: list[int] = []
    for t in wanted:
        k = int(np.argmin(np.abs(np.asarray(times) - float(t))))
        if k not in out:
            out.append(k)
    return out


# --------------------------------------------------------------------------- objectives
@dataclass(frozen=True)
class Objective:
    """A scalar objective of the outputs ys (n_times, n_outputs), JAX-traceable (it uses
    only indexing and arithmetic, so it runs on numpy arrays and on JAX tracers alike).

    kind "final_value": sum_j ys[-1, j] over `columns`.
    kind "integral":    sum_j integral of output j over [times[0], times[-1]] (the problem's
        first and last save time when `times` is empty). `gradient`, `hvp`, `hessian` (every
        mode) integrate it exactly, as a quadrature state of the ODE (`ad.quadrature`): the
        solver controls its error and doses and events cut it exactly. Called on an array
        ys alone, it can only be the trapezoid rule over `times`, as accurate as that grid
        (and blind to a jump between two save times).
    kind "sum_of_squares": sum_k ((ys[rows_k, columns_k] - target_k) * weights_k)^2, one k
        per observed data value (weights = 1 / sigma).
    Equal objectives compare and hash equal, so compiled functions are reused.
    """

    kind: str
    columns: tuple[int, ...]
    rows: tuple[int, ...] = ()
    target: tuple[float, ...] = ()
    weights: tuple[float, ...] = ()
    times: tuple[float, ...] = ()

    @property
    def quadrature(self):
        """(columns, (start, end) or None) for an integral (see `ad.quadrature`), else None."""
        if self.kind != "integral":
            return None
        return self.columns, ((self.times[0], self.times[-1]) if self.times else None)

    def __call__(self, ys):
        cols = np.asarray(self.columns, dtype=int)
        if self.kind == "final_value":
            return ys[-1, cols].sum()
        if self.kind == "integral":
            if len(self.times) != ys.shape[0]:
                raise InputError(f"integral objective on an array: ys has {ys.shape[0]} rows, times "
                                 f"{len(self.times)}; give the save times (or differentiate it through "
                                 "sensitivity.gradient, which integrates it exactly)")
            y = ys[:, cols]
            dt = np.diff(np.asarray(self.times))[:, None]
            return ((y[1:] + y[:-1]) * dt).sum() * 0.5
        rows = np.asarray(self.rows, dtype=int)
        r = (ys[rows, cols] - np.asarray(self.target)) * np.asarray(self.weights)
        return (r * r).sum()
