"""The local sensitivities of a run: simulate, Jacobian, gradient, Hessian through the
public API, returned in one `Analysis`. Nothing here writes files or prints; `run` reports
its stages through a callback.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Optional

import numpy as np

from ...analyses.metrics import rank_inputs
from ...api import gradient as _gradient
from ...api import hessian as _hessian
from ...api import jacobian as _jacobian
from ...api import trajectory_and_jacobian
from ...core.problem import Problem
from ...core.results import GradientResult, JacobianResult
from ...integrate.solve import Trajectory, simulate


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
        # in forward mode, one program gives both (api.trajectory_and_jacobian): one trace, one compile
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
