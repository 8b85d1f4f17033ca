"""Doses, breakpoints and state events: how a solve is cut into pieces.

A solve over [t0, T] is split at *segment boundaries* and, inside each segment, at *state
events*:

- a dose (`Dose(time, state, amount)`) is a bolus: the state jumps by `amount` at `time`;
- a parameter breakpoint (`ODEModel(..., breakpoints=["t_switch"])`) is a parameter that is
  the time of a discontinuity of the rhs (`jnp.where(t < p["t_switch"], b0, b1)`);
- a fixed-time breakpoint (`Problem(..., breakpoints=[30.0])`) is handed to the step-size
  controller (`jump_ts`), so the solver steps exactly onto it;
- a state event (`Event(condition, reset, direction, terminal)`) fires where
  `condition(t, y, p)` crosses zero, located by a Newton root finder and differentiated
  implicitly (diffrax `Event` + optimistix); `reset(t, y, p) -> y` restarts the solve from
  the new state, `terminal=True` stops it.

Dose times and parameter breakpoints are sorted (traced) into one array of K boundaries and
the solve is a `lax.scan` over the K + 1 segments with traced bounds: one compiled function
serves every dose schedule of the same count, and the derivative with respect to a dose
time or a breakpoint comes from diffrax's differentiable t0/t1 (the end of one segment and
the start of the next move with the boundary). Every segment saves at all save times
(clipped into the segment) and a mask keeps those that fall inside it: a save time equal to
a boundary gets the state *after* the jump. Inside a segment, the solve runs up to
`1 + sum(max_occurrences)` pieces, each ending at the next event (or the segment's end).

After a terminal event, the remaining save times hold the state at the event.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .errors import InputError, ModelError, SolverError, did_you_mean, list_names
from .lazy import LazyModule

# imported on first use: a Problem with doses is built without importing the solver stack
diffrax, jax, jnp, optx = (LazyModule(m) for m in ("diffrax", "jax", "jax.numpy", "optimistix"))

DOSE_KEY = "__doses__"  # where dose times/amounts ride in the parameter mapping of a solve
_DOSE_INPUT = re.compile(r"^dose(?:\[(\d+)\])?\.(time|amount)$")


class DiscontinuityWarning(UserWarning):
    """A parameter in `wrt` is compared against `t` in the rhs but is not a declared
    breakpoint: its derivative misses the moving discontinuity (declare it or smooth it)."""


# --------------------------------------------------------------------------- public types
@dataclass(frozen=True)
class Dose:
    """A bolus: state `state` jumps by `amount` at time `time` (y(time+) = y(time-) + amount).

    A save time equal to `time` gets the state after the dose.
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


