"""ESDIRK methods (Kvaerno3/4/5) as our own diffrax solver, with the stage equations solved
and differentiated by our linear algebra (dense LU or the banded block LU of `banded`).

diffrax's Runge-Kutta solvers solve the stage equations with `optimistix.root_find` and
differentiate them with its default `ImplicitAdjoint`, whose linear solver (dense LU) no
public argument reaches. This class runs the same method (diffrax's public tableau of the
class it is built from: `diffrax.Kvaerno5.tableau` etc.) with every linear solve in one
place:

    stage i (i >= 1, explicit first stage, FSAL):
        F_i(f) = f - vf(t0 + c_i h, Y_i^0 + gamma h f) = 0,  Y_i^0 = y0 + h sum_{j<i} a_ij f_j
        predictor f = sum_{j<i} alpha_ij f_j (diffrax's `a_predictor`)
    y1 = y0 + h b . f,  error estimate h b_err . f,  dense output: diffrax's cubic Hermite
    (`ThirdOrderHermitePolynomialInterpolation.from_k`) from (y0, y1, h f_0, h f_last).

Newton (chord) iteration, as diffrax's f-space stage solve with `chord.Chord`'s test:
one matrix M = I - gamma h J per step, J = d vf / d y at (t0, y0) (diffrax takes it at
the second stage's predictor; either steers the iteration only) by `jax.jacfwd`, or c
colour JVPs into (3, N, m, m) blocks, factorised once (LAPACK LU, or `banded.factor`
with explicit block inverses) and used by every stage and iteration; converged when
|d_k| rate / (1 - rate) < kappa (d the correction scaled by atol + rtol |f|, the step-size
controller's norm), diverged when rate >= 1, failed after `root_find_max_steps`. A failed
stage gives an infinite error estimate (the controller rejects the step) and keeps finite
iterates (a NaN in a rejected step would still reach the reverse pass as 0 * NaN).

Derivatives: each stage is a `jax.lax.custom_root`: the primal iteration is not
differentiated; tangents come from the implicit function theorem at the root,
df = -(dF/df)^-1 dF/dparams, with dF/df = I - gamma h J(Y_i) at the stage's root. That
solve is a `jax.lax.custom_linear_solve` whose factors are computed from the linearised
stage function (n JVPs and a dense LU, or c JVPs and a block LU: no n x n array on the
banded path), and whose transpose (reverse mode) reuses them. So forward tangents
(`ForwardMode`, `jacfwd`), adjoint sweeps (`RecursiveCheckpointAdjoint`) and
`DirectAdjoint` differentiate the stage solutions exactly, as diffrax does, with the
linear algebra chosen for the problem, and without any change to diffrax's modules. Batched
tangents (a forward Jacobian's columns) are solved as the columns of one right-hand side.

Limits: 1-D state vectors; `diffrax.ODETerm`s (wrapped by diffrax); Kvaerno3/4/5 (ESDIRK
with an explicit first stage and one diagonal value). `esdirk_class(diffrax.Kvaerno5)` is
the class; `solvers.linear.solver_for` builds it for problems on the banded path and for
`jacobian_reuse` (`max_age`: J and its factors kept in the solver state, `newton.reuse`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np
import optimistix as optx

from . import banded
from .compat import chord_small
from .newton import reuse
from .newton.chord import Chord


# ----------------------------------------------------------------------------- linear algebra
class _Op:
    """A linear map with `mv`, for `banded._blocks`."""

    def __init__(self, mv):
        self.mv = mv


class DenseNewton:
    """Dense M = I - gh J: J (n, n) by n JVPs (`jax.jacfwd`), LAPACK LU."""

    key = ("dense",)

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, DenseNewton)

    def jacobian(self, f_y, y):
        return jax.jacfwd(f_y)(y)

    def factor(self, jac, gh):
        return jsl.lu_factor(jnp.eye(jac.shape[0], dtype=jac.dtype) - gh * jac)

    def linear_factors(self, g, y):
        """LU of the matrix of the linear map g (n JVPs)."""
        cols = jax.vmap(g)(jnp.eye(y.shape[0], dtype=y.dtype))  # row j = g(e_j)
        return jsl.lu_factor(cols.T)

    def solve(self, factors, r):
        return jsl.lu_solve(factors, r)

    def solve_t(self, factors, r):
        return jsl.lu_solve(factors, r, trans=1)


class BandedNewton:
    """Block-tridiagonal M in the reordering of `layout`: J as (3, N, m, m) blocks from c
    colour JVPs, `banded.factor` (explicit block inverses for the chord matrix, used by
    ~10-20 solves per step; LU blocks for the derivative matrices, used once per tangent
    direction)."""

    def __init__(self, layout: banded.Layout):
        self.layout = layout
        self.key = ("banded",) + layout.key

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, BandedNewton) and other.key == self.key

    def jacobian(self, f_y, y):
        lay = self.layout
        seeds = jnp.asarray(lay.seeds, dtype=y.dtype)
        compressed = jax.vmap(lambda v: jax.jvp(f_y, (y,), (v,))[1])(seeds)  # (c, n) = (J S)^T
        flat = jnp.concatenate([compressed.reshape(-1), jnp.zeros((1,), y.dtype)])
        return flat[jnp.asarray(lay.gather)]  # padded rows are zero

    def factor(self, jac, gh):
        blocks = ((-gh) * jac).at[1].add(jnp.eye(self.layout.m, dtype=jac.dtype))
        return banded.factor(blocks, inverse=True)

    def linear_factors(self, g, y):
        del y
        return banded.factor(banded._blocks(self.layout, _Op(g)))

    def solve(self, factors, r):
        return banded.solve_in_order(self.layout, factors, r, banded.solve_columns)

    def solve_t(self, factors, r):
        return banded.solve_in_order(self.layout, factors, r, banded.solve_transpose_columns)


# ----------------------------------------------------------------------------- the solver
class _Tab:
    """diffrax's ButcherTableau of an ESDIRK class as square numpy arrays (s stages)."""

    def __init__(self, cls: type):
        tab = cls.tableau
        diag = np.asarray(tab.a_diagonal, dtype=float)
        if diag[0] != 0 or len(set(diag[1:].tolist())) != 1 or not tab.fsal or tab.a_predictor is None:
            raise TypeError(f"{cls.__name__} is not an FSAL ESDIRK method with one diagonal value")
        s = tab.num_stages
        A = np.zeros((s, s))
        P = np.zeros((s, s))
        for i, (a, p) in enumerate(zip(tab.a_lower, tab.a_predictor)):
            A[i + 1, : i + 1] = a
            P[i + 1, : i + 1] = p
        c = np.zeros(s)
        c[1:] = tab.c
        self.s, self.A, self.P, self.c = s, A, P, c
        self.gamma = float(diag[1])
        self.b, self.b_err = np.asarray(tab.b_sol, float), np.asarray(tab.b_error, float)


