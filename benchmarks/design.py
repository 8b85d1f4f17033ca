"""Experimental design at scale: choose 20 measurements out of 10,000 candidates (1,000
save times x 10 outputs) for a model with 30 parameters.

The model: a reversible chain of 10 species with production into the first, forward and
backward rates between neighbours and a degradation per species (u, kf1..kf9, kb1..kb9,
d1..d10 and the first species' initial value: 30 inputs), every species observed
(sigma = 0.01). One forward Jacobian over the 1,000 times gives every candidate's
sensitivity row; the search (greedy, then exchange passes; D and A criteria; and the
efficiency bound from a continuous design; the E criterion's exchange with its bound from
mirror ascent and cutting planes) then works on those rows alone. The figure is the time
after the Jacobian, best of 3 runs with one BLAS thread during the search
(`threads=1`, sens.design's default, by threadpoolctl) and with the BLAS library's own
number of threads (`threads=None`, one run).

    python benchmarks/design.py [--quick]

--quick: 200 times x 10 outputs and one repeat. Prints the table and writes
benchmarks/results/design[_quick].md (with the load average).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_info

import sensitivity as sens

N_SPECIES = 10
RESULTS = Path(__file__).parent / "results"


def rhs(t, y, p):
    kf, kb, d = p["kf"], p["kb"], p["d"]
    forward = kf * y[:-1] - kb * y[1:]  # net flux i -> i + 1
    zero = jnp.zeros((1,), dtype=y.dtype)
    inflow = jnp.concatenate([p["u"][None], forward])
    outflow = jnp.concatenate([forward, zero])
    return inflow - outflow - d * y


def problem(n_times: int) -> sens.Problem:
    rng = np.random.default_rng(0)
    params = {"u": np.array(1.0), "kf": rng.uniform(0.3, 1.5, N_SPECIES - 1),
              "kb": rng.uniform(0.05, 0.5, N_SPECIES - 1), "d": rng.uniform(0.05, 0.3, N_SPECIES)}
    states = [f"A{i + 1}" for i in range(N_SPECIES)]
    m = sens.ODEModel("reversible_chain", states, params, rhs, {s: (2.0 if s == "A1" else 0.0) for s in states})
    wrt = ["u", "kf", "kb", "d", "y0.A1"]
    return sens.Problem(m, np.linspace(0.25, 30.0, n_times), wrt=wrt, rtol=1e-8, atol=1e-10)


def blas_threads() -> str:
    """The BLAS libraries loaded and their default number of threads."""
    info = threadpool_info()
    return ", ".join(f"{i['internal_api']} {i['num_threads']} threads" for i in info if i["user_api"] == "blas")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n_times = 200 if args.quick else 1000
    repeats = 1 if args.quick else 3
    prob = problem(n_times)
    start = time.perf_counter()
    jac = sens.jacobian(prob, mode="forward")
    jac_s = time.perf_counter() - start
    lines = [f"{prob.n_inputs} parameters, {n_times} times x {len(prob.of)} outputs = "
             f"{n_times * len(prob.of)} candidates, n = 20, 40 fixed measurements; "
             f"BLAS: {blas_threads()}; load average {os.getloadavg()[0]:.1f}",
             f"forward Jacobian {jac_s:.2f} s (compile {jac.timings.get('compile', float('nan')):.2f} s)"]
    print("\n".join(lines), flush=True)
    # today's data: every species at four times (40 measurements, fewer than would
    # determine 30 parameters well)
    idx = np.searchsorted(prob.times, [1.0, 3.0, 10.0, 30.0]).clip(0, n_times - 1)
    fixed = pd.DataFrame([(float(prob.times[i]), o) for i in idx for o in prob.of], columns=["time", "output"])
    cases = (("D", "exchange", False), ("D", "exchange", True), ("A", "exchange", False), ("D", "greedy", False),
             ("D", "continuous", True), ("E", "exchange", True))
    for criterion, method, bound in cases:
        cells = []
        for threads in (1, None):
            best, d = np.inf, None
            for _ in range(repeats if threads else 1):  # the slow setting once: the CPU is shared
                t0 = time.perf_counter()
                d = sens.design(prob, n=20, criterion=criterion, sigma=0.01, method=method, jacobian=jac,
                                bound=bound, fixed=fixed, threads=threads)
                best = min(best, time.perf_counter() - t0)
            cells.append(f"{best:6.2f} s ({'1 thread' if threads else 'BLAS default'})")
        extra = "" if not np.isfinite(d.efficiency_bound) else f", >= {d.efficiency_bound:.3f} of the optimum"
        lines.append(f"  {criterion} {method:10s}{' + bound' if bound and method != 'continuous' else '':8s}: "
                     f"{' / '.join(cells)} after the Jacobian; efficiency {d.efficiency_uniform:.2f} x uniform"
                     f"{extra}; {d.chosen['output'].nunique()} outputs, {d.chosen['time'].nunique()} distinct times")
        print(lines[-1], flush=True)
    name = "design" + ("_quick" if args.quick else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.md").write_text("```\n" + "\n".join(lines) + "\n```\n")


if __name__ == "__main__":
    main()
