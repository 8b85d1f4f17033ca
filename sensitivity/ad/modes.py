"""The gradient modes and the one place that assembles a value and gradient by either.

"forward": n input tangents in one vectorised sweep (`forward.value_and_gradient`);
"adjoint": one backward sweep (`adjoint.value_and_gradient`); "auto": the cost model
(`cost.make_plan`) picks one. `sens.gradient` (a `Problem`) and `PetabProblem.gradient`
both check the mode here and, for a scalar map f(x, values) -> (value, aux), take the
value and gradient from `value_and_gradient`.
"""

from __future__ import annotations

from typing import Callable

from ..core.errors import InputError
from . import adjoint, forward

MODES = ("auto", "forward", "adjoint")
# how the solve inside f must be differentiable for each mode (`integrate.solve.METHODS`)
METHOD = {"forward": "forward", "adjoint": "checkpoint"}


def check_mode(mode: str, valid=MODES) -> str:
    """mode, or an `InputError` that lists the valid ones."""
    if mode not in valid:
        raise InputError(f"mode = '{mode}' is unknown; valid: {', '.join(valid)}")
    return mode


def value_and_gradient(mode: str, f: Callable, x, values):
    """(value, aux, gradient (n_inputs,)) of a scalar map f(x, values) -> (value, aux) by
    `mode` ("forward" or "adjoint"), traced."""
    if mode == "forward":
        return forward.value_and_gradient(f, x, values)
    if mode == "adjoint":
        return adjoint.value_and_gradient(f, x, values)
    raise InputError(f"mode = '{mode}' is unknown here; valid: forward, adjoint")
