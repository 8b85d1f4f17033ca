"""The local sensitivities of a run: simulate, Jacobian, gradient, Hessian through the
public API, returned in one `Analysis`. Nothing here writes files or prints; `run` reports
its stages through a callback.

Log-normalised sensitivities d ln y / d ln p = (p / y) dy/dp are scale-free for a rate or a
volume, but not for a time: p / y dy/dp with p a dose time depends on where time starts
(the same schedule shifted by a day changes it). Time inputs (dose times, breakpoint
parameters, parameters the rhs compares against t, parameters an event fires at) are
therefore scaled by the horizon H = t_end - t0 instead: (H / y) dy/dtau = d ln y / d (tau / H),
the relative change of the output when the time moves by the whole horizon. The ranking
says which measure each input got.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ...analyses.metrics import rank_inputs
from ...api import gradient as _gradient
from ...api import hessian as _hessian
from ...api import jacobian as _jacobian
from ...api import trajectory_and_jacobian
from ...core.checks.discontinuity import time_compared_parameters
from ...core.problem import Problem
from ...core.results import GradientResult, JacobianResult
from ...core.schedule import all_events, param_breakpoints
from ...integrate.solve import Trajectory, simulate


# --------------------------------------------------------------------------- a run
@dataclass(frozen=True)
class Analysis:
    """Everything one run computed.

    trajectory: the simulation; jacobian: the JacobianResult (values (n_times, n_outputs,
    n_inputs)); sensitivities: what the ranking and plots use, (n_times, n_outputs,
    n_inputs): the normalised Jacobian when normalize is "log" (d ln y / d ln p, and for
    the `time_inputs` d ln y / d (tau / horizon)), else the raw one; measures: what each
    input's column of `sensitivities` is (`MEASURES`); gradient / hessian: for the
    objective, when asked; ranking: `rank_inputs` rows (with the measure of each input);
    timings: seconds per stage (wall clock) and the compile / run split the results report.
    """

    trajectory: Trajectory
    jacobian: JacobianResult
    sensitivities: np.ndarray
    normalized: bool
    ranking: list[dict]
    gradient: Optional[GradientResult] = None
    hessian: Optional[np.ndarray] = None
    timings: dict = field(default_factory=dict)
    measures: tuple[str, ...] = ()
    time_inputs: tuple[str, ...] = ()
    horizon: float = float("nan")

    @property
    def label(self) -> str:
        """What `sensitivities` holds, in one line (for plots and files)."""
        if not self.normalized:
            return MEASURES["raw"]
        if not self.time_inputs:
            return MEASURES["log"]
        return f"{MEASURES['log']}; time inputs: {MEASURES['horizon']}, H = {self.horizon:g}"


MEASURES = {"raw": "dy/dp", "log": "d ln y / d ln p", "horizon": "d ln y / d (tau / H)"}


def time_inputs(problem: Problem) -> tuple[str, ...]:
    """The inputs that are times: dose times, breakpoint parameters (declared on the model
    or the problem), scalar parameters the rhs compares against t, and scalar parameters
    an event condition depends on only through t - p (it fires at t = p + const)."""
    times = set(param_breakpoints(problem)) | set(time_compared_parameters(problem.model))
    times |= _event_time_parameters(problem)
    return tuple(r.name for r in problem.wrt
                 if (r.kind == "dose" and r.target == "time")
                 or (r.kind == "param" and r.flat_index is None and r.target in times))


def _event_time_parameters(problem: Problem) -> set[str]:
    """Scalar parameters p in wrt with d g / d p = -d g / d t != 0 for an event condition g,
    at t0 and the initial state: a condition of t - p (a time trigger)."""
    names = [r.target for r in problem.wrt if r.kind == "param" and r.flat_index is None]
    events = all_events(problem)
    if not (names and events):
        return set()
    params = {k: jnp.asarray(v) for k, v in problem.parameters.items()}
    t, y = jnp.asarray(problem.t0), jnp.asarray(problem.y0)
    found = set()
    for ev in events:
        def g(t_, ps):
            return jnp.asarray(ev.condition(t_, y, {**params, **ps}), dtype=y.dtype).reshape(())
        try:
            dt, dp = jax.grad(g, argnums=(0, 1))(t, {k: params[k] for k in names})
        except Exception:  # noqa: BLE001 - a condition this cannot differentiate is no time trigger here
            continue
        dt = float(dt)
        found |= {k for k in names if dt != 0 and abs(float(dp[k]) + dt) <= 1e-12 * abs(dt)}
    return found


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
    log = normalize == "log"
    timed_inputs = time_inputs(problem) if log else ()
    horizon = float(problem.times[-1] - problem.t0)
    S = jac.normalized() if log else jac.values
    if timed_inputs:  # relative to the horizon, not to the time's value (see the module docstring)
        idx = [jac.input_names.index(name) for name in timed_inputs]
        y = jac.outputs[:, :, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            S[:, :, idx] = np.where(y == 0, np.nan, jac.values[:, :, idx] * horizon / y)
    measures = tuple(MEASURES["horizon"] if name in timed_inputs else MEASURES["log" if log else "raw"]
                     for name in jac.input_names)
    ranking = rank_inputs(problem.times, S, jac.input_names, jac.output_names, measures)
    grad = H = None
    if objective is not None:
        with timed("gradient", "objective gradient"):
            grad = _gradient(problem, objective, mode=mode, **plan_options)
        timings["gradient"].update(grad.timings)
        if hessian:
            with timed("hessian", f"Hessian ({problem.n_inputs} x {problem.n_inputs})"):
                H = _hessian(problem, objective)
    return Analysis(traj, jac, S, log, ranking, grad, H, timings, measures, timed_inputs, horizon)
