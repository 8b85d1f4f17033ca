"""PEtab benchmark problems: our times beside AMICI's (../shared/petab/README.md).

For each problem of the PEtab benchmark collection in ../shared/petab (next to the
repository), at rtol = atol = 1e-8 with the default solver (the Rodas5P loop of
sensitivity/importers/petab_rodas.py; `--solver kvaerno5` for diffrax's Kvaerno5), as
AMICI's figures were measured, it measures in one fresh process per problem:

- first call: import of the SBML model and the PEtab tables + trace + compile + one nllh,
  with JAX's persistent compilation cache off (AMICI's counterpart: model build, SBML
  import + C++ compile);
- simulation (nllh), forward gradient, adjoint gradient, auto gradient: the median of
  `repeats` calls of the compiled function, compile time reported apart;
- |nllh - (-llh_ref)| and the relative difference of forward and adjoint gradients.

    python benchmarks/petab.py            # all five problems, 5 repeats
    python benchmarks/petab.py --quick    # Boehm only, 2 repeats
    python benchmarks/petab.py --solver kvaerno5

It prints the table, writes benchmarks/results/petab.md and petab.png. AMICI's figures are
copied from the test data's README (AMICI 1.1, CVODES, one thread, a 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# this script is named like the `petab` package: keep its folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "petab"

# problem: (llh_ref, AMICI build s, sim ms, fwd grad ms, adj grad ms, options)
AMICI = {
    "Boehm_JProteomeRes2014": (-138.221997, 27, 0.9, 5, 99, {}),
    "Brannmark_JBC2010": (-141.889114, 27, 5.4, 138, 658, {}),
    "Elowitz_Nature2000": (63.202800, 25, 4.8, 47, 176, {}),
    "Fujita_SciSignal2010": (53.083777, 22, 5.9, 143, 546, {}),
    "Schwen_PONE2014": (-943.999299, 23, 12.0, 240, 1208, {}),
}


def measure(name: str, repeats: int, solver: str = "rodas5p") -> dict:
    """Run in a fresh process: times in seconds."""
    import numpy as np
    start = time.perf_counter()
    import sensitivity as sens
    llh_ref, *_, options = AMICI[name]
    prob = sens.petab.load(DATA / name / f"{name}.yaml", solver=solver, **options)
    value = prob.nllh()
    first = time.perf_counter() - start

    def median(call):
        call()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    out = {"problem": name, "first_call_s": first, "nllh": value, "nllh_error": abs(value + llh_ref)}
    out["sim_s"] = median(lambda: prob.nllh())
    compile_ = {}
    grads = {}
    for mode in ("forward", "adjoint", "auto"):
        t0 = time.perf_counter()
        g = prob.gradient(mode=mode)
        compile_[mode] = time.perf_counter() - t0
        grads[mode] = g
        out[f"{mode}_s"] = median(lambda: prob.gradient(mode=mode))
    out["auto_mode"] = grads["auto"].mode
    out["compile_s"] = {k: v for k, v in compile_.items()}
    gf, ga = grads["forward"].grad, grads["adjoint"].grad
    out["fwd_vs_adj"] = float(np.linalg.norm(gf - ga) / np.linalg.norm(gf))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Boehm only, 2 repeats")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--solver", default="rodas5p", help="rodas5p (default), rodas4, kvaerno5, ...")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one problem, print JSON
    args = ap.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(measure(args.one, args.repeats, args.solver)))
        return 0
    if not DATA.is_dir():
        print(f"PEtab problems not found at {DATA}", file=sys.stderr)
        return 1
    names = ["Boehm_JProteomeRes2014"] if args.quick else list(AMICI)
    repeats = 2 if args.quick else args.repeats
    rows = []
    loads = []
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        # a cold start: no persistent compilation cache, so the first call compiles
        env = dict(os.environ, SENSITIVITY_NO_DISK_CACHE="1")
        proc = subprocess.run([sys.executable, __file__, "--one", name, "--repeats", str(repeats),
                               "--solver", args.solver],
                              capture_output=True, text=True, env=env)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        rows.append(json.loads(line[len("RESULT "):]))
        loads.append(float(Path("/proc/loadavg").read_text().split()[0]) if Path("/proc/loadavg").exists() else 0.0)
    load = "/".join(f"{v:.1f}" for v in loads)  # 1-minute load average after each problem
    header = ("| problem | nllh error | first call s (AMICI build s) | sim ms (AMICI) | fwd grad ms (AMICI) "
              "| adj grad ms (AMICI) | auto grad ms [mode] | auto vs AMICI best | fwd vs adj |")
    lines = [header, "| " + " | ".join(["---"] + ["---:"] * 8) + " |"]
    for r in rows:
        _, build, sim, fwd, adj, _ = AMICI[r["problem"]]
        best = min(fwd, adj)
        lines.append(
            f"| {r['problem']} | {r['nllh_error']:.1e} | {r['first_call_s']:.1f} ({build}) | "
            f"{r['sim_s'] * 1e3:.1f} ({sim}) | {r['forward_s'] * 1e3:.1f} ({fwd}) | "
            f"{r['adjoint_s'] * 1e3:.1f} ({adj}) | {r['auto_s'] * 1e3:.1f} [{r['auto_mode']}] | "
            f"{best / (r['auto_s'] * 1e3):.2f}x | {r['fwd_vs_adj']:.1e} |")
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    note = ("quick mode (Boehm only, 2 repeats)" if args.quick else f"median of {repeats} repeats")
    (RESULTS / "petab.md").write_text(
        "# PEtab benchmark problems: ours vs AMICI\n\n"
        f"Written by `python benchmarks/petab.py{' --quick' if args.quick else ''}` ({note}); rtol = atol = "
        f"1e-8, solver {args.solver}, load average {load} during the run. "
        "AMICI's figures in parentheses, from ../shared/petab/README.md. "
        "'auto vs AMICI best' = AMICI's faster gradient / our auto gradient (> 1: we are faster).\n\n"
        + table + "\n\nCompile times (s): "
        + "; ".join(f"{r['problem']}: " + ", ".join(f"{k} {v:.1f}" for k, v in r["compile_s"].items())
                    for r in rows) + "\n")
    (RESULTS / "petab.json").write_text(json.dumps(rows, indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(8, 4))
    x = np.arange(len(rows))
    w = 0.2
    for k, (label, ours, amici_idx) in enumerate((("forward", "forward_s", 3), ("adjoint", "adjoint_s", 4))):
        ax.bar(x + (2 * k - 1.5) * w, [r[ours] * 1e3 for r in rows], w, label=f"ours, {label}")
        ax.bar(x + (2 * k - 0.5) * w, [AMICI[r["problem"]][amici_idx] for r in rows], w,
               label=f"AMICI, {label}", alpha=0.5)
    ax.set_xticks(x, [r["problem"].split("_")[0] for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("gradient of nllh, ms")
    ax.set_title("PEtab problems: one gradient at rtol = atol = 1e-8")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "petab.png", dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
