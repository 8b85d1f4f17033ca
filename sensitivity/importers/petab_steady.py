"""Runs to a steady state with SBML events: preequilibration and steady-state measurements
(time = inf) of PEtab problems whose model has events.

`steady_function(m, solver, controller, max_steps, method)` returns
`steady(pv, y0, tol, t0=0.0, before=None) -> (y, ok, steps, true_end)`:

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
  again at its start (PEtab test suite case v2 0023).

`ok` is False when the run needs more than `PIECES` events or a solve fails.
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ..integrate.pieces import root_finder
from ..solvers.newton.steady_state import newton_polish
from .petab_events import restart_condition

PIECES = 8  # events in one run to steady state (more: the run reports failure)


def _truth(g, direction: int, strict: bool):
    if direction > 0:
        return g > 0 if strict else g >= 0
    return g < 0 if strict else g <= 0


def truth_function(m):
    """(t, y, pv) -> (n_events,) bool: each trigger's truth."""
    meta = m.event_meta
    conds = [fn for _, fn, _, _ in m.events]

    def truth(t, y, pv):
        return jnp.stack([_truth(jnp.asarray(conds[k](t, y, pv), y.dtype).reshape(()), int(meta[k]["direction"]),
                                 bool(meta[k].get("strict", True))) for k in range(len(conds))])
    return truth


def steady_function(m, solver, controller, max_steps: int, method: str):
    """The run to steady state with events (see the module docstring)."""
    meta = m.event_meta
    n_ev = len(meta)
    conds = [fn for _, fn, _, _ in m.events]
    resets = [fn for _, _, fn, _ in m.events]
    directions = [int(d["direction"]) for d in meta]
    initial_value = jnp.asarray(np.array([bool(d["initial_value"]) for d in meta]))
    truth = truth_function(m)

    def vf(t, y, args):
        return m.rhs(t, y, args[0], t)

    term = diffrax.ODETerm(vf)

    def at_steady(t, y, args, **kw):
        pv, tol = args[0], args[1]
        return jnp.max(jnp.abs(m.rhs(t, y, pv, t)) / (tol[1] + tol[0] * jnp.abs(y))) < 1.0

    # diffrax reports only the first condition (in this order) that holds in a step: the
    # events before the steady state, so an event in the last step fires
    event = diffrax.Event([restart_condition(conds[k], k, vf) for k in range(n_ev)] + [at_steady], root_finder=root_finder(),
                          direction=[d > 0 for d in directions] + [None])

    def apply(mask, t, y, pv):
        out = y
        for k in range(n_ev):
            r = jnp.asarray(resets[k](t, y, pv), y.dtype).reshape(y.shape)
            out = out + jnp.where(mask[k], r - y, 0.0)
        return out

    def fire(mask, t, y, pv):
        """The events in `mask`, then those whose triggers they turned true (one round)."""
        after = apply(mask, t, y, pv)
        newly = ~truth(t, y, pv) & truth(t, after, pv)
        return apply(newly, t, after, pv)

    def adjoint():
        return diffrax.ForwardMode() if method == "forward" else diffrax.RecursiveCheckpointAdjoint()

    def piece(carry, tol, pv):
        t, y, ok, steps, fired_before, done = carry

        def run(c):
            t, y, ok, steps, fired_before, done = c
            start = jax.lax.stop_gradient(t)
            sol = diffrax.diffeqsolve(
                term, solver, start, jnp.inf, None, y, (pv, tol, fired_before, start),
                saveat=diffrax.SaveAt(t1=True), stepsize_controller=controller(tol), event=event,
                max_steps=max_steps, adjoint=adjoint(), throw=False)
            t_new, y_new = sol.ts[0], sol.ys[0]
            mask = [jnp.asarray(x) for x in jax.tree_util.tree_leaves(sol.event_mask)]
            hit = sol.result == diffrax.RESULTS.event_occurred
            fired = jnp.stack(mask[:n_ev]) & hit
            steady_now = hit & mask[n_ev]
            y_new = jnp.where(steady_now, y_new, fire(fired, t_new, y_new, pv))
            return (t_new, y_new, ok & hit, steps + sol.stats["num_steps"], fired, steady_now)

        return jax.lax.cond(done, lambda c: c, run, carry)

    def steady(pv, y0, tol, t0=0.0, before=None):
        t0 = jnp.asarray(t0, y0.dtype)
        true0 = truth(t0, y0, pv)
        y0 = fire(true0 & (~initial_value if before is None else ~before), t0, y0, pv)
        carry = (t0, y0, jnp.asarray(True), jnp.asarray(0), jnp.zeros(n_ev, bool), jnp.asarray(False))
        carry, _ = jax.lax.scan(lambda c, _: (piece(c, tol, pv), None), carry, None, length=PIECES + 1)
        t, y, ok, steps, _, done = carry
        y = newton_polish(lambda u: m.rhs(t, u, pv, t), y)
        return y, ok & done, steps, truth(t, y, pv)

    return steady
