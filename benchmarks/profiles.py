"""Profile likelihoods of every parameter of a PEtab problem: `sens.profile` (optimisation-
and integration-based, on our exact gradient and Fisher information) against pyPESTO's
optimisation-based profiles on AMICI, side by side in one process.

    python benchmarks/profiles.py                      # Boehm_JProteomeRes2014, every parameter
    python benchmarks/profiles.py --parameters k_phos,ratio --methods optimization
    python benchmarks/profiles.py --quick              # two parameters: checks that it runs

Needs the extras `pypesto` and `amici` (`pip install -e ".[pypesto,amici]"`).

Both sides start from the problem's nominal values (the published fit): a local fit (ours:
`sens.fit`, L-BFGS-B on the exact gradient; pyPESTO: its optimiser from the same point),
then one profile per parameter at level 0.95 (threshold chi2.ppf(0.95, 1) / 2 on the nllh).
pyPESTO: `pypesto.profile.parameter_profile` with its default options and `--optimizer`
(fides, pyPESTO's recommendation for PEtab, with AMICI's Fisher information as the Hessian;
or L-BFGS-B), on the objective pyPESTO's PEtab importer builds on AMICI (CVODES at the same
rtol, atol as ours); its interval by `pypesto.profile.calculate_approximate_ci` (linear
interpolation between its profile points). Ours: the crossing located on the profile itself.
The intervals agree when each end differs by at most one profile step (the spacing of
pyPESTO's points where its profile crosses the threshold, or ours where larger); an end
that reaches a bound below the threshold is open on both sides or neither.

Before the profiles, the objective pyPESTO gets from `to_pypesto()` is checked against
AMICI's at the nominal values and two perturbed points (value, gradient).

Times: wall seconds of each profile after compiling (ours) and building (AMICI); the
ratio is pyPESTO's time / ours, per parameter and in total (fit + all profiles). The
load average is printed with the table: on a busy machine, read the ratios.
Writes benchmarks/results/profiles.md (and .json, .png).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from amici_peer import amici_problem  # this folder's module: imported before the folder leaves the path

# this folder holds petab.py, named like the `petab` package: keep it off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
DATA = ROOT.parent / "shared" / "petab"
LEVEL = 0.95


def _load_average() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def compare_objectives(ours, amici, x_free: np.ndarray, seed: int = 0) -> list[dict]:
    """Value and gradient of our objective in pyPESTO against AMICI's at x and two
    perturbed points (free parameters)."""
    rng = np.random.default_rng(seed)
    rows = []
    for k, x in enumerate([x_free] + [x_free + 0.1 * rng.standard_normal(x_free.size) for _ in range(2)]):
        fo, go = ours.objective(x, sensi_orders=(0, 1))
        fa, ga = amici.objective(x, sensi_orders=(0, 1))
        rows.append(dict(point="nominal" if k == 0 else f"nominal + 0.1 N(0,1) #{k}", f_ours=float(fo),
                         f_amici=float(fa), df=abs(fo - fa),
                         dg_rel=float(np.linalg.norm(go - ga) / max(np.linalg.norm(ga), 1e-300))))
    return rows


def pypesto_profiles(problem, names, x0_free, optimizer_name: str) -> dict:
    """pyPESTO's fit from x0 and its profile of each parameter; times in wall seconds."""
    import pypesto.optimize as po
    import pypesto.profile as pp_

    opt = po.FidesOptimizer(verbose=logging.ERROR) if optimizer_name == "fides" else po.ScipyOptimizer()
    x_full = np.zeros(problem.dim_full)
    x_full[problem.x_fixed_indices] = problem.x_fixed_vals
    x_full[problem.x_free_indices] = x0_free
    problem.set_x_guesses(x_full[None, :])
    t0 = time.perf_counter()
    result = po.minimize(problem, optimizer=opt, n_starts=1, progress_bar=False)
    fit_s = time.perf_counter() - t0
    conf = pp_.chi2_quantile_to_ratio(LEVEL)
    out = {"fit_s": fit_s, "fval": float(result.optimize_result[0].fval),
           "x": np.asarray(result.optimize_result[0].x)[problem.x_free_indices].tolist(), "profiles": {}}
    for k in names:
        i = problem.x_names.index(k)
        t0 = time.perf_counter()
        result = pp_.parameter_profile(problem, result, optimizer=opt, profile_index=[i], progress_bar=False)
        wall = time.perf_counter() - t0
        prof = result.profile_result.list[-1][i]
        xs, ratio = np.asarray(prof.x_path[i]), np.asarray(prof.ratio_path)
        order = np.argsort(xs)
        xs, ratio = xs[order], ratio[order]
        lo, hi = pp_.calculate_approximate_ci(xs, ratio, conf)
        ends = []
        for end, side in ((lo, 0), (hi, -1)):
            if ratio[side] >= conf:  # the profile ended (at a bound) above the threshold: open
                ends.append(-math.inf if side == 0 else math.inf)
                continue
            ends.append(float(end))
        step = _step_at(xs, ratio, conf)
        out["profiles"][k] = dict(interval=ends, step=step, s=wall, points=int(xs.size),
                                  n_fval=int(prof.n_fval or 0), n_grad=int(prof.n_grad or 0),
                                  grid=xs.tolist(), delta=(-np.log(np.maximum(ratio, 1e-300))).tolist())
        print(f"  pyPESTO {k}: {_fmt(ends)} in {wall:.1f} s", flush=True)
    return out


