"""The cut-up solve of a model with one parameter vector (an `SBMLModel`: rhs(t, y, pv, tc),
`breakpoints(pv)`, `events`): one experiment solved through its pieces.

An experiment is an optional run to steady state (a preequilibration, with its own
parameter vector pv0), then the simulation from t0 to the last save time, cut at the
model's piecewise breakpoints and SBML events (`sbml_events`), then optionally a run on
from the last save time to a steady state (a measurement at t = inf). `experiment_function`
builds the solve of one experiment from the solver's name; the importer only translates
its problem into (pv, y0, ts, t0, tol) and, for a preequilibration, (pv0, y_pre, after).

Two kinds of solver run the pieces:

- the lean Rosenbrock loop (`solvers.lean_rodas`: Rodas5P or Rodas4): a segment is one
  call of the loop, and a preequilibration and the segments after it are one `lax.scan`
  over pieces of one solve (`with_preequilibration`: one traced copy of the loop and of its
  reverse sweep instead of two); a model with events runs diffrax's Rodas5P instead (the
  lean loop has no root finding);
- a diffrax solver (`diffrax_segment`, `diffrax_steady`), with a PI step-size controller
  (`controller`) and, with save = "step", steps clipped onto the save times.

The segments are those of the one cut-up solve (`cutup.cut`, `cutup.scan_segments`, clip
"clip_first"). Segment bounds that move with the parameters (breakpoints) are differentiated
through the flow at the bounds (`bounds.fixed_bounds_segment`), with every solver. The condition time
tc that the rhs evaluates its piecewise conditions at is the segment's midpoint (the end
without breakpoints), so the rhs is smooth inside a segment.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import diffrax
import jax
import jax.numpy as jnp

from ..core.solvers import LEAN_RODAS
from ..solvers import lean_rodas
from ..solvers.newton.chord import Chord
from ..solvers.newton.steady_state import newton_polish
from ..solvers.registry import solver_class
from . import cutup, sbml_events
from .bounds import fixed_bounds_segment


def controller(tol, pid=(0.3, 0.3)):
    """PI step-size control (diffrax's suggestion for stiff problems): where stability rather
    than accuracy limits the step, the default I controller's step sizes oscillate and
    steps are rejected; the proportional term damps that, so the PEtab problems take fewer
    steps for the same nllh. tol = (rtol, atol)."""
    return diffrax.PIDController(rtol=tol[0], atol=tol[1], pcoeff=pid[0], icoeff=pid[1])


def implicit(name: str) -> bool:
    """Whether solver `name` (of `core.solvers.TABLE`) is implicit (a lean Rosenbrock loop or
    a diffrax implicit solver)."""
    return name in LEAN_RODAS or issubclass(solver_class(name), diffrax.AbstractImplicitSolver)


def diffrax_solver(name: str, newton_kappa: float):
    """The diffrax solver `name`, None for a lean loop; an implicit one stops its Newton
    iterations at `newton_kappa` times the step tolerance."""
    if name in LEAN_RODAS:
        return None
    cls = solver_class(name)
    if issubclass(cls, diffrax.AbstractImplicitSolver):
        # tolerances from the step-size controller: traced, so one executable serves all
        return cls(root_finder=diffrax.with_stepsize_controller_tols(Chord)(kappa=newton_kappa))
    return cls()


def rematerialised(m, method: str):
    """The model, its rhs rematerialised (`jax.checkpoint`) where reverse mode goes through it
    (method "checkpoint"): a linearised rhs outside the solver's loop then keeps its inputs,
    not every scalar it computes (a residual each, stacked per experiment and per segment:
    about a thousand arrays for a model of 25 states, the larger part of the program XLA
    compiles), and computes them again backwards."""
    if method != "checkpoint" or not dataclasses.is_dataclass(m):
        return m
    return dataclasses.replace(m, rhs=jax.checkpoint(m.rhs, prevent_cse=False))


def _adjoint(method: str):
    return diffrax.ForwardMode() if method == "forward" else diffrax.RecursiveCheckpointAdjoint()


def diffrax_segment(m, solver, method: str, max_steps: int, save: str, pid) -> Callable:
    """(pv, y0, a, b, tc, ts, tol) -> (ys at clip(ts, a, b) (n_t, n), y(b), diffrax result,
    steps): one segment by a diffrax solver; save = "step" lands the steps on the save times
    (the implicit solvers' dense output is only third order, interpolating would cost more
    accuracy than the tolerances)."""
    def vf(t, y, args):
        pv, tc = args
        return m.rhs(t, y, pv, tc)

    term = diffrax.ODETerm(vf)

    def segment(pv, y0, a, b, tc, ts, tol):
        ctrl = controller(tol, pid)
        if save == "step":
            ctrl = diffrax.ClipStepSizeController(ctrl, step_ts=jnp.clip(ts, a, b))
        sol = diffrax.diffeqsolve(
            term, solver, a, b, None, y0, (pv, tc),
            saveat=diffrax.SaveAt(ts=jnp.clip(ts, a, b), t1=True),
            stepsize_controller=ctrl, max_steps=max_steps, adjoint=_adjoint(method), throw=False)
        return sol.ys[:-1], sol.ys[-1], sol.result, sol.stats["num_steps"]

    return segment


def diffrax_steady(m, solver, method: str, max_steps: int, pid) -> Callable:
    """(pv, y0, tol, t0) -> (steady state, diffrax result (event_occurred when reached),
    steps): simulate until max_i |f_i| / (atol + rtol |y_i|) < 1, then one Newton step that
    makes the derivatives the implicit function theorem's (`steady_state.newton_polish`)."""
    def vf(t, y, args):
        return m.rhs(t, y, args[0], t)

    def cond(t, y, args, **kwargs):
        pv, tol = args
        return jnp.max(jnp.abs(m.rhs(t, y, pv, t)) / (tol[1] + tol[0] * jnp.abs(y))) < 1.0

    event = diffrax.Event(cond)
    term = diffrax.ODETerm(vf)

    def steady(pv, y0, tol, t0=0.0):
        sol = diffrax.diffeqsolve(
            term, solver, t0, jnp.inf, None, y0, (pv, tol), saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=controller(tol, pid), event=event, max_steps=max_steps,
            adjoint=_adjoint(method), throw=False)
        t = sol.ts[0]
        y = newton_polish(lambda u: m.rhs(t, u, pv, t), sol.ys[0])
        return y, sol.result, sol.stats["num_steps"]

    return steady


def segment_bounds(m, pv, t0, tend):
    """The segment bounds (k + 1,) of a solve from t0 to tend: t0, the model's breakpoints
    clipped into [t0, tend] and sorted (`cutup.cut`, clip "clip_first"), tend."""
    c = cutup.cut(m.breakpoints(pv), t0, tend, clip="clip_first")
    return jnp.concatenate([c.starts, c.ends[-1:]])


def through_breakpoints(segment: Callable, m) -> Callable:
    """(pv, y0, ts, t0, tol) -> (ys (n_t, n), ok, steps): `segment` (see `diffrax_segment`)
    over the segments between t0, the model's breakpoints and ts[-1], one `lax.scan`
    (`cutup.scan_segments`, clip "clip_first")."""
    def solve(pv, y0, ts, t0, tol):
        tend = ts[-1]
        if m.n_breakpoints == 0:
            ys, _, res, steps = segment(pv, y0, t0, tend, tend, ts, tol)
            return ys, res == diffrax.RESULTS.successful, steps

        def body(carry, x):
            y, ys, ok, steps = carry
            a, b, _, _ = x
            seg, y_end, res, n = segment(pv, y, a, b, 0.5 * (a + b), ts, tol)
            inside = ((ts >= a) & (ts <= b))[:, None]
            ys = jnp.where(inside, seg, ys)
            return (y_end, ys, ok & (res == diffrax.RESULTS.successful), steps + n), None

        init = (y0, jnp.zeros((ts.shape[0], y0.shape[0])), jnp.asarray(True), jnp.asarray(0))
        (_, ys, ok, steps), _ = cutup.scan_segments(body, init, t0, tend, m.breakpoints(pv), clip="clip_first")
        return ys, ok, steps

    return solve


def with_preequilibration(piece: Callable, m) -> Callable:
    """(pv, ts, t0, tol, pre) -> (ys (n_t, n), ok, steps): a preequilibration and the
    simulation after it as one `lax.scan` over pieces of one solve (`lean_rodas.piece_fn`
    wrapped by `fixed_bounds_segment`): the run to a steady state with the preequilibration's
    parameters pv0 from y_pre, then, from after(its end), the segments between t0, the
    model's breakpoints and ts[-1] with pv. One traced copy of the solver loop (and of its
    reverse sweep) instead of two. pre = (pv0, y_pre, after)."""
    def solve(pv, ts, t0, tol, pre):
        pv0, y_pre, after = pre
        tend = ts[-1]
        bounds = jnp.stack([t0, tend]) if m.n_breakpoints == 0 else segment_bounds(m, pv, t0, tend)
        k = bounds.shape[0] - 1
        zero = jnp.zeros((1,), bounds.dtype)
        a = jnp.concatenate([zero, bounds[:-1]])
        b = jnp.concatenate([zero, bounds[1:]])
        # the condition time of a segment: its midpoint (the end without breakpoints)
        tc = jnp.concatenate([zero, jnp.full((1,), tend) if m.n_breakpoints == 0 else 0.5 * (a[1:] + b[1:])])
        steady = jnp.arange(k + 1) == 0
        pvs = jnp.concatenate([pv0[None], jnp.broadcast_to(pv, (k,) + pv.shape)])

        def body(carry, x):
            y, ys, ok, steps = carry
            a_, b_, tc_, steady_, pv_ = x
            seg, y_end, ok_, n = piece((pv_, steady_), y, a_, b_, tc_, ts, tol)
            y_end = jnp.where(steady_, after(y_end), y_end)
            inside = (((ts >= a_) & (ts <= b_) | (m.n_breakpoints == 0)) & ~steady_)[:, None]
            return (y_end, jnp.where(inside, seg, ys), ok & ok_, steps + n), None

        init = (y_pre, jnp.zeros((ts.shape[0], y_pre.shape[0]), y_pre.dtype), jnp.asarray(True), jnp.asarray(0))
        (_, ys, ok, steps), _ = jax.lax.scan(body, init, (a, b, tc, steady, pvs))
        return ys, ok, steps

    return solve


def experiment_function(m, solver: str, method: str, max_steps: int, *, save: str = "step",
                        pid=(0.3, 0.3), newton_kappa: float = 0.3, scan_stages: bool = False,
                        steady_events: bool = True) -> Callable:
    """run(pv, y0, ts, t0, tol, pre=None, after=None, steady_state=False) -> (ys, ok, steps):
    one experiment of model m by solver `solver` (a name of the solver table). save: "step"
    (steps land on the save times) or another value (the save times by the solver's dense
    output: the lean Rodas5P loop's own, order 4).

    pv (n_p,) the simulation's parameters, y0 (n,) its initial state, ts (n_t,) the save
    times (sorted; the last is the end), t0 the start time, tol = (rtol, atol). pre: None,
    or (pv0, y_pre) to run a preequilibration first, from y_pre with pv0, to steady state;
    the simulation then starts from after(steady state) (y0 unused). steady_state: one more
    row, the state after a run on from ts[-1] to a steady state (a measurement at t = inf).
    ys (n_t (+ 1), n), ok False where a solve failed, steps the steps taken. method:
    "forward" (forward mode) or "checkpoint" (reverse mode). steady_events: the runs to
    steady state fire the model's events too (False: a model whose events only stand for
    the periods of an experiment, not for a preequilibration)."""
    m = rematerialised(m, method)
    lean = solver in LEAN_RODAS
    dx = diffrax_solver(solver, newton_kappa)
    if m.events:  # SBML events: segments cut at event times, state events inside them
        # (the lean loop's dense output is its own: the events' diffrax solves land on the save times)
        solve = sbml_events.solve_function(m, dx or solver_class("rodas5p")(), lambda tol: controller(tol, pid),
                                           max_steps, method, "step" if lean else save)
    else:
        segment = (lean_rodas.segment_fn(m, method, max_steps, solver, scan_stages, save != "step") if lean
                   else diffrax_segment(m, dx, method, max_steps, save, pid))
        # switching times that move with the parameters: derivatives through the flow
        # (without breakpoints the bounds are t0 and the last save time, which carry none)
        if m.n_breakpoints:
            segment = fixed_bounds_segment(segment, m.rhs)
        solve = through_breakpoints(segment, m)
    steady = (lean_rodas.steady_fn(m, method, max_steps, solver, scan_stages) if lean
              else diffrax_steady(m, dx, method, max_steps, pid))
    steady_ev = truth = None
    if steady_events and m.events:  # preequilibration and time = inf run the events too
        steady_ev = sbml_events.steady_function(m, dx or solver_class("rodas5p")(),
                                                lambda tol: controller(tol, pid), max_steps, method)
        truth = sbml_events.truth_function(m)
    joint = None
    if lean and not m.events:  # a preequilibration and the segments after it: one loop
        piece = lean_rodas.piece_fn(m, method, max_steps, solver, scan_stages, save != "step")
        if m.n_breakpoints:
            piece = fixed_bounds_segment(piece, lambda t, y, pvs, tc: m.rhs(t, y, pvs[0], jnp.where(pvs[1], t, tc)))
        joint = with_preequilibration(piece, m)

    def run(pv, y0, ts, t0, tol, pre=None, after=None, steady_state=False):
        t0 = jnp.asarray(t0, dtype=jnp.float64)
        ok, steps = jnp.asarray(True), jnp.asarray(0)
        if pre is not None and joint is not None:
            pv0, y_pre = pre
            ys, ok, steps = joint(pv, ts, t0, tol, (pv0, y_pre, after))
        elif pre is not None:
            pv0, y_pre = pre
            if steady_ev is None:
                y0, res0, n0 = steady(pv0, y_pre, tol)
                ok = ok & (res0 == diffrax.RESULTS.event_occurred)
                before = None
            else:  # the triggers' truth at the end carries over: true ones do not fire at t0
                y0, ok0, n0, before = steady_ev(pv0, y_pre, tol)
                ok = ok & ok0
            steps = steps + n0
            y0 = after(y0)
            ys, ok_solve, n = solve(pv, y0, ts, t0, tol) if before is None else solve(pv, y0, ts, t0, tol,
                                                                                         before=before)
            ok, steps = ok & ok_solve, steps + n
        else:
            ys, ok_solve, n = solve(pv, y0, ts, t0, tol)
            ok, steps = ok & ok_solve, steps + n
        if steady_state and steady_ev is not None:  # on from the last save time, events too
            y_ss, ok1, n1, _ = steady_ev(pv, ys[-1], tol, ts[-1], before=truth(ts[-1], ys[-1], pv))
            ys = jnp.concatenate([ys, y_ss[None]])
            ok, steps = ok & ok1, steps + n1
        elif steady_state:  # on from the last save time to a steady state
            y_ss, res1, n1 = steady(pv, ys[-1], tol, ts[-1])
            ys = jnp.concatenate([ys, y_ss[None]])
            ok, steps = ok & (res1 == diffrax.RESULTS.event_occurred), steps + n1
        return ys, ok, steps

    return run
