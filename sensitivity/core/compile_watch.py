"""Slow compiles reported once, in the toolkit's words, instead of XLA's raw log lines.

XLA writes C++ log lines to stderr while it compiles ("Very slow compile? If you want to
file a bug ...", "Algebraic simplifier is likely stuck in a circular simplification loop");
`sensitivity/__init__.py` silences them (TF_CPP_MIN_LOG_LEVEL=3 before JAX is imported:
fatal errors only; errors that matter reach Python as exceptions anyway). What a user needs
from them, that a compile is slow, comes from here: `watch()` registers a listener of JAX's
compile-duration events (`jax.monitoring`, event `BACKEND_COMPILE_EVENT`), and the first
compile that takes longer than `threshold()` seconds (SENSITIVITY_SLOW_COMPILE_SECONDS,
default 30) prints one line on stderr:

    sensitivity: a compile took 95 s (XLA compiles once per problem structure, then reuses it). ...

Later slow compiles in the same process say nothing more. No JAX at import: `watch()`
imports `jax.monitoring` when called (from `api` and the package's lazy loader, once JAX is
loaded anyway).
"""

from __future__ import annotations

import os
import sys

BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
DEFAULT_SECONDS = 30.0
_STATE = {"registered": False, "reported": False}


def threshold() -> float:
    """Seconds a compile may take before it is reported (SENSITIVITY_SLOW_COMPILE_SECONDS)."""
    try:
        return float(os.environ.get("SENSITIVITY_SLOW_COMPILE_SECONDS", DEFAULT_SECONDS))
    except ValueError:
        return DEFAULT_SECONDS


def message(seconds: float) -> str:
    """The line printed for a slow compile."""
    cached = "" if os.environ.get("SENSITIVITY_NO_DISK_CACHE") else (
        " The compiled program is stored in the disk cache: the next run of this problem skips it.")
    return (f"sensitivity: a compile took {seconds:.0f} s (XLA compiles once per problem structure, then "
            f"reuses it).{cached} Large or stiff models compile slowly; fewer inputs in wrt or another solver "
            "may compile faster. (Reported once.)")


def on_duration(event: str, seconds: float, **kwargs) -> bool:
    """The listener: report the first compile longer than `threshold()`; True when it did."""
    if event != BACKEND_COMPILE_EVENT or _STATE["reported"] or seconds < threshold():
        return False
    _STATE["reported"] = True
    try:
        print(message(seconds), file=sys.stderr, flush=True)
    except (OSError, ValueError):  # a closed stderr: nothing to say it on
        pass
    return True


def watch() -> None:
    """Register the listener with `jax.monitoring` (once per process; nothing before JAX is
    loaded: what compiles has loaded it)."""
    if _STATE["registered"] or "jax" not in sys.modules:
        return
    import jax.monitoring

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    _STATE["registered"] = True


def equations(jaxpr) -> int:
    """Equations of a jaxpr, nested jaxprs (loops, conds, custom rules, pjit) included: the
    size of a program as XLA will see it, which its compile time grows with."""
    from jax.extend import core

    n = 0
    for eqn in jaxpr.eqns:
        n += 1
        for v in eqn.params.values():
            for sub in (v if isinstance(v, (list, tuple)) else (v,)):
                if isinstance(sub, core.ClosedJaxpr):
                    n += equations(sub.jaxpr)
                elif isinstance(sub, core.Jaxpr):
                    n += equations(sub)
    return n
