"""Doses, breakpoints and state events of a `Problem`: its driver of the one cut-up solve
(`cutup`).

A solve over [t0, T] is split at *segment boundaries* (doses, parameter breakpoints) and,
inside each segment, at *state events*; their types and validation are
`sensitivity.core.schedule`. Fixed-time breakpoints are handed to the step-size controller
(`jump_ts`). A state event is located by a Newton root finder and differentiated
implicitly (diffrax `Event` + optimistix).

Dose times, parameter breakpoints and switching times that are expressions of parameters
(`SwitchTime`) are sorted (traced) into one array of K boundaries and
the solve is a `lax.scan` over the K + 1 segments with traced bounds (`cutup.scan_segments`,
clip "select", the jump at a segment's start): one compiled function serves every dose
schedule of the same count. The solver runs between bounds with their derivatives stopped,
and the derivative with respect to a dose time or a breakpoint enters through the flow at
the bounds (`bounds.flow_shift`, at the one-sided limits: this rhs compares t with its
switching times): differentiating the solver's step sequence instead grows without bound
on stiff segments. Every piece saves at all save times (clipped into it) and a mask keeps
those that fall inside it (`cutup.run_piece`, save_end "last"): a save time equal to
a boundary gets the state *after* the jump (also a dose on the last save time, in a
zero-length last segment), and its derivative with respect to the boundary is that of the
side where the jump stays at or before the save time. Inside a segment, the solve runs up to
`1 + sum(max_occurrences)` pieces (`cutup.repeat`), each ending at the next event (or the
segment's end); the events' resets and terminal stops are applied here, or by the
`scheduled.Scheduler`.

After a terminal event, the remaining pieces run on a zero-length interval and keep no
save; the remaining save times hold the state at the event.
"""

from __future__ import annotations

from typing import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ..core.errors import InputError, SolverError
from ..core.schedule import DOSE_KEY, all_events, crossing, param_breakpoints, switch_times
from ..solvers.newton import reuse
from . import cutup
from . import scheduled as sched
from .bounds import beside
from .crossings import CrossingGuard


def dose_values(problem) -> dict:
    """The dose arrays a compiled function takes: times (n_doses,), amounts (n_doses,)."""
    ds = problem.doses
    return {"time": jnp.asarray(np.array([d.time for d in ds], dtype=np.float64)),
            "amount": jnp.asarray(np.array([d.amount for d in ds], dtype=np.float64))}


def controller(problem, values, roots: Callable | None = None):
    """The PID controller, clipped onto the fixed-time breakpoints when there are any; with
    event root functions roots(t, y, args) -> (n_roots,), guarded so that a step holds at
    most one sign change of each (`crossings.CrossingGuard`)."""
    pid = diffrax.PIDController(rtol=values["rtol"], atol=values["atol"])
    if roots is not None:
        pid = CrossingGuard(pid, roots)
    if getattr(problem, "fixed_breakpoints", ()):
        return diffrax.ClipStepSizeController(pid, jump_ts=values["jump_ts"])
    return pid


