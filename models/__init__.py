"""The model library: classic ODE models written against the AD core, one module each.

    from sensitivity import models
    models.available()                    # ['fitzhugh_nagumo', 'heat_1d', 'lorenz', ...]
    m = models.get("lotka_volterra")      # an sensitivity.ODEModel with literature defaults
    m = models.get("heat_1d", n=30)       # factory options and parameter overrides
    m = models.load("my_models/decay.py:model")   # a model of your own, from a file

Every module exposes `model(**options) -> ODEModel`, a factory whose docstring (the
module's) cites where its default values come from. Right-hand sides are defined at module
level, so models built by two calls share compiled functions (the core caches them by
model structure: name, rhs, states and parameter shapes).

Writing your own model file
---------------------------
A model file is a Python file with a function that returns a `sensitivity.ODEModel`;
point a config's `model:` (or `models.load`) at "path/to/file.py:factory" (":model" is
the default factory name, so "path/to/file.py" alone works too). Relative paths are
relative to the current directory. For example, my_models/decay.py:

    import jax.numpy as jnp
    import sensitivity as sens

    def rhs(t, y, p):                     # y: 1-D array of states, p: dict name -> value
        return jnp.stack([-p["k1"] * y[0], p["k1"] * y[0] - p["k2"] * y[1]])

    def model():
        return sens.ODEModel("decay", states=["A", "B"], parameters={"k1": 1.0, "k2": 0.1},
                             rhs=rhs, y0={"A": 1.0, "B": 0.0}, stiff=False,
                             doc="A -> B -> (out), first-order decay.")

and then `model: my_models/decay.py:model` in a YAML config. Write the right-hand side
with `jax.numpy` (it is traced and differentiated), at module level, returning an array
of shape (n_states,); array-valued parameters (weights) are allowed; `observables`
(name -> h(t, y, p)) replace the states as outputs when given.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable

from sensitivity.core.errors import InputError, ModelError, did_you_mean, list_names
from sensitivity.core.model import ODEModel

# name -> module (relative to this package); each module has a factory `model`.
_REGISTRY = {
    "lotka_volterra": ".lotka_volterra",
    "sir": ".sir",
    "seir": ".seir",
    "robertson": ".robertson",
    "van_der_pol": ".van_der_pol",
    "lorenz": ".lorenz",
    "fitzhugh_nagumo": ".fitzhugh_nagumo",
    "pk_two_compartment": ".pk_two_compartment",
    "heat_1d": ".heat_1d",
    "neural_ode": ".neural_ode",
    "reaction_chain": ".reaction_chain",
    "pk_one_compartment_oral": ".pk_one_compartment_oral",
    "seir_intervention": ".seir_intervention",
    "ishigami": ".ishigami",
    "brusselator_1d": ".brusselator_1d",
}

DEFAULT_FACTORY = "model"


def available() -> list[str]:
    """The names of the registered models, sorted."""
    return sorted(_REGISTRY)


def factory(name: str) -> Callable[..., ODEModel]:
    """The factory `model(**options)` of a registered model; `InputError` if unknown."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise InputError(
            f"model = {name!r} is not a registered model{did_you_mean(str(name), _REGISTRY)}; "
            f"available: {list_names(available(), limit=20)}; or give a model file as "
            "'path/to/file.py:factory'"
        )
    return importlib.import_module(_REGISTRY[name], __name__).model


def get(name: str, **options) -> ODEModel:
    """The registered model `name`, built by its factory with `options` (factory arguments
    such as n or width, and parameter overrides). Raises `InputError` for an unknown name,
    suggesting the closest one."""
    return _checked(factory(name)(**options), f"models.get({name!r})")


def _is_file_spec(spec: str) -> bool:
    path = spec.rpartition(":")[0] if _has_factory(spec) else spec
    return path.endswith(".py") or os.sep in path or "/" in path


