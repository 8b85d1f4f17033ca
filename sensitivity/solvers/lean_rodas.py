"""A lean stiff integrator for the PEtab pipeline: a Rosenbrock method in one loop, Rodas5P
(the default, coefficients from `sensitivity/rosenbrock.py`) or Rodas4 (Hairer & Wanner).

Why: diffrax's implicit solvers spend most of a step in their machinery (Newton iterations
of each stage, the root finder's state, the general step-size controller): 15-70 us per step
on the PEtab models (8-11 states), where the arithmetic is a few microseconds. A Rosenbrock
method solves each stage with one linear solve, no iterations:

    G = I / (h gamma) - J(t, y)                     one Jacobian and one LU per step
    G K_i = f(t + alpha_i h, y + sum_j a_ij K_j) + sum_j c_ij K_j / h + gamma_i h df/dt
    y_new = y + sum_i m_i K_i,   error estimate K_6     (Rodas4: 6 stages, order 4(3),
                                                         stiffly accurate, L-stable)

The step is a plain function of (t, y, h, p), so JAX differentiates it exactly: forward-mode
tangents (jvp, vmapped over the tangent directions) and reverse mode through a checkpointed
loop (`equinox.internal.while_loop`) differentiate the same discrete solve. The step sizes
are chosen on values with their derivatives stopped (`lax.stop_gradient`), as for a solve
with a given step sequence: forward and adjoint gradients agree to rounding.

Steps land exactly on the save times (no dense output). Rodas4's coefficients: Hairer &
Wanner, Solving ODEs II (1996), in the form with C = Gamma^-1 transformed stages.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import numpy as np

from .newton.steady_state import newton_polish

# Rodas4: alpha (stage times), gamma_i (sums of the gamma row), A and C (strictly lower),
# M (solution weights); the error estimate is K_6 (E = e_6).
_GAMMA = 0.25
_ALPHA = np.array([0.0, 0.386, 0.210, 0.630, 1.0, 1.0])
_GAMMAS = np.array([0.25, -0.1043, 0.1035, -0.3620000000000023e-01, 0.0, 0.0])
_A = np.zeros((6, 6))
_C = np.zeros((6, 6))
_a = [0.1544e+01, 0.9466785280815826, 0.2557011698983284, 0.3314825187068521e+01,
      0.2896124015972201e+01, 0.9986419139977817, 0.1221224509226641e+01, 0.6019134481288629e+01,
      0.1253708332932087e+02, -0.6878860361058950, 0.1221224509226641e+01, 0.6019134481288629e+01,
      0.1253708332932087e+02, -0.6878860361058950, 1.0]
_c = [-0.56688e+01, -0.2430093356833875e+01, -0.2063599157091915, -0.1073529058151375,
      -0.9594562251023355e+01, -0.2047028614809616e+02, 0.7496443313967647e+01,
      -0.1024680431464352e+02, -0.3399990352819905e+02, 0.1170890893206160e+02,
      0.8083246795921522e+01, -0.7981132988064893e+01, -0.3152159432874371e+02,
      0.1631930543123136e+02, -0.6058818238834054e+01]
_k = 0
for _i in range(1, 6):
    for _j in range(_i):
        _A[_i, _j], _C[_i, _j] = _a[_k], _c[_k]
        _k += 1
_M = np.array([_a[6], _a[7], _a[8], _a[9], 1.0, 1.0])


@dataclass(frozen=True, eq=False)
class Tableau:
    """A Rosenbrock method in the transformed form: gamma, A and C (s, s) strictly lower,
    b (s,) solution weights, c (s,) stage times, d (s,) time-derivative weights; the error
    estimate is the last stage; `order`: exponent of the step-size control (1 / order)."""
    gamma: float
    A: np.ndarray
    C: np.ndarray
    b: np.ndarray
    c: np.ndarray
    d: np.ndarray
    order: float


def _rodas5p() -> Tableau:
    from . import rosenbrock as r  # Rodas5P's coefficients (Steinebach 2023)
    return Tableau(r.GAMMA, r.A_MATRIX, r.C_MATRIX, r.B_WEIGHTS, r.C_NODES, r.D_COEFFS, 5.0)


TABLEAUS = {"rodas4": lambda: Tableau(_GAMMA, _A, _C, _M, _ALPHA, _GAMMAS, 4.0), "rodas5p": _rodas5p}
_SAFETY, _FAC_MIN, _FAC_MAX = 0.9, 0.2, 6.0


def _stages(f, t, y, h, args, autonomous: bool, tab: "Tableau", linearize: bool):
    """The primal stages: (y_new, ks (s, n), Ginv, linear maps of f at the stages or None)."""
    n = y.shape[0]
    s = len(tab.b)
    J = jax.jacfwd(lambda y_: f(t, y_, args))(y)
    Ginv = jnp.linalg.inv(jnp.eye(n, dtype=y.dtype) / (h * tab.gamma) - J)  # n <= ~30: a
    # product per stage beats two triangular solves
    lins = []
    if not autonomous:
        if linearize:
            dfdt, lin_t = jax.linearize(lambda y_, a_: jax.jvp(lambda t_: f(t_, y_, a_), (t,),
                                                                (jnp.ones_like(t),))[1], y, args)
            lins.append(lin_t)
        else:
            dfdt = jax.jvp(lambda t_: f(t_, y, args), (t,), (jnp.ones_like(t),))[1]
    ks = []
    for i in range(s):
        yi = y + sum(float(tab.A[i, j]) * ks[j] for j in range(i) if tab.A[i, j] != 0.0)
        ti = t + float(tab.c[i]) * h
        if linearize:
            fi, lin = jax.linearize(lambda y_, a_: f(ti, y_, a_), yi, args)
            lins.append(lin)
        else:
            fi = f(ti, yi, args)
        r = fi
        if i > 0:
            r = r + sum(float(tab.C[i, j]) * ks[j] for j in range(i) if tab.C[i, j] != 0.0) / h
        if not autonomous and tab.d[i] != 0.0:
            r = r + float(tab.d[i]) * h * dfdt
        ks.append(Ginv @ r)
    y_new = y + sum(float(tab.b[i]) * ks[i] for i in range(s) if tab.b[i] != 0.0)
    return y_new, ks, Ginv, lins


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2))
def _step(f, autonomous, tab, t, h, y, args):
    y_new, ks, _, _ = _stages(f, t, y, h, args, autonomous, tab, False)
    return y_new, ks[-1]


@_step.defjvp
def _step_jvp(f, autonomous, tab, primals, tangents):
    """Tangent of the step in (y, args), exact for the discrete map: with G K_i = r_i,
    dK_i = G^-1 (dr_i + dJ K_i), dJ K_i = d/d(y, args) [J(y, args) K_i] for all stages in one
    vectorised second derivative; h and t are constants of the step (their tangents, which
    the step-size control stops, are ignored)."""
    t, h, y, args = primals
    _, _, dy, dargs = tangents
    y_new, ks, Ginv, lins = _stages(f, t, y, h, args, autonomous, tab, True)
    K = jnp.stack(ks)

    def jk(y_, a_):
        return jax.vmap(lambda k: jax.jvp(lambda z: f(t, z, a_), (y_,), (k,))[1])(K)

    D = jax.jvp(jk, (y, args), (dy, dargs))[1]  # (s, n)
    if not autonomous:
        d_dfdt = lins.pop(0)(dy, dargs)
    dks = []
    for i in range(len(tab.b)):
        dyi = dy + sum(float(tab.A[i, j]) * dks[j] for j in range(i) if tab.A[i, j] != 0.0)
        dr = lins[i](dyi, dargs) + D[i]
        if i > 0:
            dr = dr + sum(float(tab.C[i, j]) * dks[j] for j in range(i) if tab.C[i, j] != 0.0) / h
        if not autonomous and tab.d[i] != 0.0:
            dr = dr + float(tab.d[i]) * h * d_dfdt
        dks.append(Ginv @ dr)
    dy_new = dy + sum(float(tab.b[i]) * dks[i] for i in range(len(tab.b)) if tab.b[i] != 0.0)
    return (y_new, ks[-1]), (dy_new, dks[-1])


def rodas_step(f, t, y, h, args, autonomous: bool, tab: "Tableau"):
    """One Rosenbrock step of y' = f(t, y, args): (y_new (n,), error estimate (n,)).

    Differentiable in (y, args) by a custom JVP (`_step_jvp`) that does not differentiate
    the matrix inverse; t and h are constants of the step (the step-size control stops their
    derivatives), so the derivative is that of the discrete map with the chosen steps."""
    return _step(f, autonomous, tab, jax.lax.stop_gradient(t), jax.lax.stop_gradient(h), y, args)


def _initial_h(f, t0, y0, args, span, rtol, atol):
    """Hairer's first guess: 0.01 ||y0|| / ||f(y0)|| (scaled norms), at most the span."""
    scale = atol + rtol * jnp.abs(y0)
    d0 = jnp.sqrt(jnp.mean((y0 / scale) ** 2))
    d1 = jnp.sqrt(jnp.mean((f(t0, y0, args) / scale) ** 2))
    h = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / jnp.maximum(d1, 1e-300))
    return jnp.minimum(h, span)


