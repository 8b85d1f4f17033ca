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

from ..core.problem import Problem
from .compat import result_code
from .registry import solver_name

SAFETY, FACTOR_MIN, FACTOR_MAX = 0.9, 0.2, 10.0  # diffrax.PIDController's defaults
ORDER = 5  # Tsit5; diffrax's error_order for an ODE is the solver's order
ADJOINT_STEPS = 256  # accepted steps the lean adjoint stores at first, at least (grown on demand)
ADJOINT_BYTES = 2**23  # ... or as many as this many bytes of stored states per batch hold


def applies(problem: Problem) -> bool:
    """Whether the lean solve reproduces `solve.solve_function(problem)`: the solver
    resolves to Tsit5, and no doses, parameter breakpoints or state events cut the solve."""
    from ..core import schedule
    if solver_name(problem) != "tsit5":
        return False
    if schedule.has_pieces(problem) or getattr(problem, "fixed_breakpoints", ()):
        return False
    return True


def _tableau():
    import diffrax

    tab = diffrax.Tsit5.tableau
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


def _step_function(rhs: Callable, dtype):
    """step(tprev, tnext, y, fy, params) -> (y_new, f_new, K (7, n), err (n)): one Tsit5
    step of diffrax's (k_i = h f(t + c_i h, y + sum_j a_ij k_j), FSAL: fy = f(tprev, y))."""
    import jax.numpy as jnp

    A, C, B, E = _tableau()

    def f(t, y, params):
        return jnp.asarray(rhs(t, y, params), dtype=dtype).reshape(y.shape)

    def step(tprev, tnext, y, fy, params):
        h = tnext - tprev
        ks = [h * fy]
        for i in range(len(A) - 1):  # stages 2..6; the 7th (FSAL) is f at (tnext, y_new)
            yi = y + sum(a * k for a, k in zip(A[i], ks) if a != 0.0)
            ks.append(h * f(tprev + C[i] * h, yi, params))
        y_new = y + sum(b * k for b, k in zip(B[:6], ks) if b != 0.0)
        f_new = f(tnext, y_new, params)
        ks.append(h * f_new)
        err = sum(e * k for e, k in zip(E, ks) if e != 0.0)
        return y_new, f_new, jnp.stack(ks), err

    return step, f


def _dense(times, tprev, tnext, y, K):
    """The dense output at every save time from the step [tprev, tnext]: (n_times, n)."""
    import jax.numpy as jnp

    span = tnext - tprev
    s = jnp.where(span == 0, 0.0, (times - tprev) / jnp.where(span == 0, 1.0, span))
    return y[None, :] + _interpolation_weights(s).T @ K


