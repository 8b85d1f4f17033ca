"""Robertson's stiff chemical kinetics (Robertson 1966), the classic stiff test problem.

    A -> B (k1),   2B -> B + C (k2),   B + C -> A + C (k3):
    dy1/dt = -k1 y1 + k3 y2 y3
    dy2/dt =  k1 y1 - k2 y2^2 - k3 y2 y3
    dy3/dt =  k2 y2^2

Defaults k1 = 0.04, k2 = 3e7, k3 = 1e4, y(0) = (1, 0, 0), as in Robertson, "The solution of
a set of reaction rate equations" (1966) and Hairer & Wanner, Solving Ordinary Differential
Equations II (1996), section IV.1. The rates span nine orders of magnitude: the problem is
stiff (stiff=True, so the solver "auto" picks an implicit method). The widely quoted
reference values at t = 40 are y1 = 0.7158271, y2 = 9.185535e-6, y3 = 0.2841637 (to the
digits printed, also the output of SUNDIALS' cvRoberts_dns example: 7.1583e-01,
9.1855e-06, 2.8416e-01). y1 + y2 + y3 = 1 is conserved.
"""

from __future__ import annotations

import sensitivity as sens

from ._common import jnp, merge_defaults  # jnp: jax.numpy, imported on first use

NAME = "robertson"
DEFAULTS = {"k1": 0.04, "k2": 3.0e7, "k3": 1.0e4}
Y0 = {"y1": 1.0, "y2": 0.0, "y3": 0.0}
REFERENCE_T40 = (0.7158271, 9.185535e-6, 0.2841637)


def rhs(t, y, p):
    y1, y2, y3 = y[0], y[1], y[2]
    r1 = p["k1"] * y1
    r2 = p["k2"] * y2 * y2
    r3 = p["k3"] * y2 * y3
    return jnp.stack([-r1 + r3, r1 - r2 - r3, r2])


def model(**overrides) -> sens.ODEModel:
    """The Robertson `ODEModel` (stiff); keyword arguments override default rate constants."""
    return sens.ODEModel(NAME, states=list(Y0), parameters=merge_defaults(NAME, DEFAULTS, overrides),
                         rhs=rhs, y0=Y0, stiff=True, doc=__doc__)
