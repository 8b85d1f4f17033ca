"""PEtab solver settings compared in one process: steps, simulation and forward-gradient
time of each variant as a ratio to the first (absolute times on a loaded machine mislead;
ratios within one process do not).

Variants of the diffrax pipeline with Kvaerno5 (knobs of `PetabProblem`, part of its compiled-function
key; the default Rodas5P loop of petab_rodas.py has none of them):
- batch: "vmap" (all experiments in lockstep) or "map" (one after another, `lax.map`);
- newton_kappa: the Newton stopping constant of Kvaerno5 (diffrax's default 1e-2);
- save: "step" (the solver steps onto every save time) or "interp" (dense output).

    python benchmarks/petab_solver.py            # the five problems
    python benchmarks/petab_solver.py --quick    # Boehm only, 2 repeats

Prints the table and writes benchmarks/results/petab_solver.md and petab_solver.png.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

# this folder holds petab.py, named like the `petab` package: keep it off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "petab"
PROBLEMS = {"Boehm_JProteomeRes2014": {}, "Elowitz_Nature2000": {}, "Brannmark_JBC2010": {},
            "Fujita_SciSignal2010": {"atol": 1e-12}, "Schwen_PONE2014": {}}
VARIANTS = [  # label, batch, newton_kappa, save
    ("vmap, kappa 0.01 (diffrax default kappa)", "vmap", 0.01, "step"),
    ("map, kappa 0.01", "map", 0.01, "step"),
    ("map, kappa 0.3 (default)", "map", 0.3, "step"),
    ("map, kappa 0.3, interp", "map", 0.3, "interp"),
]


def measure(name: str, repeats: int) -> list[dict]:
    import numpy as np

    import sensitivity as sens
    probs = []
    for label, batch, kappa, save in VARIANTS:
        p = sens.petab.load(DATA / name / f"{name}.yaml", validate=False, solver="kvaerno5", **PROBLEMS[name])
        p.batch, p.newton_kappa, p.save = batch, kappa, save
        (value, (aux, _)), _ = p._run(("nllh",), lambda: p._nllh_fn("checkpoint"), p._check_x(None))
        g = p.gradient(mode="forward")
        probs.append(dict(label=label, prob=p, nllh=float(value), steps=int(aux["steps"]), grad=g.grad,
                          sim=[], fwd=[]))
    for _ in range(repeats):  # interleaved, so that load changes hit every variant alike
        for r in probs:
            t0 = time.perf_counter()
            r["prob"].nllh()
            r["sim"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            r["prob"].gradient(mode="forward")
            r["fwd"].append(time.perf_counter() - t0)
    base = probs[0]
    out = []
    for r in probs:
        out.append(dict(problem=name, variant=r["label"], nllh=r["nllh"], steps=r["steps"],
                        sim_ratio=statistics.median(r["sim"]) / statistics.median(base["sim"]),
                        fwd_ratio=statistics.median(r["fwd"]) / statistics.median(base["fwd"]),
                        grad_change=float(np.linalg.norm(r["grad"] - base["grad"]) / np.linalg.norm(base["grad"]))))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="Boehm only, 2 repeats")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"PEtab problems not found at {DATA}", file=sys.stderr)
        return 1
    names = ["Boehm_JProteomeRes2014"] if args.quick else list(PROBLEMS)
    repeats = 2 if args.quick else args.repeats
    rows = []
    for name in names:
        print(f"{name} ...", file=sys.stderr, flush=True)
        rows += measure(name, repeats)
    lines = ["| problem | variant | steps | nllh | sim time ratio | fwd grad time ratio | gradient change |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['problem']} | {r['variant']} | {r['steps']} | {r['nllh']:.6f} | {r['sim_ratio']:.2f} | "
                     f"{r['fwd_ratio']:.2f} | {r['grad_change']:.1e} |")
    table = "\n".join(lines)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (RESULTS / f"petab_solver{suffix}.md").write_text(
        "# PEtab solver settings: time ratios to the first variant, in one process\n\n"
        f"Written by `python benchmarks/petab_solver.py{' --quick' if args.quick else ''}` (median of {repeats}); "
        "rtol = atol = 1e-8 (Fujita atol 1e-12), Kvaerno5. 'gradient change' = |g - g_first| / |g_first| "
        "(forward mode).\n\n" + table + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    fig, ax = plt.subplots(figsize=(8, 4))
    w = 0.8 / len(VARIANTS)
    x = np.arange(len(names))
    for k, (label, *_) in enumerate(VARIANTS):
        ax.bar(x + k * w, [r["fwd_ratio"] for r in rows if r["variant"] == label], w, label=label)
    ax.set_xticks(x + 0.4 - w / 2, [n.split("_")[0] for n in names])
    ax.set_ylabel("forward gradient time / first variant")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"petab_solver{suffix}.png", dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
