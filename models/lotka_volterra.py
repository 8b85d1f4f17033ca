"""Lotka-Volterra predator-prey model (non-stiff, oscillatory).

    d prey / dt     = alpha * prey - beta * prey * predator
    d predator / dt = delta * prey * predator - gamma * predator

Defaults alpha = 1.0, beta = 0.1, gamma = 1.5, delta = 0.75, prey(0) = 10, predator(0) = 5,
as in the SciPy Cookbook "Lotka-Volterra tutorial" (a = 1, b = 0.1, c = 1.5, d = 0.75,
X0 = [10, 5]); the model is Lotka (1925) and Volterra (1926). The orbits are closed:
V = delta * x - gamma * ln x + beta * y - alpha * ln y is conserved along every solution,
which the tests use as an independent check.
"""

from __future__ import annotations

import sensitivity as sens

from ._common import jnp, merge_defaults  # jnp: jax.numpy, imported on first use

NAME = "lotka_volterra"
DEFAULTS = {"alpha": 1.0, "beta": 0.1, "gamma": 1.5, "delta": 0.75}
Y0 = {"prey": 10.0, "predator": 5.0}


def rhs(t, y, p):
    x, z = y[0], y[1]
    return jnp.stack([p["alpha"] * x - p["beta"] * x * z,
                      p["delta"] * x * z - p["gamma"] * z])


def invariant(y, p):
    """The conserved quantity V(x, y) = delta x - gamma ln x + beta y - alpha ln y, for
    states `y` of shape (..., 2) and parameters `p` (numpy or jax arrays)."""
    x, z = y[..., 0], y[..., 1]
    return p["delta"] * x - p["gamma"] * jnp.log(x) + p["beta"] * z - p["alpha"] * jnp.log(z)


def model(**overrides) -> sens.ODEModel:
    """The Lotka-Volterra `ODEModel`; keyword arguments override default parameter values."""
    return sens.ODEModel(NAME, states=list(Y0), parameters=merge_defaults(NAME, DEFAULTS, overrides),
                         rhs=rhs, y0=Y0, stiff=False, doc=__doc__)