def solve_function(problem: Problem, max_steps: int | None = None) -> Callable:
    """(params, y0, values) -> (ys (n_times, n_states), aux): the Tsit5 solve of
    `solve.solve_function` (same steps, same saved values to rounding), as one while loop.
    aux: result (a diffrax RESULTS item), num_steps, num_accepted_steps, num_rejected_steps."""
    import diffrax
    import jax
    import jax.numpy as jnp

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
        step, f = _step_function(rhs, dtype)

        def rms(x):
            return jnp.sqrt(jnp.sum(x * x)) / math.sqrt(n)

        # the first step: diffrax's PIDController.init calls _select_initial_step, but
        # diffeqsolve hands it the wrapped term (WrapTerm, not an ODETerm), for which that
        # function returns 0.01: every diffrax solve starts with h = 0.01, clipped to t1
        f0 = f(t0, y0, params)
        tnext = jnp.minimum(t0 + 0.01, t1)
        floor = t1
        for _ in range(100):  # t1 - 100 ULP: a step ending past it ends at t1 (diffrax's _clip_to_end)
            floor = jnp.nextafter(floor, jnp.asarray(-jnp.inf, dtype))
        ys0 = jnp.full((n_times, n), jnp.inf, dtype)
        zero = jnp.zeros((), jnp.int64) if jax.config.read("jax_enable_x64") else jnp.zeros((), jnp.int32)

        def cond(c):
            tprev, _, _, _, _, _, n_steps, _ = c
            return (tprev < t1) & (n_steps < steps)

        def body(c):
            tprev, tnext, y, fy, ys, i_save, n_steps, n_acc = c
            y_new, f_new, K, err = step(tprev, tnext, y, fy, params)
            err = jnp.where(jnp.isnan(err), jnp.inf, err)
            y_cand = jnp.where(jnp.any(jnp.isnan(y_new)), y, y_new)
            scaled = rms(err / (atol + jnp.maximum(jnp.abs(y), jnp.abs(y_cand)) * rtol))
            keep = scaled < 1
            inv = jax.lax.stop_gradient(1 / scaled)  # the step sizes carry no derivative (as in diffrax)
            factor = jnp.clip(SAFETY * inv ** (1.0 / ORDER), jnp.where(keep, 1.0, FACTOR_MIN),
                              jnp.where(keep, FACTOR_MAX, SAFETY))
            new_prev = jnp.minimum(jnp.where(keep, tnext, tprev), t1)
            new_next = new_prev + (tnext - tprev) * factor
            new_next = jnp.where(new_next > floor, jnp.where(keep, t1, new_prev + 0.5 * (t1 - new_prev)), new_next)
            # the save times of an accepted step, from the first unsaved one up to tnext, by
            # the dense output (diffrax saves ts[j] while ts[j] <= tnext)
            mask = keep & (jnp.arange(n_times) >= i_save) & (times <= tnext)
            ys = jnp.where(mask[:, None], _dense(times, tprev, tnext, y, K), ys)
            i_save = i_save + jnp.sum(mask).astype(i_save.dtype)
            y = jnp.where(keep, y_new, y)
            fy = jnp.where(keep, f_new, fy)
            return new_prev, new_next, y, fy, ys, i_save, n_steps + 1, n_acc + keep.astype(n_acc.dtype)

        c = (t0, tnext, y0, f0, ys0, zero, zero, zero)
        tprev, _, _, _, ys, _, n_steps, n_acc = jax.lax.while_loop(cond, body, c)
        done = tprev >= t1
        result = diffrax.RESULTS.where(done, diffrax.RESULTS.successful, diffrax.RESULTS.max_steps_reached)
        aux = {"result": result, "num_steps": n_steps, "num_accepted_steps": n_acc,
               "num_rejected_steps": n_steps - n_acc}
        return ys, aux

    return solve


def initial_capacity(problem: Problem, batch: int) -> int:
    """The accepted steps the lean adjoint stores per sample at first: what ADJOINT_BYTES
    hold for the batch (a power of 2), at least ADJOINT_STEPS, at most max_steps (which
    then always suffices)."""
    per_step = batch * (problem.model.n_states + 2) * 8
    fit = ADJOINT_BYTES // max(per_step, 1)
    fit = 1 << (int(fit).bit_length() - 1) if fit >= 1 else 0
    return int(min(problem.max_steps, max(ADJOINT_STEPS, fit)))


