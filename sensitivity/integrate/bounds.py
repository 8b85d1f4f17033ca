"""Segment bounds that move with the parameters, differentiated through the flow, not the mesh.

A solve cut at a switching time, a dose time or an event time tau has segment bounds that
depend on the parameters. Handing traced bounds to the solver differentiates its step
sequence: every step time carries d tau, and wherever a step is clipped onto a save time or
a fixed breakpoint the step size picks up a derivative that the step-size controller carries
into every later step. On a stiff segment that derivative of the discretisation grows without
bound (1e40-1e140 where the true value is 1e-3, with explicit and implicit solvers alike).

Here the solver runs between bounds whose derivatives are stopped, so its steps are a fixed
sequence, and the bounds' derivatives enter through the flow itself: the state is carried
from the moving bound to the fixed one by the Taylor expansion of the flow,

    y(t_to) = y + f d + 1/2 f' d^2,   d = t_to - t_from,   f' = df/dt + (df/dy) f,

with d = 0 in value. This is the identity on values and gives the exact first and second
derivatives of the flow: dy/d tau = f(tau-) - f(tau+) across a boundary, as the sensitivity
jump conditions say, in forward, reverse and forward-over-reverse mode alike.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def flow_shift(f: Callable, y, t_from, t_to, side: int = 0):
    """y (n,) carried from t_from to t_to by the flow of y' = f(t, y), to second order.

    Meant for t_from == t_to in value with the derivatives of one of them stopped: the
    value is y, the first and second derivatives with respect to the other are the flow's.
    side = +1 (-1) evaluates f an ulp or two after (before) t_from: the right (left) limit
    at a segment's start (end), where an rhs that compares t with a switching time jumps."""
    t_from = jnp.asarray(t_from, y.dtype)
    d = jnp.asarray(t_to, y.dtype) - t_from
    if side:
        t_from = beside(t_from, side)
    fy = f(t_from, y)
    _, dfy = jax.jvp(f, (t_from, y), (jnp.ones_like(t_from), fy))
    return y + d * fy + 0.5 * d * d * dfy


def beside(t, side: int):
    """t moved an ulp or two after (side = +1) or before (-1), its derivative kept: where an
    rhs that compares t with a switching time takes its right or left limit."""
    tiny = jnp.asarray(np.finfo(np.dtype(t.dtype)).tiny, t.dtype)
    return t + side * jax.lax.stop_gradient(jnp.maximum(jnp.abs(t) * 4e-16, tiny))


def fixed_bounds_segment(segment: Callable, rhs: Callable) -> Callable:
    """A segment solve whose bounds may move with the parameters, run on fixed bounds.

    segment(pv, y0, a, b, tc, ts, tol) -> (ys (n_t, n) at ts clipped into [a, b], y(b) (n,),
    result, steps) is the solver's; rhs(t, y, pv, tc) -> (n,) its vector field. The wrapped
    solve has the same signature and values; its derivatives with respect to a, b and tc
    are those of the flow (`flow_shift`), not of the solver's step sequence. A save time at
    b gets the moving end's state."""
    stop = jax.lax.stop_gradient

    def run(pv, y0, a, b, tc, ts, tol):
        a0, b0, tc = stop(a), stop(b), stop(tc)

        def f(t, y):
            return rhs(t, y, pv, tc)

        ys, y_end, result, steps = segment(pv, flow_shift(f, y0, a, a0, side=1), a0, b0, tc, ts, tol)
        y_end = flow_shift(f, y_end, b0, b, side=-1)
        ys = jnp.where((ts >= b0)[:, None], y_end[None], ys)
        return ys, y_end, result, steps

    return run
