"""`Problem`: a model with values, save times, solver settings and the inputs/outputs of interest.

Inputs (`wrt`) are named: a scalar parameter `k`, one entry of an array parameter `W[3,2]`,
a whole array parameter `W` (expanded to every entry), an initial value `y0.prey`.
Outputs (`of`) are the model's observables, else its states.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .checks.discontinuity import warn_undeclared
from .errors import InputError, did_you_mean, list_names
from .model import ODEModel
from .schedule import Dose, check_events, dose_input_refs, resolve_doses, resolve_fixed_breakpoints
from .solvers import ADJOINTS, SOLVERS  # noqa: E402  (the one solver table, core/solvers.py)

_ENTRY = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\[([0-9,\s]+)\]$")


@dataclass(frozen=True)
class InputRef:
    """Where one input lives: `kind` "param" or "y0", the parameter name or state index,
    and for an array parameter the flat index of the entry."""

    name: str
    kind: str
    target: str | int
    flat_index: int | None = None


def _entry_name(pname: str, idx: tuple[int, ...]) -> str:
    return f"{pname}[{','.join(str(i) for i in idx)}]"


def resolve_inputs(model: ODEModel, wrt: Sequence[str] | None, n_doses: int = 0) -> tuple[InputRef, ...]:
    """Turn input names into `InputRef`s; the default is every scalar parameter (every
    initial value "y0.<state>" for a model without scalar parameters). With
    `n_doses` doses, "dose[j].time", "dose[j].amount", "dose.time", "dose.amount" are inputs
    too (kind "dose", target the field, flat_index the dose's place in the sorted schedule).

    Raises `InputError` naming the bad entry, with the closest valid name.
    """
    if wrt is None:
        # a model without scalar parameters still has inputs: its initial state
        wrt = list(model.scalar_parameters) or [f"y0.{s}" for s in model.states]
    if isinstance(wrt, str):
        wrt = [wrt]
    valid = list(model.parameters) + [f"y0.{s}" for s in model.states]
    refs: list[InputRef] = []
    for i, name in enumerate(wrt):
        if not isinstance(name, str):
            raise InputError(f"wrt[{i}] = {name!r} is not a name; valid: {list_names(valid)}")
        name = name.strip()
        dose_refs = dose_input_refs(name, i, n_doses, lambda n, f, j: InputRef(n, "dose", f, j))
        if dose_refs is not None:
            refs.extend(dose_refs)
            continue
        if name.startswith("y0."):
            state = name[3:]
            if state not in model.states:
                raise InputError(
                    f"wrt[{i}] = '{name}': model '{model.name}' has no state '{state}'"
                    f"{did_you_mean(name, valid)}; states: {list_names(model.states)}"
                )
            refs.append(InputRef(name, "y0", model.states.index(state)))
            continue
        m = _ENTRY.match(name)
        if m:
            pname = m.group(1)
            idx = tuple(int(s) for s in m.group(2).split(",") if s.strip())
            if pname not in model.parameters:
                raise InputError(
                    f"wrt[{i}] = '{name}': unknown parameter '{pname}'"
                    f"{did_you_mean(pname, model.parameters)}; parameters: {list_names(model.parameters)}"
                )
            shape = model.parameters[pname].shape
            if len(idx) != len(shape) or any(j >= s for j, s in zip(idx, shape)):
                raise InputError(
                    f"wrt[{i}] = '{name}': index {list(idx)} is out of range for parameter "
                    f"'{pname}' of shape {shape}"
                )
            flat = int(np.ravel_multi_index(idx, shape))
            refs.append(InputRef(_entry_name(pname, idx), "param", pname, flat))
            continue
        if name not in model.parameters:
            raise InputError(
                f"wrt[{i}] = '{name}': model '{model.name}' has no parameter or initial value "
                f"of that name{did_you_mean(name, valid)}; valid: {list_names(valid)}"
            )
        value = model.parameters[name]
        if value.ndim == 0:
            refs.append(InputRef(name, "param", name))
        else:  # a whole array parameter: every entry is an input
            for flat, idx in enumerate(np.ndindex(*value.shape)):
                refs.append(InputRef(_entry_name(name, idx), "param", name, flat))
    names = [r.name for r in refs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"wrt names an input twice: {dup}")
    if not refs:
        raise InputError("wrt is empty: name at least one input")
    return tuple(refs)


def resolve_outputs(model: ODEModel, of: Sequence[str] | None) -> tuple[str, ...]:
    """Output names: the default is the model's outputs (observables, else states); `of`
    may name observables and states alike (a PK model's concentration and its amounts)."""
    if of is None:
        return tuple(model.outputs)
    valid = tuple(model.observables) + tuple(s for s in model.states if s not in model.observables)
    if isinstance(of, str):
        of = [of]
    for i, name in enumerate(of):
        if name not in valid:
            raise InputError(
                f"of[{i}] = '{name}': model '{model.name}' has no output of that name"
                f"{did_you_mean(name, valid)}; outputs: {list_names(valid)}"
            )
    if len(set(of)) != len(of) or not of:
        raise InputError(f"of must name distinct outputs, got {list(of)}")
    return tuple(of)


def _merge_parameters(model: ODEModel, overrides: Mapping[str, object] | None) -> dict:
    params = dict(model.parameters)
    for name, value in dict(overrides or {}).items():
        if name not in params:
            raise InputError(
                f"parameters: unknown parameter '{name}'{did_you_mean(name, params)}; "
                f"parameters of '{model.name}': {list_names(params)}"
            )
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != params[name].shape:
            raise InputError(
                f"parameters.{name} has shape {arr.shape}, expected {params[name].shape}"
            )
        if not np.all(np.isfinite(arr)):
            raise InputError(f"parameters.{name} = {value!r} is not finite (NaN or inf)")
        params[name] = arr
    return params


def _merge_y0(model: ODEModel, y0) -> np.ndarray:
    if y0 is None:
        return model.y0.copy()
    if isinstance(y0, Mapping):
        out = model.y0.copy()
        for name, value in y0.items():
            if name not in model.states:
                raise InputError(
                    f"y0: unknown state '{name}'{did_you_mean(name, model.states)}; "
                    f"states: {list_names(model.states)}"
                )
            out[model.states.index(name)] = float(value)
    else:
        out = np.asarray(y0, dtype=np.float64)
        if out.shape != (model.n_states,):
            raise InputError(
                f"y0 has shape {out.shape}, expected ({model.n_states},): one value per state"
            )
    if not np.all(np.isfinite(out)):
        raise InputError(f"y0 has non-finite values (NaN or inf): {out.tolist()}")
    return out


def _check_times(times, t0) -> tuple[np.ndarray, float]:
    ts = np.asarray(times, dtype=np.float64)
    if ts.ndim != 1 or ts.size < 1:
        raise InputError(f"times must be a 1-D array of at least one time, got shape {ts.shape}")
    if not np.all(np.isfinite(ts)):
        raise InputError("times contains NaN or inf")
    if ts.size > 1 and not np.all(np.diff(ts) > 0):
        k = int(np.argmax(np.diff(ts) <= 0))
        raise InputError(
            f"times must be strictly increasing: times[{k}] = {ts[k]} is followed by "
            f"times[{k + 1}] = {ts[k + 1]}"
        )
    start = float(ts[0]) if t0 is None else float(t0)
    if not np.isfinite(start) or start > ts[0]:
        raise InputError(f"t0 = {t0} must be finite and <= the first save time {ts[0]}")
    if start == ts[-1]:
        raise InputError(f"the time span is empty: t0 = {start} equals the last save time")
    return ts, start


class ToleranceWarning(UserWarning):
    """A setting of the solve that likely makes its result inaccurate."""


_WARNED_SMALL: set = set()  # (model, state, atol) already warned about


def _warn_small_initial_states(problem: "Problem") -> None:
    """Warn when a nonzero initial state is below atol: the solver then controls its error
    only to about atol, so a state that starts small and grows (an epidemic's first infected
    fraction, a trace species) starts from a value it does not resolve, and everything that
    grows from it inherits that start's error."""
    y0 = np.asarray(problem.y0, dtype=float)
    small = np.flatnonzero((y0 != 0) & (np.abs(y0) < problem.atol))
    if small.size:
        k = int(small[np.argmin(np.abs(y0[small]))])
        key = (problem.model.name, problem.model.states[k], problem.atol)
        if key in _WARNED_SMALL:  # once: a fit or an ensemble moving y0 would repeat it per call
            return
        _WARNED_SMALL.add(key)
        warnings.warn(
            f"model '{problem.model.name}': initial state '{problem.model.states[k]}' = {y0[k]:g} is "
            f"below atol = {problem.atol:g}"
            + (f" ({small.size} states are)" if small.size > 1 else "")
            + ": the solver controls its error only to about atol, so it and what grows from it may "
            f"be inaccurate; pass an atol well below it (e.g. atol={10 ** np.floor(np.log10(abs(y0[k]))) * 1e-6:g}) "
            "and let rtol set the accuracy", ToleranceWarning, stacklevel=3)


@dataclass(frozen=True, eq=False)
class Problem:
    """What to differentiate: model + values + save times + solver settings + wrt/of.

    Args:
        model: the `ODEModel`.
        times: save times, strictly increasing, shape (n_times,).
        wrt: input names (default every scalar parameter): "k", "W[3,2]", "W", "y0.prey".
        of: output names (default every observable, else every state); observables and
            states may be mixed.
        parameters: overrides of the model's default parameter values.
        y0: overrides of the initial state: a mapping state -> value, or a full array.
        t0: start time (default times[0]).
        solver: "auto" (Rodas5P for a model flagged stiff or found stiff by
            `solvers.stiffness`, else Tsit5: `core.solvers.AUTO_STIFF`, `AUTO_NONSTIFF`)
            or a name from `SOLVERS`.
        rtol, atol: tolerances of the adaptive step-size controller (> 0).
        max_steps: the solver's step budget; the checkpointed adjoint's memory grows with it.
        adjoint: the reverse-mode variant, "checkpoint" (discretise-then-optimise, exact for
            the discrete solve) or "backsolve" (continuous adjoint, O(1) memory, approximate).
        checkpoints: number of checkpoints of the checkpointed adjoint (default: diffrax's,
            about sqrt(max_steps)).
        doses: `sensitivity.Dose`s (bolus jumps of a state), e.g. `sens.doses(state="depot",
            amount=100, every=12, count=7)`; sorted by time, inputs "dose[2].time" etc.
        breakpoints: fixed times of discontinuities of the rhs (numbers: the step controller
            steps onto them) and/or parameter names (the solve is split there).
        events: state events (`sensitivity.Event`), in addition to the model's.
        jacobian_reuse: keep the Newton matrix's Jacobian and factorisation across steps
            (Kvaerno3/4/5 only; `sensitivity.reuse`). Off by default: on the library's
            stiff models it is no faster than rebuilding the matrix every step
            (benchmarks/stiff_scaling.py --reuse measures it).
    """

    model: ODEModel
    times: np.ndarray
    wrt: tuple[InputRef, ...]
    of: tuple[str, ...]
    parameters: Mapping[str, np.ndarray]
    y0: np.ndarray
    t0: float
    solver: str = "auto"
    rtol: float = 1e-8
    atol: float = 1e-8
    max_steps: int = 100_000
    adjoint: str = "checkpoint"
    checkpoints: int | None = None
    doses: tuple[Dose, ...] = ()
    fixed_breakpoints: tuple[float, ...] = ()
    param_breakpoints: tuple[str, ...] = ()
    events: tuple = ()
    jacobian_reuse: bool = False

    def __init__(self, model: ODEModel, times, wrt=None, of=None, parameters=None, y0=None,
                 t0=None, solver="auto", rtol=1e-8, atol=1e-8, max_steps=100_000,
                 adjoint="checkpoint", checkpoints=None, doses=None, breakpoints=None, events=None,
                 jacobian_reuse=False):
        if not isinstance(model, ODEModel):
            raise InputError(f"model must be an ODEModel, got {type(model).__name__}")
        ts, start = _check_times(times, t0)
        solver = str(solver).lower()
        if solver not in SOLVERS:
            raise InputError(f"solver = '{solver}' is unknown{did_you_mean(solver, SOLVERS)}; "
                             f"valid: {', '.join(SOLVERS)}")
        for tname, tol in (("rtol", rtol), ("atol", atol)):
            if not (isinstance(tol, (int, float, np.floating)) and np.isfinite(tol) and tol > 0):
                raise InputError(f"{tname} = {tol!r} must be a positive number, e.g. 1e-8")
        if not (isinstance(max_steps, (int, np.integer)) and max_steps >= 1):
            raise InputError(f"max_steps = {max_steps!r} must be a positive integer")
        if adjoint not in ADJOINTS:
            raise InputError(f"adjoint = '{adjoint}' is unknown{did_you_mean(adjoint, ADJOINTS)}; "
                             f"valid: {', '.join(ADJOINTS)}")
        if checkpoints is not None and not (isinstance(checkpoints, (int, np.integer)) and checkpoints >= 1):
            raise InputError(f"checkpoints = {checkpoints!r} must be a positive integer or None")
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        set_("model", model)
        set_("times", ts)
        set_("doses", resolve_doses(model, doses, start, float(ts[-1])))
        fixed, named = resolve_fixed_breakpoints(model, breakpoints)
        set_("fixed_breakpoints", fixed)
        set_("param_breakpoints", named)
        set_("events", check_events(events))
        set_("wrt", _resolve_inputs_cached(model, wrt, len(self.doses)))
        set_("of", resolve_outputs(model, of))
        set_("parameters", _merge_parameters(model, parameters))
        set_("y0", _merge_y0(model, y0))
        set_("t0", start)
        set_("solver", solver)
        set_("rtol", float(rtol))
        set_("atol", float(atol))
        set_("max_steps", int(max_steps))
        set_("adjoint", adjoint)
        set_("checkpoints", None if checkpoints is None else int(checkpoints))
        if not isinstance(jacobian_reuse, (bool, np.bool_)):
            raise InputError(f"jacobian_reuse = {jacobian_reuse!r} must be True or False")
        set_("jacobian_reuse", bool(jacobian_reuse))
        set_("_memo", {})  # per-problem caches (keys, device values, functions): see `memo`
        warn_undeclared(self)
        _warn_small_initial_states(self)

    # ------------------------------------------------------------------ shapes and names
    @property
    def input_names(self) -> tuple[str, ...]:
        if "_memo" not in self.__dict__:  # during __init__
            return tuple(r.name for r in self.wrt)
        return self.memo("input_names", lambda: tuple(r.name for r in self.wrt))  # once: a call reads it

    @property
    def n_inputs(self) -> int:
        return len(self.wrt)

    @property
    def n_outputs(self) -> int:
        """Number of scalar outputs of the trajectory: n_times * len(of)."""
        return self.times.size * len(self.of)

    def x0(self) -> np.ndarray:
        """The current values of the inputs, shape (n_inputs,) (a fresh copy)."""
        return self.memo("x0", self._x0).copy()

    def _x0(self) -> np.ndarray:
        out = np.empty(self.n_inputs)
        for i, r in enumerate(self.wrt):
            if r.kind == "y0":
                out[i] = self.y0[r.target]
            elif r.kind == "dose":
                out[i] = getattr(self.doses[r.flat_index], r.target)
            elif r.flat_index is None:
                out[i] = self.parameters[r.target]
            else:
                out[i] = self.parameters[r.target].ravel()[r.flat_index]
        return out

    def with_inputs(self, x) -> "Problem":
        """The problem with its inputs set to x (n_inputs,): the inverse of `x0()`; the
        compiled functions are reused, and so is the solver "auto" chose for this problem."""
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.n_inputs,):
            raise InputError(f"x has shape {x.shape}, expected ({self.n_inputs},): one value per input")
        params = {k: v.copy() for k, v in self.parameters.items()}
        y0 = self.y0.copy()
        dose_list = [dict(time=d.time, state=d.state, amount=d.amount) for d in self.doses]
        for value, r in zip(x, self.wrt):
            if r.kind == "y0":
                y0[r.target] = value
            elif r.kind == "dose":
                dose_list[r.flat_index][r.target] = float(value)
            elif r.flat_index is None:
                params[r.target] = np.asarray(value)
            else:
                params[r.target].reshape(-1)[r.flat_index] = value
        moved = self.replace(parameters=params, y0=y0,
                             **({"doses": [Dose(**d) for d in dose_list]} if self.doses else {}))
        if "solver_choice" in self._memo:  # a fit keeps its solver: no re-estimate, no recompile
            moved._memo["solver_choice"] = self._memo["solver_choice"]
        # the structure is the same: share what depends on it alone (keys, output functions)
        for key, value in self._memo.items():
            if isinstance(key, tuple) and key[0] in ("structure_key", "output_function"):
                moved._memo[key] = value
        moved._memo["x0"] = x.copy()
        return moved

    def replace(self, **changes) -> "Problem":
        """A copy with some fields changed, e.g. `prob.replace(parameters={"k": 2.0})`.

        `wrt` and `of` may be given as names; parameter and y0 overrides merge with the
        current values. Functions compiled for this problem are reused when only values change.
        """
        kwargs = dict(
            times=self.times, wrt=list(self.input_names), of=list(self.of),
            parameters=dict(self.parameters), y0=self.y0, t0=self.t0, solver=self.solver,
            rtol=self.rtol, atol=self.atol, max_steps=self.max_steps, adjoint=self.adjoint,
            checkpoints=self.checkpoints, doses=list(self.doses),
            breakpoints=list(self.fixed_breakpoints) + list(self.param_breakpoints), events=list(self.events),
            jacobian_reuse=self.jacobian_reuse,
        )
        if "parameters" in changes:
            merged = dict(self.parameters)
            merged.update(changes.pop("parameters") or {})
            kwargs["parameters"] = merged
        if "y0" in changes and isinstance(changes["y0"], Mapping):
            y0 = dict(zip(self.model.states, self.y0))
            y0.update(changes.pop("y0"))
            kwargs["y0"] = [y0[s] for s in self.model.states]
        if "times" in changes and "t0" not in changes:
            kwargs["t0"] = None
        kwargs.update(changes)
        return Problem(self.model, **kwargs)

    def memo(self, key, make):
        """`make()`, computed once per problem and `key` (values never change: the problem
        is immutable), e.g. its structure keys, its values on the device, its functions."""
        memo = self._memo
        try:
            return memo[key]
        except KeyError:
            value = memo[key] = make()
            return value

    def __getstate__(self):  # the per-problem caches hold closures and device arrays
        return {k: v for k, v in self.__dict__.items() if k != "_memo"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__["_memo"] = {}

    def structure_key(self, **extra) -> tuple:
        """What compiled functions depend on: everything but values (parameters, y0, times,
        tolerances; `solve.run_checked` compiles the first times and tolerances a simulate's
        structure meets in as constants). Computed once per problem and `extra`; its hash
        is computed once too (a `wrt` of a thousand inputs is costly to hash)."""
        items = tuple(sorted(extra.items()))
        return self.memo(("structure_key", items), lambda: _HashedTuple(self._structure_key(items)))

    def _structure_key(self, items: tuple) -> tuple:
        extra = dict(items)
        return (self.model.structure_key(), self.wrt, self.of, self.times.size, self.solver, self.max_steps,
                self.adjoint, self.checkpoints, tuple(sorted(extra.items())),
                tuple(d.state for d in self.doses), len(self.fixed_breakpoints), self.param_breakpoints,
                self.events, self.jacobian_reuse)

    def __repr__(self) -> str:
        return (f"Problem({self.model.name}, n_inputs={self.n_inputs}, of={list(self.of)}, "
                f"n_times={self.times.size}, solver={self.solver})")



class _HashedTuple(tuple):
    """A tuple that computes its hash once (structure keys are looked up on every call)."""

    def __new__(cls, parts):
        self = super().__new__(cls, parts)
        self._hash = tuple.__hash__(self)
        return self

    def __hash__(self):
        return self._hash


_RESOLVED: dict = {}


def _resolve_inputs_cached(model: ODEModel, wrt, n_doses: int = 0) -> tuple[InputRef, ...]:
    """`resolve_inputs`, remembered per model and names: problems built from one another
    (`replace`, `with_inputs`) share one tuple of refs, so their structure keys compare by
    identity instead of entry by entry."""
    try:
        key = (model, n_doses, None if wrt is None else (wrt,) if isinstance(wrt, str) else tuple(wrt))
        hit = _RESOLVED.get(key)
    except TypeError:  # unhashable names: let resolve_inputs say what is wrong
        return resolve_inputs(model, wrt, n_doses)
    if hit is None:
        hit = resolve_inputs(model, wrt, n_doses)
        if len(_RESOLVED) > 256:
            _RESOLVED.pop(next(iter(_RESOLVED)))
        _RESOLVED[key] = hit
        # `replace` passes the resolved names back in: let them find the same refs
        _RESOLVED.setdefault((model, n_doses, tuple(r.name for r in hit)), hit)
    return hit
