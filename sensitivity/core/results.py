"""What the public functions return: labelled arrays with the plan and timings attached."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class JacobianResult:
    """d outputs / d inputs at the save times.

    values: (n_times, n_outputs, n_inputs); outputs: the trajectory (n_times, n_outputs);
    times, output_names, input_names label the axes; mode: "forward" or "adjoint" (with
    `variant` the adjoint's kind); plan: the cost model's `Plan` (its `explain()` says why);
    stats: solver steps; timings: seconds, compile apart from run.
    """

    values: np.ndarray
    outputs: np.ndarray
    times: np.ndarray
    output_names: tuple[str, ...]
    input_names: tuple[str, ...]
    input_values: np.ndarray
    mode: str
    variant: str | None
    plan: object = None
    stats: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    def normalized(self) -> np.ndarray:
        """Log sensitivities d ln y / d ln p = (p / y) dy/dp, shape (n_times, n_outputs, n_inputs).
        Entries where y = 0 are NaN (a relative change of zero is undefined)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            y = self.outputs[:, :, None]
            out = self.values * self.input_values[None, None, :] / y
        return np.where(y == 0, np.nan, out)

    def column(self, name: str) -> np.ndarray:
        """d outputs / d (one input), shape (n_times, n_outputs)."""
        return self.values[:, :, self.input_names.index(name)]


@dataclass(frozen=True)
class GradientResult:
    """A scalar objective's value and gradient, grad of shape (n_inputs,)."""

    value: float
    grad: np.ndarray
    input_names: tuple[str, ...]
    mode: str
    variant: str | None
    plan: object = None
    stats: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
