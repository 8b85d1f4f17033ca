"""lean_rk: the ensemble's lean Tsit5 solve takes diffrax's steps (same counts) and saves
the same values to rounding, fails where diffrax fails (max_steps_reached), and is used
by sens.ensemble only where it applies."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens
from sensitivity import models
from sensitivity.integrate import lean as lean_rk
from sensitivity.integrate.solve import output_function, values_of
from sensitivity.models import reaction_chain

ens_mod = importlib.import_module("sensitivity.analyses.ensemble")  # sens.ensemble is the function


def both(prob, X):
    """(outputs, num_steps, result codes) of diffrax's vmapped solve and of the lean one."""
    vals = values_of(prob)
    out = []
    for f in (output_function(prob, "checkpoint"), lean_rk.output_function(prob)):
        g = jax.jit(jax.vmap(lambda x, v, f=f: (lambda o, a: (o, a["num_steps"], a["result"]._value))(*f(x, v)),
                             in_axes=(0, None)))
        out.append(tuple(np.asarray(a) for a in g(jnp.asarray(X), vals)))
    return out


@pytest.fixture(scope="module")
def lv():
    return sens.Problem(models.get("lotka_volterra"), np.linspace(0.0, 6.0, 13), wrt=["alpha", "beta", "gamma", "delta"],
                        solver="tsit5", rtol=1e-10, atol=1e-10, max_steps=3000)


def test_same_steps_and_values_as_diffrax_with_many_save_times(lv):
    X = lv.x0() * np.random.default_rng(0).uniform(0.8, 1.25, (16, 4))
    X[3, 1] = -1.0  # beta < 0: the prey explodes, both run out of steps
    (yd, nd, rd), (yl, nl, rl) = both(lv, X)
    np.testing.assert_array_equal(nl, nd)  # the same accepted and rejected steps
    np.testing.assert_array_equal(rl, rd)
    assert rd[3] != 0 and np.all(np.delete(rd, 3) == 0)
    ok = np.delete(np.arange(16), 3)
    np.testing.assert_allclose(yl[ok], yd[ok], rtol=1e-12, atol=1e-13)


def test_same_as_diffrax_on_a_chain_and_a_constant_field():
    chain = reaction_chain.model(n=6, k_fast=10.0, k_slow=0.1)
    prob = sens.Problem(chain, [0.3, 2.0, 5.0], t0=0.0, wrt=[f"k{i}" for i in range(1, 6)], solver="tsit5",
                        rtol=1e-8, atol=1e-10)
    X = prob.x0() * np.random.default_rng(1).uniform(0.5, 2.0, (8, 5))
    (yd, nd, _), (yl, nl, _) = both(prob, X)
    np.testing.assert_array_equal(nl, nd)
    np.testing.assert_allclose(yl, yd, rtol=1e-12, atol=1e-15)
    ish = sens.Problem(models.get("ishigami"), [1.0], t0=0.0, wrt=["x1", "x2", "x3"], rtol=1e-8, atol=1e-10)
    X = np.random.default_rng(2).uniform(-3, 3, (4, 3))
    (yd, nd, _), (yl, nl, _) = both(ish, X)
    np.testing.assert_array_equal(nl, nd)
    np.testing.assert_allclose(yl, yd, rtol=1e-14)


def test_ensemble_uses_it_only_where_it_applies(lv):
    assert lean_rk.applies(lv)
    assert not lean_rk.applies(lv.replace(solver="dopri5"))
    assert not lean_rk.applies(sens.Problem(models.get("robertson"), [0.0, 1.0]))  # auto -> Kvaerno5
    X = lv.x0() * np.random.default_rng(3).uniform(0.9, 1.1, (5, 4))
    lean = sens.ensemble(lv, X, batch=8)
    try:
        ens_mod.LEAN = False
        plain = sens.ensemble(lv, X, batch=8)
    finally:
        ens_mod.LEAN = True
    assert lean.attrs["compiles"] == 1 and plain.attrs["compiles"] == 1  # two programs, not one reused
    np.testing.assert_array_equal(lean["num_steps"].values, plain["num_steps"].values)
    np.testing.assert_allclose(lean["outputs"].values, plain["outputs"].values, rtol=1e-12, atol=1e-13)


def test_lean_adjoint_gradient_equals_diffrax_adjoint(lv):
    # many save times, an initial value among the inputs, a sample that needs more stored
    # steps than the first capacity: the ensemble reruns its batch storing more
    prob = lv.replace(wrt=["alpha", "beta", "gamma", "delta", "y0.prey"], max_steps=4000)
    X = prob.x0() * np.random.default_rng(4).uniform(0.8, 1.25, (6, 5))

    def objective(ys):
        return jnp.sum(ys ** 2) / ys.shape[0]

    before = ens_mod.lean_rk.ADJOINT_STEPS, ens_mod.lean_rk.ADJOINT_BYTES
    try:
        ens_mod.lean_rk.ADJOINT_STEPS, ens_mod.lean_rk.ADJOINT_BYTES = 64, 0  # LV takes ~250 accepted steps here
        lean = sens.ensemble(prob, X, task="gradient", objective=objective, batch=4)
        assert lean.attrs["variant"] == "lean" and lean.attrs["mode"] == "adjoint"
        assert lean.attrs["compiles"] == 2  # capacity 64 overflowed once, then 256 for both batches
        ens_mod.LEAN = False
        ref = sens.ensemble(prob, X, task="gradient", objective=objective, mode="adjoint", batch=4)
    finally:
        ens_mod.LEAN = True
        ens_mod.lean_rk.ADJOINT_STEPS, ens_mod.lean_rk.ADJOINT_BYTES = before
    assert ref.attrs["variant"] != "lean"
    np.testing.assert_array_equal(lean["num_steps"].values, ref["num_steps"].values)
    np.testing.assert_allclose(lean["value"].values, ref["value"].values, rtol=1e-13)
    np.testing.assert_allclose(lean["gradient"].values, ref["gradient"].values, rtol=1e-10, atol=1e-12)
    # and against central differences of the lean values
    h = 1e-6
    i = 2
    fd = []
    for j in range(5):
        e = np.zeros(5)
        e[j] = h * X[i, j]
        up, dn = sens.ensemble(prob, np.stack([X[i] + e, X[i] - e]))["outputs"].values
        fd.append((objective(jnp.asarray(up)) - objective(jnp.asarray(dn))) / (2 * h * X[i, j]))
    np.testing.assert_allclose(lean["gradient"].values[i], np.array(fd), rtol=1e-5)


def test_implicit_adjoint_batches_stay_small_where_lapack_may_deadlock():
    from sensitivity.analyses.ensemble import IMPLICIT_ADJOINT_BATCH, _lapack_may_deadlock, choose_batch

    rob = sens.Problem(models.get("robertson"), [0.0, 1.0], wrt=["k1", "k2", "k3"])
    b = choose_batch(rob, "gradient", "adjoint", 1000)
    assert b == IMPLICIT_ADJOINT_BATCH if _lapack_may_deadlock(rob) else b > IMPLICIT_ADJOINT_BATCH
    assert choose_batch(rob, "simulate", None, 1000) > IMPLICIT_ADJOINT_BATCH  # plain solves never hung
    lv = sens.Problem(models.get("lotka_volterra"), [0.0, 1.0], wrt=["alpha"])
    assert not _lapack_may_deadlock(lv)  # Tsit5: no LU
