"""Posterior sampling: effective samples per second of `sens.sample` (NUTS on our exact
gradients) against pyPESTO's AdaptiveMetropolisSampler on AMICI, on the same posterior,
side by side in one process.

    python benchmarks/sampling.py                      # Boehm_JProteomeRes2014, Bertozzi_PNAS2020, Perelson_Science1996
    python benchmarks/sampling.py --problems Boehm_JProteomeRes2014 --chains 2 --draws 500
    python benchmarks/sampling.py --quick              # few draws: checks that it runs

Needs the extras `sample`, `pypesto` and `amici` (`pip install -e ".[sample,pypesto,amici]"`).

The posterior: the PEtab problem's likelihood times its objective priors, flat on the
parameter scale within the bounds where there are none (the problems here have none), on
the parameter scale (log10 for most parameters). Ours: `sens.sample(problem, n=draws,
chains=chains, warmup=warmup)` (a local fit from the nominal values, the Laplace
approximation at the mode on the sampling scale, then NUTS with window adaptation from its
covariance, the chains' draws pooled at each slow window's end, one compiled chain run for
each chain, on as many threads as cores); `--mass-matrix identity --vmap-chains --warmup
500` starts from the identity with the chains in lockstep as one vmapped program. pyPESTO: `pypesto.sample.sample` with `AdaptiveMetropolisSampler()`
(its defaults) on the problem its PEtab importer builds on AMICI (CVODES at the same rtol,
atol as ours), `--am-chains` independent chains of `--am-iterations` from the point NUTS starts
from (our local fit from the nominal values), burn-in by pyPESTO's Geweke test per chain.

ESS: ArviZ's bulk effective sample size over the chains of each side (after burn-in for
adaptive Metropolis; NUTS' draws are after warm-up); the table gives the smallest over the
parameters (the slowest-mixing direction) and the median. ESS per second divides by the
whole wall time of the side (ours: fit, Laplace approximation, compile, warm-up and draws;
pyPESTO: all iterations, burn-in included; AMICI's model build apart), and again with our
JAX compile apart; ESS per CPU second divides by the process's CPU seconds over the same
spans (on a shared machine the fairer measure: wall time there depends on the others' load,
and ours runs its chains on threads). The ratios (ours / pyPESTO's) of all four are printed
from the one run. The posterior means of both sides are compared in units of the posterior
standard deviation as a check that they sample the same distribution. The load average is
printed with the table.
Writes benchmarks/results/sampling.md (and .json; `--out NAME`: NAME.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

from amici_peer import amici_problem, problem_yaml  # this folder's module: imported before the folder leaves the path

# this folder holds petab.py, named like the `petab` package: keep it off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
DATA = ROOT.parent / "shared" / "petab"
PROBLEMS = ("Boehm_JProteomeRes2014", "Bertozzi_PNAS2020", "Perelson_Science1996")


def _load_average() -> str:
    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def ours(prob, args, method: str = "nuts") -> dict:
    import arviz as az

    import sensitivity as sens

    if method == "nuts":
        n, chains, warmup = args.draws, args.chains, args.warmup
    else:
        n, chains, warmup = args.am_iterations // 2, args.am_chains, args.am_iterations // 2
    options = {} if method != "nuts" else dict(mass_matrix=args.mass_matrix, vmap_chains=args.vmap_chains,
                                               threads=args.threads)
    t0, c0 = time.perf_counter(), time.process_time()
    res = sens.sample(prob, method=method, n=n, chains=chains, warmup=warmup, seed=args.seed, **options)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    idata = res.to_arviz()
    ess = az.ess(idata, method="bulk")
    ess = np.array([float(ess[k]) for k in res.names])
    flat = res.samples.reshape(-1, len(res.names))
    t = res.timings
    ev = np.asarray(res.evaluations, dtype=float)
    return dict(s=wall, compile_s=float(t.get("compile", 0.0)), sampling_s=float(t.get("sampling", wall)),
                cpu_s=cpu, compile_cpu_s=float(t.get("compile_cpu", 0.0)), laplace_s=float(t.get("laplace", 0.0)),
                evaluations_per_draw=float(ev[:, -res.samples.shape[1]:].mean()),
                evaluations_warmup=float(ev[:, :-res.samples.shape[1]].sum(axis=1).mean()),
                warmup=int(ev.shape[1] - res.samples.shape[1]), backend=getattr(res, "backend", "?"), ess=ess.tolist(), mean=flat.mean(0).tolist(),
                sd=flat.std(0, ddof=1).tolist(), draws=int(flat.shape[0]), divergent=int(res.divergent.sum()),
                rhat=[float(v) for v in res.rhat], step_size=[float(v) for v in res.step_size],
                notes=list(res.notes))


def pypesto_am(problem, x0_free, args) -> dict:
    import arviz as az
    import pypesto.sample as ps

    from sensitivity.analyses.pypesto_bridge import pypesto_samples_to_arviz

    results, burn = [], []
    t0, c0 = time.perf_counter(), time.process_time()
    for c in range(args.am_chains):
        np.random.seed(args.seed + c)
        r = ps.sample(problem, n_samples=args.am_iterations, sampler=ps.AdaptiveMetropolisSampler({"show_progress": False}),
                      x0=np.asarray(x0_free))
        results.append(r)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    for r in results:
        ps.geweke_test(r)
        burn.append(int(r.sample_result.burn_in or 0))
    names = [problem.x_names[i] for i in problem.x_free_indices]
    idata = pypesto_samples_to_arviz(results, names=names)
    ess = az.ess(idata, method="bulk")
    ess = np.array([float(ess[k]) for k in names])
    flat = np.stack([idata.posterior[k].values.reshape(-1) for k in names], axis=1)
    rhat = az.rhat(idata)
    return dict(s=wall, cpu_s=cpu, ess=ess.tolist(), mean=flat.mean(0).tolist(), sd=flat.std(0, ddof=1).tolist(),
                draws=int(flat.shape[0]), burn_in=burn, rhat=[float(rhat[k]) for k in names])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    ap.add_argument("--chains", type=int, default=4, help="NUTS chains")
    ap.add_argument("--draws", type=int, default=1000, help="NUTS draws per chain after warm-up")
    ap.add_argument("--warmup", type=int, default=None, help="NUTS warm-up steps per chain (default: sens.sample's)")
    ap.add_argument("--mass-matrix", default="laplace", choices=("laplace", "identity"),
                    help="sens.sample's mass_matrix: the Laplace approximation's covariance or Stan's identity")
    ap.add_argument("--vmap-chains", action="store_true", help="the NUTS chains as one vmapped program")
    ap.add_argument("--threads", type=int, default=None, help="threads for the NUTS chains (default: sens.sample's)")
    ap.add_argument("--am-chains", type=int, default=4, help="adaptive Metropolis chains")
    ap.add_argument("--am-iterations", type=int, default=20000, help="adaptive Metropolis iterations per chain")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--our-am", action="store_true",
                    help="also sens.sample(method='adaptive_metropolis') with pyPESTO's chains and iterations")
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--atol", type=float, default=1e-8)
    ap.add_argument("--quick", action="store_true", help="2 chains of 100 draws / 2000 iterations; *_quick.*")
    ap.add_argument("--out", default="sampling", help="results/OUT.md and .json (default sampling)")
    ap.add_argument("--amici-folder", default=None,
                    help="build AMICI's models here and reuse them on the next run (default: a temporary folder)")
    args = ap.parse_args()
    if args.quick:
        args.chains, args.draws, args.warmup, args.am_chains, args.am_iterations = 2, 100, 100, 2, 2000

    import pypesto

    import sensitivity as sens
    from sensitivity.core.errors import NumericalWarning

    warnings.simplefilter("ignore", NumericalWarning)
    load_start = _load_average()
    began = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="amici-sampling-") as tmp:
        for name in args.problems.split(","):
            prob = sens.petab.load(problem_yaml(name), rtol=args.rtol, atol=args.atol)
            x0 = np.asarray(prob.x_nominal)
            t0 = time.perf_counter()
            prob.nllh(x0), prob.gradient(x0)
            compile_s = time.perf_counter() - t0
            _, amici_pp, build_s = amici_problem(name, args.amici_folder or tmp, args.rtol, args.atol)
            print(f"{name}: {len(prob.x_names)} parameters; our compile {compile_s:.1f} s, AMICI build "
                  f"{build_s:.1f} s; load average {_load_average()}", flush=True)
            o = ours(prob, args)
            print(f"  NUTS ({o['backend']}): {o['draws']} draws in {o['s']:.1f} s (compile {o['compile_s']:.1f} s), "
                  f"CPU {o['cpu_s']:.1f} s (compile {o['compile_cpu_s']:.1f} s), {o['evaluations_per_draw']:.1f} "
                  f"gradients / draw, min ESS {min(o['ess']):.0f}", flush=True)
            o_am = ours(prob, args, "adaptive_metropolis") if args.our_am else None
            if o_am:
                print(f"  our adaptive Metropolis: {o_am['draws']} draws in {o_am['s']:.1f} s, "
                      f"min ESS {min(o_am['ess']):.1f}", flush=True)
            x_fit = np.asarray(sens.fit(prob, None).x)  # where NUTS starts: a local fit from the nominal values
            a = pypesto_am(amici_pp, x_fit, args)
            print(f"  adaptive Metropolis: {a['draws']} draws after burn-in in {a['s']:.1f} s (CPU "
                  f"{a['cpu_s']:.1f} s), min ESS {min(a['ess']):.1f}; load average {_load_average()}", flush=True)
            sd = np.maximum(np.asarray(o["sd"]), 1e-300)
            shift = np.abs(np.asarray(o["mean"]) - np.asarray(a["mean"])) / sd
            rows.append(dict(problem=name, n=len(prob.x_names), names=list(prob.x_names), ours=o, pypesto=a, ours_am=o_am,
                             mean_shift=shift.tolist(), compile_s=compile_s, build_s=build_s))
    load_end = _load_average()

    argv = [a for i, a in enumerate(sys.argv[1:]) if "--amici-folder" not in (a, sys.argv[i] if i else "")]
    cmd = " ".join(["python benchmarks/sampling.py", *argv])
    warm = args.warmup if args.warmup is not None else rows[0]["ours"]["warmup"] if rows else "?"
    lines = [f"# Sampling: NUTS (sens.sample) against pyPESTO {pypesto.__version__}'s adaptive Metropolis on AMICI\n",
             f"`{cmd}`; NUTS {args.chains} chains x ({warm} warm-up + {args.draws} draws), mass matrix "
             f"{args.mass_matrix}, chains {'vmapped' if args.vmap_chains else 'one compiled chain each'}; adaptive "
             f"Metropolis {args.am_chains} chains x {args.am_iterations} iterations (Geweke burn-in removed); "
             f"rtol {args.rtol:g}, atol {args.atol:g} on both sides; load average {load_start} at the start, "
             f"{load_end} at the end ({os.cpu_count()} cores).\n",
             "| problem | params | sampler | whole call s (compile) | CPU s (compile) | draws kept | gradients / draw | "
             "ESS min | ESS median | ESS/s | ESS/s, compile apart | ESS/CPU s | ESS/CPU s, compile apart | R-hat max |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def rates(x):
        e = min(x["ess"])
        return (e / x["s"], e / (x["s"] - x.get("compile_s", 0.0)), e / x["cpu_s"],
                e / (x["cpu_s"] - x.get("compile_cpu_s", 0.0)))

    def row(label, x, first=("", "")):
        r = rates(x)
        per = f"{x['evaluations_per_draw']:.1f}" if "evaluations_per_draw" in x and label.startswith("NUTS") else ""
        return (f"| {first[0]} | {first[1]} | {label} | {x['s']:.1f} ({x.get('compile_s', 0.0):.1f}) | "
                f"{x['cpu_s']:.1f} ({x.get('compile_cpu_s', 0.0):.1f}) | {x['draws']} | {per} | {min(x['ess']):.1f} | "
                f"{np.median(x['ess']):.1f} | " + " | ".join(f"{v:.3g}" for v in r) + f" | {max(x['rhat']):.3f} |")

    ratio_lines = ["", "ESS/s ratios, ours / pyPESTO's adaptive Metropolis, on the smallest ESS over the parameters "
                   "(target: 10x):\n",
                   "| problem | sampler | wall, whole call | wall, compile apart | CPU, whole call | CPU, compile apart |",
                   "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        o, a = r["ours"], r["pypesto"]
        ra = rates(a)
        lines.append(row(f"NUTS (ours, {o['backend']})", o, (r["problem"], r["n"])))
        ro = [x / y for x, y in zip(rates(o), ra)]
        r["ratios"] = dict(zip(("wall", "wall_compile_apart", "cpu", "cpu_compile_apart"), ro))
        ratio_lines.append(f"| {r['problem']} | NUTS | " + " | ".join(f"**{v:.1f}x**" if i in (0, 2) else f"{v:.1f}x"
                                                                     for i, v in enumerate(ro)) + " |")
        if r["ours_am"]:
            lines.append(row(f"adaptive Metropolis (ours, {r['ours_am']['backend']})", r["ours_am"]))
            ratio_lines.append(f"| {r['problem']} | adaptive Metropolis (ours) | "
                               + " | ".join(f"{x / y:.1f}x" for x, y in zip(rates(r["ours_am"]), ra)) + " |")
        lines.append(row("adaptive Metropolis (pyPESTO, AMICI)", a))
    lines += ratio_lines
    lines += ["", "Whole call: ours the local fit, the Laplace approximation, JAX's compile, warm-up and draws; "
              "pyPESTO's all iterations (AMICI's model build apart). Compile apart: less JAX's compile of the "
              "sampler (wall or CPU seconds)."]
    lines += ["", "Posterior means, ours against pyPESTO's, in our posterior standard deviations (the same posterior: "
              "small; adaptive Metropolis' own Monte Carlo error is about sd / sqrt(its ESS)):\n",
              "| problem | parameter | mean ours | mean pyPESTO | sd ours | shift / sd | NUTS divergences |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        for j, k in enumerate(r["names"]):
            lines.append(f"| {r['problem'] if j == 0 else ''} | {k} | {r['ours']['mean'][j]:.4f} | "
                         f"{r['pypesto']['mean'][j]:.4f} | {r['ours']['sd'][j]:.4f} | {r['mean_shift'][j]:.2f} | "
                         f"{r['ours']['divergent'] if j == 0 else ''} |")
    text = "\n".join(lines)
    print("\n" + text)
    print(f"\nwhole run {time.perf_counter() - began:.0f} s")
    RESULTS.mkdir(exist_ok=True)
    stem = f"{args.out}_quick" if args.quick else args.out
    (RESULTS / f"{stem}.md").write_text(text + "\n")
    (RESULTS / f"{stem}.json").write_text(json.dumps(dict(load_start=load_start, load_end=load_end, args=vars(args),
                                                          rows=rows), indent=1))


if __name__ == "__main__":
    main()
