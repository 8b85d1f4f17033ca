"""The public functions: jacobian, gradient, hvp, hessian and plan, with mode="auto".

Each asks the cost model for a `Plan` (forced when the caller names a mode), runs the
chosen AD routine and attaches the plan to the result.
"""

from __future__ import annotations

import datetime
import os
import time
from dataclasses import replace
from typing import Callable, Optional

import jax.numpy as jnp
import numpy as np

from .ad import adjoint, forward, second_order
from .ad.cost import PROBE_WIDTH, Calibration, Plan, calibrated, make_plan, stored_calibration
from .ad.forward import forward_jacobian
from .ad.modes import check_mode
from .core import compile_watch
from .core.checks import numbers
from .core.errors import InputError
from .core.model import ODEModel
from .core.problem import Problem
from .core.results import GradientResult, JacobianResult
from .integrate.solve import (
    Trajectory,
    run_checked,
    simulate,
    states_and_outputs_function,
    values_of,
    x0_of,
)
from .solvers import linear as stiff_linear
from .solvers import stiffness
from .solvers.registry import solver_name
from .stores import calibration as calibration_store

compile_watch.watch()  # a slow compile is reported once, in the toolkit's words

# probe the problem when the two exact modes are within this factor of each other: wider
# with the built-in constants than with a machine's own calibration
CLOSE_CALL = {"defaults": 3.0, "machine": 1.5}
PROBE_WORTH = 2.0  # seconds: about what compiling the probe's three extra functions costs
_PROBES: dict = {}


def _min_run(fn, repeats: int = 3) -> tuple[float, object]:
    """(best wall time of `repeats` calls, the result of a first untimed call that compiles)."""
    first = fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best, first


def probe(problem: Problem, base: Calibration | None = None) -> tuple[Calibration, int]:
    """Measure this problem: a solve, a JVP with k tangents, VJPs with 1 and k cotangents
    (k = the inputs / outputs the task has, between 2 and 64, since vectorisation makes the
    marginal cost depend on the width), each compiled once and timed as the best of 3.
    Returns the calibrated constants and the steps the solver takes. Cached per structure."""
    key = problem.structure_key(fn="probe", solver_used=solver_name(problem))
    if key in _PROBES:
        return _PROBES[key]
    base = base or stored_calibration() or Calibration()
    rng = np.random.default_rng(0)
    k_t = int(np.clip(problem.n_inputs, 2, PROBE_WIDTH))
    k_c = int(np.clip(problem.n_outputs, 2, PROBE_WIDTH))
    V = rng.standard_normal((k_t, problem.n_inputs))
    W = rng.standard_normal((k_c, problem.times.size, len(problem.of)))
    S, trajectory = _min_run(lambda: simulate(problem))
    T_jvp, _ = _min_run(lambda: forward.jvp_batch(problem, V))
    T_vjp1, _ = _min_run(lambda: adjoint.vjp_batch(problem, W[:1], "checkpoint"))
    T_vjp, _ = _min_run(lambda: adjoint.vjp_batch(problem, W, "checkpoint"))
    steps = trajectory.stats["num_steps"]
    result = (calibrated(base, S, T_jvp, T_vjp1, T_vjp, tangents=k_t, cotangents=k_c,
                         source="a probe of this problem"), steps)
    _PROBES[key] = result
    return result