_DIRECTIONS = {None: None, 0: None, "both": None, 1: True, "up": True, "rising": True, True: True,
               -1: False, "down": False, "falling": False, False: False}


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

    Define `condition` and `reset` once (module level): they are part of the compiled
    function's key.
    """

    condition: Callable
    reset: Callable | None = None
    direction: object = None
    terminal: bool = False
    max_occurrences: int = 16

    def __post_init__(self):
        if not callable(self.condition):
            raise InputError(f"Event.condition = {self.condition!r} must be callable condition(t, y, p)")
        if self.reset is not None and not callable(self.reset):
            raise InputError(f"Event.reset = {self.reset!r} must be callable reset(t, y, p) -> y, or None")
        try:
            ok = self.direction in _DIRECTIONS
        except TypeError:
            ok = False
        if not ok:
            raise InputError(f"Event.direction = {self.direction!r} is not valid; valid: None, +1 "
                             "(or 'up'), -1 (or 'down')")
        if not (isinstance(self.max_occurrences, (int, np.integer)) and self.max_occurrences >= 1):
            raise InputError(f"Event.max_occurrences = {self.max_occurrences!r} must be a positive integer")

    @property
    def pieces(self) -> int:
        """Restart pieces this event may need in one segment."""
        return 1 if self.terminal else int(self.max_occurrences)


# --------------------------------------------------------------------------- validation
def check_model_breakpoints(parameters, breakpoints) -> tuple:
    """Model breakpoints: names of scalar parameters (switch times: the solve is split
    there) or numbers (fixed times, e.g. of an SBML piecewise in time: the step controller
    steps onto them); `ModelError` naming a bad one."""
    if breakpoints is None:
        return ()
    if isinstance(breakpoints, (str, int, float, np.floating)):
        breakpoints = [breakpoints]
    out = []
    for i, name in enumerate(breakpoints):
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
    out = []
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
    times += [b for b in getattr(model, "breakpoints", ()) if not isinstance(b, str)]
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


# --------------------------------------------------------------------------- the split solve
def has_pieces(problem) -> bool:
    """Whether the solve is cut into segments or pieces (doses, parameter breakpoints, events)."""
    return bool(getattr(problem, "doses", ()) or param_breakpoints(problem) or all_events(problem))


def has_discontinuities(problem) -> bool:
    """Whether anything makes the trajectory or the rhs jump (also fixed breakpoints)."""
    return has_pieces(problem) or bool(getattr(problem, "fixed_breakpoints", ()))


def moving_bounds(problem) -> bool:
    """Whether an input moves a segment bound (a dose time, a parameter breakpoint)."""
    bps = set(param_breakpoints(problem))
    return any((r.kind == "dose" and r.target == "time") or (r.kind == "param" and r.target in bps)
               for r in problem.wrt)


def param_breakpoints(problem) -> tuple[str, ...]:
    names = tuple(b for b in getattr(problem.model, "breakpoints", ()) or () if isinstance(b, str))
    extra = tuple(n for n in getattr(problem, "param_breakpoints", ()) or () if n not in names)
    return names + extra


def all_events(problem) -> tuple[Event, ...]:
    return tuple(getattr(problem.model, "events", ()) or ()) + tuple(getattr(problem, "events", ()) or ())


def dose_values(problem) -> dict:
    """The dose arrays a compiled function takes: times (n_doses,), amounts (n_doses,)."""
    ds = problem.doses
    return {"time": jnp.asarray(np.array([d.time for d in ds], dtype=np.float64)),
            "amount": jnp.asarray(np.array([d.amount for d in ds], dtype=np.float64))}


def controller(problem, values):
    """The PID controller, clipped onto the fixed-time breakpoints when there are any."""
    pid = diffrax.PIDController(rtol=values["rtol"], atol=values["atol"])
    if getattr(problem, "fixed_breakpoints", ()):
        return diffrax.ClipStepSizeController(pid, jump_ts=values["jump_ts"])
    return pid


def root_finder():
    return optx.Newton(rtol=1e-12, atol=1e-12)


def solve_function(problem, method: str, steps: int, rhs: Callable | None, make_adjoint: Callable,
                   solver) -> Callable:
    """(params, y0, values) -> (ys (n_times, n_states), aux): the solve cut at doses,
    parameter breakpoints and state events, differentiable in every AD mode.

    `params` may hold the dose arrays under DOSE_KEY ({"time": (n_doses,), "amount":
    (n_doses,)}); they are taken out before the rhs sees the parameters.

    With `rhs` given, the solve is of the forward sensitivity system beside the state:
    z = (y, s), params = (p, dp) with dp the tangent of p (dose arrays included) and
    rhs(t, z, (p, dp)) its vector field. At a boundary tau with jump J the tangent then jumps
    by s+ = s- + dJ + (f(tau-, y-) - f(tau+, y+)) dtau: the moving jump (doses and parameter
    breakpoints; not state events).
    """
    aug = rhs is not None
    if aug and all_events(problem):
        raise InputError(
            "this route (the forward sensitivity system beside the state) does not support state "
            "events; use hvp mode 'fwd-over-rev' or hessian mode 'fwd-over-fwd'")
    if method == "backsolve":
        raise InputError(
            "adjoint = 'backsolve' does not support doses, parameter breakpoints or events (diffrax's "
            "BacksolveAdjoint cannot save at sub-times or stop at events); use adjoint='checkpoint'")
    model = problem.model
    n = model.n_states
    dose_state = np.array([model.states.index(d.state) for d in problem.doses], dtype=int)
    n_doses = len(problem.doses)
    bp_names = param_breakpoints(problem)
    events = all_events(problem)
    n_pieces = 1 + sum(ev.pieces for ev in events)
    from . import reuse
    counted = not aug and reuse.enabled(problem)  # the reuse solver's counters, summed over pieces

    field = rhs if aug else model.rhs

    def vector_field(t, y, args):  # args = (params, events fired at the piece's start, its start)
        return jnp.asarray(field(t, y, args[0]), dtype=y.dtype).reshape(y.shape)

    def f(t, y, p):
        return jnp.asarray(model.rhs(t, y, p), dtype=y.dtype).reshape(y.shape)

    term = diffrax.ODETerm(vector_field)

    def condition(k, ev):
        def cond(t, y, args, **kw):
            p, fired_before, start = args
            g = jnp.asarray(ev.condition(t, y, p), dtype=y.dtype).reshape(())
            # a restart on the root of the event that just fired: report the side the flow
            # moves to (the sign of dg/dt along the flow), so the root it starts on is no crossing
            _, dg = jax.jvp(lambda t_, y_: jnp.asarray(ev.condition(t_, y_, p), y.dtype).reshape(()),
                            (t, y), (jnp.ones_like(t), vector_field(t, y, args)))
            tiny = jnp.asarray(np.finfo(np.float64).tiny, y.dtype)
            return jnp.where(fired_before[k] & (t == start), jnp.where(dg >= 0, tiny, -tiny), g)
        return cond

    if events:
        conds = [condition(k, ev) for k, ev in enumerate(events)]
        dirs = [_DIRECTIONS[ev.direction] for ev in events]
        event = diffrax.Event(conds, root_finder=root_finder(), direction=dirs)
    else:
        event = None
    successful = diffrax.RESULTS.successful

    def solve(params, y0, values):
        if aug:
            params, dparams = dict(params[0]), dict(params[1])
            ddose = dparams.pop(DOSE_KEY, None)
        params = dict(params)
        dose = params.pop(DOSE_KEY, None)
        times = values["times"]
        t0, T = values["t0"], times[-1]
        ctrl = controller(problem, values)
        adjoint = make_adjoint(ctrl)
        # ---- segment boundaries (K of them) and the jump at each, sorted by time
        bounds, jumps, dbounds, djumps = [], [], [], []
        scatter = lambda a: jnp.zeros((n_doses, n), y0.dtype).at[jnp.arange(n_doses), dose_state].set(a)  # noqa: E731
        if n_doses:
            bounds.append(dose["time"])
            jumps.append(scatter(dose["amount"]))
            if aug:
                dbounds.append(ddose["time"])
                djumps.append(scatter(ddose["amount"]))
        if bp_names:
            bounds.append(jnp.stack([jnp.asarray(params[k], y0.dtype) for k in bp_names]))
            jumps.append(jnp.zeros((len(bp_names), n), y0.dtype))
            if aug:
                dbounds.append(jnp.stack([jnp.asarray(dparams[k], y0.dtype) for k in bp_names]))
                djumps.append(jnp.zeros((len(bp_names), n), y0.dtype))
        zero_row = jnp.zeros((1, n), y0.dtype)
        if bounds:
            b = jnp.concatenate(bounds)
            J = jnp.concatenate(jumps)
            order = jnp.argsort(jax.lax.stop_gradient(b))
            b_raw = b[order]
            b = _clip(b_raw, t0, T)
            J = J[order]
            starts = jnp.concatenate([t0[None], b])
            ends = jnp.concatenate([b, T[None]])
            J = jnp.concatenate([zero_row, J])
            if aug:  # tangents of the boundaries (none where clipped) and of the jumps
                db = jnp.where((b_raw >= t0) & (b_raw <= T), jnp.concatenate(dbounds)[order], 0.0)
                dstarts = jnp.concatenate([jnp.zeros(1, y0.dtype), db])
                dJ = jnp.concatenate([zero_row, jnp.concatenate(djumps)[order]])
        else:
            starts, ends, J = t0[None], T[None], zero_row
            dstarts, dJ = jnp.zeros(1, y0.dtype), zero_row
        if not aug:
            dstarts, dJ = jnp.zeros_like(starts), jnp.zeros_like(J)
        args_p = (params, dparams) if aug else params
        is_last = jnp.arange(starts.size) == starts.size - 1

        def piece(carry, end, last):
            t, y, ys, stopped, result, stats, t_stop, y_stop, fired_before = carry
            start = jnp.where(stopped, end, t)
            sol = diffrax.diffeqsolve(
                term, solver, start, end, None, y, (args_p, fired_before, start),
                saveat=diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=_clip(times, start, end)),
                                            diffrax.SubSaveAt(t1=True)], solver_state=counted),
                stepsize_controller=ctrl, max_steps=steps, adjoint=adjoint, event=event, throw=False)
            (_, (t_new,)), (saved, (y_new,)) = sol.ts, sol.ys  # the saves, and the end (event) point
            inside = (times >= start) & ((times < t_new) | (last & (times == t_new) & (t_new == T)))
            inside = inside & ~stopped
            ys = jnp.where(inside[:, None], saved, ys)
            bad = (sol.result != successful) & (sol.result != diffrax.RESULTS.event_occurred)
            result = diffrax.RESULTS.where((result == successful) & bad, sol.result, result)
            piece_stats = {**sol.stats, **(reuse.stats(sol.solver_state) if counted else {})}
            stats = {k: (jnp.maximum(stats[k], sol.stats["num_steps"]) if k == "max_piece_steps"
                         else stats[k] + piece_stats[k]) for k in stats}
            if events:
                fired = jnp.stack([jnp.asarray(m) for m in jax.tree_util.tree_leaves(sol.event_mask)])
                fired = fired & (sol.result == diffrax.RESULTS.event_occurred) & ~stopped
                y_after = y_new
                terminal = jnp.asarray(False)
                for k, ev in enumerate(events):
                    if ev.reset is not None:
                        reset = jnp.asarray(ev.reset(t_new, y_new, params), y_new.dtype).reshape(y_new.shape)
                        y_after = jnp.where(fired[k], reset, y_after)
                    if ev.terminal:
                        terminal = terminal | fired[k]
                t_stop = jnp.where(terminal, t_new, t_stop)
                y_stop = jnp.where(terminal, y_new, y_stop)
                stopped = stopped | terminal
                y_new = jnp.where(terminal, y_new, y_after)
                fired_before = fired
            return (t_new, y_new, ys, stopped, result, stats, t_stop, y_stop, fired_before)

        def segment(carry, seg):
            start, end, jump, last, dstart, djump = seg
            t, y, ys, stopped, result, stats, t_stop, y_stop, _ = carry
            if aug:  # the state jumps by J, its tangent by dJ + (f(tau-, y-) - f(tau+, y+)) dtau
                y_, s_ = y[:n], y[n:]
                y_plus = y_ + jump
                left = start - jnp.maximum(jnp.abs(start) * 4e-16, 1e-300)  # tau-: an ulp or two before
                moved = f(left, y_, params) - f(start, y_plus, params)
                jumped = jnp.concatenate([y_plus, s_ + djump + moved * dstart])
            else:
                jumped = y + jump
            y = jnp.where(stopped, y, jumped)
            carry = (jnp.where(stopped, t, start), y, ys, stopped, result, stats, t_stop, y_stop, no_event)
            if n_pieces == 1:
                carry = piece(carry, end, last)
            else:
                carry, _ = jax.lax.scan(lambda c, _: (piece(c, end, last), None), carry, None, length=n_pieces)
            t = carry[0]
            short = (t < end) & ~carry[3]
            return carry, short

        stats0 = {k: jnp.zeros((), jnp.int64 if jax.config.jax_enable_x64 else jnp.int32)
                  for k in ("num_steps", "num_accepted_steps", "num_rejected_steps", "max_piece_steps",
                            *(reuse.COUNTERS if counted else ()))}
        ys0 = jnp.zeros((times.size, y0.shape[0]), y0.dtype)
        no_event = jnp.zeros(len(events), bool)
        carry0 = (t0, y0, ys0, jnp.asarray(False), successful, stats0, jnp.asarray(jnp.inf, y0.dtype), y0, no_event)
        if starts.size == 1:  # one segment (events only): no outer loop to compile
            carry, short = segment(carry0, (starts[0], ends[0], J[0], is_last[0], dstarts[0], dJ[0]))
        else:
            carry, short = jax.lax.scan(segment, carry0, (starts, ends, J, is_last, dstarts, dJ))
        _, _, ys, stopped, result, stats, t_stop, y_stop, _ = carry
        ys = jnp.where((times > t_stop)[:, None], y_stop, ys)
        aux = {"result": result, **stats}
        if events:
            aux["events_exhausted"] = jnp.any(short)
        return ys, aux

    return solve


def _clip(times, start, end):
    """times clipped into [start, end] by selection, so a save time equal to a bound keeps
    no derivative with respect to the bound (jnp.clip would split it at the tie)."""
    return jnp.where(times < start, start, jnp.where(times > end, end, times))


def check_aux(problem, aux: dict) -> None:
    """Raise `SolverError` when a segment ran out of event pieces before its end."""
    if not bool(np.asarray(aux["result"] == diffrax.RESULTS.successful)):
        return  # a failed piece stops short too: the solver's own message says more
    if "events_exhausted" in aux and bool(np.asarray(aux["events_exhausted"])):
        budget = {i: ev.max_occurrences for i, ev in enumerate(all_events(problem)) if not ev.terminal}
        raise SolverError(
            f"model '{problem.model.name}': the events fired more often than their max_occurrences "
            f"({budget}) allow between two doses, so the solve stopped early. Try: raise "
            "Event(..., max_occurrences=...), or make the event terminal.")


# --------------------------------------------------------------------------- silent-failure check
_COMPARISONS = {"lt", "le", "gt", "ge", "eq", "ne"}


def _subjaxprs(eqn):
    for v in eqn.params.values():
        vs = v if isinstance(v, (list, tuple)) else [v]
        for s in vs:
            if hasattr(s, "jaxpr") and hasattr(s, "consts"):  # ClosedJaxpr
                yield s.jaxpr
            elif hasattr(s, "eqns") and hasattr(s, "invars"):  # Jaxpr
                yield s


# elementwise primitives: with operands of one shape, element i of the result depends on
# element i of each operand only
_ELEMENTWISE = {"add", "sub", "mul", "div", "neg", "exp", "log", "log1p", "expm1", "pow",
                "integer_pow", "sqrt", "rsqrt", "abs", "sign", "max", "min", "select_n",
                "convert_element_type", "tanh", "logistic", "sin", "cos", "square", "copy", "copy_p",
                "and", "or", "not"} | _COMPARISONS


def _union(d) -> frozenset:
    return frozenset().union(*d) if isinstance(d, tuple) else d


def _elements(d, n: int):
    return d if isinstance(d, tuple) else (d,) * n


def _shape(v):
    return getattr(getattr(v, "aval", None), "shape", None)


def _per_element(eqn, ins):
    """Per-element sources of the outputs of the index and layout primitives a model's rhs
    uses to pack and unpack parameter vectors (stack, concatenate, slice, squeeze) and of
    elementwise primitives; None where that is not known (then every output depends on
    every input)."""
    name = eqn.primitive.name
    out_shape = _shape(eqn.outvars[0]) if len(eqn.outvars) == 1 else None
    if out_shape is None or len(out_shape) > 1:
        return None
    if name == "stack" and eqn.params.get("axis", 0) == 0 and all(_shape(v) == () for v in eqn.invars):
        return tuple(_union(d) for d in ins)
    if name == "concatenate" and eqn.params.get("dimension", 0) == 0 and \
            all(_shape(v) is not None and len(_shape(v)) == 1 for v in eqn.invars):
        return sum((_elements(d, _shape(v)[0]) for d, v in zip(ins, eqn.invars)), ())
    if name == "broadcast_in_dim" and len(eqn.invars) == 1 and _shape(eqn.invars[0]) == ():
        return _union(ins[0])
    if name == "slice" and len(out_shape) == 1 and isinstance(ins[0], tuple) and \
            eqn.params.get("strides") in (None, (1,)):
        return ins[0][eqn.params["start_indices"][0]:eqn.params["limit_indices"][0]]
    if name == "squeeze" and out_shape == () and isinstance(ins[0], tuple) and len(ins[0]) == 1:
        return ins[0][0]
    if name in _ELEMENTWISE:
        n = out_shape[0] if out_shape else None
        if n is None or all(not isinstance(d, tuple) for d in ins):
            return frozenset().union(*[_union(d) for d in ins]) if ins else frozenset()
        if all(_shape(v) in ((), (n,)) or not hasattr(v, "aval") for v in eqn.invars):
            cols = [_elements(d, n) for d in ins]
            return tuple(frozenset().union(*[c[k] for c in cols]) for k in range(n))
    return None


def _walk(jaxpr, deps_in: list, found: set) -> list:
    """Propagate, through the jaxpr, which sources ("t" or a parameter name) each variable
    depends on (per element for the 1-D vectors a parameter vector is packed into, so that
    p[i] depends on parameter i only); record in `found` the parameters an operand of a
    comparison with a t-dependent operand depends on."""
    env = {}
    for v, d in zip(jaxpr.invars, deps_in):
        env[v] = d

    def get(v):
        return env.get(v, frozenset()) if not hasattr(v, "val") else frozenset()

    for eqn in jaxpr.eqns:
        ins = [get(v) for v in eqn.invars]
        union = frozenset().union(*[_union(d) for d in ins]) if ins else frozenset()
        if eqn.primitive.name in _COMPARISONS:
            operands = [_union(d) for d in ins]
            if any("t" in d for d in operands):
                for d in operands:
                    found.update(x for x in d if x != "t")
        subs = list(_subjaxprs(eqn))
        outs = None
        for sub in subs:
            if len(sub.invars) == len(ins):
                res = _walk(sub, ins, found)
                if len(res) == len(eqn.outvars):
                    outs = res
            else:  # cond branches, loops: conservatively everything depends on every input
                _walk(sub, [union] * len(sub.invars), found)
        if outs is None and not subs:
            one = _per_element(eqn, ins)
            if one is not None:
                outs = [one]
        if outs is None:
            outs = [union] * len(eqn.outvars)
        for v, d in zip(eqn.outvars, outs):
            env[v] = d
    return [get(v) for v in jaxpr.outvars]


def time_compared_parameters(model) -> set[str]:
    """Names of parameters the rhs compares against (a value depending on) t, found by
    tracing the rhs to a jaxpr. Empty when tracing fails."""
    names = list(model.parameters)

    def f(t, y, *ps):
        return model.rhs(t, y, dict(zip(names, ps)))

    try:
        closed = jax.make_jaxpr(f)(jnp.asarray(0.0), jnp.asarray(model.y0),
                                   *[jnp.asarray(model.parameters[k]) for k in names])
    except Exception:  # noqa: BLE001 - a check must never break a valid model
        return set()
    found: set = set()
    deps = [frozenset({"t"}), frozenset()] + [frozenset({k}) for k in names]
    _walk(closed.jaxpr, deps, found)
    return found


_WARNED: dict = {}


def warn_undeclared(problem) -> None:
    """Warn (`DiscontinuityWarning`) when a parameter in wrt is compared against t in the
    rhs and is not a declared breakpoint: its derivative would miss the discontinuity."""
    key = problem.model.structure_key()
    try:
        compared = _WARNED.get(key)
    except TypeError:
        compared = None
    if compared is None:  # remembered across processes: `sensitivity validate` need not import JAX
        from . import check_store

        digest, stored = check_store.recall(problem.model, "time_compared")
        compared = set(stored) if isinstance(stored, list) else time_compared_parameters(problem.model)
        if stored is None:
            check_store.record(digest, "time_compared", sorted(compared))
        try:
            _WARNED[key] = compared
        except TypeError:
            pass
    declared = set(param_breakpoints(problem))
    wrt = {r.target for r in problem.wrt if r.kind == "param"}
    bad = sorted((compared & wrt) - declared)
    if bad:
        warnings.warn(
            f"model '{problem.model.name}': the rhs compares t against parameter(s) {bad}, which are "
            "in wrt but not declared breakpoints; their derivatives miss the moving discontinuity "
            f"(e.g. d/d{bad[0]} = 0 for a switch at t = {bad[0]}). Declare them: "
            f"ODEModel(..., breakpoints={bad}) or Problem(..., breakpoints={bad}), or smooth the switch.",
            DiscontinuityWarning, stacklevel=3)


def extra_values(problem) -> dict:
    """What `solve.values_of` adds: fixed breakpoint times (jump_ts) and, inside the
    parameters, the dose arrays."""
    out = {}
    if getattr(problem, "fixed_breakpoints", ()):
        out["jump_ts"] = jnp.asarray(np.array(problem.fixed_breakpoints, dtype=np.float64))
    return out


def dose_params(problem) -> dict:
    """The dose arrays, under DOSE_KEY, for the parameter mapping of a compiled function."""
    return {DOSE_KEY: dose_values(problem)} if getattr(problem, "doses", ()) else {}
