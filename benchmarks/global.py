"""Global sensitivity: our vmapped ensembles against SALib with a SciPy model loop.

1. Sobol indices (n base rows, n (D + 2) solves) of a scalar output, on the Ishigami ODE
   (D = 3) and on a 10-rate reaction chain (D = 10, 11 species, rates 20 .. 0.05 on
   [0, 5]: not stiff, T max k = 100, so solver "auto" runs Tsit5): `sens.sobol` against
   SALib's `ProblemSpec.set_samples(X).evaluate(f).analyze_sobol()` where f loops
   `scipy.integrate.solve_ivp` (LSODA, which switches between Adams and BDF itself) over
   the same samples X at the same rtol and atol. Our time twice: the first call (tracing
   and compiling included, given apart) and a repeated call (the compiled program reused:
   a second analysis of the same model); the repeated call is the headline ratio. Both
   sides include their analysis (the same estimator and bootstrap). Also the largest
   difference of the indices (same samples: only the solvers differ), and ours with
   diffrax's vmapped Tsit5 instead of the lean one (`ensemble.LEAN = False`).
2. DGSM on a 50-rate reaction chain (D = 50, 51 species) of the species that holds the
   most mass at t = 5 (A20; the last one is ~1e-35 there): `sens.dgsm` (N exact gradients)
   against SALib's finite-difference DGSM (`analyze.dgsm` on its `sample.finite_diff`
   layout built on the same N points: N (D + 1) solves, evaluated with our own vmapped
   ensemble, so only the method differs). Our gradients in solve-equivalents: the run
   time of our N gradients over that of N (D + 1) plain solves in our ensemble, times
   N (D + 1), both compiled, each at its own batch size (medians of repeated runs,
   interleaved); and a SciPy loop over some of the N (D + 1) points.

    python benchmarks/global.py [--quick]

Prints a table and writes benchmarks/results/global.md and global.png (load average in
the header: timings on a loaded machine are noisy).
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
from sensitivity.solvers.registry import solver_name

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


def sobol_case(label, model, ranges, n, t_end, output, repeats):
    import importlib

    from SALib import ProblemSpec

    ens = importlib.import_module("sensitivity.analyses.ensemble")  # sens.ensemble is the function
    prob = sens.Problem(model, [t_end], t0=0.0, wrt=list(ranges), of=[model.outputs[output]], rtol=RTOL,
                        atol=ATOL)
    start = time.perf_counter()
    ours = sens.sobol(prob, ranges, n=n, objective=last_value, seed=1)
    first_s = time.perf_counter() - start
    compile_s = ours.data.attrs["ensemble_compile_seconds"]
    warm = []
    for _ in range(repeats):  # the compiled program reused: a second analysis of this model
        start = time.perf_counter()
        again = sens.sobol(prob, ranges, n=n, objective=last_value, seed=1)
        warm.append(time.perf_counter() - start)
    ours_s = float(np.median(warm))
    assert again.data.attrs["ensemble_compiles"] == 0
    ens.LEAN = False  # the same with diffrax's vmapped Tsit5: what the lean solve gains
    try:
        sens.sobol(prob, ranges, n=n, objective=last_value, seed=1)  # compile it (same n: same batch size)
        start = time.perf_counter()
        dfx = sens.sobol(prob, ranges, n=n, objective=last_value, seed=1)
        diffrax_s = time.perf_counter() - start
    finally:
        ens.LEAN = True
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
    dfx_diff = max(np.max(np.abs(dfx.to_salib()[k] - ours.to_salib()[k])) for k in ("S1", "ST"))
    steps = ours.samples["num_steps"].values
    return {"case": label, "D": len(names), "n": n, "solves": X.shape[0], "solver": solver_name(prob),
            "steps": f"{int(steps.min())}-{int(steps.max())}", "first_s": first_s, "compile_s": compile_s,
            "ours_s": ours_s, "diffrax_s": diffrax_s, "salib_s": salib_s, "ratio": salib_s / ours_s,
            "ratio_first": salib_s / first_s, "ratio_diffrax": salib_s / diffrax_s, "max_diff": float(diff),
            "diffrax_diff": float(dfx_diff)}


def finite_diff_design(X, bounds, delta):
    """SALib's `sample.finite_diff` layout on our points X (N, D): per point, the point and
    D copies with x_j moved by x_j * delta (clipped to the bounds), N (D + 1) rows."""
    N, D = X.shape
    out = np.repeat(X[:, None, :], D + 1, axis=1)
    for j in range(D):
        out[:, j + 1, j] = np.clip(X[:, j] * (1 + delta), bounds[j, 0], bounds[j, 1])
    return out.reshape(N * (D + 1), D)


def dgsm_case(D, N, scipy_points, repeats, batch=None):
    from SALib.analyze import dgsm as salib_dgsm

    model = reaction_chain.model(n=D + 1, k_fast=10.0, k_slow=0.1)
    names = [f"k{i}" for i in range(1, D + 1)]
    ranges = {k: (0.5 * float(model.parameters[k]), 2.0 * float(model.parameters[k])) for k in names}
    T = 5.0
    nominal = sens.simulate(sens.Problem(model, [T], t0=0.0, rtol=RTOL, atol=ATOL)).outputs[-1]
    observed = model.states[int(np.argmax(nominal))]  # the species holding the most mass at T
    prob = sens.Problem(model, [T], t0=0.0, wrt=names, of=[observed], rtol=RTOL, atol=ATOL)
    start = time.perf_counter()
    ours = sens.dgsm(prob, ranges, n=N, objective=last_value, seed=1, batch=batch)
    ours_s = time.perf_counter() - start
    X = ours.samples["x"].values
    sp = {"num_vars": D, "names": names, "bounds": [list(ranges[k]) for k in names]}
    Xfd = finite_diff_design(X, np.array(sp["bounds"]), 1e-3)
    start = time.perf_counter()
    fd = sens.ensemble(prob, Xfd)
    Y = fd["outputs"].values[:, -1, 0]
    res = salib_dgsm.analyze(sp, Xfd, Y, seed=1)
    fd_s = time.perf_counter() - start
    grad_runs, fd_runs = [], []
    for _ in range(repeats):  # compiled now: run times, interleaved, the median of each
        again = sens.dgsm(prob, ranges, n=N, objective=last_value, seed=1, batch=batch)
        grad_runs.append(again.samples.attrs["run_seconds"])
        fd_again = sens.ensemble(prob, Xfd)  # N (D + 1) plain solves
        fd_runs.append(fd_again.attrs["run_seconds"])
    grad_run, fd_run = float(np.median(grad_runs)), float(np.median(fd_runs))
    k = min(scipy_points, Xfd.shape[0])
    start = time.perf_counter()
    scipy_loop(model, prob, names, Xfd[:k], int(model.states.index(observed)))
    scipy_per_solve = (time.perf_counter() - start) / k
    equiv = Xfd.shape[0] * grad_run / fd_run  # our N gradients in units of one plain solve
    ex = ours.to_salib()["dgsm"]
    influential = ex > 1e-6 * ex.max()
    rel = np.abs(np.asarray(res["dgsm"]) - ex)[influential] / ex[influential]
    return {"D": D, "N": N, "observed": observed, "mode": ours.data.attrs["mode"],
            "grad_batch": int(again.samples.attrs["batch"]), "sim_batch": int(fd_again.attrs["batch"]),
            "ours_equiv": equiv, "per_gradient": equiv / N, "salib_solves": Xfd.shape[0],
            "equiv_ratio": Xfd.shape[0] / equiv, "ours_s": ours_s, "grad_run_s": grad_run, "fd_run_s": fd_run,
            "ours_compile_s": ours.samples.attrs["compile_seconds"], "salib_fd_ours_ensemble_s": fd_s,
            "scipy_loop_s_measured": scipy_per_solve * k, "scipy_points": k,
            "scipy_all_s": scipy_per_solve * Xfd.shape[0], "n_influential": int(influential.sum()),
            "median_rel_diff_fd_vs_exact": float(np.median(rel))}


def warm_up():
    """Import what both sides use and run a tiny ensemble of another model, so neither side's
    first timing holds one-off imports (xarray, diffrax, scipy.stats, SALib)."""
    from SALib import ProblemSpec  # noqa: F401
    from scipy.integrate import solve_ivp  # noqa: F401

    lv = models.get("lotka_volterra")
    p = sens.Problem(lv, [0.0, 1.0], wrt=["alpha", "beta"])
    sens.sobol(p, {"alpha": (0.5, 1.0), "beta": (0.2, 0.4)}, n=8, objective=last_value, seed=1)


def main(argv=None) -> int:
    import os

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, to check that the script runs")
    args = ap.parse_args(argv)
    n = 64 if args.quick else 4096
    repeats = 1 if args.quick else 3
    D_dgsm, N_dgsm = (10, 16) if args.quick else (50, 256)
    load = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else ["?"] * 3
    warm_up()
    rows = [sobol_case("Ishigami ODE", models.get("ishigami"), ishigami.RANGES, n, 1.0, 0, repeats)]
    print("Ishigami done", file=sys.stderr, flush=True)
    chain = reaction_chain.model(n=11, k_fast=10.0, k_slow=0.1)
    chain_ranges = {f"k{i}": (0.5 * float(chain.parameters[f"k{i}"]), 2.0 * float(chain.parameters[f"k{i}"]))
                    for i in range(1, 11)}
    rows.append(sobol_case("reaction chain, 11 species", chain, chain_ranges, n, 5.0, 10, repeats))
    print("chain done", file=sys.stderr, flush=True)
    d = dgsm_case(D_dgsm, N_dgsm, scipy_points=200 if args.quick else 2000, repeats=repeats)
    load_end = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else ["?"] * 3
    lines = [f"Sobol indices of one scalar output, n = {n} base rows ({'quick' if args.quick else 'full'} run; "
             f"load average {' '.join(load)} at the start, {' '.join(load_end)} at the end, 2 cores)",
             "", "SciPy: solve_ivp LSODA per sample; ours: sens.sobol (vmapped ensemble), rtol = "
             f"{RTOL:g}, atol = {ATOL:g} on both sides. 'compiled': median of {repeats} repeated calls "
             "with the compiled program reused; 'first call': tracing and compiling included.", "",
             "| model | D | solves | solver (steps) | SciPy s | ours compiled s | ratio | ours first call s "
             "(compile s) | ratio first call | ours, diffrax solve s | ratio | max abs diff of S1, ST vs SALib |",
             "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r['case']} | {r['D']} | {r['solves']} | {r['solver']} ({r['steps']}) | {r['salib_s']:.3g} | "
                     f"{r['ours_s']:.3g} | **{r['ratio']:.3g}x** | {r['first_s']:.3g} ({r['compile_s']:.2g}) | "
                     f"{r['ratio_first']:.3g}x | {r['diffrax_s']:.3g} | {r['ratio_diffrax']:.3g}x | "
                     f"{r['max_diff']:.2g} |")
    lines += ["", f"DGSM, reaction chain with D = {d['D']} rates ({d['D'] + 1} species), objective {d['observed']}(t = 5) "
              f"(the species holding the most mass there), N = {d['N']} points",
              "", f"| | solve-equivalents | run s (compiled, median of {repeats}) | wall s (first call) |", "|---|---|---|---|",
              f"| ours: N exact gradients ({d['mode']}, batch {d['grad_batch']}) | {d['ours_equiv']:.4g} "
              f"({d['per_gradient']:.3g} per gradient) | {d['grad_run_s']:.3g} | {d['ours_s']:.3g} "
              f"(compile {d['ours_compile_s']:.2g}) |",
              f"| SALib finite differences N (D + 1), our ensemble (batch {d['sim_batch']}) | {d['salib_solves']} | "
              f"{d['fd_run_s']:.3g} | {d['salib_fd_ours_ensemble_s']:.3g} |",
              f"| SciPy LSODA loop over {d['scipy_points']} of those points | {d['scipy_points']} | "
              f"{d['scipy_loop_s_measured']:.3g} | (all {d['salib_solves']}: ~{d['scipy_all_s']:.3g}) |",
              "", f"Solve-equivalents ratio (finite differences / exact gradients): **{d['equiv_ratio']:.3g}x**; "
              f"median relative difference of the DGSM bounds (FD vs exact) over the {d['n_influential']} inputs "
              f"whose bound exceeds 1e-6 of the largest: {d['median_rel_diff_fd_vs_exact']:.2g}."]
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
    a.bar(x - 0.2, [r["ours_s"] for r in rows], 0.4, label="sens.sobol, compiled (vmapped ensemble)")
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
