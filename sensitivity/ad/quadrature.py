"""Objectives that integrate over time, as a quadrature state of the ODE.

An objective integral_a^b sum_j y_j(t) dt computed from the saved outputs (a trapezoid over
the save times) is only as good as the save grid, and its derivative with respect to a dose
time is wrong: a save time on the dose sees one side of the jump, so the trapezoid moves
with it by a whole panel. Here the integral is a state instead: the model is augmented with
q' = sum_j h_j(t, y, p) (h_j the integrated outputs, observables or states), q(t0) = 0, and
the objective is q(b) - q(a). The solver controls q's error like any state's, and the cut
at doses, breakpoints and events treats q exactly (q does not jump), so value and
derivative are those of the ODE's own integral in every AD mode.

An objective asks for this with an attribute `quadrature`: None, or (columns, window),
columns the indices into `problem.of` of the outputs integrated and window (a, b) the
limits, or None for the first and last save time (`analyses.metrics.Objective` of kind
"integral" has it). `with_quadrature(problem, objective)` then returns the augmented
problem (same inputs, the one output q) and the objective `Increase` on it; any other
objective passes through unchanged.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..core.errors import InputError
from ..core.model import ODEModel
from ..core.problem import Problem
from ..core.schedule import Event, all_events
from ..core.sparsity import Pattern, declared
from ..solvers import stiffness


@dataclass(frozen=True)
class Increase:
    """The integral of the outputs between save times `first` and `last` from a quadrature
    state, ys of shape (n_times, n_of): ys[last, column] - ys[first, column].

    With `clock` and `rate` (columns of a clock state t' = 1 and of the integrand), for a
    solve a terminal event may stop: the outputs hold their value after the event, and so
    do q and the clock, so the held stretch (t - clock) * integrand is added at both ends
    (`t_first`, `t_last` the save times). Equal instances compare and hash equal, so
    compiled functions are reused.
    """

    first: int
    last: int
    column: int = 0
    clock: int | None = None
    rate: int | None = None
    t_first: float = 0.0
    t_last: float = 0.0

    def __call__(self, ys):
        if self.clock is None:
            return ys[self.last, self.column] - ys[self.first, self.column]

        def held(k, t):
            return ys[k, self.column] + (t - ys[k, self.clock]) * ys[k, self.rate]
        return held(self.last, self.t_last) - held(self.first, self.t_first)


def quadrature_of(objective) -> tuple[tuple[int, ...], tuple[float, float] | None] | None:
    """The objective's (columns, window), or None for an objective of the outputs alone."""
    spec = getattr(objective, "quadrature", None)
    if spec is None or callable(spec):
        return None
    columns, window = spec
    return tuple(int(c) for c in columns), (None if window is None else (float(window[0]), float(window[1])))


def with_quadrature(problem: Problem, objective: Callable) -> tuple[Problem, Callable]:
    """(problem, objective) to differentiate: for an integrating objective, the problem
    augmented with its quadrature state (output q only, save times the window's ends and
    the last save time) and `Increase` on it; any other objective unchanged. The augmented
    problem is built once per problem and objective."""
    spec = quadrature_of(objective)
    if spec is None:
        return problem, objective
    return problem.memo(("quadrature", spec), lambda: _augment(problem, *spec))


# --------------------------------------------------------------------------- the augmented problem
def _augment(problem: Problem, columns: tuple[int, ...], window) -> tuple[Problem, Increase]:
    of = problem.of
    bad = [c for c in columns if not 0 <= c < len(of)]
    if bad or not columns:
        raise InputError(f"integral objective: columns {list(columns)} must index the problem's outputs "
                         f"{list(of)} (0 .. {len(of) - 1}), at least one")
    names = tuple(of[c] for c in columns)
    ts = problem.times
    a, b = (float(ts[0]), float(ts[-1])) if window is None else window
    T = float(ts[-1])
    if not (problem.t0 <= a <= b <= T):
        raise InputError(f"integral objective: the window [{a:g}, {b:g}] must lie inside the problem's "
                         f"time span [{problem.t0:g}, {T:g}] with start <= end")
    times = np.unique(np.array([a, b, T], dtype=np.float64))
    held = any(ev.terminal for ev in all_events(problem))  # outputs held after the event
    model = lifted_model(problem.model, names, held)
    n = problem.model.n_states
    of = [model.states[n]] + ([model.states[n + 1], next(iter(model.observables))] if held else [])
    y0 = np.append(problem.y0, [0.0, problem.t0] if held else [0.0])
    with warnings.catch_warnings():  # the problem's own construction has warned already
        warnings.simplefilter("ignore")
        aug = Problem(model, times, wrt=list(problem.input_names), of=of,
                      parameters=dict(problem.parameters), y0=y0, t0=problem.t0,
                      solver=problem.solver, rtol=problem.rtol, atol=problem.atol,
                      max_steps=problem.max_steps, adjoint=problem.adjoint, checkpoints=problem.checkpoints,
                      doses=list(problem.doses),
                      breakpoints=list(problem.fixed_breakpoints) + list(problem.param_breakpoints),
                      events=[_lifted_event(ev, problem.model.n_states) for ev in problem.events],
                      jacobian_reuse=problem.jacobian_reuse)
    if problem.solver == "auto":  # q does not change stiffness: the problem's choice, no new estimate
        aug.memo("solver_choice", lambda: stiffness.choice(problem))
    first, last = (int(np.searchsorted(times, t)) for t in (a, b))
    if held:
        return aug, Increase(first, last, 0, 1, 2, a, b)
    return aug, Increase(first, last)


_MODELS: dict = {}
_EVENTS: dict = {}


def lifted_model(model: ODEModel, names: tuple[str, ...], held: bool = False) -> ODEModel:
    """`model` with one more state q, named like no state or parameter of it (u[n] for a
    model of n unnamed states), q' = the sum of the outputs `names` (observables or states).
    held=True (a terminal event may stop the solve): also a clock state t' = 1 and the
    integrand as the one observable (exact for integrands not depending on t explicitly:
    after the event they hold the value at the event). Built once per model, names and
    `held`, so compiled functions are shared."""
    key = (model, names, held)
    hit = _MODELS.get(key)
    if hit is not None:
        return hit
    n = model.n_states
    integrands = tuple(model.observables[nm] if nm in model.observables else _state(model.states.index(nm))
                       for nm in names)
    extra = 2 if held else 1
    taken = set(model.states) | set(model.parameters) | set(model.observables)
    free = (f"integral_{k}" if k else "integral" for k in range(len(taken) + 3))
    free = [name for name in free if name not in taken]
    if model.states == tuple(f"u[{i}]" for i in range(n)):  # a model of n unnamed states
        states = n + extra  # named u[0] .. u[n + extra - 1]
    else:
        states = list(model.states) + free[:extra]
    sparsity = model.jacobian_sparsity
    if isinstance(sparsity, Pattern):  # q' depends on the integrands' states, nothing on q
        cols = _integrand_states(model, integrands)
        pairs = np.concatenate([np.stack([sparsity.rows, sparsity.cols], axis=1),
                                np.stack([np.full(cols.size, n), cols], axis=1)])
        sparsity = declared(pairs.astype(np.int64), n + extra)
    observables = {free[-1]: _integrand(integrands, n)} if held else None
    lifted = ODEModel(model.name, states, dict(model.parameters),
                      _augmented_rhs(model.rhs, integrands, n, held), np.append(model.y0, np.zeros(extra)),
                      observables=observables, stiff=model.stiff, doc=model.doc,
                      breakpoints=list(model.breakpoints),
                      events=[_lifted_event(ev, n) for ev in model.events], jacobian_sparsity=sparsity)
    if len(_MODELS) >= 64:
        _MODELS.pop(next(iter(_MODELS)))
    _MODELS[key] = lifted
    return lifted


def _integrand_states(model: ODEModel, integrands: tuple) -> np.ndarray:
    """The states the integrands depend on: nonzeros of their gradient at two random points
    near (y0, the default parameters), as `core.sparsity.detect` samples the rhs."""
    rng = np.random.default_rng(0)
    params = {k: jnp.asarray(v) for k, v in model.parameters.items()}
    y0 = np.asarray(model.y0, dtype=np.float64)

    def total(y, p):
        return sum(jnp.asarray(h(jnp.asarray(0.0), y, p)).reshape(()) for h in integrands)

    hit = np.zeros(y0.size, dtype=bool)
    for _ in range(2):
        y = y0 + 0.1 * (np.abs(y0) + 1) * rng.standard_normal(y0.size)
        p = {k: v * (1 + 0.1 * rng.standard_normal(np.shape(v))) for k, v in params.items()}
        grad = np.asarray(jax.grad(total)(jnp.asarray(y), p))
        hit |= (grad != 0) | ~np.isfinite(grad)
    return np.flatnonzero(hit)


def _state(i: int) -> Callable:
    def h(t, y, p):
        return y[i]
    return h


def _integrand(integrands: tuple, n: int) -> Callable:
    def h(t, z, p):
        return sum(jnp.asarray(g(t, z[:n], p), dtype=z.dtype).reshape(()) for g in integrands)
    return h


def _augmented_rhs(rhs: Callable, integrands: tuple, n: int, held: bool) -> Callable:
    def augmented(t, z, p):
        y = z[:n]
        dy = jnp.asarray(rhs(t, y, p), dtype=z.dtype).reshape(n)
        dq = sum(jnp.asarray(h(t, y, p), dtype=z.dtype).reshape(()) for h in integrands)
        tail = [jnp.reshape(dq, (1,))] + ([jnp.ones((1,), z.dtype)] if held else [])
        return jnp.concatenate([dy, *tail])
    return augmented


def _lifted_event(ev: Event, n: int) -> Event:
    """`ev` on the augmented state: its condition sees the model's states, its reset keeps q."""
    key = (ev, n)
    hit = _EVENTS.get(key)
    if hit is None:
        reset = None if ev.reset is None else _lifted_reset(ev.reset, n)
        hit = _EVENTS[key] = dataclasses.replace(  # scheduled fields kept: delay and priority see y too
            ev, condition=_lifted_condition(ev.condition, n), reset=reset,
            delay=None if ev.delay is None else _lifted_condition(ev.delay, n),
            priority=None if ev.priority is None else _lifted_condition(ev.priority, n))
    return hit


def _lifted_condition(condition: Callable, n: int) -> Callable:
    def lifted(t, z, p):
        return condition(t, z[:n], p)
    return lifted


def _lifted_reset(reset: Callable, n: int) -> Callable:
    def lifted(t, z, p):
        y = jnp.asarray(reset(t, z[:n], p), dtype=z.dtype).reshape(n)
        return jnp.concatenate([y, z[n:]])
    return lifted
