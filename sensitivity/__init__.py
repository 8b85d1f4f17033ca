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

import os as _os

# always, not only with the disk cache: host callbacks also push every call of a compiled
# function off JAX's fast C++ path onto its Python fallback
_os.environ.setdefault("EQX_ON_ERROR", "nan")

import jax as _jax  # noqa: E402

_jax.config.update("jax_enable_x64", True)
if not _os.environ.get("SENSITIVITY_NO_DISK_CACHE"):
    from .calibration_store import cache_dir as _cache_dir

    _jax.config.update("jax_compilation_cache_dir", str(_cache_dir() / "jax"))
    _jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

from .ad.cost import Calibration, Estimate, Plan  # noqa: E402
from .api import gradient, hessian, hvp, jacobian, plan  # noqa: E402
from .errors import (ConfigError, InputError, ModelError, SensitivityError,  # noqa: E402
                     SolverError)
from .model import ODEModel  # noqa: E402
from .problem import Problem  # noqa: E402
from .results import GradientResult, JacobianResult  # noqa: E402
from .solve import Trajectory, simulate  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "ODEModel", "Problem", "simulate", "jacobian", "gradient", "hvp", "hessian", "plan",
    "Plan", "Estimate", "Calibration", "JacobianResult", "GradientResult", "Trajectory",
    "SensitivityError", "ModelError", "InputError", "SolverError", "ConfigError",
]
