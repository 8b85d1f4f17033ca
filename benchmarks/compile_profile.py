"""Where the cold first call of a PEtab problem goes: load, trace, lower, XLA compile, run.

In a fresh process with the disk caches off (SENSITIVITY_NO_DISK_CACHE=1: no stored traced
program, no JAX persistent cache), load one problem and take one gradient (the mode the
cost model picks, or --mode), splitting each compiled program's first call into
    trace    jax.jit(fn).trace(*args): the Python that builds the jaxpr (model rhs, solver loop,
             tangents or the reverse sweep, every condition group and observable)
    lower    .lower(): jaxpr -> StableHLO
    compile  .compile(): XLA's optimisation and code generation
    run      the first execution
with the size of each stage (jaxpr equations, counted through nested jaxprs; StableHLO text
characters; the number of rhs evaluations traced). Wall and CPU seconds both (the machine is
shared: CPU seconds of this process are steadier).

    python benchmarks/compile_profile.py Isensee_JCB2018
    python benchmarks/compile_profile.py Chen_MSB2009 --mode forward
    python benchmarks/compile_profile.py path/to/problem.yaml --what nllh
    python benchmarks/compile_profile.py SalazarCavazos_MBoC2020 --rhs-only
    python benchmarks/compile_profile.py Chen_MSB2009 --structure
    python benchmarks/compile_profile.py Lang_PLOSComputBiol2024 --arrays off   # the rates unrolled
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ["SENSITIVITY_NO_DISK_CACHE"] = "1"
# this folder holds a script named like the `petab` package: keep it off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "petab"


class Clock:
    """Wall and process CPU seconds of a block."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


from sensitivity.core.compile_watch import equations as count_eqns  # noqa: E402


def structure(yaml_path: Path) -> str:
    """The pattern of d rhs / d y of the problem's model as the SBML importer reads it from the
    rate expressions (`SBMLModel.jacobian_pattern`: J_ij may be nonzero when the rate of
    state i reads state j, through assignment rules too; no JAX tracing or compile), with
    `core.sparsity`'s bandwidth, reordering, column colouring and the lean step's choice."""
    import sensitivity as sens
    from sensitivity.core import sparsity
    from sensitivity.solvers import rosenbrock

    m = sens.petab.load(yaml_path).model
    p = m.jacobian_pattern
    if p is None:
        return f"J pattern         {len(m.states)} states: none (the rhs is not the rates' code alone)"
    st = sparsity.analyse(p)
    comp = sparsity.compression(p)
    per_row, per_col = np.bincount(p.rows, minlength=p.n), np.bincount(p.cols, minlength=p.n)
    use = "c JVPs" if rosenbrock.colouring_pays(comp) else f"{p.n} JVPs (colours do not pay)"
    return (f"J pattern         {p.n} states: {p.nnz} nonzeros ({p.density:.1%}), at most {per_row.max()} per row "
            f"and {per_col.max()} per column, bandwidth {st.bandwidth} ({st.reordered_bandwidth} reordered), "
            f"{st.n_colours} colours in natural order, {comp.n_colours} best; the lean step uses {use}")


