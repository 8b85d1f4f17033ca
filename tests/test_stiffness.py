"""solver="auto" detects stiffness from the rhs Jacobian's spectrum (sensitivity.stiffness)."""

import numpy as np
import pytest

import sensitivity as sens
from sensitivity import models
from sensitivity.solvers import stiffness
from sensitivity.solvers.registry import solver_name


def vdp(mu: float, stop: float) -> sens.Problem:
    # mu given as a parameter: the model's stiff flag stays False
    return sens.Problem(models.get("van_der_pol"), np.linspace(0.0, stop, 20), parameters={"mu": mu})


def test_van_der_pol_index_matches_the_closed_form_eigenvalue():
    """At y0 = (2, 0), J = [[0, 1], [-1, -3 mu]]: lambda_min = (-3 mu - sqrt(9 mu^2 - 4)) / 2."""
    for mu, stop in ((1.0, 20.0), (1000.0, 3000.0)):
        J = stiffness.rhs_jacobians(vdp(mu, stop))
        np.testing.assert_allclose(J[0], [[0.0, 1.0], [-1.0, -3.0 * mu]], rtol=1e-14)
        index, lam = stiffness.stiffness_index(J[:1], stop)
        expected = (3 * mu + np.sqrt(9 * mu ** 2 - 4)) / 2
        assert lam.real == pytest.approx(-expected, rel=1e-10)
        assert index == pytest.approx(stop * expected, rel=1e-10)


def test_stiffness_in_parameter_values_gets_an_implicit_solver():
    stiff, mild = vdp(1000.0, 3000.0), vdp(1.0, 20.0)
    assert not stiff.model.stiff
    assert solver_name(stiff) == stiffness.IMPLICIT and "stiff: T max(-Re lambda)" in stiffness.note(stiff)
    assert solver_name(mild) == "tsit5" and "not stiff" in stiffness.note(mild)
    # same structure, different solvers: the compiled functions must not be shared
    assert (stiff.structure_key(fn="simulate", solver_used=solver_name(stiff))
            != mild.structure_key(fn="simulate", solver_used=solver_name(mild)))


def test_lotka_volterra_keeps_tsit5_and_robertson_is_implicit_even_unflagged():
    lv = sens.Problem(models.get("lotka_volterra"), np.linspace(0, 15, 10))
    assert solver_name(lv) == "tsit5"
    rob = models.get("robertson")
    unflagged = sens.ODEModel("robertson_unflagged", rob.states, rob.parameters, rob.rhs, rob.y0)
    # J at y0 has eigenvalues -0.04, 0, 0: the stiffness shows once y2 > 0 (the Euler points)
    choice = stiffness.choose(sens.Problem(unflagged, np.linspace(0, 40, 10)))
    assert choice.solver == stiffness.IMPLICIT and choice.index > stiffness.STIFF_INDEX
    flagged = stiffness.choose(sens.Problem(rob, np.linspace(0, 40, 10)))
    assert flagged.solver == stiffness.IMPLICIT and "flagged stiff" in flagged.reason
    forced = sens.Problem(rob, np.linspace(0, 40, 10), solver="tsit5")
    assert solver_name(forced) == "tsit5"


def test_plan_explains_the_solver_and_a_fit_does_not_estimate_again(monkeypatch):
    prob = vdp(1000.0, 3000.0)
    text = sens.plan(prob, probe_problem=False).explain()
    assert f"Solver {stiffness.IMPLICIT}: stiff" in text
    monkeypatch.setattr(stiffness, "choose", lambda p: pytest.fail("estimated again"))
    moved = prob.with_inputs(prob.x0() * 1.01)
    assert solver_name(moved) == stiffness.IMPLICIT
