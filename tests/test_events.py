"""Doses, breakpoints and state events (issue 9): every derivative against an independent
reference (closed forms, SciPy split solves with finite differences)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens
from sensitivity import compiled, models

# ----------------------------------------------------------------------------- oral PK
PK_TIMES = np.linspace(0.0, 84.0, 29)  # every 3 h: the dose times 0, 12, ... are save times
PK_WRT = ["ka", "CL", "V", "dose.amount", "dose.time"]
PK_TRUE = {"ka": 1.57, "CL": 2.8, "V": 32.0}


def bateman(x, times, n_doses):
    """C(t) by superposition of Bateman functions; x = (ka, CL, V, amounts..., times...).
    A save time equal to a dose time sees the dose (right-continuous), as the solver does."""
    ka, CL, V = x[0], x[1], x[2]
    amounts, tds = x[3:3 + n_doses], x[3 + n_doses:]
    k = CL / V
    s = times[:, None] - tds[None, :]
    after = s >= 0
    s = jnp.where(after, s, 0.0)
    term = amounts * ka / (V * (ka - k)) * (jnp.exp(-k * s) - jnp.exp(-ka * s))
    return jnp.sum(jnp.where(after, term, 0.0), axis=1)


@pytest.fixture(scope="module")
def pk():
    model = models.get("pk_one_compartment_oral")
    schedule = models.factory("pk_one_compartment_oral").__globals__["default_doses"]()
    return sens.Problem(model, PK_TIMES, wrt=PK_WRT, doses=schedule, rtol=1e-11, atol=1e-11)


def _pk_reference(prob):
    x = jnp.asarray(prob.x0())
    n = len(prob.doses)
    C = bateman(x, jnp.asarray(prob.times), n)
    J = jax.jacfwd(bateman)(x, jnp.asarray(prob.times), n)
    return np.asarray(C), np.asarray(J)


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_pk_seven_doses_against_bateman_superposition(pk, mode):
    assert pk.input_names[3:10] == tuple(f"dose[{j}].amount" for j in range(7))
    assert pk.input_names[10:] == tuple(f"dose[{j}].time" for j in range(7))
    C, J = _pk_reference(pk)
    res = sens.jacobian(pk, mode=mode)
    np.testing.assert_allclose(res.outputs[:, 0], C, rtol=1e-6, atol=1e-9 * C.max())
    scale = np.abs(J).max(axis=0)  # per input: relative to the derivative's size over time
    err = np.abs(res.values[:, 0, :] - J) / scale
    assert err.max() < 1e-6, dict(zip(res.input_names, err.max(axis=0)))
