"""A lean Tsit5 solve for vmapped ensembles: diffrax's algorithm in one plain while loop.

Why: `jax.vmap` of `diffrax.diffeqsolve` with Tsit5 costs about 0.7 us per sample and step
on CPU (11 states), 6-10x what the method's arithmetic needs: diffrax runs the stages in an
inner loop over a (batch, 7, n) buffer and carries its general machinery (events, dense
output, progress meter, adjoint bookkeeping) through every step, and under vmap every
branch of it is computed. A Sobol ensemble only simulates, so it needs none of that.

What: the same method as `diffrax.Tsit5` with `diffrax.PIDController(rtol, atol)` and
`SaveAt(ts=times)`, step for step:

- the first step h = 0.01 (what diffrax's PIDController starts with inside diffeqsolve);
- k_i = h f(t + c_i h, y + sum_j a_ij k_j) with diffrax's Tsit5 tableau, FSAL;
- error = sum_i e_i k_i, scaled by atol + rtol max(|y0|, |y1|), RMS norm; the step is kept
  when the norm is < 1; the next step is h clip(0.9 err^(-1/5), [1, 10]) after an accepted
  step, clip(.., [0.2, 0.9]) after a rejected one; steps are clipped to t1 as diffrax does
  (within 100 ULP of t1 they end at t1);
- the save times inside an accepted step by Tsit5's 5th-order interpolant (diffrax's
  `_Tsit5Interpolation`).

So the outputs equal the diffrax solve's to rounding (tests/test_lean_rk.py compares them).
Forward only: the simulate task of `sens.ensemble`, for a problem whose solver resolves
to Tsit5 and that has no doses, breakpoints or events (`applies`). Failures are reported
with diffrax's result codes (max_steps_reached).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from .problem import Problem

SAFETY, FACTOR_MIN, FACTOR_MAX = 0.9, 0.2, 10.0  # diffrax.PIDController's defaults
ORDER = 5  # Tsit5; diffrax's error_order for an ODE is the solver's order


def applies(problem: Problem) -> bool:
    """Whether the lean solve reproduces `solve.solve_function(problem)`: the solver
    resolves to Tsit5, and no doses, parameter breakpoints or state events cut the solve."""
    from . import events
    from .solve import solver_name

    if solver_name(problem) != "tsit5":
        return False
    if events.has_pieces(problem) or getattr(problem, "fixed_breakpoints", ()):
        return False
    return True


def _tableau():
    from diffrax._solver.tsit5 import _tsit5_tableau as tab

    a = [np.asarray(row, dtype=np.float64) for row in tab.a_lower]
    return a, np.asarray(tab.c, np.float64), np.asarray(tab.b_sol, np.float64), np.asarray(tab.b_error, np.float64)


def _interpolation_weights(s):
    """Tsit5's dense-output weights b_1..b_7 at s in [0, 1] (diffrax's `_Tsit5Interpolation`)."""
    import jax.numpy as jnp

    b1 = -1.0530884977290216 * s * (s - 1.3299890189751412) * (s**2 - 1.4364028541716351 * s + 0.7139816917074209)
    b2 = 0.1017 * s**2 * (s**2 - 2.1966568338249754 * s + 1.2949852507374631)
    b3 = 2.490627285651252793 * s**2 * (s**2 - 2.38535645472061657 * s + 1.57803468208092486)
    b4 = -16.54810288924490272 * (s - 1.21712927295533244) * (s - 0.61620406037800089) * s**2
    b5 = 47.37952196281928122 * (s - 1.203071208372362603) * (s - 0.658047292653547382) * s**2
    b6 = -34.87065786149660974 * (s - 1.2) * (s - 0.666666666666666667) * s**2
    b7 = 2.5 * (s - 1) * (s - 0.6) * s**2
    return jnp.stack([b1, b2, b3, b4, b5, b6, b7])


def solve_function(problem: Problem, max_steps: int | None = None) -> Callable:
    """(params, y0, values) -> (ys (n_times, n_states), aux): the Tsit5 solve of
    `solve.solve_function` (same steps, same saved values to rounding), as one while loop.
    aux: result (a diffrax RESULTS item), num_steps, num_accepted_steps, num_rejected_steps."""
    import diffrax
    import jax
    import jax.numpy as jnp

    A, C, B, E = _tableau()
    rhs = problem.model.rhs
    steps = int(problem.max_steps if max_steps is None else max_steps)
    n_times = int(problem.times.size)

    def solve(params, y0, values):
        times, t0 = values["times"], values["t0"]
        rtol, atol = values["rtol"], values["atol"]
        t1 = times[-1]
        dtype = y0.dtype
        n = y0.size
        t0 = jnp.asarray(t0, dtype)

        def f(t, y):
            return jnp.asarray(rhs(t, y, params), dtype=dtype).reshape(y.shape)

        def rms(x):
            return jnp.sqrt(jnp.sum(x * x)) / math.sqrt(n)

        # the first step: diffrax's PIDController.init calls _select_initial_step, but
        # diffeqsolve hands it the wrapped term (WrapTerm, not an ODETerm), for which that
        # function returns 0.01: every diffrax solve starts with h = 0.01, clipped to t1
        f0 = f(t0, y0)
        tnext = jnp.minimum(t0 + 0.01, t1)
        floor = t1
        for _ in range(100):  # t1 - 100 ULP: a step ending past it ends at t1 (diffrax's _clip_to_end)
            floor = jnp.nextafter(floor, jnp.asarray(-jnp.inf, dtype))

        ys0 = jnp.full((n_times, n), jnp.inf, dtype)

        def cond(c):
            tprev, _, _, _, _, _, n_steps, _ = c
            return (tprev < t1) & (n_steps < steps)

        def body(c):
            tprev, tnext, y, fy, ys, i_save, n_steps, n_acc = c
            h = tnext - tprev
            ks = [h * fy]
            for i in range(len(A) - 1):  # stages 2..6; the 7th (FSAL) is f at (tnext, y_new)
                yi = y + sum(a * k for a, k in zip(A[i], ks) if a != 0.0)
                ks.append(h * f(tprev + C[i] * h, yi))
            y_new = y + sum(b * k for b, k in zip(B[:6], ks) if b != 0.0)
            f_new = f(tnext, y_new)
            ks.append(h * f_new)
            err = sum(e * k for e, k in zip(E, ks) if e != 0.0)
            err = jnp.where(jnp.isnan(err), jnp.inf, err)
            y_cand = jnp.where(jnp.any(jnp.isnan(y_new)), y, y_new)
            scaled = rms(err / (atol + jnp.maximum(jnp.abs(y), jnp.abs(y_cand)) * rtol))
            keep = scaled < 1
            inv = 1 / scaled
            factor = jnp.clip(SAFETY * inv ** (1.0 / ORDER), jnp.where(keep, 1.0, FACTOR_MIN),
                              jnp.where(keep, FACTOR_MAX, SAFETY))
            new_prev = jnp.minimum(jnp.where(keep, tnext, tprev), t1)
            new_next = new_prev + h * factor
            new_next = jnp.where(new_next > floor, jnp.where(keep, t1, new_prev + 0.5 * (t1 - new_prev)), new_next)
            # the save times of an accepted step, from the first unsaved one up to tnext, by
            # the dense output (diffrax saves ts[j] while ts[j] <= tnext)
            K = jnp.stack(ks)  # (7, n)
            span = tnext - tprev
            s = jnp.where(span == 0, 0.0, (times - tprev) / jnp.where(span == 0, 1.0, span))
            Y = y[None, :] + _interpolation_weights(s).T @ K  # (n_times, n)
            mask = keep & (jnp.arange(n_times) >= i_save) & (times <= tnext)
            ys = jnp.where(mask[:, None], Y, ys)
            i_save = i_save + jnp.sum(mask).astype(i_save.dtype)
            y = jnp.where(keep, y_new, y)
            fy = jnp.where(keep, f_new, fy)
            return new_prev, new_next, y, fy, ys, i_save, n_steps + 1, n_acc + keep.astype(n_acc.dtype)

        zero = jnp.zeros((), jnp.int64) if jax.config.read("jax_enable_x64") else jnp.zeros((), jnp.int32)
        c = (t0, tnext, y0, f0, ys0, zero, zero, zero)
        tprev, _, _, _, ys, _, n_steps, n_acc = jax.lax.while_loop(cond, body, c)
        done = tprev >= t1
        result = diffrax.RESULTS.where(done, diffrax.RESULTS.successful, diffrax.RESULTS.max_steps_reached)
        aux = {"result": result, "num_steps": n_steps, "num_accepted_steps": n_acc,
               "num_rejected_steps": n_steps - n_acc}
        return ys, aux

    return solve


def output_function(problem: Problem, max_steps: int | None = None) -> Callable:
    """f(x, values) -> (outputs (n_times, n_of), aux): `solve.output_function(problem,
    "checkpoint")` with the lean Tsit5 solve (forward only). Built once per problem."""
    return problem.memo(("lean_output_function", max_steps), lambda: _output_function(problem, max_steps))


def _output_function(problem: Problem, max_steps: int | None) -> Callable:
    from .solve import assemble_function, observe_function

    assemble = assemble_function(problem)
    solve = solve_function(problem, max_steps)
    observe = observe_function(problem)

    def f(x, values):
        params, y0 = assemble(x, values["params"], values["y0"])
        ys, aux = solve(params, y0, values)
        return observe(values["times"], ys, params), aux

    return f