class ESDIRK(diffrax.AbstractAdaptiveSolver, diffrax.AbstractImplicitSolver):
    """An ESDIRK method (the diffrax class `method`'s tableau, order and interpolation) whose
    stage solves and their derivatives use `linear` (`DenseNewton()`, the default, or
    `BandedNewton(layout)`); see the module docstring. Build it with
    `esdirk_class(diffrax.Kvaerno5)(linear=...)`.

    root_finder: a `chord.Chord` holding the Newton tolerances (by default the step-size
    controller's: `diffrax.with_stepsize_controller_tols`), its norm and kappa; only its
    fields are read. root_find_max_steps: chord iterations per stage before failing.
    max_age: None (a new Newton matrix every step), or keep J and its factors across steps
    in the solver state (`newton.reuse`: re-evaluate J after max_age accepted steps,
    refactorise when gamma h changed by more than dgmax, redo a step whose Newton failed
    on a stale J)."""

    linear: Any = eqx.field(static=True, default=None)
    root_finder: optx.AbstractRootFinder = eqx.field(
        default_factory=lambda: diffrax.with_stepsize_controller_tols(Chord)())
    root_find_max_steps: int = eqx.field(static=True, default=10)
    max_age: int | None = eqx.field(static=True, default=None)
    dgmax: float = eqx.field(static=True, default=reuse.DGMAX)

    method: ClassVar[type]
    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = diffrax.ThirdOrderHermitePolynomialInterpolation.from_k

    def order(self, terms):
        return self.method().order(terms)

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def _lin(self):
        return DenseNewton() if self.linear is None else self.linear

    def init(self, terms, t0, t1, y0, args):
        """(first step, f at the last stage (FSAL), `reuse.Cache` or None)."""
        if jnp.ndim(y0) != 1:
            raise ValueError(f"{type(self).__name__} solves 1-D states, got shape {jnp.shape(y0)}")
        if self.max_age is None:
            return jnp.array(True), jnp.zeros_like(y0), None
        lin = self._lin()
        zeros = lambda s: jnp.zeros(s.shape, s.dtype)  # noqa: E731
        jac = jax.tree_util.tree_map(zeros, jax.eval_shape(
            lambda y: lin.jacobian(lambda v: jnp.asarray(terms.vf(t0, v, args), y0.dtype), y), y0))
        factors = jax.tree_util.tree_map(zeros, jax.eval_shape(lambda j: lin.factor(j, 1.0), jac))
        zero = jnp.array(0, dtype=jnp.int32)
        cache = reuse.Cache(jac, jnp.array(jnp.nan, dtype=y0.dtype), factors,
                            jnp.array(self.max_age, dtype=jnp.int32), zero, zero, zero)
        return jnp.array(True), jnp.zeros_like(y0), cache

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        if jnp.ndim(y0) != 1:
            raise ValueError(f"{type(self).__name__} solves 1-D states, got shape {jnp.shape(y0)}")
        tab = _Tab(self.method)
        lin = self._lin()
        dtype = y0.dtype
        first, f_saved, cache = solver_state
        h = jnp.asarray(terms.contr(t0, t1), dtype)
        dt = t1 - t0
        gh = tab.gamma * h

        def vf(t, y):
            return jnp.asarray(terms.vf(t, y, args), dtype)

        f0 = jax.lax.cond(first | made_jump, lambda: vf(t0, y0), lambda: f_saved)

        # the chord matrix (J at (t0, y0) of this step or an earlier one): steers the
        # iteration only, no derivative
        sg = jax.lax.stop_gradient
        args_sg = jax.tree_util.tree_map(lambda a: sg(a) if eqx.is_array(a) else a, args)
        t0_sg, y_sg, gh_sg = sg(t0), sg(y0), sg(gh)

        def f_sg(y):
            return jnp.asarray(terms.vf(t0_sg, y, args_sg), dtype)

        if self.max_age is None:
            fs, ok = self._stages(tab, lin, vf, t0, t1, dt, y0, h, gh, f0,
                                  lin.factor(lin.jacobian(f_sg, y_sg), gh_sg), 1.0)
            new_cache = None
        else:
            fs, ok, new_cache = self._reuse(tab, lin, vf, t0, t1, dt, y0, h, gh, f0, f_sg, y_sg, gh_sg,
                                            sg(cache), made_jump)
        ks = h * fs
        y1 = y0 + jnp.asarray(tab.b, dtype) @ ks
        y_error = jnp.where(ok, jnp.asarray(tab.b_err, dtype) @ ks, jnp.inf)
        dense_info = dict(y0=y0, y1=y1, k=ks)
        result = diffrax.RESULTS.where(ok, diffrax.RESULTS.successful,
                                       diffrax.RESULTS.promote(optx.RESULTS.nonlinear_divergence))
        return y1, y_error, dense_info, (jnp.array(False), fs[-1], new_cache), result

    def _reuse(self, tab, lin, vf, t0, t1, dt, y0, h, gh, f0, f_sg, y_sg, gh_sg, cache, made_jump):
        """The stages with the cached J / factors (`newton.reuse`'s rules): (fs, ok, cache)."""
        need0 = (cache.age >= self.max_age) | jnp.asarray(made_jump)

        def attempt(force):
            need = need0 | force

            def fresh():
                return dataclasses.replace(cache, jac=lin.jacobian(f_sg, y_sg), age=jnp.zeros_like(cache.age),
                                           n_jac=cache.n_jac + 1)

            c = jax.lax.cond(need, fresh, lambda: cache)
            refactor = need | ~(jnp.abs(reuse.ratio(gh_sg, c.gh) - 1.0) <= self.dgmax)  # NaN: refactor

            def refac():
                return dataclasses.replace(c, factors=lin.factor(c.jac, gh_sg), gh=gh_sg, n_factor=c.n_factor + 1)

            c = jax.lax.cond(refactor, refac, lambda: c)
            fs, ok = self._stages(tab, lin, vf, t0, t1, dt, y0, h, gh, f0, c.factors,
                                  reuse.correction_scale(gh_sg, c.gh))
            return fs, ok, c, need

        fs1, ok1, c1, fresh1 = attempt(jnp.array(False))

        def second():
            fs2, ok2, c2, _ = attempt(jnp.array(True))
            return fs2, ok2, dataclasses.replace(c2, n_retry=c2.n_retry + 1)

        fs, ok, c = jax.lax.cond(~ok1 & ~fresh1, second, lambda: (fs1, ok1, c1))
        return fs, ok, jax.lax.stop_gradient(dataclasses.replace(c, age=c.age + 1))

    def _stages(self, tab, lin, vf, t0, t1, dt, y0, h, gh, f0, factors, scale):
        """fs (s, n): f at every stage, and whether every stage's Newton iteration
        converged; the chord iterations solve with `factors` times `scale`."""
        dtype = y0.dtype
        rf = self.root_finder
        max_steps = self.root_find_max_steps

        def chord(F, guess):
            def cond(st):
                return ~st[4] & (st[3] < max_steps)

            def body(st):
                x, size, _, k, _, _ = st
                diff = scale * lin.solve(factors, F(x))
                new = x - diff
                new_size = rf.norm(diff / (rf.atol + rf.rtol * jnp.abs(new)))
                finite = jnp.all(jnp.isfinite(new))
                new = jnp.where(finite, new, x)
                new_size = jnp.where(finite, new_size, jnp.inf)
                k = k + 1
                rate = new_size / size
                factor = new_size * rate / (1 - rate)
                small = chord_small(new_size)
                diverged = ~jnp.isfinite(rate) | (rate >= 1)
                converged = (factor >= 0) & (factor < rf.kappa)
                two = k >= 2
                done = two & (small | diverged | converged)
                fail = two & ~small & diverged & ~converged
                return new, new_size, size, k, done, fail

            init = (guess, jnp.array(jnp.inf, dtype), jnp.array(1.0, dtype), jnp.array(0),
                    jnp.array(False), jnp.array(False))
            x, _, _, _, done, fail = jax.lax.while_loop(cond, body, init)
            # a float flag: custom_root gives aux a zero tangent of its own dtype (bool fails)
            return x, jnp.where(done & ~fail, 1.0, 0.0).astype(dtype)

        def tangent_solve(g, b):
            tf = lin.linear_factors(g, b)
            return jax.lax.custom_linear_solve(g, b, lambda _, r: lin.solve(tf, r),
                                               lambda _, r: lin.solve_t(tf, r))

        A, P, c = (jnp.asarray(x, dtype) for x in (tab.A, tab.P, tab.c))
        fs = jnp.zeros((tab.s,) + y0.shape, dtype).at[0].set(f0)

        def stage(carry, i):
            fs, ok = carry
            y_part = y0 + h * (A[i] @ fs)
            ti = jnp.where(c[i] == 1, t1, t0 + c[i] * dt)

            def F(f):
                return f - vf(ti, y_part + gh * f)

            fi, ok_i = jax.lax.custom_root(F, P[i] @ fs, chord, tangent_solve, has_aux=True)
            return (fs.at[i].set(fi), ok & (ok_i > 0.5)), None

        (fs, ok), _ = jax.lax.scan(stage, (fs, jnp.array(True)), jnp.arange(1, tab.s))
        return fs, ok


_CLASSES: dict[type, type] = {}


def esdirk_class(method: type) -> type:
    """Our ESDIRK solver class running the diffrax ESDIRK class `method` (Kvaerno3/4/5)."""
    if method in _CLASSES:
        return _CLASSES[method]
    _Tab(method)  # check

    base = method

    class Esdirk(ESDIRK):
        method: ClassVar[type] = base

    Esdirk.__name__ = Esdirk.__qualname__ = f"Esdirk{method.__name__}"
    _CLASSES[method] = Esdirk
    return Esdirk
