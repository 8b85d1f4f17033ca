"""Scheduled events: triggers, pending executions, priorities (the SBML event semantics).

An event of `sensitivity.core.schedule.Event` with a trigger, a delay, a priority or a
non-persistent trigger is *scheduled*. Its condition gives root functions g (one per
comparison of a compound trigger); the solve in `pieces` stops where any of them crosses
zero, where a pending execution is due, and at segment bounds. At every such stop point
`Scheduler.process` runs:

1. the triggers are evaluated just after the time: each root function as the sign it has
   there (the side the flow moves to; the root function diffrax located takes the side
   opposite to the one it had), then `trigger(g)`;
2. a trigger that turned from false to true *triggers* its event: an execution is queued
   at t + delay(t, y, p) (now, without a delay), with reset's values at t when the event
   uses values from the trigger time; a trigger that turned false cancels the pending
   executions of a non-persistent event;
3. while executions are due at t: the one of highest priority (evaluated now; equal
   priorities: a pseudo-random order drawn from t and the state; no priorities: the event
   listed first; the earliest queued first) runs, then 1 and 2 again on the new state.

The pending executions are a fixed-size queue (`Event.max_pending` slots per event), so
the solve is one traced program; an execution time is a traced bound of the next piece, so
its derivative (through the trigger time and the delay) enters through the flow as for any
moving bound. A problem the static budgets cannot hold ends in a code that
`pieces.check_aux` turns into a `SolverError` naming it (never a silently wrong result):

    1  a segment ran out of pieces (Event.max_occurrences)
    2  executions still due at one time after the budget of executions per time
    8  a trigger fired while all Event.max_pending slots of its event were taken
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

PIECES_EXHAUSTED, EXECUTIONS_EXHAUSTED, QUEUE_FULL = 1, 2, 8
MESSAGES = {
    PIECES_EXHAUSTED: "the events fired more often than their max_occurrences ({budget}) allow "
                      "between two doses, so the solve stopped early",
    EXECUTIONS_EXHAUSTED: "more event executions were due at one time than the solve runs there "
                          "(events that trigger each other without end?)",
    QUEUE_FULL: "an event triggered while max_pending ({pending}) executions of it were already "
                "pending",
}


def _right_step(t):
    """The look-ahead of a trigger evaluated just after t: g + h dg/dt decides a root's side."""
    return 1e-9 * (1.0 + jnp.abs(jax.lax.stop_gradient(t)))


def at_root(g, dg, t):
    """Whether root-function values g (with dg/dt = dg along the flow) are at their root at
    t, to the located time's accuracy: the side a restart starts on is then the one the flow
    moves to, not the sign of g (a reset that moved the state off the root keeps g's sign)."""
    return jnp.abs(g) <= 10 * _right_step(t) * jnp.abs(dg) + 1e-14 * (1 + jnp.abs(g))


