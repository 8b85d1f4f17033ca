"""SBML events in the cut-up solve of a model with one parameter vector (`segments`): its
driver of the one cut-up solve (`cutup`) for one experiment cut at breakpoints and event
times, and runs to a steady state with events.

An SBML event fires where its trigger turns from false to true and applies its event
assignments (`SBMLModel.events`, `SBMLModel.event_meta`). In `solve_function`:

- a *time event* (trigger `time >= T` or `time > T`, T an expression of parameters) is a
  segment boundary at T(p), like a piecewise breakpoint, with the event's reset applied at
  the boundary: y(T+) = reset(T, y(T-), p). The boundary is traced, so dT/dp enters the
  derivatives through the segment ends (the flow at the bounds, `bounds.flow_shift`);
- a *state event* (any other single comparison) is located inside a segment by diffrax's
  root finder (`diffrax.Event`, differentiated implicitly) and the solve restarts from the
  reset state, up to `PIECES_PER_STATE_EVENT` times per segment and state event;
- a trigger already true at t = 0 fires there when its `initialValue` is false (SBML), not
  when it is true; `time > T` with T = 0 turns true just after 0 and fires at 0;
- state events found at the same root, and events firing at t = 0, evaluate their
  assignments on the state before any of them (SBML's useValuesFromTriggerTime without
  delays) and each sets its own variables; time events at the same time fire one after
  another in the order of the SBML file (their order is undefined in SBML without priorities);
- an event whose trigger another event's assignments turn true fires at the same time
  (one round of such cascades);
- a save time at an event's time sees the state after the event;
- the segments are `cutup.scan_segments` (clip "clip", the time events' assignments at a
  segment's end), their pieces `cutup.run_piece` (the flow at the bounds themselves: the
  rhs evaluates its conditions at the segment's midpoint; save_end "reached"; with save =
  "step" the steps land on the save times), finished pieces skipped (`cutup.repeat`);
- after a preequilibration a trigger fires at t0 when it was false at the end of the
  preequilibration and is true at t0 (`solve(..., before=...)`).

`steady_function(m, solver, controller, max_steps, method)` returns
`steady(pv, y0, tol, t0=0.0, before=None) -> (y, ok, steps, true_end)` (preequilibration
and measurements at t = inf of a model with events):

- the model is solved from t0 towards t = inf; the solve stops where
  max_i |f_i| / (atol + rtol |y_i|) < 1 (the steady state) or where an event's trigger
  turns true (diffrax's root finder on the trigger's g = lhs - rhs, differentiated
  implicitly); an event applies its assignments (all read the state before them) and the
  run goes on, up to `PIECES` events;
- at t0 a trigger already true fires when it was false before: `before` (n_events,) the
  triggers' truth at the end of the previous phase, or, without one, when its
  initialValue is false (SBML);
- the steady state is polished by one Newton step with its matrix held constant
  (`newton_polish`: the implicit function theorem's derivatives);
- `true_end` (n_events,) is each trigger's truth at the steady state: the simulation
  after a preequilibration starts from it, so a trigger true at the end does not fire
  again at its start (PEtab test suite case v2 0023);
- `ok` is False when the run needs more than `PIECES` events or a solve fails.

Delays, priorities, non-persistent and compound triggers are not scheduled here (the
`Problem` path's `scheduled.Scheduler` does that).
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ..solvers.newton.steady_state import newton_polish
from . import cutup
from .cutup import restart_condition, root_finder

stop = jax.lax.stop_gradient
PIECES_PER_STATE_EVENT = 8  # restarts per segment and state event (more: the solve reports failure)
PIECES = 8  # events in one run to steady state (more: the run reports failure)


def _unpack(args):
    """(pv, fired_before, start) of the solver's args (pv, tc or tol, fired_before, start)."""
    return args[0], args[2], args[3]


def _events(m):
    """(event_meta, n_events, the triggers' g functions, their directions (+1: lhs > rhs),
    their initialValues (n_events,) bool) of model m."""
    meta = m.event_meta
    return (meta, len(meta), [fn for _, fn, _, _ in m.events], [int(d["direction"]) for d in meta],
            np.array([bool(d["initial_value"]) for d in meta]))


def _true(g, direction, strict):
    """The trigger's truth from g = lhs - rhs (direction +1: lhs > rhs or lhs >= rhs)."""
    if direction > 0:
        return g > 0 if strict else g >= 0
    return g < 0 if strict else g <= 0


def _adjoint(method: str):
    return diffrax.ForwardMode() if method == "forward" else diffrax.RecursiveCheckpointAdjoint()