def solve(f, y0, t0, t1, ts, args, tol, max_steps: int, kind: str = "lax", autonomous: bool = False,
          steady=None, h0=None, method: str = "rodas4"):
    """Integrate y' = f(t, y, args) from t0 to t1, saving at ts (clipped to [t0, t1]).

    f(t, y, args) -> (n,); ts (n_t,) sorted; tol = (rtol, atol); kind "lax" (forward-mode
    differentiable) or "checkpointed" (also reverse mode); steady: None or a function
    (t, y) -> bool that ends the solve early (t1 may then be inf).
    Returns (ys (n_t, n), y_end (n,), t_end, ok, n_steps).
    """
    rtol, atol = tol[0], tol[1]
    tab = TABLEAUS[method]()
    # times are constants of the solve (see check_breakpoints)
    t0, t1, ts = (jax.lax.stop_gradient(jnp.asarray(v)) for v in (t0, t1, ts))
    ts = jnp.clip(ts, t0, t1)
    ys0 = jnp.where((ts <= t0)[:, None], y0, jnp.zeros((ts.shape[0], y0.shape[0]), y0.dtype))
    span = jnp.where(jnp.isfinite(t1), t1 - t0, 1e6)
    h_init = jax.lax.stop_gradient(_initial_h(f, t0, y0, args, span, rtol, atol) if h0 is None else h0)
    t0 = jnp.asarray(t0, dtype=y0.dtype)

    def done(t, y):
        end = t >= t1
        if steady is not None:
            end = end | steady(t, y)
        return end

    def cond(state):
        t, y, h, ys, n, finished, failed = state
        return ~finished & ~failed

    def body(state):
        t, y, h, ys, n, finished, failed = state
        # the next save time after t (or t1): the step lands on it exactly
        nxt = jnp.min(jnp.where(ts > t, ts, t1))
        h_use = jnp.minimum(h, nxt - t)
        clipped = h >= nxt - t
        y_new, err = rodas_step(f, t, y, h_use, args, autonomous, tab)
        scale = atol + rtol * jnp.maximum(jnp.abs(y), jnp.abs(y_new))
        e = jax.lax.stop_gradient(jnp.sqrt(jnp.mean((err / scale) ** 2)))
        ok = (e <= 1.0) & jnp.all(jnp.isfinite(y_new))
        e_safe = jnp.where(jnp.isfinite(e), e, 1e10)
        fac = jnp.clip(_SAFETY * jnp.maximum(e_safe, 1e-10) ** (-1.0 / tab.order), _FAC_MIN, _FAC_MAX)
        fac = jnp.where(ok, fac, jnp.minimum(fac, 1.0))
        h_next = h_use * fac
        h_next = jnp.where(ok & clipped, jnp.maximum(h_next, h), h_next)
        t_new = jnp.where(ok, jnp.where(clipped, nxt, t + h_use), t)
        y_out = jnp.where(ok, y_new, y)
        ys = jnp.where(ok & (ts == t_new)[:, None], y_out, ys)
        fin = done(t_new, y_out) & ok
        return (t_new, y_out, jax.lax.stop_gradient(h_next), ys, n + 1, fin, (n + 1 >= max_steps) & ~fin)

    init = (t0, y0, h_init, ys0, jnp.asarray(0), t0 >= t1, jnp.asarray(False))
    if kind == "lax":
        t, y, h, ys, n, finished, failed = jax.lax.while_loop(cond, body, init)
    else:
        t, y, h, ys, n, finished, failed = eqxi.while_loop(cond, body, init, max_steps=max_steps,
                                                           kind="checkpointed")
    if steady is None:
        ys = jnp.where((ts >= t1)[:, None], y, ys)
    return ys, y, t, finished, n


