"""The Ishigami function as an ODE: a test model of global sensitivity analysis.

    dy/dt = sin(x1) + a sin(x2)^2 + b x3^4 sin(x1),   y(0) = 0,

so that y(t) = t (sin(x1) + a sin(x2)^2 + b x3^4 sin(x1)) and y(1) is the Ishigami function
(Ishigami and Homma 1990) with a = 7, b = 0.1. With x1, x2, x3 independent and uniform on
[-pi, pi] its Sobol indices are known in closed form (Sobol' and Levitan 1999; see
`analytic_indices`), which the tests check the toolkit's Sobol estimates against.
"""

from __future__ import annotations

import math

import sensitivity as sens

from ._common import jnp, merge_defaults  # jnp: jax.numpy, imported on first use

NAME = "ishigami"
DEFAULTS = {"x1": 0.5, "x2": 0.5, "x3": 0.5, "a": 7.0, "b": 0.1}
RANGES = {"x1": (-math.pi, math.pi), "x2": (-math.pi, math.pi), "x3": (-math.pi, math.pi)}


def rhs(t, y, p):
    s1 = jnp.sin(p["x1"])
    return jnp.stack([s1 + p["a"] * jnp.sin(p["x2"]) ** 2 + p["b"] * p["x3"] ** 4 * s1])


def analytic_indices(a: float = 7.0, b: float = 0.1) -> dict:
    """The Ishigami function's variance, first-order and total Sobol indices for x1, x2,
    x3 uniform on [-pi, pi]:
    V1 = (1 + b pi^4 / 5)^2 / 2, V2 = a^2 / 8, V13 = b^2 pi^8 (1/18 - 1/50),
    V = V1 + V2 + V13; S = (V1, V2, 0) / V, ST = (V1 + V13, V2, V13) / V."""
    pi4 = math.pi ** 4
    v1 = 0.5 * (1 + b * pi4 / 5) ** 2
    v2 = a ** 2 / 8
    v13 = b ** 2 * math.pi ** 8 * (1 / 18 - 1 / 50)
    v = v1 + v2 + v13
    return {"variance": v, "S1": [v1 / v, v2 / v, 0.0], "ST": [(v1 + v13) / v, v2 / v, v13 / v]}


def model(**overrides) -> sens.ODEModel:
    """The Ishigami `ODEModel` (one state y); keyword arguments override x1, x2, x3, a, b."""
    return sens.ODEModel(NAME, states=["y"], parameters=merge_defaults(NAME, DEFAULTS, overrides),
                         rhs=rhs, y0=[0.0], stiff=False, doc=__doc__)