def truth_function(m):
    """(t, y, pv) -> (n_events,) bool: each trigger's truth."""
    meta = m.event_meta
    conds = [fn for _, fn, _, _ in m.events]

    def truth(t, y, pv):
        return jnp.stack([_true(jnp.asarray(conds[k](t, y, pv), y.dtype).reshape(()), int(meta[k]["direction"]),
                                 bool(meta[k].get("strict", True))) for k in range(len(conds))])
    return truth


def apply_function(m):
    """apply(mask, t, y, pv) -> y: the resets of the events in `mask` (n_events,) at t, all
    evaluated on the state before them."""
    resets = [fn for _, _, fn, _ in m.events]

    def apply(mask, t, y, pv):
        out = y
        for k in range(len(resets)):
            r = jnp.asarray(resets[k](t, y, pv), y.dtype).reshape(y.shape)
            out = out + jnp.where(mask[k], r - y, 0.0)
        return out
    return apply


def fire_function(m):
    """fire(mask, t, y, pv) -> y: the events in `mask`, then those whose triggers they turned
    from false to true (one round: their assignments see the state after the first resets)."""
    apply, truth = apply_function(m), truth_function(m)

    def fire(mask, t, y, pv):
        after = apply(mask, t, y, pv)
        newly = ~truth(t, y, pv) & truth(t, after, pv)
        return apply(newly, t, after, pv)
    return fire


def solve_function(m, solver, controller, max_steps: int, method: str, save: str):
    """(pv, y0, ts, t0, tol) -> (ys (n_t, n_x), ok, steps): the model solved through its
    piecewise breakpoints and events (see the module docstring)."""
    meta, n_ev, conds, directions, initial_value = _events(m)
    strict = [bool(d.get("strict", True)) for d in meta]
    is_time = np.array([d["time"] is not None for d in meta])
    state_ev = [k for k in range(n_ev) if not is_time[k]]
    n_pieces = 1 + PIECES_PER_STATE_EVENT * len(state_ev)

    def vf(t, y, args):
        return m.rhs(t, y, args[0], args[1])

    term = diffrax.ODETerm(vf)

    if state_ev:
        event = diffrax.Event([restart_condition(conds[k], k, vf, _unpack) for k in state_ev], root_finder=root_finder(),
                              direction=[directions[k] > 0 for k in state_ev])
    else:
        event = None

    fire = fire_function(m)

    def run_piece(carry, b, ts, pv, tc, tol):
        t, y, ys, ok, steps, fired_before, done = carry
        tc = stop(tc)
        p = cutup.run_piece(term, solver, jnp.where(done, b, t), b, y, ys, ts, lambda start: (pv, tc, fired_before, start),
                            controller=controller(tol), adjoint=_adjoint(method), event=event, max_steps=max_steps,
                            limits=False, clip="clip", save_end="reached", keep=~done, step_ts=save == "step")
        t_new, y_new, ys, sol = p.t, p.y, p.ys, p.sol
        success = (sol.result == diffrax.RESULTS.successful) | (sol.result == diffrax.RESULTS.event_occurred)
        ok = ok & (success | done)
        steps = steps + jnp.where(done, 0, sol.stats["num_steps"])
        if event is not None:
            hit = (sol.result == diffrax.RESULTS.event_occurred) & ~done
            located = p.located & ~done
            fired = jnp.zeros(n_ev, bool)
            for j, k in enumerate(state_ev):
                fired = fired.at[k].set(located[j])
            y_new = fire(fired, t_new, y_new, pv)
            # a save time equal to the event time gets the state after the event
            ys = jnp.where(((ts == t_new) & hit)[:, None], y_new[None], ys)
            fired_before = fired
        done = done | (t_new >= b)
        return (t_new, y_new, ys, ok, steps, fired_before, done)

    def segment(pv, y, a, b, tc, ts, tol, ys, ok, steps):
        carry = (a, y, ys, ok, steps, jnp.zeros(n_ev, bool), jnp.asarray(False))
        # pieces after the segment's end are skipped (the solves run one after another under
        # lax.map; a vmapped batch evaluates both branches)
        carry = cutup.repeat(lambda c: run_piece(c, b, ts, pv, tc, tol), carry, n_pieces, skip=lambda c: c[-1])
        _, y, ys, ok, steps, _, done = carry
        return y, ys, ok & done, steps

    def solve(pv, y0, ts, t0, tol, before=None):
        tend = ts[-1]
        # triggers already true at t0 fire there when their initialValue is false (after a
        # preequilibration: when false at its end, `before`); `time > T`
        # with T = t0 turns true just after t0 and fires there too
        g0 = jnp.stack([jnp.asarray(c(t0, y0, pv), y0.dtype).reshape(()) for c in conds])
        true0 = jnp.stack([_true(g0[k], directions[k], strict[k]) for k in range(n_ev)])
        te = jnp.where(jnp.asarray(is_time), m.event_times(pv), jnp.inf)
        at_start = jnp.asarray(is_time) & jnp.asarray(strict) & (te == t0)
        was = jnp.asarray(initial_value) if before is None else before
        y0 = fire((true0 & ~was) | at_start, t0, y0, pv)
        # segment boundaries: piecewise breakpoints (no reset) and event times in (t0, tend]
        te_in = (te > t0) & (te <= tend)
        bp = m.breakpoints(pv) if m.n_breakpoints else jnp.zeros((0,), y0.dtype)
        raw = jnp.concatenate([bp, jnp.where(te_in, te, jnp.inf)])
        masks = jnp.concatenate([jnp.zeros((bp.shape[0], n_ev), bool),
                                 jnp.eye(n_ev, dtype=bool) & te_in[:, None]])

        def body(carry, seg):
            y, ys, ok, steps = carry
            a, b, mask, _ = seg  # mask: the time events at b (none after the last segment)
            y_end, ys, ok, steps = segment(pv, y, a, b, 0.5 * (a + b), ts, tol, ys, ok, steps)
            y_next = fire(mask, b, y_end, pv)
            # a save time on a time event gets the state after it
            ys = jnp.where(((ts == b) & jnp.any(mask))[:, None], y_next[None], ys)
            return (y_next, ys, ok, steps), None

        init = (y0, jnp.zeros((ts.shape[0], y0.shape[0]), y0.dtype), jnp.asarray(True), jnp.asarray(0))
        (_, ys, ok, steps), _ = cutup.scan_segments(body, init, t0, tend, raw, masks, clip="clip", jump_at="end")
        return ys, ok, steps

    return solve


