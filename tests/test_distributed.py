"""Ensembles on Dask: one module-scoped LocalCluster of 2 worker processes (starting one
costs seconds). The same indices as in process, float64 on the workers, a chunk failing on
every try reported with its samples, a worker killed mid-run, resume from the chunk store,
the CLI's --executor."""

import glob
import os
import signal
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens
from sensitivity import models

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.timeout(600)  # a hung cluster fails the module instead of CI

import cloudpickle  # noqa: E402  (a dependency of distributed)

from sensitivity.analyses.executors import _LOCAL, _REMOTE, DaskExecutor, local_client, resolve_executor  # noqa: E402

# the workers cannot import this test module: ship its functions by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])

BATCH = 64
RANGES = {"alpha": (0.8, 1.2), "beta": (0.08, 0.12), "gamma": (1.2, 1.8), "delta": (0.6, 0.9)}


@pytest.fixture(scope="module")
def client():
    c = local_client(2)
    yield c
    _LOCAL.pop(2, None)
    c.close()
    c.cluster.close(timeout=10)


@pytest.fixture(scope="module")
def executor(client):
    return resolve_executor(client)


@pytest.fixture(scope="module")
def prob():
    # one problem structure (and batch size) for every test here: each worker compiles once
    return sens.Problem(models.get("lotka_volterra"), np.linspace(0.0, 30.0, 7), rtol=1e-10, atol=1e-10)


@pytest.fixture(scope="module")
def in_process(prob):
    return sens.sobol(prob, RANGES, n=128, seed=2, batch=BATCH)


def test_local2_gives_exactly_the_in_process_indices(prob, client, executor, in_process):
    res = sens.sobol(prob, RANGES, n=128, seed=2, batch=BATCH, executor=executor)
    assert res.data.attrs["ensemble_executor"].startswith("dask:")
    assert res.samples.attrs["chunks"] > 1
    for key in ("S1", "S1_conf", "ST", "ST_conf"):
        np.testing.assert_array_equal(res[key].values, in_process[key].values)
    np.testing.assert_array_equal(res.samples["outputs"].values, in_process.samples["outputs"].values)
    # "local:2" names the same cluster (started once per process)
    again = sens.ensemble(prob, in_process.samples["x"].values[:BATCH], batch=BATCH, executor="local:2")
    np.testing.assert_array_equal(again["outputs"].values, in_process.samples["outputs"].values[:BATCH])
    # a scheduler address connects a client of its own to the same cluster
    address = client.scheduler.address
    by_address = sens.ensemble(prob, in_process.samples["x"].values[:BATCH], batch=BATCH, executor=address)
    assert by_address.attrs["executor"] == f"dask:{address}"
    np.testing.assert_array_equal(by_address["outputs"].values, again["outputs"].values)
    _REMOTE.pop(address).close()  # one client per process from here on


def _x64_off_then_setup():
    jax.config.update("jax_enable_x64", False)
    from sensitivity.analyses.executors import _worker_setup

    return _worker_setup()


def _one_plus_tiny():
    return float(jnp.asarray(1.0) + 1e-12)


def test_workers_compute_in_float64(client, prob, executor, in_process):
    assert all(v == "1" for v in client.run(lambda: os.environ.get("JAX_ENABLE_X64")).values())
    assert all(v == 1.0 + 1e-12 for v in client.run(_one_plus_tiny).values())  # 1.0 in float32
    # a worker that lost float64 is switched back when an executor connects
    assert all(client.run(_x64_off_then_setup).values())
    X = in_process.samples["x"].values[:BATCH]
    ds = sens.ensemble(prob, X * (1 + 1e-9), batch=BATCH, executor=DaskExecutor(client))
    assert ds.attrs["workers_float64"] == 1 and ds["outputs"].dtype == np.float64
    # a relative change of 1e-9 in the inputs shows in the outputs: impossible in float32
    diff = np.abs(ds["outputs"].values[:, 1:] - in_process.samples["outputs"].values[:BATCH, 1:])
    assert 0 < np.median(diff / np.abs(in_process.samples["outputs"].values[:BATCH, 1:])) < 1e-6


def _refuse(k):
    if np.any(np.asarray(k) == 999.0):
        raise RuntimeError("poisoned sample")
    return np.zeros(np.shape(k))


def poisoned_rhs(t, y, p):
    z = jax.pure_callback(_refuse, jax.ShapeDtypeStruct(jnp.shape(p["k"]), y.dtype), p["k"],
                          vmap_method="broadcast_all")
    return -p["k"] * y + z


