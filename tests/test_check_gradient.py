"""sens.check_gradient: central differences against the closed form of a decay with an
inflow, a deliberately wrong derivative (a custom_jvp that lies) flagged by name, and a
PEtab problem's nllh gradient (Boehm, skipped without ../shared/petab), whose fit stopped
by maxiter says NOT converged on the console."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens

K, C, Y0, T_END = 0.5, 0.3, 2.0, 4.0


def _inflow_rhs(t, y, p):
    return -p["k"] * y + p["c"]


@jax.custom_jvp
def _lying_rate(k):
    return k


@_lying_rate.defjvp
def _lying_rate_jvp(primals, tangents):
    return primals[0], 3.0 * tangents[0]  # the true derivative is 1 x the tangent


def _lying_rhs(t, y, p):
    return -_lying_rate(p["k"]) * y + p["c"]


def final_value(ys):
    return ys[-1, 0]


def _problem(rhs):
    model = sens.ODEModel("inflow", ["y"], {"k": K, "c": C}, rhs, [Y0])
    return sens.Problem(model, np.linspace(0, T_END, 9), wrt=["k", "c", "y0.y"], rtol=1e-10, atol=1e-10)


def _closed_form_gradient():
    """d y(T) / d (k, c, y0) for y = c/k + (y0 - c/k) exp(-k T)."""
    e = np.exp(-K * T_END)
    return np.array([-C / K ** 2 + C / K ** 2 * e - (Y0 - C / K) * T_END * e, (1 - e) / K, e])


@pytest.fixture(scope="module")
def good():
    return sens.check_gradient(_problem(_inflow_rhs), final_value, jacobian=True)


def test_agrees_with_the_closed_form(good):
    g = good.table[good.table["check"] == "gradient"]
    assert list(g["input"]) == ["k", "c", "y0.y"]
    exact = _closed_form_gradient()
    np.testing.assert_allclose(g["finite_difference"], exact, rtol=1e-6)  # independent of our AD
    np.testing.assert_allclose(g["ours"], exact, rtol=1e-7)
    assert good.ok and good.failed == [] and (g["relative_error"] < 1e-5).all()
    assert "all 6 agree" in good.summary()
    j = good.table[good.table["check"] == "jacobian"]
    assert list(j["input"]) == ["k", "c", "y0.y"] and j["ok"].all()


def test_flags_a_wrong_derivative_by_name():
    chk = sens.check_gradient(_problem(_lying_rhs), final_value, step=1e-4, jacobian=True)
    assert not chk.ok and chk.failed == ["k"]
    row = chk.table[(chk.table["check"] == "gradient") & (chk.table["input"] == "k")].iloc[0]
    # the central differences see the true derivative, ours is three times it
    assert row["finite_difference"] == pytest.approx(_closed_form_gradient()[0], rel=1e-6)
    assert row["ours"] == pytest.approx(3 * row["finite_difference"], rel=1e-6)
    assert "DISAGREE" in chk.summary() and "gradient k: ours" in chk.summary()
    assert set(chk.table.loc[~chk.table["ok"], "check"]) == {"gradient", "jacobian"}


def test_subset_of_inputs_and_bad_input():
    prob = _problem(_inflow_rhs)
    chk = sens.check_gradient(prob, lambda ys: jnp.sum(ys ** 2), inputs=["c"])
    assert list(chk.table["input"]) == ["c"] and chk.ok
    with pytest.raises(sens.InputError, match="did you mean 'c'"):
        sens.check_gradient(prob, final_value, inputs=["cc"])
    with pytest.raises(sens.InputError, match="step"):
        sens.check_gradient(prob, final_value, step=2.0)


# --------------------------------------------------------------------------- PEtab
PETAB = Path(__file__).resolve().parents[1].parent / "shared" / "petab" / "Boehm_JProteomeRes2014"
needs_petab = pytest.mark.skipif(not PETAB.is_dir(), reason=f"PEtab test problems not found at {PETAB.parent}")


@needs_petab
def test_petab_nllh_gradient_agrees_and_the_fit_says_it_did_not_converge(tmp_path, capsys):
    from sensitivity.app.runners import petab as runner

    prob = sens.petab.load(PETAB / "Boehm_JProteomeRes2014.yaml")
    chk = sens.check_gradient(prob, mode="forward")
    assert chk.ok and list(chk.table["input"]) == list(prob.x_names), chk
    # independent of check_gradient's own differences: a plain central difference on one input
    x, h, i = prob.x_nominal, 1e-5, 2
    e = np.eye(x.size)[i]
    fd = (prob.nllh(x + h * e) - prob.nllh(x - h * e)) / (2 * h)
    assert chk.table["ours"].iloc[i] == pytest.approx(fd, rel=1e-4)
    # a fit stopped by maxiter says so in words on the console and in summary.json
    args = runner.PetabRunConfig(petab=str(PETAB / "Boehm_JProteomeRes2014.yaml"), mode="forward",
                                 fit=runner.PetabFit(enabled=True, maxiter=2),
                                 output=runner.PetabOutput(dir=str(tmp_path / "out"), plots=False))
    assert runner.run(args, quiet=True) == 0
    out = capsys.readouterr().out
    assert "fit: NOT converged" in out and "after 2 iterations" in out and "TOTAL NO. OF ITERATIONS" in out
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["fit"]["converged"] is False and summary["fit"]["gradient_norm"] > 0
