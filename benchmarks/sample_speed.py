"""Effective samples per second of `sens.sample` on a PEtab problem: NUTS with the nllh
traced into one vmapped program (backend "jax") against NUTS with the nllh on the host
through `jax.pure_callback` (backend "callback", chains one after another), and adaptive
Metropolis on the traced nllh; the same posterior (flat prior within the bounds, from the
fitted estimate), chains, warm-up and draws for each.

    python benchmarks/sample_speed.py [--problem Boehm_JProteomeRes2014] [--chains 4]
        [--warmup 200] [--n 200] [--skip callback,am]

ESS: ArviZ's bulk ESS, the smallest over the parameters. Per second of sampling (the
chains' run, compile apart) and of the whole call (wall, compile included); the CPU
seconds of the call beside them, since wall time on a shared machine depends on the load.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

# this folder holds petab.py: off the path, so that `import petab` finds the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import sensitivity as sens  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "petab"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--problem", default="Boehm_JProteomeRes2014")
    ap.add_argument("--chains", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--am-factor", type=int, default=10, help="adaptive Metropolis: this many times the draws")
    ap.add_argument("--skip", default="", help="comma-separated: callback, jax, am")
    a = ap.parse_args()
    skip = set(filter(None, a.skip.split(",")))
    path = ROOT / a.problem / f"{a.problem}.yaml"
    pp = sens.petab.load(path)
    fit = sens.fit(pp, None)
    print(f"{a.problem}: {len(pp.x_names)} parameters, nllh at the fit {fit.nllh:.6g}; "
          f"{a.chains} chains, warm-up {a.warmup}, {a.n} draws")
    runs = [("nuts", "jax", a.warmup, a.n), ("adaptive_metropolis", "jax", a.am_factor * a.warmup, a.am_factor * a.n),
            ("nuts", "callback", a.warmup, a.n)]
    rows = {}
    for method, backend, warmup, n in runs:
        tag = "am" if method != "nuts" else backend
        if tag in skip:
            continue
        t = time.perf_counter()
        res = sens.sample(fit, method=method, backend=backend, chains=a.chains, warmup=warmup, n=n, seed=0)
        wall = time.perf_counter() - t
        ess = float(res.ess_bulk.min())
        rows[tag] = (ess / res.timings["sampling"], ess / wall)
        print(f"{method:>20s} {backend:>8s}: ESS min {ess:7.0f}, R-hat max {res.rhat.max():.3f}, "
              f"{res.n_divergent} divergent | sampling {res.timings['sampling']:7.1f} s, compile "
              f"{res.timings['compile']:6.1f} s, wall {wall:7.1f} s, cpu {res.timings['cpu']:7.1f} s | "
              f"ESS/s sampling {rows[tag][0]:8.3g}, wall {rows[tag][1]:8.3g}, per cpu s {ess / res.timings['cpu']:8.3g}",
              flush=True)
    if "jax" in rows and "callback" in rows:
        print(f"NUTS traced / callback: ESS/s sampling {rows['jax'][0] / rows['callback'][0]:.3g}x, "
              f"wall {rows['jax'][1] / rows['callback'][1]:.3g}x")
    if "jax" in rows and "am" in rows:
        print(f"NUTS / adaptive Metropolis (both traced): ESS/s sampling {rows['jax'][0] / rows['am'][0]:.3g}x, "
              f"wall {rows['jax'][1] / rows['am'][1]:.3g}x")


if __name__ == "__main__":
    main()
