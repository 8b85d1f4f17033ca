"""SEIR epidemic model with a latent (exposed) class, frequency-dependent transmission.

    dS/dt = -beta S I / N,          dE/dt = beta S I / N - sigma E,
    dI/dt = sigma E - gamma I,      dR/dt = gamma I,         N = S + E + I + R.

Defaults from the early COVID-19 estimates of Li et al., N Engl J Med 382:1199 (2020):
mean incubation period 5.2 days, so sigma = 1 / 5.2 per day; basic reproduction number
R0 = 2.2 and mean serial interval 7.5 days. The mean generation time of the SEIR model is
1/sigma + 1/gamma, so gamma = 1 / (7.5 - 5.2) = 1 / 2.3 per day, and beta = R0 gamma
= 0.9565 per day. A population of one million with ten initial infectious people
(illustrative). Time is in days.

Checks: S + E + I + R is conserved; the final-size relation of the SIR model,
ln(S_inf / S0) = -R0 (1 - S_inf / N) with R0 = beta / gamma, holds for the SEIR model too.
"""

from __future__ import annotations

import sensitivity as sens

from ._common import jnp, merge_defaults  # jnp: jax.numpy, imported on first use

NAME = "seir"
DEFAULTS = {"beta": 2.2 / 2.3, "sigma": 1.0 / 5.2, "gamma": 1.0 / 2.3}
Y0 = {"S": 1.0e6 - 10.0, "E": 0.0, "I": 10.0, "R": 0.0}


def rhs(t, y, p):
    S, E, I, R = y[0], y[1], y[2], y[3]
    infection = p["beta"] * S * I / (S + E + I + R)
    onset = p["sigma"] * E
    recovery = p["gamma"] * I
    return jnp.stack([-infection, infection - onset, onset - recovery, recovery])


def model(**overrides) -> sens.ODEModel:
    """The SEIR `ODEModel`; keyword arguments override default parameter values."""
    return sens.ODEModel(NAME, states=list(Y0), parameters=merge_defaults(NAME, DEFAULTS, overrides),
                         rhs=rhs, y0=Y0, stiff=False, doc=__doc__)
