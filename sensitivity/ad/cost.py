"""The cost model: which mode is cheaper for this problem, by how much, and why.

All costs are in units of one plain solve S of the problem:

    forward, n tangents vectorised in one sweep      T_fwd(n) = S (1 + a n)
    adjoint, m cotangents over one recorded forward  T_adj(m) = S (r + b m)

with per-mode constants a (one more tangent), r (the forward pass that records for the
backward sweeps) and b (one more backward sweep, vectorised in batches). A Jacobian of
m = n_times * n_outputs scalar outputs with respect to n inputs costs T_fwd(n) forward and
T_adj(m) in reverse; a scalar objective's gradient costs T_fwd(n) forward and T_adj(1) in
reverse. The constants come from a `Calibration`: defaults typical of this project's
benchmarks (`benchmarks/mode_choice.py`), a per-machine file written by `sensitivity calibrate`, or a probe of the actual
problem (a solve, a JVP with k tangents and a VJP with k cotangents, timed after compiling).

Memory enters too: the checkpointed adjoint stores `checkpoints` copies of the solver state;
when that exceeds the budget, the plan takes fewer checkpoints (more recomputation) or, when
even that does not fit, the continuous (backsolve) adjoint, and says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..core.errors import SensitivityError
from ..stores import calibration as calibration_store

PROBE_WIDTH = 64  # at most this many tangents / cotangents in a calibration probe
BYTES = 8  # float64
DEFAULT_MEMORY_BUDGET = 4 * 2**30


@dataclass(frozen=True)
class Calibration:
    """Per-mode cost constants in units of one plain solve (see the module docstring).

    The defaults are typical of `benchmarks/mode_choice.py` on a CPU (a neural ODE with 8
    states, Tsit5; figures in docs/benchmarks.md): a tangent vectorised among hundreds adds
    about a tenth of a solve, the recorded forward pass of a gradient a few solves, and one
    more vectorised backward sweep a fraction of a solve.

    tangent: a, cost of one more forward tangent; record: r, cost of the recorded forward
    pass of the adjoint; cotangent: b, cost of one more backward sweep; solve_seconds: S when
    measured; source: where the numbers come from.
    """

    tangent: float = 0.1
    record: float = 2.5
    cotangent: float = 0.25
    solve_seconds: float | None = None
    source: str = "defaults"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        known = {k: data[k] for k in ("tangent", "record", "cotangent", "solve_seconds", "source") if k in data}
        for k in ("tangent", "record", "cotangent"):
            if k in known and not (isinstance(known[k], (int, float)) and known[k] > 0):
                raise ValueError(f"calibration constant {k} = {known[k]!r} must be a positive number")
        return cls(**known)



def stored_calibration(where: Path | str | None = None) -> Calibration | None:
    """The constants of the machine file (`sensitivity calibrate`), or None if there is no
    file. A corrupt file is an error naming it."""
    try:
        found = calibration_store.load(where)
        if found is None:
            return None
        data, source = found
        cal = Calibration.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise SensitivityError(f"calibration file {where or calibration_store.path()} is invalid ({exc}); "
                               "rerun `sensitivity calibrate` or delete it") from exc
    return Calibration(cal.tangent, cal.record, cal.cotangent, None, f"the machine file {source}")


def save_calibration(calibration: Calibration, where: Path | str | None = None) -> Path:
    """Write the constants to the machine file (or `where`), atomically; returns the path."""
    return calibration_store.save(calibration.to_dict(), where)

@dataclass(frozen=True)
class Estimate:
    """One candidate: `mode` "forward" or "adjoint" (`variant` checkpoint | backsolve),
    `sweeps` tangents or cotangents, cost in `solves` and `seconds` (if S is known), peak
    memory, whether it fits the budget, and a note (e.g. the checkpoints it needs)."""

    mode: str
    variant: str | None
    sweeps: int
    solves: float
    seconds: float | None
    memory_bytes: int
    fits: bool = True
    checkpoints: int | None = None
    note: str = ""

    @property
    def label(self) -> str:
        return self.mode if self.variant is None else f"{self.mode} ({self.variant})"


@dataclass(frozen=True)
class Plan:
    """The cost model's decision for one task ("jacobian", "gradient", "hvp", "hessian")."""

    task: str
    n_inputs: int
    n_outputs: int
    n_states: int
    n_times: int
    steps: int | None
    candidates: tuple[Estimate, ...]
    chosen: Estimate
    calibration: Calibration
    memory_budget: int
    forced: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def mode(self) -> str:
        return self.chosen.mode

    @property
    def variant(self) -> str | None:
        return self.chosen.variant

    def estimate(self, mode: str, variant: str | None = None) -> Estimate:
        for c in self.candidates:
            if c.mode == mode and (variant is None or c.variant == variant):
                return c
        raise KeyError(f"no candidate {mode} {variant or ''}")

    def explain(self) -> str:
        """A short human reading of the decision."""
        fwd = self.estimate("forward")
        adj = self.estimate("adjoint", "checkpoint")
        n, m = self.n_inputs, self.n_outputs
        what = {"jacobian": f"m = {m} outputs", "gradient": "a scalar objective (m = 1)",
                "hvp": "a Hessian-vector product of a scalar objective",
                "hessian": f"a dense {n} x {n} Hessian"}[self.task]
        lines = [
            f"n = {n} inputs, {what}: forward needs 1 vectorised sweep with {fwd.sweeps} "
            f"tangent{'s' * (fwd.sweeps != 1)} (~{fwd.solves:.3g} solves), adjoint needs "
            f"{adj.sweeps} backward sweep{'s' * (adj.sweeps != 1)} (~{adj.solves:.3g} solves)."
        ]
        # compare with the best other exact mode (backsolve is approximate: a fallback)
        others = [c for c in self.candidates
                  if c is not self.chosen and c.fits and c.variant != "backsolve"]
        best_other = min(others, key=lambda c: c.solves) if others else None
        ratio = best_other.solves / self.chosen.solves if best_other else float("inf")
        verb = "forced by the caller" if self.forced else "chosen"
        if best_other is not None and not self.forced:
            lines.append(f"{self.chosen.label} {verb}, ~{ratio:.2g}x cheaper than {best_other.label}.")
        else:
            lines.append(f"{self.chosen.label} {verb}.")
        if self.chosen.seconds is not None:
            lines.append(f"Estimated {self.chosen.seconds * 1e3:.3g} ms after compiling "
                         f"(one solve ~{self.calibration.solve_seconds * 1e3:.3g} ms, "
                         f"{self.steps} steps).")
        lines.append(f"Constants from {self.calibration.source}: a = {self.calibration.tangent:.3g}, "
                     f"r = {self.calibration.record:.3g}, b = {self.calibration.cotangent:.3g}.")
        lines.extend(self.notes)
        lines.extend(c.note for c in self.candidates if c.note)
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """A JSON-ready summary (for summary.json and the CLI)."""
        return {
            "task": self.task, "n_inputs": self.n_inputs, "n_outputs": self.n_outputs,
            "n_states": self.n_states, "n_times": self.n_times, "steps": self.steps,
            "chosen": {"mode": self.mode, "variant": self.variant},
            "candidates": [asdict(c) for c in self.candidates],
            "calibration": self.calibration.to_dict(), "memory_budget": self.memory_budget,
            "forced": self.forced, "explanation": self.explain(),
        }


