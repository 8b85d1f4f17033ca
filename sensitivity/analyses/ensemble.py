"""Ensembles: one problem evaluated at many input vectors, vmapped in batches.

`ensemble(problem, X, task)` evaluates the problem at every row of X (n_samples, n_inputs)
(rows are input vectors as `Problem.x0()` returns them). The rows are cut into batches of
one size; each batch goes through ONE compiled function, `jax.vmap` of the per-sample map
built on `solve.output_function` (a solve, a forward Jacobian, an adjoint gradient, ...),
so the compile is paid once per batch size and the last batch is padded to that size.
Batches are grouped into chunks (whole batches) that an executor runs: in this process
by default, or on a Dask cluster (`executors.py`). A sample whose solve fails is kept and
marked: NaN in its values and a non-zero `status` (the solver's result code), never
dropped.

The result is an `xarray.Dataset` with a `sample` dimension:

    x         (sample, input)                   the input vectors
    outputs   (sample, time, output)            the outputs at the save times
    status    (sample,)                         0 = successful, else why it failed
    num_steps (sample,)                         solver steps
    jacobian  (sample, time, output, input)     task "jacobian"
    value     (sample,), gradient (sample, input)   task "gradient"

Chunks may stream to a store on disk (`store=`), so an interrupted run resumes
(`resume=True`) and computes only the chunks that are missing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ..ad import adjoint, forward
from ..ad.cost import default_checkpoints
from ..ad.objective import loss_function, scalar_objective
from ..ad.quadrature import with_quadrature
from ..api import _adjoint_problem, plan
from ..core.errors import InputError, SensitivityError
from ..core.problem import Problem
from ..core.solvers import TABLE
from ..integrate import compiled
from ..integrate import lean as lean_rk
from ..integrate.solve import output_function, values_of
from ..solvers.compat import result_code, result_names
from ..solvers.registry import solver_name
from .executors import resolve_executor

TASKS = ("simulate", "jacobian", "gradient")
MODES = ("auto", "forward", "adjoint")
DEFAULT_MEMORY_BUDGET = 2**30  # bytes a batch may use (results and solver work arrays)
MAX_BATCH = 256  # more samples per batch gain little once the vector units are full
MAX_BATCH_SIMULATE = 1024  # plain solves are cheap: larger batches cut the per-batch overhead
LEAN_ELEMENTS = 4096  # lean solves: batch x n_states at most this (the working set in cache)
BYTES = 8
LEAN = True  # simulate Tsit5 problems with lean_rk (False: always diffrax; for comparisons)

# status codes: 0 and the solver's own codes (diffrax.RESULTS), then the toolkit's
NON_FINITE = 100  # the solver reported success but a value is NaN or inf
CHUNK_FAILED = 101  # the chunk holding the sample failed on every try (an executor fault)


def status_meanings() -> dict[int, str]:
    """Status code -> name: 0 successful, the solver's failure codes, non_finite, chunk_failed."""
    out = result_names(diffrax.RESULTS)
    out[NON_FINITE] = "non_finite"
    out[CHUNK_FAILED] = "chunk_failed"
    return dict(sorted(out.items()))


class ChunkError(SensitivityError):
    """Every chunk of an ensemble failed; the message says why (the first error)."""


