"""PEtab start-up and per-call overhead, as ratios against this machine in the same run.

    python benchmarks/petab_overhead.py [--quick] [--problems Boehm_JProteomeRes2014,Perelson_Science1996]
    python benchmarks/petab_overhead.py --baseline /path/to/older/checkout   # before / after

With `--baseline DIR` (a folder holding another version of the `sensitivity` package, e.g.
`git worktree add DIR <commit>`), every measurement runs for both versions, interleaved
(floor, this version, the baseline, floor, ...), so that a loaded machine slows both alike.

Two measurements per problem of `../shared/petab`:

- a warm second process: a process on an empty cache folder fills it (`import sensitivity`,
  `sens.petab.load`, the first `gradient()`, mode `auto`); then, interleaved, new processes
  that do the same on the filled cache and bare `python -c "import jax.numpy, diffrax"`
  processes (the floor). Each process is timed from launch to exit (wall) and by its CPU
  time (user + system, which a loaded machine inflates less); the table gives medians and
  the ratios warm / floor, and the phases of the warm process (import, load, first
  gradient) and how many programs it took from the store of traced programs
  (`sensitivity/stores/programs.py`) and how many it traced.
- per call: `prob.nllh(x)` and `prob.gradient(x)` (x a NumPy array, as an optimiser passes
  it) against the compiled program they run, called on arrays already on the device,
  interleaved call by call in one process after compiling; medians and the ratio
  public / bare.

The 1-minute load average is printed with the table: on a loaded machine only the ratios of
one run compare. Prints the table and writes benchmarks/results/petab_overhead.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

# this folder holds petab.py, named like the `petab` package: keep it off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"
DATA = ROOT.parent / "shared" / "petab"
PROBLEMS = ("Boehm_JProteomeRes2014", "Perelson_Science1996")
FLOOR = "import jax.numpy, diffrax"


def _yaml(name: str) -> str:
    return str(DATA / name / f"{name}.yaml")


# ---------------------------------------------------------------------------- child processes
def child(path: str) -> None:
    """One process of the first call: import, load, first gradient; prints JSON phases."""
    t0 = time.perf_counter()
    import sensitivity as sens
    from sensitivity.stores import programs
    t1 = time.perf_counter()
    prob = sens.petab.load(path)
    t2 = time.perf_counter()
    g = prob.gradient()
    t3 = time.perf_counter()
    stats = dict(getattr(programs, "STATS", {}))
    print(json.dumps({"import": t1 - t0, "load": t2 - t1, "gradient": t3 - t2, "mode": g.mode,
                      "value": g.value, "grad": [float(v) for v in g.grad], "store": stats,
                      "modules": sorted(m for m in ("sympy", "diffrax", "petab", "libsbml", "pandas",
                                                    "matplotlib", "scipy") if m in sys.modules)}))


CPU: dict[float, float] = {}


def _process(args: list[str], cache: str, tree: str | None = None) -> tuple[float, str]:
    """(wall seconds of one new process, its stdout); its CPU seconds go into CPU. `tree`:
    a folder whose `sensitivity` package the process imports instead of this one."""
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    if tree:
        env["PYTHONPATH"] = os.pathsep.join([tree] + [p for p in [env.get("PYTHONPATH")] if p])
    for k in ("SENSITIVITY_NO_DISK_CACHE", "SENSITIVITY_NO_EXPORT_STORE"):
        env.pop(k, None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=1200)
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    CPU[took] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return took, done.stdout


def warm_process(name: str, repeats: int, trees: dict) -> dict:
    """Per version in `trees` (label -> folder or None): the cold process, then `repeats`
    rounds of floor and warm processes, the versions interleaved within each round."""
    with tempfile.TemporaryDirectory() as tmp:
        caches = {label: str(Path(tmp) / f"cache{i}") for i, label in enumerate(trees)}
        cold, cold_info = {}, {}
        for label, tree in trees.items():
            cold[label], out = _process([__file__, "--child", _yaml(name)], caches[label], tree)
            cold_info[label] = json.loads(out.strip().splitlines()[-1])
        floor, warm, infos = [], {label: [] for label in trees}, {label: [] for label in trees}
        for _ in range(repeats):
            floor.append(_process(["-c", FLOOR], tmp)[0])
            for label, tree in trees.items():
                took, out = _process([__file__, "--child", _yaml(name)], caches[label], tree)
                warm[label].append(took)
                infos[label].append(json.loads(out.strip().splitlines()[-1]))
    med = statistics.median
    rows = {}
    for label in trees:
        w, inf = warm[label], infos[label]
        rows[label] = {
            "cold": cold[label], "cold_store": cold_info[label]["store"],
            "floor": med(floor), "floor_cpu": med(CPU[t] for t in floor),
            "warm": med(w), "warm_cpu": med(CPU[t] for t in w),
            "ratio": med(a / f for a, f in zip(w, floor)),
            "ratio_cpu": med(CPU[a] / CPU[f] for a, f in zip(w, floor)),
            "import": med(i["import"] for i in inf), "load": med(i["load"] for i in inf),
            "gradient": med(i["gradient"] for i in inf), "store": inf[-1]["store"],
            "modules": inf[-1]["modules"], "mode": inf[-1]["mode"],
            "same_values": all(i["grad"] == cold_info[label]["grad"] and i["value"] == cold_info[label]["value"]
                               for i in inf)}
    return rows


# ---------------------------------------------------------------------------- per call
def per_call(name: str, calls: int) -> list[tuple[str, float, float]]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import sensitivity as sens
    from sensitivity.importers import petab as petab_import

    prob = sens.petab.load(_yaml(name))
    x = np.array(prob.x_nominal)
    mode = prob.gradient(x).mode
    prob.nllh(x)
    prob.gradient(x, mode=mode)
    structure = prob._structure()
    programs = {k[len(structure):]: exe for k, exe in petab_import._COMPILED.items()
                if k[:len(structure)] == structure}
    args = (jnp.asarray(x), jnp.asarray([prob.rtol, prob.atol]))
    rows = []
    for label, public, bare in (
            ("nllh", lambda: prob.nllh(x), lambda: jax.block_until_ready(programs[("nllh",)](*args))),
            (f"gradient (auto: {mode})", lambda: prob.gradient(x),
             lambda: jax.block_until_ready(programs[("grad", mode)](*args)))):
        for _ in range(3):
            public(), bare()
        b_times, p_times = [], []
        for _ in range(calls):
            start = time.perf_counter()
            bare()
            b_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            public()
            p_times.append(time.perf_counter() - start)
        # medians of the call-by-call differences and ratios: a burst of load on the
        # machine slows a pair of neighbouring calls alike
        rows.append((label, statistics.median(b_times), statistics.median(p_times),
                     statistics.median(p - b for p, b in zip(p_times, b_times)),
                     statistics.median(p / b for p, b in zip(p_times, b_times))))
    return rows


def per_call_process(name: str, calls: int, tree: str | None) -> list:
    with tempfile.TemporaryDirectory() as cache:
        _, out = _process([__file__, "--per-call", name, "--calls", str(calls)], cache, tree)
    return json.loads(out.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 warm processes and 50 calls instead of 5 and 300")
    ap.add_argument("--problems", default=",".join(PROBLEMS))
    ap.add_argument("--baseline", help="a folder with another version of the package, measured beside this one")
    ap.add_argument("--parts", default="warm,calls", help="warm (second process), calls (per call), or both")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--per-call", help=argparse.SUPPRESS)
    ap.add_argument("--calls", type=int, default=300, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    if args.per_call:
        print(json.dumps(per_call(args.per_call, args.calls)))
        return 0
    repeats, calls = (2, 50) if args.quick else (5, 300)
    names = [n for n in args.problems.split(",") if n]
    trees = {"this": None}
    if args.baseline:
        trees["baseline"] = str(Path(args.baseline).resolve())
    loads, warm_rows, call_rows = [], [], []
    parts = set(args.parts.split(","))
    for name in names:
        if "warm" in parts:
            for label, w in warm_process(name, repeats, trees).items():
                warm_rows.append((name, label, w))
        loads.append(os.getloadavg()[0])
        for _ in range(2 if args.baseline and "calls" in parts else 1 if "calls" in parts else 0):
            for label, tree in trees.items():  # per-call processes alternate too
                call_rows.append((name, label, per_call_process(name, calls, tree)))
        loads.append(os.getloadavg()[0])
        print(f"{name}: done", file=sys.stderr, flush=True)
    version = " | version" if args.baseline else ""
    lines = [] if not warm_rows else [f"Warm second process: medians of {repeats} processes each, interleaved with the floor "
             f"`python -c \"{FLOOR}\"`; the first process (cold) fills an empty cache folder.", "",
             f"| problem{version} | floor s (CPU s) | warm s (CPU s) | warm / floor (CPU) | phases s: import, load, "
             "first gradient [mode] | store: loaded, missed | cold s | modules imported |",
             "| --- |" + (" --- |" if args.baseline else "") + " ---: | ---: | ---: | --- | --- | ---: | --- |"]
    for name, label, w in warm_rows:
        st = w["store"]
        tag = f" | {label}" if args.baseline else ""
        lines.append(f"| {name}{tag} | {w['floor']:.2f} ({w['floor_cpu']:.2f}) | {w['warm']:.2f} ({w['warm_cpu']:.2f}) "
                     f"| **{w['ratio']:.2f}x** ({w['ratio_cpu']:.2f}x) | {w['import']:.2f}, {w['load']:.2f}, "
                     f"{w['gradient']:.2f} [{w['mode']}] | {st.get('loaded', '-')}, {st.get('missed', '-')} "
                     f"| {w['cold']:.1f} | {', '.join(w['modules'])} |")
    if warm_rows:
        same = all(w["same_values"] for _, _, w in warm_rows)
        lines += ["", f"Warm processes' gradients equal the cold process's bit for bit: {same}.", ""]
    lines += [] if not call_rows else [
              f"Per call: {calls} calls of each, interleaved call by call after compiling (bare = the "
              "compiled program on device arrays); medians of the times, and of the differences and "
              "ratios of neighbouring calls.", "",
              f"| problem{version} | call | bare ms | public ms | public - bare ms | public / bare |",
              "| --- |" + (" --- |" if args.baseline else "") + " --- | ---: | ---: | ---: | ---: |"]
    for name, label, rows in call_rows:
        tag = f" | {label}" if args.baseline else ""
        for call, b, p, diff, ratio in rows:
            lines.append(f"| {name}{tag} | {call} | {b * 1e3:.3f} | {p * 1e3:.3f} | {diff * 1e3:.3f} | {ratio:.2f}x |")
    text = "\n".join(lines).strip()
    header = (f"# PEtab start-up and per-call overhead\n\nWritten by `python benchmarks/petab_overhead.py"
              f"{' --quick' if args.quick else ''}{' --baseline DIR' if args.baseline else ''}"
              f"{'' if parts == {'warm', 'calls'} else ' --parts ' + args.parts}` on {date.today().isoformat()}, {os.cpu_count()} cores; "
              f"1-minute load average {', '.join(f'{v:.1f}' for v in loads)} (after each part).\n\n")
    print(header + text)
    RESULTS.mkdir(exist_ok=True)
    suffix = ("_quick" if args.quick else "") + ("" if parts == {"warm", "calls"} else "_" + "_".join(sorted(parts)))
    (RESULTS / f"petab_overhead{suffix}.md").write_text(header + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
