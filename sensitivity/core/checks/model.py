"""A user's model is user input: evaluate it abstractly once, before anything compiles.

`check_model(model)` runs `jax.eval_shape` on the right-hand side and on every observable
with abstract arguments of the right shapes (t a float64 scalar, y (n_states,), p the
model's parameters with their shapes). Nothing is computed and nothing compiles, so it
costs milliseconds, and it catches what would otherwise surface as a JAX error twenty
frames deep at compile time:

- an rhs that returns the wrong number of derivatives, a complex or boolean array, None,
  or something that is not an array; an observable that does not return a scalar;
- an exception in the user's code: a misspelt parameter name (KeyError, with the closest
  name), an index past the last state, any other error;
- the classic JAX pitfalls, each with its one-line fix: a Python `if` on a traced value
  (-> jnp.where / jax.lax.cond), NumPy or `math` on a traced value (-> jax.numpy),
  in-place assignment (-> .at[].set()).

Each becomes a `ModelError` naming the model, the function and its file, what was expected
and what came back, and the user's own line (file:line and its code), never the frames of
the toolkit or of JAX (`blame.user_frame` finds that line).
"""

from __future__ import annotations

import inspect
from typing import Callable

import numpy as np

from ...stores import checks as check_store
from ..errors import ModelError, did_you_mean, list_names
from ..lazy import LazyModule
from .fault import describe_function, user_frame, where
from .fault import first_line as _first_line

# imported on first use: a model that passed in an earlier process (`check_store`) is not
# evaluated again, and `sensitivity validate` then does not import JAX at all
jax = LazyModule("jax")
jnp = LazyModule("jax.numpy")

_CHECKED: set = set()  # structure keys of models already checked (a model built twice is checked once)


# --------------------------------------------------------------------------- pitfalls
def pitfall(exc: BaseException, code: str = "") -> str | None:
    """What went wrong and the one-line fix, for the JAX pitfalls a traced function meets;
    None for other errors."""
    errors = jax.errors
    if isinstance(exc, errors.TracerBoolConversionError):
        return ("a Python `if`, `while`, `and`/`or` or bool() on a traced value (the time, a state or a "
                "parameter): the solver traces the function, so these values are not known when Python "
                "branches. Fix: jnp.where(condition, value_if_true, value_if_false), or "
                "jax.lax.cond(condition, f_true, f_false, operand) for whole branches")
    if isinstance(exc, errors.TracerArrayConversionError):
        return ("NumPy (or another non-JAX library) was called on a traced value. Fix: use jax.numpy "
                "inside the model (import jax.numpy as jnp; jnp.exp, jnp.array, jnp.stack ...)")
    if isinstance(exc, errors.TracerIntegerConversionError):
        return ("a traced value was used as a Python integer (an index, range(), a list position). "
                "Fix: index with fixed numbers, or select with jnp.where / jnp.take")
    if isinstance(exc, errors.NonConcreteBooleanIndexError):
        return ("boolean-mask indexing (y[y > 0]) gives an array whose size depends on the values. "
                "Fix: jnp.where(mask, y, 0.0)")
    if isinstance(exc, errors.ConcretizationTypeError):
        if "math." in code:
            return ("the `math` module needs a concrete number, but the value is traced. "
                    "Fix: use jax.numpy (jnp.exp, jnp.sqrt, jnp.log ...) instead of math")
        if "float(" in code or "int(" in code:
            return ("float()/int() of a traced value: its value is not known while tracing. "
                    "Fix: keep it a JAX array (drop the float()/int())")
        return ("a traced value (the time, a state or a parameter) was used where Python needs a "
                "concrete value. Fix: jnp.where / jax.lax.cond instead of Python branches, "
                "jax.numpy instead of math or NumPy")
    text = str(exc)
    if isinstance(exc, TypeError) and ("item assignment" in text or "immutable" in text):
        return ("in-place assignment (y[i] = v) on a JAX array: JAX arrays are immutable. "
                "Fix: dy = dy.at[i].set(v), or build the result with jnp.stack([...])")
    return None


# --------------------------------------------------------------------------- the check
def _describe_value(out) -> str:
    """What a function returned, in words: 'an array of shape (2,) and dtype float64'."""
    if out is None:
        return "None (is a `return` missing?)"
    if hasattr(out, "shape") and hasattr(out, "dtype"):
        return f"an array of shape {tuple(out.shape)} and dtype {out.dtype}"
    if isinstance(out, (list, tuple)):
        inner = ", ".join(_describe_value(o).replace("an array of ", "") for o in list(out)[:4])
        more = ", ..." if len(out) > 4 else ""
        return f"a {type(out).__name__} of {len(out)} items ({inner}{more})"
    if isinstance(out, (int, float, complex, bool, np.number)):
        return f"a Python {type(out).__name__} {out!r}"
    return f"a {type(out).__name__}"


class _NotAnArray(Exception):
    """The function returned something jnp.asarray cannot make an array of."""

    def __init__(self, described: str, reason: str):
        super().__init__(described)
        self.described, self.reason = described, reason


def _abstract_args(model):
    f64 = jnp.float64
    t = jax.ShapeDtypeStruct((), f64)
    y = jax.ShapeDtypeStruct((model.n_states,), f64)
    p = {k: jax.ShapeDtypeStruct(np.shape(v), f64) for k, v in model.parameters.items()}
    return t, y, p