# --------------------------------------------------------------------------- the work
@dataclass(frozen=True, eq=False)
class EnsembleSpec:
    """What a worker needs to evaluate chunks: the problem, the task, the objective, the
    mode ("forward" | "adjoint" for jacobian and gradient, None for simulate), the batch size,
    and a token naming this ensemble (a worker keeps one copy per token, so its compiled
    function is reused by every chunk it runs). Pickled to Dask workers (cloudpickle)."""

    problem: Problem
    task: str
    objective: Callable | None
    mode: str | None
    batch: int
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def per_sample(self) -> Callable:
        """g(x, values) -> (outputs (n_times, n_of), aux, results dict) for one input vector."""
        p, task, mode = self.problem, self.task, self.mode
        if task == "simulate":
            # Tsit5 without events: the lean solve, diffrax's steps without its per-step
            # machinery (which, vmapped, outweighs a small model's arithmetic; lean_rk.py),
            # else diffrax's
            f = lean_rk.output_function(p) if self.lean() else output_function(p, "checkpoint")

            def g(x, values):
                out, aux = f(x, values)
                return out, aux, {}
            return g
        if task == "jacobian" and mode == "forward":
            f = output_function(p, "forward")

            def g(x, values):
                out, aux, J = forward.forward_jacobian(f, x, values)
                return out, aux, {"jacobian": J}
            return g
        if task == "jacobian":
            f = output_function(p, p.adjoint)
            n_times, n_of = p.times.size, len(p.of)

            def g(x, values):
                out, aux, J = adjoint.reverse_jacobian(f, x, values, n_times, n_of)
                return out, aux, {"jacobian": J}
            return g
        obj = scalar_objective(self.objective)
        if mode == "forward":
            f = output_function(p, "forward")

            def g(x, values):
                def composed(x_, values_):
                    out, aux = f(x_, values_)
                    return (obj(out), out), aux
                (value, out), aux, t = forward.push(composed, x, values, jnp.eye(x.size, dtype=x.dtype))
                return out, aux, {"value": value, "gradient": t[0]}
            return g
        f = output_function(p, p.adjoint)

        def g(x, values):
            (value, (out, aux)), grad = jax.value_and_grad(loss_function(f, obj, values), has_aux=True)(x)
            return out, aux, {"value": value, "gradient": grad}
        return g

    def lean(self) -> bool:
        """Whether the task runs the lean Tsit5 solve (`lean_rk.applies`): simulate, and
        gradient by the adjoint (lean_rk's discrete adjoint, equal to diffrax's
        checkpointed one to rounding)."""
        return uses_lean(self.problem, self.task, self.mode)

    def key(self, capacity: int = 0) -> tuple:
        return self.problem.structure_key(fn=f"ensemble_{self.task}", mode=self.mode,
                                          objective=self.objective, solver_used=solver_name(self.problem),
                                          lean=self.lean(), capacity=capacity)

    def build(self, capacity: int = 0) -> Callable:
        """The batched function G(X (batch, n_inputs), values) -> dict of arrays with a
        leading batch axis: outputs, result (solver code), num_steps, and the task's results
        (a lean gradient also `accepted`, checked against `capacity`, its stored steps)."""
        if self.task == "gradient" and self.lean():
            return lean_rk.gradient_function(self.problem, scalar_objective(self.objective), capacity)
        g = self.per_sample()

        def one(x, values):
            out, aux, res = g(x, values)
            return {"outputs": out, "result": result_code(aux["result"]), "num_steps": aux["num_steps"], **res}

        return jax.vmap(one, in_axes=(0, None))


_SPECS: dict[str, EnsembleSpec] = {}  # token -> the first copy a process saw (keeps compiles)
_CAPACITY: dict[str, int] = {}  # token -> the lean adjoint's stored steps that sufficed so far


def run_chunk(spec: EnsembleSpec, X: np.ndarray) -> dict:
    """Evaluate the rows of X (k, n_inputs) batch by batch (the last one padded with copies
    of the first row) through the spec's one compiled function. Returns numpy arrays over
    the k samples (status codes applied, failed samples NaN) and `_info` (compiles, seconds,
    whether this process computes in float64)."""
    spec = _SPECS.setdefault(spec.token, spec)
    if len(_SPECS) > 16:  # forget the oldest ensembles
        _SPECS.pop(next(iter(_SPECS)))
    if not jax.config.read("jax_enable_x64"):
        raise SensitivityError(
            "this process computes in float32 (jax_enable_x64 is off): ensembles need float64. "
            "Start Dask workers with JAX_ENABLE_X64=1 in their environment.")
    X = np.asarray(X, dtype=np.float64)
    k, B = X.shape[0], spec.batch
    values = values_of(spec.problem)
    lean_gradient = spec.task == "gradient" and spec.lean()
    parts: list[dict] = []
    compiles, compile_s, run_s = 0, 0.0, 0.0
    for start in range(0, k, B):
        Xb = X[start:start + B]
        n_real = Xb.shape[0]
        if n_real < B:
            Xb = np.concatenate([Xb, np.repeat(Xb[:1], B - n_real, axis=0)])
        args = (jnp.asarray(Xb), values)
        while True:
            cap = _CAPACITY.get(spec.token, lean_rk.initial_capacity(spec.problem, B)) if lean_gradient else 0
            exe, seconds = compiled.compiled(spec.key(cap), lambda: spec.build(cap), args)
            compiles += seconds > 0
            compile_s += seconds
            t = time.perf_counter()
            out = jax.block_until_ready(exe(*args))
            run_s += time.perf_counter() - t
            if not lean_gradient:
                break
            most = int(np.max(np.asarray(out.pop("accepted"))))
            if most <= cap:
                break
            # a sample took more accepted steps than the lean adjoint stored: rerun the
            # batch storing enough (a power of 2, kept for the next batches)
            _CAPACITY[spec.token] = 1 << (most - 1).bit_length()
        parts.append({name: np.asarray(a)[:n_real] for name, a in out.items()})
    res = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    status = res.pop("result").astype(np.int64)
    floats = [name for name in res if name != "num_steps"]
    finite = np.ones(k, dtype=bool)
    for name in floats:
        finite &= np.all(np.isfinite(res[name].reshape(k, -1)), axis=1)
    status = np.where((status == 0) & ~finite, NON_FINITE, status)
    bad = status != 0
    for name in floats:
        res[name] = np.where(bad.reshape((k,) + (1,) * (res[name].ndim - 1)), np.nan, res[name])
    res["status"] = status
    res["_info"] = {"compiles": int(compiles), "compile_seconds": compile_s, "run_seconds": run_s,
                    "float64": bool(jax.config.read("jax_enable_x64")) and res["outputs"].dtype == np.float64,
                    "pid": os.getpid()}
    return res


