"""Lean time stepping: one plain while loop with a step as a plug-in, for the solves where
diffrax's general machinery costs more than the method's arithmetic.

Why: `jax.vmap` of `diffrax.diffeqsolve` with Tsit5 costs several times what the method's
arithmetic needs on a small model: diffrax runs the stages in an inner loop over a
(batch, 7, n) buffer and carries its general machinery (events, dense output, progress
meter, adjoint bookkeeping) through every step, and under vmap every branch of it is
computed. Its implicit solvers likewise spend most of a step in their machinery (Newton
iterations, the root finder's state, the general controller), far more than the arithmetic
of a small model's Rosenbrock step (`benchmarks/global.py` and `benchmarks/petab_solver.py`
measure both).

The loop (`integrate`): a step `step(t, t_end, h, y, aux, args) -> (y_new, aux_new, err,
dense)` from t to t_end = t + h, the error test and next step size of `control` (one rule,
parameterised by `Control`), and the saves, either

- by the step's dense output (`interpolate`): the save times inside an accepted step, with
  steps clipped to t1 as diffrax does (within 100 ULP of t1 they end at t1); or
- by landing: each step ends no later than the next save time (no dense output).

It runs one sample (scalar t) or an explicit batch (t of shape (B,), inactive samples
masked), optionally records each accepted step's start state for a discrete adjoint, and
runs as a `lax.while_loop` (forward-mode differentiable) or a checkpointed one (reverse
mode too). Step sizes carry no derivative (as in diffrax).

Two uses:

1. Tsit5 (`tsit5_solve`, `tsit5_batched_solve`): the same method as `diffrax.Tsit5` with
   `diffrax.PIDController(rtol, atol)` and `SaveAt(ts=times)`, step for step: the first
   step h = 0.01 (what diffrax's PIDController starts with inside diffeqsolve); k_i =
   h f(t + c_i h, y + sum_j a_ij k_j) with diffrax's Tsit5 tableau, FSAL; error = sum_i e_i
   k_i, scaled by atol + rtol max(|y0|, |y1|), RMS norm; kept when the norm is < 1; the next
   step h clip(0.9 err^(-1/5), [1, 10]) after an accepted step, clip(.., [0.2, 0.9]) after
   a rejected one; the save times by Tsit5's 5th-order interpolant (diffrax's
   `_Tsit5Interpolation`). So the outputs equal the diffrax solve's to rounding
   (tests/test_lean_rk.py). The batched solve has a discrete adjoint (a custom VJP over the
   recorded steps).
2. A Rosenbrock method (`rosenbrock_solve`, the PEtab pipeline's default): the stages of
   `rosenbrock.lean_step` (one Jacobian, from n JVPs or the c of a column colouring, and
   one factorisation or inverse of W per step, custom JVP), Hairer's
   first step, factors clip(0.9 err^(-1/order), [0.2, 6]) (at most 1 after a rejection),
   landing on the save times or saving by Rodas5P's dense output, an optional
   steady-state stop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from .compat import result_code
from .compat import while_loop as _checkpointed_while_loop
from .rosenbrock import TABLEAUS, lean_step, rodas_dense


# ----------------------------------------------------------------------------- control
@dataclass(frozen=True)
class Control:
    """The step-size rule: factor = clip(safety err^(-1/order), bounds), `accept` bounds
    after an accepted step, `reject` bounds after a rejected one; a step is accepted when
    the scaled RMS error is < 1 (`strict`) or <= 1, and (`finite`) its new state is finite."""
    order: float
    safety: float = 0.9
    accept: tuple = (1.0, 10.0)
    reject: tuple = (0.2, 0.9)
    strict: bool = True
    finite: bool = False


TSIT5_CONTROL = Control(order=5.0)  # diffrax.PIDController's defaults with Tsit5's order


def rosenbrock_control(order: float) -> Control:
    """Hairer's rule for the Rosenbrock loop: factors in [0.2, 6], at most 1 after a rejection."""
    return Control(order=order, accept=(0.2, 6.0), reject=(0.2, 1.0), strict=False, finite=True)


