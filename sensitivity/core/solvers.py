"""The one table of ODE solvers: which names exist and what each one can do.

Plain data (no JAX), so that `core.problem` can validate a solver name without importing
the solvers. `solvers.registry` builds the solver objects from it; every other place that
needs a set of solver names (the config schema, the PEtab importer, the implicit /
Rosenbrock / ESDIRK sets of the linear algebra) derives it from `TABLE`.

Fields of a `SolverSpec`:
    family          "explicit_rk" (explicit Runge-Kutta), "esdirk" (diffrax's Kvaerno:
                    one diagonal value, Newton iterations), "imex_esdirk" (KenCarp),
                    "implicit_euler", or "rosenbrock" (linearly implicit, our own class)
    cls             the diffrax class name, or for "rosenbrock" our class in
                    `solvers.rosenbrock` (None: only a lean loop exists)
    stiff           implicit (suited to stiff problems) or explicit
    adjoints        the differentiation methods of `integrate.solve` it runs under
                    (forward, checkpoint, backsolve, direct)
    dense_output    whether it interpolates between steps (diffrax's local interpolation)
    jacobian_reuse  whether `Problem(jacobian_reuse=True)` applies (ESDIRK with one
                    diagonal value: the Newton matrix can be kept across steps)
    lean            the lean loop that runs it without diffrax ("lean_rk" for Tsit5,
                    "lean_rodas" for the Rosenbrock tableaus), or None
    problem         offered by `Problem(solver=...)`
    petab           offered by the PEtab importer (`importers.petab.load(solver=...)`)
    tableau         the Rosenbrock tableau (a key of `solvers.rosenbrock.TABLEAUS`) of the
                    "rosenbrock" family, else None

A solver with a lean loop only (cls None) runs where the loop's limits allow: for a
`Problem`, no doses, breakpoints or events and the adjoints it lists; elsewhere the
diffrax class of the same tableau runs instead (`FALLBACK`).
"""

from __future__ import annotations

from dataclasses import dataclass

ALL_METHODS = frozenset({"forward", "checkpoint", "backsolve", "direct"})


@dataclass(frozen=True)
class SolverSpec:
    name: str
    family: str
    cls: str | None
    stiff: bool
    adjoints: frozenset = ALL_METHODS
    dense_output: bool = True
    jacobian_reuse: bool = False
    lean: str | None = None
    problem: bool = True
    petab: bool = False
    tableau: str | None = None


_NO_BACKSOLVE = ALL_METHODS - {"backsolve"}  # Rodas5P takes 1-D states; backsolve solves a pytree

TABLE: dict[str, SolverSpec] = {s.name: s for s in (
    SolverSpec("tsit5", "explicit_rk", "Tsit5", False, lean="lean_rk", petab=True),
    SolverSpec("dopri5", "explicit_rk", "Dopri5", False, petab=True),
    SolverSpec("dopri8", "explicit_rk", "Dopri8", False),
    SolverSpec("bosh3", "explicit_rk", "Bosh3", False),
    SolverSpec("heun", "explicit_rk", "Heun", False),
    SolverSpec("kvaerno3", "esdirk", "Kvaerno3", True, jacobian_reuse=True, petab=True),
    SolverSpec("kvaerno4", "esdirk", "Kvaerno4", True, jacobian_reuse=True, petab=True),
    SolverSpec("kvaerno5", "esdirk", "Kvaerno5", True, jacobian_reuse=True, petab=True),
    SolverSpec("kencarp3", "imex_esdirk", "KenCarp3", True),
    SolverSpec("kencarp4", "imex_esdirk", "KenCarp4", True, petab=True),
    SolverSpec("kencarp5", "imex_esdirk", "KenCarp5", True, petab=True),
    SolverSpec("implicit_euler", "implicit_euler", "ImplicitEuler", True, dense_output=False),
    SolverSpec("rodas5p", "rosenbrock", "Rodas5P", True, adjoints=_NO_BACKSOLVE, lean="lean_rodas",
               petab=True, tableau="rodas5p"),
    # Problem only: the lean Rodas5P loop (PEtab's "rodas5p"), forward mode and the
    # checkpointed discrete adjoint, steps landing on the save times (no dense output)
    SolverSpec("rodas5p_lean", "rosenbrock", None, True, adjoints=frozenset({"forward", "checkpoint"}),
               dense_output=False, lean="lean_rodas", petab=False, tableau="rodas5p"),
    # PEtab only: rodas4 as a lean loop; rodas5p_diffrax runs Rodas5P inside diffrax's loop
    SolverSpec("rodas4", "rosenbrock", None, True, adjoints=_NO_BACKSOLVE, lean="lean_rodas",
               problem=False, petab=True, tableau="rodas4"),
    SolverSpec("rodas5p_diffrax", "rosenbrock", "Rodas5P", True, adjoints=_NO_BACKSOLVE,
               problem=False, petab=True, tableau="rodas5p"),
)}

# a lean-only solver where its loop cannot run: the diffrax class of the same tableau
FALLBACK = {"rodas5p_lean": "rodas5p"}

# "auto"'s two picks (`solvers.stiffness` decides which): Rodas5P for stiff models (one
# Jacobian and factorisation per step, no Newton iterations), Tsit5 otherwise
AUTO_STIFF, AUTO_NONSTIFF = "rodas5p", "tsit5"
# what runs instead when the chosen solver does not support the adjoint method
BACKSOLVE_FALLBACK = "kvaerno5"

ADJOINTS = ("checkpoint", "backsolve")  # Problem(adjoint=...): the reverse-mode variants


def names(**where) -> tuple[str, ...]:
    """Solver names whose fields equal `where`, in table order, e.g. names(stiff=True);
    a field given a tuple matches any of its values, e.g. names(family=("esdirk", "implicit_euler"))."""
    def match(spec):
        for k, v in where.items():
            got = getattr(spec, k)
            if isinstance(v, tuple) and not isinstance(got, tuple):
                if got not in v:
                    return False
            elif got != v:
                return False
        return True
    return tuple(n for n, s in TABLE.items() if match(s))


SOLVERS = ("auto",) + names(problem=True)  # Problem(solver=...)
PETAB_SOLVERS = names(petab=True)  # importers.petab.load(solver=...)
EXPLICIT = names(stiff=False)
NEWTON = names(family=("esdirk", "imex_esdirk", "implicit_euler"))  # stage equations by Newton
ROSENBROCK = names(family="rosenbrock")  # linearly implicit: one matrix per step, no Newton
ESDIRK = names(jacobian_reuse=True)  # the Newton matrix can be kept across steps
LEAN_RODAS = names(lean="lean_rodas")  # the tableaus of solvers.lean_rodas


def spec(name: str) -> SolverSpec:
    return TABLE[name]