# --------------------------------------------------------------------------- batch size
def memory_per_sample(problem: Problem, task: str, mode: str | None, objective=None) -> int:
    """Estimated bytes one sample of a batch needs: its results (outputs, Jacobian or
    gradient) and the solver's work arrays (saved states, stages, tangents or the
    checkpoints of the adjoint), doubled for XLA's temporaries."""
    n, T, O, S = problem.n_inputs, problem.times.size, len(problem.of), problem.model.n_states
    results = T * O + (T * O * n if task == "jacobian" else n + 1 if task == "gradient" else 0)
    solve = T * (S + O) + 16 * S
    work = 0
    if mode == "forward":
        work = (n + 1) * (T * (S + O) + 8 * S)
    elif mode == "adjoint":
        ck = problem.checkpoints or default_checkpoints(None, problem.max_steps)
        width = min(T * O, adjoint.ROWS_PER_BATCH) if task == "jacobian" else 1
        work = (ck + width) * 8 * S + width * n
    return int(2 * BYTES * (results + solve + work))


def uses_lean(problem: Problem, task: str, mode: str | None) -> bool:
    """Whether `task` runs the lean Tsit5 solve of `lean_rk`: simulate, or a gradient by the
    adjoint, of a problem `lean_rk.applies` to (and `LEAN` on)."""
    return (LEAN and (task == "simulate" or (task == "gradient" and mode == "adjoint"))
            and lean_rk.applies(problem))