def control(ctl: Control, err, y, y_new, rtol, atol):
    """(keep, factor) of a step from y to y_new with error estimate err (last axis: states):
    the RMS of err / (atol + rtol max(|y|, |y_new|)) (a NaN error counts as infinite, a NaN
    state is left out of the scale, as diffrax does). No derivative flows through either."""
    err, y, y_new = jax.lax.stop_gradient((err, y, y_new))
    err = jnp.where(jnp.isnan(err), jnp.inf, err)
    y_cand = jnp.where(jnp.any(jnp.isnan(y_new), axis=-1, keepdims=True), y, y_new)
    x = err / (atol + jnp.maximum(jnp.abs(y), jnp.abs(y_cand)) * rtol)
    scaled = jnp.sqrt(jnp.sum(x * x, axis=-1)) / math.sqrt(y.shape[-1])
    if ctl.finite:
        scaled = jnp.where(jnp.all(jnp.isfinite(y_new), axis=-1), scaled, jnp.inf)
    keep = scaled < 1 if ctl.strict else scaled <= 1
    inv = 1 / scaled
    factor = jnp.clip(ctl.safety * inv ** (1.0 / ctl.order), jnp.where(keep, ctl.accept[0], ctl.reject[0]),
                      jnp.where(keep, ctl.accept[1], ctl.reject[1]))
    return keep, factor


def initial_step(f, t0, y0, args, span, rtol, atol):
    """Hairer's first guess: 0.01 ||y0|| / ||f(y0)|| (scaled norms), at most the span."""
    scale = atol + rtol * jnp.abs(y0)
    d0 = jnp.sqrt(jnp.mean((y0 / scale) ** 2))
    d1 = jnp.sqrt(jnp.mean((f(t0, y0, args) / scale) ** 2))
    h = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / jnp.maximum(d1, 1e-300))
    return jnp.minimum(h, span)


def _int_dtype():
    return jnp.int64 if jax.config.read("jax_enable_x64") else jnp.int32


def _sel(mask, a, b):
    """where(mask, a, b) with mask over the leading (batch) axes of a and b."""
    return jnp.where(jnp.reshape(mask, jnp.shape(mask) + (1,) * (jnp.ndim(a) - jnp.ndim(mask))), a, b)


# ----------------------------------------------------------------------------- the loop
# the step size of a sample that is done, whose step is computed and discarded (`integrate`)
IDLE_STEP = 1e-9
# save times a Rosenbrock step with dense output interpolates at, at most (`integrate`'s
# window), where a solve has at least 4 x as many: Beer_MolBioSystems2014 (714 save times a
# condition) forward gradient 260 -> 167 ms, nllh 13.5 -> 10.4 ms; with 46-60 save times
# (Giordano, Okuonghae, Oliveira, Elowitz) within noise either way, so those keep every time
DENSE_WINDOW = 16