class Scheduler:
    """The stop-point logic of a problem's scheduled events.

    events: the problem's `Event`s (all scheduled); f(t, y, p) -> (n,) the vector field;
    n: the number of states; sizes: the number of root functions of each event."""

    def __init__(self, events, f: Callable, n: int, sizes):
        self.events, self.f, self.n = tuple(events), f, n
        self.sizes = tuple(int(s) for s in sizes)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        self.n_atoms = int(self.offsets[-1])
        self.slots = max(ev.max_pending for ev in self.events)
        self.persistent = np.array([ev.persistent for ev in self.events])
        self.initial = np.array([ev.initial_value for ev in self.events])
        self.budget = 2 * len(self.events) + 2  # executions per stop point
        masks = np.zeros((len(self.events), n), bool)
        for k, ev in enumerate(self.events):
            if ev.targets is not None:
                masks[k, list(ev.targets)] = True
        self.masks = masks

    @property
    def pieces(self) -> int:
        """Restart pieces one segment may need: every crossing of every root function (both
        ways) and every execution, `max_occurrences` times each."""
        return 1 + sum(ev.max_occurrences * (2 * s + (ev.delay is not None))
                       for ev, s in zip(self.events, self.sizes))

    # ---- root functions and triggers
    def atoms(self, t, y, p):
        """All root functions at (t, y): (n_atoms,)."""
        return jnp.concatenate([jnp.asarray(ev.condition(t, y, p), y.dtype).reshape(-1) for ev in self.events])

    def ahead(self, t, y, p):
        """(g, g + h dg/dt along the flow): the root functions and their look-ahead just after t."""
        g, dg = jax.jvp(lambda t_, y_: self.atoms(t_, y_, p), (t, y),
                        (jnp.ones_like(t), jnp.asarray(self.f(t, y, p), y.dtype).reshape(y.shape)))
        return g, g + _right_step(t) * dg, dg

    def triggers(self, g):
        """(n_events,) bool: each event's trigger on the root-function values g."""
        out = []
        for k, ev in enumerate(self.events):
            gk = g[self.offsets[k]:self.offsets[k + 1]]
            if ev.trigger is not None:
                out.append(jnp.asarray(ev.trigger(gk), bool).reshape(()))
            else:
                out.append(gk[0] > 0 if ev.direction in (1, "up", "rising", True) else gk[0] < 0)
        return jnp.stack(out)

    def condition(self, i: int) -> Callable:
        """diffrax's condition of root function i: its value, at the piece's start the sign
        the stop point decided (so the root it starts on is no crossing)."""
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        j = i - int(self.offsets[k])
        ev = self.events[k]

        def cond(t, y, args, **kw):
            p, (signs, active), start = args
            g = jnp.asarray(ev.condition(t, y, p), y.dtype).reshape(-1)[j]
            # at the start, and for a root function left out of this piece, the decided sign
            return jnp.where((t == start) | ~active[i], signs[i] * jnp.finfo(y.dtype).tiny, g)
        return cond

    def conditions(self, t, y, args):
        """Every `condition(i)` at once: (n_atoms,)."""
        p, (signs, active), start = args
        g = self.atoms(t, y, p)
        return jnp.where((t == start) | ~active, signs * jnp.finfo(y.dtype).tiny, g)

    # ---- the pending queue
    def empty(self, y):
        E, M = len(self.events), self.slots
        return {"trig": jnp.asarray(self.initial), "signs": jnp.zeros(self.n_atoms, y.dtype),
                "active": jnp.ones(self.n_atoms, bool),
                "qt": jnp.full((E, M), jnp.inf, y.dtype), "qv": jnp.zeros((E, M, self.n), y.dtype),
                "code": jnp.zeros((), jnp.int32)}

    def _update(self, es, trig_now, t, y, p):
        """Queue the events whose trigger turned true, cancel the non-persistent ones whose
        trigger turned false."""
        rise = trig_now & ~es["trig"]
        fall = ~trig_now & es["trig"]
        delays = jnp.stack([jnp.zeros((), y.dtype) if ev.delay is None
                            else jnp.asarray(ev.delay(t, y, p), y.dtype).reshape(()) for ev in self.events])
        vals = jnp.stack([y if (ev.reset is None or not ev.values_at_trigger)
                          else jnp.asarray(ev.reset(t, y, p), y.dtype).reshape(y.shape) for ev in self.events])
        qt, qv = es["qt"], es["qv"]
        free = jnp.isinf(qt)
        for k, ev in enumerate(self.events):  # slots beyond the event's own max_pending stay taken
            if ev.max_pending < self.slots:
                free = free.at[k, ev.max_pending:].set(False)
        slot = jnp.argmax(free, axis=1)
        write = (rise & free.any(axis=1))[:, None] & (jnp.arange(self.slots)[None, :] == slot[:, None])
        qt = jnp.where(write, t + delays[:, None], qt)
        qv = jnp.where(write[:, :, None], vals[:, None, :], qv)
        qt = jnp.where((fall & ~jnp.asarray(self.persistent))[:, None], jnp.inf, qt)
        code = es["code"] | jnp.where(jnp.any(rise & ~free.any(axis=1)), QUEUE_FULL, 0)
        return {**es, "trig": trig_now, "qt": qt, "qv": qv, "code": code}

    def _execute(self, k: int, t, y, stored, p):
        ev = self.events[k]
        if ev.reset is None:
            return y
        if ev.values_at_trigger:
            return jnp.where(jnp.asarray(self.masks[k]), stored, y)
        return jnp.asarray(ev.reset(t, y, p), y.dtype).reshape(y.shape)

    def _signs(self, ahead):
        return jnp.sign(ahead)

    def start(self, t, y, p):
        """The state of the queue at t0 (before `process(..., exact=True)`)."""
        return self.empty(y)

    def process(self, t, y, es, p, located=None, exact: bool = False):
        """One stop point: (y after the executions due at t, the new queue state).

        located: (n_atoms,) bool, the root function diffrax located at t (it takes the side
        opposite to its sign at the piece's start), or None. exact: evaluate the triggers at
        t itself (t0: against each event's initial_value), not just after it."""
        g, ahead, dg = self.ahead(t, y, p)
        if located is not None:
            flipped = -es["signs"] * jnp.maximum(jnp.abs(ahead), jnp.finfo(y.dtype).tiny)
            ahead = jnp.where(located & (es["signs"] != 0), flipped, ahead)  # from 0: the look-ahead
        es = {**es, "active": jnp.ones(self.n_atoms, bool)}
        if exact:  # (the solve's first segment then processes t0 just after it)
            es = self._update(es, self.triggers(g), t, y, p)
            return self._run(t, y, es, p, exact=True)
        es = self._update(es, self.triggers(ahead), t, y, p)
        es = {**es, "signs": self._signs(ahead)}
        return self._run(t, y, es, p)

    def _run(self, t, y, es, p, exact: bool = False):
        """Run the executions due at t, highest priority first, triggers evaluated after each."""
        tol = 1e-10 * (1.0 + jnp.abs(jax.lax.stop_gradient(t)))
        execs = [lambda t_, y_, s_, k=k: self._execute(k, t_, y_, s_, p) for k in range(len(self.events))]

        def one(c):
            y, es = c
            due = es["qt"] <= t + tol
            ev_due = due.any(axis=1)
            prio = jnp.stack([jnp.asarray(-jnp.inf, y.dtype) if ev.priority is None
                              else jnp.asarray(ev.priority(t, y, p), y.dtype).reshape(()) for ev in self.events])
            masked = jnp.where(ev_due, prio, -jnp.inf)
            tied = ev_due & (masked == masked.max())
            # equal priorities: a random order (SBML), drawn from the time and the state; without
            # priorities: the order of the events
            word = jnp.int64 if y.dtype == jnp.float64 else jnp.int32
            bits = jax.lax.bitcast_convert_type(jax.lax.stop_gradient(jnp.sum(y) + t * 1e3), word)
            key = jax.random.fold_in(jax.random.PRNGKey(len(self.events)), (bits % 2147483647).astype(jnp.int32))
            draw = jnp.where(jnp.isfinite(masked.max()), jax.random.uniform(key, (len(self.events),)), 0.0)
            k = jnp.argmax(jnp.where(tied, 1.0 + draw, 0.0))
            slot = jnp.argmin(jnp.where(due[k], es["qt"][k], jnp.inf))
            y = jax.lax.switch(k, execs, t, y, es["qv"][k, slot]) if len(execs) > 1 else execs[0](t, y, es["qv"][0, slot])
            es = {**es, "qt": es["qt"].at[k, slot].set(jnp.inf)}
            g, ahead, _ = self.ahead(t, y, p)
            es = self._update(es, self.triggers(g if exact else ahead), t, y, p)
            return y, {**es, "signs": self._signs(ahead)}

        def body(c, _):
            any_due = jnp.any(c[1]["qt"] <= t + tol)
            return jax.lax.cond(any_due, one, lambda c_: c_, c), None

        (y, es), _ = jax.lax.scan(body, (y, es), None, length=self.budget)
        left = jnp.any(es["qt"] <= t + tol)
        return y, {**es, "code": es["code"] | jnp.where(left, EXECUTIONS_EXHAUSTED, 0)}

    def missed(self, t, y, es, p, located):
        """(n_atoms,) bool: root functions that changed sign in the piece that ended at (t, y)
        but are not at a root there (diffrax located another one, later in the same step):
        the piece is solved again with only these (their first root comes first)."""
        g, ahead, dg = self.ahead(t, y, p)
        changed = (jnp.sign(ahead) != es["signs"]) & es["active"] & ~located
        return changed & ~at_root(g, dg, t)

    def next_time(self, es):
        """The earliest pending execution (inf when none)."""
        return jnp.min(es["qt"])


def message(code: int, events) -> str:
    """The `SolverError` text of a code of the scheduled solve."""
    budget = {i: ev.max_occurrences for i, ev in enumerate(events)}
    pending = {i: ev.max_pending for i, ev in enumerate(events)}
    parts = [text.format(budget=budget, pending=pending) for bit, text in MESSAGES.items() if code & bit]
    return "; ".join(parts)
