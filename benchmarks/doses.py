"""What does splitting a solve at doses cost? The 7-dose oral PK model against the same model
without doses, in run time per solver step and in compile time.

The dose split is a `lax.scan` over the 8 segments between doses with traced bounds (one
compiled body for every segment and every schedule of 7 doses). A solve with doses takes
more steps than one without (the solver restarts at each dose with a small step), so the
run-time comparison is per step: (run time / steps) with doses over (run time / steps)
without. The targets: at most 1.5x per step, compile at most 2x.

Rows, for each problem: a solve, the forward Jacobian (n inputs by one vectorised tangent
sweep) and the adjoint gradient of a sum of squares (one backward sweep), as compile
seconds and median run time, and the Jacobian and gradient as multiples of one solve.
The persistent compilation cache is switched off, so compile times are real.

    python benchmarks/doses.py            # 385 save times, inputs ka, CL, V and every dose amount
    python benchmarks/doses.py --quick    # 49 save times (checks that the script runs)

Prints the table and writes benchmarks/results/doses[_quick].md and .png.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ["SENSITIVITY_NO_DISK_CACHE"] = "1"  # measure compiling, not the disk cache

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import sensitivity as sens  # noqa: E402
from sensitivity import models  # noqa: E402
from sensitivity.ad import (
    adjoint,
    forward,  # noqa: E402
)

RESULTS = Path(__file__).parent / "results"


def loss(ys):
    return jnp.sum(ys ** 2)


def median_run(call, repeats: int) -> tuple[float, float, dict]:
    """(compile seconds, median run seconds, info of the first call) of call() -> info."""
    first = call()
    runs = [call()["timings"]["run"] for _ in range(repeats)]
    return first["timings"]["compile"], statistics.median(runs), first


def measure(prob: sens.Problem, repeats: int) -> dict:
    row = {}
    row["solve_c"], row["solve"], info = median_run(
        lambda: {"timings": (tr := sens.simulate(prob)).timings, "stats": tr.stats}, repeats)
    row["steps"] = info["stats"]["num_steps"]
    row["jac_c"], row["jac"], _ = median_run(lambda: forward.jacobian(prob)[1], repeats)
    row["grad_c"], row["grad"], _ = median_run(lambda: adjoint.gradient(prob, loss, "checkpoint")[2], repeats)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="49 save times, 3 repeats")
    args = parser.parse_args()
    points, repeats = (49, 3) if args.quick else (385, 20)
    model = models.get("pk_one_compartment_oral")
    times = np.linspace(0.0, 96.0, points)
    tol = dict(rtol=1e-8, atol=1e-8)
    schedule = sens.doses(state="depot", amount=320.0, every=12.0, count=7)
    cases = [
        ("no doses (one 320 mg dose in y0)", sens.Problem(model, times, wrt=["ka", "CL", "V"],
                                                          y0={"depot": 320.0}, **tol)),
        ("7 doses every 12 h", sens.Problem(model, times, wrt=["ka", "CL", "V"], doses=schedule, **tol)),
        ("7 doses, dose inputs too", sens.Problem(model, times, wrt=["ka", "CL", "V", "dose.amount", "dose.time"],
                                                  doses=schedule, **tol)),
    ]
    rows = []
    for label, prob in cases:
        row = measure(prob, repeats)
        row["label"], row["n"] = label, prob.n_inputs
        rows.append(row)
        print(f"{label}: done", file=sys.stderr, flush=True)
    base = rows[0]
    lines = ["| problem | n inputs | steps | solve ms | per step vs no doses | forward Jacobian / solve "
             "| adjoint gradient / solve | compile s: solve, Jacobian, gradient | compile vs no doses (gradient) |",
             "|" + "---|" * 9]
    for r in rows:
        per_step = (r["solve"] / r["steps"]) / (base["solve"] / base["steps"])
        lines.append(f"| {r['label']} | {r['n']} | {r['steps']} | {r['solve'] * 1e3:.3g} | {per_step:.2f}x | "
                     f"{r['jac'] / r['solve']:.3g} | {r['grad'] / r['solve']:.3g} | "
                     f"{r['solve_c']:.2g}, {r['jac_c']:.2g}, {r['grad_c']:.2g} | {r['grad_c'] / base['grad_c']:.2f}x |")
    text = "\n".join(lines)
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(rows))
    w = 0.25
    for k, (key, label) in enumerate((("solve", "solve"), ("jac", "forward Jacobian"), ("grad", "adjoint gradient"))):
        a1.bar(x + (k - 1) * w, [r[key] * 1e3 for r in rows], w, label=label)
        a2.bar(x + (k - 1) * w, [r[key + "_c"] for r in rows], w, label=label)
    for ax, ylabel in ((a1, "median run time, ms"), (a2, "compile time, s")):
        ax.set_xticks(x, [r["label"].split(" (")[0] for r in rows], fontsize=8)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)
    fig.suptitle(f"One-compartment oral PK, {points} save times: the cost of a 7-dose split")
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    name = "doses_quick" if args.quick else "doses"
    fig.savefig(RESULTS / f"{name}.png", dpi=120)
    (RESULTS / f"{name}.md").write_text(
        f"# Doses: the cost of splitting the solve\n\nWritten by `python benchmarks/doses.py"
        f"{' --quick' if args.quick else ''}` on {time.strftime('%Y-%m-%d')}: one-compartment oral PK "
        f"(ka, CL, V), {points} save times on [0, 96] h, Tsit5 at rtol = atol = 1e-8, median of {repeats} "
        "runs after compiling; persistent compilation cache off.\n\n" + text + f"\n\n![cost]({name}.png)\n")
    print(f"wrote {RESULTS / (name + '.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