def _checkpoint_memory(n_states: int, checkpoints: int, width: int) -> int:
    """Stored solver states (with ~7 stages each) plus `width` batched adjoint states."""
    per_state = n_states * BYTES * 8
    return checkpoints * per_state + width * per_state


def default_checkpoints(steps: int | None, max_steps: int) -> int:
    """diffrax's default for the checkpointed adjoint (equinox's checkpointed while loop):
    floor(sqrt(2 max_steps + 1/4) - 1.5) + 1, about sqrt(2 max_steps)."""
    return max(2, math.floor(-1.5 + math.sqrt(2 * max_steps + 0.25)) + 1)


def _recompute_factor(steps: int, checkpoints: int) -> float:
    """Forward re-solves of binomial (treeverse) checkpointing: the smallest r with
    C(checkpoints + r, r) >= steps; 1 when the checkpoints cover every step."""
    if checkpoints >= steps:
        return 1.0
    r = 1
    while math.comb(checkpoints + r, r) < steps:
        r += 1
    return float(r)


def make_plan(task: str, n_inputs: int, n_outputs: int, n_states: int, n_times: int,
              calibration: Calibration, steps: int | None = None, max_steps: int = 100_000,
              checkpoints: int | None = None, memory_budget: int | None = None,
              force: tuple[str, str | None] | None = None, extra_notes: tuple[str, ...] = ()) -> Plan:
    """Estimate every candidate and choose the cheapest that fits the memory budget.

    n_outputs is the number of scalar outputs wanted (1 for a gradient). `force` =
    (mode, variant) records a caller's choice instead of the cheapest. `extra_notes` are
    lines for `explain()` (e.g. which linear solver an implicit solver runs).
    """
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else int(memory_budget)
    cal = calibration
    n, m = n_inputs, (1 if task in ("gradient", "hvp", "hessian") else n_outputs)
    result_bytes = n_outputs * n * BYTES if task == "jacobian" else n * n * BYTES * (task == "hessian")
    S = cal.solve_seconds
    notes: list[str] = list(extra_notes)

    def est(mode, variant, sweeps, solves, memory, **kw):
        return Estimate(mode, variant, sweeps, solves, None if S is None else solves * S,
                        int(memory + result_bytes), fits=memory + result_bytes <= budget, **kw)

    def second_order(first: float) -> float:
        # hvp: ~2 first-order sweeps; dense Hessian: n of them
        return {"hvp": 2.0 * first, "hessian": 2.0 * n * first}.get(task, first)

    # second order by forward mode alone is forward-over-forward: n + n^2 tangents
    fwd_tangents = n + n * n if task in ("hvp", "hessian") else n
    fwd_cost = 1.0 + cal.tangent * fwd_tangents
    candidates = [est("forward", None, fwd_tangents, fwd_cost,
                      n_states * (fwd_tangents + 1) * BYTES * 8)]

    width = min(m, 128)
    used_steps = steps if steps else max_steps
    ck = checkpoints or default_checkpoints(steps, max_steps)
    ck_memory = _checkpoint_memory(n_states, ck, width)
    note = ""
    if ck_memory + result_bytes > budget:
        per = n_states * BYTES * 8
        fit = int((budget - result_bytes) // per) - width
        if fit >= 2:
            note = (f"checkpointed adjoint: {ck} checkpoints would need {ck_memory / 2**20:.3g} MiB, "
                    f"over the {budget / 2**20:.3g} MiB budget; using {fit} checkpoints "
                    f"(~{_recompute_factor(used_steps, fit):.2g}x recomputation)")
            ck, ck_memory = fit, _checkpoint_memory(n_states, fit, width)
        else:
            note = ("checkpointed adjoint does not fit the memory budget even with 2 checkpoints; "
                    "the continuous (backsolve) adjoint needs O(1) memory in the number of steps")
    recompute = _recompute_factor(used_steps, ck) if steps else 1.0
    if not note and recompute > 4:
        note = (f"checkpointed adjoint: {ck} checkpoints over {used_steps} steps mean ~{recompute:.3g}x "
                "forward recomputation; more checkpoints would be faster if memory allows")
    record = cal.record * (recompute if note else 1.0)
    adj_cost = second_order(record + cal.cotangent * m)
    candidates.append(est("adjoint", "checkpoint", m, adj_cost, ck_memory, checkpoints=ck, note=note))
    # backsolve: a forward solve, then backwards the state and its adjoint (~2x a solve per sweep)
    candidates.append(est("adjoint", "backsolve", m, second_order(1.0 + 2.0 * cal.cotangent * m),
                          _checkpoint_memory(n_states, 1, width)))

    fitting = [c for c in candidates if c.fits]
    # backsolve is approximate: only chosen when the exact adjoint does not fit
    exact = [c for c in fitting if c.variant != "backsolve"]
    if fitting:
        chosen = min(exact or fitting, key=lambda c: c.solves)
    else:
        chosen = min(candidates, key=lambda c: c.memory_bytes)
        notes.append(f"no mode fits the {budget / 2**20:.3g} MiB budget; {chosen.label} needs the least")
    if force is not None:
        mode, variant = force
        chosen = next(c for c in candidates if c.mode == mode and (variant is None or c.variant == variant))
        if not chosen.fits:
            notes.append(f"warning: {chosen.label} is estimated to need "
                         f"{chosen.memory_bytes / 2**20:.3g} MiB, over the budget")
    return Plan(task, n, n_outputs if task == "jacobian" else 1, n_states, n_times, steps,
                tuple(candidates), chosen, cal, budget, forced=force is not None, notes=tuple(notes))


def calibrated(calibration: Calibration, solve_seconds: float, jvp_seconds: float,
               vjp1_seconds: float, vjp_seconds: float, tangents: int = PROBE_WIDTH,
               cotangents: int = PROBE_WIDTH, source: str = "probe") -> Calibration:
    """Constants from timings of a solve S, a JVP with `tangents` tangents, and VJPs with
    one and with `cotangents` cotangents: a = (T_jvp / S - 1) / tangents,
    b = (T_vjp(k) - T_vjp(1)) / ((k - 1) S), r = T_vjp(1) / S - b."""
    S = max(solve_seconds, 1e-9)
    a = max((jvp_seconds / S - 1.0) / tangents, 1e-3)
    b = max((vjp_seconds - vjp1_seconds) / ((cotangents - 1) * S), 1e-3)
    r = max(vjp1_seconds / S - b, 1.0)
    return replace(calibration, tangent=a, record=r, cotangent=b, solve_seconds=S, source=source)
