"""Why a solve failed: the message of the `SolverError` `solve.check_solution` raises.

When diffrax gives up (max_steps reached, step size collapsed) or the saved values are
NaN or inf, the compiled program says little: the solver's steps were rejected because
the rhs returned NaN, or the solution blew up, or the model is stiff and the step budget
ran out. `explain_failure` finds out which, outside the compiled program: it re-evaluates
the model's rhs, jitted on the host, at the last good save, then integrates onward with
SciPy's LSODA (stiff-capable, so a stiff model does not fake a blow-up) until the rhs
first returns a non-finite value, or the states grow without bound, or the budget
(about a second) runs out. The message then names the time, the states just before, the
state whose derivative went non-finite and the state values there, and gives the advice
that fits (never max_steps for a NaN; each hint once).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..core.solvers import EXPLICIT

BLOW_UP = 1e100  # |state| beyond this counts as unbounded growth
GROWTH = 1e12  # ... and so does growth by this factor from the last good point
_STIFF_ADVICE = "if the model is stiff, use an implicit solver (solver='rodas5p' or 'kvaerno5')"
_EXPLICIT = EXPLICIT  # the solver table's explicit solvers


@dataclass(frozen=True)
class Finding:
    """What the re-evaluation found: `kind` "nan" (the rhs is non-finite at finite states),
    "blow_up" (the states grow without bound) or None (nothing: the failure is the solver's);
    the time, states and derivatives at that point."""

    kind: str | None
    t: float = float("nan")
    y: np.ndarray | None = None
    dy: np.ndarray | None = None


class _Stop(Exception):
    pass


def _fmt(x: float) -> str:
    return f"{x:.6g}"


def _values(names, values, limit: int = 8) -> str:
    pairs = [f"{n} = {_fmt(float(v))}" for n, v in zip(names, values)]
    return ", ".join(pairs[:limit]) + (f", ... ({len(pairs)} in all)" if len(pairs) > limit else "")


def _host_rhs(problem):
    """rhs(t, y) -> (n_states,) numpy array: the model's rhs jitted, with the problem's
    parameter values."""
    import jax
    import jax.numpy as jnp

    rhs = problem.model.rhs
    params = {k: jnp.asarray(v, dtype=jnp.float64) for k, v in problem.parameters.items()}
    n = problem.model.n_states
    f = jax.jit(lambda t, y, p: jnp.asarray(rhs(t, y, p), dtype=jnp.float64).reshape(n))
    return lambda t, y: np.asarray(f(jnp.float64(t), jnp.asarray(y, dtype=jnp.float64), params))


def start_point(problem, outputs: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    """(time, states) of the last good save before save index k when the saved outputs
    hold every state; else the initial point (t0, y0)."""
    states = problem.model.states
    of = problem.of
    if k > 0 and set(of) == set(states) and not any(o in problem.model.observables for o in of):
        row = outputs[k - 1]
        y = np.array([row[of.index(s)] for s in states], dtype=np.float64)
        if np.all(np.isfinite(y)):
            return float(problem.times[k - 1]), y
    return float(problem.t0), np.asarray(problem.y0, dtype=np.float64)


def find(problem, t_start: float, y_start: np.ndarray, t_end: float, budget: float = 0.5) -> Finding:
    """Integrate from (t_start, y_start) towards t_end with LSODA, evaluating the rhs on the
    host, and stop at the first non-finite derivative or unbounded state."""
    from scipy.integrate import solve_ivp

    try:
        f = _host_rhs(problem)
        dy = f(t_start, y_start)
    except Exception:  # noqa: BLE001 - a diagnosis must never hide the solver's error
        return Finding(None)
    if not np.all(np.isfinite(dy)):
        return Finding("nan", t_start, y_start, dy)
    deadline = time.perf_counter() + budget
    limit = min(BLOW_UP, GROWTH * max(1.0, float(np.max(np.abs(y_start)))))
    seen: dict = {}

    def fun(t, y):
        if time.perf_counter() > deadline:
            raise _Stop
        d = f(t, y)
        if not np.all(np.isfinite(d)) or not np.all(np.isfinite(y)):
            seen["point"] = (float(t), np.array(y), d)
            raise _Stop
        if np.max(np.abs(y)) > limit:
            seen["blow_up"] = (float(t), np.array(y), d)
            raise _Stop
        if "last" not in seen or t >= seen["last"][0]:
            seen["last"] = (float(t), np.array(y), d)
        return d

    try:
        solve_ivp(fun, (t_start, t_end), y_start, method="LSODA", rtol=max(problem.rtol, 1e-10),
                  atol=max(problem.atol, 1e-12))
    except _Stop:
        pass
    except Exception:  # noqa: BLE001 - SciPy's own failure: fall back to what was seen
        pass
    if "point" in seen:
        t, y, d = seen["point"]
        return Finding("blow_up" if np.max(np.abs(np.nan_to_num(y, nan=0.0, posinf=BLOW_UP * 10))) > BLOW_UP
                       else "nan", t, y, d)
    if "blow_up" in seen:
        return Finding("blow_up", *seen["blow_up"])
    last = seen.get("last")
    if last is not None:
        grown = np.max(np.abs(last[1])) / max(1.0, float(np.max(np.abs(y_start))))
        if grown > 1e8:  # LSODA gave up on a steep rise short of the limit
            return Finding("blow_up", *last)
    return Finding(None)


def explain_failure(problem, aux: dict, outputs, solver: str, diffrax_message: str | None) -> str:
    """The message for a failed or non-finite solve (see the module docstring)."""
    outputs = np.asarray(outputs)
    rows = outputs.reshape(outputs.shape[0], -1)
    finite_rows = np.all(np.isfinite(rows), axis=1)
    times = problem.times
    model = problem.model
    k = int(np.argmin(finite_rows)) if not finite_rows.all() else times.size - 1
    where = (f"before t = {times[k]:g} (last good save at t = {times[k - 1]:g})" if k > 0
             else f"before the first save time t = {times[0]:g}")
    steps = int(np.asarray(aux["num_steps"]))
    rejected = aux.get("num_rejected_steps")
    head = f"the solver {solver} failed on model '{model.name}' {where} after {steps} steps"
    if rejected is not None:
        head += f" ({int(np.asarray(rejected))} rejected)"
    saved_nan = bool(np.any(np.isnan(rows)))
    if diffrax_message is None:  # the solve succeeded: an observable computed NaN or inf
        bad = [o for o, v in zip(problem.of, rows[k]) if not np.isfinite(v)]
        observed = [o for o in bad if o in model.observables]
        kinds = "NaN" if np.any(np.isnan(rows[k])) else "inf"
        msg = (f"the outputs of model '{model.name}' are not finite: {', '.join(bad[:6])} "
               f"{'is' if len(bad) == 1 else 'are'} {kinds} at t = {times[k]:g}, although the solver "
               "succeeded.")
        if observed:
            msg += (f" {'It is an observable' if len(observed) == len(bad) == 1 else 'Observables'} "
                    f"({', '.join(observed[:6])}) computed from finite states: look for a log, sqrt, power "
                    "or division of a state or parameter there (e.g. guard with jnp.maximum(x, 1e-300)).")
        return msg

    t_start, y_start = start_point(problem, outputs, k)
    finding = find(problem, t_start, y_start, float(times[k]))
    before = ""
    if k > 0:
        before = f" The outputs at t = {times[k - 1]:g} were: {_values(problem.of, rows[k - 1])}."

    if finding.kind == "nan":
        bad = [s for s, d in zip(model.states, finding.dy) if not np.isfinite(d)]
        kinds = "NaN" if np.any(np.isnan(finding.dy)) else "inf"
        negative = [f"{s} = {_fmt(v)}" for s, v, v0 in zip(model.states, finding.y, y_start)
                    if v < 0 <= v0]
        origin = "the last good save" if t_start > problem.t0 else "the initial state"
        msg = (f"{head}: the right-hand side returned {kinds}.{before} Evaluated from {origin}, "
               f"the rhs first gives {kinds} at t = {_fmt(finding.t)} for "
               f"{_values(model.states, finding.y)}: d{'/dt, d'.join(bad[:6])}/dt "
               f"{'is' if len(bad) == 1 else 'are'} {kinds}.")
        if negative:
            msg += (f" There {', '.join(negative[:6])} {'is' if len(negative) == 1 else 'are'} negative, "
                    "having started >= 0: sqrt, log or a fractional power of a negative value gives NaN.")
        zeros = [k for k, v in problem.parameters.items() if np.ndim(v) == 0 and float(v) == 0.0]
        if zeros and finding.t == t_start:
            msg += f" Parameters equal to 0: {', '.join(zeros[:6])} (a division by zero?)."
        return msg + (" Try: keep the rhs defined where the solver steps (e.g. "
                      "jnp.sqrt(jnp.maximum(y, 0.0)), jnp.log(jnp.maximum(y, 1e-300))), or a smaller atol "
                      "so states stay in range; check parameter values.")
    if finding.kind == "blow_up":
        big = int(np.argmax(np.abs(np.nan_to_num(finding.y, nan=0.0, posinf=np.inf))))
        origin = "the last good save" if t_start > problem.t0 else "the initial state"
        return (f"{head}: the solution grows without bound (inf).{before} Integrating on from {origin}, "
                f"{model.states[big]} reaches {_fmt(float(finding.y[big]))} at "
                f"t = {_fmt(finding.t)}: the model blows up in finite time for these values. "
                "Try: check parameter values and the time span (stop before the blow-up).")
    # nothing found: the solver's own failure (a step budget, a stiff model) or a NaN we
    # could not reproduce
    hint = []
    if diffrax_message:
        message = diffrax_message.strip().replace(" Try increasing `max_steps`.", "")
        if "maximum number" in message:
            hint.append(f"raise max_steps (now {problem.max_steps})")
    elif saved_nan:  # pragma: no cover - a successful solve returned above
        message = "the solution became NaN"
    else:  # pragma: no cover
        message = "the solution became non-finite (inf)"
    if solver in _EXPLICIT:
        hint.append("the model is marked stiff: use an implicit solver (solver='rodas5p' or 'kvaerno5')"
                    if model.stiff else _STIFF_ADVICE)
    hint.append("check parameter values and the time span")
    return f"{head}: {message.rstrip('.')}.{before} Try: {'; '.join(hint)}."