def _result(ok, success):
    import diffrax
    return diffrax.RESULTS.where(ok, success, diffrax.RESULTS.max_steps_reached)


def segment_fn(model, method: str, max_steps: int, solver: str = "rodas4"):
    """The PEtab pipeline's segment solve with Rodas4: (pv, y0, a, b, tc, ts, tol) ->
    (ys at clip(ts, a, b) (n_t, n), y(b), diffrax result, steps)."""
    import diffrax
    kind = "checkpointed" if method == "checkpoint" else "lax"

    def f(t, y, args):
        pv, tc = args
        return model.rhs(t, y, pv, tc)

    def segment(pv, y0, a, b, tc, ts, tol):
        ys, y, t, ok, n = solve(f, y0, a, b, ts, (pv, tc), tol, max_steps, kind=kind, method=solver)
        return ys, y, _result(ok, diffrax.RESULTS.successful), n

    return segment


def steady_fn(model, method: str, max_steps: int, solver: str = "rodas4"):
    """(pv, y0, tol, t0) -> (steady state, diffrax result (event_occurred when reached),
    steps): simulate until max_i |f_i| / (atol + rtol |y_i|) < 1, then
    `steady_state.newton_polish`."""
    import diffrax
    kind = "checkpointed" if method == "checkpoint" else "lax"

    def f(t, y, args):
        return model.rhs(t, y, args, t)

    def steady(pv, y0, tol, t0=0.0):
        def reached(t, y):
            return jnp.max(jnp.abs(model.rhs(t, y, pv, t)) / (tol[1] + tol[0] * jnp.abs(y))) < 1.0
        t0 = jnp.asarray(t0, dtype=y0.dtype)
        _, y, t, ok, n = solve(f, y0, t0, jnp.inf, jnp.reshape(t0, (1,)), pv, tol, max_steps, kind=kind,
                               steady=reached, method=solver)
        y = newton_polish(lambda u: model.rhs(t, u, pv, t), y)  # derivatives by the IFT
        return y, _result(ok, diffrax.RESULTS.event_occurred), n

    return steady


