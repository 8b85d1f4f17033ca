"""SBML events in PEtab problems: the solve of one experiment cut at event times.

An SBML event fires where its trigger turns from false to true and applies its event
assignments (`SBMLModel.events`, `SBMLModel.event_meta`). In a PEtab solve:

- a *time event* (trigger `time >= T` or `time > T`, T an expression of parameters) is a
  segment boundary at T(p), like a piecewise breakpoint, with the event's reset applied at
  the boundary: y(T+) = reset(T, y(T-), p). The boundary is traced, so dT/dp enters the
  derivatives through the segment ends (the flow at the bounds, `integrate.bounds`);
- a *state event* (any other single comparison) is located inside a segment by diffrax's
  root finder (`diffrax.Event`, differentiated implicitly) and the solve restarts from the
  reset state, up to `pieces` times per segment;
- a trigger already true at t = 0 fires there when its `initialValue` is false (SBML), not
  when it is true; `time > T` with T = 0 turns true just after 0 and fires at 0;
- state events found at the same root, and events firing at t = 0, evaluate their
  assignments on the state before any of them (SBML's useValuesFromTriggerTime without
  delays) and each sets its own variables; time events at the same time fire one after
  another in the order of the SBML file (their order is undefined in SBML without priorities);
- an event whose trigger another event's assignments turn true fires at the same time
  (one round of such cascades);
- a measurement at an event's time sees the state after the event.

Preequilibration and steady-state measurements (time = inf) run the events too
(`petab_steady.py`); after a preequilibration a trigger fires at t0 when it was false at
the end of the preequilibration and is true at t0 (`solve(..., before=...)`).
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ..core.errors import ModelError
from ..integrate.bounds import flow_shift
from ..integrate.pieces import root_finder

stop = jax.lax.stop_gradient
PIECES_PER_STATE_EVENT = 8  # restarts per segment and state event (more: the solve reports failure)


def check(problem) -> None:
    """Raise ModelError when the PEtab problem combines events with what they do not support."""
    m = problem.model
    scheduled = [meta["name"] for meta in m.event_meta if meta.get("scheduled")]
    if scheduled:
        raise ModelError(f"petab: SBML event '{scheduled[0]}' of model '{m.id}' has a delay, a priority, a "
                         "non-persistent or a compound trigger: the PEtab solve does not schedule events "
                         "(sens.sbml.load simulates them)")
    # preequilibration and time = inf run the events too (petab_steady.py)


def restart_condition(g_fn, k, vf):
    """Event k's root function for diffrax.Event: g_fn(t, y, pv) (a scalar), except on a
    piece that restarts on the root of event k itself (args = (pv, _, fired_before, start)
    with fired_before[k] and t == start), where it reports the side the flow moves to
    (+-tiny by the sign of dg/dt along vf), so the root it starts on is not taken for a
    new crossing."""
    def cond(t, y, args, **kw):
        pv, _, fired_before, start = args
        g = jnp.asarray(g_fn(t, y, pv), y.dtype).reshape(())
        _, dg = jax.jvp(lambda t_, y_: jnp.asarray(g_fn(t_, y_, pv), y.dtype).reshape(()),
                        (t, y), (jnp.ones_like(t), vf(t, y, args)))
        tiny = jnp.asarray(np.finfo(np.float64).tiny, y.dtype)
        return jnp.where(fired_before[k] & (t == start), jnp.where(dg >= 0, tiny, -tiny), g)
    return cond


def failure_hint(m) -> str:
    """What else may have stopped a solve of a model with state events ('' without)."""
    if not any(meta["time"] is None for meta in m.event_meta):
        return ""
    return (f" With state events: a solve also stops when one fires more than {PIECES_PER_STATE_EVENT} "
            "times between two time events or breakpoints (petab_events.PIECES_PER_STATE_EVENT).")


def _true(g, direction, strict):
    """The trigger's truth from g = lhs - rhs (direction +1: lhs > rhs or lhs >= rhs)."""
    if direction > 0:
        return g > 0 if strict else g >= 0
    return g < 0 if strict else g <= 0


