"""SIR epidemic model, frequency-dependent transmission (Kermack & McKendrick 1927).

    dS/dt = -beta S I / N,   dI/dt = beta S I / N - gamma I,   dR/dt = gamma I,
    N = S + I + R (constant).

Defaults: the 1978 influenza outbreak in an English boarding school (BMJ 1978, 1:587),
fitted by Murray, Mathematical Biology I (3rd ed., 2002, section 10.2): N = 763 boys,
S(0) = 762, I(0) = 1, R(0) = 0, infection rate r = 2.18e-3 per day (mass action r S I) and
recovery rate a = 0.44 per day. In the frequency-dependent form here beta = r N = 1.66 per
day and gamma = 0.44 per day, so R0 = beta / gamma ~ 3.8. Time is in days.

Checks: S + I + R is conserved, and with R(0) = 0 the final size S_inf satisfies
ln(S_inf / S0) = -R0 (1 - S_inf / N).
"""

from __future__ import annotations

import sensitivity as sens

from ._common import jnp, merge_defaults  # jnp: jax.numpy, imported on first use

NAME = "sir"
DEFAULTS = {"beta": 1.66, "gamma": 0.44}
Y0 = {"S": 762.0, "I": 1.0, "R": 0.0}


def rhs(t, y, p):
    S, I, R = y[0], y[1], y[2]
    infection = p["beta"] * S * I / (S + I + R)
    recovery = p["gamma"] * I
    return jnp.stack([-infection, infection - recovery, recovery])


def model(**overrides) -> sens.ODEModel:
    """The SIR `ODEModel`; keyword arguments override default parameter values."""
    return sens.ODEModel(NAME, states=list(Y0), parameters=merge_defaults(NAME, DEFAULTS, overrides),
                         rhs=rhs, y0=Y0, stiff=False, doc=__doc__)