def integrate(step: Callable, ctl: Control, y0, aux0, args, t0, first, t1, times, ys0, rtol, atol,
              max_steps: int, *, interpolate: Callable | None = None, stop: Callable | None = None,
              capacity: int = 0, kind: str = "lax", window: int = 0, i_save0=None) -> dict:
    """Integrate from t0 to t1 (or until `stop(t, y)` after an accepted step), saving at
    `times` (n_t,) into ys0 (..., n_t, n). Returns the final carry: t, y, ys, n (steps),
    n_acc (accepted steps), fin (reached t1 or stopped) and, with `capacity`, the record.

    step(t, t_end, h, y, aux, args) -> (y_new, aux_new (e.g. FSAL), err, dense); a batch
    (t0 of shape (B,)) needs a batched step. `first`: with `interpolate`, the end of the
    first step (the carry holds the end of the next step, as diffrax does); without it, the
    first step size (the carry holds the step size, and steps land on the save times).
    interpolate(times, t, t_end, y, dense) -> (..., n_t, n): the step's dense output.
    capacity R (batch only): record the first R accepted steps' start states Yb (B, R, n),
    their (t, t_end) Tb (B, R, 2), and saved_by (B, n_t), the accepted step that saved
    each time (-1: none). kind: "lax" or "checkpointed" (reverse-mode differentiable).
    window W (with `interpolate`, one sample, `times` sorted): a step interpolates only at
    the W save times from the first unsaved one, and ends no later than the (W+1)-th (so
    none is skipped), instead of at every save time: the cost of a step's saves (and of
    their tangents) then no longer grows with the number of save times. i_save0: the save
    times already in ys0 (a sorted prefix; default none)."""
    land = interpolate is None
    ints = _int_dtype()
    batch = jnp.shape(t0)
    n_t = times.shape[0]
    zero = jnp.zeros(batch, ints)
    if not land:
        floor = t1
        for _ in range(100):  # t1 - 100 ULP: a step ending past it ends at t1 (diffrax's _clip_to_end)
            floor = jnp.nextafter(floor, jnp.asarray(-jnp.inf, floor.dtype))
    window = 0 if land or batch or window >= n_t else int(window)
    if window:  # padded by W, so a window from any first unsaved time fits
        pad_times = jnp.concatenate([times, jnp.full((window,), jnp.inf, times.dtype)])
        ys0 = jnp.concatenate([ys0, jnp.zeros((window,) + ys0.shape[1:], ys0.dtype)])
    i0 = zero if i_save0 is None else jnp.asarray(i_save0, ints)
    c = dict(t=t0, tn=first, y=y0, aux=aux0, ys=ys0, i_save=i0, n=zero, n_acc=zero, fin=t0 >= t1)
    if capacity:
        c.update(Yb=jnp.zeros(batch + (capacity, y0.shape[-1]), y0.dtype),
                 Tb=jnp.zeros(batch + (capacity, 2), y0.dtype), saved_by=jnp.full(batch + (n_t,), -1, ints))

    def active(c):
        return ~c["fin"] & (c["n"] < max_steps)

    def body(c):
        on = active(c)
        t, tn, y = c["t"], c["tn"], c["y"]
        if land:  # the next save time after t (or t1): the step lands on it exactly
            nxt = jnp.min(jnp.where(times > t[..., None], times, t1), axis=-1)
            h = jnp.minimum(tn, nxt - t)
            clipped = tn >= nxt - t
            t_end = jnp.where(clipped, nxt, t + h)
        else:
            t_end = tn
            if window:  # at most W save times inside the step
                cap = jax.lax.dynamic_index_in_dim(pad_times, c["i_save"] + window, keepdims=False)
                t_end = jnp.where(cap > t, jnp.minimum(t_end, cap), t_end)
            h = t_end - t
        # a sample that is done (a finished sample of a batch, or of `jax.vmap`) still runs the
        # step, its result discarded; there h can be 0, W = I / (h gamma) - J infinite, and a
        # reverse sweep multiplies that branch's inf by its zero cotangent: NaN. A finite step.
        h = jnp.where(on, h, IDLE_STEP)
        t_end = jnp.where(on, t_end, t + IDLE_STEP)
        y_new, aux_new, err, dense = step(t, t_end, h, y, c["aux"], args)
        keep, factor = control(ctl, err, y, y_new, rtol, atol)
        take = on & keep
        out = dict(c)
        if land:
            t_new = jnp.where(keep, t_end, t)
            tn_new = h * factor
            tn_new = jax.lax.stop_gradient(jnp.where(keep & clipped, jnp.maximum(tn_new, tn), tn_new))
            mask = take[..., None] & (times == t_new[..., None])
            out["ys"] = _sel(mask, jnp.broadcast_to(y_new[..., None, :], c["ys"].shape), c["ys"])
        else:
            t_new = jnp.minimum(jnp.where(keep, t_end, t), t1)
            tn_new = t_new + h * factor
            tn_new = jnp.where(tn_new > floor, jnp.where(keep, t1, t_new + 0.5 * (t1 - t_new)), tn_new)
            # the save times of an accepted step, from the first unsaved one up to t_end, by
            # the dense output (diffrax saves ts[j] while ts[j] <= tnext)
            if window:
                tw = jax.lax.dynamic_slice_in_dim(pad_times, c["i_save"], window)
                inside = (c["i_save"] + jnp.arange(window) < n_t) & (tw <= t_end)
                # outside the step the interpolant is evaluated at t_end: finite, so a reverse
                # sweep's zero cotangents there stay zero
                vals = interpolate(jnp.where(inside, tw, t_end), t, t_end, y, dense)
                keep_w = take & inside
                old_w = jax.lax.dynamic_slice_in_dim(c["ys"], c["i_save"], window, axis=-2)
                out["ys"] = jax.lax.dynamic_update_slice_in_dim(c["ys"], _sel(keep_w, vals, old_w), c["i_save"],
                                                                axis=-2)
                out["i_save"] = c["i_save"] + jnp.sum(keep_w).astype(ints)
            else:
                mask = (take[..., None] & (jnp.arange(n_t) >= c["i_save"][..., None])
                        & (times <= t_end[..., None]))
                out["ys"] = _sel(mask, interpolate(times, t, t_end, y, dense), c["ys"])
                out["i_save"] = c["i_save"] + jnp.sum(mask, axis=-1).astype(ints)
        end = t_new >= t1
        if stop is not None:
            end = end | stop(t_new, y_new)
        if capacity:
            slot = jnp.where(take, c["n_acc"], capacity)  # capacity: out of range, dropped
            rows = jnp.arange(batch[0])
            out["Yb"] = c["Yb"].at[rows, slot].set(y, mode="drop")
            out["Tb"] = c["Tb"].at[rows, slot].set(jnp.stack([t, t_end], axis=-1), mode="drop")
            out["saved_by"] = jnp.where(mask, c["n_acc"][..., None], c["saved_by"])
        out.update(t=_sel(on, t_new, t), tn=_sel(on, tn_new, tn), y=_sel(take, y_new, y),
                   aux=jax.tree_util.tree_map(lambda a, b: _sel(take, a, b), aux_new, c["aux"]),
                   n=c["n"] + on.astype(ints), n_acc=c["n_acc"] + take.astype(ints),
                   fin=jnp.where(take, end, c["fin"]))
        return out

    def cond(c):
        return jnp.any(active(c))

    if kind == "lax":
        c = jax.lax.while_loop(cond, body, c)
    else:
        c = _checkpointed_while_loop(cond, body, c, max_steps=max_steps, kind="checkpointed")
    if window:
        c["ys"] = c["ys"][:n_t]
    return c


