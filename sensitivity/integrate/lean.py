"""The lean Tsit5 solve of a Problem, for vmapped ensembles: `solvers.lean`'s loop (diffrax's
Tsit5 with its PIDController, step for step, without its general machinery) wired to the
problem's parameters, initial values and outputs.

Forward (the simulate task of `sens.ensemble`) and the discrete adjoint of a batch (its
gradient task), for a problem whose solver resolves to Tsit5 and that has no doses,
breakpoints or events (`applies`). Failures are reported with diffrax's result codes
(max_steps_reached).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from ..core import schedule
from ..core.problem import Problem
from ..solvers import lean
from ..solvers.registry import solver_name
from .solve import assemble_function, observe_function

ADJOINT_STEPS = 256  # accepted steps the lean adjoint stores at first, at least (grown on demand)
ADJOINT_BYTES = 2**23  # ... or as many as this many bytes of stored states per batch hold


def applies(problem: Problem) -> bool:
    """Whether the lean solve reproduces `solve.solve_function(problem)`: the solver
    resolves to Tsit5, and no doses, parameter breakpoints or state events cut the solve."""
    if solver_name(problem) != "tsit5":
        return False
    if schedule.has_pieces(problem) or getattr(problem, "fixed_breakpoints", ()):
        return False
    return True


def solve_function(problem: Problem, max_steps: int | None = None) -> Callable:
    """(params, y0, values) -> (ys (n_times, n_states), aux): the Tsit5 solve of
    `solve.solve_function` (same steps, same saved values to rounding), as one while loop.
    aux: result (a diffrax RESULTS item), num_steps, num_accepted_steps, num_rejected_steps."""
    solve = lean.tsit5_solve(problem.model.rhs, problem.max_steps if max_steps is None else max_steps)

    def f(params, y0, values):
        return solve(params, y0, values["times"], values["t0"], values["rtol"], values["atol"])

    return f


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
    the B input vectors at once, reverse-differentiable in X by the discrete adjoint of the
    steps taken (`lean.tsit5_batched_solve`). stats: result code, num_steps,
    num_accepted_steps, num_rejected_steps (floats; no derivative). `capacity`: the accepted
    steps stored per sample; a sample that takes more has a wrong gradient and
    num_accepted_steps > capacity: the caller reruns it with more (`sens.ensemble` does)."""
    return lean.tsit5_batched_solve(problem.model.rhs, assemble_function(problem), problem.max_steps, capacity)


def gradient_function(problem: Problem, objective: Callable, capacity: int) -> Callable:
    """G(X (B, n_inputs), values) -> dict of arrays over the B samples: outputs (B,
    n_times, n_of), result (solver code), num_steps, value = objective(outputs), gradient
    (B, n_inputs) d value / d x, and accepted (accepted steps: more than `capacity` means
    the gradient is wrong and the batch must be rerun with a larger capacity): the
    ensemble's task "gradient" with the lean solve and its discrete adjoint (one backward
    pass for the whole batch: the sum of the values has the per-sample gradients as its
    gradient, samples being independent). `objective(outputs) -> scalar`, already checked
    (`ad.objective.scalar_objective`)."""
    assemble = assemble_function(problem)
    observe = observe_function(problem)
    solve = batched_solve_function(problem, capacity)

    def G(X, values):
        def total(X):
            params, _ = jax.vmap(assemble, in_axes=(0, None, None))(X, values["params"], values["y0"])
            ys, stats = solve(X, values)
            out = jax.vmap(observe, in_axes=(None, 0, 0))(values["times"], ys, params)
            v = jax.vmap(objective)(out)
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
    assemble = assemble_function(problem)
    solve = solve_function(problem)
    observe = observe_function(problem)

    def f(x, values):
        params, y0 = assemble(x, values["params"], values["y0"])
        ys, aux = solve(params, y0, values)
        return observe(values["times"], ys, params), aux

    return f
