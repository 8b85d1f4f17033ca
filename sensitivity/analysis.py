"""Sensitivity analysis on top of the AD core: time integrals, rankings, and a whole run.

Pure functions of arrays (`trapezoid`, `time_integrated`, `time_mean`, `rank_inputs`,
`nearest_indices`), the config's scalar objectives (`Objective`: sum_of_squares,
final_value, integral, JAX-traceable functions of the outputs), and `run(problem, ...)`,
which computes everything a config asks for through the public API (simulate, jacobian,
gradient, hessian) and returns it in an `Analysis`. Nothing here writes files or prints;
`run` reports its stages through a callback.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Optional

import numpy as np

from .problem import Problem
from .results import GradientResult, JacobianResult

# the solver side (.api, .solve: JAX and diffrax) is imported inside `run`, so that reading
# a config (which uses `Objective`) does not import it


# --------------------------------------------------------------------------- arrays
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


def rank_inputs(times: np.ndarray, S: np.ndarray, input_names, output_names) -> list[dict]:
    """Inputs ranked by their time-integrated absolute sensitivity summed over outputs.

    Returns one row per input, most influential first: rank (1-based), input, score
    (sum_j integral |S_j(t)| dt), share (score / sum of scores), and one column per output
    (that output's integral). Ties keep the input order.
    """
    per = time_integrated(times, S)  # (n_outputs, n_inputs)
    score = per.sum(axis=0)
    total = float(score.sum())
    order = sorted(range(len(input_names)), key=lambda i: -score[i])
    rows = []
    for rank, i in enumerate(order, start=1):
        row = {"rank": rank, "input": input_names[i], "score": float(score[i]),
               "share": float(score[i] / total) if total > 0 else 0.0}
        row.update({name: float(per[j, i]) for j, name in enumerate(output_names)})
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
    kind "integral":    sum_j of the trapezoid rule integral of ys[:, j] over `times`.
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

    def __call__(self, ys):
        cols = np.asarray(self.columns, dtype=int)
        if self.kind == "final_value":
            return ys[-1, cols].sum()
        if self.kind == "integral":
            y = ys[:, cols]
            dt = np.diff(np.asarray(self.times))[:, None]
            return ((y[1:] + y[:-1]) * dt).sum() * 0.5
        rows = np.asarray(self.rows, dtype=int)
        r = (ys[rows, cols] - np.asarray(self.target)) * np.asarray(self.weights)
        return (r * r).sum()



# --------------------------------------------------------------------------- a run
@dataclass(frozen=True)
class Analysis:
    """Everything one run computed.

    trajectory: the simulation; jacobian: the JacobianResult (values (n_times, n_outputs,
    n_inputs)); sensitivities: what the ranking and plots use, the normalised Jacobian
    d ln y / d ln p when normalize is "log", else the raw one; gradient / hessian: for the
    objective, when asked; ranking: `rank_inputs` rows; timings: seconds per stage
    (wall clock) and the compile / run split the results report.
    """

    trajectory: Trajectory
    jacobian: JacobianResult
    sensitivities: np.ndarray
    normalized: bool
    ranking: list[dict]
    gradient: Optional[GradientResult] = None
    hessian: Optional[np.ndarray] = None
    timings: dict = field(default_factory=dict)


Stage = Callable[[str], ContextManager]
PROBE = {"auto": None, "always": True, "never": False}


def run(problem: Problem, objective: Optional[Callable] = None, mode: str = "auto",
        normalize: str = "none", hessian: bool = False, probe: str = "auto",
        stage: Optional[Stage] = None) -> Analysis:
    """Simulate, then the Jacobian of the outputs at the save times w.r.t. the inputs (in
    `mode`), then, for an objective, its value and gradient and, if `hessian`, its Hessian.

    probe: "auto" (the cost model measures the problem when the choice of mode is a close
    call), "always" or "never" (see `sensitivity.plan`). stage(name) -> context manager,
    entered around each step (for progress display).
    Raises SolverError when a solve fails.
    """
    from .api import gradient as _gradient
    from .api import hessian as _hessian
    from .api import jacobian as _jacobian
    from .fused import trajectory_and_jacobian
    from .solve import simulate

    stage = stage or (lambda name: nullcontext())
    plan_options = {"probe_problem": PROBE[probe]}
    timings: dict = {}

    @contextmanager
    def timed(key: str, label: str):
        start = time.perf_counter()
        with stage(label):
            yield
        timings[key] = {"wall": time.perf_counter() - start}

    with timed("simulate", "compiling and simulating"):
        # in forward mode, one program gives both (sensitivity.fused): one trace, one compile
        both = trajectory_and_jacobian(problem, mode, **plan_options)
        traj = both[0] if both else simulate(problem)
    timings["simulate"].update(traj.timings)
    with timed("jacobian", f"Jacobian ({problem.times.size} times x {len(problem.of)} outputs x "
                           f"{problem.n_inputs} inputs, mode {mode})"):
        jac = both[1] if both else _jacobian(problem, mode=mode, **plan_options)
    timings["jacobian"].update(jac.timings)
    S = jac.normalized() if normalize == "log" else jac.values
    ranking = rank_inputs(problem.times, S, jac.input_names, jac.output_names)
    grad = H = None
    if objective is not None:
        with timed("gradient", "objective gradient"):
            grad = _gradient(problem, objective, mode=mode, **plan_options)
        timings["gradient"].update(grad.timings)
        if hessian:
            with timed("hessian", f"Hessian ({problem.n_inputs} x {problem.n_inputs})"):
                H = _hessian(problem, objective)
    return Analysis(traj, jac, S, normalize == "log", ranking, grad, H, timings)
