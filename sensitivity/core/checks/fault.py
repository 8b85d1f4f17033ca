"""Whose fault an error is: the user's input (their config, data, model code, output path)
or the toolkit's. No JAX here: the command line uses it to choose the exit status.

- `user_frame(exc)`: the innermost frame of the user's own code in a traceback, skipping
  the toolkit's frames and those of JAX, NumPy, SciPy and the standard library;
- `where(frame)`: "file.py:12 (`code`)";
- `exit_status(exc)`: (status, message) for the command line: 2 for bad input of any kind
  (a `ConfigError`, `InputError`, `ModelError`, an existing result, or an exception raised
  in the user's own model code), 1 for a run that failed (the solver; a file system error
  while writing), 3 for a bug of the toolkit.
"""

from __future__ import annotations

import importlib.util
import inspect
import linecache
import os
import sysconfig
import traceback
from typing import Callable

from ..errors import ConfigError, InputError, ModelError, OutputExistsError, SensitivityError

EXIT_FAILED, EXIT_INPUT, EXIT_INTERNAL = 1, 2, 3
_THIRD_PARTY = ("jax", "jaxlib", "equinox", "diffrax", "lineax", "optimistix", "numpy", "scipy",
                "jaxtyping", "typeguard", "pydantic", "yaml", "xarray", "h5netcdf", "matplotlib")
_DIRS: dict = {}


def _package_dir(name: str) -> str | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or spec.origin in ("built-in", "frozen"):
        return None
    return os.path.dirname(os.path.abspath(spec.origin))


def _prefixes(dirs) -> tuple[str, ...]:
    return tuple(os.path.abspath(d).rstrip(os.sep) + os.sep for d in dirs if d)


def _library_dirs() -> tuple[str, ...]:
    """JAX and the other packages the toolkit uses, and the standard library."""
    if "libraries" not in _DIRS:
        paths = sysconfig.get_paths()
        _DIRS["libraries"] = _prefixes([*map(_package_dir, _THIRD_PARTY),
                                        *(paths.get(k) for k in ("stdlib", "platstdlib"))])
    return _DIRS["libraries"]


def _toolkit_dirs(library_is_user: bool) -> tuple[str, ...]:
    """The toolkit's own folder, and the model library's unless it counts as the user's."""
    key = ("toolkit", library_is_user)
    if key not in _DIRS:
        dirs = [_package_dir("sensitivity")]
        if not library_is_user:
            dirs.append(_package_dir("sensitivity.models"))
        _DIRS[key] = _prefixes(dirs)
    return _DIRS[key]


def _is_library(filename: str) -> bool:
    if not filename or filename.startswith("<"):  # <frozen ...> is Python's; <string>, <stdin> the user's
        return not filename or filename.startswith("<frozen")
    return os.path.abspath(filename).startswith(_library_dirs())


def is_internal(filename: str, library_is_user: bool = True) -> bool:
    """True for a frame of the toolkit, a library it uses, the standard library or Python
    itself; the model library's frames count as the user's unless library_is_user=False."""
    return _is_library(filename) or os.path.abspath(filename).startswith(_toolkit_dirs(library_is_user))


def short_path(filename: str) -> str:
    """A path relative to the current folder when it lies inside it, else absolute."""
    path = os.path.abspath(filename)
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if rel.startswith(os.pardir) else rel


def user_frame(exc: BaseException, library_is_user: bool = True) -> traceback.FrameSummary | None:
    """The user's frame to blame for `exc`: the innermost frame that is neither a library's
    (JAX, NumPy, the standard library ...) nor the toolkit's, provided no toolkit frame lies
    inside it (a toolkit bug reached from the user's code stays the toolkit's). None if the
    toolkit raised it. The exceptions `exc` was raised from are looked at when its own
    traceback holds only library frames."""
    toolkit = _toolkit_dirs(library_is_user)
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        ours = [f for f in traceback.extract_tb(exc.__traceback__) if not _is_library(f.filename)]
        if ours:
            last = ours[-1]
            return None if os.path.abspath(last.filename).startswith(toolkit) else last
        exc = exc.__cause__ or exc.__context__
    return None


def where(frame: traceback.FrameSummary | None) -> str:
    """'file.py:12 (`code`)' for a frame, '' for None."""
    if frame is None:
        return ""
    code = (frame.line or linecache.getline(frame.filename, frame.lineno) or "").strip()
    code = code if len(code) <= 100 else code[:97] + "..."
    return f"{short_path(frame.filename)}:{frame.lineno}" + (f" (`{code}`)" if code else "")


def describe_function(fn: Callable) -> str:
    """'`rhs` in models/decay.py:12' for a function; its name for other callables."""
    target = inspect.unwrap(fn) if callable(fn) else fn
    name = getattr(target, "__qualname__", None) or type(target).__name__
    code = getattr(target, "__code__", None)
    if code is None:
        return f"`{name}`"
    return f"`{name}` in {short_path(code.co_filename)}:{code.co_firstlineno}"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (JAX's run to paragraphs)."""
    text = str(exc).strip().splitlines()
    return text[0].strip() if text else type(exc).__name__


def exit_status(exc: BaseException) -> tuple[int, str]:
    """(exit status, message) of the command line for an exception (see the module doc)."""
    if isinstance(exc, (ConfigError, InputError, ModelError, OutputExistsError)):
        return EXIT_INPUT, f"error: {exc}"
    if isinstance(exc, SensitivityError):
        return EXIT_FAILED, f"error: {exc}"
    frame = user_frame(exc, library_is_user=False)
    if frame is not None:
        return EXIT_INPUT, (f"error: your code raised {type(exc).__name__} at {where(frame)}: "
                            f"{first_line(exc)}")
    if isinstance(exc, OSError) and exc.filename:
        return EXIT_FAILED, f"error: cannot use {exc.filename}: {exc.strerror or exc}"
    return EXIT_INTERNAL, (f"internal error: {type(exc).__name__}: {exc}\n"
                           "(rerun with --traceback for details, and please report it)")
