"""PEtab benchmark collection: our gradients beside AMICI's, measured in the same run.

    python benchmarks/petab.py --amici                     # every problem in ../shared/petab
    python benchmarks/petab.py --amici --problems Boehm_JProteomeRes2014,Perelson_Science1996
    python benchmarks/petab.py --amici path/to/problem.yaml  # the collection and this problem
    python benchmarks/petab.py --no-collection path/to/problem.yaml --repeats 1

Without `--amici` only our side runs. AMICI is an optional extra (`pip install -e ".[amici]"`:
AMICI builds its C++ with swig, cmake and a bundled OpenBLAS from PyPI, and a C++ compiler).

Every problem runs in fresh subprocesses with a timeout (`--timeout`), so a problem that is
slow or crashes costs its own row only:

- ours, cold: a process with an empty cache folder (XDG_CACHE_HOME: JAX's persistent
  compilation cache and the toolkit's stores start empty) times `import sensitivity`,
  `sens.petab.load`, and the first `gradient()` (mode `auto`: trace, compile, one gradient);
- ours, warm: a second process on the same cache folder times the same first call, then
  the first `nllh()` (its compile), and the median of `--repeats` calls of `nllh()` and of
  `gradient()` (and of the modes in `--modes`);
- AMICI (`--amici`): a process builds the model into an empty folder (SBML import, code
  generation, C++ compile: the build time), prepares the `ExpData` of every condition at
  the nominal parameters (`simulate_petab`), and times `run_simulations` on them: no
  sensitivities, forward sensitivities, adjoint sensitivities, median of `--repeats`,
  likelihood-only return data, one thread. CVODES's step counts come from the `ReturnData`.

Both tools run at rtol = atol = `--rtol`/`--atol` (1e-8) with at most 100000 steps, on the
parameters' nominal values; gradients are on the parameter scale (AMICI's
`scaled_gradients=True`). Checks: |our nllh - AMICI's -llh| and the largest relative
difference between our gradient and AMICI's forward gradient (for each parameter
|g - g_amici| / max(|g_amici|, 1e-3 max_j |g_amici_j|): a parameter whose gradient is below
1e-3 of the largest is compared on that floor).

With `--modes auto,forward,adjoint` a third table sets our forward and adjoint gradients
beside the `auto` one (which mode the cost model should have picked).

It prints the tables, writes `<out>/petab.md`, `petab.json` and `petab_ratios.png` (AMICI's
faster gradient / ours over states x parameters; with `--amici`). `--out` (default
benchmarks/results) lets a check run write elsewhere.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

# this script is named like the `petab` package: keep its folder off the import path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "petab"
MAX_STEPS = 100_000
# problem name -> (rtol, atol) where a problem needs other tolerances than --rtol/--atol
TOLERANCES: dict[str, tuple[float, float]] = {}


def _median_time(call, repeats: int, out: dict | None = None, key: str = "") -> float:
    """Median wall time of `repeats` calls (s); the caller has made one call before. With
    `out`, the fastest call goes to out[key + "_min"] (median far above it: a busy machine)."""
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    if out is not None:
        out[key + "_min"] = min(times)
    return statistics.median(times)


# ---------------------------------------------------------------------------- our side
def ours(path: str, repeats: int, rtol: float, atol: float, first_only: bool, modes: list[str]) -> dict:
    """One process of our side; times in s. The first call: import, load, first gradient."""
    t0 = time.perf_counter()
    import numpy as np

    import sensitivity as sens
    t_import = time.perf_counter() - t0
    t1 = time.perf_counter()
    prob = sens.petab.load(path, rtol=rtol, atol=atol, max_steps=MAX_STEPS)
    t_load = time.perf_counter() - t1
    t1 = time.perf_counter()
    g = prob.gradient()
    t_grad = time.perf_counter() - t1
    out = {"import_s": t_import, "load_s": t_load, "first_gradient_s": t_grad,
           "first_call_s": time.perf_counter() - t0,
           "n_states": len(prob.model.states), "n_parameters": len(prob.x_names),
           "n_conditions": len(prob.experiments), "n_measurements": len(prob.measurements)}
    if first_only:
        return out
    t1 = time.perf_counter()
    value = prob.nllh()
    out["nllh_first_s"] = time.perf_counter() - t1
    out["nllh"] = value
    out["nllh_s"] = _median_time(prob.nllh, repeats, out, "nllh_s")
    out["auto_mode"] = g.mode
    out["auto_s"] = _median_time(prob.gradient, repeats, out, "auto_s")
    out["auto_run_s"] = prob.gradient().timings["run"]  # the executable alone, one call
    out["x_names"] = list(prob.x_names)
    out["grad"] = {"auto": np.asarray(g.grad).tolist()}
    for mode in modes:
        if mode == "auto":
            continue
        t1 = time.perf_counter()
        gm = prob.gradient(mode=mode)
        out[f"{mode}_first_s"] = time.perf_counter() - t1
        out[f"{mode}_s"] = _median_time(lambda: prob.gradient(mode=mode), repeats, out, f"{mode}_s")
        out["grad"][mode] = np.asarray(gm.grad).tolist()
    out["steps"] = _our_steps(prob)
    return out


def _our_steps(prob):
    """Accepted steps of one nllh solve over all conditions (None if the internals moved):
    the same compiled program as `nllh()`, so nothing new is compiled."""
    try:
        x = prob._check_x(None)
        (_, (aux, _)), _ = prob._run(("nllh",), lambda: prob._nllh_fn("checkpoint"), x)
        return int(aux["steps"])
    except Exception:
        return None


# ---------------------------------------------------------------------------- AMICI
def amici_side(path: str, repeats: int, rtol: float, atol: float) -> dict:
    """One process of AMICI's side; times in s."""
    import logging

    import numpy as np
    import petab.v1 as petab

    t0 = time.perf_counter()
    import amici
    import amici.sim.sundials as asd
    from amici.importers.petab.v1 import import_petab_problem
    from amici.sim.sundials.petab.v1 import EDATAS, LLH, RDATAS, SLLH, simulate_petab
    t_import = time.perf_counter() - t0
    logging.getLogger("amici").setLevel(logging.WARNING)
    problem = petab.Problem.from_yaml(path)
    if petab.lint.measurement_table_has_timepoint_specific_mappings(problem.measurement_df):
        petab.flatten_timepoint_specific_output_overrides(problem)  # AMICI's import needs it
    name = "".join(c if c.isalnum() else "_" for c in Path(path).parent.name) or "model"
    with tempfile.TemporaryDirectory(prefix="amici-build-") as folder:
        t0 = time.perf_counter()
        model = import_petab_problem(problem, output_dir=Path(folder) / name, model_name=name, compile_=True,
                                     verbose=logging.WARNING)
        t_build = time.perf_counter() - t0
        solver = model.create_solver()
        solver.set_relative_tolerance(rtol)
        solver.set_absolute_tolerance(atol)
        solver.set_max_steps(MAX_STEPS)
        out = {"version": amici.__version__, "import_s": t_import, "build_s": t_build,
               "n_states": int(model.nx_rdata), "n_parameters": len(problem.x_free_ids)}

        def timed(key):
            """Median of run_simulations on the prepared ExpData, likelihood-only return data."""
            solver.set_return_data_reporting_mode(asd.RDataReporting.likelihood)
            return _median_time(lambda: asd.run_simulations(model, solver, edatas), repeats, out, key)

        def run(order, method):
            solver.set_sensitivity_order(order)
            if method is not None:
                solver.set_sensitivity_method(method)
            solver.set_return_data_reporting_mode(asd.RDataReporting.full)  # with the step counts
            r = simulate_petab(problem, amici_model=model, solver=solver, edatas=out.get("_edatas"),
                               scaled_parameters=True, scaled_gradients=True, log_level=logging.WARNING)
            bad = [asd.simulation_status_to_str(rd.status) for rd in r[RDATAS] if rd.status != asd.AMICI_SUCCESS]
            if bad:
                raise RuntimeError(f"AMICI simulation failed: {bad[0]} ({len(bad)} of {len(r[RDATAS])} conditions)")
            out["_edatas"] = r[EDATAS]
            return r

        r = run(asd.SensitivityOrder.none, None)
        edatas = out["_edatas"]
        out["n_conditions"] = len(edatas)
        out["llh"] = float(r[LLH])
        out["sim_s"] = timed("sim_s")
        out["steps_sim"] = _cvodes_steps(r[RDATAS])
        for label, method in (("forward", asd.SensitivityMethod.forward), ("adjoint", asd.SensitivityMethod.adjoint)):
            r = run(asd.SensitivityOrder.first, method)
            out[f"{label}_s"] = timed(f"{label}_s")
            out[f"grad_{label}"] = {k: -float(v) for k, v in r[SLLH].items()}  # of nllh = -llh
            out[f"llh_{label}"] = float(r[LLH])
            out[f"steps_{label}"] = _cvodes_steps(r[RDATAS])
        out.pop("_edatas")
        out["fwd_vs_adj"] = _grad_diff([out["grad_adjoint"][k] for k in out["grad_forward"]],
                                       np.array(list(out["grad_forward"].values())))
    return out