def _step_at(xs, ratio, conf) -> list:
    """The spacing of the profile points that bracket each crossing of the threshold
    ([low side, high side]; nan where the profile does not cross)."""
    inside = np.where(ratio >= conf)[0]
    out = []
    for j, nb in ((inside[0], inside[0] - 1), (inside[-1], inside[-1] + 1)):
        out.append(float(abs(xs[j] - xs[nb])) if 0 <= nb < xs.size else math.nan)
    return out


def our_profiles(prob, names, method: str, fit) -> dict:
    import sensitivity as sens

    out = {"profiles": {}}
    counts = fit.likelihood.counts
    for k in names:
        before = dict(counts)
        t0 = time.perf_counter()
        try:
            r = sens.profile(fit, parameters=[k], level=LEVEL, method=method)
        except Exception as exc:  # reported in the table
            out["profiles"][k] = dict(error=f"{type(exc).__name__}: {str(exc)[:120]}", s=time.perf_counter() - t0)
            print(f"  ours ({method}) {k}: {out['profiles'][k]['error']}", flush=True)
            continue
        wall = time.perf_counter() - t0
        p = r.profiles[k]
        grid, delta = np.asarray(p["grid"]), np.asarray(p["delta"])
        steps = np.diff(grid)
        out["profiles"][k] = dict(interval=[float(v) for v in p["interval"]], s=wall, points=int(grid.size),
                                  n_fval=counts["value"] - before["value"], n_grad=counts["gradient"] - before["gradient"],
                                  n_hess=counts["hessian"] - before["hessian"],
                                  step=float(np.max(steps)) if steps.size else math.nan, verdict=p["verdict"],
                                  grid=grid.tolist(), delta=delta.tolist())
        print(f"  ours ({method}) {k}: {_fmt(p['interval'])} in {wall:.1f} s", flush=True)
    return out


def _agree(ours: dict, theirs: dict) -> tuple[bool, float]:
    """Whether the intervals agree within one profile step per end; the largest difference."""
    ok, worst = True, 0.0
    for side in (0, 1):
        a, b = ours["interval"][side], theirs["interval"][side]
        if math.isinf(a) or math.isinf(b):
            ok &= math.isinf(a) and math.isinf(b)
            continue
        mine = ours["step"][side] if isinstance(ours["step"], list) else ours["step"]
        step = max(v for v in (theirs["step"][side], mine) if not math.isnan(v))
        worst = max(worst, abs(a - b))
        ok &= abs(a - b) <= step
    return ok, worst


def _counts(p) -> str:
    return " / ".join(str(p[k]) for k in ("n_fval", "n_grad", "n_hess") if k in p)


