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
    python benchmarks/petab_guards.py Boehm_JProteomeRes2014 --points 5 --seed 0

With `--points N` it takes instead the Fisher matrix at N points drawn uniformly within the
bounds (on the parameter scales, like multistart starts), where a sloppy model's eigenvalues
span many decades and some parameters barely matter: the guard must stay silent there too.
The child processes import the package of this repository (PYTHONPATH), whatever an
installed copy points at.

It prints one line per problem: status (silent | WARNED | error | timeout), seconds, the
nllh, |gradient|, the Fisher eigenvalue range, and the warnings. Each problem's outcome is
also kept in benchmarks/results/petab_guards.json (one entry per problem, replaced when the
problem runs again, with the time, the command and the machine's load average over the run),
and benchmarks/results/petab_guards.md is written from all entries: a run of a few problems
adds to the table instead of replacing it (`--out` another folder).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

# this folder holds a script named like the `petab` package: keep it off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "petab"


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
        start = time.perf_counter()
        prob = sens.petab.load(problem_yaml(DATA / name))
        out["load_s"] = time.perf_counter() - start
        g = prob.gradient()  # x = None: the nominal values (-inf on a log scale is the value 0)
        out["gradient_s"] = time.perf_counter() - start - out["load_s"]
        out.update(nllh=g.value, mode=g.mode, gradient_norm=float(np.linalg.norm(g.grad)), n=len(prob.x_names))
        try:
            F = prob.fisher()
        except sens.SolverError as e:  # the gradient stands; say which step failed
            raise sens.SolverError(f"Fisher information (gradient done: {json.dumps(out)}): {e}") from e
        out["fisher_s"] = time.perf_counter() - start - out["load_s"] - out["gradient_s"]
    eig = np.linalg.eigvalsh(F)
    out.update(fisher_min=float(eig[0]), fisher_max=float(eig[-1]),
               warnings=[str(w.message) for w in caught if issubclass(w.category, sens.NumericalWarning)])
    return out


def far(name: str, points: int, seed: int) -> dict:
    """Run in a fresh process: the Fisher matrix of one problem at `points` points drawn
    uniformly within the bounds (on the parameter scales, as multistart starts are), each
    with the guard's warnings and its eigenvalue range (a sloppy model's spans many decades
    and is no reason to warn)."""
    import warnings

    import numpy as np

    import sensitivity as sens

    prob = sens.petab.load(problem_yaml(DATA / name))
    rng = np.random.default_rng(seed)
    out: dict = {"problem": name, "n": len(prob.x_names), "points": []}
    for _ in range(points):
        x = rng.uniform(prob.lower, prob.upper)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", sens.NumericalWarning)
            try:
                F = prob.fisher(x)
            except Exception as e:  # a solve that fails far from the data is no guard's business
                out["points"].append({"error": f"{type(e).__name__}: {str(e)[:200]}"})
                continue
        eig = np.linalg.eigvalsh(F)
        d = np.sqrt(np.abs(np.diag(F)))
        out["points"].append({"fisher_min": float(eig[0]), "fisher_max": float(eig[-1]),
                              "diag_sqrt_min": float(d.min()), "diag_sqrt_max": float(d.max()),
                              "warnings": [str(w.message) for w in caught
                                           if issubclass(w.category, sens.NumericalWarning)]})
    return out


def child_cpu(before) -> float:
    """CPU seconds (user + system) of the child processes waited for since `before` (a
    `resource.getrusage(RUSAGE_CHILDREN)`): steadier than wall time on a shared machine."""
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (now.ru_utime - before.ru_utime) + (now.ru_stime - before.ru_stime)


def record(out: Path, name: str, row: dict) -> None:
    """Keep one problem's outcome in out/petab_guards.json and write out/petab_guards.md."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "petab_guards.json"
    with open("/tmp/petab_guards.lock", "w") as lock:  # two runs at once add, neither overwrites
        fcntl.flock(lock, fcntl.LOCK_EX)
        rows = json.loads(path.read_text()) if path.is_file() else {}
        rows[name] = row
        path.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
        (out / "petab_guards.md").write_text(report(rows))


def report(rows: dict) -> str:
    """The table of every recorded problem, silent ones first."""
    order = {"silent": 0, "WARNED": 1, "error": 2, "timeout": 3}
    lines = ["# The result guard over the PEtab problems", "",
             "`benchmarks/petab_guards.py`: per problem, in a fresh process, the nllh gradient (mode by the",
             "cost model) and the Fisher information at the nominal parameters, with every",
             "`NumericalWarning` of the guard (`sensitivity/core/checks/numbers.py`). Seconds (s) are wall",
             "time of the whole process (import, load, compile, both computations) on a shared 2-core",
             "machine, cpu its CPU seconds (steadier; blank in rows recorded before it was kept): the",
             "load column is the 1-minute load average at the start and end of the run.", "",
             "| problem | status | n | s | cpu | nllh | gradient norm (mode) | Fisher eigenvalues | when | load | run |",
             "| --- | --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- | --- |"]
    commands: list[str] = []

    def run(r: dict) -> str:  # the command as a footnote: one list of the runs under the tables
        if r["command"] not in commands:
            commands.append(r["command"])
        return f"[{commands.index(r['command']) + 1}]"

    far = {n: r for n, r in rows.items() if "points" in r or " random points" in n}
    rows = {n: r for n, r in rows.items() if n not in far}
    for name, r in sorted(rows.items(), key=lambda kv: (order.get(kv[1]["status"], 9), kv[0])):
        cpu = f"{r['cpu']:.0f}" if "cpu" in r else ""
        if "nllh" in r:
            vals = (f"{r['n']} | {r['seconds']:.0f} | {cpu} | {r['nllh']:.6g} | {r['gradient_norm']:.3g} ({r['mode']}) | "
                    f"{r['fisher_min']:.2g} .. {r['fisher_max']:.2g}")
        else:
            vals = f" | {r['seconds']:.0f} | {cpu} | | {r.get('detail', '')[:240]} | "
        lines.append(f"| {name} | {r['status']} | {vals} | {r['when']} | {r['load']} | {run(r)} |")
    warned = [(n, r) for n, r in sorted(rows.items()) if r.get("warnings")]
    if warned:
        lines += ["", "Warnings:", ""]
        lines += [f"- {n}: {w[:300]}" for n, r in warned for w in r["warnings"]]
    if far:
        lines += ["", "## The Fisher matrix away from the nominal parameters", "",
                  "`--points N --seed S`: the Fisher information at N points drawn uniformly within the",
                  "bounds (on the parameter scales, as multistart starts are). Per point: the eigenvalue",
                  "range, the range of sqrt(F_ii), and the warnings; a point whose solve fails is counted.", "",
                  "| problem | status | n | s | points (warned / failed) | eigenvalues, per point | "
                  "lowest min/max eigenvalue | sqrt F_ii, per point | when | load | run |",
                  "| --- | --- | ---: | ---: | --- | --- | ---: | --- | --- | --- | --- |"]
        for name, r in sorted(far.items()):
            pts = r.get("points", [])
            ok = [p for p in pts if "error" not in p]
            eig = "; ".join(f"{p['fisher_min']:.0e} .. {p['fisher_max']:.0e}" for p in ok)
            diag = "; ".join(f"{p['diag_sqrt_min']:.0e} .. {p['diag_sqrt_max']:.0e}" for p in ok)
            low = min((p["fisher_min"] / p["fisher_max"] for p in ok if p["fisher_max"] > 0), default=float("nan"))
            counts = (f"{len(pts)} ({sum(bool(p.get('warnings')) for p in ok)} / {len(pts) - len(ok)})" if pts
                      else r.get("detail", "")[:160])
            lines.append(f"| {name.split(' @ ')[0]} | {r['status']} | {r.get('n', '')} | {r['seconds']:.0f} | "
                         f"{counts} | {eig} | {low:.1e} | {diag} | {r['when']} | {r['load']} | {run(r)} |")
        warned = [(n.split(" @ ")[0], w) for n, r in sorted(far.items()) for p in r.get("points", [])
                  for w in p.get("warnings", [])]
        if warned:
            lines += ["", "Warnings away from the nominal parameters:", ""]
            lines += [f"- {n}: {w[:300]}" for n, w in warned]
    lines += ["", "Runs:", ""] + [f"{i}. `{c}`" for i, c in enumerate(commands, 1)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problems", nargs="*", help="problem folder names (default: all)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per problem")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results",
                        help="folder of petab_guards.json / .md")
    parser.add_argument("--points", type=int, default=0,
                        help="instead: the Fisher matrix at this many random points within the bounds")
    parser.add_argument("--seed", type=int, default=0, help="of the random points")
    parser.add_argument("--table", action="store_true", help="only write petab_guards.md from the .json")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--far", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        path = args.out / "petab_guards.json"
        (args.out / "petab_guards.md").write_text(report(json.loads(path.read_text())))
        return 0
    if args.one:
        print(json.dumps(one(args.one)))
        return 0
    if args.far:
        print(json.dumps(far(args.far, args.points, args.seed)))
        return 0
    names = args.problems or sorted(p.name for p in DATA.iterdir() if p.is_dir() and problem_yaml(p))
    silent = 0
    # the child imports the package of this repository, whatever the installed copy points at
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    command = "python benchmarks/petab_guards.py " + " ".join(sys.argv[1:])
    for name in names:
        start, load0 = time.perf_counter(), os.getloadavg()[0]
        cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        row = {"when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": command.strip()}
        child = ["--far", name, "--points", str(args.points), "--seed", str(args.seed)] if args.points \
            else ["--one", name]
        key = f"{name} @ {args.points} random points (seed {args.seed})" if args.points else name
        try:
            run = subprocess.run([sys.executable, __file__, *child], capture_output=True, text=True,
                                 timeout=args.timeout, env=env)
        except subprocess.TimeoutExpired as e:
            # where it stood: the child's last line (the library's progress line names what compiles)
            err = e.stderr.decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
            last = (err.strip().splitlines() or [""])[-1][:300]
            print(f"{key:40s} timeout  >{args.timeout:.0f} s  {last[:150]}", flush=True)
            row.update(status="timeout", seconds=args.timeout, cpu=child_cpu(cpu0),
                       detail=f"no result within {args.timeout:.0f} s" + (f"; last: {last}" if last else ""),
                       load=f"{load0:.1f}-{os.getloadavg()[0]:.1f}")
            record(args.out, key, row)
            continue
        seconds = time.perf_counter() - start
        row.update(seconds=seconds, cpu=child_cpu(cpu0), load=f"{load0:.1f}-{os.getloadavg()[0]:.1f}")
        if run.returncode != 0:
            last = (run.stderr.strip().splitlines() or ["?"])[-1]
            print(f"{key:40s} error    {seconds:6.0f} s  {last[:150]}", flush=True)
            row.update(status="error", detail=last)
            record(args.out, key, row)
            continue
        r = json.loads(run.stdout.strip().splitlines()[-1])
        if args.points:
            warned = [p for p in r["points"] if p.get("warnings")]
            failed = [p for p in r["points"] if "error" in p]
            status = "WARNED" if warned else "silent"
            silent += not warned
            print(f"{key:60s} {status:8s} {seconds:6.0f} s  {len(warned)} of {args.points} points warned, "
                  f"{len(failed)} failed", flush=True)
            for p in r["points"]:
                print("    " + (p["error"][:150] if "error" in p else
                                f"eig {p['fisher_min']:.3g} .. {p['fisher_max']:.3g}  "
                                f"{' | '.join(w[:200] for w in p['warnings'])}"), flush=True)
            row.update(status=status, n=r["n"], points=r["points"])
            record(args.out, key, row)
            continue
        status = "WARNED" if r["warnings"] else "silent"
        silent += not r["warnings"]
        print(f"{name:40s} {status:8s} {seconds:6.0f} s  n={r['n']:3d} nllh={r['nllh']:.6g} "
              f"|grad|={r['gradient_norm']:.3g} ({r['mode']}) Fisher eig {r['fisher_min']:.3g} .. "
              f"{r['fisher_max']:.3g}", flush=True)
        for w in r["warnings"]:
            print(f"    {w[:300]}", flush=True)
        row.update(status=status, **{k: v for k, v in r.items() if k != "problem"})
        record(args.out, key, row)
    print(f"{silent} of {len(names)} problems silent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