def batched_solve_function(problem: Problem, capacity: int) -> Callable:
    """(X (B, n_inputs), values) -> (ys (B, n_times, n), stats (B, 4)): the lean solve of
    the B input vectors at once, reverse-differentiable in X by the discrete adjoint of
    the steps taken (in X, not in the parameter dict: one cotangent array per step instead
    of one per parameter). stats: result code, num_steps, num_accepted_steps,
    num_rejected_steps (floats, no derivative). `capacity`: the accepted steps stored per
    sample; a sample that takes more has a wrong gradient and num_accepted_steps >
    capacity: the caller reruns it with more (`sens.ensemble` does). stats: result code,
    num_steps, num_accepted_steps, num_rejected_steps (floats; no derivative).

    The batch is explicit, not a `jax.vmap` of a loop: a vmapped while loop selects its
    whole carry per sample on every iteration, and the carry holds the stored steps
    (B, R, n), which made every step cost O(R). Here one loop runs while any sample is
    active, inactive samples are masked, and each accepted step's start state is written
    in place. The backward pass runs the stored steps in reverse, each step's vector-Jacobian
    product (stages recomputed from the stored state) taking the cotangent of the state and
    of the save times that step interpolated. Step sizes carry no derivative (as in
    diffrax), so the gradient equals that of diffrax's checkpointed adjoint through the
    same steps, to rounding (tests/test_lean_rk.py)."""
    import jax
    import jax.numpy as jnp

    from ..integrate.solve import assemble_function

    rhs = problem.model.rhs
    assemble = assemble_function(problem)
    steps = int(problem.max_steps)
    n_times = int(problem.times.size)
    R = int(capacity)
    tm = jax.tree_util.tree_map

    def primal(X, values):
        params, y0 = jax.vmap(assemble, in_axes=(0, None, None))(X, values["params"], values["y0"])
        times, rtol, atol = values["times"], values["rtol"], values["atol"]
        t1 = times[-1]
        dtype = y0.dtype
        Bn, n = y0.shape
        t0 = jnp.full((Bn,), values["t0"], dtype)
        step, f = _step_function(rhs, dtype)
        vstep = jax.vmap(step)
        vdense = jax.vmap(_dense, in_axes=(None, 0, 0, 0, 0))
        f0 = jax.vmap(f)(t0, y0, params)
        floor = t1
        for _ in range(100):  # t1 - 100 ULP (diffrax's _clip_to_end)
            floor = jnp.nextafter(floor, jnp.asarray(-jnp.inf, dtype))
        ints = jnp.int64 if jax.config.read("jax_enable_x64") else jnp.int32
        zero = jnp.zeros((Bn,), ints)
        rows = jnp.arange(Bn)
        c = (t0, jnp.minimum(t0 + 0.01, t1), y0, f0, jnp.full((Bn, n_times, n), jnp.inf, dtype), zero, zero, zero,
             jnp.zeros((Bn, R, n), dtype), jnp.zeros((Bn, R, 2), dtype), jnp.full((Bn, n_times), -1, ints))

        def active(c):
            return (c[0] < t1) & (c[6] < steps)

        def body(c):
            tprev, tnext, y, fy, ys, i_save, n_steps, n_acc, Yb, Tb, saved_by = c
            on = active(c)
            y_new, f_new, K, err = vstep(tprev, tnext, y, fy, params)
            err = jnp.where(jnp.isnan(err), jnp.inf, err)
            y_cand = jnp.where(jnp.any(jnp.isnan(y_new), axis=1, keepdims=True), y, y_new)
            x = err / (atol + jnp.maximum(jnp.abs(y), jnp.abs(y_cand)) * rtol)
            scaled = jnp.sqrt(jnp.sum(x * x, axis=1)) / math.sqrt(n)
            keep = scaled < 1
            inv = jax.lax.stop_gradient(1 / scaled)
            factor = jnp.clip(SAFETY * inv ** (1.0 / ORDER), jnp.where(keep, 1.0, FACTOR_MIN),
                              jnp.where(keep, FACTOR_MAX, SAFETY))
            new_prev = jnp.minimum(jnp.where(keep, tnext, tprev), t1)
            new_next = new_prev + (tnext - tprev) * factor
            new_next = jnp.where(new_next > floor, jnp.where(keep, t1, new_prev + 0.5 * (t1 - new_prev)), new_next)
            take = on & keep
            mask = take[:, None] & (jnp.arange(n_times)[None, :] >= i_save[:, None]) & (times[None, :] <= tnext[:, None])
            ys = jnp.where(mask[:, :, None], vdense(times, tprev, tnext, y, K), ys)
            slot = jnp.where(take, n_acc, R)  # R: out of range, dropped
            Yb = Yb.at[rows, slot].set(y, mode="drop")
            Tb = Tb.at[rows, slot].set(jnp.stack([tprev, tnext], axis=1), mode="drop")
            saved_by = jnp.where(mask, n_acc[:, None], saved_by)
            return (jnp.where(on, new_prev, tprev), jnp.where(on, new_next, tnext),
                    jnp.where(take[:, None], y_new, y), jnp.where(take[:, None], f_new, fy), ys,
                    i_save + jnp.sum(mask, axis=1).astype(ints), n_steps + on.astype(ints),
                    n_acc + take.astype(ints), Yb, Tb, saved_by)

        c = jax.lax.while_loop(lambda c: jnp.any(active(c)), body, c)
        tprev, _, _, _, ys, _, n_steps, n_acc, Yb, Tb, saved_by = c
        ok = tprev >= t1
        code = jnp.where(ok, 0, _max_steps_code())
        stats = jnp.stack([code, n_steps, n_acc, n_steps - n_acc], axis=1).astype(dtype)
        return (ys, stats), (Yb, Tb, saved_by, jnp.minimum(n_acc, R))

    @jax.custom_vjp
    def solve(X, values):
        return primal(X, values)[0]

    def fwd(X, values):
        out, rec = primal(X, values)
        return out, (X, values, rec)

    def bwd(res, cts):
        X, values, (Yb, Tb, saved_by, n_acc) = res
        ct_ys = jnp.where(jnp.isfinite(cts[0]), cts[0], 0.0)
        times = values["times"]
        step, f = _step_function(rhs, X.dtype)
        rows = jnp.arange(X.shape[0])

        def one(y, x, tprev, tnext):
            p, _ = assemble(x, values["params"], values["y0"])
            y_new, _, K, _ = step(tprev, tnext, y, f(tprev, y, p), p)
            return y_new, _dense(times, tprev, tnext, y, K)

        def back(k, carry):
            lam, x_bar = carry
            i = n_acc - 1 - k
            on = i >= 0
            j = jnp.maximum(i, 0)
            tprev, tnext = Tb[rows, j, 0], Tb[rows, j, 1]
            _, vjp = jax.vjp(lambda y, x: jax.vmap(one)(y, x, tprev, tnext), Yb[rows, j], X)
            ct_saves = jnp.where(((saved_by == i[:, None]) & on[:, None])[:, :, None], ct_ys, 0.0)
            y_bar, x_i = vjp((jnp.where(on[:, None], lam, 0.0), ct_saves))
            return jnp.where(on[:, None], y_bar, lam), x_bar + jnp.where(on[:, None], x_i, 0.0)

        y0 = Yb[:, 0]  # every accepted first step starts at y0
        lam, x_bar = jax.lax.fori_loop(0, jnp.max(n_acc), back, (jnp.zeros_like(y0), jnp.zeros_like(X)))
        # y0's own dependence on x (initial values among the inputs)
        _, vjp0 = jax.vjp(lambda x: jax.vmap(assemble, in_axes=(0, None, None))(x, values["params"], values["y0"])[1], X)
        return x_bar + vjp0(lam)[0], tm(jnp.zeros_like, values)

    solve.defvjp(fwd, bwd)
    return solve


