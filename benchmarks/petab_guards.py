"""The guard on results (sensitivity.core.checks.numbers) over the PEtab benchmark problems.

For every problem in ../shared/petab (next to the repository), in one fresh process each
(so a slow or failing problem cannot stop the others): load it, take the nllh gradient
(mode chosen by the cost model) and the Fisher information at the nominal parameters, and
record every `NumericalWarning` the guard raises. A sound problem raises none; a flagged one
is listed with the inputs the guard names. The problems compile slowly (seconds to
minutes each), so this is a benchmark, not a test.

    python benchmarks/petab_guards.py                      # every problem
    python benchmarks/petab_guards.py Boehm_JProteomeRes2014 Beer_MolBioSystems2014
    python benchmarks/petab_guards.py --timeout 900

It prints one line per problem: status (silent | WARNED | error | timeout), seconds, the
nllh, |gradient|, the Fisher eigenvalue range, and the warnings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# this folder holds a script named like the `petab` package: keep it off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "petab"


def problem_yaml(folder: Path) -> Path | None:
    """The problem file of a collection folder: <folder name>.yaml, else problem.yaml, else
    the folder's only YAML file."""
    yamls = sorted(folder.glob("*.yaml"))
    pick = [y for y in yamls if y.stem == folder.name] or [y for y in yamls if y.name == "problem.yaml"] \
        or (yamls if len(yamls) == 1 else [])
    return pick[0] if pick else None


def one(name: str) -> dict:
    """Run in a fresh process: the gradient and Fisher matrix of one problem."""
    import warnings

    import numpy as np

    import sensitivity as sens

    out: dict = {"problem": name}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", sens.NumericalWarning)
        prob = sens.petab.load(problem_yaml(DATA / name))
        g = prob.gradient()
        F = prob.fisher()
    eig = np.linalg.eigvalsh(F)
    out.update(nllh=g.value, mode=g.mode, gradient_norm=float(np.linalg.norm(g.grad)),
               fisher_min=float(eig[0]), fisher_max=float(eig[-1]), n=len(prob.x_names),
               warnings=[str(w.message) for w in caught if issubclass(w.category, sens.NumericalWarning)])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problems", nargs="*", help="problem folder names (default: all)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per problem")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return 0
    names = args.problems or sorted(p.name for p in DATA.iterdir() if p.is_dir() and problem_yaml(p))
    silent = 0
    for name in names:
        start = time.perf_counter()
        try:
            run = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True,
                                 timeout=args.timeout)
        except subprocess.TimeoutExpired:
            print(f"{name:40s} timeout  >{args.timeout:.0f} s", flush=True)
            continue
        seconds = time.perf_counter() - start
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{name:40s} error    {seconds:6.0f} s  {last[:150]}", flush=True)
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        status = "WARNED" if r["warnings"] else "silent"
        silent += not r["warnings"]
        print(f"{name:40s} {status:8s} {seconds:6.0f} s  n={r['n']:3d} nllh={r['nllh']:.6g} "
              f"|grad|={r['gradient_norm']:.3g} ({r['mode']}) Fisher eig {r['fisher_min']:.3g} .. "
              f"{r['fisher_max']:.3g}", flush=True)
        for w in r["warnings"]:
            print(f"    {w[:300]}", flush=True)
    print(f"{silent} of {len(names)} problems silent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