def choose_batch(problem: Problem, task: str, mode: str | None, n_samples: int,
                 memory_budget: int | None = None) -> int:
    """The batch size: a power of 2, as many samples as the memory budget holds, at most
    MAX_BATCH (MAX_BATCH_SIMULATE for task "simulate", whose samples are cheap enough for
    the fixed cost of each batch (Python, transfers) to count; for the lean solve at most
    LEAN_ELEMENTS / n_states, its arrays then stay in cache) and at most n_samples rounded up to a power of 2 (ensembles of similar sizes
    then share one compiled function; a small one pads at most 2x), at least 1."""
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    per = memory_per_sample(problem, task, mode)
    fit = max(1, budget // max(per, 1))
    want = 1 << max(0, int(n_samples) - 1).bit_length()  # n_samples rounded up to a power of 2
    cap = MAX_BATCH_SIMULATE if task == "simulate" else MAX_BATCH
    if uses_lean(problem, task, mode):
        # the lean loop's arrays (batch, n_states) should stay in cache: once they outgrow
        # it, every stage reads and writes memory instead, and a larger batch runs slower
        # per sample, not faster (the more states, the smaller the best batch)
        fit_cache = max(1, LEAN_ELEMENTS // max(problem.model.n_states, 1))
        cap = min(cap, 1 << (int(fit_cache).bit_length() - 1))
    if task != "simulate" and mode == "adjoint" and _lapack_may_deadlock(problem):
        cap = min(cap, IMPLICIT_ADJOINT_BATCH)
    return int(max(1, min(cap, want, 1 << (int(fit).bit_length() - 1))))


IMPLICIT_ADJOINT_BATCH = 8  # see _lapack_may_deadlock


def _lapack_may_deadlock(problem: Problem) -> bool:
    """Whether a vmapped adjoint of this problem may hang in jaxlib's CPU LAPACK: the solver
    is implicit (batched LU inside), jaxlib is older than 0.11.2, and multithreaded Eigen is
    on. jaxlib 0.10's batched getrf (`jax::ParallelBatchMap`) splits a batch into tasks on
    XLA's intra-op pool and waits for them on a pool thread; when as many LU calls run at
    once as the pool has threads (2 on a 2-core machine), every thread waits and nothing
    runs: 0% CPU, forever (gdb stack in benchmarks/results/xla_hang.md). Small batches stay
    on the kernel's serial path; so an automatic batch size stays at 8 there (a `batch=` given is used
    as it is)."""
    import jaxlib

    if "xla_cpu_multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", ""):
        return False
    try:
        version = tuple(int(v) for v in jaxlib.__version__.split(".")[:3])
    except ValueError:
        return True
    if version >= (0, 11, 2):
        return False
    return TABLE[solver_name(problem)].stiff


# --------------------------------------------------------------------------- store
class ChunkStore:
    """Finished chunks on disk, one `.npz` file per batch named by its sample range, under a
    folder with a manifest that fingerprints the ensemble (samples, task, mode, batch size,
    problem): a resumed run only reuses chunks of the same ensemble. Files are written
    atomically."""

    def __init__(self, path: str | Path, fingerprint: str, resume: bool, batch: int):
        self.path = Path(path)
        self.batch = int(batch)
        manifest = self.path / "manifest.json"
        if self.path.exists() and not (self.path.is_dir() and (manifest.exists() or not any(self.path.iterdir()))):
            raise InputError(f"store: {self.path} exists and is not a chunk store (no manifest.json); "
                             "choose a new or empty folder")
        if self.path.exists() and not resume:
            shutil.rmtree(self.path)
        if self.path.exists() and manifest.exists():
            found = json.loads(manifest.read_text()).get("fingerprint")
            if found != fingerprint:
                raise InputError(
                    f"resume: the chunk store {self.path} holds chunks of a different ensemble "
                    "(other samples, task, mode or batch size); run without resume to start afresh, "
                    "or remove the folder")
        self.path.mkdir(parents=True, exist_ok=True)
        manifest.write_text(json.dumps({"fingerprint": fingerprint}))

    def _file(self, a: int, b: int) -> Path:
        return self.path / f"batch-{a:09d}-{b:09d}.npz"

    def _spans(self, span: tuple[int, int]) -> list[tuple[int, int]]:
        a, b = span
        return [(s, min(b, s + self.batch)) for s in range(a, b, self.batch)]

    def has(self, span: tuple[int, int]) -> bool:
        """Whether every batch of the chunk of samples [a, b) is stored: files hold one batch
        each, so a run resumed with another chunk layout (another executor) reuses them."""
        return all(self._file(*s).exists() for s in self._spans(span))

    def load(self, span: tuple[int, int]) -> dict:
        parts = []
        for s in self._spans(span):
            with np.load(self._file(*s)) as data:
                parts.append({k: data[k] for k in data.files})
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def save(self, span: tuple[int, int], result: dict) -> None:
        a = span[0]
        for s, e in self._spans(span):
            tmp = self.path / f".batch-{s}.{uuid.uuid4().hex[:8]}.npz"
            np.savez(tmp, **{k: v[s - a:e - a] for k, v in result.items() if not k.startswith("_")})
            os.replace(tmp, self._file(s, e))

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def fingerprint(spec: EnsembleSpec, X: np.ndarray) -> str:
    """A hash of what decides the samples' results (not the objective's code: its name).
    The chunk layout is not part of it: files hold one batch each, so a run resumed with
    another executor (other chunks of whole batches) reuses them."""
    p = spec.problem
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(X, dtype=np.float64).tobytes())
    h.update(repr((spec.task, spec.mode, spec.batch, p.model.name, p.input_names, p.of,
                   p.times.tolist(), p.solver, p.rtol, p.atol, p.max_steps, p.adjoint,
                   getattr(spec.objective, "__qualname__", repr(spec.objective)),
                   {k: v.tolist() for k, v in p.parameters.items()}, p.y0.tolist())).encode())
    return h.hexdigest()[:32]


