"""Per-call overhead: the toolkit's calls against the same computation written in diffrax.

Both run in one process, interleaved call by call (so a loaded machine slows both alike),
after each has compiled; the table gives medians and the ratio toolkit / hand-written.
Compare ratios within one run: absolute times move with the machine's load.

    python benchmarks/overhead.py [--quick]

Cases (the hand-written side is a `jax.jit` of `diffrax.diffeqsolve` with the same solver,
tolerances, save times, max_steps and adjoint, called on arrays already on the device):

- Lotka-Volterra (2 states, 4 parameters, 1000 save times in [0, 15], Tsit5, 1e-8):
  simulate; forward Jacobian (jacfwd through ForwardMode); adjoint gradient of a sum of
  squares (grad through RecursiveCheckpointAdjoint); the same gradient with mode="auto",
  repeated, against the toolkit's own call forced to the mode auto chose.
- The same simulate on a second time grid: the toolkit compiles the first save times a
  structure meets in as constants and runs any other grid through one general program
  taking them as an array; the hand-written side here takes them as an array too.
- Neural ODE (8 states, 1096 weights, 100 save times in [0, 5], Tsit5, 1e-6): simulate
  and the adjoint gradient with respect to every weight.

With --sync-dispatch both sides run with JAX's `jax_cpu_enable_async_dispatch=False`
(every CPU program on the calling thread): XLA's CPU client otherwise runs a program on a
worker thread unless its cost analysis counts fewer than 1000 flops. The hand-written
solve, with its save times compiled in as constants, stays under that count and runs inline;
so does the toolkit's simulate, which compiles the first save times and tolerances a
structure meets in as constants too (`solve.run_checked`) and checks finiteness on the host.
The option shows what the hand-off costs the programs above the count (Jacobians,
gradients); it writes overhead_sync[_quick].md and .png.

Prints the table and writes benchmarks/results/overhead.md and overhead.png.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import date
from pathlib import Path

# isort: off
import sensitivity as sens  # first: its EQX_ON_ERROR=nan then holds for the hand-written side too
from sensitivity import models
import diffrax
import jax
import jax.numpy as jnp
import numpy as np
# isort: on

sys.path.insert(0, str(Path(__file__).parent))
from mode_choice import RESULTS, make_model  # noqa: E402


def _solve(rhs, t1, times, rtol, atol, adjoint, max_steps=100_000):
    """Hand-written: (params, y0) -> ys (n_times, n_states), diffrax only."""
    t0 = float(times[0])
    times = jnp.asarray(times)
    term = diffrax.ODETerm(rhs)
    solver = diffrax.Tsit5()
    controller = diffrax.PIDController(rtol=rtol, atol=atol)
    saveat = diffrax.SaveAt(ts=times)

    def solve(params, y0):
        return diffrax.diffeqsolve(term, solver, t0, t1, None, y0, params, saveat=saveat,
                                   stepsize_controller=controller, max_steps=max_steps,
                                   adjoint=adjoint, throw=False).ys
    return solve


def _solve_times_given(rhs, rtol, atol, max_steps=100_000):
    """Hand-written: (params, y0, times) -> ys, the save times an array argument."""
    term = diffrax.ODETerm(rhs)
    controller = diffrax.PIDController(rtol=rtol, atol=atol)

    def solve(params, y0, times):
        return diffrax.diffeqsolve(term, diffrax.Tsit5(), times[0], times[-1], None, y0, params,
                                   saveat=diffrax.SaveAt(ts=times), stepsize_controller=controller,
                                   max_steps=max_steps, throw=False).ys
    return solve


def lv_loss(ys):
    return jnp.sum(ys ** 2) / ys.shape[0]


def lv_cases(n_times: int):
    times = np.linspace(0.0, 15.0, n_times)
    model = models.get("lotka_volterra")
    prob = sens.Problem(model, times, wrt=["alpha", "beta", "gamma", "delta"], of=["prey", "predator"])
    params = {k: jnp.asarray(v) for k, v in prob.parameters.items()}
    y0 = jnp.asarray(prob.y0)
    ts = times
    rhs = models.lotka_volterra.rhs
    plain = _solve(rhs, 15.0, ts, 1e-8, 1e-8, diffrax.RecursiveCheckpointAdjoint())
    fwd = _solve(rhs, 15.0, ts, 1e-8, 1e-8, diffrax.ForwardMode())

    simulate = jax.jit(plain)
    jac = jax.jit(jax.jacfwd(fwd))
    grad = jax.jit(jax.value_and_grad(lambda p, y: lv_loss(plain(p, y))))
    auto_mode = sens.gradient(prob, lv_loss, mode="auto").mode
    sens.simulate(prob)  # its times are the first this structure meets: they are compiled in
    other = prob.replace(times=np.linspace(0.0, 12.0, n_times))
    other_times = jnp.asarray(other.times)
    simulate_times_given = jax.jit(_solve_times_given(rhs, 1e-8, 1e-8))
    return [
        ("Lotka-Volterra simulate (4 params, %d saves)" % n_times,
         lambda: sens.simulate(prob), lambda: simulate(params, y0)),
        ("the same on a second time grid (times as an array on both sides)",
         lambda: sens.simulate(other), lambda: simulate_times_given(params, y0, other_times)),
        ("Lotka-Volterra forward Jacobian",
         lambda: sens.jacobian(prob, mode="forward"), lambda: jac(params, y0)),
        ("Lotka-Volterra adjoint gradient",
         lambda: sens.gradient(prob, lv_loss, mode="adjoint"), lambda: grad(params, y0)),
        (f"LV gradient, mode=\"auto\" vs forced {auto_mode} (toolkit both)",
         lambda: sens.gradient(prob, lv_loss, mode="auto"),
         lambda: sens.gradient(prob, lv_loss, mode=auto_mode)),
    ]


def neural_cases(n_times: int):
    model = make_model(False)
    times = np.linspace(0.0, 5.0, n_times)
    prob = sens.Problem(model, times, wrt=list(model.parameters), rtol=1e-6, atol=1e-6)
    params = {k: jnp.asarray(v) for k, v in prob.parameters.items()}
    y0 = jnp.asarray(prob.y0)
    ts = times
    plain = _solve(model.rhs, 5.0, ts, 1e-6, 1e-6, diffrax.RecursiveCheckpointAdjoint())
    simulate = jax.jit(plain)
    grad = jax.jit(jax.value_and_grad(lambda p, y: lv_loss(plain(p, y))))
    return [
        (f"neural ODE simulate ({prob.n_inputs} weights, {n_times} saves)",
         lambda: sens.simulate(prob), lambda: simulate(params, y0)),
        ("neural ODE adjoint gradient",
         lambda: sens.gradient(prob, lv_loss, mode="adjoint"), lambda: grad(params, y0)),
    ]


def interleaved(toolkit, baseline, calls: int) -> tuple[float, float]:
    """Median seconds of `calls` calls of each, alternating, after two warm-up calls each."""
    for _ in range(2):
        toolkit()
        jax.block_until_ready(baseline())
    t_times, b_times = [], []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(baseline())
        b_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        toolkit()
        t_times.append(time.perf_counter() - start)
    return statistics.median(b_times), statistics.median(t_times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few calls, small problems (a smoke test)")
    ap.add_argument("--sync-dispatch", action="store_true",
                    help="run every CPU program on the calling thread (jax_cpu_enable_async_dispatch=False)")
    args = ap.parse_args(argv)
    if args.sync_dispatch:  # before the first JAX operation creates the CPU client
        jax.config.update("jax_cpu_enable_async_dispatch", False)
    calls = 10 if args.quick else 200
    cases = lv_cases(100 if args.quick else 1000) + neural_cases(20 if args.quick else 100)
    rows = []
    for label, toolkit, baseline in cases:
        b, t = interleaved(toolkit, baseline, calls)
        rows.append((label, b, t))
        print(f"{label}: done", file=sys.stderr, flush=True)
    lines = ["| call | hand-written diffrax ms | toolkit ms | ratio |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {label} | {b * 1e3:.3g} | {t * 1e3:.3g} | {t / b:.2f}x |" for label, b, t in rows]
    text = "\n".join(lines)
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.5 * len(rows)))
    ax.barh(range(len(rows)), [t / b for _, b, t in rows], color="tab:blue")
    ax.axvline(1.0, color="k", lw=1)
    ax.axvline(1.3, color="tab:red", lw=1, ls="--", label="target 1.3x")
    ax.set_yticks(range(len(rows)), [label for label, _, _ in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("toolkit / hand-written (median per call)")
    ax.set_title("Per-call overhead" + (" (quick)" if args.quick else "")
                 + (", synchronous dispatch" if args.sync_dispatch else ""))
    ax.legend(loc="lower right")
    fig.tight_layout()
    RESULTS.mkdir(exist_ok=True)
    suffix = ("_sync" if args.sync_dispatch else "") + ("_quick" if args.quick else "")
    fig.savefig(RESULTS / f"overhead{suffix}.png", dpi=120)
    (RESULTS / f"overhead{suffix}.md").write_text(
        f"# Per-call overhead against hand-written diffrax\n\nWritten by `python benchmarks/overhead.py"
        f"{' --quick' if args.quick else ''}{' --sync-dispatch' if args.sync_dispatch else ''}` on {date.today().isoformat()}: medians of {calls} "
        f"interleaved calls after compiling.\n\n{text}\n\n![ratios](overhead{suffix}.png)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
