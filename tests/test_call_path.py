"""The per-call path of a repeated call, checked by counting rather than timing (robust to a
loaded machine): no host-to-device transfer, no tracing, no new signature of the arguments,
and the same results as the first call."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import sensitivity as sens
from sensitivity import compiled, models, solve


@pytest.fixture(scope="module")
def prob():
    return sens.Problem(models.get("lotka_volterra"), np.linspace(0.0, 5.0, 21),
                        wrt=["alpha", "beta", "gamma", "delta"])


def test_a_repeated_simulate_transfers_nothing_to_the_device_and_traces_nothing(prob, monkeypatch):
    first = sens.simulate(prob)  # compiles; moves the problem's values to the device once
    traced, signed = [], []
    monkeypatch.setattr(solve, "states_and_outputs_function",
                        lambda *a, **k: traced.append(a) or pytest.fail("traced again"))
    real_signature = compiled._signature
    monkeypatch.setattr(compiled, "_signature", lambda args: signed.append(1) or real_signature(args))
    with jax.transfer_guard_host_to_device("disallow"):
        again = [sens.simulate(prob) for _ in range(3)]
    assert not traced and not signed  # the signature of the problem's own values is kept
    for tr in again:
        np.testing.assert_array_equal(tr.states, first.states)
        assert tr.stats == first.stats and tr.timings["compile"] == 0.0


def test_a_new_problem_of_the_same_structure_reuses_the_program(prob):
    sens.simulate(prob)
    other = prob.replace(parameters={"alpha": 1.1})
    tr = sens.simulate(other)
    assert tr.timings["compile"] == 0.0
    ref = sens.simulate(sens.Problem(other.model, other.times, wrt=list(other.input_names),
                                     parameters=dict(other.parameters)))
    np.testing.assert_array_equal(tr.states, ref.states)
    assert not np.allclose(tr.states, sens.simulate(prob).states)  # the new value took effect
