"""The Brusselator with diffusion on [0, 1] (the BRUSS problem), by the method of lines.

    u_t = A + u^2 v - (B + 1) u + alpha u_xx,   u(0, t) = u(1, t) = 1,   u(x, 0) = 1 + sin(2 pi x)
    v_t = B u - u^2 v + alpha v_xx,             v(0, t) = v(1, t) = 3,   v(x, 0) = 3

Hairer & Wanner, Solving Ordinary Differential Equations II (2nd ed., Springer 1996),
section IV.10 (the BRUSS problem): A = 1, B = 3, alpha = 1/50, N interior points
x_i = i / (N + 1) and central differences give 2N ODEs. The states are stored as
[u_1 .. u_N, v_1 .. v_N] (states u[0] .. u[2N-1]), so the Jacobian has bandwidth N in this
order and 2 after interleaving: a nonlinear stiff system whose sparse pattern a
bandwidth-reducing reordering makes banded. Stiffness grows like alpha N^2. Defaults:
n = 2N = 100 states.
"""

from __future__ import annotations

import numpy as np

import sensitivity as sens

from ._common import jnp, merge_defaults  # jnp: jax.numpy, imported on first use

NAME = "brusselator_1d"
DEFAULTS = {"A": 1.0, "B": 3.0, "alpha": 0.02}


def _laplacian(w, left, right, inv_h2):
    lft = jnp.concatenate([jnp.full((1,), left, dtype=w.dtype), w[:-1]])
    rgt = jnp.concatenate([w[1:], jnp.full((1,), right, dtype=w.dtype)])
    return (lft - 2.0 * w + rgt) * inv_h2


def rhs(t, y, p):
    N = y.shape[0] // 2
    inv_h2 = float((N + 1) ** 2)
    u, v = y[:N], y[N:]
    uuv = u * u * v
    du = p["A"] + uuv - (p["B"] + 1.0) * u + p["alpha"] * _laplacian(u, 1.0, 1.0, inv_h2)
    dv = p["B"] * u - uuv + p["alpha"] * _laplacian(v, 3.0, 3.0, inv_h2)
    return jnp.concatenate([du, dv])


def model(*, n: int = 100, **overrides) -> sens.ODEModel:
    """The Brusselator on n // 2 interior points (n even, >= 4 states); keyword arguments
    override A, B, alpha."""
    if not (isinstance(n, (int, np.integer)) and n >= 4 and n % 2 == 0):
        raise sens.InputError(f"brusselator_1d.model(n={n!r}): n must be an even integer >= 4")
    N = int(n) // 2
    x = np.arange(1, N + 1) / (N + 1)
    y0 = np.concatenate([1.0 + np.sin(2.0 * np.pi * x), np.full(N, 3.0)])
    return sens.ODEModel(NAME, states=int(n), parameters=merge_defaults(NAME, DEFAULTS, overrides),
                         rhs=rhs, y0=y0, stiff=True, doc=__doc__)
