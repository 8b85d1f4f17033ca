"""CPU time (and wall time) of Kvaerno5 on the banded path, for comparing two versions of
the package on a shared, loaded machine.

heat_1d and brusselator_1d at 400 states (the settings of `stiff_scaling.py`: rtol 1e-6,
atol 1e-8, 50 save times; forward Jacobian in 2 parameters; adjoint gradient in 2
parameters + every initial value, sum of squares). After a first call (compile), the
median of `--repeats` calls of simulate, forward Jacobian and adjoint gradient, as wall
time and as the process's CPU time (`time.process_time`, all threads): on a machine with
more runnable processes than cores, wall times follow the load, CPU times much less.

    python benchmarks/stiff_cpu_time.py [--repeats 5] [--reuse] [--n 400]

To compare with another version, run the same command with that checkout first on the
path (`git worktree add /tmp/old <commit>`, then `PYTHONPATH=/tmp/old python ...`); the
first line printed is the package's location. Prints only (no results file).
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax.numpy as jnp
import numpy as np

import sensitivity as sens
from sensitivity.models import brusselator_1d, heat_1d

SYSTEMS = {
    "heat_1d": (lambda n: heat_1d.model(n=n), ["D", "r"], np.linspace(0.01, 0.5, 50)),
    "brusselator_1d": (lambda n: brusselator_1d.model(n=n + n % 2), ["A", "B"], np.linspace(0.2, 10.0, 50)),
}


def objective(ys):
    return jnp.sum(ys ** 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=400)
    ap.add_argument("--reuse", action="store_true", help="jacobian_reuse=True")
    args = ap.parse_args(argv)
    print(sens.__file__)
    for name, (factory, wrt, times) in SYSTEMS.items():
        m = factory(args.n)
        p = sens.Problem(m, times=times, t0=0.0, wrt=wrt, solver="kvaerno5", rtol=1e-6, atol=1e-8,
                         jacobian_reuse=args.reuse)
        adj = p.replace(wrt=list(p.input_names) + [f"y0.{s}" for s in m.states])
        tasks = {"simulate": lambda p=p: sens.simulate(p),
                 "forward": lambda p=p: sens.jacobian(p, mode="forward"),
                 "adjoint": lambda a=adj: sens.gradient(a, objective, mode="adjoint")}
        for key, call in tasks.items():
            start = time.perf_counter()
            call()
            first = time.perf_counter() - start
            wall, cpu = [], []
            for _ in range(args.repeats):
                start, start_cpu = time.perf_counter(), time.process_time()
                call()
                wall.append(time.perf_counter() - start)
                cpu.append(time.process_time() - start_cpu)
            print(f"{name} {m.n_states} {key}: first {first:.1f} s, wall {1e3 * statistics.median(wall):.1f} ms, "
                  f"cpu {1e3 * statistics.median(cpu):.1f} ms", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