# --------------------------------------------------------------------------- the API
def _mode(problem: Problem, task: str, objective, mode: str) -> tuple[Problem, str | None, object]:
    if mode not in MODES:
        raise InputError(f"mode = '{mode}' is unknown; valid: {', '.join(MODES)}")
    if task == "simulate":
        return problem, None, None
    if task == "gradient" and mode == "auto" and LEAN and lean_rk.applies(problem):
        # lean_rk's discrete adjoint: a gradient costs a few solves whatever the number of
        # inputs (forward mode carries one tangent per input)
        mode = "adjoint"
    p = plan(problem, objective, task=task, mode=mode, probe_problem=False)
    if p.mode == "adjoint":
        problem = _adjoint_problem(problem, p)
    return problem, p.mode, p


def ensemble(problem: Problem, X, task: str = "simulate", objective: Callable | None = None,
             batch: int | None = None, executor=None, mode: str = "auto",
             memory_budget: int | None = None, chunk: int | None = None, store=None,
             resume: bool = False, retries: int = 2, progress: bool | None = None,
             check: Callable[[], None] | None = None):
    """Evaluate `problem` at every row of X (n_samples, n_inputs): one compiled, vmapped
    function per batch size.

    task: "simulate" (outputs), "jacobian" (d outputs / d inputs per sample) or "gradient"
    (objective(outputs) -> scalar, its value and gradient per sample). mode: for jacobian
    and gradient, "auto" (the cost model chooses forward or adjoint), "forward", "adjoint".
    batch: samples per vmapped batch (default: a power of 2, what `memory_budget` bytes
    hold, at most 256 and at most n_samples rounded up); a batch given is used as it is, padded if X has fewer
    rows, so ensembles of different sizes share one compiled function. executor: None (this process), a Dask `Client`, a scheduler address
    "tcp://host:8786", or "local" / "local:N" (a LocalCluster of N worker processes); see
    `sensitivity.executors`. chunk: batches per executor task (default: 1 in process, a
    few per worker on Dask). store: a folder where finished chunks are kept; resume=True
    reuses those of the same ensemble. retries: extra tries of a failed chunk (Dask).
    progress: a progress bar of chunks (None: only on a terminal). check: called after
    every chunk; it may raise (e.g. KeyboardInterrupt) to stop the run, whose finished
    chunks stay in the store.

    Returns an `xarray.Dataset` with dimension `sample` (see the module docstring); failed
    samples are NaN with a non-zero `status` (`status.attrs` maps codes to names).
    """
    if task not in TASKS:
        raise InputError(f"task = '{task}' is unknown; valid: {', '.join(TASKS)}")
    if task == "gradient" and objective is None:
        raise InputError("task = 'gradient' needs an objective: objective(ys) -> scalar, ys (n_times, n_of)")
    if objective is not None:
        scalar_objective(objective)
    if task == "gradient":  # an integral objective: a quadrature state of the solve (same inputs)
        problem, objective = with_quadrature(problem, objective)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1 and problem.n_inputs == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[1] != problem.n_inputs or X.shape[0] < 1:
        raise InputError(f"X has shape {X.shape}, expected (n_samples, {problem.n_inputs}): one row per "
                         f"sample, one column per input ({', '.join(problem.input_names[:6])}"
                         f"{', ...' if problem.n_inputs > 6 else ''})")
    if not np.all(np.isfinite(X)):
        rows = np.flatnonzero(~np.all(np.isfinite(X), axis=1))
        raise InputError(f"X has NaN or inf in rows {rows[:10].tolist()}")
    if batch is not None and not (isinstance(batch, (int, np.integer)) and batch >= 1):
        raise InputError(f"batch = {batch!r} must be a positive integer or None (chosen from memory)")
    n = X.shape[0]
    run_problem, run_mode, the_plan = _mode(problem, task, objective, mode)
    B = int(batch) if batch else choose_batch(run_problem, task, run_mode, n, memory_budget)
    spec = EnsembleSpec(run_problem, task, objective if task == "gradient" else None, run_mode, B)
    ex = resolve_executor(executor)
    n_batches = math.ceil(n / B)
    per_chunk = int(chunk) if chunk else ex.default_chunk(n_batches)
    if per_chunk < 1:
        raise InputError(f"chunk = {chunk!r} must be a positive number of batches")
    chunks = [(s * B, min(n, (s + per_chunk) * B)) for s in range(0, n_batches, per_chunk)]
    chunk_store = ChunkStore(store, fingerprint(spec, X), resume, B) if store is not None else None

    results: dict[int, dict] = {}
    if chunk_store is not None:
        for i in range(len(chunks)):
            if chunk_store.has(chunks[i]):
                results[i] = chunk_store.load(chunks[i])
    resumed = len(results)
    todo = [i for i in range(len(chunks)) if i not in results]
    infos, failures = [], {}
    started = time.perf_counter()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(chunks), initial=resumed, unit="chunk", desc=f"ensemble {task}",
               disable=(not progress) if progress is not None else None, leave=False)
    try:
        for i, res, err in ex.run(run_chunk, spec, X, chunks, todo, retries):
            if err is not None:
                failures[i] = err
            else:
                infos.append(res.pop("_info", {}))
                results[i] = res
                if chunk_store is not None:
                    chunk_store.save(chunks[i], res)
            bar.update(1)
            if check is not None:
                check()
    finally:
        bar.close()
    wall = time.perf_counter() - started
    if failures and len(failures) == len(chunks):
        first = next(iter(failures.values()))
        raise ChunkError(f"every chunk of the ensemble failed ({len(chunks)} chunks); the first error: "
                         f"{type(first).__name__}: {first}")
    failed_report = []
    for i, err in sorted(failures.items()):
        a, b = chunks[i]
        failed_report.append({"chunk": i, "samples": [a, b], "error": f"{type(err).__name__}: {err}"})
        warnings.warn(f"ensemble: chunk {i} (samples {a}..{b - 1}) failed on every try: "
                      f"{type(err).__name__}: {err}; its samples are marked status {CHUNK_FAILED} "
                      f"(chunk_failed)", RuntimeWarning, stacklevel=2)
    ds = _dataset(spec, X, chunks, results)
    ds.attrs.update({
        "task": task, "mode": str(run_mode),
        "variant": "lean" if spec.lean() else str(run_problem.adjoint if run_mode == "adjoint" else None),
        "batch": B, "n_batches": n_batches, "chunks": len(chunks), "batches_per_chunk": per_chunk,
        "chunks_computed": len(chunks) - resumed - len(failures), "chunks_resumed": resumed,
        "chunks_failed": json.dumps(failed_report), "executor": ex.name,
        "compiles": int(sum(i.get("compiles", 0) for i in infos)),
        "compile_seconds": float(sum(i.get("compile_seconds", 0.0) for i in infos)),
        "run_seconds": float(sum(i.get("run_seconds", 0.0) for i in infos)),
        "wall_seconds": wall, "workers_float64": int(all(i.get("float64", True) for i in infos)),
        "n_failed": int(np.sum(ds["status"].values != 0)),
    })
    if the_plan is not None:
        ds.attrs["plan"] = the_plan.explain()
    if chunk_store is not None and not failures:
        ds.attrs["store"] = str(chunk_store.path)
    return ds


