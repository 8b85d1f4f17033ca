"""Keeping the Newton matrix's Jacobian and factorisation across the steps of an ESDIRK
solver (Kvaerno3/4/5): the BDF/CVODES strategy, inside the solver's state.

diffrax's Runge-Kutta `step` rebuilds the Newton matrix M = I - gamma h J on every step
(J = d rhs / d y at the step's start: n JVPs and a dense LU, or c JVPs and a block LU
on the banded path of `stiff_linear`). `ReuseKvaerno5` (and the Kvaerno3/4 variants)
carry in the solver state

    J       the Jacobian at the start of some earlier accepted step: dense (n, n), or the
            (3, N, m, m) blocks of the reordered banded pattern
    gh      the gamma h the factors were computed at
    factors LU of I - gh J (dense `lu_factor`, or `banded.factor`)
    age     accepted steps since J was evaluated; counters of J evaluations,
            factorisations and recovered Newton failures

and run diffrax's own step with a root finder (`_CachedChord`, a `chord.Chord`) whose
`init` hands back those factors instead of linearising, the correction scaled by CVODES'
2 / (1 + gamma h / gh). Rules, per step attempt:

- J is re-evaluated at (t0, y0) after `max_age` accepted steps, after a jump, and on the
  first step;
- M is refactorised when J is new or |gamma h / gh - 1| > `dgmax` (CVODES' 0.3), e.g.
  after a rejected step shrank h (the state of a rejected step is discarded by diffrax,
  so the next attempt sees the old cache and a changed h);
- if the Newton iteration fails with a stale J (diverged, or not converged within the
  solver's `root_find_max_steps`), the step is recomputed at once with a fresh J and
  factorisation (a second attempt under `lax.cond`, run only when the first failed on a
  stale J), so a stale matrix never costs more than one extra attempt and a
  diverged Newton never gives an accepted step: a failure with a fresh J is reported to
  the step-size controller as usual (infinite error estimate: the step is rejected).

Chord iterations with a stale matrix converge to the same root (the residual is exact,
only the correction's matrix is approximate), so the solution equals the rebuild-every-step
path to the Newton tolerance. Derivatives: the cache is under `stop_gradient` (it only
steers the iteration); the stage solutions are differentiated by diffrax/optimistix's
implicit function theorem at the root (`ImplicitAdjoint`), so forward tangents and
reverse sweeps are exact for the discrete solve whatever matrix the primal iteration
used. Their linear solves use the Jacobian at the root (dense LU, or `BandedLU` through
`stiff_linear`'s hook: one colour-compressed Jacobian and block LU per stage solve).

Only `accepted` work is counted in the statistics (diffrax discards a rejected step's
solver state): `jacobian_evaluations`, `factorisations` and `newton_retries` along the
accepted steps.

On heat_1d and brusselator_1d, banded or dense, it is no faster than rebuilding
(benchmarks/stiff_scaling.py --reuse measures it), hence `Problem.jacobian_reuse` defaults
to False. The derivative solves use the structured (banded) solver, but with the Jacobian
at each stage root, not the cached factors: those belong to
another matrix (older J, other gamma h), and reaching the exact tangent from them would
take preconditioned iterations (a JVP and a solve each), dearer than a fresh banded
factorisation.
"""

from __future__ import annotations

from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import lineax as lx
import optimistix as optx
from lineax import RESULTS as LX_RESULTS

from ...core.solvers import ESDIRK
from .. import banded
from ..banded import BandedLU, Layout
from ..compat import Static, VeryChordState
from ..registry import solver_name
from .chord import Chord

MAX_AGE = 20  # accepted steps before the Jacobian is re-evaluated (CVODES: 50 for BDF)
DGMAX = 0.3  # refactorise when gamma h changed by more than this fraction (CVODES)


# ----------------------------------------------------------------------------- linear algebra
class DenseLU(lx.AbstractLinearSolver):
    """lineax solver whose state is a ready LU factorisation and a scale:
    ((lu, piv), transposed flag, s), solving s x = A^{-1} b (see `_scale`); `init`
    factorises the materialised operator with s = 1."""

    def init(self, operator, options: dict[str, Any]):
        del options
        return jsl.lu_factor(operator.as_matrix()), Static(False), jnp.array(1.0)

    def compute(self, state, vector, options: dict[str, Any]):
        del options
        (lu, piv), transposed, scale = state
        x = jsl.lu_solve((lu, piv), vector, trans=1 if transposed.value else 0)
        return scale * x, LX_RESULTS.successful, {}

    def transpose(self, state, options: dict[str, Any]):
        factors, transposed, scale = state
        return (factors, Static(not transposed.value), scale), {}

    def conj(self, state, options: dict[str, Any]):
        return state, {}

    def assume_full_rank(self) -> bool:
        return True


