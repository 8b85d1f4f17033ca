"""The lean Rodas5P loop's two ways to save, on PEtab problems: steps that land on every save
time ("step") against steps that pass them and save by the method's dense output of order 4
("dense"), and the rule that picks one (`PetabProblem._save`: dense from
`petab.DENSE_SAVES_FROM` save times in one experiment).

    python benchmarks/petab_dense.py
    python benchmarks/petab_dense.py --problems Beer_MolBioSystems2014,Boehm_JProteomeRes2014 --repeats 5

Per problem of `../shared/petab`, in one process, both variants loaded side by side: the
most save times of one experiment, the steps of the nllh solve, the nllh, and medians of
`--repeats` interleaved warm calls of `nllh()` and of the forward and adjoint gradients
(ms); the nllh difference and the largest gradient difference relative to the largest
entry, dense against step. Prints a markdown table; no result file is written.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

# this folder holds petab.py, named like the `petab` package: keep it off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
os.environ.setdefault("SENSITIVITY_NO_EXPORT_STORE", "1")

import numpy as np  # noqa: E402

import sensitivity as sens  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "petab"
PROBLEMS = ("Beer_MolBioSystems2014", "Oliveira_NatCommun2021", "Giordano_Nature2020",
            "Okuonghae_ChaosSolitonsFractals2020", "Bertozzi_PNAS2020", "Boehm_JProteomeRes2014", "Schwen_PONE2014")
CALLS = ("nllh", "forward", "adjoint")


def measure(name: str, repeats: int) -> dict:
    path = next((DATA / name).glob("*.yaml"))
    rows = {}
    for save in ("step", "dense"):
        p = sens.petab.load(path)
        rule = p._save()
        p.save = save
        x = p._check_x(None)
        (value, (aux, _)), _ = p._run(("nllh",), lambda p=p: p._nllh_fn("forward"), x)
        grads = {m: p.gradient(mode=m).grad for m in ("forward", "adjoint")}
        rows[save] = dict(prob=p, rule=rule, nllh=float(value), steps=int(aux["steps"]), grads=grads,
                          times={c: [] for c in CALLS}, saves=int(p._most_saves))
    for _ in range(repeats):  # interleaved: a change of load hits both alike
        for r in rows.values():
            for c in CALLS:
                start = time.perf_counter()
                r["prob"].nllh() if c == "nllh" else r["prob"].gradient(mode=c)
                r["times"][c].append(time.perf_counter() - start)
    step, dense = rows["step"], rows["dense"]
    scale = max(np.max(np.abs(step["grads"]["forward"])), 1e-300)
    return dict(name=name, saves=step["saves"], rule=step["rule"], rows=rows,
                nllh_diff=dense["nllh"] - step["nllh"],
                grad_diff=float(np.max(np.abs(dense["grads"]["forward"] - step["grads"]["forward"])) / scale),
                fwd_adj=float(np.max(np.abs(dense["grads"]["forward"] - dense["grads"]["adjoint"])) / scale))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args(argv)
    results = [measure(n, args.repeats) for n in args.problems.split(",") if n]
    print(f"1-minute load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores; ms, medians of {args.repeats}\n")
    print("| problem | most save times of an experiment | rule | steps: step / dense | nllh ms | forward ms "
          "| adjoint ms | nllh dense - step | gradient diff (dense fwd - adj) |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        s, d = r["rows"]["step"], r["rows"]["dense"]
        ms = {c: (statistics.median(s["times"][c]) * 1e3, statistics.median(d["times"][c]) * 1e3) for c in CALLS}
        cells = " | ".join(f"{a:.1f} -> {b:.1f}" for a, b in ms.values())
        print(f"| {r['name']} | {r['saves']} | {r['rule']} | {s['steps']} / {d['steps']} | {cells} "
              f"| {r['nllh_diff']:.2e} | {r['grad_diff']:.1e} ({r['fwd_adj']:.0e}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