def _dataset(spec: EnsembleSpec, X: np.ndarray, chunks, results: dict):
    import xarray as xr

    p, n = spec.problem, X.shape[0]
    T, O, N = p.times.size, len(p.of), p.n_inputs
    shapes = {"outputs": (T, O), "num_steps": (), "status": ()}
    if spec.task == "jacobian":
        shapes["jacobian"] = (T, O, N)
    if spec.task == "gradient":
        shapes.update(value=(), gradient=(N,))
    full = {k: np.full((n,) + s, np.nan) for k, s in shapes.items()}
    full["num_steps"] = np.zeros(n, dtype=np.int64)
    full["status"] = np.full(n, CHUNK_FAILED, dtype=np.int64)
    for i, (a, b) in enumerate(chunks):
        if i in results:
            for k in shapes:
                full[k][a:b] = results[i][k]
    dims = {"outputs": ("sample", "time", "output"), "num_steps": ("sample",), "status": ("sample",),
            "jacobian": ("sample", "time", "output", "input"), "value": ("sample",),
            "gradient": ("sample", "input")}
    meanings = status_meanings()
    long = {"outputs": "model outputs at the save times", "num_steps": "solver steps",
            "jacobian": "d output / d input", "value": "objective value",
            "gradient": "d objective / d input"}
    data = {k: (dims[k], v, {"long_name": long.get(k, k)}) for k, v in full.items()}
    data["status"] = (("sample",), full["status"], {
        "long_name": "0 if the sample succeeded, else why it failed",
        "flag_values": np.array(list(meanings), dtype=np.int64),
        "flag_meanings": " ".join(meanings.values())})
    data["x"] = (("sample", "input"), X, {"long_name": "input values of each sample"})
    coords = {"sample": np.arange(n), "time": p.times, "output": list(p.of), "input": list(p.input_names)}
    return xr.Dataset(data, coords=coords, attrs={"model": p.model.name})
