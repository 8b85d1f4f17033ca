"""Forward, adjoint and second-order sensitivity analysis of ODE models, on JAX and diffrax.

    import sensitivity as sens
    prob = sens.Problem(model, times=np.linspace(0, 10, 500), wrt=["alpha", "y0.prey"])
    res = sens.jacobian(prob)          # mode="auto" | "forward" | "adjoint"
    res.plan.explain()                 # why that mode

Everything is float64 (JAX's x64 mode is switched on at import). Compiled functions are
cached in memory per problem structure and on disk in the user cache folder (set
SENSITIVITY_NO_DISK_CACHE=1 to turn the disk cache off).

JAX refuses to store executables that hold host callbacks, and equinox's runtime errors
are host callbacks; so unless the user chose otherwise, equinox is told to turn such errors
into NaN (EQX_ON_ERROR=nan), and the toolkit checks every result for non-finite values
and raises a `SolverError` instead.
"""

import importlib as _importlib
import importlib.util as _importlib_util
import os as _os
import sys as _sys

# always, not only with the disk cache: host callbacks also push every call of a compiled
# function off JAX's fast C++ path onto its Python fallback
_os.environ.setdefault("EQX_ON_ERROR", "nan")
# XLA's C++ log lines ("Very slow compile?", "stuck in a circular simplification loop") do
# not reach the user's terminal: fatal errors only (errors that matter reach Python as
# exceptions), and a slow compile is reported once in the toolkit's words
# (core/compile_watch.py). Read when JAX is first imported; SENSITIVITY_XLA_LOGS=1, or the
# user's own TF_CPP_MIN_LOG_LEVEL, keeps them.
if not _os.environ.get("SENSITIVITY_XLA_LOGS") and "jax" not in _sys.modules:
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from .core import compile_watch as _compile_watch  # noqa: E402
from .stores.folder import cache_dir as _cache_dir  # noqa: E402


def _jax_settings() -> dict:
    """JAX options the toolkit needs: float64, and the persistent compile cache."""
    settings = {"jax_enable_x64": True}
    if not _os.environ.get("SENSITIVITY_NO_DISK_CACHE"):
        settings["jax_compilation_cache_dir"] = str(_cache_dir() / "jax")
        # every program, also the small ones (the stiffness probe): a warm process then
        # compiles nothing
        settings["jax_persistent_cache_min_compile_time_secs"] = 0.0
    return settings


# JAX is imported lazily (`sensitivity validate` and `models` need no solver): its options go
# into the environment, where JAX reads them when it is first imported; if it already is,
# they are set directly.
for _name, _value in _jax_settings().items():
    _os.environ[_name.upper()] = ("1" if _value else "0") if isinstance(_value, bool) else str(_value)
if "jax" in _sys.modules:
    for _name, _value in _jax_settings().items():
        _sys.modules["jax"].config.update(_name, _value)

from .ad.cost import Calibration, Estimate, Plan  # noqa: E402
from .core.errors import (  # noqa: E402
    ConfigError,
    FitWarning,
    InputError,
    ModelError,
    NumericalWarning,
    SensitivityError,
    SolverError,
)
from .core.model import ODEModel  # noqa: E402
from .core.problem import Problem, ToleranceWarning  # noqa: E402
from .core.results import GradientResult, JacobianResult  # noqa: E402
from .core.schedule import DiscontinuityWarning, Dose, Event, SwitchTime, doses  # noqa: E402

# the names that need JAX and diffrax, imported on first use
_LAZY = {"gradient": "api", "hessian": "api", "hvp": "api", "jacobian": "api", "plan": "api",
         "simulate": "integrate.solve", "Trajectory": "integrate.solve",
         "ensemble": "analyses.ensemble", "sobol": "analyses.gsa", "morris": "analyses.gsa",
         "dgsm": "analyses.gsa", "fit": "analyses.fit", "FitResult": "analyses.fit",
         "fisher": "analyses.identifiability", "identifiability": "analyses.identifiability",
         "Fisher": "analyses.identifiability", "Identifiability": "analyses.identifiability",
         "check_gradient": "analyses.checks", "GradientCheck": "analyses.checks",
         "LikelihoodFit": "analyses.likelihood", "design": "analyses.design", "Design": "analyses.design"}
_LAZY.update({"profile": "analyses.profile", "ProfileResult": "analyses.profile", "sample": "analyses.sample",
              "SampleResult": "analyses.sample"})
_IMPORTERS = ("sbml", "petab")  # sens.sbml, sens.petab: sensitivity.importers.*


def __getattr__(name):
    if name in _LAZY:
        value = getattr(_importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        _compile_watch.watch()
        return value
    if name in _IMPORTERS:
        module = _importlib.import_module(f".importers.{name}", __name__)
        _compile_watch.watch()
        return module
    if not name.startswith("_") and _importlib_util.find_spec(f"{__name__}.{name}") is not None:
        return _importlib.import_module(f".{name}", __name__)  # a submodule: sens.api, sens.solve
    raise AttributeError(f"module 'sensitivity' has no attribute {name!r}")


__version__ = "0.1.0"
__all__ = [
    "ODEModel", "Problem", "simulate", "jacobian", "gradient", "hvp", "hessian", "plan",
    "Plan", "Estimate", "Calibration", "JacobianResult", "GradientResult", "Trajectory",
    "SensitivityError", "ModelError", "InputError", "SolverError", "ConfigError",
    "Dose", "doses", "Event", "SwitchTime", "DiscontinuityWarning", "ToleranceWarning", "NumericalWarning", "FitWarning",
    "ensemble", "sobol", "morris", "dgsm",
]
__all__ += ["fisher", "identifiability", "Fisher", "Identifiability", "fit", "FitResult", "check_gradient",
            "GradientCheck", "LikelihoodFit", "design", "Design"]
__all__ += ["profile", "ProfileResult", "sample", "SampleResult"]