# ----------------------------------------------------------------------------- Tsit5
def _tableau():
    tab = diffrax.Tsit5.tableau
    a = [np.asarray(row, dtype=np.float64) for row in tab.a_lower]
    return a, np.asarray(tab.c, np.float64), np.asarray(tab.b_sol, np.float64), np.asarray(tab.b_error, np.float64)


def _interpolation_weights(s):
    """Tsit5's dense-output weights b_1..b_7 at s in [0, 1] (diffrax's `_Tsit5Interpolation`)."""
    b1 = -1.0530884977290216 * s * (s - 1.3299890189751412) * (s**2 - 1.4364028541716351 * s + 0.7139816917074209)
    b2 = 0.1017 * s**2 * (s**2 - 2.1966568338249754 * s + 1.2949852507374631)
    b3 = 2.490627285651252793 * s**2 * (s**2 - 2.38535645472061657 * s + 1.57803468208092486)
    b4 = -16.54810288924490272 * (s - 1.21712927295533244) * (s - 0.61620406037800089) * s**2
    b5 = 47.37952196281928122 * (s - 1.203071208372362603) * (s - 0.658047292653547382) * s**2
    b6 = -34.87065786149660974 * (s - 1.2) * (s - 0.666666666666666667) * s**2
    b7 = 2.5 * (s - 1) * (s - 0.6) * s**2
    return jnp.stack([b1, b2, b3, b4, b5, b6, b7])


def tsit5_step(rhs: Callable, dtype):
    """(step, f): step(tprev, tnext, h, y, fy, params) -> (y_new, f_new, K (7, n), err (n)),
    one Tsit5 step of diffrax's (k_i = h f(t + c_i h, y + sum_j a_ij k_j), FSAL: fy =
    f(tprev, y), h = tnext - tprev); f(t, y, params) the rhs as an array of y's shape."""
    A, C, B, E = _tableau()

    def f(t, y, params):
        return jnp.asarray(rhs(t, y, params), dtype=dtype).reshape(y.shape)

    def step(tprev, tnext, h, y, fy, params):
        ks = [h * fy]
        for i in range(len(A) - 1):  # stages 2..6; the 7th (FSAL) is f at (tnext, y_new)
            yi = y + sum(a * k for a, k in zip(A[i], ks) if a != 0.0)
            ks.append(h * f(tprev + C[i] * h, yi, params))
        y_new = y + sum(b * k for b, k in zip(B[:6], ks) if b != 0.0)
        f_new = f(tnext, y_new, params)
        ks.append(h * f_new)
        err = sum(e * k for e, k in zip(E, ks) if e != 0.0)
        return y_new, f_new, err, jnp.stack(ks)

    return step, f


def tsit5_dense(times, tprev, tnext, y, K):
    """The dense output at every save time from the step [tprev, tnext]: (n_times, n)."""
    span = tnext - tprev
    s = jnp.where(span == 0, 0.0, (times - tprev) / jnp.where(span == 0, 1.0, span))
    return y[None, :] + _interpolation_weights(s).T @ K


