"""The one cut-up solve: a solve over [t0, T] cut into segments at traced times, and each
segment into pieces at state events. Both drivers run it: `pieces.solve_function` (a
`Problem`: doses, parameter breakpoints, switching times, plain or scheduled events) and
`sbml_events.solve_function` (an `SBMLModel`: piecewise breakpoints, SBML time and state
events); `segments.through_breakpoints` and `segments.with_preequilibration` cut at the
breakpoints the same way.

- `cut(raw, t0, T, clip)`: the segment bounds. The K boundary times `raw` (traced; they move
  with the parameters) are sorted by value (the sort's permutation carries no derivative)
  and clipped into [t0, T]; segment k runs from starts[k] to ends[k] (K + 1 of them).
- `scan_segments(segment, carry, t0, T, raw, marks, ...)`: one `lax.scan` over those
  segments (a plain call when there is one). `marks` (K, ...) is what happens at each
  boundary (a dose's jump, the events that fire there), sorted with the boundaries and
  handed to the segment whose start (jump_at = "start") or end (jump_at = "end") the
  boundary is; the segment function applies it (the drivers' jumps differ: an additive
  jump before a segment, SBML event assignments after one).
- `repeat(piece, carry, n, skip)`: the pieces of one segment, one `lax.scan` of n pieces.
- `run_piece(...)`: one piece, a diffrax solve from a moving start to a moving end that
  stops at the first state event. The solver runs between the bounds with their derivatives
  stopped; the bounds' derivatives enter through the flow there (`bounds.flow_shift`).

The options keep what differs between the drivers, each with its own effect on values or
derivatives:

- clip: how the boundaries (and the save times of a piece) are clipped into the interval:
  "select" (by selection: a time equal to a bound keeps no derivative with respect to the
  bound), "clip" (`jnp.clip`: at a tie the derivative is split between the time and the
  bound), "clip_first" (`cut` only: `jnp.clip` before the sort, so times clipped onto the
  same bound are ordered by their index, as `jnp.sort` of the clipped times);
- limits: the flow at a piece's start (end) is evaluated an ulp after (before) the bound,
  the one-sided limits where an rhs that compares t with a switching time jumps (the
  `Problem` rhs), or at the bound itself (the SBML rhs, whose conditions are evaluated at a
  fixed condition time);
- save_end: which piece keeps a save time equal to the time the piece reached: "last" only
  the last segment's, at the last save time (a save time at a boundary sees the state after
  the jump: the next segment writes it), "reached" the piece that reached its end (the SBML
  driver then overwrites it with the state after an event at that time);
- step_ts: the steps land on the save times (`diffrax.ClipStepSizeController`);
- skip (`repeat`): pieces after the segment's end are skipped by `lax.cond` (the SBML
  driver); without it they run on a zero-length interval and `keep` masks their saves
  (the `Problem` driver, after a terminal event).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from . import scheduled as sched
from .bounds import flow_shift
from .crossings import BracketedNewton

stop = jax.lax.stop_gradient


def root_finder():
    """The root finder of every state event (`crossings.BracketedNewton`)."""
    return BracketedNewton(rtol=1e-12, atol=1e-12)


def restart_condition(g_fn, k: int, vf: Callable, unpack: Callable) -> Callable:
    """Event k's root function for `diffrax.Event`: g_fn(t, y, p) (a scalar), where
    unpack(args) -> (p, fired_before (n_events,) bool, the piece's start).

    On a piece that restarts on the root of event k itself (fired_before[k], t == start,
    g at its root) it reports the side the flow moves to (+-tiny by the sign of dg/dt along
    vf(t, y, args)), so the root it starts on is no crossing. A reset that moved the state
    off the root keeps g: its sign is the side the next crossing starts from (the flow's
    side would hide that crossing when the solver's first step already passes it)."""
    def cond(t, y, args, **kw):
        p, fired_before, start = unpack(args)
        g = jnp.asarray(g_fn(t, y, p), dtype=y.dtype).reshape(())
        _, dg = jax.jvp(lambda t_, y_: jnp.asarray(g_fn(t_, y_, p), y.dtype).reshape(()),
                        (t, y), (jnp.ones_like(t), vf(t, y, args)))
        tiny = jnp.asarray(np.finfo(np.float64).tiny, y.dtype)
        restart = fired_before[k] & (t == start) & sched.at_root(g, dg, t)
        return jnp.where(restart, jnp.where(dg >= 0, tiny, -tiny), g)
    return cond


def clip_times(times, start, end, clip: str = "select"):
    """times clipped into [start, end]: clip = "select" by selection (a time equal to a
    bound keeps no derivative with respect to the bound), "clip" by `jnp.clip` (the
    derivative split at a tie)."""
    if clip == "clip":
        return jnp.clip(times, start, end)
    return jnp.where(times < start, start, jnp.where(times > end, end, times))


class Cut(NamedTuple):
    """Segment bounds: order (K,) the permutation that sorts the boundaries, starts and ends
    (K + 1,) the segments' bounds."""
    order: jax.Array
    starts: jax.Array
    ends: jax.Array


def cut(raw, t0, T, clip: str = "select") -> Cut:
    """[t0, T] cut at the boundary times raw (K,), traced: sorted by value (the permutation
    without derivative) and clipped into [t0, T] (clip: "select", "clip" or "clip_first",
    see the module docstring)."""
    if clip == "clip_first":
        raw = jnp.clip(raw, t0, T)
    order = jnp.argsort(stop(raw))
    b = raw[order]
    if clip != "clip_first":
        b = clip_times(b, t0, T, clip)
    return Cut(order, jnp.concatenate([jnp.reshape(t0, (1,)), b]), jnp.concatenate([b, jnp.reshape(T, (1,))]))


def scan_segments(segment: Callable, carry, t0, T, raw, marks=None, *, clip: str = "select",
                  jump_at: str = "start"):
    """segment(carry, (start, end, mark, last)) -> (carry, out) over the K + 1 segments of
    [t0, T] cut at raw (K,) (`cut`): one `lax.scan`, a plain call when K = 0. marks: a
    pytree of (K, ...) arrays, what happens at each boundary, sorted with the boundaries;
    a segment gets the mark of the boundary at its start (jump_at = "start"; zeros for the
    first segment) or at its end ("end"; zeros for the last). last: whether the segment is
    the last one. Returns (carry, out) (out stacked (K + 1, ...) when K > 0)."""
    c = cut(raw, t0, T, clip)
    n = c.starts.shape[0]

    def align(m):
        zero = jnp.zeros((1,) + m.shape[1:], m.dtype)
        m = m[c.order]
        return jnp.concatenate([zero, m] if jump_at == "start" else [m, zero])

    xs = (c.starts, c.ends, jax.tree_util.tree_map(align, marks), jnp.arange(n) == n - 1)
    if n == 1:  # no boundary: no loop to compile
        return segment(carry, jax.tree_util.tree_map(lambda a: a[0], xs))
    return jax.lax.scan(segment, carry, xs)


def repeat(piece: Callable, carry, n: int, skip: Callable | None = None):
    """piece(carry) -> carry, n times (one `lax.scan`; a plain call when n = 1). skip(carry)
    -> bool: a piece is skipped (`lax.cond`) where it holds (the segment is done)."""
    run = piece
    if skip is not None:
        def run(c):
            return jax.lax.cond(skip(c), lambda c_: c_, piece, c)
    if n == 1:
        return run(carry)
    carry, _ = jax.lax.scan(lambda c, _: (run(c), None), carry, None, length=n)
    return carry


class Piece(NamedTuple):
    """What `run_piece` returns: t, y where the piece ended (the located event or the
    moving end), ys (n_t, n) with the piece's saves written, located (n_roots,) bool the
    root functions located at t (None without events), sol the diffrax solution (result,
    stats, solver_state)."""
    t: jax.Array
    y: jax.Array
    ys: jax.Array
    located: jax.Array | None
    sol: diffrax.Solution


def run_piece(term: diffrax.ODETerm, solver, t, end, y, ys, times, args_of: Callable, *, controller, adjoint,
              event: diffrax.Event | None, max_steps: int, limits: bool = True, clip: str = "select",
              save_end: str = "last", last=True, keep=True, step_ts: bool = False,
              solver_state: bool = False) -> Piece:
    """One piece: y (n,) solved from the moving start t to the moving end `end` (scalars,
    traced) by `solver`, stopping at the first root `event` locates. args_of(start) -> the
    solver's args, start the fixed (derivative-stopped) start.

    The solver runs from stop(t) to stop(end); y is carried from t to stop(t) and the end
    state from stop(end) to end by the flow (`bounds.flow_shift`; limits: one-sided).
    ys (n_t, n): the save times `times` (n_t,) (sorted; the last is the solve's end) inside
    the piece (at or after its start, before where it ended, `save_end` for one equal to
    that; only where `keep`) are written, a save time at or after the end with the moving
    end's state. last: whether the segment is the last one. Options as in the module
    docstring."""
    start, fixed_end = stop(t), stop(end)
    args = args_of(start)

    def flow(t_, y_):
        return term.vector_field(t_, y_, args)

    y = flow_shift(flow, y, t, start, side=1 if limits else 0)
    ts = clip_times(times, start, fixed_end, clip)
    if step_ts:
        controller = diffrax.ClipStepSizeController(controller, step_ts=ts)
    sol = diffrax.diffeqsolve(
        term, solver, start, fixed_end, None, y, args,
        # two sub-saves: with one (ts + t1) an event leaves the t1 slot unfilled
        saveat=diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts), diffrax.SubSaveAt(t1=True)], solver_state=solver_state),
        stepsize_controller=controller, max_steps=max_steps, adjoint=adjoint, event=event, throw=False)
    (_, (t_new,)), (saved, (y_new,)) = sol.ts, sol.ys  # the saves, and the end (event) point
    reached = t_new >= fixed_end  # no event before the end: the end is the moving one
    y_new = jnp.where(reached, flow_shift(flow, y_new, fixed_end, end, side=-1 if limits else 0), y_new)
    t_new = jnp.where(reached, end, t_new)
    saved = jnp.where(((times >= fixed_end) & reached)[:, None], y_new[None], saved)
    at_end = reached if save_end == "reached" else last & (t_new == times[-1])
    inside = (times >= start) & ((times < t_new) | ((times == t_new) & at_end)) & keep
    ys = jnp.where(inside[:, None], saved, ys)
    located = None
    if event is not None:
        located = jnp.stack([jnp.asarray(m) for m in jax.tree_util.tree_leaves(sol.event_mask)])
        located = located & (sol.result == diffrax.RESULTS.event_occurred)
    return Piece(t_new, y_new, ys, located, sol)
