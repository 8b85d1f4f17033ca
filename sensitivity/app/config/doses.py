"""The YAML blocks of doses and breakpoints, checked before any work starts.

    doses:                        # a regular schedule ...
      {state: depot, amount: 320.0, every: 12.0, count: 7, start: 0.0}
    doses:                        # ... or a list of single doses and schedules
      - {time: 0.0, state: depot, amount: 320.0}
      - {state: depot, amount: 160.0, every: 24.0, count: 3, start: 12.0}
    breakpoints: [t_switch, 30.0] # parameters that are switch times, and fixed times

Dose inputs go into `sensitivity.wrt` as "dose[2].amount", "dose[2].time" (the index into the
time-sorted schedule) or "dose.amount" / "dose.time" for every dose.
No JAX here: this only builds `Dose`s and checks names and values.
"""

from __future__ import annotations

from typing import Annotated, Optional, Union

from pydantic import BeforeValidator, Field, field_validator, model_validator

from ...core.errors import did_you_mean, list_names
from ...core.schedule import Dose
from ...core.schedule import doses as dose_schedule
from .base import Strict, finite


class DoseEntry(Strict):
    """One entry of `doses:`: a single bolus `{time, state, amount}`, or a regular schedule
    `{state, amount, every, count, start}` (count given)."""

    state: str
    amount: float
    time: Optional[float] = None
    every: Optional[Annotated[float, Field(gt=0)]] = None
    count: Optional[Annotated[int, Field(ge=0)]] = None
    start: Optional[float] = None

    @field_validator("amount", "time", "start")
    @classmethod
    def _check(cls, v):
        return finite(v)

    @model_validator(mode="after")
    def _shape(self):
        if self.count is None:
            if self.time is None:
                raise ValueError("@time: a dose needs a time (or count/every/start for a schedule)")
            if self.every is not None or self.start is not None:
                raise ValueError("@count: a schedule (every/start) needs count, the number of doses")
        else:
            if self.time is not None:
                raise ValueError("@time: give either time (one dose) or count/every/start (a schedule)")
            if self.count > 1 and self.every is None:
                raise ValueError("@every: a schedule of more than one dose needs every (the dosing interval)")
        return self


DosesConfig = Annotated[Optional[list[DoseEntry]],
                        BeforeValidator(lambda v: [v] if isinstance(v, dict) else v)]
BreakpointsConfig = Optional[list[Union[str, float]]]


def build_doses(cfg) -> list[Dose] | None:
    """The `Dose`s of a validated `doses:` block (None when absent)."""
    if cfg is None:
        return None
    entries = cfg
    out: list[Dose] = []
    for e in entries:
        if e.count is not None:
            out.extend(dose_schedule(e.state, e.amount, e.every or 0.0, e.count, e.start or 0.0))
        else:
            out.append(Dose(e.time, e.state, e.amount))
    return out


def _raw_entries(raw):
    if isinstance(raw, dict):
        return [("doses[0]", raw)]
    if isinstance(raw, list):
        return [(f"doses[{i}]", e) for i, e in enumerate(raw) if isinstance(e, dict)]
    return []


def count_doses(data: dict) -> int:
    """How many doses the raw `doses:` block gives (0 if absent or malformed)."""
    n = 0
    for _, e in _raw_entries(data.get("doses")):
        if "count" in e:
            n += e["count"] if isinstance(e["count"], int) and e["count"] > 0 else 0
        else:
            n += 1
    return n


def name_problems(data: dict, model, span: tuple[float, float] | None) -> list[str]:
    """Doses and breakpoints of the raw config checked against the model and the time span
    [t0, T]: a dose into a state that does not exist, a dose time outside the span, a
    breakpoint that is neither a parameter nor a number."""
    problems = []
    for key, e in _raw_entries(data.get("doses")):
        state = e.get("state")
        if isinstance(state, str) and state not in model.states:
            problems.append(f"{key}.state = '{state}': model '{model.name}' has no such state"
                            f"{did_you_mean(state, model.states)}; states: {list_names(model.states)}")
        if span is None:
            continue
        t0, T = span
        try:
            if "count" in e:
                count, start = int(e["count"]), float(e.get("start", 0.0))
                every = float(e.get("every") or 0.0)
                times = [start + k * every for k in range(count)] if count > 0 else []
            else:
                times = [float(e["time"])]
        except (KeyError, TypeError, ValueError):
            continue  # the schema reports it
        bad = [t for t in times if not t0 <= t <= T]
        if bad:
            field = "time" if "count" not in e else "start/every/count"
            problems.append(f"{key}.{field}: dose time {bad[0]:g} is outside the time span "
                            f"[{t0:g}, {T:g}]; give dose times inside it (or extend the time span)")
    bps = data.get("breakpoints")
    for i, b in enumerate(bps if isinstance(bps, list) else []):
        if isinstance(b, str) and b not in model.scalar_parameters:
            problems.append(f"breakpoints[{i}] = '{b}': not a scalar parameter of model '{model.name}'"
                            f"{did_you_mean(b, model.parameters)}; a breakpoint is a parameter name "
                            f"or a time; parameters: {list_names(model.scalar_parameters)}")
    return problems
