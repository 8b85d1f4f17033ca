"""Lorenz system (Lorenz 1963, "Deterministic nonperiodic flow"): chaotic convection.

    dx/dt = sigma (y - x)
    dy/dt = x (rho - z) - y
    dz/dt = x y - beta z

Defaults sigma = 10, rho = 28, beta = 8/3 and the initial state (0, 1, 0), as in Lorenz
(1963). The equations are invariant under (x, y, z) -> (-x, -y, z).

WARNING: what sensitivities of a chaotic system mean. On the attractor nearby solutions
separate like exp(lambda_1 t), with largest Lyapunov exponent lambda_1 ~ 0.906 (Sprott,
Chaos and Time-Series Analysis, 2003), i.e. a Lyapunov time 1/lambda_1 ~ 1.1 time units.
The derivatives d y(t) / d p obey the same linearised equations, so they grow
exponentially too: after 10 time units they are ~1e4 times larger than after 1. They are
correct derivatives of the trajectory, but they stop describing any finite change of p
once a perturbation has grown to the size of the attractor (a few Lyapunov times), and
they say nothing useful about long-time statistics (mean z, say), whose derivatives need
other methods (ensemble averaging, least-squares shadowing). Only short horizons, a few
Lyapunov times, give meaningful pointwise sensitivities.
"""

from __future__ import annotations

import sensitivity as sens

from ._common import jnp, merge_defaults  # jnp: jax.numpy, imported on first use

NAME = "lorenz"
DEFAULTS = {"sigma": 10.0, "rho": 28.0, "beta": 8.0 / 3.0}
Y0 = {"x": 0.0, "y": 1.0, "z": 0.0}
LYAPUNOV_EXPONENT = 0.906


def rhs(t, y, p):
    x, v, z = y[0], y[1], y[2]
    return jnp.stack([p["sigma"] * (v - x), x * (p["rho"] - z) - v, x * v - p["beta"] * z])


def model(**overrides) -> sens.ODEModel:
    """The Lorenz `ODEModel` (chaotic: see the module docstring before differentiating)."""
    return sens.ODEModel(NAME, states=list(Y0), parameters=merge_defaults(NAME, DEFAULTS, overrides),
                         rhs=rhs, y0=Y0, stiff=False, doc=__doc__)