def solve_function(m, solver, controller, max_steps: int, method: str, save: str):
    """(pv, y0, ts, t0, tol) -> (ys (n_t, n_x), ok, steps): the model solved through its
    piecewise breakpoints and events (see the module docstring)."""
    meta = m.event_meta
    n_ev = len(meta)
    conds = [fn for _, fn, _, _ in m.events]
    resets = [fn for _, _, fn, _ in m.events]
    directions = [int(d["direction"]) for d in meta]
    initial_value = np.array([bool(d["initial_value"]) for d in meta])
    strict = [bool(d.get("strict", True)) for d in meta]
    is_time = np.array([d["time"] is not None for d in meta])
    state_ev = [k for k in range(n_ev) if not is_time[k]]
    n_pieces = 1 + PIECES_PER_STATE_EVENT * len(state_ev)

    def vf(t, y, args):
        return m.rhs(t, y, args[0], args[1])

    term = diffrax.ODETerm(vf)

    def adjoint():
        return diffrax.ForwardMode() if method == "forward" else diffrax.RecursiveCheckpointAdjoint()

    if state_ev:
        event = diffrax.Event([restart_condition(conds[k], k, vf) for k in state_ev], root_finder=root_finder(),
                              direction=[directions[k] > 0 for k in state_ev])
    else:
        event = None

    def apply(mask, t, y, pv):
        """Resets of the events in `mask` (n_ev,) at t, all evaluated on the state before."""
        out = y
        for k in range(n_ev):
            r = jnp.asarray(resets[k](t, y, pv), y.dtype).reshape(y.shape)
            out = out + jnp.where(mask[k], r - y, 0.0)
        return out

    def truth(t, y, pv):
        return jnp.stack([_true(jnp.asarray(conds[k](t, y, pv), y.dtype).reshape(()), directions[k], strict[k])
                          for k in range(n_ev)])

    def cascade(t, y_before, y_after, pv):
        """Events whose trigger the resets at t turned from false to true fire there too (one
        round: their assignments see the state after the first resets)."""
        newly = ~truth(t, y_before, pv) & truth(t, y_after, pv)
        return apply(newly, t, y_after, pv)

    def piece(carry, b, ts, pv, tc, tol):
        # pieces after the segment's end are skipped (the solves run one after another under
        # lax.map; a vmapped batch evaluates both branches)
        return jax.lax.cond(carry[-1], lambda c: c, lambda c: run_piece(c, b, ts, pv, tc, tol), carry)

    def run_piece(carry, b, ts, pv, tc, tol):
        t, y, ys, ok, steps, fired_before, done = carry
        # the solver runs between bounds with their derivatives stopped; the moving start and
        # end enter through the flow (integrate/bounds.py)
        moving = jnp.where(done, b, t)
        start, end, tc = stop(moving), stop(b), stop(tc)
        args = (pv, tc, fired_before, start)

        def f(t_, y_):
            return vf(t_, y_, args)

        y = flow_shift(f, y, moving, start)
        ctrl = controller(tol)
        if save == "step":
            ctrl = diffrax.ClipStepSizeController(ctrl, step_ts=jnp.clip(ts, start, end))
        sol = diffrax.diffeqsolve(
            term, solver, start, end, None, y, args,
            # two sub-saves: with one (ts + t1) an event leaves the t1 slot unfilled
            saveat=diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=jnp.clip(ts, start, end)), diffrax.SubSaveAt(t1=True)]),
            stepsize_controller=ctrl, max_steps=max_steps, adjoint=adjoint(), event=event, throw=False)
        (_, (t_new,)), (saved, (y_new,)) = sol.ts, sol.ys
        reached = t_new >= end  # no event before the end: the end is the moving one
        y_new = jnp.where(reached, flow_shift(f, y_new, end, b), y_new)
        t_new = jnp.where(reached, b, t_new)
        saved = jnp.where(((ts >= end) & reached)[:, None], y_new[None], saved)
        inside = ((ts >= start) & ((ts < t_new) | ((ts == b) & (t_new >= b))) & ~done)[:, None]
        ys = jnp.where(inside, saved, ys)
        success = (sol.result == diffrax.RESULTS.successful) | (sol.result == diffrax.RESULTS.event_occurred)
        ok = ok & (success | done)
        steps = steps + jnp.where(done, 0, sol.stats["num_steps"])
        if event is not None:
            hit = (sol.result == diffrax.RESULTS.event_occurred) & ~done
            leaves = [jnp.asarray(x) for x in jax.tree_util.tree_leaves(sol.event_mask)]
            fired = jnp.zeros(n_ev, bool)
            for j, k in enumerate(state_ev):
                fired = fired.at[k].set(leaves[j] & hit)
            y_new = cascade(t_new, y_new, apply(fired, t_new, y_new, pv), pv)
            # a save time equal to the event time gets the state after the event
            ys = jnp.where(((ts == t_new) & hit)[:, None], y_new[None], ys)
            fired_before = fired
        done = done | (t_new >= b)
        return (t_new, y_new, ys, ok, steps, fired_before, done)

    def segment(pv, y, a, b, tc, ts, tol, ys, ok, steps):
        carry = (a, y, ys, ok, steps, jnp.zeros(n_ev, bool), jnp.asarray(False))
        if n_pieces == 1:
            carry = piece(carry, b, ts, pv, tc, tol)
        else:
            carry, _ = jax.lax.scan(lambda c, _: (piece(c, b, ts, pv, tc, tol), None), carry, None,
                                    length=n_pieces)
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
        y0 = cascade(t0, y0, apply((true0 & ~was) | at_start, t0, y0, pv), pv)
        # segment boundaries: piecewise breakpoints (no reset) and event times in (t0, tend]
        te_in = (te > t0) & (te <= tend)
        bp = m.breakpoints(pv) if m.n_breakpoints else jnp.zeros((0,), y0.dtype)
        raw = jnp.concatenate([bp, jnp.where(te_in, te, jnp.inf)])
        masks = jnp.concatenate([jnp.zeros((bp.shape[0], n_ev), bool),
                                 jnp.eye(n_ev, dtype=bool) & te_in[:, None]])
        order = jnp.argsort(jax.lax.stop_gradient(raw))
        bnd = jnp.clip(raw[order], t0, tend)
        masks = masks[order]
        starts = jnp.concatenate([jnp.reshape(t0, (1,)), bnd])
        ends = jnp.concatenate([bnd, jnp.reshape(tend, (1,))])
        masks = jnp.concatenate([masks, jnp.zeros((1, n_ev), bool)])  # nothing fires at tend's end

        def body(carry, seg):
            y, ys, ok, steps = carry
            a, b, mask = seg
            y_end, ys, ok, steps = segment(pv, y, a, b, 0.5 * (a + b), ts, tol, ys, ok, steps)
            y_next = cascade(b, y_end, apply(mask, b, y_end, pv), pv)
            # a save time on a time event gets the state after it
            ys = jnp.where(((ts == b) & jnp.any(mask))[:, None], y_next[None], ys)
            return (y_next, ys, ok, steps), None

        init = (y0, jnp.zeros((ts.shape[0], y0.shape[0]), y0.dtype), jnp.asarray(True), jnp.asarray(0))
        (_, ys, ok, steps), _ = jax.lax.scan(body, init, (starts, ends, masks))
        return ys, ok, steps

    return solve
