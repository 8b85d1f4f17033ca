"""Write data/pk_observations.csv: noisy plasma concentrations for configs/pk_two_compartment_fit.yaml.

The two-compartment PK model of models/pk_two_compartment.py at its defaults (ka = 1 /h,
CL = 1 L/h, V1 = 20 L, Q = 2 L/h, V2 = 10 L, 100 mg oral dose), solved with SciPy
(independent of the toolkit) to 1e-11, C = central / V1 observed at 13 times in [1, 96] h
(dense while the drug is absorbed), plus Gaussian noise of sd 0.1 mg/L (seed 5). A long
table: time, output, value. Run from anywhere:

    python data/make_pk_data.py
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy.integrate import solve_ivp

KA, CL, V1, Q, V2 = 1.0, 1.0, 20.0, 2.0, 10.0
TIMES = np.array([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 36.0, 48.0, 72.0, 96.0])
SIGMA = 0.1
OUT = Path(__file__).resolve().parent / "pk_observations.csv"


def rhs(t, y):
    depot, central, peripheral = y
    return [-KA * depot, KA * depot - (CL + Q) / V1 * central + Q / V2 * peripheral,
            Q / V1 * central - Q / V2 * peripheral]


def main() -> None:
    sol = solve_ivp(rhs, (0.0, TIMES[-1]), [100.0, 0.0, 0.0], t_eval=TIMES, method="DOP853",
                    rtol=1e-11, atol=1e-11)
    C = sol.y[1] / V1 + SIGMA * np.random.default_rng(5).standard_normal(TIMES.size)
    with open(OUT, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "output", "value"])
        for t, c in zip(TIMES, C):
            w.writerow([f"{t:g}", "C", f"{c:.6f}"])
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