def _max_steps_code() -> int:
    import diffrax

    return int(result_code(diffrax.RESULTS.max_steps_reached))


def gradient_function(problem: Problem, objective: Callable, capacity: int) -> Callable:
    """G(X (B, n_inputs), values) -> dict of arrays over the B samples: outputs (B,
    n_times, n_of), result (solver code), num_steps, value = objective(outputs), gradient
    (B, n_inputs) d value / d x, and accepted (accepted steps: more than `capacity` means
    the gradient is wrong and the batch must be rerun with a larger capacity): the ensemble's task "gradient" with the lean solve and its
    discrete adjoint (one backward pass for the whole batch: the sum of the values has the
    per-sample gradients as its gradient, samples being independent)."""
    import jax
    import jax.numpy as jnp

    from ..ad.objective import scalar_objective
    from ..integrate.solve import assemble_function, observe_function

    assemble = assemble_function(problem)
    observe = observe_function(problem)
    obj = scalar_objective(objective)
    solve = batched_solve_function(problem, capacity)

    def G(X, values):
        def total(X):
            params, _ = jax.vmap(assemble, in_axes=(0, None, None))(X, values["params"], values["y0"])
            ys, stats = solve(X, values)
            out = jax.vmap(observe, in_axes=(None, 0, 0))(values["times"], ys, params)
            v = jax.vmap(obj)(out)
            return jnp.sum(jnp.where(stats[:, 0] == 0, v, 0.0)), (v, out, jax.lax.stop_gradient(stats))

        (_, (v, out, stats)), grad = jax.value_and_grad(total, has_aux=True)(X)
        ints = jnp.int64 if jax.config.read("jax_enable_x64") else jnp.int32
        return {"outputs": out, "result": stats[:, 0].astype(jnp.int32), "num_steps": stats[:, 1].astype(ints),
                "value": v, "gradient": grad, "accepted": stats[:, 2].astype(ints)}

    return G


def output_function(problem: Problem) -> Callable:
    """f(x, values) -> (outputs (n_times, n_of), aux): `solve.output_function(problem,
    "checkpoint")` with the lean Tsit5 solve (forward only). Built once per problem."""
    return problem.memo("lean_output_function", lambda: _output_function(problem))


def _output_function(problem: Problem) -> Callable:
    from ..integrate.solve import assemble_function, observe_function

    assemble = assemble_function(problem)
    solve = solve_function(problem)
    observe = observe_function(problem)

    def f(x, values):
        params, y0 = assemble(x, values["params"], values["y0"])
        ys, aux = solve(params, y0, values)
        return observe(values["times"], ys, params), aux

    return f
