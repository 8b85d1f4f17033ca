"""A disk record of what checking a model found: that it passed `model_check.check_model`,
and which parameters its rhs compares against t (`events.time_compared_parameters`).

Both evaluate the model's code abstractly with JAX, and importing JAX is most of what
`sensitivity validate` and `sensitivity models` cost (`benchmarks/startup.py` times them).
What a model gave once is recorded under a SHA-256 fingerprint of everything it depends on,
so a later process reads the record and does not import JAX:

- the rhs and every observable by their code (`export_store`'s fingerprint: byte code,
  constants, closure values, defaults, the source file's content, and the same for the
  functions, constants and non-library modules they name as globals);
- the state names and the parameters' names and shapes (the checks use shapes, not values);
- the checks' own source (model_check.py, events.py, blame.py, errors.py, this file), and
  the versions of Python, jax, jaxlib, equinox and numpy.

A change to any of them gives a new fingerprint and the model is evaluated again. Anything
that cannot be fingerprinted for certain (a function typed at the prompt, an object of an
unknown kind in a closure) is never recorded: it is evaluated in every process. A model
that failed its check is never recorded. Records are small JSON files under
<user cache>/sensitivity/checked/; SENSITIVITY_NO_DISK_CACHE=1 turns them off.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from importlib import metadata
from pathlib import Path

import numpy as np

from . import programs as export_store
from .folder import cache_dir

_SALT: list[str] = []
_DIGESTS: dict = {}


def enabled() -> bool:
    return not os.environ.get("SENSITIVITY_NO_DISK_CACHE")


def folder() -> Path:
    return cache_dir() / "checked"


def _salt() -> list[str]:
    if not _SALT:
        versions = []
        for name in ("jax", "jaxlib", "equinox", "numpy"):
            try:
                versions.append(f"{name}={metadata.version(name)}")
            except metadata.PackageNotFoundError:
                versions.append(f"{name}=none")
        package = Path(__file__).parents[1]
        own = [hashlib.sha256((package / f).read_bytes()).hexdigest()
               for f in ("core/checks/model.py", "core/checks/discontinuity.py", "core/checks/fault.py",
                         "core/schedule.py", "core/errors.py", "stores/checks.py")]
        _SALT.extend([sys.version, ";".join(versions), *own])
    return _SALT


def fingerprint(model) -> str | None:
    """The hex digest of what the checks depend on, or None if it is not stable across
    processes (then the model is always evaluated). Computed once per model structure."""
    try:
        key = model.structure_key()
        return _DIGESTS[key] if key in _DIGESTS else _DIGESTS.setdefault(key, _fingerprint(model))
    except TypeError:  # an unhashable structure key
        return _fingerprint(model)


def _fingerprint(model) -> str | None:
    h = hashlib.sha256()
    try:
        for part in _salt():
            h.update(part.encode())
        shapes = [(k, tuple(np.shape(v))) for k, v in model.parameters.items()]
        export_store._feed(h, (model.states, shapes, model.rhs, dict(model.observables)), set())
    except Exception:  # noqa: BLE001 - Unstable, an unreadable file, an odd object: no record
        return None
    return h.hexdigest()


def recall(model, kind: str):
    """(the model's fingerprint, the value recorded for it under `kind`, or None)."""
    digest = fingerprint(model) if enabled() else None
    if digest is None:
        return None, None
    try:
        return digest, json.loads((folder() / f"{digest}.{kind}.json").read_text())["value"]
    except (OSError, ValueError, KeyError, TypeError):
        return digest, None


def record(digest: str | None, kind: str, value) -> None:
    """Record a JSON-able `value` for the fingerprint (a failure to write is ignored)."""
    if digest is None or not enabled():
        return
    target = folder()
    try:
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / f"{digest}.{kind}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps({"value": value}))
        os.replace(tmp, target / f"{digest}.{kind}.json")
    except OSError:
        pass