def plan(problem: Problem, objective: Callable | None = None, task: str | None = None,
         mode: str = "auto", calibration: Calibration | None = None, probe_problem: bool | None = None,
         memory_budget: int | None = None) -> Plan:
    """The cost model's decision for this problem, without running it.

    task: "jacobian" (default without objective), "gradient" (default with one), "hvp" or
    "hessian". calibration: constants to use (default: the machine's file written by
    `sensitivity calibrate`, else built-in defaults). probe_problem: measure this problem
    first (True), never (False), or only when `mode` is "auto" and the decision is a close
    call (None).
    Returns a `Plan`; `plan.explain()` says why.
    """
    task = task or ("jacobian" if objective is None else "gradient")
    if task not in ("jacobian", "gradient", "hvp", "hessian"):
        raise InputError(f"task = '{task}' is unknown; valid: jacobian, gradient, hvp, hessian")
    check_mode(mode)
    cal = calibration or _stored_calibration() or Calibration()
    # a decision is remembered per structure and calibration: a repeated call (auto mode in
    # a loop) costs what the chosen mode costs, not a re-timing of solves
    key = (problem.structure_key(fn="plan", solver_used=solver_name(problem)), task, mode, cal,
           probe_problem, memory_budget)
    hit = _PLANS.get(key)
    if hit is None:
        hit = _plan(problem, task, mode, cal, probe_problem, memory_budget)
        hit = replace(hit, notes=hit.notes + (stiffness.note(problem),))
        if len(_PLANS) >= 256:
            _PLANS.pop(next(iter(_PLANS)))
        _PLANS[key] = hit
    return hit


_PLANS: dict = {}
_CALIBRATION: dict = {}
_CALIBRATION_PATHS: dict = {}


def _stored_calibration() -> Calibration | None:
    """`stored_calibration()`, read again only when the file changes."""
    env = (os.environ.get("SENSITIVITY_CALIBRATION"), os.environ.get("XDG_CACHE_HOME"), os.environ.get("HOME"))
    where = _CALIBRATION_PATHS.get(env)
    if where is None:  # building the path costs more than the stat below: once per environment
        where = _CALIBRATION_PATHS[env] = calibration_store.path()
    try:
        stamp = os.stat(where).st_mtime_ns
    except OSError:
        stamp = None
    key = (str(where), stamp)
    if key not in _CALIBRATION:
        _CALIBRATION.clear()
        _CALIBRATION[key] = stored_calibration(where) if stamp is not None else None
    return _CALIBRATION[key]


def _plan(problem: Problem, task: str, mode: str, cal: Calibration, probe_problem: bool | None,
          memory_budget: int | None) -> Plan:
    shape = dict(task=task, n_inputs=problem.n_inputs, n_outputs=problem.n_outputs,
                 n_states=problem.model.n_states, n_times=problem.times.size,
                 max_steps=problem.max_steps, checkpoints=problem.checkpoints,
                 memory_budget=memory_budget, extra_notes=stiff_linear.notes(problem))
    force = None if mode == "auto" else (mode, problem.adjoint if mode == "adjoint" else None)
    first = make_plan(calibration=cal, force=force, **shape)
    if probe_problem is False or (probe_problem is None and (force or not _close_call(first))):
        return first
    if probe_problem is None:
        # a close call: time one solve (compiled once, and needed anyway) and probe further
        # only if the modes' estimated difference outweighs what probing costs to compile
        S, trajectory = _min_run(lambda: simulate(problem), 2)
        timed = make_plan(calibration=replace(cal, solve_seconds=S), steps=trajectory.stats["num_steps"],
                          **shape)
        gap = _gap_solves(timed) * S
        if gap < PROBE_WORTH:
            return replace(timed, notes=timed.notes + (
                f"A close call, but the modes differ by an estimated {gap * 1e3:.2g} ms, less than "
                f"probing would cost to compile (~{PROBE_WORTH:g} s): not probed.",))
    measured, steps = probe(problem, cal)
    return make_plan(calibration=measured, steps=steps, force=force, **shape)


def _exact_costs(p: Plan) -> list[float]:
    return sorted(c.solves for c in p.candidates if c.fits and c.variant != "backsolve")


def _gap_solves(p: Plan) -> float:
    costs = _exact_costs(p)
    return costs[1] - costs[0] if len(costs) > 1 else 0.0