class ScaledBandedLU(BandedLU):
    """`BandedLU` whose state also carries a scale s of the solution (s = 1 from `init`,
    so the derivative solves through `stiff_linear`'s hook are plain banded solves)."""

    def init(self, operator, options: dict[str, Any]):
        factors, transposed = super().init(operator, options)
        return factors, transposed, jnp.array(1.0)

    def compute(self, state, vector, options: dict[str, Any]):
        factors, transposed, scale = state
        x, result, stats = super().compute((factors, transposed), vector, options)
        return jax.tree_util.tree_map(lambda v: scale * v, x), result, stats

    def transpose(self, state, options: dict[str, Any]):
        factors, transposed, scale = state
        return (factors, Static(not transposed.value), scale), {}


def _ratio(gh, gh_factored):
    """gh / gh_factored; 1 when both are 0 (diffrax's masked zero-length steps: a NaN there
    would reach the reverse pass as 0 * NaN), NaN when nothing is factorised yet."""
    safe = jnp.where(gh_factored == 0, 1.0, gh_factored)
    return jnp.where(gh_factored == 0, jnp.where(gh == 0, 1.0, jnp.inf), gh / safe)


def _scale(gh, gh_factored):
    """CVODES' correction scale 2 / (1 + r), r = gh / gh_factored, for chord iterations
    with I - gh_factored J in place of I - gh J: the contraction on both stiff and non-stiff
    modes becomes |r - 1| / (r + 1) instead of |r - 1| (0.13 instead of 0.3 at r = 1.3)."""
    return 2.0 / (1.0 + _ratio(gh, gh_factored))


class _Kind:
    key: tuple

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Kind) and other.key == self.key


class _Dense(_Kind):
    """J dense (n, n) from n JVPs (`jax.jacfwd`); M = I - gh J; LAPACK LU."""

    def __init__(self, n: int):
        self.n = n
        self.key = ("dense", n)

    def linear_solver(self):
        return DenseLU()

    def jacobian(self, f, y):
        return jax.jacfwd(f)(y)

    def factor(self, jac, gh):
        return jsl.lu_factor(jnp.eye(self.n, dtype=jac.dtype) - gh * jac)

    def identity(self, dtype):
        return jnp.eye(self.n, dtype=dtype), jnp.arange(self.n, dtype=jnp.int32)


