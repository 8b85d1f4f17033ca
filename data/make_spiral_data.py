"""Write data/spiral.csv: the spiral the neural ODE of configs/neural_ode_loss.yaml fits.

The ground truth of torchdiffeq's examples/ode_demo.py (Chen et al., "Neural Ordinary
Differential Equations", NeurIPS 2018): dx/dt = (x^3) A, A = [[-0.1, 2.0], [-2.0, -0.1]],
x(0) = (2, 0), observed at 51 evenly spaced times (every 0.5) in [0, 25]. Solved with SciPy
(independent of the toolkit), noise-free, to 1e-10. Run from anywhere:

    python data/make_spiral_data.py
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp

A = np.array([[-0.1, 2.0], [-2.0, -0.1]])
X0 = np.array([2.0, 0.0])
TIMES = np.linspace(0.0, 25.0, 51)
OUT = Path(__file__).resolve().parent / "spiral.csv"


def spiral(t, x):
    return (x ** 3) @ A


def main() -> None:
    sol = solve_ivp(spiral, (TIMES[0], TIMES[-1]), X0, t_eval=TIMES, method="DOP853",
                    rtol=1e-10, atol=1e-12)
    if not sol.success:
        raise SystemExit(f"solve_ivp failed: {sol.message}")
    with open(OUT, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["time", "x1", "x2"])
        for t, (x1, x2) in zip(sol.t, sol.y.T):
            writer.writerow([f"{t:.10g}", f"{x1:.12g}", f"{x2:.12g}"])
    print(f"wrote {OUT} ({len(sol.t)} rows)")


if __name__ == "__main__":
    main()
