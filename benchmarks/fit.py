"""Fitting with exact derivatives against finite differences: what does each fit cost?

On the two-compartment PK model (5 inputs, the 13 samples of data/pk_observations.csv) and,
in full mode, a 10-species reaction chain (9 rates, stiff, 4 species observed at 25
log-spaced times), from starts 3x off the true values (log-parameters, same solver and
tolerances everywhere), it runs

- `sens.fit(method="least_squares")`: SciPy's TRF on the residuals' exact Jacobian
  (forward sensitivities, one vectorised sweep per Jacobian);
- `sens.fit(method="trust-ncg")`: exact gradients and Hessian-vector products;
- SciPy's TRF with its own 2-point finite-difference Jacobian of the same residuals
  (`sens.simulate` per evaluation: n + 1 solves per Jacobian).

and reports the final cost, iterations, toolkit calls, solver steps (the work, in steps of
the forward solves) and wall time of a second run (the first one compiles).

    python benchmarks/fit.py [--quick]

Prints the table and writes benchmarks/results/fit[_quick].md and fit[_quick].png.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

import sensitivity as sens
from sensitivity import models

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"


def pk_case():
    pk = models.get("pk_two_compartment")
    names = ["ka", "CL", "V1", "Q", "V2"]
    data = pd.read_csv(ROOT / "data" / "pk_observations.csv")
    prob = sens.Problem(pk, np.sort(data["time"].unique()), t0=0.0, wrt=names, of=["C"], rtol=1e-8, atol=1e-10)
    start = prob.x0() * np.array([3, 1 / 3, 3, 1 / 3, 3])
    return "PK, 5 inputs, 13 data", prob, data, 0.1, start


def chain_case():
    m = models.get("reaction_chain", n=10)
    prob0 = sens.Problem(m, np.geomspace(1e-3, 100, 25), t0=0.0, rtol=1e-8, atol=1e-10)
    obs = [m.states[i] for i in (1, 3, 6, 9)]
    prob = prob0.replace(of=obs)
    y = sens.simulate(prob).outputs
    rows = [(t, o, y[k, j]) for k, t in enumerate(prob.times) for j, o in enumerate(obs)]
    data = pd.DataFrame(rows, columns=["time", "output", "value"])
    start = prob.x0() * np.where(np.arange(prob.n_inputs) % 2, 1 / 3, 3)
    return f"reaction chain, {prob.n_inputs} rates, {len(data)} data", prob, data, 1e-3, start


def finite_difference_fit(prob, data, sigma, start):
    """SciPy TRF with 2-point differences of the residuals in ln p (same solve as the toolkit)."""
    of = list(prob.of)
    rows = np.searchsorted(prob.times, data["time"].to_numpy())
    cols = np.array([of.index(o) for o in data["output"]])
    target = data["value"].to_numpy()
    counts = {"simulate": 0, "solver_steps": 0}

    def residuals(theta):
        counts["simulate"] += 1
        tr = sens.simulate(prob.with_inputs(np.exp(theta)))
        counts["solver_steps"] += tr.stats["num_steps"]
        return (tr.outputs[rows, cols] - target) / sigma

    r = least_squares(residuals, np.log(start), jac="2-point", method="trf", x_scale="jac",
                      ftol=1e-10, xtol=1e-10, gtol=1e-10, max_nfev=2000)
    return dict(cost=r.cost, success=r.success, iterations=r.njev, x=np.exp(r.x), **counts)


def run_case(case, repeats_warm: bool = True) -> list[dict]:
    label, prob, data, sigma, start = case
    truth = prob.x0()
    out = []
    for method in ("least_squares", "trust-ncg", "finite differences"):
        def once():
            t = time.perf_counter()
            if method == "finite differences":
                res = finite_difference_fit(prob, data, sigma, start)
            else:
                f = sens.fit(prob, data, sigma=sigma, start=start, method=method)
                res = dict(cost=f.cost, success=f.success, iterations=f.iterations, x=f.x, **f.evaluations)
            return res, time.perf_counter() - t
        res, wall = once()
        if repeats_warm:
            res, wall = once()  # compiled now: the second run is the fit's own cost
        err = float(np.max(np.abs(np.log(res["x"] / truth))))
        out.append({"case": label, "method": method, "cost": res["cost"], "success": res["success"],
                    "iterations": res["iterations"], "simulate": res.get("simulate", 0),
                    "jacobian": res.get("jacobian", 0), "gradient": res.get("gradient", 0),
                    "hvp": res.get("hvp", 0), "solver_steps": res["solver_steps"], "wall_s": wall,
                    "max |ln(x / truth)|": err})
        print(f"{label}: {method} done", file=sys.stderr, flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the PK case only, one run each (a smoke test)")
    args = ap.parse_args()
    cases = [pk_case()] if args.quick else [pk_case(), chain_case()]
    rows = [r for c in cases for r in run_case(c, repeats_warm=not args.quick)]
    df = pd.DataFrame(rows)
    text = df.to_markdown(index=False, floatfmt=".4g") if _has_tabulate() else df.to_string(index=False)
    print(text)
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(cases), figsize=(5.5 * len(cases), 3.8), squeeze=False)
    for ax, (label, *_rest) in zip(axes[0], cases):
        d = df[df["case"] == label]
        ax.bar(d["method"], d["solver_steps"], color=["tab:blue", "tab:green", "tab:gray"])
        ax.set_yscale("log")
        ax.set_ylabel("solver steps of the fit (forward solves)")
        ax.set_title(label, fontsize=9)
        ax.tick_params(axis="x", labelsize=8)
    fig.suptitle("fitting: exact derivatives vs finite differences" + (" (quick: compile included)" if args.quick else ""))
    fig.tight_layout()
    fig.savefig(RESULTS / f"fit{suffix}.png", dpi=110)
    note = ("Quick mode: one run each, wall times include compiling." if args.quick else
            "Wall time of a second run of each fit (compiled already).")
    (RESULTS / f"fit{suffix}.md").write_text(
        "# Fitting with exact derivatives against finite differences\n\nWritten by "
        f"`python benchmarks/fit.py{' --quick' if args.quick else ''}`. {note} Solver steps count the "
        "steps of the forward solves of every simulate, Jacobian and gradient call (the forward "
        "Jacobian's steps carry its tangents; the HVPs' augmented solves are not counted).\n\n" + text + "\n")
    return 0


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