def solve_function(problem, method: str, steps: int, rhs: Callable | None, make_adjoint: Callable,
                   solver) -> Callable:
    """(params, y0, values) -> (ys (n_times, n_states), aux): the solve cut at doses,
    parameter breakpoints and state events, differentiable in every AD mode.

    `params` may hold the dose arrays under DOSE_KEY ({"time": (n_doses,), "amount":
    (n_doses,)}); they are taken out before the rhs sees the parameters.

    With `rhs` given, the solve is of the forward sensitivity system beside the state:
    z = (y, s), params = (p, dp) with dp the tangent of p (dose arrays included) and
    rhs(t, z, (p, dp)) its vector field. At a boundary tau with jump J the tangent then jumps
    by s+ = s- + dJ + (f(tau-, y-) - f(tau+, y+)) dtau: the moving jump (doses and parameter
    breakpoints; not state events).
    """
    aug = rhs is not None
    if aug and all_events(problem):
        raise InputError(
            "this route (the forward sensitivity system beside the state) does not support state "
            "events; use hvp mode 'fwd-over-rev' or hessian mode 'fwd-over-fwd'")
    if method == "backsolve":
        raise InputError(
            "adjoint = 'backsolve' does not support doses, parameter breakpoints or events (diffrax's "
            "BacksolveAdjoint cannot save at sub-times or stop at events); use adjoint='checkpoint'")
    model = problem.model
    n = model.n_states
    dose_state = np.array([model.states.index(d.state) for d in problem.doses], dtype=int)
    n_doses = len(problem.doses)
    bp_names = param_breakpoints(problem)
    switches = switch_times(problem)
    events = all_events(problem)
    n_pieces = 1 + sum(ev.pieces for ev in events)
    scheduler = _scheduler(problem, events, model, n)
    if scheduler is not None:
        n_pieces = scheduler.pieces
    counted = not aug and reuse.enabled(problem)  # the reuse solver's counters, summed over pieces

    field = rhs if aug else model.rhs

    def vector_field(t, y, args):  # args = (params, events fired at the piece's start, its start)
        return jnp.asarray(field(t, y, args[0]), dtype=y.dtype).reshape(y.shape)

    def f(t, y, p):
        return jnp.asarray(model.rhs(t, y, p), dtype=y.dtype).reshape(y.shape)

    term = diffrax.ODETerm(vector_field)

    if scheduler is not None:  # every root function, both ways
        conds = [scheduler.condition(i) for i in range(scheduler.n_atoms)]
        event = diffrax.Event(conds, root_finder=cutup.root_finder(), direction=[None] * len(conds))
    elif events:
        conds = [cutup.restart_condition(ev.condition, k, vector_field, lambda args: args)
                 for k, ev in enumerate(events)]
        dirs = [crossing(ev.direction) for ev in events]
        event = diffrax.Event(conds, root_finder=cutup.root_finder(), direction=dirs)
    else:
        event = None
    successful = diffrax.RESULTS.successful

    def roots(t, y, args):  # every root function as the event sees it
        if scheduler is not None:
            return scheduler.conditions(t, y, args)
        return jnp.stack([jnp.asarray(c(t, y, args), y.dtype).reshape(()) for c in conds])

    def solve(params, y0, values):
        if aug:
            params, dparams = dict(params[0]), dict(params[1])
            ddose = dparams.pop(DOSE_KEY, None)
        params = dict(params)
        dose = params.pop(DOSE_KEY, None)
        times = values["times"]
        t0, T = values["t0"], times[-1]
        ctrl = controller(problem, values, roots if event is not None else None)
        adjoint = make_adjoint(ctrl)
        # ---- segment boundaries (K of them) and the jump at each, sorted by time
        bounds, jumps, dbounds, djumps = [], [], [], []
        scatter = lambda a: jnp.zeros((n_doses, n), y0.dtype).at[jnp.arange(n_doses), dose_state].set(a)  # noqa: E731
        if n_doses:
            bounds.append(dose["time"])
            jumps.append(scatter(dose["amount"]))
            if aug:
                dbounds.append(ddose["time"])
                djumps.append(scatter(ddose["amount"]))
        if bp_names:
            bounds.append(jnp.stack([jnp.asarray(params[k], y0.dtype) for k in bp_names]))
            jumps.append(jnp.zeros((len(bp_names), n), y0.dtype))
            if aug:
                dbounds.append(jnp.stack([jnp.asarray(dparams[k], y0.dtype) for k in bp_names]))
                djumps.append(jnp.zeros((len(bp_names), n), y0.dtype))
        if switches:  # switching times that are expressions of parameters
            def switch_at(p):
                return jnp.stack([jnp.asarray(sw.time(p), y0.dtype).reshape(()) for sw in switches])

            bounds.append(switch_at(params))
            jumps.append(jnp.zeros((len(switches), n), y0.dtype))
            if aug:
                dbounds.append(jax.jvp(switch_at, (params,), (dparams,))[1])
                djumps.append(jnp.zeros((len(switches), n), y0.dtype))
        # what jumps at each boundary (sorted with them in cutup.scan_segments): the state
        # (n,), its tangent (n,) and the boundary's tangent (none where it is clipped)
        raw = jnp.concatenate(bounds) if bounds else jnp.zeros((0,), y0.dtype)
        J = jnp.concatenate(jumps) if bounds else jnp.zeros((0, n), y0.dtype)
        if aug and bounds:
            marks = (J, jnp.concatenate(djumps), jnp.where((raw >= t0) & (raw <= T), jnp.concatenate(dbounds), 0.0))
        else:
            marks = (J, jnp.zeros_like(J), jnp.zeros_like(raw))
        args_p = (params, dparams) if aug else params

        def between(t, y, ys, result, stats, end, last, make_args, keep=True):
            """One piece (`cutup.run_piece`) from the moving start t to the moving end: (the
            time and state where it ended (the located event or the end), ys with the saves
            inside it (and `keep`), result, stats, the root functions located there
            ((n_roots,) bool, None without events))."""
            p = cutup.run_piece(term, solver, t, end, y, ys, times, make_args, controller=ctrl, adjoint=adjoint,
                                event=event, max_steps=steps, limits=True, clip="select", save_end="last",
                                last=last, keep=keep, solver_state=counted)
            sol = p.sol
            bad = (sol.result != successful) & (sol.result != diffrax.RESULTS.event_occurred)
            result = diffrax.RESULTS.where((result == successful) & bad, sol.result, result)
            piece_stats = {**sol.stats, **(reuse.stats(sol.solver_state) if counted else {})}
            stats = {k: (jnp.maximum(stats[k], sol.stats["num_steps"]) if k == "max_piece_steps"
                         else stats[k] + piece_stats[k]) for k in stats}
            return p.t, p.y, p.ys, result, stats, p.located

        def piece_scheduled(carry, end, last):
            # as `piece`, with the end at the earliest pending execution, stop points
            # processed by the scheduler (sched.Scheduler.process)
            t, y, ys, stopped, result, stats, t_stop, y_stop, es = carry
            t_in, y_in, ys_in = t, y, ys
            end = jnp.minimum(end, scheduler.next_time(es))
            t_new, y_new, ys, result, stats, located = between(
                t, y, ys, result, stats, end, last, lambda start: (args_p, (es["signs"], es["active"]), start))
            # a root function that crossed earlier in the step than the located one: this
            # piece again, with only the missed ones
            missed = scheduler.missed(t_new, y_new, es, params, located)
            again = jnp.any(missed)
            y_new, es_new = scheduler.process(t_new, y_new, es, params, located=located)
            es = jax.tree_util.tree_map(lambda a, b: jnp.where(again, a, b), {**es, "active": missed}, es_new)
            return (jnp.where(again, t_in, t_new), jnp.where(again, y_in, y_new), jnp.where(again, ys_in, ys),
                    stopped, result, stats, t_stop, y_stop, es)

        def piece(carry, end, last):
            t, y, ys, stopped, result, stats, t_stop, y_stop, fired_before = carry
            t_new, y_new, ys, result, stats, located = between(
                jnp.where(stopped, end, t), y, ys, result, stats, end, last,
                lambda start: (args_p, fired_before, start), keep=~stopped)
            if events:
                fired = located & ~stopped
                y_after = y_new
                terminal = jnp.asarray(False)
                for k, ev in enumerate(events):
                    if ev.reset is not None:
                        reset = jnp.asarray(ev.reset(t_new, y_new, params), y_new.dtype).reshape(y_new.shape)
                        y_after = jnp.where(fired[k], reset, y_after)
                    if ev.terminal:
                        terminal = terminal | fired[k]
                t_stop = jnp.where(terminal, t_new, t_stop)
                y_stop = jnp.where(terminal, y_new, y_stop)
                stopped = stopped | terminal
                y_new = jnp.where(terminal, y_new, y_after)
                fired_before = fired
            return (t_new, y_new, ys, stopped, result, stats, t_stop, y_stop, fired_before)

        def segment(carry, seg):
            start, end, (jump, djump, dstart), last = seg
            t, y, ys, stopped, result, stats, t_stop, y_stop, _ = carry
            if aug:  # the state jumps by J, its tangent by dJ + (f(tau-, y-) - f(tau+, y+)) dtau
                y_, s_ = y[:n], y[n:]
                y_plus = y_ + jump
                left = beside(start, -1)  # tau-
                moved = f(left, y_, params) - f(start, y_plus, params)
                jumped = jnp.concatenate([y_plus, s_ + djump + moved * dstart])
            else:
                jumped = y + jump
            y = jnp.where(stopped, y, jumped)
            if scheduler is not None:  # a stop point: the jump may change triggers
                y, es = scheduler.process(start, y, carry[8], params)
                carry = (start, y, ys, stopped, result, stats, t_stop, y_stop, es)
                run = piece_scheduled
            else:
                carry = (jnp.where(stopped, t, start), y, ys, stopped, result, stats, t_stop, y_stop, no_event)
                run = piece
            carry = cutup.repeat(lambda c: run(c, end, last), carry, n_pieces)
            t = carry[0]
            short = (t < end) & ~carry[3]
            return carry, short

        stats0 = {k: jnp.zeros((), jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)
                  for k in ("num_steps", "num_accepted_steps", "num_rejected_steps", "max_piece_steps",
                            *(reuse.COUNTERS if counted else ()))}
        ys0 = jnp.zeros((times.size, y0.shape[0]), y0.dtype)
        no_event = jnp.zeros(len(events), bool)
        ev0 = no_event
        if scheduler is not None:  # the triggers at t0 against their initial values
            y0, ev0 = scheduler.process(t0, y0, scheduler.start(t0, y0, params), params, exact=True)
        carry0 = (t0, y0, ys0, jnp.asarray(False), successful, stats0, jnp.asarray(jnp.inf, y0.dtype), y0, ev0)
        carry, short = cutup.scan_segments(segment, carry0, t0, T, raw, marks, clip="select", jump_at="start")
        _, _, ys, stopped, result, stats, t_stop, y_stop, ev_end = carry
        ys = jnp.where((times > t_stop)[:, None], y_stop, ys)
        aux = {"result": result, **stats}
        if scheduler is not None:  # a code of sched.MESSAGES, 0 when the solve is whole
            aux["events_exhausted"] = ev_end["code"] | jnp.where(jnp.any(short), sched.PIECES_EXHAUSTED, 0)
        elif events:
            aux["events_exhausted"] = jnp.any(short)
        return ys, aux

    return solve


