"""Keeping the Newton matrix's Jacobian and factorisation across the steps of an ESDIRK
solver (Kvaerno3/4/5): the BDF/CVODES strategy, inside the solver's state.

A Kvaerno step without reuse builds the Newton matrix M = I - gamma h J on every step
(J = d rhs / d y at the step's start: n JVPs and a dense LU, or c JVPs and a block LU on
the banded path of `solvers.linear`). With `Problem(jacobian_reuse=True)` the solver is
`esdirk.ESDIRK` with `max_age` set, whose state carries a `Cache`:

    jac     the Jacobian at the start of some earlier accepted step: dense (n, n), or the
            (3, N, m, m) blocks of the reordered banded pattern
    gh      the gamma h the factors were computed at
    factors the factors of I - gh J (dense `lu_factor`, or `banded.factor`)
    age     accepted steps since J was evaluated; counters of J evaluations,
            factorisations and recovered Newton failures

and its chord iterations solve with those factors, the correction scaled by CVODES'
2 / (1 + gamma h / gh) (`correction_scale`). Rules, per step attempt:

- J is re-evaluated at (t0, y0) after `MAX_AGE` accepted steps, after a jump, and on the
  first step;
- M is refactorised when J is new or |gamma h / gh - 1| > `DGMAX` (CVODES' 0.3), e.g.
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
steers the iteration); the stage solutions are differentiated by the implicit function
theorem at each root (`esdirk`: `custom_root`), whose solves factorise the Newton matrix
at that root (dense, or the block LU: no n x n array on the banded path), not the cached
factors: those belong to another matrix (older J, other gamma h), and reaching the exact
tangent from them would take preconditioned iterations (a JVP and a solve each), dearer
than a fresh banded factorisation.

Only `accepted` work is counted in the statistics (diffrax discards a rejected step's
solver state): `jacobian_evaluations`, `factorisations` and `newton_retries` along the
accepted steps.

On heat_1d and brusselator_1d, banded or dense, it is no faster than rebuilding
(benchmarks/stiff_scaling.py --reuse measures it), hence `Problem.jacobian_reuse` defaults
to False.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp

from ...core.solvers import ESDIRK
from ..registry import solver_name

MAX_AGE = 20  # accepted steps before the Jacobian is re-evaluated (CVODES: 50 for BDF)
DGMAX = 0.3  # refactorise when gamma h changed by more than this fraction (CVODES)


class Cache(eqx.Module):
    """What the solver state carries between steps (see the module docstring)."""

    jac: Any
    gh: jax.Array
    factors: Any
    age: jax.Array
    n_jac: jax.Array
    n_factor: jax.Array
    n_retry: jax.Array


def ratio(gh, gh_factored):
    """gh / gh_factored; 1 when both are 0 (diffrax's masked zero-length steps: a NaN there
    would reach the reverse pass as 0 * NaN), inf when only gh_factored is 0, NaN when
    nothing is factorised yet (gh_factored NaN)."""
    safe = jnp.where(gh_factored == 0, 1.0, gh_factored)
    return jnp.where(gh_factored == 0, jnp.where(gh == 0, 1.0, jnp.inf), gh / safe)


def correction_scale(gh, gh_factored):
    """CVODES' correction scale 2 / (1 + r), r = gh / gh_factored, for chord iterations
    with I - gh_factored J in place of I - gh J: the contraction on both stiff and non-stiff
    modes becomes |r - 1| / (r + 1) instead of |r - 1| (0.13 instead of 0.3 at r = 1.3)."""
    return 2.0 / (1.0 + ratio(gh, gh_factored))


COUNTERS = ("jacobian_evaluations", "factorisations", "newton_retries")


def stats(solver_state) -> dict:
    """Counters of a final solver state of a reuse solver (accepted steps' work), named
    as in `COUNTERS`."""
    if not (isinstance(solver_state, tuple) and solver_state and isinstance(solver_state[-1], Cache)):
        return {}
    c = solver_state[-1]
    return dict(zip(COUNTERS, (c.n_jac, c.n_factor, c.n_retry)))


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
