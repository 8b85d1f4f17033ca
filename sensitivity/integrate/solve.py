"""Simulation on diffrax, and the one differentiable map every AD mode is built on.

`output_function(problem, method)` returns a pure function
    f(x, values) -> (outputs (n_times, n_of), aux)
of the input vector x (n_inputs,), where `values` holds the arrays that change without
recompiling (parameters, y0, times, t0, rtol, atol) and `aux` the solver's result code and
step counts. `method` fixes how diffrax differentiates the solve:

    "forward"     diffrax.ForwardMode             forward mode only (jvp, jacfwd)
    "checkpoint"  diffrax.RecursiveCheckpointAdjoint  reverse mode only (vjp, grad, jacrev)
    "backsolve"   diffrax.BacksolveAdjoint        reverse mode, continuous adjoint, O(1) memory
    "direct"      diffrax.DirectAdjoint           both, so forward-over-reverse second order

`run_checked` compiles and runs such functions with the checks of the solve. For
`simulate` it compiles a problem's settings (save times, t0, tolerances) in as constants
for the first settings a structure meets in the process, so that a small model's program is
small enough for XLA to run inline; other settings of that structure share one general
program.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

from ..core import schedule
from ..core.errors import SolverError
from ..core.problem import Problem
from ..core.solvers import BACKSOLVE_FALLBACK, FALLBACK, ROSENBROCK, TABLE
from ..solvers import lean, lean_rodas
from ..solvers import linear as stiff_linear
from ..solvers.compat import result_code, result_item
from ..solvers.newton import reuse
from ..solvers.registry import solver_class, solver_name
from . import compiled, pieces
from .failure import explain_failure

METHODS = ("forward", "checkpoint", "backsolve", "direct")


def values_of(problem: Problem) -> dict:
    """The arrays a compiled function takes besides x: changing them does not recompile.
    Moved to the device once per problem (a problem's values never change)."""
    return problem.memo("values", lambda: _values_of(problem))


def x0_of(problem: Problem):
    """The inputs' values x (n_inputs,) as a device array, moved there once per problem."""
    return problem.memo("x0_device", lambda: jnp.asarray(problem.x0()))


def _values_of(problem: Problem) -> dict:
    return {
        "params": {**{k: jnp.asarray(v) for k, v in problem.parameters.items()}, **pieces.dose_params(problem)},
        "y0": jnp.asarray(problem.y0),
        "times": jnp.asarray(problem.times),
        "t0": jnp.asarray(problem.t0),
        "rtol": jnp.asarray(problem.rtol),
        "atol": jnp.asarray(problem.atol),
        **pieces.extra_values(problem),
    }


def assemble_function(problem: Problem) -> Callable:
    """(x, params, y0) -> (params, y0) with the inputs x written into their places."""
    y0_pos, y0_idx = [], []
    scalar: dict[str, int] = {}
    entries: dict[str, tuple[list[int], list[int]]] = {}
    for i, ref in enumerate(problem.wrt):
        if ref.kind == "y0":
            y0_pos.append(i)
            y0_idx.append(ref.target)
        elif ref.kind == "dose":
            pos, flat = entries.setdefault((schedule.DOSE_KEY, ref.target), ([], []))
            pos.append(i)
            flat.append(ref.flat_index)
        elif ref.flat_index is None:
            scalar[ref.target] = i
        else:
            pos, flat = entries.setdefault(ref.target, ([], []))
            pos.append(i)
            flat.append(ref.flat_index)
    y0_pos_a, y0_idx_a = np.array(y0_pos, dtype=int), np.array(y0_idx, dtype=int)
    entries_a = {k: (np.array(p, dtype=int), np.array(f, dtype=int)) for k, (p, f) in entries.items()}
    # a whole array (every entry, in order, side by side in x) is a slice of x, not a scatter
    # (dose times and amounts, keyed by a tuple, are always scattered)
    shapes = {k: problem.parameters[k].shape for k in entries if not isinstance(k, tuple)}
    whole = {k: int(pos[0]) for k, (pos, flat) in entries_a.items()
             if k in shapes and _is_run(pos, flat, int(np.prod(shapes[k])))}
    y0_whole = _is_run(y0_pos_a, y0_idx_a, problem.model.n_states) if y0_pos else False

    def assemble(x, params, y0):
        params = dict(params)
        for name, i in scalar.items():
            params[name] = x[i]
        for name, (pos, flat) in entries_a.items():
            if isinstance(name, tuple):  # a dose time or amount
                dose = dict(params[name[0]])
                dose[name[1]] = dose[name[1]].at[flat].set(x[pos])
                params[name[0]] = dose
                continue
            base = params[name]
            if name in whole:
                params[name] = x[whole[name]:whole[name] + flat.size].reshape(base.shape)
                continue
            params[name] = base.ravel().at[flat].set(x[pos]).reshape(base.shape)
        if y0_whole:
            y0 = x[int(y0_pos_a[0]):int(y0_pos_a[0]) + y0_idx_a.size].astype(y0.dtype)
        elif y0_pos:
            y0 = y0.at[y0_idx_a].set(x[y0_pos_a])
        return params, y0

    return assemble


def _is_run(pos: np.ndarray, idx: np.ndarray, size: int) -> bool:
    """Whether positions `pos` of x fill indices `idx` = 0..size-1 in order, side by side."""
    return (idx.size == size and bool(np.all(idx == np.arange(size)))
            and bool(np.all(np.diff(pos) == 1)))


def _adjoint(problem: Problem, method: str, solver, controller):
    if method == "forward":
        return diffrax.ForwardMode()
    if method == "direct":
        return diffrax.DirectAdjoint()
    if method == "backsolve":
        return diffrax.BacksolveAdjoint(solver=solver, stepsize_controller=controller)
    if method == "checkpoint":
        return diffrax.RecursiveCheckpointAdjoint(checkpoints=problem.checkpoints)
    raise ValueError(f"unknown method {method!r}; valid: {METHODS}")


def solve_function(problem: Problem, method: str = "checkpoint", max_steps: int | None = None,
                   rhs: Callable | None = None) -> Callable:
    """(params, y0, values) -> (ys (n_times, n_states), aux): one diffrax solve with the
    problem's solver settings, of the model's rhs or of another vector field `rhs`."""
    name = solver_name(problem)
    steps = problem.max_steps if max_steps is None else max_steps
    if TABLE[name].cls is None:  # a lean loop only: where its limits allow, else FALLBACK
        if rhs is None and lean_rodas_applies(problem, method):
            return _lean_rodas_solve(problem, method, steps, TABLE[name].tableau)
        name = FALLBACK[name]
    if method not in TABLE[name].adjoints:  # Rodas5P: backsolve solves a pytree state backwards
        name = BACKSOLVE_FALLBACK
    if name in ROSENBROCK:  # Rodas5P: dense or banded linear algebra
        solver = stiff_linear.rosenbrock_for(problem) if rhs is None else solver_class(name)()
    else:  # explicit, or implicit with chord.Chord (+ banded linear solver, + reuse if asked)
        solver = stiff_linear.solver_for(problem, name, solver_class(name), structured=rhs is None)
    counted = rhs is None and reuse.enabled(problem) and method != "backsolve"  # reuse counters
    if schedule.has_pieces(problem):  # doses, parameter breakpoints, state events
        return pieces.solve_function(problem, method, steps, rhs,
                                     lambda c: _adjoint(problem, method, solver, c), solver)
    rhs = problem.model.rhs if rhs is None else rhs

    def vector_field(t, y, p):
        return jnp.asarray(rhs(t, y, p), dtype=y.dtype).reshape(y.shape)

    term = diffrax.ODETerm(vector_field)

    def solve(params, y0, values):
        times = values["times"]
        controller = pieces.controller(problem, values)
        sol = diffrax.diffeqsolve(
            term, solver, values["t0"], times[-1], None, y0, params,
            saveat=diffrax.SaveAt(ts=times, solver_state=counted), stepsize_controller=controller,
            max_steps=steps, adjoint=_adjoint(problem, method, solver, controller), throw=False,
        )
        # diffrax counts num_steps = accepted + rejected; returning all three would keep one
        # more counter (an XLA kernel) in every solver step: accepted is derived on the host
        aux = {"result": sol.result, "num_steps": sol.stats["num_steps"],
               "num_rejected_steps": sol.stats["num_rejected_steps"]}
        if counted:
            aux.update(reuse.stats(sol.solver_state))
        return sol.ys, aux

    return solve


def lean_rodas_applies(problem: Problem, method: str) -> bool:
    """Whether the lean Rosenbrock loop (`solvers.lean.rosenbrock_solve`) can run `problem`'s
    solve: the method is one it differentiates (forward, checkpoint), nothing cuts the solve
    (doses, breakpoints, events) and the linear algebra is dense (the loop has no banded LU)."""
    if method not in TABLE[solver_name(problem)].adjoints:
        return False
    if schedule.has_pieces(problem) or getattr(problem, "fixed_breakpoints", ()):
        return False
    return stiff_linear.choose(problem).kind == "dense"


def _lean_rodas_solve(problem: Problem, method: str, steps: int, tableau: str) -> Callable:
    """(params, y0, values) -> (ys, aux): the lean Rosenbrock loop with `tableau`, steps
    landing on the save times; aux as `solve_function`'s (result, num_steps,
    num_rejected_steps). method "forward": a `lax.while_loop`; "checkpoint": the
    checkpointed loop, reverse-mode differentiable (the discrete adjoint)."""
    model = problem.model
    kind = "checkpointed" if method == "checkpoint" else "lax"
    comp = lean_rodas.compression(model)  # J from a colouring of a declared pattern, where it pays

    def f(t, y, p):
        return jnp.asarray(model.rhs(t, y, p), dtype=y.dtype).reshape(y.shape)

    def solve(params, y0, values):
        times = values["times"]
        c = lean.rosenbrock_run(f, y0, values["t0"], times[-1], times, params, (values["rtol"], values["atol"]),
                                steps, kind=kind, method=tableau, compression=comp)
        result = diffrax.RESULTS.where(c["fin"], diffrax.RESULTS.successful, diffrax.RESULTS.max_steps_reached)
        return c["ys"], {"result": result, "num_steps": c["n"], "num_rejected_steps": c["n"] - c["n_acc"]}

    return solve


def observe_function(problem: Problem) -> Callable:
    """(times, ys, params) -> outputs (n_times, n_of): the chosen observables and states."""
    model = problem.model
    if not any(name in model.observables for name in problem.of):
        idx = np.array([model.states.index(name) for name in problem.of], dtype=int)
        if idx.size == model.n_states and np.all(idx == np.arange(idx.size)):
            return lambda times, ys, params: ys  # every state in order: no copy
        return lambda times, ys, params: ys[:, idx]

    def one(name):
        if name in model.observables:
            return model.observables[name]
        i = model.states.index(name)
        return lambda t, y, p: y[i]

    hs = [one(name) for name in problem.of]

    def observe(times, ys, params):
        row = lambda t, y: jnp.stack([jnp.asarray(h(t, y, params)) for h in hs])  # noqa: E731
        return jax.vmap(row)(times, ys)

    return observe


def states_and_outputs_function(problem: Problem, method: str, max_steps: int | None = None,
                                assemble_inputs: bool = True) -> Callable:
    """f(x, values) -> (states (n_times, n_states), outputs (n_times, n_of), aux).
    assemble_inputs=False: x is the problem's own x0, whose values `values` already holds
    (a plain simulation): it is not written into the parameters again."""
    assemble = assemble_function(problem) if assemble_inputs else (lambda x, params, y0: (params, y0))
    solve = solve_function(problem, method, max_steps)
    observe = observe_function(problem)

    def f(x, values):
        params, y0 = assemble(x, values["params"], values["y0"])
        ys, aux = solve(params, y0, values)
        return ys, observe(values["times"], ys, params), aux

    return f


def output_function(problem: Problem, method: str, max_steps: int | None = None) -> Callable:
    """f(x, values) -> (outputs (n_times, n_of), aux): the map every AD mode differentiates.
    Built once per problem, method and max_steps."""
    return problem.memo(("output_function", method, max_steps),
                        lambda: _output_function(problem, method, max_steps))


def _output_function(problem: Problem, method: str, max_steps: int | None) -> Callable:
    g = states_and_outputs_function(problem, method, max_steps)

    def f(x, values):
        _, outputs, aux = g(x, values)
        return outputs, aux

    return f


def check_solution(problem: Problem, aux: dict, ys) -> None:
    """Raise `SolverError` if the solve failed or produced NaN/inf, saying where, what went
    non-finite (see `failure.explain_failure`) and what to try."""
    pieces.check_aux(problem, aux)
    ys = np.asarray(ys)
    ok = bool(np.asarray(aux["result"] == diffrax.RESULTS.successful))
    if ok and np.all(np.isfinite(ys)):
        return
    message = None if ok else diffrax.RESULTS[aux["result"]]
    raise SolverError(explain_failure(problem, aux, ys, solver_name(problem), message))


@dataclass(frozen=True)
class Trajectory:
    """A simulation: `states` (n_times, n_states), `outputs` (n_times, n_of) named by
    `output_names`, solver statistics and timings (seconds, compile apart)."""

    times: np.ndarray
    states: np.ndarray
    outputs: np.ndarray
    state_names: tuple[str, ...]
    output_names: tuple[str, ...]
    stats: dict
    timings: dict


def with_accepted(stats: dict) -> dict:
    """`stats` with num_accepted_steps = num_steps - num_rejected_steps when it is missing
    (a plain solve returns only the two; every diffrax step is accepted or rejected)."""
    if "num_accepted_steps" not in stats and "num_steps" in stats and "num_rejected_steps" in stats:
        stats = dict(stats, num_accepted_steps=stats["num_steps"] - stats["num_rejected_steps"])
        stats = dict(sorted(stats.items()))
    return stats


def simulate(problem: Problem) -> Trajectory:
    """Solve the problem's ODE and save at `problem.times`.

    Returns a `Trajectory` with states (n_times, n_states), outputs (n_times, n_of), the
    steps taken and rejected, and timings. Raises `SolverError` if the solver fails.
    """
    same = problem.of == problem.model.states  # outputs are the states: return them once

    def build():  # x below is x0, already in the values: no input assembly in the program
        g = states_and_outputs_function(problem, "checkpoint", assemble_inputs=False)

        def f(x, values):
            ys, outputs, aux = g(x, values)
            return (outputs, aux) if same else (outputs, aux, ys)
        return f

    args = (x0_of(problem), values_of(problem))
    results, info = run_checked(problem, build, args, settings_compiled_in=True, fn="simulate")
    ys = info["outputs"] if same else results[0]
    return Trajectory(problem.times, np.asarray(ys), info["outputs"], problem.model.states,
                      problem.of, info["stats"], info["timings"])


def run_checked(problem: Problem, build: Callable[[], Callable], args: tuple, *,
                settings_compiled_in: bool = False, **key) -> tuple:
    """Compile (cached per problem structure and `key`) and run a function returning
    `(outputs, aux, *results)`; check the solve and return (results, info) where info holds
    solver statistics and timings.

    With `settings_compiled_in` and `args` the problem's own values (`x0_of`, `values_of`,
    ...), its settings (save times, t0, tolerances) are compiled in as constants for the
    first settings this process meets per structure and `key`, and passed as arrays for any
    other (see `_FIRST_SETTINGS`). `simulate` asks for it: its program is the one small
    enough to gain; a derivative's counts its flops times the inputs, far above XLA's
    threshold, and would only pay a second compile for new settings."""
    key = dict(key, solver_used=solver_name(problem))  # "auto" resolves per problem's values
    structure = problem.structure_key(**key)
    signature = None
    own_values = len(args) >= 2 and args[0] is x0_of(problem) and args[1] is values_of(problem)
    inline = False
    if own_values and settings_compiled_in:
        constants, digest = problem.memo("settings", lambda: _settings_of(problem))
        inline = _FIRST_SETTINGS.setdefault(structure, digest) == digest
        if inline:
            structure = (structure, "settings", digest)
            args = (args[0], problem.memo("values_without_settings", lambda: _without_settings(problem)),
                    *args[2:])
            build = _with_constants(build, constants)
    if own_values and len(args) == 2:  # the problem's own device values: signature computed once
        signature = problem.memo(("values_signature", inline), lambda: compiled.signature(args))
    (status, outputs, *results), timings, meta = compiled.run_with_meta(
        structure, lambda: _with_status(build), args, signature)
    status = np.asarray(status)  # the one value fetched: [diffrax's result code, statistics...]
    stats = with_accepted(dict(zip(meta["stats"], status[1:].tolist())))
    outputs = np.asarray(outputs)
    if status[0] == _SUCCESSFUL and not stats.get("events_exhausted") and np.isfinite(outputs).all() \
            and all(np.isfinite(r).all() for r in _inexact_leaves(results)):
        return results, {"stats": stats, "timings": timings, "outputs": outputs}
    aux = dict(stats, result=_result_item(int(status[0])))
    check_solution(problem, aux, outputs)
    raise SolverError(
        f"the derivatives of model '{problem.model.name}' ({key.get('fn', 'result')}) "
        "contain NaN or inf although the solve succeeded: a backward or tangent solve "
        "failed. Try: mode='forward' or the checkpointed adjoint instead of backsolve, a "
        "stiff solver (solver='rodas5p' or 'kvaerno5'), tighter tolerances or more max_steps."
    )


_SUCCESSFUL = int(np.asarray(result_code(diffrax.RESULTS.successful)))
_SETTINGS = ("times", "t0", "rtol", "atol")
# Settings compiled in. XLA's CPU client runs a program on the calling thread only when its
# cost analysis counts fewer than 1000 flops, and diffrax's checks of save times passed as
# an array alone count 10,000 at 1000 save times: a small model's solve then pays a thread
# hand-off and those checks on every call, a large share of the call for a model as small
# as Lotka-Volterra (`benchmarks/overhead.py` measures the per-call overhead). With the
# times constant, XLA folds the checks away and runs the solve inline. So the first settings
# (times, t0, tolerances) a simulate's structure meets in this process are compiled in; any other
# settings of that structure share one general program taking them as arrays, so a loop
# over time grids compiles twice, not once per grid.
_FIRST_SETTINGS: dict = {}  # structure key -> digest of the settings compiled in


def _settings_of(problem: Problem) -> tuple[dict, str]:
    """The problem's settings as numpy constants, and a digest of their values."""
    values = values_of(problem)
    constants = {k: np.asarray(values[k]) for k in _SETTINGS}
    return constants, _digest(constants)


def _digest(constants: dict) -> str:
    h = hashlib.sha256()
    for name in _SETTINGS:
        value = np.ascontiguousarray(constants[name])
        h.update(f"{name}{value.shape}".encode())
        h.update(value.tobytes())
    return h.hexdigest()[:24]


def _without_settings(problem: Problem) -> dict:
    return {k: v for k, v in values_of(problem).items() if k not in _SETTINGS}


def _with_constants(build: Callable[[], Callable], constants: dict) -> Callable[[], Callable]:
    """`build` for a program whose values lack the settings: they are put back as constants."""
    def build_constant():
        f = build()

        def g(x, values, *rest):
            return f(x, {**values, **{k: jnp.asarray(v) for k, v in constants.items()}}, *rest)
        return g
    return build_constant


def _inexact_leaves(results) -> list:
    leaves = [np.asarray(leaf) for leaf in jax.tree_util.tree_leaves(results)]
    return [leaf for leaf in leaves if np.issubdtype(leaf.dtype, np.inexact)]


def _with_status(build: Callable[[], Callable]) -> Callable:
    """The program of `build()`, `(*args) -> (outputs, aux, *results)`, returning
    `(status, outputs, *results)` with status an int array [diffrax's result code, then
    aux's solver statistics]: one small fetch for the checks of `run_checked`. Finiteness
    is checked on the host (numpy on arrays fetched anyway): inside the program it would
    count as many flops as values, and XLA hands a program of over 1000 flops to a worker
    thread. No custom pytree in the outputs, so the program can be exported
    (`export_store`). The statistics' names go into `g.meta["stats"]` while tracing."""
    f = build()

    def g(*args):
        outputs, aux, *results = f(*args)
        code = jnp.zeros((), jnp.int64) + _SUCCESSFUL
        if "result" in aux:
            code = jnp.asarray(result_code(aux["result"])).astype(jnp.int64)
        names = sorted(k for k in aux if k != "result")
        g.meta["stats"] = names
        stats = [jnp.asarray(aux[k]).astype(jnp.int64).reshape(()) for k in names]
        status = jnp.stack([code, *stats])
        return (status, outputs, *results)

    g.meta = {}
    return g


def _result_item(code: int):
    """diffrax's result (an enumeration item) from its integer code, for `check_solution`."""
    return result_item(code)
