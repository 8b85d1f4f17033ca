"""Global sensitivity: our vmapped ensembles against SALib with a SciPy model loop.

1. Sobol indices (n base rows, n (D + 2) solves) of a scalar output, on the Ishigami ODE
   (D = 3) and on a 10-rate reaction chain (D = 10, 11 species): `sens.sobol` against
   SALib's `ProblemSpec.sample_sobol(n).evaluate(f).analyze_sobol()` where f loops
   `scipy.integrate.solve_ivp` (LSODA) over the same samples at the same tolerances. Wall
   time ratio, and the largest difference of the indices (same samples: only the solvers
   differ).
2. DGSM on a 50-rate reaction chain (D = 50): `sens.dgsm` (N exact gradients) against
   SALib's finite-difference DGSM (`analyze.dgsm` on its `sample.finite_diff` layout built
   on the same N points: N (D + 1) solves, evaluated with our own vmapped ensemble, so only
   the method differs), in solve-equivalents (our gradient ensemble's
   time over the time of N plain solves in the same ensemble) and wall time; and a SciPy
   loop over the same N (D + 1) points.

    python benchmarks/global.py [--quick]

Prints a table and writes benchmarks/results/global.md and global.png. Times include
compiling (given apart) on our side; SALib's include nothing to compile.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import sensitivity as sens
from sensitivity import models
from sensitivity.models import ishigami, reaction_chain

RESULTS = Path(__file__).parent / "results"
RTOL, ATOL = 1e-8, 1e-10


def scipy_loop(model, problem, names, X, output: int):
    """SALib's model function: one solve_ivp per row of X, the output at the last save time."""
    from scipy.integrate import solve_ivp

    params = {k: float(v) for k, v in problem.parameters.items()}
    rhs_np = _numpy_rhs(model)
    t_end = float(problem.times[-1])
    out = np.empty(X.shape[0])
    for i, x in enumerate(X):
        p = dict(params, **dict(zip(names, x)))
        sol = solve_ivp(lambda t, y: rhs_np(t, y, p), (problem.t0, t_end), problem.y0, method="LSODA",
                        rtol=RTOL, atol=ATOL, t_eval=[t_end])
        out[i] = sol.y[output, -1]
    return out


def _numpy_rhs(model):
    if model.name == "ishigami":
        def f(t, y, p):
            s1 = np.sin(p["x1"])
            return [s1 + p["a"] * np.sin(p["x2"]) ** 2 + p["b"] * p["x3"] ** 4 * s1]
        return f
    n = model.n_states

    def chain(t, y, p):
        k = np.array([p[f"k{i}"] for i in range(1, n)])
        flux = k * y[:-1]
        return np.concatenate([[0.0], flux]) - np.concatenate([flux, [0.0]])
    return chain


def last_value(ys):
    return ys[-1, -1]


def sobol_case(label, model, ranges, n, t_end, output):
    from SALib import ProblemSpec

    prob = sens.Problem(model, [t_end], t0=0.0, wrt=list(ranges), of=[model.outputs[output]], rtol=RTOL,
                        atol=ATOL)
    start = time.perf_counter()
    ours = sens.sobol(prob, ranges, n=n, objective=last_value, seed=1)
    ours_s = time.perf_counter() - start
    compile_s = ours.data.attrs["ensemble_compile_seconds"]
    names = list(ranges)
    sp = ProblemSpec({"names": names, "bounds": [list(ranges[k][:2]) for k in names], "num_vars": len(names)})
    X = ours.samples["x"].values  # the same samples (SALib's own sampler gives this design too)
    start = time.perf_counter()
    sp.set_samples(X)
    sp.evaluate(lambda Xs: scipy_loop(model, prob, names, Xs, output))
    sp.analyze_sobol(calc_second_order=False, seed=1)
    salib_s = time.perf_counter() - start
    diff = max(np.max(np.abs(np.asarray(sp.analysis["S1"]) - ours.to_salib()["S1"])),
               np.max(np.abs(np.asarray(sp.analysis["ST"]) - ours.to_salib()["ST"])))
    return {"case": label, "D": len(names), "n": n, "solves": X.shape[0], "ours_s": ours_s,
            "compile_s": compile_s, "salib_s": salib_s, "ratio": salib_s / ours_s,
            "ratio_run": salib_s / max(ours_s - compile_s, 1e-9), "max_diff": float(diff)}


def finite_diff_design(X, bounds, delta):
    """SALib's `sample.finite_diff` layout on our points X (N, D): per point, the point and
    D copies with x_j moved by x_j * delta (clipped to the bounds), N (D + 1) rows."""
    N, D = X.shape
    out = np.repeat(X[:, None, :], D + 1, axis=1)
    for j in range(D):
        out[:, j + 1, j] = np.clip(X[:, j] * (1 + delta), bounds[j, 0], bounds[j, 1])
    return out.reshape(N * (D + 1), D)


