"""Does solver="auto" pick the faster solver? Tsit5, Kvaerno5 and Rodas5P on stiff and non-stiff problems.

    python benchmarks/solver_choice.py [--quick]

For each problem it times a plain solve (median of 5 after compiling) with Tsit5, Kvaerno5
and Rodas5P, and reports what "auto" chose (`sensitivity.stiffness`), why, and its regret:
the chosen solver's time over the faster one's. A solver that fails (step budget) counts
as infinitely slow. The models are given *unflagged* (stiff=False), with the stiffness in
their parameter values, so the choice rests on the estimate alone.

Prints the table and writes benchmarks/results/solver_choice.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from datetime import date
from pathlib import Path

import numpy as np

import sensitivity as sens
from sensitivity import models
from sensitivity.solvers import stiffness
from sensitivity.solvers.registry import solver_name

RESULTS = Path(__file__).parent / "results"
SOLVERS = ("tsit5", "kvaerno5", "rodas5p")


def unflagged(name: str) -> sens.ODEModel:
    m = models.get(name)
    return sens.ODEModel(f"{name}_unflagged", m.states, m.parameters, m.rhs, m.y0, m.observables)


def cases(quick: bool):
    yield "van der Pol mu = 1, T = 20", sens.Problem(unflagged("van_der_pol"), np.linspace(0, 20, 200))
    stop = 300.0 if quick else 3000.0
    yield (f"van der Pol mu = 1000 (a parameter), T = {stop:g}",
           sens.Problem(unflagged("van_der_pol"), np.linspace(0, stop, 200), parameters={"mu": 1000.0},
                        rtol=1e-6, atol=1e-6))
    yield "Robertson, T = 40", sens.Problem(unflagged("robertson"), np.linspace(0, 40, 200), atol=1e-12)
    yield "Lotka-Volterra, T = 15", sens.Problem(unflagged("lotka_volterra"), np.linspace(0, 15, 200))
    yield "reaction chain, 10 species, T = 100", sens.Problem(unflagged("reaction_chain"), np.linspace(0, 100, 50))


def timed(problem: sens.Problem, repeats: int) -> float:
    try:
        sens.simulate(problem)
        return statistics.median(sens.simulate(problem).timings["run"] for _ in range(repeats))
    except sens.SolverError:
        return float("inf")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter spans, fewer repeats, a 20000-step budget")
    args = ap.parse_args(argv)
    repeats = 2 if args.quick else 5
    rows = []
    for label, prob in cases(args.quick):
        if args.quick:
            prob = prob.replace(max_steps=20_000)
        t = {s: timed(prob.replace(solver=s), repeats) for s in SOLVERS}
        chosen = solver_name(prob)
        best = min(t.values())
        rows.append((label, *(t[s] for s in SOLVERS), chosen, t[chosen] / best, stiffness.choice(prob).reason))
        print(f"{label}: done", file=sys.stderr, flush=True)
    ms = lambda s: "failed" if not np.isfinite(s) else f"{s * 1e3:.3g}"  # noqa: E731
    lines = ["| problem | Tsit5 ms | Kvaerno5 ms | Rodas5P ms | auto picks | regret | why |",
             "| --- | ---: | ---: | ---: | --- | ---: | --- |"]
    lines += [f"| {label} | {ms(a)} | {ms(b)} | {ms(c)} | {ch} | {r:.2f}x | {why} |" for label, a, b, c, ch, r, why in rows]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (RESULTS / f"solver_choice{suffix}.md").write_text(
        f"# solver=\"auto\": Tsit5, Kvaerno5 or Rodas5P\n\nWritten by `python benchmarks/solver_choice.py"
        f"{' --quick' if args.quick else ''}` on {date.today().isoformat()}: median plain-solve time "
        f"after compiling; regret = the chosen solver's time / the faster one's.\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
