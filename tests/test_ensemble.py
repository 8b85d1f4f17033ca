"""sens.ensemble: vmapped batches through one compiled function, checked against single
solves and finite differences; failed samples marked; no recompile across batches; the
batch size from the memory budget; the per-chunk store and resume (in process)."""

import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens
from sensitivity import models
from sensitivity.analyses.ensemble import MAX_BATCH, MAX_BATCH_SIMULATE, choose_batch, memory_per_sample

TIMES = np.linspace(0.0, 6.0, 13)
TRACES = {"objective": 0}


def objective(ys):
    TRACES["objective"] += 1  # counts traces: one per compile
    return jnp.sum(ys ** 2) / ys.shape[0]


@pytest.fixture(scope="module")
def prob():
    return sens.Problem(models.get("lotka_volterra"), TIMES, wrt=["alpha", "beta", "gamma", "delta"],
                        rtol=1e-10, atol=1e-10, max_steps=4000)


@pytest.fixture(scope="module")
def X(prob):
    rng = np.random.default_rng(1)
    return prob.x0() * rng.uniform(0.8, 1.25, (37, prob.n_inputs))


@pytest.fixture(scope="module")
def sim(prob, X):
    return sens.ensemble(prob, X, batch=16)


def test_simulate_matches_single_solves(prob, X, sim):
    assert sim["outputs"].dims == ("sample", "time", "output")
    assert sim["outputs"].shape == (37, TIMES.size, 2)
    assert list(sim["input"].values) == list(prob.input_names)
    np.testing.assert_array_equal(sim["x"].values, X)
    assert np.all(sim["status"].values == 0)
    for i in (0, 17, 36):  # first batch, a middle one, the padded last one
        ref = sens.simulate(prob.with_inputs(X[i])).outputs
        np.testing.assert_allclose(sim["outputs"].values[i], ref, rtol=1e-10, atol=1e-12)


def test_one_compile_for_every_batch(prob, X, sim):
    # 37 rows in batches of 16: three batches, the last padded, one compiled function
    assert sim.attrs["n_batches"] == 3 and sim.attrs["batch"] == 16
    assert sim.attrs["compiles"] == 1
    again = sens.ensemble(prob, X[:20] * 1.01, batch=16)  # other values, same batch size
    assert again.attrs["compiles"] == 0
    # a gradient ensemble traces its objective once, for all its batches
    before = TRACES["objective"]
    g = sens.ensemble(prob, X, task="gradient", objective=objective, mode="adjoint", batch=16)
    assert TRACES["objective"] - before == 1 and g.attrs["compiles"] == 1
    assert g.attrs["mode"] == "adjoint"
    # value and gradient of objective against the outputs and central differences
    out = sim["outputs"].values
    np.testing.assert_allclose(g["value"].values, np.sum(out ** 2, axis=(1, 2)) / TIMES.size, rtol=1e-10)
    i, h = 5, 1e-6
    for j in range(prob.n_inputs):
        e = np.zeros(prob.n_inputs)
        e[j] = h * X[i, j]
        pair = sens.ensemble(prob, np.stack([X[i] + e, X[i] - e]), batch=16)["outputs"].values
        fd = (np.sum(pair[0] ** 2) - np.sum(pair[1] ** 2)) / TIMES.size / (2 * e[j])
        assert abs(g["gradient"].values[i, j] - fd) <= 1e-6 * abs(fd) + 1e-8


@pytest.fixture(scope="module")
def jac(prob, X):
    return sens.ensemble(prob, X[:3], task="jacobian", mode="forward", batch=16)


def test_forward_jacobian_ensemble_against_finite_differences(prob, X, sim, jac):
    assert jac["jacobian"].dims == ("sample", "time", "output", "input")
    assert jac.attrs["mode"] == "forward"
    np.testing.assert_allclose(jac["outputs"].values, sim["outputs"].values[:3], rtol=1e-12)
    h = 1e-6
    for j in range(prob.n_inputs):
        E = np.zeros_like(X[:3])
        E[:, j] = h * X[:3, j]
        pair = sens.ensemble(prob, np.concatenate([X[:3] + E, X[:3] - E]), batch=16)["outputs"].values
        fd = (pair[:3] - pair[3:]) / (2 * E[:, j])[:, None, None]
        err = np.abs(jac["jacobian"].values[..., j] - fd)
        assert np.all(err <= 1e-5 * np.abs(fd).max() + 1e-7)


def test_other_modes_agree(prob, X, jac):
    # a forward gradient and an adjoint Jacobian against the adjoint gradient and the
    # forward Jacobian of the tests above (each mode is its own compiled function)
    Xs = X[:3]
    g_fwd = sens.ensemble(prob, Xs, task="gradient", objective=objective, mode="forward", batch=16)
    g_adj = sens.ensemble(prob, Xs, task="gradient", objective=objective, mode="adjoint", batch=16)
    assert g_fwd.attrs["mode"] == "forward"
    np.testing.assert_allclose(g_fwd["gradient"].values, g_adj["gradient"].values, rtol=1e-7)
    j_adj = sens.ensemble(prob, Xs, task="jacobian", mode="adjoint", batch=16)
    assert j_adj.attrs["mode"] == "adjoint" and j_adj["jacobian"].shape == (3, TIMES.size, 2, 4)
    scale = np.abs(jac["jacobian"].values).max()
    np.testing.assert_allclose(j_adj["jacobian"].values, jac["jacobian"].values, rtol=0, atol=1e-7 * scale)


