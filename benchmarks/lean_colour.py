"""The lean Rodas5P step's Jacobian from a column colouring (c JVPs) against n JVPs, and the
SBML rates as arrays of monomials (`importers.sbml_vector`) against the unrolled code.

    python benchmarks/lean_colour.py steps [--problems A,B,...]
    python benchmarks/lean_colour.py calls [--problems A,B,...] [--repeats 7]
    python benchmarks/lean_colour.py calls --compare arrays [--problems A,B,...]

`steps` (the rule `rosenbrock.colouring_pays`): per problem of `../shared/petab`, in one
process, the model's symbolic pattern (`SBMLModel.jacobian_pattern`) and its colours c, and
CPU microseconds per step of a loop of 50 bare `rosenbrock.lean_step` calls (first
experiment, nominal parameters, from y0, a step size that changes every step, the
problem's choice of scanned or unrolled stages) with J from n JVPs and from the c JVPs of the colouring (forced, whatever
the rule says), interleaved, medians of 7 rounds; and the same for one step with a forward
tangent in all the state directions (what a forward gradient adds).

`calls` (the PEtab pipeline before and after): per problem, fresh processes alternately
with the colouring off (`lean_rodas.COLOURING = False`: n JVPs) and on (the rule's
choice), two of each, the store of traced programs off (it does not tell the two apart):
load, the first nllh (compile), then the median of `--repeats` warm calls of `nllh()` and of
`gradient()` (mode auto), CPU seconds of the process (`time.process_time`) and wall; the
nllh values to 17 digits. `--compare arrays`: the same with the rates unrolled
(`sbml_vector.MIN_MONOMIAL_TERMS` out of reach) and as arrays (forced, whatever the model's
size), the colouring the rule's choice in both.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# this folder holds petab.py, named like the `petab` package: keep it off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "petab"
STEPS = "Boehm_JProteomeRes2014,Isensee_JCB2018,Laske_PLOSComputBiol2019,Alkan_SciSignal2018," \
        "SalazarCavazos_MBoC2020,Lang_PLOSComputBiol2024"
CALLS = "Laske_PLOSComputBiol2019,Alkan_SciSignal2018"


def _cpu(call, rounds: int = 7, calls: int = 20) -> float:
    """Median over rounds of the CPU seconds per call."""
    import jax

    jax.block_until_ready(call())
    out = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(calls):
            jax.block_until_ready(call())
        out.append((time.process_time() - start) / calls)
    return statistics.median(out)


def steps(name: str, with_tangents: bool = True) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import sensitivity as sens
    from sensitivity.core import sparsity
    from sensitivity.solvers import rosenbrock

    prob = sens.petab.load(DATA / name / f"{name}.yaml")
    m = prob.model
    comp = sparsity.compression(m.jacobian_pattern)
    scan = prob._scan()
    theta = prob.theta(prob.x_nominal)
    g = prob._groups[0]
    p_ref, p_const = g["sim"][0][0], g["sim"][1][0]
    pv = jnp.where(p_ref >= 0, theta[np.maximum(p_ref, 0)], p_const)
    y0 = m.initial(pv)
    ts = jnp.asarray(g["ts"][0])
    args = (pv, ts[-1])
    tab = rosenbrock.TABLEAUS["rodas5p"]

    def f(t, y, a):
        return m.rhs(t, y, a[0], a[1])

    n_steps = 50

    def bare(c):
        def run(y, h):
            def body(i, y):
                y_new, _ = rosenbrock.lean_step(f, 0.0, y, h * (1.0 + 1e-9 * i), args, False, tab, scan=scan,
                                                compression=c)
                return y + 1e-12 * (y_new - y)  # a dependence on each step, the state barely moves
            return jax.lax.fori_loop(0, n_steps, body, y)
        return jax.jit(run)

    def tangent(c):  # one step with its forward tangent in every state direction
        def run(y, h):
            one = lambda y_: rosenbrock.lean_step(f, 0.0, y_, h, args, False, tab, scan=scan,  # noqa: E731
                                                  compression=c)[0]
            return jax.vmap(lambda v: jax.jvp(one, (y,), (v,))[1])(jnp.eye(y.shape[0]))
        return jax.jit(run)

    loops = {"dense": bare(None), "colour": bare(comp)}
    tangents = {"dense": tangent(None), "colour": tangent(comp)} if with_tangents else {}
    out = {k: [] for k in ("dense", "colour", "t dense", "t colour")}
    for _ in range(3):
        for k in ("dense", "colour"):
            out[k].append(_cpu(lambda k=k: loops[k](y0, 0.01), rounds=3, calls=3) / n_steps)
            if with_tangents:
                out["t " + k].append(_cpu(lambda k=k: tangents[k](y0, 0.01), rounds=3, calls=3))
    res = {k: statistics.median(v) * 1e6 if v else float("nan") for k, v in out.items()}
    res.update(name=name, n=comp.n, c=comp.n_colours, nnz=int(m.jacobian_pattern.nnz), scan=scan,
               pays=rosenbrock.colouring_pays(comp))
    return res


def calls_child(name: str, colour: bool, repeats: int, arrays: bool | None = None) -> dict:
    """One process: load, first nllh, warm nllh and gradient (see the module docstring);
    arrays: the rates as arrays always (True), never (False), or by the importer's rule."""
    import numpy as np

    import sensitivity as sens
    from sensitivity.importers import sbml_vector
    from sensitivity.solvers import lean_rodas

    lean_rodas.COLOURING = colour
    if arrays is not None:
        sbml_vector.MIN_MONOMIAL_TERMS = 1 if arrays else 10**9
    prob = sens.petab.load(DATA / name / f"{name}.yaml")
    comp = lean_rodas.compression(prob.model)
    c0 = time.process_time()
    value = prob.nllh()
    first = time.process_time() - c0
    g = prob.gradient()
    out = {"colours": None if comp is None else comp.n_colours, "n": len(prob.model.states), "nllh": value,
           "arrays": prob.model.rate_arrays is not None,
           "first nllh cpu": first, "mode": g.mode, "grad": np.asarray(g.grad).tolist()}
    for what, call in (("nllh", prob.nllh), ("gradient", prob.gradient)):
        cpu, wall = [], []
        for _ in range(repeats):
            c, w = time.process_time(), time.perf_counter()
            call()
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - w)
        out[what + " cpu"], out[what + " wall"] = statistics.median(cpu), statistics.median(wall)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("steps", "calls", "_child"))
    ap.add_argument("--problems", default=None)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--colour", default="on", choices=("on", "off"))
    ap.add_argument("--arrays", default="rule", choices=("on", "off", "rule"))
    ap.add_argument("--compare", default="colouring", choices=("colouring", "arrays"),
                    help="calls: what the off and on processes switch")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--no-tangents", action="store_true", help="steps: without the step + n tangents column")
    args = ap.parse_args(argv)
    if args.what == "_child":
        arrays = None if args.arrays == "rule" else args.arrays == "on"
        print(json.dumps(calls_child(args.problems, args.colour == "on", args.repeats, arrays)))
        return 0
    print(f"1-minute load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores\n")
    if args.what == "steps":
        print("| problem | states | nonzeros | colours | stages | CPU us/step: n JVPs | c JVPs | ratio "
              "| step + n tangents (ms): n JVPs | c JVPs | the rule says |")
        print("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |")
        for name in (args.problems or STEPS).split(","):
            r = steps(name, not args.no_tangents)
            print(f"| {name} | {r['n']} | {r['nnz']} | {r['c']} | {'scan' if r['scan'] else 'unrolled'} "
                  f"| {r['dense']:.1f} | {r['colour']:.1f} | {r['dense'] / r['colour']:.2f}x "
                  f"| {r['t dense'] / 1e3:.2f} | {r['t colour'] / 1e3:.2f} | {'c' if r['pays'] else 'n'} JVPs |",
                  flush=True)
        return 0
    env = dict(os.environ, SENSITIVITY_NO_EXPORT_STORE="1")
    switch = "--colour" if args.compare == "colouring" else "--arrays"
    print("| problem | states | colours | J | rates | nllh | first nllh CPU s | warm nllh CPU s | wall s "
          "| gradient (mode) CPU s | wall s |")
    print("| --- | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name in (args.problems or CALLS).split(","):
        runs = []
        for colour in ("off", "on", "off", "on"):
            cmd = [sys.executable, __file__, "_child", "--problems", name, switch, colour,
                   "--repeats", str(args.repeats)]
            try:
                done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
                r = json.loads(done.stdout.strip().splitlines()[-1])
            except (subprocess.TimeoutExpired, IndexError, json.JSONDecodeError) as exc:
                print(f"| {name} | {colour}: failed ({type(exc).__name__}) |", flush=True)
                continue
            runs.append((colour, r))
            rates = "arrays" if r["arrays"] else "unrolled"
            print(f"| {name} | {r['n']} | {r['colours'] or '-'} | {'c' if r['colours'] else 'n'} JVPs | {rates} "
                  f"| {r['nllh']:.17g} | {r['first nllh cpu']:.2f} | {r['nllh cpu']:.4f} | {r['nllh wall']:.4f} "
                  f"| {r['gradient cpu']:.4f} ({r['mode']}) | {r['gradient wall']:.4f} |", flush=True)
        if len({c for c, _ in runs}) == 2:
            import numpy as np

            ref = [r for c, r in runs if c == "off"][0]
            for c, r in runs:
                dv = abs(r["nllh"] - ref["nllh"]) / abs(ref["nllh"])
                dg = np.max(np.abs(np.subtract(r["grad"], ref["grad"]))) / np.max(np.abs(ref["grad"]))
                print(f"|  | {args.compare} {c}: nllh relative difference {dv:.1e}, gradient {dg:.1e} (max over entries "
                      "/ largest entry) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