def test_a_chunk_failing_every_try_is_reported_with_its_samples(executor):
    model = sens.ODEModel("poisoned_decay", ["y"], {"k": 1.0}, poisoned_rhs, [1.0])
    prob = sens.Problem(model, [0.0, 1.0])
    X = np.linspace(0.5, 1.5, 4 * 8)[:, None]
    X[13] = 999.0  # in the second chunk of 8 samples
    with pytest.warns(RuntimeWarning, match=r"chunk 1 \(samples 8\.\.15\) failed on every try"):
        ds = sens.ensemble(prob, X, batch=8, chunk=1, executor=executor, retries=1)
    assert ds.attrs["chunks_failed"].startswith('[{"chunk": 1, "samples": [8, 16]')
    meanings = dict(zip(ds["status"].attrs["flag_values"], ds["status"].attrs["flag_meanings"].split()))
    status = ds["status"].values
    assert {meanings[s] for s in status[8:16]} == {"chunk_failed"} and np.all(status[:8] == 0)
    assert np.all(np.isnan(ds["outputs"].values[8:16])) and np.all(status[16:] == 0)
    np.testing.assert_allclose(ds["outputs"].values[16:, -1, 0], np.exp(-X[16:, 0]), rtol=1e-6)
    X[:] = 999.0
    with pytest.raises(sens.SensitivityError, match="every chunk of the ensemble failed"):
        sens.ensemble(prob, X, batch=8, chunk=1, executor=executor, retries=0)


def test_resume_computes_only_missing_chunks(prob, executor, in_process, tmp_path):
    X = in_process.samples["x"].values[: 6 * BATCH]
    store = tmp_path / "store"
    first = sens.ensemble(prob, X, batch=BATCH, chunk=1, executor=executor, store=store)
    files = sorted(store.glob("batch-*.npz"))
    assert len(files) == 6
    for f in files[1::2]:
        f.unlink()
    again = sens.ensemble(prob, X, batch=BATCH, chunk=1, executor=executor, store=store, resume=True)
    assert again.attrs["chunks_computed"] == 3 and again.attrs["chunks_resumed"] == 3
    np.testing.assert_array_equal(again["outputs"].values, first["outputs"].values)
    # the store holds batches: a run of 3 chunks of 2 batches on Dask, cut short, resumes
    # in process (6 chunks of 1 batch) with what it finished
    files[0].unlink()
    files[3].unlink()
    here = sens.ensemble(prob, X, batch=BATCH, store=store, resume=True)
    assert here.attrs["chunks"] == 6 and here.attrs["chunks_computed"] == 2 and here.attrs["chunks_resumed"] == 4
    np.testing.assert_array_equal(here["outputs"].values, first["outputs"].values)
    files[2].unlink()
    two = sens.ensemble(prob, X, batch=BATCH, chunk=2, executor=executor, store=store, resume=True)
    assert two.attrs["chunks_computed"] == 1 and two.attrs["chunks_resumed"] == 2


def test_cli_executor_option(prob, client, tmp_path):
    from sensitivity.app import cli

    cfg = tmp_path / "lv.yaml"
    cfg.write_text("""
model: lotka_volterra
time: {start: 0.0, stop: 30.0, points: 7}
solver: {rtol: 1.0e-10, atol: 1.0e-10}
sensitivity: {wrt: [alpha, beta, gamma, delta]}
analysis:
  ranges: {alpha: [0.8, 1.2], beta: [0.08, 0.12], gamma: [1.2, 1.8], delta: [0.6, 0.9]}
  batch: 64
  sobol: {n: 128, seed: 2}
output: {plots: []}
""")
    out = tmp_path / "res"
    assert cli.main(["run", str(cfg), "--out", str(out), "-q", "--set", "sensitivity.probe=never",
                     "--executor", "local:2"]) == 0
    import json

    s = json.loads((out / "summary.json").read_text())["analysis"]["sobol"]["settings"]
    assert s["ensemble_executor"] == f"dask:{client.scheduler.address}"
    assert cli.main(["run", str(cfg), "--out", str(tmp_path / "x"), "-q", "--executor", "local:zero"]) == 2


def test_a_worker_killed_mid_run_loses_no_chunk(prob, client, executor, in_process, tmp_path):
    # a long run (16 chunks), one worker process killed (SIGKILL) once 2 chunks are in the
    # store: Dask reschedules its chunks on the other worker and the restarted one
    X = np.tile(in_process.samples["x"].values[:BATCH], (16, 1))
    pids = list(client.run(os.getpid).values())
    store = tmp_path / "store"
    box = {}
    run = threading.Thread(target=lambda: box.setdefault("ds", sens.ensemble(
        prob, X, batch=BATCH, chunk=1, executor=executor, store=store)))
    run.start()
    deadline = time.time() + 120
    while len(glob.glob(str(store / "batch-*.npz"))) < 2 and run.is_alive() and time.time() < deadline:
        time.sleep(0.005)
    done_at_kill = len(glob.glob(str(store / "batch-*.npz")))
    os.kill(pids[0], signal.SIGKILL)
    run.join(timeout=300)
    ds = box["ds"]
    assert done_at_kill < 16, "the run ended before the kill: make it longer"
    assert ds.attrs["chunks_failed"] == "[]" and ds.attrs["chunks_computed"] == 16
    assert np.all(ds["status"].values == 0)
    expected = np.tile(in_process.samples["outputs"].values[:BATCH], (16, 1, 1))
    np.testing.assert_array_equal(ds["outputs"].values, expected)
    assert pids[0] not in client.run(os.getpid).values()