def test_failed_samples_are_marked_not_dropped(prob, X, sim):
    Xf = X[:6].copy()
    Xf[2, 1] = -1.0  # beta < 0: predators feed the prey, which explodes past max_steps
    ds = sens.ensemble(prob, Xf, batch=16)
    status = ds["status"].values
    meanings = dict(zip(ds["status"].attrs["flag_values"], ds["status"].attrs["flag_meanings"].split()))
    assert status[2] != 0 and meanings[status[2]] == "max_steps_reached"
    assert np.all(np.isnan(ds["outputs"].values[2]))
    ok = np.flatnonzero(status == 0)
    assert len(ok) >= 4 and ds.attrs["n_failed"] == np.sum(status != 0)
    assert np.all(np.isfinite(ds["outputs"].values[ok]))
    np.testing.assert_allclose(ds["outputs"].values[ok], sim["outputs"].values[ok], rtol=1e-12)


def test_batch_from_memory_budget(prob):
    per = memory_per_sample(prob, "jacobian", "forward")
    assert per > 8 * TIMES.size * 2 * prob.n_inputs  # at least the Jacobian itself
    assert choose_batch(prob, "jacobian", "forward", 1000, memory_budget=10 * per) == 8  # a power of 2
    assert choose_batch(prob, "simulate", None, 1000, memory_budget=1) == 1
    assert choose_batch(prob, "simulate", None, 1000) == min(MAX_BATCH_SIMULATE, 1024)
    assert choose_batch(prob, "gradient", "adjoint", 1000) == MAX_BATCH
    assert choose_batch(prob, "simulate", None, 7) == 8
    assert choose_batch(prob, "simulate", None, 1) == 1
    # the adjoint's checkpoints cost memory: fewer samples per batch than forward
    big = prob.replace(max_steps=10**6)
    assert memory_per_sample(big, "gradient", "adjoint") > memory_per_sample(prob, "gradient",
                                                                                             "adjoint")


def test_store_and_resume_compute_only_missing_chunks(prob, X, sim, tmp_path):
    store = tmp_path / "chunks"
    first = sens.ensemble(prob, X, batch=16, store=store)
    files = sorted(store.glob("batch-*.npz"))
    assert len(files) == 3 and first.attrs["chunks_computed"] == 3
    files[1].unlink()
    again = sens.ensemble(prob, X, batch=16, store=store, resume=True)
    assert again.attrs["chunks_resumed"] == 2 and again.attrs["chunks_computed"] == 1
    np.testing.assert_array_equal(again["outputs"].values, first["outputs"].values)
    np.testing.assert_allclose(again["outputs"].values, sim["outputs"].values, rtol=1e-12)
    with pytest.raises(sens.InputError, match="different ensemble"):
        sens.ensemble(prob, X[:30], batch=16, store=store, resume=True)
    fresh = sens.ensemble(prob, X, batch=16, store=store)  # without resume: starts afresh
    assert fresh.attrs["chunks_computed"] == 3
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's file")
    with pytest.raises(sens.InputError, match="is not a chunk store"):
        sens.ensemble(prob, X, batch=16, store=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").exists()

    def stop():  # what the CLI's Ctrl-C check does between chunks
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sens.ensemble(prob, X, batch=16, store=tmp_path / "cut", check=stop)
    assert len(list((tmp_path / "cut").glob("batch-*.npz"))) == 1
    rest = sens.ensemble(prob, X, batch=16, store=tmp_path / "cut", resume=True)
    assert rest.attrs["chunks_resumed"] == 1 and rest.attrs["chunks_computed"] == 2
    np.testing.assert_array_equal(rest["outputs"].values, first["outputs"].values)


def test_bad_input_is_an_input_error(prob, X):
    with pytest.raises(sens.InputError, match=r"X has shape \(37, 3\), expected \(n_samples, 4\)"):
        sens.ensemble(prob, X[:, :3])
    with pytest.raises(sens.InputError, match="task = 'hessian' is unknown"):
        sens.ensemble(prob, X, task="hessian")
    with pytest.raises(sens.InputError, match="needs an objective"):
        sens.ensemble(prob, X, task="gradient")
    with pytest.raises(sens.InputError, match="NaN or inf in rows \\[3\\]"):
        bad = X.copy()
        bad[3, 1] = np.nan
        sens.ensemble(prob, bad)
    with pytest.raises(sens.InputError, match="executor = 'cluster' is unknown"):
        sens.ensemble(prob, X, executor="cluster")