class _Banded(_Kind):
    """J as the (3, N, m, m) blocks of its reordered pattern, from c JVPs (colour seeds);
    M = I - gh J block tridiagonal, `banded.factor`."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self.n = layout.n
        self.key = ("banded",) + layout.key

    def linear_solver(self):
        return ScaledBandedLU(self.layout)

    def jacobian(self, f, y):
        lay = self.layout
        seeds = jnp.asarray(lay.seeds, dtype=y.dtype)
        compressed = jax.vmap(lambda s: jax.jvp(f, (y,), (s,))[1])(seeds)  # (c, n) = (J S)^T
        flat = jnp.concatenate([compressed.reshape(-1), jnp.zeros((1,), y.dtype)])
        return flat[jnp.asarray(lay.gather)]  # padded rows are zero

    def factor(self, jac, gh):
        m = self.layout.m
        blocks = (-gh) * jac
        blocks = blocks.at[1].add(jnp.eye(m, dtype=jac.dtype))
        return banded.factor(blocks)

    def identity(self, dtype):
        """`banded.factor` of the identity, so its pytree is whatever `factor` returns;
        computed while tracing (constants in, constants out), not in the program."""
        lay = self.layout
        with jax.ensure_compile_time_eval():
            eye = jnp.broadcast_to(jnp.eye(lay.m, dtype=dtype), (lay.N, lay.m, lay.m))
            zero = jnp.zeros((lay.N, lay.m, lay.m), dtype)
            return banded.factor(jnp.stack([zero, eye, zero]))


class Cache(eqx.Module):
    """What the solver state carries between steps (see the module docstring)."""

    jac: Any
    gh: jax.Array
    factors: Any
    age: jax.Array
    n_jac: jax.Array
    n_factor: jax.Array
    n_retry: jax.Array


# ----------------------------------------------------------------------------- root finder
def _identity(x):
    return x


class _CachedChord(Chord):
    """diffrax's `VeryChord` whose `init` returns the handed-in factorisation instead of
    linearising `fn` (the operator it passes on is a placeholder: the linear solver's
    state alone defines the solve). `cached` = (factors, identity factors, scale); the
    identity serves the explicit first stage (diffrax's relation with diagonal 0, solved
    on a first step or after a jump), whose Newton matrix is I."""

    cached: Any = None

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        if "init_state" in options:
            return options["init_state"]
        struct = jax.eval_shape(lambda: y)
        # a placeholder (lineax short-cuts an IdentityLinearOperator, so not that one)
        operator = lx.FunctionLinearOperator(_identity, struct)
        dtype = jnp.result_type(*jax.tree_util.tree_leaves(y))
        factors, ident, scale = jax.lax.stop_gradient(self.cached)
        explicit = args[1] == 0  # diffrax's stage relation args: (stage, diagonal, ...)
        factors = jax.tree_util.tree_map(lambda a, b: jnp.where(explicit, a, b), ident, factors)
        scale = jnp.where(explicit, 1.0, scale)
        return VeryChordState(
            linear_state=(operator, (factors, Static(False), scale)),
            diff=jax.tree_util.tree_map(lambda x: jnp.full(x.shape, jnp.inf, x.dtype), y),
            diffsize=jnp.array(jnp.inf, dtype=dtype),
            diffsize_prev=jnp.array(1.0, dtype=dtype),
            result=optx.RESULTS.successful,
            step=jnp.array(0),
        )


# ----------------------------------------------------------------------------- solver
def _gamma(cls) -> float:
    diag = cls.tableau.a_diagonal
    if diag[0] != 0 or len(set(diag[1:].tolist())) != 1:
        raise TypeError(f"{cls.__name__} is not an ESDIRK method with one diagonal value")
    return float(diag[1])


class _ReuseMixin:
    """Mixed into a diffrax ESDIRK solver class: see the module docstring."""

    def _linear(self):
        return self.linear  # a _Dense or _Banded (static field of the subclass)

    def _vf(self, terms, t, args):
        return lambda y: jnp.asarray(terms.vf(t, y, args), dtype=y.dtype)

    def init(self, terms, t0, t1, y0, args):
        base = super().init(terms, t0, t1, y0, args)
        lin = self.linear
        if not (isinstance(y0, jax.Array) or hasattr(y0, "shape")) or jnp.ndim(y0) != 1:
            raise TypeError("the Jacobian-reuse solvers take a 1-D state vector")
        jac_struct = jax.eval_shape(lambda y: lin.jacobian(self._vf(terms, t0, args), y), y0)
        jac = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), jac_struct)
        fac_struct = jax.eval_shape(lambda j: lin.factor(j, 1.0), jac)
        factors = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), fac_struct)
        zero = jnp.array(0, dtype=jnp.int32)
        cache = Cache(jac, jnp.array(jnp.nan, dtype=y0.dtype), factors,
                      jnp.array(self.max_age, dtype=jnp.int32), zero, zero, zero)
        return base, cache

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        base_state, cache = solver_state
        cache = jax.lax.stop_gradient(cache)
        lin = self.linear
        gamma = _gamma(type(self))
        gh = jax.lax.stop_gradient(jnp.asarray(gamma * (t1 - t0), dtype=cache.gh.dtype))
        y_ref = jax.lax.stop_gradient(y0)
        t_ref = jax.lax.stop_gradient(t0)
        args_ref = jax.lax.stop_gradient(args)
        need_jac0 = (cache.age >= self.max_age) | jnp.asarray(made_jump)
        rf = self.root_finder

        def attempt(force_jac):
            need_jac = need_jac0 | force_jac

            def fresh():
                jac = lin.jacobian(self._vf(terms, t_ref, args_ref), y_ref)
                return eqx.tree_at(lambda c: (c.jac, c.age, c.n_jac), cache,
                                   (jac, jnp.zeros_like(cache.age), cache.n_jac + 1))

            c = jax.lax.cond(need_jac, fresh, lambda: cache)
            refactor = need_jac | ~(jnp.abs(_ratio(gh, c.gh) - 1.0) <= self.dgmax)  # NaN: refactor

            def refac():
                return eqx.tree_at(lambda c_: (c_.factors, c_.gh, c_.n_factor), c,
                                   (lin.factor(c.jac, gh), gh, c.n_factor + 1))

            c = jax.lax.cond(refactor, refac, lambda: c)
            finder = _CachedChord(rtol=rf.rtol, atol=rf.atol, norm=rf.norm, kappa=rf.kappa,
                                  linear_solver=lin.linear_solver(),
                                  cached=(c.factors, lin.identity(c.gh.dtype), _scale(gh, c.gh)))
            solver = eqx.tree_at(lambda s: s.root_finder, self, finder)
            out = super(_ReuseMixin, solver).step(terms, t0, t1, y0, args, base_state, made_jump)
            return out, c, need_jac

        # attempt 1 with the cache; attempt 2 (only if 1's Newton failed on a stale J) fresh
        out1, c1, fresh1 = attempt(jnp.array(False))
        retry = (out1[4] != diffrax.RESULTS.successful) & ~fresh1

        def second():
            out2, c2, _ = attempt(jnp.array(True))
            return out2, eqx.tree_at(lambda c_: c_.n_retry, c2, c2.n_retry + 1)

        out, c = _cond_retry(retry, second, (out1, c1))
        y1, y_error, dense_info, new_base, result = out
        c = eqx.tree_at(lambda c_: c_.age, c, c.age + 1)
        return y1, y_error, dense_info, (new_base, jax.lax.stop_gradient(c)), result


def _cond_retry(pred, branch, value):
    """lax.cond(pred, branch, lambda: value) over a pytree with static parts (diffrax's
    RESULTS and dense-info leaves): only arrays go through the cond."""
    dynamic, static = eqx.partition(value, eqx.is_array)

    def take():
        new_dynamic, _ = eqx.partition(branch(), eqx.is_array)
        return new_dynamic

    out = jax.lax.cond(pred, take, lambda: dynamic)
    return eqx.combine(out, static)


_CLASSES: dict[type, type] = {}


def reuse_class(base: type) -> type:
    """The Jacobian-reuse subclass of a diffrax ESDIRK solver class (Kvaerno3/4/5)."""
    if base in _CLASSES:
        return _CLASSES[base]
    _gamma(base)

    class Reuse(_ReuseMixin, base):
        linear: Any = eqx.field(static=True, default=None)
        max_age: int = eqx.field(static=True, default=MAX_AGE)
        dgmax: float = eqx.field(static=True, default=DGMAX)

    Reuse.__name__ = Reuse.__qualname__ = f"Reuse{base.__name__}"
    _CLASSES[base] = Reuse
    return Reuse


ReuseKvaerno5 = reuse_class(diffrax.Kvaerno5)


def make(base: type, n: int, layout: Layout | None = None, root_finder=None, **kw):
    """An instance of `reuse_class(base)` for n states: banded linear algebra on `layout`
    when given, else dense. `kw`: max_age, dgmax, root_find_max_steps."""
    lin = _Banded(layout) if layout is not None else _Dense(n)
    extra = {} if root_finder is None else {"root_finder": root_finder}
    return reuse_class(base)(linear=lin, **extra, **kw)


COUNTERS = ("jacobian_evaluations", "factorisations", "newton_retries")


def stats(solver_state) -> dict:
    """Counters of a final solver state of a reuse solver (accepted steps' work), named
    as in `COUNTERS`."""
    if not (isinstance(solver_state, tuple) and len(solver_state) == 2
            and isinstance(solver_state[1], Cache)):
        return {}
    c = solver_state[1]
    return dict(zip(COUNTERS, (c.n_jac, c.n_factor, c.n_retry)))


# ----------------------------------------------------------------------------- wiring
def enabled(problem) -> bool:
    """Whether `problem` runs the Jacobian-reuse solver: asked for (`jacobian_reuse=True`)
    and its solver is an ESDIRK method with one diagonal value (Kvaerno3/4/5, the table's
    `jacobian_reuse` entries)."""
    return bool(getattr(problem, "jacobian_reuse", False)) and solver_name(problem) in ESDIRK


def notes(problem) -> tuple[str, ...]:
    """A line for `Plan.explain()` when the reuse solver runs."""
    if not enabled(problem):
        return ()
    return (f"Jacobian reuse: on (kept up to {MAX_AGE} accepted steps, refactorised when gamma h "
            f"changes by more than {DGMAX:.0%}, refreshed at once when Newton fails on it).",)
