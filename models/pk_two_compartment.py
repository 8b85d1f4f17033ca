"""Two-compartment pharmacokinetic model with first-order absorption (amounts, mg).

    d depot / dt      = -ka depot
    d central / dt    =  ka depot - (CL + Q) / V1 central + Q / V2 peripheral
    d peripheral / dt =  Q / V1 central - Q / V2 peripheral

Observables: the plasma concentration C = central / V1 and the peripheral concentration
C_peripheral = peripheral / V2 (mg/L). Defaults CL = 1, V1 = 20, Q = 2, V2 = 10, ka = 1
(volume in L, time in h) are those of the `pk2cmt` model of the mrgsolve model library
(Metrum Research Group; CL, VC, Q, VP, KA1); the structure is the standard one of
Gibaldi & Perrier, Pharmacokinetics (2nd ed., 1982). Default dose: 100 mg in
the depot (an oral dose); put a dose into `central` through y0 for an IV bolus, for which
C(t) = A exp(-alpha t) + B exp(-beta t) with alpha, beta the roots of
s^2 - (k10 + k12 + k21) s + k10 k21 = 0 (k10 = CL/V1, k12 = Q/V1, k21 = Q/V2),
A = D/V1 (alpha - k21)/(alpha - beta), B = D/V1 (k21 - beta)/(alpha - beta).
"""

from __future__ import annotations

import sensitivity as sens

from ._common import jnp, merge_defaults  # jnp: jax.numpy, imported on first use

NAME = "pk_two_compartment"
DEFAULTS = {"ka": 1.0, "CL": 1.0, "V1": 20.0, "Q": 2.0, "V2": 10.0}
Y0 = {"depot": 100.0, "central": 0.0, "peripheral": 0.0}


def rhs(t, y, p):
    depot, central, peripheral = y[0], y[1], y[2]
    absorption = p["ka"] * depot
    elimination = p["CL"] / p["V1"] * central
    distribution = p["Q"] / p["V1"] * central - p["Q"] / p["V2"] * peripheral
    return jnp.stack([-absorption, absorption - elimination - distribution, distribution])


def concentration(t, y, p):
    return y[1] / p["V1"]


def peripheral_concentration(t, y, p):
    return y[2] / p["V2"]


def model(**overrides) -> sens.ODEModel:
    """The two-compartment PK `ODEModel`; keyword arguments override default parameters."""
    return sens.ODEModel(NAME, states=list(Y0), parameters=merge_defaults(NAME, DEFAULTS, overrides),
                         rhs=rhs, y0=Y0,
                         observables={"C": concentration, "C_peripheral": peripheral_concentration},
                         stiff=False, doc=__doc__)
