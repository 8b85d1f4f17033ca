"""Forward (tangent) mode: one sweep pushes a tangent beside every value.

With diffrax's `ForwardMode`, the solve is differentiated as a loop of JVPs; all n input
tangents are vectorised in one sweep (`vmap` over a basis), so the full Jacobian
d outputs / d x costs about solve x (1 + a n).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..core.errors import InputError
from ..core.problem import Problem
from ..integrate.solve import output_function, run_checked, values_of, x0_of
from .objective import scalar_objective
from .quadrature import with_quadrature


def check_vector(problem: Problem, v) -> jnp.ndarray:
    """v as an array of shape (n_inputs,), or an `InputError` naming what is wrong."""
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (problem.n_inputs,):
        raise InputError(f"v has shape {v.shape}, expected ({problem.n_inputs},): one entry per input")
    if not np.all(np.isfinite(v)):
        raise InputError("v contains NaN or inf")
    return jnp.asarray(v)


def push(f: Callable, x, values, basis):
    """(outputs, aux, tangents (k, ...)) of f(x, values) -> (outputs, aux), traced: the
    tangents of f along every row of `basis` (k, n_inputs) in one vmapped sweep, aux
    from the primal."""
    def one(v):
        return jax.jvp(lambda x_: f(x_, values), (x,), (v,), has_aux=True)
    out, tangents, aux = jax.vmap(one, out_axes=(None, 0, None))(basis)
    return out, aux, tangents


def value_and_gradient(f: Callable, x, values):
    """(value, aux, gradient (n_inputs,)) of a scalar map f(x, values) -> (value, aux),
    traced: the n input tangents in one vectorised sweep."""
    return push(f, x, values, jnp.eye(x.size, dtype=x.dtype))


def weighted_gram(J, w):
    """sum over rows r of w_r J_r^T J_r, shape (n, n): J (..., n) with the rows over its
    leading axes, w their weights (J.shape[:-1]). The Fisher information J^T W J of
    Jacobian rows with diagonal weights (1 / sigma^2); NumPy arrays are summed by NumPy
    (on the host), JAX arrays by JAX (inside a traced program)."""
    xp = np if isinstance(J, np.ndarray) and isinstance(w, np.ndarray) else jnp
    rows = J.reshape(-1, J.shape[-1])
    return xp.einsum("r,ri,rj->ij", w.reshape(-1), rows, rows)


def jvp(problem: Problem, v) -> tuple[np.ndarray, dict]:
    """Directional derivative of the outputs: J @ v, shape (n_times, n_of), in one forward sweep."""
    t, info = jvp_batch(problem, check_vector(problem, v)[None])
    return t[0], info


def jvp_batch(problem: Problem, V) -> tuple[np.ndarray, dict]:
    """J @ v for every row v of V (k, n_inputs), vectorised in one sweep: (k, n_times, n_of)."""
    f = output_function(problem, "forward")

    def build():
        def g(x, values, V):
            return push(f, x, values, V)
        return g

    (t,), info = run_checked(problem, build, (x0_of(problem), values_of(problem),
                                              jnp.asarray(V)), fn="jvp")
    return np.asarray(t), info


def forward_jacobian(f: Callable, x, values):
    """(outputs, aux, J (..., n_inputs)) of f(x, values) -> (outputs, aux), traced: all n
    input tangents in one vectorised sweep, the input axis last."""
    out, aux, t = push(f, x, values, jnp.eye(x.size, dtype=x.dtype))
    return out, aux, jnp.moveaxis(t, 0, -1)


def jacobian(problem: Problem) -> tuple[np.ndarray, dict]:
    """The full Jacobian d outputs / d inputs, shape (n_times, n_of, n_inputs), all n
    tangents vectorised in one forward sweep."""
    f = output_function(problem, "forward")

    def build():
        def g(x, values):
            return forward_jacobian(f, x, values)
        return g

    (J,), info = run_checked(problem, build, (x0_of(problem), values_of(problem)),
                             fn="jacobian_forward")
    return np.asarray(J), info


def gradient(problem: Problem, objective: Callable) -> tuple[float, np.ndarray, dict]:
    """Value and gradient of objective(outputs) by forward mode: n tangents in one sweep.
    Cheap for few inputs; for many inputs use the adjoint. An integrating objective
    (`ad.quadrature`) is a state of the solve."""
    problem, objective = with_quadrature(problem, objective)
    f = output_function(problem, "forward")
    obj = scalar_objective(objective)

    def build():
        def g(x, values):
            def composed(x_, values_):
                out, aux = f(x_, values_)
                return (obj(out), out), aux
            (value, out), aux, t = push(composed, x, values, jnp.eye(x.size, dtype=x.dtype))
            return out, aux, value, t[0]
        return g

    (value, grad), info = run_checked(problem, build, (x0_of(problem), values_of(problem)),
                                      fn="gradient_forward", objective=objective)
    return float(value), np.asarray(grad), info
