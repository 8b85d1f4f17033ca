"""`ODEModel`: the contract an ODE model is written against.

A model is a right-hand side `rhs(t, y, p) -> dy/dt` over a 1-D state vector `y` and a
mapping `p` of named parameters (scalars or arrays), default parameter values, a default
initial state, and optionally named observables `h(t, y, p) -> scalar`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from .checks.model import check_model
from .errors import ModelError, did_you_mean
from .schedule import check_events, check_model_breakpoints
from .sparsity import declared

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

RHS = Callable[..., object]  # rhs(t, y, p) -> array (n_states,)
Observable = Callable[..., object]  # h(t, y, p) -> scalar


def _check_name(kind: str, name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ModelError(
            f"{kind} name {name!r} is not valid: use letters, digits and '_', "
            "starting with a letter (names like 'k1', 'prey', 'W')"
        )
    return name


@dataclass(frozen=True, eq=False)
class ODEModel:
    """An ODE model dy/dt = rhs(t, y, p).

    Args:
        name: a short identifier, e.g. "lotka_volterra".
        states: state names, or a count n for large systems (names "u[0]" .. "u[n-1]").
        parameters: name -> default value; a float, or an array (a neural ODE's weights
            are one parameter "W" whose entries are addressed as "W[3,2]").
        rhs: rhs(t, y, p) -> dy/dt, with y of shape (n_states,) and p a dict name -> value.
            Write it with `jax.numpy`; it is traced and differentiated.
        y0: default initial state, a sequence of n_states numbers or a mapping state -> value.
        observables: optional name -> h(t, y, p) returning a scalar. When given, these are
            the model's outputs; otherwise the states are.
        stiff: a hint that an implicit solver is needed (the solver "auto" then picks one).
        doc: one line or more describing the model and its source.
        breakpoints: names of scalar parameters that are times of a discontinuity of the rhs
            (`jnp.where(t < p["t_switch"], b0, b1)`): the solve is split there, so the
            derivative with respect to them is right (see `sensitivity.events`); numbers are
            fixed discontinuity times the step controller steps onto.
        events: state events (`sensitivity.Event`) that belong to the model (SBML events).
        jacobian_sparsity: the pattern of d rhs / d y, for implicit solvers' linear algebra:
            None (detect it from the rhs), "dense" (no structure), an (n_states, n_states)
            boolean array, a SciPy sparse matrix or a list of (row, col) pairs (declared).

    Compiled functions are cached per `structure_key()`: name, rhs, states, parameter
    shapes, observables and the stiffness hint, not values. Define `rhs` (and observables)
    once, at module level, so that two `model()` calls share compiled functions.
    """

    name: str
    states: tuple[str, ...]
    parameters: Mapping[str, np.ndarray]
    rhs: RHS
    y0: np.ndarray
    observables: Mapping[str, Observable] = field(default_factory=dict)
    stiff: bool = False
    doc: str = ""
    breakpoints: tuple = ()
    events: tuple = ()
    jacobian_sparsity: object = None

    def __init__(
        self,
        name: str,
        states: Sequence[str] | int,
        parameters: Mapping[str, object],
        rhs: RHS,
        y0: Sequence[float] | Mapping[str, float] | np.ndarray,
        observables: Mapping[str, Observable] | None = None,
        stiff: bool = False,
        doc: str = "",
        breakpoints: Sequence[str] | None = None,
        events: Sequence[object] | None = None,
        jacobian_sparsity=None,
    ):
        if isinstance(states, (int, np.integer)):
            if states < 1:
                raise ModelError(f"states={states}: a model needs at least one state")
            state_names = tuple(f"u[{i}]" for i in range(int(states)))
        else:
            state_names = tuple(_check_name("state", s) for s in states)
            if not state_names:
                raise ModelError("states is empty: a model needs at least one state")
        if len(set(state_names)) != len(state_names):
            raise ModelError(f"state names repeat: {list(state_names)}")
        if not callable(rhs):
            raise ModelError(f"rhs must be callable rhs(t, y, p), got {type(rhs).__name__}")

        params: dict[str, np.ndarray] = {}
        for pname, value in dict(parameters).items():
            _check_name("parameter", pname)
            arr = np.asarray(value, dtype=np.float64)
            if not np.all(np.isfinite(arr)):
                raise ModelError(f"parameter '{pname}' has a non-finite default value {value!r}")
            params[pname] = arr
        clash = set(params) & set(state_names)
        if clash:
            raise ModelError(f"names used both as state and parameter: {sorted(clash)}")

        y0_arr = _initial_state(y0, state_names)
        obs = dict(observables or {})
        for oname, h in obs.items():
            _check_name("observable", oname)
            if not callable(h):
                raise ModelError(f"observable '{oname}' must be callable h(t, y, p)")

        object.__setattr__(self, "name", str(name))
        object.__setattr__(self, "states", state_names)
        object.__setattr__(self, "parameters", params)
        object.__setattr__(self, "rhs", rhs)
        object.__setattr__(self, "y0", y0_arr)
        object.__setattr__(self, "observables", obs)
        object.__setattr__(self, "stiff", bool(stiff))
        object.__setattr__(self, "doc", doc)
        object.__setattr__(self, "jacobian_sparsity", _sparsity(jacobian_sparsity, len(state_names)))
        object.__setattr__(self, "breakpoints", check_model_breakpoints(params, breakpoints))
        object.__setattr__(self, "events", check_events(events, "ODEModel events"))
        check_model(self)  # the user's code is input: evaluate it abstractly now

    def structure_key(self) -> tuple:
        """What compiled code depends on (values are passed as arguments)."""
        shapes = tuple((k, v.shape) for k, v in self.parameters.items())
        sparsity = getattr(self.jacobian_sparsity, "digest", lambda: self.jacobian_sparsity)()
        return (self.name, self.rhs, self.states, shapes, tuple(self.observables.items()), self.stiff,
                self.breakpoints, self.events, sparsity)

    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def outputs(self) -> tuple[str, ...]:
        """Output names: the observables' if any, else the states'."""
        return tuple(self.observables) if self.observables else self.states

    @property
    def scalar_parameters(self) -> tuple[str, ...]:
        return tuple(k for k, v in self.parameters.items() if v.ndim == 0)

    @property
    def n_parameter_values(self) -> int:
        """Total number of scalar parameter values, counting every array entry."""
        return int(sum(v.size for v in self.parameters.values()))

    def summary(self) -> str:
        """One line: name, sizes and the first line of the doc."""
        first = self.doc.strip().splitlines()[0] if self.doc.strip() else ""
        kind = "stiff" if self.stiff else "non-stiff"
        return (
            f"{self.name}: {self.n_states} states, {len(self.parameters)} parameters "
            f"({self.n_parameter_values} values), {kind}. {first}"
        ).strip()

    def __repr__(self) -> str:
        return f"ODEModel({self.name!r}, states={self.n_states}, parameters={list(self.parameters)})"


def _sparsity(value, n: int):
    """None, "dense" or a `sparsity.Pattern` (validated; see `sensitivity.sparsity.declared`)."""
    if value is None or (isinstance(value, str) and value == "dense"):
        return value
    if isinstance(value, str):
        raise ModelError(f"jacobian_sparsity = {value!r}: valid are None (detect), 'dense', "
                         f"or an ({n}, {n}) boolean array / sparse matrix / (row, col) pairs")
    return declared(value, n)


def _initial_state(y0, state_names: tuple[str, ...]) -> np.ndarray:
    n = len(state_names)
    if isinstance(y0, Mapping):
        unknown = [k for k in y0 if k not in state_names]
        if unknown:
            raise ModelError(
                f"y0 names unknown state '{unknown[0]}'{did_you_mean(unknown[0], state_names)}"
            )
        missing = [s for s in state_names if s not in y0]
        if missing:
            raise ModelError(f"y0 is missing states {missing}: give a value for every state")
        y0 = [y0[s] for s in state_names]
    arr = np.asarray(y0, dtype=np.float64)
    if arr.shape != (n,):
        raise ModelError(f"y0 has shape {arr.shape}, expected ({n},): one value per state")
    if not np.all(np.isfinite(arr)):
        raise ModelError(f"y0 has non-finite values: {arr.tolist()}")
    return arr
