"""The `integral` objective through doses: a trapezoid over the save times against the
quadrature state, both against the closed form.

The oral PK model (one compartment, first-order absorption ka = 1 /h, CL = 5 L/h, V = 50 L),
100 mg every 12 h x 10, AUC of the concentration over 0-120 h, saved every 15 min (the dose
times are save times). Columns:

- "trapezoid": the objective summed over the save grid (what `Objective("integral")` was
  before it became a quadrature state), differentiated in forward mode; a save time on a
  dose time sees one side of the jump, so d AUC / d dose time is one-sided;
- "quadrature": `Objective("integral")` through `sens.gradient`, the AUC a state of the ODE;
- "exact": the closed form (superposition of Bateman functions), differentiated by JAX.

    python benchmarks/integral_objective.py             # 481 save times
    python benchmarks/integral_objective.py --points 61 # a coarser grid

Prints the table and writes benchmarks/results/integral_objective.md (481 save times only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import sensitivity as sens
from sensitivity import models
from sensitivity.analyses.metrics import Objective

PK = {"ka": 1.0, "CL": 5.0, "V": 50.0}
N_DOSES, EVERY, AMOUNT, T_END = 10, 12.0, 100.0, 120.0
WRT = ["ka", "dose[4].time", "dose[9].time"]
RESULTS = Path(__file__).parent / "results"


def auc_closed_form(x):
    """integral_0^T C dt, x = (ka, t4, t9); each dose adds D ka / (V (ka - k)) ((1 - e^{-k u}) / k
    - (1 - e^{-ka u}) / ka), u = T - t_i, k = CL / V."""
    ka, t4, t9 = x
    k = PK["CL"] / PK["V"]
    tds = (jnp.arange(N_DOSES) * EVERY).at[4].set(t4).at[9].set(t9)
    u = T_END - tds
    return jnp.sum(AMOUNT * ka / (PK["V"] * (ka - k)) * ((1 - jnp.exp(-k * u)) / k - (1 - jnp.exp(-ka * u)) / ka))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=481, help="save times over 0-120 h")
    args = parser.parse_args()
    times = np.linspace(0.0, T_END, args.points)
    prob = sens.Problem(models.get("pk_one_compartment_oral"), times, parameters=PK, wrt=WRT,
                        doses=sens.doses("depot", AMOUNT, every=EVERY, count=N_DOSES), rtol=1e-10, atol=1e-10)
    dt = jnp.asarray(np.diff(times))

    def trapezoid(ys):
        return jnp.sum((ys[1:, 0] + ys[:-1, 0]) * dt) / 2

    old = sens.gradient(prob, trapezoid, mode="forward")
    new = sens.gradient(prob, Objective("integral", (0,)), mode="forward")
    x = jnp.asarray(prob.x0())
    exact_value, exact_grad = float(auc_closed_form(x)), np.asarray(jax.grad(auc_closed_form)(x))
    lines = [f"AUC over 0-120 h, {args.points} save times, rtol = atol = 1e-10", "",
             "| quantity | trapezoid | quadrature | exact | trapezoid error | quadrature error |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    rows = [("AUC", old.value, new.value, exact_value)]
    rows += [(f"d AUC / d {name}", old.grad[i], new.grad[i], exact_grad[i]) for i, name in enumerate(WRT)]
    for name, a, b, e in rows:
        lines.append(f"| {name} | {a:.6g} | {b:.9g} | {e:.9g} | {abs(a - e) / abs(e):.2g} | "
                     f"{abs(b - e) / abs(e):.2g} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.points == 481:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "integral_objective.md").write_text(
            "```bash\npython benchmarks/integral_objective.py\n```\n\n" + text)

if __name__ == "__main__":
    main()