def _close_call(p: Plan) -> bool:
    costs = _exact_costs(p)
    factor = CLOSE_CALL["defaults" if p.calibration.source == "defaults" else "machine"]
    return len(costs) > 1 and costs[1] / costs[0] < factor


def _adjoint_problem(problem: Problem, p: Plan) -> Problem:
    """The problem with the plan's adjoint variant and checkpoints, when they differ."""
    ck = p.chosen.checkpoints if p.chosen.note else problem.checkpoints
    if p.variant == problem.adjoint and ck == problem.checkpoints:
        return problem
    return problem.memo(("adjoint_problem", p.variant, ck),
                        lambda: problem.replace(adjoint=p.variant, checkpoints=ck))


def jacobian(problem: Problem, mode: str = "auto", **plan_options) -> JacobianResult:
    """d outputs / d inputs at the save times, values of shape (n_times, n_outputs, n_inputs).

    mode: "auto" (the cost model decides), "forward" (n tangents in one sweep) or "adjoint"
    (n_times * n_outputs backward sweeps). The result carries the plan that chose the mode.
    """
    p = plan(problem, task="jacobian", mode=check_mode(mode), **plan_options)
    if p.mode == "forward":
        J, info = forward.jacobian(problem)
    else:
        problem = _adjoint_problem(problem, p)
        J, info = adjoint.jacobian(problem, p.variant)
    _guard_jacobian(J, info["outputs"], problem)
    return JacobianResult(J, info["outputs"], problem.times, problem.of, problem.input_names,
                          problem.x0(), p.mode, p.variant, p, info["stats"], info["timings"])


def gradient(problem: Problem, objective: Callable, mode: str = "auto", **plan_options) -> GradientResult:
    """Value and gradient of objective(ys), ys the outputs of shape (n_times, n_outputs),
    with respect to the inputs: grad of shape (n_inputs,). One backward sweep in adjoint
    mode, n tangents in forward mode; "auto" lets the cost model choose."""
    p = plan(problem, objective, task="gradient", mode=check_mode(mode), **plan_options)
    if p.mode == "forward":
        value, grad, info = forward.gradient(problem, objective)
    else:
        problem = _adjoint_problem(problem, p)
        value, grad, info = adjoint.gradient(problem, objective, p.variant)
    numbers.check_vector(grad, problem.input_names, f"gradient ({p.mode} mode)", problem.x0(), value=value)
    return GradientResult(value, grad, problem.input_names, p.mode, p.variant, p,
                          info["stats"], info["timings"])


def hvp(problem: Problem, objective: Callable, v, mode: str = "auto") -> np.ndarray:
    """Hessian-vector product H v, shape (n_inputs,), of objective(ys) with respect to the
    inputs, at about the cost of two gradients.

    mode: "auto" (= "rev-over-fwd"), "rev-over-fwd" (the gradient of the directional
    derivative carried by the forward sensitivity system, through the checkpointed adjoint)
    or "fwd-over-rev" (jvp of the gradient through diffrax's DirectAdjoint).
    """
    mode = check_mode(mode, ("auto",) + second_order.HVP_METHODS)
    hv, _ = second_order.hvp(problem, objective, v, "rev-over-fwd" if mode == "auto" else mode)
    numbers.check_vector(hv, problem.input_names, "Hessian-vector product", problem.x0())
    return hv


def hessian(problem: Problem, objective: Callable, mode: str = "auto") -> np.ndarray:
    """Dense Hessian of objective(ys) with respect to the inputs, shape (n_inputs, n_inputs).

    mode: "auto" (the cost model weighs n + n^2 forward tangents against n HVPs),
    "fwd-over-fwd" or "rev-over-fwd".
    """
    mode = check_mode(mode, ("auto",) + second_order.HESSIAN_METHODS)
    if mode == "auto":
        p = plan(problem, objective, task="hessian", probe_problem=False)
        mode = "fwd-over-fwd" if p.mode == "forward" else "rev-over-fwd"
    H, _ = second_order.hessian(problem, objective, mode)
    numbers.check_matrix(H, problem.input_names, f"Hessian ({mode})", psd=False, input_values=problem.x0())
    return H


