"""A step-size controller that keeps every event root function to one crossing per step.

diffrax finds an event where a root function has opposite signs at the two ends of a step.
A root function that changes sign twice inside one step (true and false again: a trigger
on a fast state, or one that depends on time directly, as `sin(10 t) < 0` beside a state
that does not move) shows no change at the ends and is missed; three changes give a root
find on an interval with several roots. The error control does not see this: it only
looks at the states.

`CrossingGuard` wraps the adaptive controller: after the inner controller accepts a step
[t0, t1] it samples the root functions at `samples` equally spaced interior times (the
state linearly interpolated between the step's ends, which the error control keeps close
to the solution) and rejects the step when any root function's sign changes more than
once along them; the next attempt ends at the first sample where a sign changed, so the
step ends on one side of the first crossing. A pair of crossings closer together than the
sample spacing of a step that the error control accepted can still go unseen.

`BracketedNewton` locates the crossing inside the step: Newton's method on the root
function, kept inside the bracket [t0, t1] whose ends have opposite signs (a step that
leaves it, or does not shrink it fast enough, is a bisection step). Plain Newton from the
step's end diverges or cycles where the root function bends inside the step (near an
extremum of `sin`), and then the whole solve fails.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx

stop = jax.lax.stop_gradient


class CrossingGuard(diffrax.AbstractAdaptiveStepSizeController):
    """controller: the adaptive controller to wrap; roots(t, y, args) -> (n_roots,) the
    root functions as diffrax's event sees them; samples: interior sample times per step."""

    controller: diffrax.AbstractAdaptiveStepSizeController
    roots: Callable = eqx.field(static=True)
    samples: int = eqx.field(static=True, default=8)

    @property
    def rtol(self):
        return self.controller.rtol

    @property
    def atol(self):
        return self.controller.atol

    @property
    def norm(self):
        return self.controller.norm

    def wrap(self, direction):
        return eqx.tree_at(lambda s: s.controller, self, self.controller.wrap(direction))

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        return self.controller.init(terms, t0, t1, y0, dt0, args, func, error_order)

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        keep, next_t0, next_t1, made_jump, state, result = self.controller.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state)
        split, first = self.split(t0, t1, y0, y1_candidate, args)
        reject = keep & split
        state = jax.tree_util.tree_map(lambda old, new: jnp.where(reject, old, new), controller_state, state)
        return (keep & ~split, jnp.where(reject, t0, next_t0), jnp.where(reject, first, next_t1),
                made_jump & ~reject, state, result)

    def split(self, t0, t1, y0, y1, args):
        """(whether some root function changes sign more than once over the samples of
        [t0, t1], the first sample time after t0 where one changed sign)."""
        t0, t1, y0, y1, args = stop((t0, t1, y0, y1, args))
        frac = jnp.linspace(0.0, 1.0, self.samples + 2, dtype=jnp.result_type(t0))
        ts = t0 + frac * (t1 - t0)
        ts = ts.at[-1].set(t1)
        ys = y0[None, :] + frac[:, None] * (y1 - y0)[None, :]
        g = jax.vmap(lambda t, y: jnp.asarray(self.roots(t, y, args)).reshape(-1))(ts, ys)
        # a sign within a rounding band around zero counts for neither side (a root function
        # that stays at zero is no crossing); the start keeps its sign (the side a restart
        # on a root starts from)
        band = 1e-13 + 1e-12 * jnp.max(jnp.abs(g), axis=0)
        sign = jnp.where(g > band, 1, jnp.where(g < -band, -1, 0))
        sign = sign.at[0].set(jnp.sign(g[0]).astype(sign.dtype))
        last = sign[0]
        changes = jnp.zeros_like(last)
        moved = [jnp.asarray(False)]
        for j in range(1, self.samples + 2):
            flip = (sign[j] != 0) & (last != 0) & (sign[j] != last)
            changes = changes + flip
            moved.append(jnp.any(flip))
            last = jnp.where(sign[j] != 0, sign[j], last)
        moved = jnp.stack(moved)
        first = jnp.where(jnp.any(moved), ts[jnp.argmax(moved)], t1)
        return jnp.any(changes > 1), first


class _BracketState(eqx.Module):
    lower: jax.Array
    upper: jax.Array
    negative_lower: jax.Array  # the sign of the root function at `lower`
    zero_lower: jax.Array  # the root function is zero at `lower`: the root is there
    step_prev: jax.Array  # the size of the step before the last one
    diff: jax.Array  # the size of the last step
    f: jax.Array


def _scalar(out) -> jax.Array:
    """diffrax's root function of the event solve: a pytree whose leaves are zero but the
    located event's; their sum is that one."""
    return sum(jnp.asarray(leaf).reshape(()) for leaf in jax.tree_util.tree_leaves(out))


class BracketedNewton(optx.AbstractRootFinder):
    """Newton's method safeguarded by bisection on the bracket options["lower"],
    options["upper"] (the step diffrax found the sign change in): a Newton step outside
    the bracket, or one that would not halve the step before the last, bisects instead.
    Stops when the last step or the bracket is below atol + rtol |t|, or at an exact zero."""

    rtol: float
    atol: float
    norm: ClassVar[Callable] = jnp.abs

    def init(self, fn, y, args, options: dict[str, Any], f_struct, aux_struct, tags):
        lower = jnp.asarray(options["lower"], jnp.result_type(y))
        upper = jnp.asarray(options["upper"], jnp.result_type(y))
        f_lower = _scalar(fn(lower, args)[0])
        inf = jnp.asarray(jnp.inf, jnp.result_type(y))
        return _BracketState(lower=lower, upper=upper, negative_lower=f_lower < 0, zero_lower=f_lower == 0,
                             step_prev=jnp.abs(upper - lower), diff=inf, f=inf)

    def step(self, fn, y, args, options, state: _BracketState, tags):
        f, slope, aux = jax.linearize(lambda t: (lambda o: (_scalar(o[0]), o[1]))(fn(t, args)), y, has_aux=True)
        df = slope(jnp.ones_like(y))
        same = (f < 0) == state.negative_lower
        lower = jnp.where(same, y, state.lower)
        upper = jnp.where(same, state.upper, y)
        newton = y - f / jnp.where(df == 0, jnp.inf, df)
        usable = (jnp.isfinite(newton) & (newton > jnp.minimum(lower, upper)) & (newton < jnp.maximum(lower, upper))
                  & (2 * jnp.abs(newton - y) <= state.step_prev))
        new_y = jnp.where(usable, newton, lower + 0.5 * (upper - lower))
        new_y = jnp.where(f == 0, y, new_y)
        diff = jnp.abs(new_y - y)
        # a root function that is zero at the step's start (a crossing diffrax counts from
        # there): that is the root
        new_y = jnp.where(state.zero_lower, state.lower, new_y)
        diff = jnp.where(state.zero_lower, 0.0, diff)
        new_state = _BracketState(lower=lower, upper=upper, negative_lower=state.negative_lower,
                                  zero_lower=state.zero_lower, step_prev=state.diff, diff=diff, f=f)
        return new_y, new_state, aux

    def terminate(self, fn, y, args, options, state: _BracketState, tags):
        scale = self.atol + self.rtol * jnp.abs(y)
        done = (state.diff < scale) | ((jnp.abs(state.upper - state.lower) < scale) & ~state.zero_lower) | (state.f == 0)
        return done, optx.RESULTS.successful

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return y, aux, {}