def _evaluate(fn: Callable, args: tuple):
    """(abstract result of jnp.asarray(fn(*args)), description of what fn returned)."""
    described = {}

    def traced(t, y, p):
        out = fn(t, y, p)
        described["value"] = _describe_value(out)
        try:
            return jnp.asarray(out)
        except Exception as exc:  # noqa: BLE001 - reported as "not an array"
            raise _NotAnArray(described["value"], _first_line(exc)) from None

    return jax.eval_shape(traced, *args), described.get("value", "")


def _fault(model, what: str, fn: Callable, exc: BaseException) -> ModelError:
    """The ModelError for an exception raised while evaluating `fn` abstractly."""
    head = f"model '{model.name}': the {what} {describe_function(fn)}"
    if isinstance(exc, _NotAnArray):
        return ModelError(f"{head} returned {exc.described}, not an array ({exc.reason}); "
                          f"return a jax.numpy array, e.g. jnp.stack([...])")
    frame = user_frame(exc)
    at = f" at {where(frame)}" if frame is not None else ""
    code = (frame.line or "") if frame is not None else ""
    hint = pitfall(exc, code)
    if hint:
        return ModelError(f"{head} fails{at}: {hint}")
    if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str) \
            and exc.args[0] not in model.parameters:
        key = exc.args[0]
        params = list(model.parameters)
        return ModelError(f"{head} reads parameter '{key}'{at}, which the model does not define"
                          f"{did_you_mean(key, params)}; parameters: {list_names(params) or 'none'}")
    if isinstance(exc, IndexError) and frame is not None:
        states = list(model.states)
        return ModelError(f"{head} fails{at}: IndexError: {_first_line(exc)}; the model has "
                          f"{len(states)} state{'s' * (len(states) != 1)} (y[0] .. y[{len(states) - 1}]: "
                          f"{list_names(states)})")
    shapes = [f"{k} {tuple(np.shape(v))}" if np.ndim(v) else k for k, v in model.parameters.items()]
    return ModelError(f"{head} raised {type(exc).__name__}{at}: {_first_line(exc)} (it was called with "
                      f"t a scalar, y of shape ({model.n_states},), p with {list_names(shapes) or 'nothing'})")


def _check_signature(model, what: str, fn: Callable) -> None:
    """fn must take (t, y, p) positionally; SciPy's odeint order (y, t) is named as such."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C callable: nothing to check
        return
    head = f"model '{model.name}': the {what} {describe_function(fn)}"
    try:
        sig.bind(0.0, 0.0, {})
    except TypeError:
        raise ModelError(f"{head} has the signature {sig}, but it is called as {what.split()[0]}(t, y, p): "
                         "the time, the state vector and the dict of parameters") from None
    names = [q.name for q in sig.parameters.values()][:2]
    if len(names) == 2 and names[1] in ("t", "time") and names[0] not in ("t", "time"):
        raise ModelError(f"{head} takes ({', '.join(names)}, ...), but it is called as "
                         f"{what.split()[0]}(t, y, p) with the time first (SciPy's odeint order y, t is "
                         "the other way round): swap the first two arguments")


def _key(model):
    try:
        key = model.structure_key()
        hash(key)
        return key
    except TypeError:  # an unhashable field: check every time
        return None


def check_model(model) -> None:
    """Evaluate the model's rhs and observables abstractly (`jax.eval_shape`, no compile)
    and raise `ModelError` for any fault, naming the function, its file and the user's line.

    Expected: rhs(t, y, p) -> n_states derivatives (shape (n_states,), real); each
    observable h(t, y, p) -> a real scalar (shape ()). t is a float64 scalar, y float64
    (n_states,), p a dict name -> float64 array of the parameter's shape.
    """
    key = _key(model)
    if key is not None and key in _CHECKED:
        return
    digest, passed = check_store.recall(model, "passed")
    if passed:  # in an earlier process
        if key is not None:
            _CHECKED.add(key)
        return
    args = _abstract_args(model)
    n = model.n_states
    _check_signature(model, "rhs", model.rhs)
    for name, h in model.observables.items():
        _check_signature(model, f"observable '{name}'", h)
    try:
        out, described = _evaluate(model.rhs, args)
    except Exception as exc:  # noqa: BLE001 - every fault of the user's code is reported
        raise _fault(model, "rhs", model.rhs, exc) from None
    _check_result(model, "rhs", model.rhs, out, described, size=n,
                  expected=f"shape ({n},): one derivative per state ({list_names(model.states)})")
    for name, h in model.observables.items():
        what = f"observable '{name}'"
        try:
            out, described = _evaluate(h, args)
        except Exception as exc:  # noqa: BLE001
            raise _fault(model, what, h, exc) from None
        _check_result(model, what, h, out, described, size=None,
                      expected="a scalar, shape () (e.g. y[0] / p['V'], not y[0:1])")
    if key is not None:
        _CHECKED.add(key)
    check_store.record(digest, "passed", True)


def _check_result(model, what, fn, out, described, size, expected) -> None:
    head = f"model '{model.name}': the {what} {describe_function(fn)}"
    bad_shape = out.shape != () if size is None else (out.size != size)
    if bad_shape:
        raise ModelError(f"{head} returned {described}; expected {expected}")
    if jnp.issubdtype(out.dtype, jnp.complexfloating) or out.dtype == jnp.bool_:
        raise ModelError(f"{head} returned {described}; expected real (float) values")
