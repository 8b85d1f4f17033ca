"""Ensembles on Dask: in process against a LocalCluster of 2 workers on this machine, and
Dask's per-chunk overhead as a fraction of the chunk's compute time.

Robertson's stiff kinetics (Kvaerno5, rtol 1e-8), its three rate constants log-uniform
over [0.5, 2] x their defaults, saved at t = 40 and 400: 10^4 solves (10^3 with --quick)
in vmapped batches. For several chunk sizes (batches per Dask task) it measures

- the wall time in process and through "local:2" (compiling included, and apart),
- the overhead of Dask: 2 workers x wall time - the time the workers spent computing and
  compiling, per chunk and as a fraction of a chunk's compute time (scheduling,
  transfer of the spec and the samples out and the results back, idle workers),
- that the two give identical results.

    python benchmarks/distributed.py [--quick]

Prints a table and writes benchmarks/results/distributed.md and distributed.png.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

# this file is named like the `distributed` package: keep its folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np  # noqa: E402

import sensitivity as sens  # noqa: E402
from sensitivity import models  # noqa: E402
from sensitivity.analyses.executors import local_client, resolve_executor  # noqa: E402
from sensitivity.analyses.gsa.sampling import parse_ranges, sobol_points, to_values  # noqa: E402

RESULTS = Path(__file__).parent / "results"
BATCH = 128


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10^3 solves, two chunk sizes")
    args = ap.parse_args(argv)
    n = 1024 if args.quick else 10_240
    model = models.get("robertson")
    prob = sens.Problem(model, [40.0, 400.0], t0=0.0, rtol=1e-8, atol=1e-10)
    ranges = {k: (0.5 * float(v), 2.0 * float(v), "log-uniform") for k, v in model.parameters.items()}
    X = to_values(sobol_points(n, 3, seed=0), parse_ranges(prob, ranges))

    start = time.perf_counter()
    here = sens.ensemble(prob, X, batch=BATCH)
    here_wall = time.perf_counter() - start
    here_compile = here.attrs["compile_seconds"]
    per_batch = here.attrs["run_seconds"] / here.attrs["n_batches"]
    print(f"in process: {here_wall:.3g} s ({here_compile:.2g} s compiling), {per_batch:.3g} s per batch of "
          f"{BATCH}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    client = local_client(2)
    ex = resolve_executor(client)
    cluster_s = time.perf_counter() - start
    start = time.perf_counter()  # warm-up: one chunk per worker compiles there (in parallel)
    warm = sens.ensemble(prob, X[: 2 * BATCH], batch=BATCH, chunk=1, executor=ex)
    warm_s = time.perf_counter() - start
    targets = (0.25, 1.0) if args.quick else (0.1, 0.25, 1.0, 2.0)
    rows = []
    for target in targets:
        chunk = max(1, math.ceil(target / per_batch))
        start = time.perf_counter()
        ds = sens.ensemble(prob, X, batch=BATCH, chunk=chunk, executor=ex)
        wall = time.perf_counter() - start
        busy = ds.attrs["run_seconds"] + ds.attrs["compile_seconds"]
        chunks = ds.attrs["chunks"]
        overhead = max(0.0, 2 * wall - busy)
        chunk_compute = ds.attrs["run_seconds"] / chunks
        rows.append({"chunk_batches": chunk, "chunks": chunks, "chunk_compute_s": chunk_compute,
                     "wall_s": wall, "compile_s": ds.attrs["compile_seconds"], "compiles": ds.attrs["compiles"],
                     "overhead_per_chunk_s": overhead / chunks, "overhead_fraction": overhead / chunks / chunk_compute,
                     "identical": bool(np.array_equal(ds["outputs"].values, here["outputs"].values, equal_nan=True))})
        print(f"chunk of {chunk} batches done", file=sys.stderr, flush=True)

    lines = [f"Robertson (stiff, Kvaerno5), {n} solves in batches of {BATCH} "
             f"({'quick' if args.quick else 'full'} run); 2 cores",
             "", f"In process: {here_wall:.3g} s wall, of which {here_compile:.2g} s compiling; "
             f"{per_batch * 1e3:.3g} ms per batch. LocalCluster start: {cluster_s:.2g} s; a warm-up of 2 "
             f"chunks (each worker compiles, {warm.attrs['compiles']} compiles): {warm_s:.2g} s.", "",
             "| batches per chunk | chunks | compute per chunk s | local:2 wall s | "
             "speed-up vs in process (without its compile) | Dask overhead per chunk s | overhead / chunk compute | "
             "identical results |", "|" + "---|" * 8]
    for r in rows:
        run_only = (here_wall - here_compile) / r["wall_s"]
        lines.append(f"| {r['chunk_batches']} | {r['chunks']} | {r['chunk_compute_s']:.3g} | {r['wall_s']:.3g} | "
                     f"{run_only:.2g}x | "
                     f"{r['overhead_per_chunk_s']:.3g} | {r['overhead_fraction']:.1%} | "
                     f"{'yes' if r['identical'] else 'NO'} |")
    lines += ["", "Overhead = 2 workers x wall time - (compute + compile time on the workers), per chunk: "
              "scheduling, transfers and idle workers (the last chunks leave one worker idle)."]
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    suffix = "_quick" if args.quick else ""
    (RESULTS / f"distributed{suffix}.md").write_text(text + "\n")
    _plot(rows, RESULTS / f"distributed{suffix}.png")
    client.close()
    return 0


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.plot([r["chunk_compute_s"] for r in rows], [100 * r["overhead_fraction"] for r in rows], "o-")
    ax.axhline(10, color="k", ls="--", lw=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("compute time per chunk, s")
    ax.set_ylabel("Dask overhead, % of chunk compute")
    ax.set_title("local:2 on a 2-core machine", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
