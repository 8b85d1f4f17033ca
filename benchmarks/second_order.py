"""What does a Hessian-vector product cost, against a gradient? Both HVP routes, timed in one run.

On the neural ODE of `mode_choice.py` (8 states, 1024 weights, Tsit5), for n inputs it
times the adjoint gradient of a scalar loss, the HVP by reverse-over-forward (the gradient
of the directional derivative carried by the forward sensitivity system, through the
checkpointed adjoint) and by forward-over-reverse (jvp of the gradient through diffrax's
DirectAdjoint), and a dense Hessian where n is small. Median run time after compiling.

    python benchmarks/second_order.py

Prints the table and writes benchmarks/results/second_order.md and second_order.png.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np

import sensitivity as sens
from sensitivity.ad import adjoint, second_order

sys.path.insert(0, str(Path(__file__).parent))
from mode_choice import RESULTS, loss, make_model, weight_names  # noqa: E402


def median_run(call, repeats: int = 5) -> tuple[float, float]:
    """(compile seconds, median run seconds) of call() -> info with 'timings'."""
    first = call()["timings"]
    return first["compile"], statistics.median(call()["timings"]["run"] for _ in range(repeats))


def main() -> int:
    model = make_model(False)
    rows = []
    for n in (4, 16, 64, 256, 1024):
        prob = sens.Problem(model, np.linspace(0, 5, 50), wrt=weight_names()[:n], rtol=1e-6, atol=1e-6)
        v = np.random.default_rng(n).standard_normal(n)
        row = {"n": n}
        row["solve_c"], row["solve"] = median_run(lambda: {"timings": sens.simulate(prob).timings})
        row["grad_c"], row["grad"] = median_run(lambda: adjoint.gradient(prob, loss, "checkpoint")[2])
        for method in second_order.HVP_METHODS:
            row[f"{method}_c"], row[method] = median_run(lambda: second_order.hvp(prob, loss, v, method)[1])
        if n <= 16:
            row["hessian_c"], row["hessian"] = median_run(lambda: second_order.hessian(prob, loss)[1], 3)
        rows.append(row)
        print(f"n={n} done", file=sys.stderr, flush=True)
    lines = ["| n | solve ms | gradient / solve | HVP rev-over-fwd / gradient | HVP fwd-over-rev / gradient "
             "| dense Hessian (fwd-over-fwd) / gradient | compile s (grad, rof, for) |", "|" + "---|" * 7]
    for r in rows:
        hess = f"{r['hessian'] / r['grad']:.3g}" if "hessian" in r else "-"
        lines.append(f"| {r['n']} | {r['solve'] * 1e3:.3g} | {r['grad'] / r['solve']:.3g} | "
                     f"{r['rev-over-fwd'] / r['grad']:.3g} | {r['fwd-over-rev'] / r['grad']:.3g} | {hess} | "
                     f"{r['grad_c']:.2g}, {r['rev-over-fwd_c']:.2g}, {r['fwd-over-rev_c']:.2g} |")
    text = "\n".join(lines)
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, label, style in (("grad", "gradient (adjoint)", "o-"), ("rev-over-fwd", "HVP rev-over-fwd", "s-"),
                              ("fwd-over-rev", "HVP fwd-over-rev (DirectAdjoint)", "^-")):
        ax.loglog(n, [r[key] / r["solve"] for r in rows], style, label=label)
    ax.set_xlabel("n inputs")
    ax.set_ylabel("run time / one plain solve")
    ax.set_title("Second order on a neural ODE: cost against n")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    fig.savefig(RESULTS / "second_order.png", dpi=120)
    (RESULTS / "second_order.md").write_text(
        f"# Second order: Hessian-vector products against gradients\n\nWritten by "
        f"`python benchmarks/second_order.py` on {time.strftime('%Y-%m-%d')}: median run time of "
        "the compiled function (compile apart), neural ODE with 8 states and n of its weights as "
        "inputs, 50 save times, Tsit5 at rtol = atol = 1e-6.\n\n" + text
        + "\n\n![cost](second_order.png)\n")
    print(f"wrote {RESULTS / 'second_order.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