def _has_factory(spec: str) -> bool:
    head, sep, tail = spec.rpartition(":")
    # "C:\\dir\\m.py" has a drive colon but no factory; a factory is an identifier after ".py:"
    return bool(sep) and tail.isidentifier() and bool(head) and not (len(head) == 1 and head.isalpha())


def load(spec: str, **options) -> ODEModel:
    """A model from a registered name ("lotka_volterra") or a file ("path/to/file.py:factory",
    or "path/to/file.py" for the factory `model`). `options` are passed to the factory.

    Raises `InputError` with a clear message if the name is unknown, the file is missing or
    fails to import, the factory is missing or not callable, or it does not return an
    `ODEModel`.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InputError(f"model = {spec!r}: give a model name ({', '.join(available())}) "
                         "or 'path/to/file.py:factory'")
    spec = spec.strip()
    if spec in _REGISTRY or not _is_file_spec(spec):
        return get(spec, **options)
    if _has_factory(spec):
        path_text, _, attr = spec.rpartition(":")
    else:
        path_text, attr = spec, DEFAULT_FACTORY
    module = _import_file(spec, Path(path_text).expanduser())
    fn = getattr(module, attr, None)
    if fn is None:
        found = [k for k, v in vars(module).items() if callable(v) and not k.startswith("_")
                 and getattr(v, "__module__", None) == module.__name__]
        raise InputError(
            f"model = '{spec}': {path_text} has no function '{attr}'{did_you_mean(attr, found)}; "
            f"functions defined there: {list_names(found) or 'none'}"
        )
    if not callable(fn):
        raise InputError(f"model = '{spec}': '{attr}' in {path_text} is a "
                         f"{type(fn).__name__}, not a function returning an ODEModel")
    try:
        result = fn(**options)
    except ModelError as exc:  # the model's own code is at fault: the message says where
        raise ModelError(f"model = '{spec}': {attr}() built an invalid model: {exc}") from None
    except Exception as exc:  # the user's factory failed (or built a bad ODEModel): say where
        raise InputError(f"model = '{spec}': calling {attr}() raised "
                         f"{type(exc).__name__}: {exc}{_at(exc)}") from exc
    return _checked(result, f"model = '{spec}': {attr}()")


def _checked(result, where: str) -> ODEModel:
    if not isinstance(result, ODEModel):
        raise InputError(f"{where} returned {type(result).__name__} {result!r:.40}, expected a "
                         "sensitivity.ODEModel (build one with sens.ODEModel(name, states, "
                         "parameters, rhs, y0))")
    return result


_FILE_MODULES: dict = {}


def _at(exc: BaseException) -> str:
    """', at file.py:12 (`code`)': the user's line that raised `exc`, or ''."""
    from sensitivity.core.checks.fault import user_frame, where

    frame = user_frame(exc)
    return f", at {where(frame)}" if frame is not None else ""


def _import_file(spec: str, path: Path):
    """Import a model file as a module (cached per path and modification time)."""
    if path.suffix != ".py":
        raise InputError(f"model = '{spec}': '{path}' is not a Python file (expected "
                         "'path/to/file.py:factory'); registered models: "
                         f"{list_names(available(), limit=20)}")
    if not path.is_file():
        where = "" if path.is_absolute() else f" (relative to {Path.cwd()})"
        raise InputError(f"model = '{spec}': model file '{path}' not found{where}")
    resolved = path.resolve()
    key = (str(resolved), resolved.stat().st_mtime_ns)
    if key in _FILE_MODULES:
        return _FILE_MODULES[key]
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:12]
    module_name = f"_sensitivity_user_model_{resolved.stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(module_name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise InputError(f"model = '{spec}': cannot import '{path}' as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise InputError(f"model = '{spec}': importing '{path}' failed with "
                         f"{type(exc).__name__}: {exc}{_at(exc)}") from exc
    _FILE_MODULES[key] = module
    return module


__all__ = ["available", "get", "load", "factory"]
