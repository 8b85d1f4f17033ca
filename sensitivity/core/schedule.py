"""Doses, breakpoints and state events: the types a user writes and their validation.

- a dose (`Dose(time, state, amount)`) is a bolus: the state jumps by `amount` at `time`;
- a parameter breakpoint (`ODEModel(..., breakpoints=["t_switch"])`) is a parameter that is
  the time of a discontinuity of the rhs (`jnp.where(t < p["t_switch"], b0, b1)`);
- a switching time that is an expression of parameters (`SwitchTime("2*t_on", fn,
  ("t_on",))`, as an SBML `piecewise(..., time >= 2*t_on, ...)` gives) is a breakpoint too;
- a fixed-time breakpoint (`Problem(..., breakpoints=[30.0])`) is handed to the step-size
  controller (`jump_ts`), so the solver steps exactly onto it;
- a state event (`Event(condition, reset, direction, terminal)`) fires where
  `condition(t, y, p)` crosses zero; `reset(t, y, p) -> y` restarts the solve from the new
  state, `terminal=True` stops it.

How the solve is cut at them is `sensitivity.integrate.pieces`. No JAX here.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import InputError, ModelError, did_you_mean, list_names

DOSE_KEY = "__doses__"  # where dose times/amounts ride in the parameter mapping of a solve
_DOSE_INPUT = re.compile(r"^dose(?:\[(\d+)\])?\.(time|amount)$")


class DiscontinuityWarning(UserWarning):
    """A parameter in `wrt` is compared against `t` in the rhs but is not a declared
    breakpoint: its derivative misses the moving discontinuity (declare it or smooth it)."""



# --------------------------------------------------------------------------- public types
@dataclass(frozen=True)
class Dose:
    """A bolus: state `state` jumps by `amount` at time `time` (y(time+) = y(time-) + amount).

    A save time equal to `time` sees the dose: it holds the state just after it, y(time+)
    (also at t0 and at the last save time), and its derivative with respect to `time` is
    that of the side where the dose stays at or before the save time.
    """

    time: float
    state: str
    amount: float

    def __post_init__(self):
        for field in ("time", "amount"):
            value = getattr(self, field)
            try:
                value = float(value)
            except (TypeError, ValueError):
                raise InputError(f"Dose.{field} = {value!r} must be a number") from None
            if not np.isfinite(value):
                raise InputError(f"Dose.{field} = {value!r} must be finite")
            object.__setattr__(self, field, value)
        if not isinstance(self.state, str):
            raise InputError(f"Dose.state = {self.state!r} must be a state name, e.g. 'depot'")


def doses(state: str, amount: float, every: float, count: int, start: float = 0.0) -> list[Dose]:
    """A regular schedule: `count` doses of `amount` into `state` at start, start + every, ...

    Returns a list of `count` `Dose`s (times start + k * every, k = 0 .. count - 1).
    """
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 0:
        raise InputError(f"doses: count = {count!r} must be a non-negative integer (the number of doses)")
    if count > 1 and not (isinstance(every, (int, float, np.floating)) and np.isfinite(every) and every > 0):
        raise InputError(f"doses: every = {every!r} must be a positive number (the dosing interval)")
    return [Dose(float(start) + k * float(every if count > 1 else 0.0), state, amount) for k in range(int(count))]


DIRECTIONS = {None: None, 0: None, "both": None, 1: True, "up": True, "rising": True,
              -1: False, "down": False, "falling": False}


def crossing(direction) -> bool | None:
    """diffrax's event direction of an `Event.direction`: True rising, False falling, None
    both. A bool is taken as itself (True and False equal the keys 1 and 0, and 0 is both)."""
    return direction if isinstance(direction, bool) else DIRECTIONS[direction]


@dataclass(frozen=True)
class SwitchTime:
    """A switching time of the rhs that is a function of parameters: the solve is cut at
    `time(p)` (p the parameter dict, a scalar result written with `jax.numpy`), so the
    derivatives with respect to the `parameters` it depends on include the moving jump.

    name: the expression, for messages and the problem's structure key (two SwitchTimes of
    one model with the same name must compute the same time)."""

    name: str
    time: Callable = dataclasses.field(compare=False, hash=False)
    parameters: tuple = ()

    def __repr__(self) -> str:
        return f"SwitchTime({self.name!r}, parameters={list(self.parameters)})"


@dataclass(frozen=True, eq=False)
class Event:
    """A state event: fires where `condition(t, y, p)` (a real-valued scalar) crosses zero.

    Args:
        condition: condition(t, y, p) -> scalar; the event time is its root, found by Newton
            iteration on the solver's dense output and differentiated implicitly
            (dt_e/dp = -(dg/dp) / (dg/dt + dg/dy . f)).
        reset: reset(t, y, p) -> new y (n_states,), applied at the event; None for no jump.
        direction: None (both crossings), +1 / "up" (from negative to positive) or
            -1 / "down" (from positive to negative). After a reset the solve restarts on the
            root: there the event reports the side the flow moves to (the sign of dg/dt
            along the flow), so the root it starts on is not taken for a new crossing.
        terminal: stop the solve at the event; later save times hold the state at the event.
        max_occurrences: the most times this event may fire in one segment between doses
            (a static bound: the solve has that many restart pieces; more raise SolverError).

    Scheduled events (SBML semantics: a trigger that turns from false to true, an execution
    that may come later, priorities among simultaneous executions) take any of:
        trigger: trigger(g) -> bool with g = condition(t, y, p), then a vector (n_atoms,)
            of root functions (one per comparison of a compound trigger); the solve stops
            where any of them crosses zero and the event is *triggered* where trigger(g)
            turns from False to True (g taken just after the time, so a root counts on the
            side the flow moves to). Without it: g > 0 (direction up) or g < 0 (down).
        delay: delay(t, y, p) -> scalar >= 0 at the trigger time: the execution comes that
            much later (a breakpoint of the solve); None executes at the trigger time.
        priority: priority(t, y, p) -> scalar at the execution time: among executions due at
            one time the highest runs first (no priority: after those with one, in the
            order of the events; equal priorities: a pseudo-random order);
            after each, every trigger is evaluated again (newly true ones join, with their
            delay).
        persistent: False cancels the pending executions of the event when its trigger turns
            false before they run.
        values_at_trigger: True computes reset's values at the trigger time (they are kept
            until the execution), False at the execution time.
        targets: the indices of the states reset assigns (required with values_at_trigger:
            only these are set at the execution).
        initial_value: the trigger's value before t0: an event whose trigger is true at t0
            and whose initial_value is False fires at t0.
        max_pending: the most pending executions of the event at a time.
    A problem's events are all scheduled or all plain; scheduled events are not terminal.

    Define `condition` and `reset` once (module level): they are part of the compiled
    function's key.
    """

    condition: Callable
    reset: Callable | None = None
    direction: object = None
    terminal: bool = False
    max_occurrences: int = 16
    trigger: Callable | None = None
    delay: Callable | None = None
    priority: Callable | None = None
    persistent: bool = True
    values_at_trigger: bool = True
    targets: tuple | None = None
    initial_value: bool = True
    max_pending: int = 4

    def __post_init__(self):
        if not callable(self.condition):
            raise InputError(f"Event.condition = {self.condition!r} must be callable condition(t, y, p)")
        if self.reset is not None and not callable(self.reset):
            raise InputError(f"Event.reset = {self.reset!r} must be callable reset(t, y, p) -> y, or None")
        try:
            ok = self.direction in DIRECTIONS
        except TypeError:
            ok = False
        if not ok:
            raise InputError(f"Event.direction = {self.direction!r} is not valid; valid: None, +1 "
                             "(or 'up'), -1 (or 'down')")
        if not (isinstance(self.max_occurrences, (int, np.integer)) and self.max_occurrences >= 1):
            raise InputError(f"Event.max_occurrences = {self.max_occurrences!r} must be a positive integer")
        for name in ("trigger", "delay", "priority"):
            if getattr(self, name) is not None and not callable(getattr(self, name)):
                raise InputError(f"Event.{name} = {getattr(self, name)!r} must be callable or None")
        if not (isinstance(self.max_pending, (int, np.integer)) and self.max_pending >= 1):
            raise InputError(f"Event.max_pending = {self.max_pending!r} must be a positive integer")
        if self.scheduled:
            if self.terminal:
                raise InputError("Event: a scheduled event (trigger, delay, priority, persistent=False) "
                                 "cannot be terminal")
            if self.trigger is None and crossing(self.direction) is None:
                raise InputError("Event: a scheduled event needs trigger= or a direction (+1: g > 0, "
                                 "-1: g < 0)")
            if self.targets is not None:
                object.__setattr__(self, "targets", tuple(int(i) for i in self.targets))
            if self.values_at_trigger and self.reset is not None and self.targets is None:
                raise InputError("Event: values_at_trigger=True needs targets= (the indices of the "
                                 "states reset assigns)")

    @property
    def scheduled(self) -> bool:
        """Whether the event follows the scheduled semantics (see the class docstring)."""
        return (self.trigger is not None or self.delay is not None or self.priority is not None
                or not self.persistent or not self.initial_value)

    @property
    def pieces(self) -> int:
        """Restart pieces this event may need in one segment."""
        return 1 if self.terminal else int(self.max_occurrences)


# --------------------------------------------------------------------------- validation
def check_model_breakpoints(parameters, breakpoints) -> tuple:
    """Model breakpoints: names of scalar parameters (switch times: the solve is split
    there), `SwitchTime`s (switch times that are expressions of parameters: split there too)
    or numbers (fixed times, e.g. of an SBML piecewise in time: the step controller steps
    onto them); `ModelError` naming a bad one."""
    if breakpoints is None:
        return ()
    if isinstance(breakpoints, (str, int, float, np.floating)):
        breakpoints = [breakpoints]
    out = []
    for i, name in enumerate(breakpoints):
        if isinstance(name, SwitchTime):
            missing = [q for q in name.parameters if q not in parameters]
            if missing or not callable(name.time):
                raise ModelError(f"breakpoints[{i}] = {name!r}: " + (
                    f"{missing} are not parameters; parameters: {list_names(parameters)}" if missing
                    else "its time must be a function of the parameter dict"))
            out.append(name)
            continue
        if isinstance(name, (int, float, np.floating)) and not isinstance(name, bool):
            if not np.isfinite(name):
                raise ModelError(f"breakpoints[{i}] = {name!r} must be a finite time")
            out.append(float(name))
            continue
        if not isinstance(name, str) or name not in parameters:
            raise ModelError(
                f"breakpoints[{i}] = {name!r} is not a parameter{did_you_mean(str(name), parameters)}; "
                f"a breakpoint names the scalar parameter that is the time of a discontinuity; "
                f"parameters: {list_names(parameters)}")
        if np.ndim(parameters[name]) != 0:
            raise ModelError(f"breakpoints[{i}] = '{name}' is an array parameter; a breakpoint must be a scalar")
        out.append(name)
    if len(set(out)) != len(out):
        raise ModelError(f"breakpoints name a parameter twice: {out}")
    return tuple(out)


def check_events(events, where: str = "events") -> tuple[Event, ...]:
    """A tuple of `Event`s; `InputError` naming an entry that is not one."""
    if events is None:
        return ()
    if isinstance(events, Event):
        events = [events]
    out = []
    for i, ev in enumerate(events):
        if not isinstance(ev, Event):
            raise InputError(f"{where}[{i}] = {ev!r} is not a sensitivity.Event(condition, reset, direction, terminal)")
        out.append(ev)
    return tuple(out)


def resolve_doses(model, dose_list, t0: float, t_end: float) -> tuple[Dose, ...]:
    """Validate doses against the model and the time span; sorted by time (stable)."""
    if dose_list is None:
        return ()
    if isinstance(dose_list, Dose):
        dose_list = [dose_list]
    for i, d in enumerate(dose_list):
        if not isinstance(d, Dose):
            raise InputError(f"doses[{i}] = {d!r} is not a sensitivity.Dose(time, state, amount)")
        if d.state not in model.states:
            raise InputError(
                f"doses[{i}].state = '{d.state}': model '{model.name}' has no state of that name"
                f"{did_you_mean(d.state, model.states)}; states: {list_names(model.states)}")
        if not (t0 <= d.time <= t_end):
            raise InputError(
                f"doses[{i}].time = {d.time:g} is outside the time span [{t0:g}, {t_end:g}]; "
                "give a dose time inside it (or extend the save times)")
    order = sorted(range(len(dose_list)), key=lambda k: dose_list[k].time)
    return tuple(dose_list[k] for k in order)


def resolve_fixed_breakpoints(model, breakpoints) -> tuple[tuple[float, ...], tuple[str, ...]]:
    """Problem breakpoints: numbers (fixed times) and parameter names; returns (times, names).
    The model's fixed times join the problem's."""
    if breakpoints is None:
        breakpoints = []
    if isinstance(breakpoints, (str, int, float, np.floating)):
        breakpoints = [breakpoints]
    times, names = [], []
    for i, b in enumerate(breakpoints):
        if isinstance(b, str):
            if b not in model.scalar_parameters:
                raise InputError(
                    f"breakpoints[{i}] = '{b}' is not a scalar parameter of model '{model.name}'"
                    f"{did_you_mean(b, model.parameters)}; give a time (a number) or a parameter name; "
                    f"parameters: {list_names(model.scalar_parameters)}")
            names.append(b)
            continue
        try:
            value = float(b)
        except (TypeError, ValueError):
            raise InputError(f"breakpoints[{i}] = {b!r} must be a time (a number) or a parameter name") from None
        if not np.isfinite(value):
            raise InputError(f"breakpoints[{i}] = {b!r} must be finite")
        times.append(value)
    times += [b for b in getattr(model, "breakpoints", ()) if not isinstance(b, (str, SwitchTime))]
    return tuple(sorted(set(times))), tuple(names)


def dose_input_refs(name: str, i: int, n_doses: int, make_ref: Callable) -> list | None:
    """InputRefs for a dose input name ("dose[2].amount", "dose.time"), or None if `name`
    is not one. `make_ref(name, field, index)` builds one ref."""
    m = _DOSE_INPUT.match(name)
    if m is None:
        if name.startswith("dose") and ("." in name or "[" in name):
            raise InputError(f"wrt[{i}] = '{name}' is not a dose input; valid forms: 'dose[2].amount', "
                             "'dose[2].time', 'dose.amount', 'dose.time'")
        return None
    if n_doses == 0:
        raise InputError(f"wrt[{i}] = '{name}': the problem has no doses; give Problem(..., doses=[...])")
    field = m.group(2)
    if m.group(1) is None:
        return [make_ref(f"dose[{j}].{field}", field, j) for j in range(n_doses)]
    j = int(m.group(1))
    if j >= n_doses:
        raise InputError(f"wrt[{i}] = '{name}': dose index {j} is out of range; the schedule has "
                         f"{n_doses} doses (dose[0] .. dose[{n_doses - 1}], sorted by time)")
    return [make_ref(f"dose[{j}].{field}", field, j)]


# --------------------------------------------------------------------------- what a problem holds
def has_pieces(problem) -> bool:
    """Whether the solve is cut into segments or pieces (doses, parameter breakpoints, events)."""
    return bool(getattr(problem, "doses", ()) or param_breakpoints(problem) or switch_times(problem)
                or all_events(problem))


def has_discontinuities(problem) -> bool:
    """Whether anything makes the trajectory or the rhs jump (also fixed breakpoints)."""
    return has_pieces(problem) or bool(getattr(problem, "fixed_breakpoints", ()))


def moving_bounds(problem) -> bool:
    """Whether an input moves a segment bound (a dose time, a parameter breakpoint)."""
    bps = set(param_breakpoints(problem)) | switch_time_parameters(problem)
    return any((r.kind == "dose" and r.target == "time") or (r.kind == "param" and r.target in bps)
               for r in problem.wrt)


def param_breakpoints(problem) -> tuple[str, ...]:
    names = tuple(b for b in getattr(problem.model, "breakpoints", ()) or () if isinstance(b, str))
    extra = tuple(n for n in getattr(problem, "param_breakpoints", ()) or () if n not in names)
    return names + extra


def switch_times(problem) -> tuple[SwitchTime, ...]:
    """The model's switching times that are expressions of parameters."""
    return tuple(b for b in getattr(problem.model, "breakpoints", ()) or () if isinstance(b, SwitchTime))


def switch_time_parameters(problem) -> set[str]:
    """The parameters that a `SwitchTime` of the model depends on."""
    return {q for b in switch_times(problem) for q in b.parameters}


def all_events(problem) -> tuple[Event, ...]:
    return tuple(getattr(problem.model, "events", ()) or ()) + tuple(getattr(problem, "events", ()) or ())