def tsit5_solve(rhs: Callable, max_steps: int) -> Callable:
    """solve(params, y0, times, t0, rtol, atol) -> (ys (n_times, n), aux): the Tsit5 solve of
    diffrax with a PIDController and SaveAt(ts=times) (same steps, same saved values to
    rounding). aux: result (a diffrax RESULTS item), num_steps, num_accepted_steps,
    num_rejected_steps."""
    steps = int(max_steps)

    def solve(params, y0, times, t0, rtol, atol):
        t1 = times[-1]
        dtype = y0.dtype
        t0 = jnp.asarray(t0, dtype)
        step, f = tsit5_step(rhs, dtype)
        # the first step: diffrax's PIDController.init calls _select_initial_step, but
        # diffeqsolve hands it the wrapped term (WrapTerm, not an ODETerm), for which that
        # function returns 0.01: every diffrax solve starts with h = 0.01, clipped to t1
        ys0 = jnp.full((times.shape[0], y0.size), jnp.inf, dtype)
        c = integrate(step, TSIT5_CONTROL, y0, f(t0, y0, params), params, t0, jnp.minimum(t0 + 0.01, t1), t1,
                      times, ys0, rtol, atol, steps, interpolate=tsit5_dense)
        result = diffrax.RESULTS.where(c["fin"], diffrax.RESULTS.successful, diffrax.RESULTS.max_steps_reached)
        aux = {"result": result, "num_steps": c["n"], "num_accepted_steps": c["n_acc"],
               "num_rejected_steps": c["n"] - c["n_acc"]}
        return c["ys"], aux

    return solve


def tsit5_batched_solve(rhs: Callable, assemble: Callable, max_steps: int, capacity: int) -> Callable:
    """solve(X (B, n_inputs), values) -> (ys (B, n_times, n), stats (B, 4)): the Tsit5 solve
    of the B input vectors at once, params, y0 = assemble(x, values["params"], values["y0"]);
    values also holds times, t0, rtol, atol. Reverse-differentiable in X by the discrete
    adjoint of the steps taken (in X, not in the parameter dict: one cotangent array per step
    instead of one per parameter). stats: result code, num_steps, num_accepted_steps,
    num_rejected_steps (floats; no derivative). `capacity`: the accepted steps stored per
    sample; a sample that takes more has a wrong gradient and num_accepted_steps > capacity:
    the caller reruns it with more.

    The batch is explicit, not a `jax.vmap` of a loop: a vmapped while loop selects its
    whole carry per sample on every iteration, and the carry holds the stored steps
    (B, R, n), which made every step cost O(R). Here one loop runs while any sample is
    active, inactive samples are masked, and each accepted step's start state is written
    in place. The backward pass runs the stored steps in reverse, each step's vector-Jacobian
    product (stages recomputed from the stored state) taking the cotangent of the state and
    of the save times that step interpolated. Step sizes carry no derivative (as in
    diffrax), so the gradient equals that of diffrax's checkpointed adjoint through the
    same steps, to rounding (tests/test_lean_rk.py)."""
    steps = int(max_steps)
    R = int(capacity)
    tm = jax.tree_util.tree_map

    def primal(X, values):
        params, y0 = jax.vmap(assemble, in_axes=(0, None, None))(X, values["params"], values["y0"])
        times, rtol, atol = values["times"], values["rtol"], values["atol"]
        t1 = times[-1]
        dtype = y0.dtype
        Bn, n = y0.shape
        t0 = jnp.full((Bn,), values["t0"], dtype)
        step, f = tsit5_step(rhs, dtype)
        vdense = jax.vmap(tsit5_dense, in_axes=(None, 0, 0, 0, 0))
        c = integrate(jax.vmap(step), TSIT5_CONTROL, y0, jax.vmap(f)(t0, y0, params), params, t0,
                      jnp.minimum(t0 + 0.01, t1), t1, times, jnp.full((Bn, times.shape[0], n), jnp.inf, dtype),
                      rtol, atol, steps, interpolate=vdense, capacity=R)
        n_steps, n_acc = c["n"], c["n_acc"]
        code = jnp.where(c["fin"], 0, result_code(diffrax.RESULTS.max_steps_reached))
        stats = jnp.stack([code, n_steps, n_acc, n_steps - n_acc], axis=1).astype(dtype)
        return (c["ys"], stats), (c["Yb"], c["Tb"], c["saved_by"], jnp.minimum(n_acc, R))

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
        step, f = tsit5_step(rhs, X.dtype)
        rows = jnp.arange(X.shape[0])

        def one(y, x, tprev, tnext):
            p, _ = assemble(x, values["params"], values["y0"])
            y_new, _, _, K = step(tprev, tnext, tnext - tprev, y, f(tprev, y, p), p)
            return y_new, tsit5_dense(times, tprev, tnext, y, K)

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


