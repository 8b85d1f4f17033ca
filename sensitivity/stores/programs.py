"""A disk store of traced programs, so that a warm process skips tracing as well as compiling.

JAX's persistent compilation cache skips XLA's compile but not the tracing that precedes it
(tracing a diffrax solve and its derivative runs diffrax's Python over the whole program;
`benchmarks/startup.py` times a warm start). `jax.export` serializes the traced and
lowered program; a later process deserializes it and compiles (the compile cache then
hits), without tracing the model or diffrax again.

A stored program is found by a SHA-256 fingerprint of everything that shaped it:

- the structure key of the compiled function (model name, states, parameter shapes, wrt,
  of, number of save times, solver, max_steps, adjoint, the function kind and its options)
  and the argument shapes and dtypes;
- every function in it (rhs, observables, a user's objective) by its code: byte code,
  constants, closure values, default arguments, the source file's content, and the same
  for the functions, constants and non-library modules it names as globals;
- the toolkit's own source files, the versions of Python, jax, jaxlib, diffrax, equinox
  and numpy, and the JAX settings that change programs.

Anything it cannot fingerprint for certain (a lambda typed at the prompt, an object of an
unknown kind in a closure) turns the store off for that function: it is traced as usual.
Exported programs hold no host callbacks (EQX_ON_ERROR=nan, see `sensitivity/__init__`),
and are used only as they were exported (no further differentiation).

Files: <user cache>/sensitivity/exported/<fingerprint>.jaxexport and .json (metadata), and
<fingerprint>.record.json for a record stored without a program (`save_record`: what a
loader read from its input files, e.g. a PEtab problem's parameter arrays).
Set SENSITIVITY_NO_EXPORT_STORE=1 (or SENSITIVITY_NO_DISK_CACHE=1) to turn it off.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import sys
import sysconfig
import types
from importlib import metadata
from pathlib import Path

import numpy as np

from .folder import cache_dir

_FILE_HASHES: dict[str, str] = {}
_SALT: list[str] = []
# what this process found in the store: programs loaded, looked for and not found (then
# traced), and saved; tests and benchmarks read it to tell a load from a trace
STATS = {"loaded": 0, "missed": 0, "saved": 0, "records loaded": 0, "records missed": 0, "records saved": 0}
_LIBRARY_DIRS = tuple(p for p in {sysconfig.get_paths().get(k) for k in ("stdlib", "purelib", "platlib")} if p)


class Unstable(Exception):
    """Something in a key has no fingerprint that is stable across processes."""


def enabled() -> bool:
    return not (os.environ.get("SENSITIVITY_NO_EXPORT_STORE") or os.environ.get("SENSITIVITY_NO_DISK_CACHE"))


def folder() -> Path:
    return cache_dir() / "exported"


def fingerprint(key) -> str | None:
    """The SHA-256 hex digest of `key` and the environment, or None if it cannot be made
    stable across processes."""
    h = hashlib.sha256()
    try:
        for part in _salt():
            h.update(part.encode())
        _feed(h, key, set())
    except Unstable:
        return None
    return h.hexdigest()


def load(digest: str):
    """(the deserialized `jax.export.Exported`, its metadata dict), or None if not stored
    or unreadable."""
    base = folder() / digest
    try:
        blob = (base.with_suffix(".jaxexport")).read_bytes()
        meta = json.loads(base.with_suffix(".json").read_text())
        import jax

        exported = jax.export.deserialize(bytearray(blob))
    except Exception:  # noqa: BLE001 - a missing or stale entry is simply traced again
        STATS["missed"] += 1
        return None
    STATS["loaded"] += 1
    return exported, meta


def save(digest: str, exported, meta: dict) -> None:
    """Write the serialized program and its metadata atomically (a failure is ignored:
    the store is an optimisation)."""
    target = folder()
    try:
        target.mkdir(parents=True, exist_ok=True)
        for suffix, data in ((".json", json.dumps(meta).encode()), (".jaxexport", bytes(exported.serialize()))):
            tmp = target / f"{digest}.{os.getpid()}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, target / f"{digest}{suffix}")
    except OSError:
        return
    STATS["saved"] += 1


def load_record(digest: str) -> dict | None:
    """A record stored without a program (`save_record`), or None."""
    try:
        record = json.loads((folder() / f"{digest}.record.json").read_text())
    except (OSError, ValueError):
        STATS["records missed"] += 1
        return None
    STATS["records loaded"] += 1
    return record


def save_record(digest: str, record: dict) -> None:
    """Store a JSON record beside the programs: what a loader found in its input files (a
    PEtab problem's arrays), under a fingerprint of those files, so that a warm process
    need not read and parse them again to find its programs."""
    target = folder()
    try:
        target.mkdir(parents=True, exist_ok=True)
        tmp = target / f"{digest}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(record))
        os.replace(tmp, target / f"{digest}.record.json")
    except (OSError, TypeError, ValueError):
        return
    STATS["records saved"] += 1


# --------------------------------------------------------------------------- fingerprints
def _salt() -> list[str]:
    if not _SALT:
        versions = []
        for name in ("jax", "jaxlib", "diffrax", "equinox", "lineax", "optimistix", "numpy"):
            try:
                versions.append(f"{name}={metadata.version(name)}")
            except metadata.PackageNotFoundError:
                versions.append(f"{name}=none")
        package = Path(__file__).parents[1]  # the whole package: any change of its code
        sources = sorted(str(p) for p in package.rglob("*.py"))
        own = hashlib.sha256(b"".join(_file_hash(p).encode() for p in sources)).hexdigest()
        import jax

        settings = f"x64={jax.config.jax_enable_x64};eqx={os.environ.get('EQX_ON_ERROR')}"
        _SALT.extend([sys.version, ";".join(versions), own, settings])
    return _SALT


def _file_hash(path: str) -> str:
    if path not in _FILE_HASHES:
        try:
            _FILE_HASHES[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError as exc:
            raise Unstable(path) from exc
    return _FILE_HASHES[path]


def _is_library(path: str | None) -> bool:
    """Installed libraries and the standard library: their versions are in the salt."""
    return bool(path) and ("site-packages" in path or "dist-packages" in path
                           or any(path.startswith(d) for d in _LIBRARY_DIRS))


def _feed(h, obj, seen: set) -> None:  # noqa: C901 - one case per kind of object
    put = lambda s: h.update(f"{s}\x00".encode())  # noqa: E731
    if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        put(f"{type(obj).__name__}:{obj!r}")
    elif isinstance(obj, (tuple, list)):
        put(f"{type(obj).__name__}[{len(obj)}")
        for item in obj:
            _feed(h, item, seen)
        put("]")
    elif isinstance(obj, dict):
        put(f"dict[{len(obj)}")
        for k in sorted(obj, key=repr):
            _feed(h, k, seen)
            _feed(h, obj[k], seen)
        put("]")
    elif isinstance(obj, (frozenset, set)):
        put(f"set:{sorted(repr(x) for x in obj)}")
    elif isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
        arr = np.asarray(obj)
        put(f"ndarray:{arr.dtype}:{arr.shape}:{hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()}")
    elif isinstance(obj, np.dtype):
        put(f"dtype:{obj}")
    elif type(obj).__name__ == "PyTreeDef":
        put(f"treedef:{obj}")
    elif isinstance(obj, types.FunctionType):
        _function(h, obj, seen)
    elif isinstance(obj, functools.partial):
        put("partial")
        _feed(h, (obj.func, obj.args, obj.keywords), seen)
    elif isinstance(obj, types.ModuleType):
        _module(h, obj)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        _class(h, type(obj))
        _feed(h, [(f.name, getattr(obj, f.name)) for f in dataclasses.fields(obj)], seen)
    elif isinstance(obj, type):
        _class(h, obj)
    elif hasattr(obj, "__wrapped__"):  # jax.jit(f) and other wrappers
        put(f"wrapped:{type(obj).__name__}")
        _feed(h, obj.__wrapped__, seen)
    else:
        raise Unstable(type(obj).__name__)


def _module(h, module: types.ModuleType) -> None:
    path = getattr(module, "__file__", None)
    h.update(f"module:{module.__name__}\x00".encode())
    if path and not _is_library(path):
        h.update(_file_hash(path).encode())


def _class(h, cls: type) -> None:
    h.update(f"class:{cls.__module__}.{cls.__qualname__}\x00".encode())
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if path and not _is_library(path):
        h.update(_file_hash(path).encode())


def _code(h, code: types.CodeType, seen: set) -> None:
    h.update(code.co_code)
    h.update(repr(code.co_names).encode())
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            _code(h, c, seen)
        else:
            _feed(h, c, seen)


def _global_names(code: types.CodeType):
    yield from code.co_names
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            yield from _global_names(c)


def _function(h, fn: types.FunctionType, seen: set) -> None:
    h.update(f"function:{fn.__module__}.{fn.__qualname__}\x00".encode())
    if id(fn) in seen:
        return
    seen.add(id(fn))
    code = fn.__code__
    if code.co_filename.startswith("<"):
        raise Unstable(f"{fn.__qualname__} has no source file")
    if not _is_library(code.co_filename):
        h.update(_file_hash(code.co_filename).encode())
    _code(h, code, seen)
    _feed(h, (fn.__defaults__, fn.__kwdefaults__), seen)
    for cell in fn.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:  # an empty cell
            value = None
        _feed(h, value, seen)
    if _is_library(code.co_filename):
        return  # a library's function: its version is in the salt
    for name in sorted(set(_global_names(code))):
        if name in fn.__globals__:
            value = fn.__globals__[name]
            h.update(f"global:{name}\x00".encode())
            _feed(h, value, seen)