def _scheduler(problem, events, model, n):
    """The `scheduled.Scheduler` of a problem whose events are scheduled, else None;
    `InputError` when scheduled and plain events are mixed."""
    kinds = {ev.scheduled for ev in events}
    if True not in kinds:
        return None
    if len(kinds) > 1:
        raise InputError(f"model '{model.name}': scheduled events (trigger, delay, priority, persistent=False, "
                         "initial_value=False) cannot be mixed with plain events in one problem")
    params = {k: jnp.asarray(v) for k, v in problem.parameters.items()}
    y = jnp.asarray(problem.y0, jnp.float64)
    sizes = [int(np.prod(jax.eval_shape(lambda ev=ev: ev.condition(jnp.zeros(()), y, params)).shape))
             for ev in events]

    def f(t, y_, p):
        return jnp.asarray(model.rhs(t, y_, p), dtype=y_.dtype).reshape(y_.shape)

    return sched.Scheduler(events, f, n, sizes)


def check_aux(problem, aux: dict) -> None:
    """Raise `SolverError` when a segment ran out of event pieces before its end."""
    if not bool(np.asarray(aux["result"] == diffrax.RESULTS.successful)):
        return  # a failed piece stops short too: the solver's own message says more
    code = int(np.asarray(aux.get("events_exhausted", 0)))
    if code and any(ev.scheduled for ev in all_events(problem)):
        raise SolverError(f"model '{problem.model.name}': {sched.message(code, all_events(problem))}. Try: raise "
                          "Event(..., max_occurrences=...) or max_pending, or tighter tolerances.")
    if code:
        budget = {i: ev.max_occurrences for i, ev in enumerate(all_events(problem)) if not ev.terminal}
        raise SolverError(
            f"model '{problem.model.name}': the events fired more often than their max_occurrences "
            f"({budget}) allow between two doses, so the solve stopped early. Try: raise "
            "Event(..., max_occurrences=...), or make the event terminal.")


def extra_values(problem) -> dict:
    """What `solve.values_of` adds: fixed breakpoint times (jump_ts) and, inside the
    parameters, the dose arrays."""
    out = {}
    if getattr(problem, "fixed_breakpoints", ()):
        out["jump_ts"] = jnp.asarray(np.array(problem.fixed_breakpoints, dtype=np.float64))
    return out


def dose_params(problem) -> dict:
    """The dose arrays, under DOSE_KEY, for the parameter mapping of a compiled function."""
    return {DOSE_KEY: dose_values(problem)} if getattr(problem, "doses", ()) else {}
