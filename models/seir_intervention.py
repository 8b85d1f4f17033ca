"""SEIR epidemic model whose contact rate drops at an intervention time t_switch.

    beta(t) = beta0 for t < t_switch, beta1 after,
    dS/dt = -beta(t) S I / N,        dE/dt = beta(t) S I / N - sigma E,
    dI/dt = sigma E - gamma I,       dR/dt = gamma I,         N = S + E + I + R.

`t_switch` is a declared breakpoint (`ODEModel(..., breakpoints=["t_switch"])`): the solve is
split there, so the rhs is smooth on each piece and d/d t_switch is right. Epidemiological
defaults as in `seir` (Li et al., N Engl J Med 382:1199, 2020: incubation 5.2 days,
R0 = 2.2, serial interval 7.5 days, so sigma = 1/5.2, gamma = 1/2.3, beta0 = R0 gamma);
the intervention halves the contact rate (beta1 = beta0 / 2, illustrative) at day 30.
Time in days.
"""

from __future__ import annotations

import sensitivity as sens

from ._common import jnp, merge_defaults  # jnp: jax.numpy, imported on first use

NAME = "seir_intervention"
DEFAULTS = {"beta0": 2.2 / 2.3, "beta1": 1.1 / 2.3, "sigma": 1.0 / 5.2, "gamma": 1.0 / 2.3,
            "t_switch": 30.0}
Y0 = {"S": 1.0e6 - 10.0, "E": 0.0, "I": 10.0, "R": 0.0}


def rhs(t, y, p):
    S, E, I, R = y[0], y[1], y[2], y[3]
    beta = jnp.where(t < p["t_switch"], p["beta0"], p["beta1"])
    infection = beta * S * I / (S + E + I + R)
    onset = p["sigma"] * E
    recovery = p["gamma"] * I
    return jnp.stack([-infection, infection - onset, onset - recovery, recovery])


def model(**overrides) -> sens.ODEModel:
    """The SEIR-with-intervention `ODEModel`; keyword arguments override default parameters."""
    return sens.ODEModel(NAME, states=list(Y0), parameters=merge_defaults(NAME, DEFAULTS, overrides),
                         rhs=rhs, y0=Y0, stiff=False, doc=__doc__, breakpoints=["t_switch"])
