"""The errors of the toolkit: every bad input raises a subclass of `SensitivityError`.

Messages name the field, the value and what would be valid, so a command-line user can
act on them without a traceback.
"""

from __future__ import annotations

import difflib
from typing import Iterable


class SensitivityError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class ModelError(SensitivityError):
    """An `ODEModel` is malformed (names, shapes, default values)."""


class InputError(SensitivityError):
    """A `Problem` or a call was given a bad value (names, shapes, NaN, times, tolerances)."""


class SolverError(SensitivityError):
    """The ODE solver failed (max_steps reached, non-finite values, step size collapse)."""


class NumericalWarning(UserWarning):
    """A result the toolkit computed looks wrong: non-finite, or absurd against its own
    scale (a gradient component 1e10 times the others, a Fisher matrix with clearly
    negative eigenvalues). The message names the input and suggests the check
    (`sensitivity.check_gradient` at that input, tighter tolerances)."""


class FitWarning(NumericalWarning):
    """A fit ended far from the data: the residuals are far beyond the noise (chi-square
    per degree of freedom), or the optimiser did not converge."""


class ConfigError(SensitivityError):
    """A YAML configuration is invalid; `problems` lists every problem found."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = problems or [message]


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest valid name, or '' if none is close."""
    close = difflib.get_close_matches(str(name), list(valid), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def list_names(valid: Iterable[str], limit: int = 12) -> str:
    """A short, readable list of valid names for an error message."""
    valid = list(valid)
    shown = ", ".join(valid[:limit])
    return shown + (f", ... ({len(valid)} in all)" if len(valid) > limit else "")


class OutputExistsError(SensitivityError):
    """The output folder already holds something and force was not given."""


class OutputPathError(InputError):
    """The output folder cannot be created or written (exit status 2 on the command line)."""