def _cvodes_steps(rdatas) -> dict:
    """CVODES's steps summed over the conditions: forward (numsteps is cumulative over the
    output times), backward, and pre-/post-equilibration (None where the return data do
    not have them)."""
    import numpy as np

    def total(attr, how):
        vals = [getattr(rd, attr, None) for rd in rdatas]
        if any(v is None for v in vals):
            return None
        return sum(int(how(np.asarray(v))) if np.size(v) else 0 for v in vals)

    eq = [total("preeq_numsteps", np.sum), total("posteq_numsteps", np.sum)]
    return {"forward": total("numsteps", np.max), "backward": total("numsteps_b", np.max),
            "equilibration": None if None in eq else sum(eq)}


def _grad_diff(g, ref) -> float:
    """max_i |g_i - ref_i| / max(|ref_i|, 1e-3 max_j |ref_j|)."""
    import numpy as np
    g, ref = np.asarray(g, dtype=float), np.asarray(ref, dtype=float)
    floor = max(1e-3 * float(np.max(np.abs(ref))), 1e-300)
    return float(np.max(np.abs(g - ref) / np.maximum(np.abs(ref), floor)))


# ---------------------------------------------------------------------------- driver
def _problems(args) -> list[tuple[str, Path]]:
    found = []
    if not args.no_collection and DATA.is_dir():
        for folder in sorted(p for p in DATA.iterdir() if p.is_dir()):
            yamls = sorted(folder.glob("*.yaml"))
            pick = [y for y in yamls if y.stem == folder.name] or [y for y in yamls if y.name == "problem.yaml"] \
                or (yamls if len(yamls) == 1 else [])
            found.append((folder.name, pick[0] if pick else folder))
    for given in args.yamls:
        p = Path(given).resolve()
        found.append((p.parent.name if p.stem in ("problem", "petab") else p.stem, p))
    if args.problems:
        wanted = [s.strip() for s in args.problems.split(",") if s.strip()]
        unknown = [w for w in wanted if w not in {n for n, _ in found}]
        if unknown:
            raise SystemExit(f"--problems: {', '.join(unknown)} not found (in {DATA} or the given paths)")
        found = [(n, p) for n, p in found if n in wanted]
    return found


