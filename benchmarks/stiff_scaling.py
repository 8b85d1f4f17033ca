"""Large stiff systems: time against the number of states.

Two method-of-lines PDEs from the model library, Kvaerno5 and Rodas5P (`--solvers`, a row
each) at rtol 1e-6, atol 1e-8, 50 save
times: `heat_1d` (linear, tridiagonal Jacobian, t in [0, 0.5]) and `brusselator_1d`
(nonlinear reaction-diffusion, Jacobian of bandwidth n/2 in the stored order and 2 after
reordering, t in [0, 10], hundreds of steps). For each size it times, after compiling:

    ours          sens.simulate / sens.jacobian(mode="forward", 2 parameters) /
                  sens.gradient(mode="adjoint", 2 parameters + n initial values): the linear
                  solver chosen by `stiff_linear.choose` (banded when cheaper; Kvaerno5 then
                  runs as the toolkit's ESDIRK solver, sensitivity/solvers/esdirk.py)
    ours dense    the same with jacobian_sparsity="dense" (dense LU, no structure)
    ours reuse    (--reuse) the same with jacobian_reuse=True: Jacobian and factorisation kept
                  across steps (sensitivity/solvers/newton/reuse.py); timed interleaved with "ours" (run k of
                  one, then run k of the other), with steps, Jacobian evaluations and
                  factorisations along the accepted steps, and time per step
    diffrax       hand-written diffrax.diffeqsolve with Kvaerno5's defaults (dense LU), jit
    scipy         solve_ivp(method="BDF") on the same (jitted) rhs, without and with
                  jac_sparsity

The median of `--repeats` runs is reported (compile apart). Dense variants run up to
`--dense-max` states (their cost grows like n^3). Prints a table, checks the targets
(`targets`), and writes benchmarks/results/stiff_scaling[_quick].{md,json,png}.

    python benchmarks/stiff_scaling.py            # 25, 100, 400, 1600 states
    python benchmarks/stiff_scaling.py --quick    # 25 and 200 states, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

import sensitivity as sens
from sensitivity.core import sparsity
from sensitivity.models import brusselator_1d, heat_1d
from sensitivity.solvers import linear as stiff_linear

RESULTS = Path(__file__).parent / "results"
SYSTEMS = {
    "heat_1d": dict(factory=lambda n: heat_1d.model(n=n), params=["D", "r"], t0=0.0, times=np.linspace(0.01, 0.5, 50)),
    # two species per grid point: an even state count (25 -> 26)
    "brusselator_1d": dict(factory=lambda n: brusselator_1d.model(n=n + n % 2), params=["A", "B"], t0=0.0,
                           times=np.linspace(0.2, 10.0, 50)),
}
RTOL, ATOL = 1e-6, 1e-8
LOAD = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "?"


def objective(ys):
    return jnp.sum(ys ** 2)


def median(call, repeats):
    """(first-call seconds incl. compile, median run seconds) of call() -> (compile, run)."""
    first = call()
    runs = [call()[1] for _ in range(repeats)]
    return first[0] + first[1], statistics.median(runs)


def problem(system, n, dense, solver="kvaerno5", reuse=False):
    spec = SYSTEMS[system]
    m = spec["factory"](n)
    if dense:
        m = sens.ODEModel(m.name, m.n_states, m.parameters, m.rhs, m.y0, stiff=True, jacobian_sparsity="dense")
    return sens.Problem(m, times=spec["times"], t0=spec["t0"], wrt=spec["params"], solver=solver,
                        rtol=RTOL, atol=ATOL, jacobian_reuse=reuse)


def time_pair(probs, repeats):
    """`time_ours` for several problems, interleaved: each task's compile+first call for all,
    then run k of each in turn; medians. Also the solver statistics of one simulate."""
    t = lambda r: (r.timings["compile"], r.timings["run"])  # noqa: E731
    adj = [p.replace(wrt=list(p.input_names) + [f"y0.{s}" for s in p.model.states]) for p in probs]
    tasks = {"simulate": [lambda p=p: t(sens.simulate(p)) for p in probs],
             "forward": [lambda p=p: t(sens.jacobian(p, mode="forward")) for p in probs],
             "adjoint": [lambda a=a: t(sens.gradient(a, objective, mode="adjoint")) for a in adj]}
    outs = [dict() for _ in probs]
    for key, calls in tasks.items():
        firsts = [sum(c()) for c in calls]
        runs = [[] for _ in calls]
        for _ in range(repeats):
            for i, c in enumerate(calls):
                runs[i].append(c()[1])
        for i, o in enumerate(outs):
            o[f"{key}_first"], o[key] = firsts[i], statistics.median(runs[i])
    for p, o in zip(probs, outs):
        st = sens.simulate(p).stats
        o["steps"] = st["num_steps"]
        o["rejected"] = st["num_rejected_steps"]
        o["jacobians"] = st.get("jacobian_evaluations")
        o["factorisations"] = st.get("factorisations")
        o["retries"] = st.get("newton_retries")
        o["ms_per_step"] = 1e3 * o["simulate"] / max(o["steps"], 1)
    return outs


def time_ours(prob, repeats):
    out = {}
    t = lambda r: (r.timings["compile"], r.timings["run"])  # noqa: E731
    out["simulate_first"], out["simulate"] = median(lambda: t(sens.simulate(prob)), repeats)
    out["steps"] = sens.simulate(prob).stats["num_steps"]
    out["forward_first"], out["forward"] = median(lambda: t(sens.jacobian(prob, mode="forward")), repeats)
    adj = prob.replace(wrt=list(prob.input_names) + [f"y0.{s}" for s in prob.model.states])
    out["adjoint_first"], out["adjoint"] = median(
        lambda: t(sens.gradient(adj, objective, mode="adjoint")), repeats)
    return out


def time_diffrax(system, n, repeats):
    spec = SYSTEMS[system]
    m = spec["factory"](n)
    term = diffrax.ODETerm(lambda t, y, p: m.rhs(t, y, p))
    ts = jnp.asarray(spec["times"])

    @jax.jit
    def solve(y0, p):
        return diffrax.diffeqsolve(term, diffrax.Kvaerno5(), spec["t0"], ts[-1], None, y0, p,
                                   saveat=diffrax.SaveAt(ts=ts),
                                   stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
                                   max_steps=100_000).ys

    y0 = jnp.asarray(m.y0)
    p = {k: jnp.asarray(v) for k, v in m.parameters.items()}

    def call():
        start = time.perf_counter()
        jax.block_until_ready(solve(y0, p))
        return 0.0, time.perf_counter() - start
    return median(call, repeats)


def time_scipy(system, n, repeats, with_sparsity):
    spec = SYSTEMS[system]
    m = spec["factory"](n)
    p = {k: jnp.asarray(v) for k, v in m.parameters.items()}
    f = jax.jit(lambda t, y: m.rhs(t, y, p))
    fun = lambda t, y: np.asarray(f(t, y))  # noqa: E731
    fun(0.0, m.y0)
    kw = {}
    if with_sparsity:
        kw["jac_sparsity"] = sparsity.detect(m.rhs, spec["t0"], m.y0, m.parameters).matrix()

    def call():
        start = time.perf_counter()
        sol = solve_ivp(fun, (spec["t0"], spec["times"][-1]), m.y0, method="BDF", t_eval=spec["times"],
                        rtol=RTOL, atol=ATOL, **kw)
        assert sol.success, sol.message
        return 0.0, time.perf_counter() - start
    return median(call, repeats)[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="25 and 200 states (dense variants at 25 only), 1 repeat")
    ap.add_argument("--sizes", type=int, nargs="*", default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--systems", nargs="*", default=list(SYSTEMS), choices=list(SYSTEMS))
    ap.add_argument("--solvers", nargs="*", default=["kvaerno5", "rodas5p"], choices=["kvaerno5", "rodas5p"],
                    help="our stiff solvers to time (rows per solver)")
    ap.add_argument("--dense-max", type=int, default=None,
                    help="largest size for the dense variants (default 400; 25 with --quick)")
    ap.add_argument("--scipy-max", type=int, default=1600,
                    help="largest size for SciPy BDF without jac_sparsity (default 1600)")
    ap.add_argument("--reuse", action="store_true",
                    help="also time jacobian_reuse=True, interleaved with the default path")
    args = ap.parse_args(argv)
    sizes = args.sizes or ([25, 200] if args.quick else [25, 100, 400, 1600])
    repeats = args.repeats or (1 if args.quick else 3)
    dense_max = args.dense_max if args.dense_max is not None else (25 if args.quick else 400)
    rows = []
    for system in args.systems:
        for n in sizes:
            ref = {"scipy_sparse": time_scipy(system, n, repeats, True)}
            if n <= dense_max:
                ref["diffrax"] = time_diffrax(system, n, repeats)[1]
            if n <= max(dense_max, args.scipy_max):
                ref["scipy"] = time_scipy(system, n, repeats, False)
            for solver in args.solvers:
                prob = problem(system, n, dense=False, solver=solver)
                row = {"system": system, "n": prob.model.n_states, "solver": solver, **ref}
                choice = stiff_linear.choose(prob)
                row["linear_solver"] = choice.kind
                row["bandwidth"] = None if choice.structure is None else choice.structure.reordered_bandwidth
                reuse = args.reuse and solver in ("kvaerno3", "kvaerno4", "kvaerno5")
                if reuse:  # reuse vs default, interleaved; also the dense pair
                    row["ours"], row["ours_reuse"] = time_pair(
                        [prob, problem(system, n, dense=False, solver=solver, reuse=True)], repeats)
                else:
                    row["ours"] = time_ours(prob, repeats)
                if n <= dense_max and reuse:
                    row["ours_dense"], row["ours_dense_reuse"] = time_pair(
                        [problem(system, n, dense=True, solver=solver),
                         problem(system, n, dense=True, solver=solver, reuse=True)], repeats)
                elif n <= dense_max:
                    row["ours_dense"] = time_ours(problem(system, n, dense=True, solver=solver), repeats)
                rows.append(row)
                print(f"{system} n={n} {solver} done", file=sys.stderr, flush=True)

    ms = lambda x: "-" if x is None else f"{x * 1e3:.3g}"  # noqa: E731
    lines = ["| system | states | solver | linear solver | steps | simulate ms | ms / step | forward Jacobian ms | adjoint gradient ms "
             "| dense: simulate / fwd / adj ms | diffrax ms | SciPy BDF ms | SciPy BDF + jac_sparsity ms "
             "| compile+first s (sim, fwd, adj) |", "|" + "---|" * 14]
    for r in rows:
        o, d = r["ours"], r.get("ours_dense")
        dense = "-" if d is None else f"{ms(d['simulate'])} / {ms(d['forward'])} / {ms(d['adjoint'])}"
        lines.append(
            f"| {r['system']} | {r['n']} | {r['solver']} | {r['linear_solver']} (b={r['bandwidth']}) | {o['steps']} | "
            f"{ms(o['simulate'])} | {ms(o['simulate'] / o['steps'])} | {ms(o['forward'])} | {ms(o['adjoint'])} | {dense} | {ms(r.get('diffrax'))} | "
            f"{ms(r.get('scipy'))} | {ms(r['scipy_sparse'])} | {o['simulate_first']:.2g}, "
            f"{o['forward_first']:.2g}, {o['adjoint_first']:.2g} |")
    if args.reuse:
        lines += ["", "Jacobian reuse (jacobian_reuse=True) against the default path, interleaved in one process "
                  "(J: Jacobian evaluations, LU: factorisations, along the accepted steps; retries: steps redone "
                  "with a fresh Jacobian after the Newton iteration failed on a stale one):", "",
                  "| system | states | path | steps (rejected) | J | LU | retries | ms/step | simulate ms "
                  "| forward Jacobian ms | adjoint gradient ms | reuse / default (sim, fwd, adj) |", "|" + "---|" * 12]
        for r in rows:
            for key, label, base in (("ours", "default", None), ("ours_reuse", "reuse", "ours"),
                                     ("ours_dense", "dense LU", None),
                                     ("ours_dense_reuse", "dense LU, reuse", "ours_dense")):
                if key not in r or (key == "ours_dense" and "ours_dense_reuse" not in r):
                    continue
                o = r[key]
                ratio = "" if base is None else " / ".join(
                    f"{o[k] / r[base][k]:.2f}" for k in ("simulate", "forward", "adjoint"))
                lines.append(f"| {r['system']} | {r['n']} | {label} | {o['steps']} ({o['rejected']}) | "
                             f"{'-' if o['jacobians'] is None else o['jacobians']} | "
                             f"{'-' if o['factorisations'] is None else o['factorisations']} | "
                             f"{'-' if o['retries'] is None else o['retries']} | {o['ms_per_step']:.3g} | "
                             f"{ms(o['simulate'])} | {ms(o['forward'])} | {ms(o['adjoint'])} | {ratio} |")
    text = "\n".join(lines)
    checks = targets(rows)
    print(text)
    print("\n".join(checks))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(args.systems), figsize=(6 * len(args.systems), 4.5))
    for ax, system in zip(np.atleast_1d(axes), args.systems):
        rs_all = [r for r in rows if r["system"] == system]
        for solver in args.solvers:
            rs = [r for r in rs_all if r["solver"] == solver]
            n = [r["n"] for r in rs]
            for key, label, style in (("simulate", "simulate", "o-"), ("forward", "forward Jacobian", "s-"),
                                      ("adjoint", "adjoint gradient", "^-")):
                ax.loglog(n, [r["ours"][key] for r in rs], style, label=f"{solver}: {label}")
                dn = [(r["n"], r["ours_dense"][key]) for r in rs if "ours_dense" in r]
                if dn:
                    ax.loglog(*zip(*dn), style, alpha=0.35, label=f"{solver} dense LU: {label}")
        rs = [r for r in rs_all if r["solver"] == args.solvers[0]]
        n = [r["n"] for r in rs]
        sc = [(r["n"], r["scipy"]) for r in rs if "scipy" in r]
        if sc:
            ax.loglog(*zip(*sc), "k--", label="SciPy BDF")
        ax.loglog(n, [r["scipy_sparse"] for r in rs], "k:", label="SciPy BDF + jac_sparsity")
        ax.set_title(system)
        ax.set_xlabel("states")
        ax.set_ylabel("run time (s), compile apart")
        ax.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    stem = ("stiff_scaling_quick" if args.quick else "stiff_scaling") + ("_reuse" if args.reuse else "")
    if sorted(args.systems) != sorted(SYSTEMS):
        stem += "_" + "_".join(args.systems)
    if args.sizes:
        stem += "_" + "_".join(map(str, args.sizes))
    fig.savefig(RESULTS / f"{stem}.png", dpi=120)
    (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=1))
    (RESULTS / f"{stem}.md").write_text(
        f"# Stiff systems: time against states\n\nWritten by `python benchmarks/stiff_scaling.py"
        f"{' '.join([''] + (argv if argv is not None else sys.argv[1:]))}` on {time.strftime('%Y-%m-%d')} "
        f"(load average before: {LOAD}): {', '.join(args.solvers)}, rtol {RTOL:g}, "
        f"atol {ATOL:g}, 50 save times; median of {repeats} run(s) after compiling. Forward Jacobian: "
        "2 parameters; adjoint gradient: 2 parameters + every initial value, sum of squares.\n\n"
        + text + "\n\n" + "\n".join(f"- {c}" for c in checks) + f"\n\n![scaling]({stem}.png)\n")
    print(f"wrote {RESULTS / (stem + '.md')}", file=sys.stderr)
    return 0


def targets(rows) -> list[str]:
    """The targets of the structured linear algebra, checked on this run's timings (per solver)."""
    out = []
    for solver in dict.fromkeys(r.get("solver", "kvaerno5") for r in rows):
        out += [f"{solver}: {c}" for c in _targets([r for r in rows if r.get("solver", "kvaerno5") == solver])]
    return out