def _fmt(iv) -> str:
    return "[" + ", ".join("-inf" if v == -math.inf else "inf" if v == math.inf else f"{v:.4f}" for v in iv) + "]"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problem", default="Boehm_JProteomeRes2014")
    ap.add_argument("--parameters", default=None, help="comma-separated ids (default: every estimated one)")
    ap.add_argument("--methods", default="optimization,integration", help="ours: optimization,integration")
    ap.add_argument("--optimizer", default="fides", choices=("fides", "lbfgsb"), help="pyPESTO's optimiser")
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--atol", type=float, default=1e-8)
    ap.add_argument("--quick", action="store_true", help="two parameters; results to *_quick.*")
    ap.add_argument("--no-bridge", dest="bridge", action="store_false",
                    help="skip pyPESTO's profiler on our objective (to_pypesto)")
    ap.add_argument("--amici-folder", default=None,
                    help="build AMICI's model here and reuse it on the next run (default: a new temporary folder)")
    args = ap.parse_args()

    import pypesto

    import sensitivity as sens
    from sensitivity.core.errors import NumericalWarning

    # the numbers guard's warnings on the Fisher information far from the fit: counted, not printed
    warnings.simplefilter("ignore", NumericalWarning)
    load_start = _load_average()
    began = time.perf_counter()
    prob = sens.petab.load(DATA / args.problem / f"{args.problem}.yaml", rtol=args.rtol, atol=args.atol)
    names = list(prob.x_names) if args.parameters is None else args.parameters.split(",")
    if args.quick:
        names = names[:2]
    methods = args.methods.split(",")
    x0 = np.asarray(prob.x_nominal)
    t0 = time.perf_counter()
    prob.nllh(x0), prob.gradient(x0), prob.fisher(x0)
    compile_s = time.perf_counter() - t0
    ours_pp = prob.to_pypesto()

    with tempfile.TemporaryDirectory(prefix="amici-profiles-") as tmp:
        importer, amici_pp, build_s = amici_problem(args.problem, args.amici_folder or tmp, args.rtol, args.atol)
        checks = compare_objectives(ours_pp, amici_pp, x0)
        print(f"{args.problem}: {len(names)} of {len(prob.x_names)} parameters; load average {load_start} "
              f"({os.cpu_count()} cores); our compile {compile_s:.1f} s, AMICI build {build_s:.1f} s")
        print("\nthe objective in pyPESTO (to_pypesto) against pyPESTO's AMICI objective:")
        for c in checks:
            print(f"  {c['point']:>26s}: nllh {c['f_ours']:.6f} vs {c['f_amici']:.6f} (|diff| {c['df']:.1e}), "
                  f"gradient relative difference {c['dg_rel']:.1e}")

        theirs = pypesto_profiles(amici_pp, names, x0, args.optimizer)
    t0 = time.perf_counter()
    fit = sens.fit(prob, None)
    fit_s = time.perf_counter() - t0
    ours = {m: our_profiles(prob, names, m, fit) for m in methods}
    if args.bridge:  # pyPESTO's profiler with our objective (to_pypesto)
        print("pyPESTO's profiler on to_pypesto():", flush=True)
        ours["pyPESTO on to_pypesto()"] = pypesto_profiles(ours_pp, names, x0, args.optimizer)
    load_end = _load_average()

    lines = [f"# Profiles: sens.profile against pyPESTO {pypesto.__version__} on AMICI\n",
             f"`python benchmarks/profiles.py{' --quick' if args.quick else ''}"
             f"{' --parameters ' + args.parameters if args.parameters else ''}"
             f"{' --methods ' + args.methods if args.methods != 'optimization,integration' else ''}"
             f"{' --optimizer ' + args.optimizer if args.optimizer != 'fides' else ''}`; "
             f"{args.problem}, level {LEVEL}, rtol {args.rtol:g}, atol {args.atol:g} on both sides; "
             f"load average {load_start} at the start, {load_end} at the end ({os.cpu_count()} cores).\n",
             f"Fits from the nominal values: ours nllh {fit.nllh:.6f} in {fit_s:.2f} s; pyPESTO ({args.optimizer}) "
             f"{theirs['fval']:.6f} in {theirs['fit_s']:.2f} s. Our compile {compile_s:.1f} s and AMICI's build "
             f"{build_s:.1f} s are not in the times.\n",
             "Our objective in pyPESTO against pyPESTO's AMICI objective:\n",
             "| point | nllh ours | nllh AMICI | abs. difference | gradient rel. difference |",
             "| --- | ---: | ---: | ---: | ---: |"]
    lines += [f"| {c['point']} | {c['f_ours']:.6f} | {c['f_amici']:.6f} | {c['df']:.1e} | {c['dg_rel']:.1e} |"
              for c in checks]
    totals = {}
    for m in ours:
        label = f"Ours {m}-based" if m in methods else "pyPESTO's profiler on our objective (to_pypesto())"
        lines += ["", f"{label} against pyPESTO's optimisation-based on AMICI ({args.optimizer}):\n",
                  "| parameter | ours interval | pyPESTO interval | max end diff | pyPESTO step | same | "
                  "ours evaluations (f / g / H) | pyPESTO evaluations (f / g) | ours s | pyPESTO s | speed ratio |",
                  "| --- | --- | --- | ---: | ---: | --- | --- | --- | ---: | ---: | ---: |"]
        t_ours = t_theirs = 0.0
        all_ok = True
        for k in names:
            o, t = ours[m]["profiles"][k], theirs["profiles"][k]
            if "error" in o:
                all_ok = False
                t_ours, t_theirs = t_ours + o["s"], t_theirs + t["s"]
                lines.append(f"| {k} | failed: {o['error'].split(':')[0]} | {_fmt(t['interval'])} | | | NO | | | {o['s']:.2f} | "
                             f"{t['s']:.2f} | |")
                continue
            ok, worst = _agree(o, t)
            all_ok &= ok
            t_ours, t_theirs = t_ours + o["s"], t_theirs + t["s"]
            step = max((v for v in t["step"] if not math.isnan(v)), default=math.nan)
            lines.append(f"| {k} | {_fmt(o['interval'])} | {_fmt(t['interval'])} | {worst:.1e} | {step:.3f} | "
                         f"{'yes' if ok else 'NO'} | {_counts(o)} | {_counts(t)} | {o['s']:.2f} | {t['s']:.2f} | "
                         f"{t['s'] / o['s']:.1f}x |")
        total_o, total_t = ours[m].get("fit_s", fit_s) + t_ours, theirs["fit_s"] + t_theirs
        totals[m] = dict(ours_s=total_o, pypesto_s=total_t, ratio=total_t / total_o, same=all_ok)
        lines.append(f"| **all (fit + profiles)** | | | | | {'yes' if all_ok else 'NO'} | | | {total_o:.1f} | "
                     f"{total_t:.1f} | **{total_t / total_o:.1f}x** |")
    lines += ["", "Speed ratio = pyPESTO's wall time / ours (target: 3x, same intervals within one profile step)."]
    text = "\n".join(lines)
    print("\n" + text)
    print(f"\nwhole run {time.perf_counter() - began:.0f} s")

    RESULTS.mkdir(exist_ok=True)
    stem = "profiles_quick" if args.quick else "profiles"
    (RESULTS / f"{stem}.md").write_text(text + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps(dict(problem=args.problem, load_start=load_start,
                                                          load_end=load_end, checks=checks, ours=ours,
                                                          pypesto=theirs, totals=totals), indent=1))
    _plot(names, ours, theirs, RESULTS / f"{stem}.png", LEVEL)


def _plot(names, ours, theirs, path, level):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import chi2

    thr = chi2.ppf(level, 1) / 2
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, k in zip(axes.flat, names):
        t = theirs["profiles"][k]
        ax.plot(t["grid"], t["delta"], "o", ms=3, color="0.5", label="pyPESTO (AMICI)")
        for m, style in zip(ours, ("-", "--", ":")):
            o = ours[m]["profiles"][k]
            if "error" in o:
                continue
            ax.plot(o["grid"], o["delta"], style, label=f"ours ({m})")
        ax.axhline(thr, color="k", lw=0.8)
        ax.set_title(k, fontsize=9)
        ax.set_ylim(-0.1, 3 * thr)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.supylabel("nllh - best")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