def _child(argv: list[str], timeout: float, env: dict | None = None) -> dict:
    """Run this script as a child; its last 'RESULT {json}' line, or {"error": ...}.
    The child gets its own process group, so a timeout also ends what it started (AMICI's
    compiler)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": f"timeout after {timeout:.0f} s", "wall_s": time.perf_counter() - t0}
    wall = time.perf_counter() - t0
    line = next((x for x in reversed(stdout.splitlines()) if x.startswith("RESULT ")), None)
    if line is None:
        tail = [x for x in stderr.strip().splitlines() if x.strip()][-1:] or [f"exit code {proc.returncode}"]
        return {"error": f"crashed: {tail[0][:300]}", "wall_s": wall}
    out = json.loads(line[len("RESULT "):])
    out["wall_s"] = wall
    return out


def _child_main(args) -> int:
    kind, path = args.child
    rtol, atol = args.rtol, args.atol
    try:
        if kind == "amici":
            out = amici_side(path, args.repeats, rtol, atol)
        else:
            out = ours(path, args.repeats, rtol, atol, kind == "ours-first",
                       [m for m in args.modes.split(",") if m])
    except Exception as exc:  # noqa: BLE001 -- reported as the problem's reason
        text = str(exc).strip().splitlines()
        where = traceback.extract_tb(exc.__traceback__)[-1]
        out = {"error": f"{type(exc).__name__}: {(text[0] if text else '')[:300]} "
                        f"({Path(where.filename).name}:{where.lineno})"}
    print("RESULT " + json.dumps(out), flush=True)
    return 0


def measure(name: str, path: Path, args) -> dict:
    """Both tools on one problem, each step in its own subprocess."""
    row: dict = {"problem": name, "path": str(path)}
    rtol, atol = TOLERANCES.get(name, (args.rtol, args.atol))
    row["rtol"], row["atol"] = rtol, atol
    common = ["--repeats", str(args.repeats), "--rtol", repr(rtol), "--atol", repr(atol), "--modes", args.modes]
    if not path.is_file():
        row["ours"] = row["amici"] = {"error": "no PEtab YAML found in the folder"}
        return row
    cache = tempfile.mkdtemp(prefix="petab-bench-cache-")
    try:
        env = {k: v for k, v in os.environ.items() if k != "SENSITIVITY_NO_DISK_CACHE"}
        # an empty cache folder: JAX's compilation cache and the toolkit's stores; matplotlib
        # keeps its own folder (a font cache rebuild is no part of our first call)
        env.setdefault("MPLCONFIGDIR", str(Path.home() / ".cache" / "matplotlib"))
        env["XDG_CACHE_HOME"] = cache
        cold = _child(["--child", "ours-first", str(path), *common], args.timeout, env)
        row["ours_cold"] = cold
        row["ours"] = _child(["--child", "ours", str(path), *common], args.timeout, env) \
            if "error" not in cold else {"error": cold["error"]}
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    if args.amici:
        row["amici"] = _child(["--child", "amici", str(path), *common], args.timeout)
    return row


def _fmt_ms(s):
    return "-" if s is None else f"{s * 1e3:,.1f}" if s < 10 else f"{s * 1e3:,.0f}"


def _summary(row: dict) -> dict:
    """The derived figures of one row: sizes, ratio, checks."""
    import numpy as np
    o, a = row.get("ours", {}), row.get("amici", {}) or {}
    ok_o, ok_a = "error" not in o, bool(a) and "error" not in a
    src = o if ok_o else a if ok_a else {}
    s = {"sizes": (src.get("n_states"), src.get("n_parameters"), src.get("n_conditions"))}
    if ok_o and ok_a:
        best = min(a["forward_s"], a["adjoint_s"])
        s["ratio"] = best / o["auto_s"]
        s["nllh_diff"] = abs(o["nllh"] + a["llh"])
        ref = a["grad_forward"]
        common = [k for k in o["x_names"] if k in ref]
        if common and len(common) == len(o["x_names"]):
            g = np.asarray(o["grad"]["auto"])[[o["x_names"].index(k) for k in common]]
            s["grad_diff"] = _grad_diff(g, [ref[k] for k in common])
        else:
            s["grad_diff"] = None
    return s


def report(rows: list[dict], args, load: list[float], seconds: float) -> str:
    """The markdown of the run: the main table, the second table, the problems not loaded."""
    for r in rows:
        r["summary"] = _summary(r)

    def size_key(r):
        n = r["summary"]["sizes"]
        return (n[0] or 0) * (n[1] or 0) if None not in n[:2] else float("inf")

    rows = sorted(rows, key=size_key)
    head = ("| problem | states / parameters / conditions | ours ms [mode] | AMICI forward ms | AMICI adjoint ms "
            "| AMICI best / ours | our first call s, cold (warm) | AMICI build s | nllh diff | grad diff |")
    lines = [head, "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        o, c, a, s = r.get("ours", {}), r.get("ours_cold", {}), r.get("amici") or {}, r["summary"]
        if "error" in o and ("error" in a or not a):
            continue
        sizes = " / ".join("?" if v is None else str(v) for v in s["sizes"])
        ours_ms = f"{_fmt_ms(o['auto_s'])} [{o['auto_mode']}]" if "error" not in o else "not loaded"
        am = "error" not in a and bool(a)
        lines.append(
            f"| {r['problem']} | {sizes} | {ours_ms} | {_fmt_ms(a['forward_s']) if am else '-'} | "
            f"{_fmt_ms(a['adjoint_s']) if am else '-'} | "
            f"{'**%.2fx**' % s['ratio'] if 'ratio' in s else '-'} | "
            f"{'%.1f (%.1f)' % (c['first_call_s'], o['first_call_s']) if 'error' not in o else '-'} | "
            f"{'%.1f' % a['build_s'] if am else '-'} | "
            f"{'%.1e' % s['nllh_diff'] if 'nllh_diff' in s else '-'} | "
            f"{'%.1e' % s['grad_diff'] if s.get('grad_diff') is not None else '-'} |")
    head2 = ("| problem | ours nllh ms | AMICI simulation ms | our steps (nllh) | CVODES steps: simulation, "
             "forward sens., adjoint fwd + bwd | our compile s: nllh, first gradient | import + load s |")
    lines2 = [head2, "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        o, c, a = r.get("ours", {}), r.get("ours_cold", {}), r.get("amici") or {}
        if "error" in o and ("error" in a or not a):
            continue
        am = bool(a) and "error" not in a
        ok = "error" not in o
        cv = "-"
        if am:
            st = [a["steps_sim"], a["steps_forward"], a["steps_adjoint"]]
            fw = [(x["forward"] or 0) + (x["equilibration"] or 0) for x in st]
            cv = f"{fw[0]:,}, {fw[1]:,}, {fw[2]:,} + {st[2]['backward'] or 0:,}"
        lines2.append(
            f"| {r['problem']} | {_fmt_ms(o['nllh_s']) if ok else '-'} | {_fmt_ms(a['sim_s']) if am else '-'} | "
            f"{(format(o['steps'], ',') if o.get('steps') is not None else '?') if ok else '-'} | {cv} | "
            f"{'%.1f, %.1f' % (o['nllh_first_s'], c['first_gradient_s']) if ok else '-'} | "
            f"{'%.1f' % (c['import_s'] + c['load_s']) if ok else '-'} |")
    missing = []
    for r in rows:
        why = []
        if "error" in r.get("ours", {}):
            why.append(f"ours: {r['ours']['error']}")
        if args.amici and "error" in (r.get("amici") or {}):
            why.append(f"AMICI: {r['amici']['error']}")
        if why:
            missing.append(f"- {r['problem']}: " + "; ".join(why))
    ratios = [r["summary"]["ratio"] for r in rows if "ratio" in r["summary"]]
    cmd = "python benchmarks/petab.py " + " ".join(sys.argv[1:])
    amici_version = next((r["amici"]["version"] for r in rows if "version" in (r.get("amici") or {})), None)
    import jax
    text = [
        "# PEtab benchmark collection: ours beside AMICI",
        "",
        f"Written by `{cmd.strip()}` in {seconds / 60:.0f} min on {platform.machine()}, {os.cpu_count()} cores "
        f"({_cpu_name()}); 1-minute load average {'/'.join(f'{v:.1f}' for v in load)} after each problem. "
        f"jax {jax.__version__}" + (f", AMICI {amici_version}" if amici_version else ", AMICI not run")
        + f"; rtol = atol = {args.rtol:g}" + (f" (other: {TOLERANCES})" if TOLERANCES else "")
        + f", median of {args.repeats}, nominal parameters. 'AMICI best / ours' = AMICI's faster gradient "
        "(forward or adjoint sensitivities) / our `auto` gradient (> 1: we are faster). First call = "
        "`import sensitivity` + `sens.petab.load` + the first `gradient()`, cold = empty cache folder, "
        "warm = a second process on the filled cache. AMICI build = SBML import, code generation and C++ "
        "compile into an empty folder. nllh diff = |our nllh + AMICI's llh|; grad diff = the largest "
        "relative difference of our gradient from AMICI's forward gradient (a parameter below 1e-3 of the "
        "largest component compared on that floor).",
        "",
        *lines,
        "",
    ]
    if ratios:
        text += [f"AMICI best / ours over {len(ratios)} problems: median {statistics.median(ratios):.2f}x, "
                 f"min {min(ratios):.2f}x, max {max(ratios):.2f}x; at least 2x on "
                 f"{sum(v >= 2 for v in ratios)} of {len(ratios)}.", ""]
    spread = [(r["ours"]["auto_s"] / r["ours"]["auto_s_min"], None if "error" in (r.get("amici") or {"error": 1})
               else r["amici"]["forward_s"] / r["amici"]["forward_s_min"])
              for r in rows if "auto_s_min" in r.get("ours", {})]
    if spread:
        am = [b for _, b in spread if b is not None]
        text += [f"Median call / fastest call (near 1 on a quiet machine): ours {max(a for a, _ in spread):.2f}x at "
                 "most" + (f", AMICI's forward gradient {max(am):.2f}x at most." if am else "."), ""]
    text += ["Simulation, step counts and compile times (CVODES's steps summed over conditions, "
             "equilibration included; ours: accepted steps of one nllh solve):", "", *lines2, ""]
    timed = [r for r in rows if "forward_s" in r.get("ours", {}) and "adjoint_s" in r.get("ours", {})]
    if timed:  # --modes auto,forward,adjoint: how the cost model's pick compares with the faster mode
        text += ["Our gradient modes (`--modes`), ms; 'auto / faster' = the auto gradient's time over the "
                 "faster forced mode's (near 1: the cost model picked the faster mode):", "",
                 "| problem | states x parameters | forward | adjoint | auto picks | auto / faster |",
                 "| --- | ---: | ---: | ---: | --- | ---: |"]
        for r in timed:
            o = r["ours"]
            text.append(f"| {r['problem']} | {o['n_states'] * o['n_parameters']:,} | {_fmt_ms(o['forward_s'])} | "
                        f"{_fmt_ms(o['adjoint_s'])} | {o['auto_mode']} | "
                        f"{o['auto_s'] / min(o['forward_s'], o['adjoint_s']):.2f} |")
        text.append("")
    text += ["Problems not loaded, with the reason:", ""] + (missing or ["- none"]) + [""]
    return "\n".join(text)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def plot(rows: list[dict], out: Path) -> Path | None:
    pts = [(r["summary"]["sizes"][0] * r["summary"]["sizes"][1], r["summary"]["ratio"], r["problem"])
           for r in rows if "ratio" in r.get("summary", {})]
    if not pts:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter([p[0] for p in pts], [p[1] for p in pts])
    for x, y, name in pts:
        ax.annotate(name.split("_")[0], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(1.0, color="gray", lw=0.8, ls="--", label="as fast as AMICI")
    ax.axhline(2.0, color="green", lw=0.8, ls=":", label="target 2x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    def label(unit):  # plain numbers on the log axes, minor ticks at 2 and 5 only
        return matplotlib.ticker.FuncFormatter(
            lambda v, _: f"{v:g}{unit}" if f"{v:.0e}"[0] in "125" else "")
    for axis, unit in ((ax.xaxis, ""), (ax.yaxis, "x")):
        axis.set_major_formatter(label(unit))
        axis.set_minor_formatter(label(unit))
    ax.set_xlabel("states x estimated parameters")
    ax.set_ylabel("AMICI's faster gradient / ours")
    ax.set_title("PEtab collection: gradient time ratio (> 1: we are faster)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "petab_ratios.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("yamls", nargs="*", help="more PEtab problem YAML files")
    ap.add_argument("--problems", help="comma-separated names to run (folder names of ../shared/petab)")
    ap.add_argument("--no-collection", action="store_true", help="only the YAML files given")
    ap.add_argument("--amici", action="store_true", help="run AMICI beside us (pip install -e '.[amici]')")
    ap.add_argument("--repeats", type=int, default=5, help="calls per median (5)")
    ap.add_argument("--rtol", type=float, default=1e-8)
    ap.add_argument("--atol", type=float, default=1e-8)
    ap.add_argument("--modes", default="auto", help="our gradient modes to time: auto[,forward,adjoint]")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess (1800)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder of petab.md/.json/_ratios.png")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)  # internal: one side of one problem
    args = ap.parse_args(argv)
    if args.child:
        return _child_main(args)
    bad_modes = [m for m in args.modes.split(",") if m not in ("auto", "forward", "adjoint")]
    if bad_modes:
        ap.error(f"--modes: {', '.join(bad_modes)} unknown; valid: auto, forward, adjoint")
    if args.amici:
        try:
            import amici  # noqa: F401
        except ImportError:
            ap.error("--amici: AMICI is not installed; pip install -e '.[amici]'")
    problems = _problems(args)
    if not problems:
        print(f"no PEtab problems: none given and none found at {DATA}", file=sys.stderr)
        return 1
    start = time.perf_counter()
    rows, load = [], []
    args.out.mkdir(parents=True, exist_ok=True)
    for k, (name, path) in enumerate(problems, 1):
        print(f"[{k}/{len(problems)}] {name} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        rows.append(measure(name, path, args))
        load.append(os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"))
        errs = [f"{side}: {rows[-1][side]['error']}" for side in ("ours", "amici")
                if "error" in (rows[-1].get(side) or {})]
        print(f"    {time.perf_counter() - t0:.0f} s" + (f"; {'; '.join(errs)}" if errs else ""),
              file=sys.stderr, flush=True)
        (args.out / "petab.json").write_text(json.dumps(rows, indent=1))  # kept after every problem
    text = report(rows, args, load, time.perf_counter() - start)
    (args.out / "petab.json").write_text(json.dumps(rows, indent=1))
    (args.out / "petab.md").write_text(text)
    print(text)
    png = plot(rows, args.out)
    print(f"wrote {args.out / 'petab.md'}, {args.out / 'petab.json'}" + (f", {png}" if png else ""),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
