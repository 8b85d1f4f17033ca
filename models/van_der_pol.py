"""Van der Pol oscillator (van der Pol 1926): a relaxation oscillator with a limit cycle.

    dx/dt = y
    dy/dt = mu (1 - x^2) y - x

Defaults mu = 1, x(0) = 2, y(0) = 0, the non-stiff case of Hairer, Norsett & Wanner,
Solving Ordinary Differential Equations I (1993), section I.16 and II.10. For mu = 1 the
limit cycle has period T = 6.6632868593... (Hairer et al.; the tests measure it from the
zero crossings of x after the transient). The problem becomes stiff as mu grows (the
slow branches take time ~ mu, the jumps ~ 1/mu; mu = 1000 is Hairer & Wanner II's
stiff test, section IV.1): `model(mu=...)` with mu >= 100 returns a model flagged
stiff, so the solver "auto" picks an implicit method. Changing mu only in a Problem's
`parameters` keeps the model's flag, but "auto" then finds the stiffness in the rhs
Jacobian (`sensitivity.stiffness`) and picks the implicit method all the same.
"""

from __future__ import annotations

import sensitivity as sens

from ._common import jnp, merge_defaults  # jnp: jax.numpy, imported on first use

NAME = "van_der_pol"
DEFAULTS = {"mu": 1.0}
Y0 = {"x": 2.0, "y": 0.0}
STIFF_MU = 100.0
PERIOD_MU1 = 6.6632868593


def rhs(t, y, p):
    x, v = y[0], y[1]
    return jnp.stack([v, p["mu"] * (1.0 - x * x) * v - x])


def model(**overrides) -> sens.ODEModel:
    """The van der Pol `ODEModel`; `model(mu=1000.0)` is the stiff variant (flagged stiff)."""
    params = merge_defaults(NAME, DEFAULTS, overrides)
    return sens.ODEModel(NAME, states=list(Y0), parameters=params, rhs=rhs, y0=Y0,
                         stiff=float(params["mu"]) >= STIFF_MU, doc=__doc__)
