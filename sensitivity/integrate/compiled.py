"""A cache of ahead-of-time compiled functions, keyed by problem structure.

Everything that only changes values (parameters, y0) is passed as array arguments, so a
second call with new values reuses the compiled executable; the key holds what changes the
program (model, wrt/of, number of save times, solver, mode...). A simulate's settings (save
times, t0, tolerances) are compiled in as constants the first time its structure meets them
and passed as arrays after that (`solve.run_checked` says why).
Compile time is measured apart from run time, so results and benchmarks can report both.
JAX's persistent compilation cache (configured in `sensitivity/__init__.py`) makes a second
process start fast as well.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable

import jax

from ..solvers.compat import equinox_errors_module
from ..stores import programs as export_store

_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
_MAX_ENTRIES = 64  # each executable holds memory mappings; a process has ~65k


def signature(args) -> tuple:
    """The argument structure, shapes and dtypes a compiled function is specific to."""
    return _signature(args)


def _signature(args) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return treedef, tuple([(getattr(a, "shape", ()), getattr(a, "dtype", type(a))) for a in leaves])


def compiled(key: tuple, build: Callable[[], Callable], args: tuple) -> tuple[Callable, float]:
    """The compiled form of `build()` for `args`, and the seconds spent compiling it now
    (0.0 on a cache hit). `build` is only called on a miss."""
    exe, seconds, _ = compiled_with_meta(key, build, args)
    return exe, seconds


def compiled_with_meta(key: tuple, build: Callable[[], Callable], args: tuple,
                       signature: tuple | None = None) -> tuple[Callable, float, dict]:
    """As `compiled`, with the metadata the traced function left in its `meta` dict attribute
    (if any) while it was traced. A miss first looks in the store of traced programs
    (`export_store`): a warm process then compiles (from JAX's disk cache) without tracing.
    `signature`: `signature(args)` if the caller already has it (it flattens the arguments' tree)."""
    full = (key, signature or _signature(args))
    hit = _CACHE.get(full)
    if hit is not None:
        _CACHE.move_to_end(full)
        return hit[0], 0.0, hit[1]
    start = time.perf_counter()
    exe, meta = _trace_or_load(full, build, args)
    seconds = time.perf_counter() - start
    _CACHE[full] = (exe, meta)
    if len(_CACHE) > _MAX_ENTRIES:
        _CACHE.popitem(last=False)
    return exe, seconds, meta


@contextmanager
def _errors_as_configured():
    """Trace with equinox's runtime errors as `EQX_ON_ERROR` says (nan, set by
    `sensitivity/__init__`), also when equinox was imported before this package and read
    the variable too early: otherwise its host callbacks would block export and push every
    call onto JAX's slow Python path."""
    module = equinox_errors_module()
    wanted = os.environ.get("EQX_ON_ERROR")
    if module is None or not wanted or getattr(module, "EQX_ON_ERROR", wanted) == wanted:
        yield
        return
    before = module.EQX_ON_ERROR
    module.EQX_ON_ERROR = wanted
    try:
        yield
    finally:
        module.EQX_ON_ERROR = before


def _trace_or_load(full: tuple, build: Callable[[], Callable], args: tuple) -> tuple[Callable, dict]:
    with _errors_as_configured():
        return _trace_or_load_now(full, build, args)


def _trace_or_load_now(full: tuple, build: Callable[[], Callable], args: tuple) -> tuple[Callable, dict]:
    digest = export_store.fingerprint(full) if export_store.enabled() else None
    if digest is not None:
        stored = export_store.load(digest)
        if stored is not None:
            exported, meta = stored
            return jax.jit(exported.call).lower(*args).compile(), meta
    fn = build()
    if digest is not None:
        try:
            exported = jax.export.export(jax.jit(fn))(*args)
        except Exception:  # noqa: BLE001 - e.g. a host callback: not exportable, compile as usual
            exported = None
        if exported is not None:
            meta = dict(getattr(fn, "meta", {}))
            export_store.save(digest, exported, meta)
            return jax.jit(exported.call).lower(*args).compile(), meta
    exe = jax.jit(fn).lower(*args).compile()
    return exe, dict(getattr(fn, "meta", {}))


def run(key: tuple, build: Callable[[], Callable], args: tuple) -> tuple[object, dict]:
    """Compile (or fetch) and run; returns (output, {"compile": s, "run": s})."""
    out, timings, _ = run_with_meta(key, build, args)
    return out, timings


def run_with_meta(key: tuple, build: Callable[[], Callable], args: tuple,
                  signature: tuple | None = None) -> tuple[object, dict, dict]:
    """As `run`, with the traced function's metadata (see `compiled_with_meta`)."""
    exe, compile_s, meta = compiled_with_meta(key, build, args, signature)
    start = time.perf_counter()
    out = jax.block_until_ready(exe(*args))
    return out, {"compile": compile_s, "run": time.perf_counter() - start}, meta


def clear() -> None:
    """Forget every compiled function (tests use it to measure compile time)."""
    _CACHE.clear()
