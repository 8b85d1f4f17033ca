"""Where the chunks of an ensemble run: this process, or a Dask cluster.

An executor has one method, `run(work, spec, X, chunks, todo, retries)`, which calls
`work(spec, rows)` (`ensemble.run_chunk`) on each chunk's rows and yields
`(chunk index, result dict, None)` for each finished chunk, or `(index, None, error)` for
a chunk that failed on every try, in any order; and `default_chunk(n_batches)`, the
batches per chunk it prefers. `resolve_executor` turns the user's `executor=` into one:

    None, "inprocess"        this process, chunk after chunk (the default; no Dask needed)
    a dask.distributed Client
    "tcp://host:8786"        a running scheduler (also tls://, ucx://, inproc://)
    "local", "local:N"       a LocalCluster of N worker processes (default: the CPU count),
                             started once per process and reused

Dask is imported only for the last three (`pip install -e ".[distributed]"`). What is
shipped to a worker: the `EnsembleSpec` (the Problem with its model, pickled by
cloudpickle: module-level right-hand sides by reference, so the worker must be able to
import the model's module; closures and lambdas by value) and the chunk's rows of X. Each
worker traces and compiles the batched function once per ensemble and keeps it for every
chunk it runs; JAX's persistent compilation cache is shared where the filesystem is.
Workers must compute in float64 (a Dask worker started without JAX_ENABLE_X64 silently
computes in float32): a LocalCluster is started with JAX_ENABLE_X64=1 in its workers'
environment, every worker is switched to float64 when an executor connects, a restarted
worker switches when it unpickles its first chunk (importing the toolkit does), and every
chunk checks it.
"""

from __future__ import annotations

import atexit
import math
import os
from typing import Iterator

from ..core.errors import InputError, SensitivityError

WORKER_ENV = {"JAX_ENABLE_X64": "1", "EQX_ON_ERROR": "nan", "OMP_NUM_THREADS": "1"}
CHUNKS_PER_WORKER = 4  # default chunks per worker: balances load, keeps overhead small


class InProcess:
    """Chunks run here, one after the other; an exception propagates (it is a bug or a bad
    input, not a fault of a machine)."""

    name = "inprocess"

    def default_chunk(self, n_batches: int) -> int:
        return 1

    def run(self, work, spec, X, chunks, todo, retries) -> Iterator[tuple]:
        for i in todo:
            a, b = chunks[i]
            yield i, work(spec, X[a:b]), None


def _worker_setup():
    """Run on every worker: float64 on; returns whether it is."""
    os.environ.setdefault("JAX_ENABLE_X64", "1")
    import jax

    jax.config.update("jax_enable_x64", True)
    return bool(jax.config.read("jax_enable_x64"))


class DaskExecutor:
    """Chunks as Dask tasks on a `distributed.Client`: submitted at once, collected as they
    finish; a chunk whose task raised (or whose worker died, Dask then reschedules it) is
    retried `retries` times and then reported with its error."""

    def __init__(self, client):
        self.client = client
        self.name = f"dask:{client.scheduler.address}"
        ok = client.run(_worker_setup)
        bad = [w for w, v in ok.items() if not v]
        if bad:
            raise SensitivityError(f"Dask workers {bad} could not switch to float64 (jax_enable_x64)")

    def n_workers(self) -> int:
        return max(1, len(self.client.scheduler_info(n_workers=-1).get("workers", {})))

    def default_chunk(self, n_batches: int) -> int:
        return max(1, math.ceil(n_batches / (CHUNKS_PER_WORKER * self.n_workers())))

    def run(self, work, spec, X, chunks, todo, retries) -> Iterator[tuple]:
        from distributed import as_completed

        futures = {}
        for i in todo:
            a, b = chunks[i]
            f = self.client.submit(work, spec, X[a:b], key=f"sensitivity-chunk-{spec.token}-{i}",
                                   retries=retries, pure=False)
            futures[f] = i
        try:
            for f in as_completed(list(futures)):
                i = futures.pop(f)
                try:
                    result = f.result()
                except Exception as exc:  # noqa: BLE001 - reported per chunk
                    yield i, None, exc
                else:
                    yield i, result, None
                f.release()
        finally:  # an interrupt: the chunks not yet done are cancelled
            for f in futures:
                f.cancel()


_LOCAL: dict[int, object] = {}  # LocalCluster clients by worker count, one per process
_REMOTE: dict[str, object] = {}  # clients of scheduler addresses


def local_client(n_workers: int | None = None):
    """A Client of a LocalCluster with `n_workers` worker processes of one thread each,
    their environment set for float64; started once per process and size, closed at exit."""
    n = int(n_workers or os.cpu_count() or 1)
    if n in _LOCAL:
        return _LOCAL[n]
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("executor 'local': Dask is not installed; pip install -e \".[distributed]\"") from None
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, env=dict(WORKER_ENV),
                           dashboard_address=None)
    client = Client(cluster)
    _LOCAL[n] = client

    def close():
        client.close()
        cluster.close()
    atexit.register(close)
    return client


def _remote_client(address: str):
    """A Client of the scheduler at `address`, connected once per process."""
    if address in _REMOTE and _REMOTE[address].status == "running":
        return _REMOTE[address]
    try:
        from distributed import Client
    except ImportError:
        raise InputError(f"executor = '{address}': Dask is not installed; pip install -e \".[distributed]\"") from None
    try:
        client = Client(address, timeout="20s")
    except (OSError, TimeoutError) as exc:
        raise InputError(f"executor = '{address}': cannot reach the Dask scheduler ({exc})") from None
    _REMOTE[address] = client
    atexit.register(client.close)
    return client


def resolve_executor(executor):
    """An executor for `executor=`: see the module docstring. Raises InputError for an
    unknown value."""
    if executor is None or executor == "inprocess":
        return InProcess()
    if isinstance(executor, (InProcess, DaskExecutor)):
        return executor
    if isinstance(executor, str):
        text = executor.strip()
        if text == "local" or text.startswith("local:"):
            count = text.partition(":")[2]
            if count and not (count.isdigit() and int(count) >= 1):
                raise InputError(f"executor = '{executor}': expected local or local:N with N >= 1 workers")
            return DaskExecutor(local_client(int(count) if count else None))
        if "://" in text:
            return DaskExecutor(_remote_client(text))
        raise InputError(f"executor = '{executor}' is unknown; valid: inprocess, local, local:N, "
                         "a scheduler address tcp://host:8786, or a dask.distributed Client")
    if type(executor).__name__ == "Client" and hasattr(executor, "submit"):
        return DaskExecutor(executor)
    raise InputError(f"executor = {executor!r} is not valid; valid: None (in process), 'local:N', "
                     "'tcp://host:port' or a dask.distributed Client")
