"""Where a step of the PEtab pipeline's lean Rodas5P loop goes: the step against the loop.

    python benchmarks/lean_step_cost.py [--problems Boehm_JProteomeRes2014,Perelson_Science1996]

Per problem of `../shared/petab` (its first experiment, nominal parameters, rtol = atol =
1e-8), in one process, interleaved, medians of 7 rounds of 50 calls:

- the nllh program `PetabProblem.nllh` runs (all experiments; a one-experiment problem is
  the solve plus the observables);
- `lean.rosenbrock_solve` alone on the first experiment (the loop: step-size control,
  landing on the save times, saves);
- the same number of bare `rosenbrock.lean_step` calls in a `fori_loop`, with a step size
  that changes every step (a constant one would let XLA hoist the matrix inverse of a
  model whose Jacobian does not depend on the state out of the loop).

Each divided by the solve's steps gives microseconds per step: solve - bare steps is what the
loop adds per step. Also the number of XLA operations (fusions, LAPACK calls, copies) of one
compiled step and of the solve's loop body. Prints a table; no result file is written.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from pathlib import Path

# this folder holds petab.py, named like the `petab` package: keep it off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
os.environ.setdefault("SENSITIVITY_NO_EXPORT_STORE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import sensitivity as sens  # noqa: E402
from sensitivity.solvers.lean import rosenbrock_solve  # noqa: E402
from sensitivity.solvers.rosenbrock import TABLEAUS, lean_step  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "petab"
OPS = r"^\s*(?:ROOT )?%\S+ = \S+ (fusion|custom-call|while|call|dot|copy|reduce|gather|scatter|conditional|sort)\("


def _ops(text: str) -> int:
    return len(re.findall(OPS, text, re.M))


def _largest_body(hlo: str) -> int:
    """XLA operations of the largest non-entry computation (the solve's loop body)."""
    comps = [c for c in re.split(r"\n(?=\S)", hlo) if not c.startswith("ENTRY") and "fused_computation" not in
             c.split("\n", 1)[0]]
    return max((_ops(c) for c in comps), default=0)


def measure(name: str) -> dict:
    prob = sens.petab.load(DATA / name / f"{name}.yaml")
    m = prob.model
    theta = prob.theta(prob.x_nominal)
    g = prob._groups[0]
    p_ref, p_const = g["sim"][0][0], g["sim"][1][0]
    pv = jnp.where(p_ref >= 0, theta[np.maximum(p_ref, 0)], p_const)
    y0 = m.initial(pv)
    ts = jnp.asarray(g["ts"][0])
    tol = jnp.asarray([prob.rtol, prob.atol])
    args = (pv, ts[-1])

    def f(t, y, a):
        return m.rhs(t, y, a[0], a[1])

    solve = jax.jit(lambda pv, y0: rosenbrock_solve(f, y0, 0.0, ts[-1], ts, (pv, ts[-1]), tol, prob.max_steps,
                                                    method="rodas5p"))
    steps = int(solve(pv, y0)[-1])

    def bare(y, h):
        def body(i, y):
            y_new, _ = lean_step(f, 0.0, y, h * (1.0 + 1e-9 * i), args, False, TABLEAUS["rodas5p"])
            return y + 1e-12 * (y_new - y)  # a dependence on each step, the state barely moves
        return jax.lax.fori_loop(0, steps, body, y)

    bare_steps = jax.jit(bare)
    x = jnp.asarray(prob.x_nominal)
    nllh = jax.jit(prob._nllh_fn("forward")).lower(x, tol).compile()
    one_step = jax.jit(lambda y, h: lean_step(f, 0.0, y, h, args, False, TABLEAUS["rodas5p"]))
    step_hlo = one_step.lower(y0, 0.01).compile().as_text()
    solve_hlo = solve.lower(pv, y0).compile().as_text()
    calls = {"nllh program": lambda: nllh(x, tol), "rosenbrock_solve": lambda: solve(pv, y0),
             "bare steps": lambda: bare_steps(y0, 0.01)}
    for call in calls.values():
        jax.block_until_ready(call())
    times = {k: [] for k in calls}
    for _ in range(7):
        for k, call in calls.items():
            one = []
            for _ in range(50):
                start = time.perf_counter()
                jax.block_until_ready(call())
                one.append(time.perf_counter() - start)
            times[k].append(statistics.median(one))
    out = {k: statistics.median(v) / steps * 1e6 for k, v in times.items()}
    out.update(name=name, n=int(y0.shape[0]), steps=steps, step_ops=_ops(step_hlo.split("ENTRY")[1]),
               lapack=len(re.findall(r'custom_call_target="lapack', step_hlo)), body_ops=_largest_body(solve_hlo))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", default="Boehm_JProteomeRes2014,Perelson_Science1996")
    args = ap.parse_args(argv)
    rows = [measure(n) for n in args.problems.split(",") if n]
    print(f"1-minute load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores\n")
    print("| problem | states | steps | us/step: nllh program | solve | bare step | loop (solve - step) "
          "| XLA ops: step (LAPACK) | loop body |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['name']} | {r['n']} | {r['steps']} | {r['nllh program']:.2f} | {r['rosenbrock_solve']:.2f} "
              f"| {r['bare steps']:.2f} | {r['rosenbrock_solve'] - r['bare steps']:.2f} | {r['step_ops']} "
              f"({r['lapack']}) | {r['body_ops']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
