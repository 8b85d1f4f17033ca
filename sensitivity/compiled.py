"""A cache of ahead-of-time compiled functions, keyed by problem structure.

Everything that only changes values (parameters, y0, save times, tolerances) is passed as
array arguments, so a second call with new values reuses the compiled executable; the key
holds what changes the program (model, wrt/of, number of save times, solver, mode...).
Compile time is measured apart from run time, so results and benchmarks can report both.
JAX's persistent compilation cache (configured in `sensitivity/__init__.py`) makes a second
process start fast as well.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

import jax

_CACHE: "OrderedDict[tuple, object]" = OrderedDict()
_MAX_ENTRIES = 64  # each executable holds memory mappings; a process has ~65k


def _signature(args) -> tuple:
    leaves, treedef = jax.tree_util.tree_flatten(args)
    return treedef, tuple([(getattr(a, "shape", ()), getattr(a, "dtype", type(a))) for a in leaves])


def compiled(key: tuple, build: Callable[[], Callable], args: tuple) -> tuple[Callable, float]:
    """The compiled form of `build()` for `args`, and the seconds spent compiling it now
    (0.0 on a cache hit). `build` is only called on a miss."""
    full = (key, _signature(args))
    hit = _CACHE.get(full)
    if hit is not None:
        _CACHE.move_to_end(full)
        return hit, 0.0
    start = time.perf_counter()
    exe = jax.jit(build()).lower(*args).compile()
    seconds = time.perf_counter() - start
    _CACHE[full] = exe
    if len(_CACHE) > _MAX_ENTRIES:
        _CACHE.popitem(last=False)
    return exe, seconds


def run(key: tuple, build: Callable[[], Callable], args: tuple) -> tuple[object, dict]:
    """Compile (or fetch) and run; returns (output, {"compile": s, "run": s})."""
    exe, compile_s = compiled(key, build, args)
    start = time.perf_counter()
    out = jax.block_until_ready(exe(*args))
    return out, {"compile": compile_s, "run": time.perf_counter() - start}


def clear() -> None:
    """Forget every compiled function (tests use it to measure compile time)."""
    _CACHE.clear()
