"""Solver objects from the solver table (`core.solvers.TABLE`), and the solver a problem runs.

`solver_class(name)`: the diffrax class of a diffrax family (`getattr(diffrax, cls)`), or
our `rosenbrock.Rodas5P` for the "rosenbrock" family. `solver_name(problem)`: the name
that runs, "auto" resolved by `stiffness.choice` (Rodas5P when stiff, else Tsit5).
"""

from __future__ import annotations

import diffrax

from ..core.solvers import TABLE
from . import rosenbrock, stiffness


def solver_class(name: str) -> type:
    """The class of solver `name`, e.g. diffrax.Kvaerno5 for "kvaerno5", Rodas5P for "rodas5p"."""
    spec = TABLE[name]
    if spec.cls is None:
        raise ValueError(f"solver '{name}' has no solver class, only the lean loop {spec.lean}")
    if spec.family == "rosenbrock":
        return getattr(rosenbrock, spec.cls)
    return getattr(diffrax, spec.cls)


def solver_name(problem) -> str:
    """The solver that runs: "auto" is Rodas5P for a model flagged stiff or whose rhs
    Jacobian shows stiffness at the start (`solvers.stiffness`), else Tsit5."""
    if problem.solver == "auto":
        return stiffness.choice(problem).solver
    return problem.solver
