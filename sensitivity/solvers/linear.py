"""Which linear solver an implicit ODE solver runs, and wiring it into diffrax.

diffrax's implicit solvers (Kvaerno, KenCarp, ImplicitEuler) solve each stage's equations
with an optimistix root finder (`VeryChord`: one Newton matrix I - gamma h J per step,
reused by every stage and Newton iteration of that step) whose `linear_solver` is a
lineax solver; by default that materialises J densely (n JVPs) and LU-factorises it,
O(n^3) per step. The derivative of each stage solve (what forward tangents and adjoint
sweeps go through) is a second linear solve with the same matrix, by the implicit
function theorem in `optimistix.root_find`'s `ImplicitAdjoint`, again dense by default.

On the banded path (`choose`), Kvaerno3/4/5 run as `esdirk.ESDIRK` (`solver_for`): our
own ESDIRK step on diffrax's public tableaus, whose chord iterations use the block LU of
`banded` and whose stage derivatives (`jax.lax.custom_root`, implicit function theorem)
solve with a block LU of the Newton matrix at each stage root, transposed for adjoint
sweeps: no n x n array in any derivative. diffrax's own Kvaerno classes call
`optx.root_find` without an `adjoint` argument, so their derivative solves would be
dense LU whatever the root finder's linear solver; they run on the dense path (with
`chord.Chord`), where that is what is wanted. KenCarp and ImplicitEuler on the banded
path get `root_finder_for`'s banded `Chord` for their Newton iterations; their
derivative solves stay dense (correct, O(n^3) per stage).

Rodas5P (`rosenbrock.py`, solver "rodas5p") takes the same choice through
`rosenbrock_for(problem)`: dense, or the same colour-compressed Jacobian and block layout
(16-row blocks, explicit block inverses); its derivative solves are
`jax.lax.custom_linear_solve`s with the same factors.

Cost per Newton matrix, n states, c colours, blocks of m >= bandwidth b, N = n / m:
    dense   n JVPs + (2/3) n^3 flops (LU)
    banded  c JVPs + ~5 N m^3 flops (block LU) + N scan steps
A solve with the factors costs 2 n^2 (dense) against ~4 n m (banded).

Reuse across steps (the BDF/CVODES strategy, `newton/reuse.py`) is opt-in
(`Problem(jacobian_reuse=True)`): `esdirk.ESDIRK` (dense or banded) whose state carries J, the
gamma h it was factorised at and the factors, refreshed after 20 accepted steps, when gamma h
changed by more than 30 %, or at once when the Newton iteration fails on a stale matrix.
With the banded path a fresh Newton matrix costs c JVPs plus O(n m^2) flops, a few rhs
evaluations' worth, and on the library's models the extra chord iterations a stale matrix
costs outweigh that (benchmarks/stiff_scaling.py --reuse measures it), hence off by default.
The root finder is `chord.Chord` (diffrax's VeryChord with a termination test that lets
the iteration run past two steps); `integrate.solve` builds the solver with `solver_for`.

Imports run one way: this module uses `esdirk`, `newton.reuse` (its rules and notes),
`rosenbrock` and `registry`; none of them imports this one.
"""

from __future__ import annotations

from dataclasses import dataclass

import diffrax

from ..core import sparsity
from ..core.solvers import ESDIRK, NEWTON, ROSENBROCK, TABLE
from .banded import BandedLU, Layout, block_size
from .esdirk import BandedNewton, esdirk_class
from .newton import reuse
from .newton.chord import Chord
from .registry import solver_name
from .rosenbrock import Rodas5P
from .rosenbrock import block_size as rosenbrock_block

