"""Derivatives of a steady state by the implicit function theorem, for PEtab's
preequilibration and steady-state measurements (time = inf).

Those solves run until the rhs is small (max_i |f_i| / (atol + rtol |y_i|) < 1) and stop.
Differentiating that stopped trajectory gives the derivative of where the trajectory was,
not of the steady state: where a mode relaxes slowly the two can differ by percents, and
tighter tolerances do not close the gap (the slow preequilibration of
tests/test_petab_features.py is such a case). `newton_polish` ends such a solve with one
Newton step whose matrix is held constant, which leaves the value where it is (to within the
solve's tolerance) and makes its derivative the implicit function theorem's, also where
conservation laws make the Jacobian singular.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

# singular values below this fraction of the largest are conservation laws: exact ones
# sit at rounding level (1e-16), the slowest kinetic modes of the benchmark models far above
NULL_FRACTION = 1e-10


def newton_polish(rhs: Callable, y: jnp.ndarray) -> jnp.ndarray:
    """`y` (n,) a state where `rhs(y)` (n,) is small, `rhs` differentiable in y and in the
    parameters it closes over. Returns y + delta with

        [J; C] delta = -[f(y); 0]          (least squares)

    J = df/dy at y, and C the rows of J's left null space (conservation laws: c^T f = 0 for
    every state), both held constant (stop_gradient). Then the derivative y* of the result
    satisfies J y* = -f_p (the implicit function theorem) and C y* = C y, where the derivative
    of the simulated state gives what fixes the steady state within its conservation class:
    the conserved totals, set by the initial state. With J singular only by conservation
    laws, [J; C] has full column rank and the solution is unique. A zero rhs returns y."""
    J = jax.lax.stop_gradient(jax.jacfwd(rhs)(y))
    U, s, _ = jnp.linalg.svd(J)
    null = s <= NULL_FRACTION * s[0]  # s in descending order
    C = jnp.where(null[:, None], U.T, 0.0)
    pinv = jnp.linalg.pinv(jnp.concatenate([J, C]))[:, : y.shape[0]]
    return y - pinv @ rhs(y)