def _targets(rows) -> list[str]:
    out = []
    heat = {r["n"]: r for r in rows if r["system"] == "heat_1d"}
    for n in (400, 1600):
        r = heat.get(n)
        if r is None:
            continue
        o = r["ours"]
        if "scipy" in r:
            out.append(f"heat_1d {n}: simulate / SciPy BDF (no sparsity) = "
                       f"{o['simulate'] / r['scipy']:.2g} (target <= 1)")
        out.append(f"heat_1d {n}: forward Jacobian / simulate = {o['forward'] / o['simulate']:.2g} (target <= 3), "
                   f"adjoint gradient / simulate = {o['adjoint'] / o['simulate']:.2g} (target <= 5)")
    if 400 in heat and 1600 in heat:
        for key in ("simulate", "forward", "adjoint"):
            out.append(f"heat_1d 400 -> 1600 {key}: x{heat[1600]['ours'][key] / heat[400]['ours'][key]:.2g} "
                       "(target <= 8)")
    br = {r["n"]: r for r in rows if r["system"] == "brusselator_1d"}
    if 400 in br and "scipy" in br[400]:
        out.append(f"brusselator_1d 400: simulate / SciPy BDF = {br[400]['ours']['simulate'] / br[400]['scipy']:.2g} "
                   "(target <= 2)")
    if 400 in br:
        out.append(f"brusselator_1d 400: simulate / SciPy BDF + jac_sparsity = "
                   f"{br[400]['ours']['simulate'] / br[400]['scipy_sparse']:.2g} (target <= 2)")
    for r in rows:
        for key, base, what in (("ours_reuse", "ours", "reuse / default"),
                                ("ours_dense_reuse", "ours_dense", "dense LU: reuse / no reuse")):
            if key in r:
                o, d = r[key], r[base]
                out.append(f"{r['system']} {r['n']}: {what} simulate = {o['simulate'] / d['simulate']:.2f}, "
                           f"forward = {o['forward'] / d['forward']:.2f}, adjoint = {o['adjoint'] / d['adjoint']:.2f}")
    for r in rows:
        if r["n"] <= 100 and "ours_dense" in r:
            ratio = max(r["ours"][k] / r["ours_dense"][k] for k in ("simulate", "forward", "adjoint"))
            out.append(f"{r['system']} {r['n']}: worst ours / dense-LU path = {ratio:.2g} (target <= 1.1)")
    return out


if __name__ == "__main__":
    sys.exit(main())
