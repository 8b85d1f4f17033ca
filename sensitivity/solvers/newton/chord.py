"""The Newton (chord) iteration of diffrax's implicit Runge-Kutta stages, with a
termination test that lets it iterate.

diffrax 0.7.2's `VeryChord` reports divergence as soon as two iterations have not met
its convergence test: its `terminate` returns "nonlinear_divergence" whenever
`at_least_two and not converged`, even when it does not ask to terminate, and
optimistix's loop stops on any unsuccessful result. So every stage had to converge in
exactly two chord iterations, or the step failed (infinite error estimate) and was
rejected; `root_find_max_steps` (10 for Kvaerno) was never reached. On a stiff problem
such as `brusselator_1d` that rejects about half the steps and takes many times the steps
needed (`benchmarks/stiff_newton.py` counts them). The same bug was reported and fixed
upstream after 0.7.2 (optimistix issue #221, optimistix PR #230 and diffrax PR #754, "fix
reporting nonconvergence as divergence").

`Chord` is `VeryChord` with the fixed test. With rate = |d_k| / |d_{k-1}| (d_k the
correction scaled by atol + rtol |y|, max norm): converged when
|d_k| rate / (1 - rate) < kappa, or |d_k| is at rounding level; diverged when rate >= 1
(or not finite); otherwise iterate, up to the solver's `root_find_max_steps` (then
"max steps reached": a failed stage, the step is rejected). An iterate that is not finite
is not taken (the previous one is kept and the iteration reports divergence), so a failed
stage leaves finite values: diffrax differentiates rejected steps too (with zero
cotangents), and a NaN there turns the whole reverse pass into NaN (0 * NaN). Everything
else (one Newton matrix per step, built in `init`, reused by every stage) is VeryChord's.
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx

from ..compat import chord_small


class Chord(diffrax.VeryChord):
    """diffrax's `VeryChord` whose iteration runs until it converges, diverges or
    reaches `root_find_max_steps` (see the module docstring). Same fields: rtol, atol,
    norm, kappa (1e-2), linear_solver."""

    def step(self, fn, y, args, options, state, tags):
        new_y, new_state, aux = super().step(fn, y, args, options, state, tags)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(new_y)]))
        new_y = jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new_y, y)
        diffsize = jnp.where(finite, new_state.diffsize, jnp.inf)
        new_state = eqx.tree_at(lambda s: s.diffsize, new_state, diffsize)
        return new_y, new_state, aux

    def terminate(self, fn, y, args, options, state, tags):
        del fn, y, args, options, tags
        at_least_two = state.step >= 2
        rate = state.diffsize / state.diffsize_prev
        factor = state.diffsize * rate / (1 - rate)
        small = chord_small(state.diffsize)
        diverged = ~jnp.isfinite(rate) | (rate >= 1)
        converged = (factor >= 0) & (factor < self.kappa)
        terminate = at_least_two & (small | diverged | converged)
        result = optx.RESULTS.where(at_least_two & ~small & diverged & ~converged,
                                    optx.RESULTS.nonlinear_divergence, optx.RESULTS.successful)
        linsolve_fail = state.result != optx.RESULTS.successful
        result = optx.RESULTS.where(linsolve_fail, state.result, result)
        return terminate | linsolve_fail, result
