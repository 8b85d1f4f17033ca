"""One-compartment pharmacokinetic model with first-order oral absorption (amounts, mg).

    d depot / dt   = -ka depot
    d central / dt =  ka depot - CL / V central

Observable: the plasma concentration C = central / V (mg/L). Oral doses are bolus jumps of
`depot`, given on the problem: `sens.Problem(model, times, doses=sens.doses(state="depot",
amount=320.0, every=12.0, count=7))` (see `default_doses`). Defaults are the population fit
to the theophylline data of Boeckmann, Sheiner & Beal (NONMEM users guide) in Pinheiro &
Bates, Mixed-Effects Models in S and S-PLUS (2000), sec. 6.4: ka = 1.57 /h, ke = 0.088 /h,
CL = 0.040 L/h/kg, scaled to 70 kg: CL = 2.8 L/h, V = CL / ke = 32 L; dose 320 mg
(about 4.5 mg/kg). Time in hours.

Closed form (superposition of Bateman functions, k = CL / V, ka != k):
C(t) = sum over doses with t_i <= t of D_i ka / (V (ka - k)) (exp(-k (t - t_i)) - exp(-ka (t - t_i))).
"""

from __future__ import annotations

import sensitivity as sens

from ._common import jnp, merge_defaults  # jnp: jax.numpy, imported on first use

NAME = "pk_one_compartment_oral"
DEFAULTS = {"ka": 1.57, "CL": 2.8, "V": 32.0}
Y0 = {"depot": 0.0, "central": 0.0}


def rhs(t, y, p):
    absorption = p["ka"] * y[0]
    return jnp.stack([-absorption, absorption - p["CL"] / p["V"] * y[1]])


def concentration(t, y, p):
    return y[1] / p["V"]


def default_doses(amount: float = 320.0, every: float = 12.0, count: int = 7) -> list:
    """The repeated oral schedule of the config: `count` doses of `amount` mg every `every` h."""
    return sens.doses(state="depot", amount=amount, every=every, count=count)


def model(**overrides) -> sens.ODEModel:
    """The one-compartment oral PK `ODEModel`; keyword arguments override default parameters."""
    return sens.ODEModel(NAME, states=list(Y0), parameters=merge_defaults(NAME, DEFAULTS, overrides),
                         rhs=rhs, y0=Y0, observables={"C": concentration}, stiff=False, doc=__doc__)