def _guard_jacobian(J, outputs, problem: Problem) -> None:
    """The guard on a Jacobian (n_times, n_of, n_inputs) a user reads, with the outputs
    (n_times, n_of): warns when non-finite or absurd against its own scale
    (`core.checks.numbers`)."""
    numbers.check_jacobian(J, problem.input_names, "Jacobian", problem.of, problem.x0(), output_values=outputs,
                           check="sensitivity.check_gradient(problem, inputs=[{inputs}]) (the Jacobian's "
                                 "columns against central differences)")


def _reference_rhs(t, y, p):
    return p["W2"] @ jnp.tanh(p["W1"] @ y + p["b"]) - p["lam"] * y


def calibrate_machine(repeats: int = 3) -> Calibration:
    """Measure this machine's cost constants on a reference problem (a small neural ODE,
    8 states, 16 inputs, 100 save points) as `probe` does, averaged over `repeats` probes.
    Store the result with `ad.cost.save_calibration` (the `sensitivity calibrate` command)."""
    rng = np.random.default_rng(0)
    params = dict(W1=rng.standard_normal((16, 8)) / 3, b=0.1 * rng.standard_normal(16),
                  W2=rng.standard_normal((8, 16)) / 4, lam=np.full(8, 0.5))
    model = ODEModel("calibration_reference", 8, params, _reference_rhs, np.linspace(-1, 1, 8))
    prob = Problem(model, np.linspace(0, 5, 100), wrt=["W1"], rtol=1e-6, atol=1e-6)
    runs = []
    for _ in range(repeats):
        _PROBES.pop(prob.structure_key(fn="probe", solver_used=solver_name(prob)), None)
        runs.append(probe(prob, Calibration())[0])
    mean = lambda k: float(np.median([getattr(c, k) for c in runs]))  # noqa: E731
    today = datetime.date.today().isoformat()
    return Calibration(mean("tangent"), mean("record"), mean("cotangent"), None,
                       f"sensitivity calibrate on {today}")


# --------------------------------------------------------------------------- a run that needs both
# A config run simulates and then takes the Jacobian. In forward mode the Jacobian's sweep
# solves the very same ODE (the tangents ride along the primal solve, which they do not
# steer), so the states can come out of that program: one trace and one compile instead of
# two, which is most of a cold run's time on a small model.
def trajectory_and_jacobian(problem: Problem, mode: str = "auto", **plan_options
                            ) -> Optional[tuple[Trajectory, JacobianResult]]:
    """(Trajectory, JacobianResult) from one compiled program when the plan for the
    Jacobian is forward mode; None otherwise (the caller then simulates and asks
    `jacobian`). States (n_times, n_states), Jacobian (n_times, n_of, n_inputs)."""
    p = plan(problem, task="jacobian", mode=mode, **plan_options)
    if p.mode != "forward":
        return None
    g = states_and_outputs_function(problem, "forward")

    def f(x, values):
        ys, outputs, aux = g(x, values)
        return outputs, (aux, ys)  # the states as aux: carried, not differentiated

    def build():
        def h(x, values):
            out, (aux, ys), J = forward_jacobian(f, x, values)
            return out, aux, ys, J
        return h

    (ys, J), info = run_checked(problem, build, (x0_of(problem), values_of(problem)),
                                fn="trajectory_and_jacobian_forward")
    _guard_jacobian(J, info["outputs"], problem)
    trajectory = Trajectory(problem.times, np.asarray(ys), info["outputs"], problem.model.states,
                            problem.of, info["stats"], info["timings"])
    jac = JacobianResult(np.asarray(J), info["outputs"], problem.times, problem.of, problem.input_names,
                         problem.x0(), "forward", None, p, info["stats"], info["timings"])
    return trajectory, jac