def steady_function(m, solver, controller, max_steps: int, method: str):
    """The run to steady state with events (see the module docstring)."""
    _, n_ev, conds, directions, initial_value = _events(m)
    initial_value = jnp.asarray(initial_value)
    truth, fire = truth_function(m), fire_function(m)

    def vf(t, y, args):
        return m.rhs(t, y, args[0], t)

    term = diffrax.ODETerm(vf)

    def at_steady(t, y, args, **kw):
        pv, tol = args[0], args[1]
        return jnp.max(jnp.abs(m.rhs(t, y, pv, t)) / (tol[1] + tol[0] * jnp.abs(y))) < 1.0

    # diffrax reports only the first condition (in this order) that holds in a step: the
    # events before the steady state, so an event in the last step fires
    event = diffrax.Event([restart_condition(conds[k], k, vf, _unpack) for k in range(n_ev)] + [at_steady], root_finder=root_finder(),
                          direction=[d > 0 for d in directions] + [None])

    def piece(c, tol, pv):
        t, y, ok, steps, fired_before, done = c
        start = jax.lax.stop_gradient(t)
        sol = diffrax.diffeqsolve(
            term, solver, start, jnp.inf, None, y, (pv, tol, fired_before, start),
            saveat=diffrax.SaveAt(t1=True), stepsize_controller=controller(tol), event=event,
            max_steps=max_steps, adjoint=_adjoint(method), throw=False)
        t_new, y_new = sol.ts[0], sol.ys[0]
        mask = [jnp.asarray(x) for x in jax.tree_util.tree_leaves(sol.event_mask)]
        hit = sol.result == diffrax.RESULTS.event_occurred
        fired = jnp.stack(mask[:n_ev]) & hit
        steady_now = hit & mask[n_ev]
        y_new = jnp.where(steady_now, y_new, fire(fired, t_new, y_new, pv))
        return (t_new, y_new, ok & hit, steps + sol.stats["num_steps"], fired, steady_now)

    def steady(pv, y0, tol, t0=0.0, before=None):
        t0 = jnp.asarray(t0, y0.dtype)
        true0 = truth(t0, y0, pv)
        y0 = fire(true0 & (~initial_value if before is None else ~before), t0, y0, pv)
        carry = (t0, y0, jnp.asarray(True), jnp.asarray(0), jnp.zeros(n_ev, bool), jnp.asarray(False))
        carry = cutup.repeat(lambda c: piece(c, tol, pv), carry, PIECES + 1, skip=lambda c: c[-1])  # done: skipped
        t, y, ok, steps, _, done = carry
        y = newton_polish(lambda u: m.rhs(t, u, pv, t), y)
        return y, ok & done, steps, truth(t, y, pv)

    return steady
