"""SBML events in PEtab problems: what the PEtab solve supports, and what to say when it fails.

The solve of an experiment cut at event times, and the runs to steady state with events,
are `integrate.sbml_events` (via `integrate.segments.experiment_function`); PEtab 2.0
periods become time events there too (`petab_v2`).
"""

from __future__ import annotations

from ..core.errors import ModelError
from ..integrate import sbml_events


def check(problem) -> None:
    """Raise ModelError when the PEtab problem combines events with what they do not support."""
    m = problem.model
    scheduled = [meta["name"] for meta in m.event_meta if meta.get("scheduled")]
    if scheduled:
        raise ModelError(f"petab: SBML event '{scheduled[0]}' of model '{m.id}' has a delay, a priority, a "
                         "non-persistent or a compound trigger: the PEtab solve does not schedule events "
                         "(sens.sbml.load simulates them)")
    # preequilibration and time = inf run the events too (integrate.sbml_events.steady_function)


def failure_hint(m) -> str:
    """What else may have stopped a solve of a model with state events ('' without)."""
    if not any(meta["time"] is None for meta in m.event_meta):
        return ""
    return (f" With state events: a solve also stops when one fires more than {sbml_events.PIECES_PER_STATE_EVENT} "
            "times between two time events or breakpoints (integrate.sbml_events.PIECES_PER_STATE_EVENT).")
