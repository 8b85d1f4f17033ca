"""Second order: Hessian-vector products and dense Hessians of objective(outputs(x)).

Two HVP routes, both exact for what they differentiate:

- "fwd-over-rev": jvp(grad F)(x; v), with diffrax's `DirectAdjoint` (the one adjoint that
  allows forward mode over reverse). Its cost grows with max_steps, so the solve runs
  with a tight step budget taken from a probe solve.
- "rev-over-fwd": grad_x <grad F, v>, where the directional derivative comes from the
  forward sensitivity system solved alongside the state, z = (y, s), s' = f_y s + f_p p'(v),
  and is differentiated by the checkpointed adjoint: about the cost of one gradient of a
  system twice the size. The augmented solve picks its own steps (its error control sees s
  too), so it agrees with the other route to about the solver tolerance.

The dense Hessian (small n) is forward-over-forward: jacfwd(jacfwd F) through `ForwardMode`.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..core.errors import InputError
from ..core.problem import Problem
from ..core.schedule import all_events, moving_bounds
from ..integrate.solve import (
    assemble_function,
    observe_function,
    output_function,
    run_checked,
    simulate,
    solve_function,
    values_of,
    x0_of,
)
from .forward import check_vector
from .objective import loss_function, scalar_objective
from .quadrature import with_quadrature

HVP_METHODS = ("fwd-over-rev", "rev-over-fwd")


def _direct_budget(problem: Problem) -> int:
    """A tight max_steps for DirectAdjoint: twice the probe solve's steps, rounded up to a
    power of two so that nearby problems share one compiled function."""
    stats = simulate(problem).stats
    steps = stats.get("max_piece_steps", stats["num_steps"])  # a split solve: per piece
    return min(problem.max_steps, 2 ** math.ceil(math.log2(2 * steps + 16)))


def _hvp_fwd_over_rev(problem: Problem, objective: Callable, v):
    steps = _direct_budget(problem)
    f = output_function(problem, "direct", max_steps=steps)

    def build():
        def g(x, values, v):
            grad = jax.grad(loss_function(f, objective, values), has_aux=True)
            (gx, (out, aux)), (hv, _) = jax.jvp(grad, (x,), (v,))
            return out, aux, gx, hv
        return g

    return run_checked(problem, build, (x0_of(problem), values_of(problem), v),
                       fn="hvp_fwd_over_rev", objective=objective, direct_steps=steps)


def _rev_over_fwd_function(problem: Problem, objective: Callable) -> Callable:
    """g(x, values, v) -> (outputs, aux, H v) through the augmented tangent system."""
    obj = scalar_objective(objective)
    assemble, observe = assemble_function(problem), observe_function(problem)
    model, n_states = problem.model, problem.model.n_states

    def rhs(t, z, p):  # the forward sensitivity system beside the state
        params, dparams = p
        y, s = z[:n_states], z[n_states:]
        dy, ds = jax.jvp(lambda y_, p_: model.rhs(t, y_, p_), (y, params), (s, dparams))
        return jnp.concatenate([jnp.asarray(dy).reshape(-1), jnp.asarray(ds).reshape(-1)])

    solve = solve_function(problem, "checkpoint", rhs=rhs)

    def build():
        def g(x, values, v):
            def directional(x_):
                params, y0 = assemble(x_, values["params"], values["y0"])
                _, (dparams, dy0) = jax.jvp(lambda xx: assemble(xx, values["params"], values["y0"]),
                                            (x_,), (v,))
                zs, aux = solve((params, dparams), jnp.concatenate([y0, dy0]), values)
                ys, ss = zs[:, :n_states], zs[:, n_states:]
                out, dout = jax.jvp(lambda ys_, p_: observe(values["times"], ys_, p_),
                                    (ys, params), (ss, dparams))
                value, dvalue = jax.jvp(obj, (out,), (dout,))
                return dvalue, (out, aux)
            hv, (out, aux) = jax.grad(directional, has_aux=True)(x)
            return out, aux, hv
        return g

    return build()


def hvp(problem: Problem, objective: Callable, v, method: str = "rev-over-fwd"
        ) -> tuple[np.ndarray, dict]:
    """Hessian-vector product H v of objective(outputs(x)), shape (n_inputs,), where
    H = d^2 objective / dx^2. `method` is "rev-over-fwd" (default) or "fwd-over-rev"."""
    if method not in HVP_METHODS:
        raise InputError(f"hvp method '{method}' is unknown; valid: {', '.join(HVP_METHODS)}")
    tangent = check_vector(problem, v)
    problem, objective = with_quadrature(problem, objective)  # an integral: a state of the solve
    if method == "rev-over-fwd" and all_events(problem):
        method = "fwd-over-rev"  # the augmented tangent system does not carry state events
    if method == "fwd-over-rev" and moving_bounds(problem):
        raise InputError(
            "hvp mode 'fwd-over-rev' cannot differentiate a solve whose segment bounds are inputs (dose "
            "times, parameter breakpoints): diffrax's DirectAdjoint has no second-order rule there; "
            "use mode 'rev-over-fwd'" + (" (without state events), or hessian mode 'fwd-over-fwd'"
                                         if all_events(problem) else ""))
    if method == "fwd-over-rev":
        (_, hv), info = _hvp_fwd_over_rev(problem, objective, tangent)
    else:
        (hv,), info = run_checked(
            problem, lambda: _rev_over_fwd_function(problem, objective),
            (x0_of(problem), values_of(problem), tangent),
            fn="hvp_rev_over_fwd", objective=objective)
    return np.asarray(hv), info


HESSIAN_METHODS = ("fwd-over-fwd", "rev-over-fwd")


def hessian(problem: Problem, objective: Callable, method: str = "fwd-over-fwd"
            ) -> tuple[np.ndarray, dict]:
    """Dense Hessian of objective(outputs(x)), shape (n_inputs, n_inputs).

    "fwd-over-fwd": jacfwd(jacfwd) through `ForwardMode`, n + n^2 tangents in one sweep,
    exact for the discrete solve; for small n. "rev-over-fwd": n Hessian-vector products,
    vmapped over the unit vectors; cost grows like n gradients.
    """
    if method not in HESSIAN_METHODS:
        raise InputError(f"hessian method '{method}' is unknown; valid: {', '.join(HESSIAN_METHODS)}")
    problem, objective = with_quadrature(problem, objective)  # an integral: a state of the solve
    if method == "rev-over-fwd" and all_events(problem):
        method = "fwd-over-fwd"  # the augmented tangent system does not carry state events
    if method == "rev-over-fwd":
        def build_columns():
            g = _rev_over_fwd_function(problem, objective)

            def columns(x, values):
                out, aux, H = jax.vmap(g, in_axes=(None, None, 0))(x, values, jnp.eye(x.size, dtype=x.dtype))
                first = jax.tree_util.tree_map(lambda a: a[0], (out, aux))
                return first[0], first[1], H
            return columns

        (H,), info = run_checked(problem, build_columns, (x0_of(problem), values_of(problem)),
                                 fn="hessian_rev_over_fwd", objective=objective)
        return np.asarray(H), info
    f = output_function(problem, "forward")
    scalar_objective(objective)

    def build():
        def g(x, values):
            loss = loss_function(f, objective, values)
            H, (out, aux) = jax.jacfwd(lambda x_: jax.jacfwd(loss, has_aux=True)(x_),
                                       has_aux=True)(x)
            return out, aux, H
        return g

    (H,), info = run_checked(problem, build, (x0_of(problem), values_of(problem)),
                             fn="hessian", objective=objective)
    return np.asarray(H), info