# the solver table's sets, under the names callers know
IMPLICIT_SOLVERS = NEWTON  # stage equations solved by Newton (chord) iterations
ROSENBROCK_SOLVERS = ROSENBROCK  # linearly implicit: one matrix per step, no Newton iterations
# Below about a hundred states dense LU is as fast as the banded path or faster (the
# scan's per-step overhead outweighs the flops it saves); from a few hundred on the banded
# path wins by orders of magnitude, as n^3 outgrows n m^2 (benchmarks/stiff_scaling.py).
MIN_STATES = 128  # below this: dense, and the structure is not even analysed
SCAN_STEP_FLOPS = 4000.0  # what one scan step's overhead is worth in flops (CPU)
SOLVES_PER_MATRIX = 10.0  # linear solves per Newton matrix (stages x chord iterations)
SPEEDUP_NEEDED = 2.0  # a detected pattern runs banded only when estimated this much cheaper


@dataclass(frozen=True)
class LinearChoice:
    """The linear solver of an implicit solver's Newton iterations: `kind` "dense" or
    "banded" (none for explicit solvers), the `structure` when analysed, the block size,
    and a sentence saying why."""

    kind: str
    reason: str
    structure: sparsity.Structure | None = None
    block: int | None = None

    def explain(self) -> str:
        lines = [f"Linear solver: {self.kind}. {self.reason}"]
        if self.structure is not None:
            lines.append(self.structure.describe() + ".")
        return "\n".join(lines)


_STRUCTURES: dict[tuple, sparsity.Structure] = {}


def structure_of(problem) -> sparsity.Structure:
    """The model's declared pattern, or one detected at (t0, y0, parameters) of the
    problem; analysed (bandwidth, ordering, colouring) once per model structure."""
    model = problem.model
    key = model.structure_key()
    hit = _STRUCTURES.get(key)
    if hit is not None:
        return hit
    declared = getattr(model, "jacobian_sparsity", None)
    if isinstance(declared, sparsity.Pattern):
        pattern = declared
    else:
        pattern = sparsity.detect(model.rhs, problem.t0, problem.y0, problem.parameters)
    result = sparsity.analyse(pattern)
    if len(_STRUCTURES) > 256:
        _STRUCTURES.clear()
    _STRUCTURES[key] = result
    return result


