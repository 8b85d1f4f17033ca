"""FitzHugh-Nagumo model of an excitable neuron (FitzHugh 1961; Nagumo et al. 1962).

    dv/dt = v - v^3 / 3 - w + I_ext
    dw/dt = (v + a - b w) / tau

Defaults a = 0.7, b = 0.8, tau = 12.5 (that is, w' = 0.08 (v + 0.7 - 0.8 w)) from
FitzHugh (1961), as written by Izhikevich & FitzHugh, Scholarpedia 1(9):1349 (2006).
I_ext = 0.5 puts the model in its oscillating (repetitive spiking) regime; I_ext = 0 is
the resting regime, where every solution settles to the stable fixed point at the
intersection of the nullclines w = v - v^3/3 + I_ext and w = (v + a) / b, i.e. the real
root of  -v^3/3 + (1 - 1/b) v + I_ext - a/b = 0. Non-stiff at these values.
"""

from __future__ import annotations

import numpy as np

import sensitivity as sens

from ._common import jnp, merge_defaults  # jnp: jax.numpy, imported on first use

NAME = "fitzhugh_nagumo"
DEFAULTS = {"a": 0.7, "b": 0.8, "tau": 12.5, "I_ext": 0.5}
Y0 = {"v": -1.0, "w": 1.0}


def rhs(t, y, p):
    v, w = y[0], y[1]
    return jnp.stack([v - v ** 3 / 3.0 - w + p["I_ext"], (v + p["a"] - p["b"] * w) / p["tau"]])


def fixed_points(a: float, b: float, I_ext: float) -> np.ndarray:
    """The real fixed points (v, w), shape (k, 2), from the cubic of the nullclines."""
    roots = np.roots([-1.0 / 3.0, 0.0, 1.0 - 1.0 / b, I_ext - a / b])
    v = np.sort(roots[np.abs(roots.imag) < 1e-9].real)
    return np.stack([v, (v + a) / b], axis=1)


def model(**overrides) -> sens.ODEModel:
    """The FitzHugh-Nagumo `ODEModel`; keyword arguments override default parameter values."""
    return sens.ODEModel(NAME, states=list(Y0), parameters=merge_defaults(NAME, DEFAULTS, overrides),
                         rhs=rhs, y0=Y0, stiff=False, doc=__doc__)