def dgsm_case(D, N, scipy_points):
    from SALib.analyze import dgsm as salib_dgsm

    model = reaction_chain.model(n=D + 1, k_fast=10.0, k_slow=0.1)
    names = [f"k{i}" for i in range(1, D + 1)]
    ranges = {k: (0.5 * float(model.parameters[k]), 2.0 * float(model.parameters[k])) for k in names}
    prob = sens.Problem(model, [5.0], t0=0.0, wrt=names, of=[model.states[-1]], rtol=RTOL, atol=ATOL)
    start = time.perf_counter()
    # batch=8: a vmapped batch of 16 adjoint gradients of this chain can hang in XLA's CPU
    # runtime (README, Known limits)
    ours = sens.dgsm(prob, ranges, n=N, objective=last_value, seed=1, batch=8)
    ours_s = time.perf_counter() - start
    grad_run = ours.samples.attrs["run_seconds"]
    X = ours.samples["x"].values
    plain = sens.ensemble(prob, X)
    plain = sens.ensemble(prob, X)  # compiled now: time the run only
    solve_run = plain.attrs["run_seconds"]
    sp = {"num_vars": D, "names": names, "bounds": [list(ranges[k]) for k in names]}
    Xfd = finite_diff_design(X, np.array(sp["bounds"]), 1e-3)
    start = time.perf_counter()
    fd = sens.ensemble(prob, Xfd)
    Y = fd["outputs"].values[:, -1, 0]
    res = salib_dgsm.analyze(sp, Xfd, Y, seed=1)
    fd_s = time.perf_counter() - start
    k = min(scipy_points, Xfd.shape[0])
    start = time.perf_counter()
    scipy_loop(model, prob, names, Xfd[:k], D)
    scipy_per_solve = (time.perf_counter() - start) / k
    equiv = N * grad_run / solve_run  # our N gradients in units of one plain solve
    rel = np.abs(np.asarray(res["dgsm"]) - ours.to_salib()["dgsm"]) / np.abs(ours.to_salib()["dgsm"])
    return {"D": D, "N": N, "mode": ours.data.attrs["mode"], "ours_equiv": equiv, "salib_solves": Xfd.shape[0],
            "equiv_ratio": Xfd.shape[0] / equiv, "ours_s": ours_s,
            "ours_compile_s": ours.samples.attrs["compile_seconds"], "salib_fd_ours_ensemble_s": fd_s,
            "scipy_loop_s_measured": scipy_per_solve * k, "scipy_points": k,
            "median_rel_diff_fd_vs_exact": float(np.median(rel))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, to check that the script runs")
    args = ap.parse_args(argv)
    n = 64 if args.quick else 4096
    D_dgsm, N_dgsm = (10, 16) if args.quick else (50, 256)
    rows = [sobol_case("Ishigami ODE", models.get("ishigami"), ishigami.RANGES, n, 1.0, 0)]
    print("Ishigami done", file=sys.stderr, flush=True)
    chain = reaction_chain.model(n=11, k_fast=10.0, k_slow=0.1)
    chain_ranges = {f"k{i}": (0.5 * float(chain.parameters[f"k{i}"]), 2.0 * float(chain.parameters[f"k{i}"]))
                    for i in range(1, 11)}
    rows.append(sobol_case("reaction chain, 11 species", chain, chain_ranges, n, 5.0, 10))
    print("chain done", file=sys.stderr, flush=True)
    d = dgsm_case(D_dgsm, N_dgsm, scipy_points=200 if args.quick else 2000)
    lines = [f"Sobol indices of one scalar output, n = {n} base rows ({'quick' if args.quick else 'full'} run)",
             "", "| model | D | solves | ours s (compile s) | SALib + SciPy s | ratio | ratio without compile "
             "| max abs diff of S1, ST |", "|" + "---|" * 8]
    for r in rows:
        lines.append(f"| {r['case']} | {r['D']} | {r['solves']} | {r['ours_s']:.3g} ({r['compile_s']:.2g}) | "
                     f"{r['salib_s']:.3g} | {r['ratio']:.3g}x | {r['ratio_run']:.3g}x | {r['max_diff']:.2g} |")
    lines += ["", f"DGSM, reaction chain with D = {d['D']} rates, N = {d['N']} points",
              "", "| | solve-equivalents | wall s |", "|---|---|---|",
              f"| ours: N exact gradients ({d['mode']}) | {d['ours_equiv']:.4g} | {d['ours_s']:.3g} "
              f"(compile {d['ours_compile_s']:.2g}) |",
              f"| SALib finite differences N (D + 1), our ensemble | {d['salib_solves']} | "
              f"{d['salib_fd_ours_ensemble_s']:.3g} |",
              f"| SciPy LSODA loop over {d['scipy_points']} of those points | {d['scipy_points']} | "
              f"{d['scipy_loop_s_measured']:.3g} |",
              "", f"Solve-equivalents ratio (finite differences / exact gradients): {d['equiv_ratio']:.3g}x; "
              f"median relative difference of the DGSM bounds (FD vs exact): {d['median_rel_diff_fd_vs_exact']:.2g}."]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (RESULTS / f"global{suffix}.md").write_text(text + "\n")
    _plot(rows, d, RESULTS / f"global{suffix}.png")
    return 0


def _plot(rows, d, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6))
    labels = [r["case"] for r in rows]
    x = np.arange(len(rows))
    a.bar(x - 0.2, [r["ours_s"] for r in rows], 0.4, label="sens.sobol (vmapped ensemble)")
    a.bar(x + 0.2, [r["salib_s"] for r in rows], 0.4, label="SALib + SciPy solve_ivp loop")
    a.set_xticks(x, labels, fontsize=8)
    a.set_yscale("log")
    a.set_ylabel("wall time, s")
    a.set_title(f"Sobol, n = {rows[0]['n']}", fontsize=10)
    a.legend(fontsize=8, frameon=False)
    b.bar([0, 1], [d["ours_equiv"], d["salib_solves"]])
    b.set_xticks([0, 1], [f"exact gradients\n(N = {d['N']})", "finite differences\nN (D + 1)"], fontsize=8)
    b.set_yscale("log")
    b.set_ylabel("solve-equivalents")
    b.set_title(f"DGSM, D = {d['D']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