def costs(structure: sparsity.Structure, block: int) -> tuple[float, float]:
    """(dense, banded) estimated flops of one Newton matrix and the solves made with it:
    the Jacobian by JVPs (10 flops per nonzero each), the factorisation, and
    `SOLVES_PER_MATRIX` solves (2 n^2 dense; 2 scans of N steps with ~4 m^2 flops banded)."""
    n, nnz = structure.n, structure.pattern.nnz
    jvp = 10.0 * nnz
    N = -(-n // block)
    dense = n * jvp + (2.0 / 3.0) * n ** 3 + SOLVES_PER_MATRIX * 2.0 * n ** 2
    banded = (structure.n_colours * jvp + N * (5.0 * block ** 3 + SCAN_STEP_FLOPS)
              + SOLVES_PER_MATRIX * N * (4.0 * block ** 2 + 2.0 * SCAN_STEP_FLOPS))
    return dense, banded


def choose(problem, solver: str | None = None) -> LinearChoice:
    """The linear solver for `problem` run with `solver` (default: the problem's).

    Rules: explicit solvers need none; `jacobian_sparsity="dense"` forces dense; a declared
    pattern runs banded whenever it is banded at all (blocks smaller than n / 2, after
    reordering): declaring it asks for it; without a declaration, fewer than `MIN_STATES`
    states stay dense (not analysed), and otherwise the detected pattern runs banded when
    `costs` estimates it at least `SPEEDUP_NEEDED` times cheaper."""
    name = solver or solver_name(problem)
    if not TABLE[name].stiff:
        return LinearChoice("none", f"{name} is explicit: no Newton iterations.")
    model = problem.model
    declared = getattr(model, "jacobian_sparsity", None)
    if isinstance(declared, str) and declared == "dense":
        return LinearChoice("dense", "The model declares jacobian_sparsity='dense'.")
    n = model.n_states
    if declared is None and n < MIN_STATES:
        return LinearChoice("dense", f"{n} states (< {MIN_STATES}): dense LU is as fast at "
                                     "this size; structure not analysed.")
    st = structure_of(problem)
    m = block_size(st.reordered_bandwidth, n)
    if name in ROSENBROCK_SOLVERS:  # Rodas5P's banded path: larger blocks, explicit inverses
        m = rosenbrock_block(st.reordered_bandwidth, n)
    dense, banded = costs(st, m)
    declared_band = st.pattern.source == "declared" and 2 * m <= n
    if declared_band or (m < n and banded * SPEEDUP_NEEDED < dense):
        why = ("the model declares its pattern" if declared_band else
               f"~{dense / banded:.3g}x fewer estimated flops per Newton matrix than dense LU")
        return LinearChoice(
            "banded", f"Block-tridiagonal LU with {m} x {m} blocks on a colour-compressed "
            f"Jacobian: {why} ({banded:.3g} vs {dense:.3g}); for Kvaerno3/4/5 and Rodas5P the "
            "derivative solves of forward tangents and adjoint sweeps use it too (the adjoint its "
            "transpose).", st, m)
    return LinearChoice(
        "dense", f"Dense LU: the banded path would cost {banded:.3g} vs {dense:.3g} estimated "
        f"flops per Newton matrix (bandwidth {st.reordered_bandwidth} of {n} states).", st, None)


_LAYOUTS: dict[tuple, Layout] = {}


def root_finder_for(problem):
    """A diffrax root finder (`chord.Chord` with the step-size controller's tolerances) whose
    linear solver is `BandedLU` when `choose` says so, else None (dense: the caller's default).
    It speeds up the Newton iterations of diffrax's implicit solvers only: their derivative
    solves are dense whatever the root finder (see the module docstring)."""
    choice = choose(problem)
    if choice.kind != "banded":
        return None
    layout = _layout(choice)
    return diffrax.with_stepsize_controller_tols(Chord)(linear_solver=BandedLU(layout))


def _layout(choice: LinearChoice) -> Layout:
    block = choice.block
    key = (choice.structure.pattern.digest(), block,
           None if choice.structure.perm is None else choice.structure.perm.tobytes())
    layout = _LAYOUTS.get(key)
    if layout is None:
        layout = _LAYOUTS[key] = Layout(choice.structure, block)
    return layout


def rosenbrock_for(problem):
    """`rosenbrock.Rodas5P` with the banded linear algebra when `choose` says so, else dense.
    Its derivative solves use the same factors (`jax.lax.custom_linear_solve`)."""
    choice = choose(problem, "rodas5p")
    return Rodas5P(layout=_layout(choice) if choice.kind == "banded" else None)


def solver_for(problem, name: str, cls: type, structured: bool = True):
    """The diffrax solver instance `problem` runs, `cls` the class of the solver `name`:
    `cls` itself for explicit solvers; with `jacobian_reuse` on an ESDIRK method, the reuse
    subclass (dense or banded like `choose`); on the banded path (`structured` and chosen),
    Kvaerno3/4/5 as `esdirk.ESDIRK` with the block LU, other implicit solvers with the
    banded `Chord`; otherwise `cls` with the `chord.Chord` root finder (dense LU)."""
    if name not in IMPLICIT_SOLVERS:
        return cls()
    choice = choose(problem) if structured else None
    layout = _layout(choice) if choice is not None and choice.kind == "banded" else None
    if name in ESDIRK and structured and (layout is not None or reuse.enabled(problem)):
        return esdirk_class(cls)(linear=None if layout is None else BandedNewton(layout),
                                 max_age=reuse.MAX_AGE if reuse.enabled(problem) else None)
    if layout is not None:
        return cls(root_finder=diffrax.with_stepsize_controller_tols(Chord)(linear_solver=BandedLU(layout)))
    return cls(root_finder=diffrax.with_stepsize_controller_tols(Chord)())


def notes(problem) -> tuple[str, ...]:
    """Lines for `Plan.explain()`: which linear solver runs and why."""
    choice = choose(problem)
    if choice.kind == "none":
        return ()
    return (choice.explain(),) + reuse.notes(problem)
