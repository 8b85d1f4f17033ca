"""Adjoint (reverse) mode: run forward, then sweep cotangents backwards.

One backward sweep gives one row of the Jacobian (a VJP), so the gradient of a scalar
objective over any number of inputs costs a small multiple of one solve. Two variants:

- "checkpoint": diffrax's `RecursiveCheckpointAdjoint`, discretise-then-optimise; exact for
  the discrete solve; memory ~ number of checkpoints (about sqrt(max_steps) by default).
- "backsolve": diffrax's `BacksolveAdjoint`, the continuous adjoint solved backwards in
  time; O(1) memory, agrees with the exact derivative only to about the solver tolerance,
  and is unreliable on stiff problems.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..core.errors import InputError
from ..core.problem import Problem
from ..integrate.solve import output_function, run_checked, values_of, x0_of
from .objective import loss_function, scalar_objective
from .quadrature import with_quadrature

ROWS_PER_BATCH = 128  # cotangents vmapped together by the reverse Jacobian


def _method(problem: Problem, variant: str | None) -> str:
    variant = problem.adjoint if variant is None else variant
    if variant not in ("checkpoint", "backsolve"):
        raise InputError(f"adjoint variant '{variant}' is unknown; valid: checkpoint, backsolve")
    return variant


def value_and_gradient(f: Callable, x, values):
    """(value, aux, gradient (n_inputs,)) of a scalar map f(x, values) -> (value, aux),
    traced: one backward sweep (f's solve must be reverse-differentiable: "checkpoint")."""
    (value, aux), grad = jax.value_and_grad(f, has_aux=True)(x, values)
    return value, aux, grad


def vjp(problem: Problem, cotangent, variant: str | None = None) -> tuple[np.ndarray, dict]:
    """w^T J for a cotangent w of shape (n_times, n_of): one backward sweep, shape (n_inputs,)."""
    w = np.asarray(cotangent, dtype=np.float64)
    shape = (problem.times.size, len(problem.of))
    if w.shape != shape:
        raise InputError(f"cotangent has shape {w.shape}, expected {shape} (n_times, n_of)")
    rows, info = vjp_batch(problem, w[None], variant)
    return rows[0], info


def vjp_batch(problem: Problem, W, variant: str | None = None) -> tuple[np.ndarray, dict]:
    """w^T J for every w in W (k, n_times, n_of), over one shared forward solve: (k, n_inputs)."""
    method = _method(problem, variant)
    f = output_function(problem, method)

    def build():
        def g(x, values, W):
            out, pullback, aux = jax.vjp(lambda x_: f(x_, values), x, has_aux=True)
            return out, aux, jax.vmap(lambda w: pullback(w)[0])(W)
        return g

    (rows,), info = run_checked(problem, build, (x0_of(problem), values_of(problem),
                                                 jnp.asarray(W)), fn="vjp", method=method)
    return np.asarray(rows), info


def reverse_jacobian(f: Callable, x, values, n_times: int, n_of: int):
    """(outputs, aux, J (n_times, n_of, n_inputs)) of an output map f(x, values) ->
    (outputs, aux), traced: m = n_times * n_of backward sweeps over one forward solve,
    vmapped in batches of ROWS_PER_BATCH cotangents."""
    m = n_times * n_of
    out, pullback, aux = jax.vjp(lambda x_: f(x_, values), x, has_aux=True)

    def row(i):
        w = jnp.zeros(m, dtype=x.dtype).at[i].set(1.0).reshape(n_times, n_of)
        return pullback(w)[0]

    rows = jax.lax.map(row, jnp.arange(m), batch_size=min(m, ROWS_PER_BATCH))
    return out, aux, rows.reshape(n_times, n_of, x.size)


def jacobian(problem: Problem, variant: str | None = None) -> tuple[np.ndarray, dict]:
    """The full Jacobian by m = n_times * n_of backward sweeps (vmapped in batches over one
    shared forward solve), shape (n_times, n_of, n_inputs)."""
    method = _method(problem, variant)
    f = output_function(problem, method)
    n_times, n_of = problem.times.size, len(problem.of)

    def build():
        def g(x, values):
            return reverse_jacobian(f, x, values, n_times, n_of)
        return g

    (J,), info = run_checked(problem, build, (x0_of(problem), values_of(problem)),
                             fn="jacobian_reverse", method=method)
    return np.asarray(J), info


def gradient(problem: Problem, objective: Callable, variant: str | None = None
             ) -> tuple[float, np.ndarray, dict]:
    """Value and gradient of objective(outputs) by one backward sweep, shape (n_inputs,).
    An integrating objective (`ad.quadrature`) is a state of the solve."""
    problem, objective = with_quadrature(problem, objective)
    method = _method(problem, variant)
    f = output_function(problem, method)
    scalar_objective(objective)  # a non-callable objective fails here, before compiling

    def build():
        def g(x, values):
            loss = loss_function(f, objective, values)
            (value, (out, aux)), grad = jax.value_and_grad(loss, has_aux=True)(x)
            return out, aux, value, grad
        return g

    (value, grad), info = run_checked(problem, build, (x0_of(problem), values_of(problem)),
                                      fn="gradient_adjoint", method=method, objective=objective)
    return float(value), np.asarray(grad), info