# ----------------------------------------------------------------------------- Rosenbrock
def rosenbrock_solve(f, y0, t0, t1, ts, args, tol, max_steps: int, kind: str = "lax", autonomous: bool = False,
                     steady=None, h0=None, method: str = "rodas4", scan_stages: bool = False, compression=None,
                     dense_output: bool = False):
    """Integrate y' = f(t, y, args) from t0 to t1 with the Rosenbrock method `method` (a key
    of `rosenbrock.TABLEAUS`), saving at ts (clipped to [t0, t1]) by landing on them, or with
    dense_output (a method that has one: Rodas5P, order 4) by interpolating inside the steps,
    which then do not stop at the save times.

    f(t, y, args) -> (n,); ts (n_t,) sorted; tol = (rtol, atol); kind "lax" (forward-mode
    differentiable) or "checkpointed" (also reverse mode); steady: None or a function
    (t, y) -> bool that ends the solve early (t1 may then be inf); h0: the first step
    (default: Hairer's guess). The step is differentiable in (y, args) by a custom JVP
    (`rosenbrock.lean_step`; scan_stages: its stages as a `lax.scan`, smaller programs for
    large models); times are constants of the solve. compression: each step's Jacobian from
    the c JVPs of a column colouring (`sparsity.compression` of a declared or symbolic
    pattern of df/dy), None for n JVPs.
    Returns (ys (n_t, n), y_end (n,), t_end, ok, n_steps).
    """
    c = rosenbrock_run(f, y0, t0, t1, ts, args, tol, max_steps, kind=kind, autonomous=autonomous, steady=steady,
                       h0=h0, method=method, scan_stages=scan_stages, compression=compression,
                       dense_output=dense_output)
    return c["ys"], c["y"], c["t"], c["fin"], c["n"]


def rosenbrock_run(f, y0, t0, t1, ts, args, tol, max_steps: int, kind: str = "lax", autonomous: bool = False,
                   steady=None, h0=None, method: str = "rodas4", scan_stages: bool = False, compression=None,
                   dense_output: bool = False) -> dict:
    """`rosenbrock_solve`'s loop, returning its final carry (`integrate`): ys, y, t, fin (ok),
    n (steps) and n_acc (accepted steps)."""
    rtol, atol = tol[0], tol[1]
    tab = TABLEAUS[method]
    t0, t1, ts = (jax.lax.stop_gradient(jnp.asarray(v)) for v in (t0, t1, ts))
    ts = jnp.clip(ts, t0, t1)
    ys0 = jnp.where((ts <= t0)[:, None], y0, jnp.zeros((ts.shape[0], y0.shape[0]), y0.dtype))
    span = jnp.where(jnp.isfinite(t1), t1 - t0, 1e6)
    h_init = jax.lax.stop_gradient(initial_step(f, t0, y0, args, span, rtol, atol) if h0 is None else h0)
    t0 = jnp.asarray(t0, dtype=y0.dtype)

    if dense_output and tab.H is None:
        raise ValueError(f"{method} has no dense output")

    def step(t, t_end, h, y, aux, args):
        y_new, err, *kd = lean_step(f, t, y, h, args, autonomous, tab, scan=scan_stages, compression=compression,
                                    dense=dense_output)
        return y_new, aux, err, (y_new, *kd) if dense_output else None

    def interpolate(times, t, t_end, y, dense):  # at every time; the loop keeps those inside the step
        y1, k = dense
        return rodas_dense(((times - t) / (t_end - t))[:, None], y, y1, k)

    # with the dense output the loop carries the end of the next step, else its size
    first = jnp.minimum(t0 + h_init, t1) if dense_output else h_init
    c = integrate(step, rosenbrock_control(tab.order), y0, (), args, t0, first, t1, ts, ys0, rtol, atol, max_steps,
                  interpolate=interpolate if dense_output else None, stop=steady, kind=kind,
                  window=DENSE_WINDOW if dense_output and ts.shape[0] >= 4 * DENSE_WINDOW else 0,
                  i_save0=jnp.sum(ts <= t0) if dense_output else None)
    if steady is None:
        c["ys"] = jnp.where((ts >= t1)[:, None], c["y"], c["ys"])
    return c
