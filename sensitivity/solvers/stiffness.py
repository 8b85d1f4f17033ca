"""`solver="auto"`: detect stiffness from the spectrum of the rhs Jacobian near the start.

An explicit Runge-Kutta method (Tsit5) is stable only while h |lambda| stays inside its
stability region (about 3.5 along the negative real axis), for every eigenvalue lambda of
J = d rhs / dy. Over a time span T it therefore needs at least

    T max_i(-Re lambda_i) / 3.5

steps, however smooth the solution: the *stiffness index* s = T max_i(-Re lambda_i) counts
them (times 3.5). When s is large, an implicit method (Rodas5P), whose steps cost more but
whose step size follows the accuracy alone, is cheaper. Growing or oscillating modes
(Re lambda >= 0) do not count: they limit accuracy, and every method pays for them.

J is evaluated (one compiled `jacfwd` of the rhs, vmapped) at y0 and at three short
explicit Euler steps from it, y0 + h f(t0, y0) with h = 1e-6, 1e-4 and 1e-2 of T: some
stiffness appears only once a fast species is non-zero (Robertson's y2 starts at 0). Points
where J is not finite are ignored. A model flagged `stiff=True` gets the implicit solver
without the estimate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..core.solvers import AUTO_NONSTIFF, AUTO_STIFF

STIFF_INDEX = 1.0e4  # s above this: ~3000 or more stability-limited explicit steps
IMPLICIT, EXPLICIT = AUTO_STIFF, AUTO_NONSTIFF  # "auto"'s two picks, from the solver table
# why the implicit solver is Rodas5P and not Kvaerno5 (benchmarks/solver_choice.py measures it)
WHY_IMPLICIT = ("Rodas5P: linearly implicit, one Jacobian, one factorisation and 8 linear solves "
                "per step, no Newton iterations; fewer and cheaper steps than Kvaerno5 on every "
                "stiff problem measured (benchmarks/solver_choice.py)")
STEPS = (0.0, 1e-6, 1e-4, 1e-2)  # where J is evaluated: y0 + (h T) f(t0, y0)
_PROBES: dict = {}


@dataclass(frozen=True)
class SolverChoice:
    """The solver that runs and why. `index`: the stiffness index T max(-Re lambda) (None
    when not estimated); `eigenvalue`: the eigenvalue with the most negative real part."""

    solver: str
    reason: str
    index: float | None = None
    eigenvalue: complex | None = None


def _probe_function(rhs: Callable, n_states: int) -> Callable:
    """jit((params, y0, t0, span) -> J at the STEPS points, (len(STEPS), n, n)), one per rhs."""
    key = (rhs, n_states)
    if key not in _PROBES:
        import jax
        import jax.numpy as jnp

        def field(t, y, p):
            return jnp.asarray(rhs(t, y, p), dtype=y.dtype).reshape(y.shape)

        def jacobians(params, y0, t0, span):
            f0 = field(t0, y0, params)
            ys = y0[None, :] + (jnp.asarray(STEPS) * span)[:, None] * f0[None, :]
            return jax.vmap(jax.jacfwd(lambda y: field(t0, y, params)))(ys)

        _PROBES[key] = jax.jit(jacobians)
    return _PROBES[key]


def rhs_jacobians(problem) -> np.ndarray:
    """d rhs / dy at y0 and the short Euler steps of `STEPS`, shape (len(STEPS), n, n)."""
    model = problem.model
    f = _probe_function(model.rhs, model.n_states)
    span = float(problem.times[-1] - problem.t0)
    params = {k: np.asarray(v) for k, v in problem.parameters.items()}
    return np.asarray(f(params, np.asarray(problem.y0), np.float64(problem.t0), np.float64(span)))


def stiffness_index(jacobians: np.ndarray, span: float) -> tuple[float, complex | None]:
    """(T max(-Re lambda) over every finite Jacobian, that eigenvalue); (0, None) if none."""
    best, where = 0.0, None
    for J in jacobians:
        if not np.all(np.isfinite(J)):
            continue
        lam = np.linalg.eigvals(J) if J.shape[0] <= 400 else _gershgorin(J)
        k = int(np.argmin(lam.real))
        if -lam[k].real * span > best:
            best, where = float(-lam[k].real * span), complex(lam[k])
    return best, where


def _gershgorin(J: np.ndarray) -> np.ndarray:
    """For large systems: the left ends of the Gershgorin discs, a bound on min Re lambda."""
    radius = np.abs(J).sum(axis=1) - np.abs(np.diag(J))
    return np.diag(J) - radius + 0j


def choose(problem) -> SolverChoice:
    """The solver for `problem` and the reason: the caller's, the model's stiff flag, or
    the stiffness estimate for solver="auto"."""
    if problem.solver != "auto":
        return SolverChoice(problem.solver, "chosen by the caller")
    if problem.model.stiff:
        return SolverChoice(IMPLICIT, f"model '{problem.model.name}' is flagged stiff; {WHY_IMPLICIT}")
    span = float(problem.times[-1] - problem.t0)
    try:
        jacobians = rhs_jacobians(problem)
    except Exception as exc:  # noqa: BLE001 - a broken rhs is reported by the solve itself
        return SolverChoice(EXPLICIT, f"stiffness not estimated (the rhs Jacobian failed: "
                                      f"{type(exc).__name__}); the default explicit solver")
    index, lam = stiffness_index(jacobians, span)
    where = "" if lam is None else f" (eigenvalue {lam.real:.3g}{lam.imag:+.3g}i of the rhs Jacobian)"
    if index > STIFF_INDEX:
        return SolverChoice(IMPLICIT, f"stiff: T max(-Re lambda) = {index:.3g} > {STIFF_INDEX:g}{where}, "
                                      f"an explicit solver would need >= ~{index / 3.5:.2g} steps; {WHY_IMPLICIT}", index, lam)
    return SolverChoice(EXPLICIT, f"not stiff: T max(-Re lambda) = {index:.3g} <= {STIFF_INDEX:g}{where}",
                        index, lam)


def choice(problem) -> SolverChoice:
    """`choose(problem)`, once per problem."""
    return problem.memo("solver_choice", lambda: choose(problem))


def note(problem) -> str:
    """One line for `plan.explain()` and the run summary."""
    c = choice(problem)
    return f"Solver {c.solver}: {c.reason}."