def problem_yaml(arg: str) -> Path:
    p = Path(arg)
    if p.suffix in (".yaml", ".yml"):
        return p
    folder = DATA / arg
    yamls = sorted(folder.glob("*.yaml"))
    pick = [y for y in yamls if y.stem == folder.name] or [y for y in yamls if y.name == "problem.yaml"] or yamls
    return pick[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("problem", help="a folder name in ../shared/petab or a PEtab YAML")
    ap.add_argument("--mode", default="auto", choices=("auto", "forward", "adjoint"))
    ap.add_argument("--what", default="gradient", choices=("gradient", "nllh"))
    ap.add_argument("--scan", default="auto", choices=("auto", "on", "off"),
                    help="the lean loop's stages as a lax.scan (PetabProblem.scan_stages; auto: by model size)")
    ap.add_argument("--arrays", default="rule", choices=("rule", "on", "off"),
                    help="the SBML rates as arrays of monomials: by the importer's rule, always, never")
    ap.add_argument("--rhs-only", action="store_true", help="load, print the rhs's size and stop")
    ap.add_argument("--structure", action="store_true",
                    help="only the rhs Jacobian's pattern from the SBML rates (nonzeros, bandwidth, colours)")
    args = ap.parse_args()
    if args.structure:
        print(structure(problem_yaml(args.problem)))
        return 0

    with Clock() as c_import:
        import jax

        import sensitivity as sens
        from sensitivity.importers import sbml_vector
        from sensitivity.integrate import compiled as compiled_programs
    if args.arrays != "rule":
        sbml_vector.MIN_MONOMIAL_TERMS = 1 if args.arrays == "on" else 10**9
    print(f"import            wall {c_import.wall:7.1f} s  cpu {c_import.cpu:7.1f} s", flush=True)

    rows = []

    def profiled(full, build, call_args):
        model = problem.model
        rhs = model.rhs
        counted = [0]

        def counting_rhs(*a, **k):  # the rhs evaluations the trace inlines
            counted[0] += 1
            return rhs(*a, **k)
        object.__setattr__(model, "rhs", counting_rhs)
        try:
            with Clock() as c_build:
                fn = build()
            with Clock() as c_trace:
                traced = jax.jit(fn).trace(*call_args)
        finally:
            object.__setattr__(model, "rhs", rhs)
        eqns = count_eqns(traced.jaxpr.jaxpr)
        with Clock() as c_lower:
            lowered = traced.lower()
        hlo_chars = len(lowered.as_text())
        with Clock() as c_compile:
            exe = lowered.compile()
        rows.append(dict(program=" ".join(str(k) for k in full[0][-2:]), build=c_build, trace=c_trace,
                         lower=c_lower, compile=c_compile, eqns=eqns, hlo=hlo_chars, rhs=counted[0]))
        return exe, {}

    compiled_programs._trace_or_load_now = profiled

    with Clock() as c_load:
        problem = sens.petab.load(problem_yaml(args.problem))
    problem.scan_stages = {"auto": None, "on": True, "off": False}[args.scan]
    m = problem.model
    n_exp = sum(len(g["members"]) for g in problem._groups)
    print(f"load              wall {c_load.wall:7.1f} s  cpu {c_load.cpu:7.1f} s   ({len(m.states)} states, "
          f"{len(m.parameters)} model parameters, {len(m.rules)} rules, {len(problem.x_names)} estimated, "
          f"{n_exp} experiments in {len(problem._groups)} groups, {len(problem._obs)} observables, "
          f"{len(problem.measurements)} measurements)", flush=True)
    src = getattr(m.rhs, "__code__", None)
    pv = jax.numpy.asarray(m.parameter_values)
    y0, t = m.initial(pv), jax.numpy.zeros(())
    f = lambda y, p: m.rhs(t, y, p, t)  # noqa: E731
    n_rhs = count_eqns(jax.make_jaxpr(f)(y0, pv).jaxpr)
    n_jvp = count_eqns(jax.make_jaxpr(lambda y, p: jax.jvp(f, (y, p), (y, p)))(y0, pv).jaxpr)
    print(f"rhs               {len(src.co_code) if src else '?'} bytes of Python bytecode, {n_rhs} jaxpr equations, "
          f"its JVP {n_jvp}", flush=True)
    if args.rhs_only:
        return 0

    with Clock() as c_first:
        if args.what == "nllh":
            value = problem.nllh()
            mode = "nllh"
        else:
            g = problem.gradient(mode=args.mode)
            value, mode = g.value, g.mode
    with Clock() as c_second:
        problem.nllh() if args.what == "nllh" else problem.gradient(mode=args.mode)

    for r in rows:
        for stage in ("build", "trace", "lower", "compile"):
            c = r[stage]
            print(f"  {r['program']:28s} {stage:8s} wall {c.wall:7.1f} s  cpu {c.cpu:7.1f} s", flush=True)
        print(f"  {r['program']:28s} jaxpr {r['eqns']} equations (nested), StableHLO {r['hlo'] / 1e6:.2f} M chars, "
              f"{r['rhs']} rhs evaluations traced")
    print(f"stages            {'scan' if problem._scan() else 'unrolled'}")
    print(f"first call ({mode}) wall {c_first.wall:7.1f} s  cpu {c_first.cpu:7.1f} s   value {value:.6g}")
    print(f"second call       wall {c_second.wall:7.3f} s  cpu {c_second.cpu:7.3f} s")
    print(f"cold total        wall {c_import.wall + c_load.wall + c_first.wall:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
