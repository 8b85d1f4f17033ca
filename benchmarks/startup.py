"""Start-up: whole-process wall time of the command line, cold and warm.

    python benchmarks/startup.py [--quick] [--config configs/lotka_volterra.yaml]

Each measurement is one new process (`python -m sensitivity ...`), timed from launch to
exit, the median of 5 (2 with --quick):

- run, cold: `sensitivity run CONFIG` with an empty cache folder (XDG_CACHE_HOME points at
  a fresh temporary folder each time): import, trace, compile, solve, write.
- run, warm: the same with a cache folder a previous run filled (JAX's persistent compile
  cache and the toolkit's store of traced programs, if any).
- validate: `sensitivity validate CONFIG` (no compiling).
- models: `sensitivity models`.
- floor: `python -c "import jax.numpy, diffrax, xarray, matplotlib.pyplot"`, the imports no
  run can do without on this machine, measured interleaved with the warm runs; the warm
  run's ratio to it is the machine-independent figure (target at most 1.3x).

The table also gives the CPU time (user + system) of each process, which a loaded machine
inflates less than the wall time.

Prints the table and writes benchmarks/results/startup.md and startup.png.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).parent / "results"


CPU: dict[float, float] = {}  # wall time of a run -> its CPU time (user + system)


FLOOR = "import jax.numpy, diffrax, xarray, matplotlib.pyplot"


def timed(args: list[str], cache: str) -> float:
    """Wall seconds of one process (`python -m sensitivity ARGS`, or `python -c CODE` for
    args ["-c", CODE]); its CPU seconds (less sensitive to a loaded machine) go into CPU."""
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    env.pop("SENSITIVITY_NO_DISK_CACHE", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    argv = args if args[0] == "-c" else ["-m", "sensitivity", *args]
    done = subprocess.run([sys.executable, *argv], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"`sensitivity {' '.join(args)}` failed ({done.returncode}):\n{done.stderr}")
    CPU[took] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return took


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 repeats instead of 5")
    ap.add_argument("--config", default="configs/lotka_volterra.yaml")
    args = ap.parse_args(argv)
    repeats = 2 if args.quick else 5
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "out")
        run = ["run", args.config, "--out", out, "--force", "--quiet"]
        cold = []
        for i in range(repeats):
            cold.append(timed(run, str(Path(tmp) / f"cold{i}")))
        warm_cache = str(Path(tmp) / "warm")
        timed(run, warm_cache)  # fill it
        warm, floor = [], []
        for _ in range(repeats):  # interleaved: both see the same machine
            warm.append(timed(run, warm_cache))
            floor.append(timed(["-c", FLOOR], warm_cache))
        validate = [timed(["validate", args.config], warm_cache) for _ in range(repeats)]
        listing = [timed(["models"], warm_cache) for _ in range(repeats)]
    for label, runs, target in ((f"run {args.config}, cold", cold, 6.0),
                                (f"run {args.config}, warm", warm, 2.5),
                                (f"validate {args.config}", validate, 0.6), ("models", listing, None),
                                (f'floor: python -c "{FLOOR}"', floor, None)):
        rows.append((label, statistics.median(runs), min(runs), max(runs), target,
                     statistics.median(CPU[r] for r in runs)))
    lines = ["| command (whole process) | median s | min s | max s | target s | median CPU s |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {label} | {med:.2f} | {lo:.2f} | {hi:.2f} | {'-' if t is None else f'{t:g}'} | {cpu:.2f} |"
              for label, med, lo, hi, t, cpu in rows]
    ratio = statistics.median(warm) / statistics.median(floor)
    cpu_ratio = statistics.median(CPU[r] for r in warm) / statistics.median(CPU[r] for r in floor)
    lines += ["", f"warm run / floor: {ratio:.2f}x wall, {cpu_ratio:.2f}x CPU (target at most 1.3x); "
                  f"load average {os.getloadavg()[0]:.1f} at the end"]
    text = "\n".join(lines)
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3))
    ax.barh(range(len(rows)), [r[1] for r in rows], xerr=[[r[1] - r[2] for r in rows], [r[3] - r[1] for r in rows]],
            color="tab:blue")
    for i, r in enumerate(rows):
        if r[4] is not None:
            ax.plot([r[4], r[4]], [i - 0.4, i + 0.4], color="tab:red", lw=2)
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"seconds, whole process (median of {repeats}; red: target)")
    ax.set_title("Start-up" + (" (quick)" if args.quick else ""))
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    fig.savefig(RESULTS / f"startup{suffix}.png", dpi=120)
    (RESULTS / f"startup{suffix}.md").write_text(
        f"# Start-up of the command line\n\nWritten by `python benchmarks/startup.py"
        f"{' --quick' if args.quick else ''}` on {date.today().isoformat()}: whole-process wall time, "
        f"median of {repeats}.\n\n{text}\n\n![start-up](startup{suffix}.png)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