def calibration():
    """Cost constants of the gradient modes with this loop, in simulations, measured on the
    five PEtab problems (Rodas5P, rtol = atol = 1e-8, one process each, load ~7-10): a forward
    tangent cost 0.36 (Boehm), 0.24 (Elowitz), 0.09 (Brannmark), 0.05 (Fujita), 0.014 (Schwen)
    of a simulation, the checkpointed reverse sweep 7.3, 16, 2.4, 3.8, 7.1 simulations; the
    auto gradient then picks forward mode up to ~30 inputs (slower than the adjoint only on
    Brannmark, by ~1.3x)."""
    from ..ad.cost import Calibration
    return Calibration(tangent=0.2, record=7.0, cotangent=1.0,
                       source="PEtab problems with the Rodas5P loop (sensitivity/importers/petab_rodas.py)")


def check_breakpoints(model, groups, est_index, theta_names):
    """The loop treats segment and save times as constants: refuse a problem whose piecewise
    switching times (`model.breakpoint_exprs`) depend on an estimated parameter.
    groups: the PetabProblem's experiment groups (their `sim` / `pre` p_ref arrays)."""
    from ..core.errors import InputError
    est = set(int(i) for i in est_index)
    for expr in model.breakpoint_exprs:
        for sym in getattr(expr, "free_symbols", ()):
            if sym.name not in model.parameters:
                continue
            k = model.parameters.index(sym.name)
            for g in groups:
                for arrays in (g["sim"], g["pre"]):
                    if arrays is None:
                        continue
                    refs = set(int(r) for r in np.asarray(arrays[0])[:, k] if r >= 0)
                    if refs & est:
                        name = theta_names[min(refs & est)]
                        raise InputError(
                            f"petab: the switching time '{expr}' of a piecewise input depends on the "
                            f"estimated parameter '{name}'; the rodas solvers treat switching times as "
                            "constants: use solver='rodas5p' (it then runs in diffrax) or 'kvaerno5'")
