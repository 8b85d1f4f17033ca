"""The commands of the command line that compute: `run`, `plan`, `calibrate`. They import
JAX (through the public API); `cli.main` loads this module only when one of them runs, so
`sensitivity validate` and `sensitivity models` start without it."""

from __future__ import annotations

import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .. import api
from ..ad.cost import save_calibration
from ..core.lazy import LazyModule
from ..plots import run as plot
from ..stores import calibration as calibration_store
from .config.petab import is_petab_config
from .console import EXIT_INPUT, EXIT_OK, VERSIONED, Interrupt, Progress, indent, load_config, version
from .output import files as io
from .output.files import check_output_dir
from .runners import local

# imported when a config asks for them: a plain run does not pay for the fit, sampling,
# design, GSA and PEtab machinery
analysis_runs = LazyModule("sensitivity.app.runners.analyses")
gsa_run = LazyModule("sensitivity.app.runners.gsa")
petab_run = LazyModule("sensitivity.app.runners.petab")


def cmd_plan(args) -> int:
    """Print the cost model's decision for the Jacobian (and gradient / Hessian)."""
    spec = load_config(args)
    p = spec.problem
    mode = args.mode or spec.config.sensitivity.mode
    probe = {"auto": None, "always": True, "never": False}[spec.config.sensitivity.probe]
    jp = api.plan(p, mode=mode, probe_problem=probe)
    print(f"Jacobian: {p.times.size} times x {len(p.of)} outputs = {p.n_outputs} outputs, "
          f"{p.n_inputs} inputs -> {jp.mode}" + (f" ({jp.variant})" if jp.mode == "adjoint" else ""))
    print(indent(jp.explain()))
    if spec.objective is not None:
        gp = api.plan(p, spec.objective, mode=mode, probe_problem=probe)
        print(f"\nGradient of the objective ({spec.config.sensitivity.objective.type}) -> {gp.mode}"
              + (f" ({gp.variant})" if gp.mode == "adjoint" else ""))
        print(indent(gp.explain()))
        if spec.config.sensitivity.hessian:
            hp = api.plan(p, spec.objective, task="hessian", probe_problem=False)
            print(f"\nHessian ({p.n_inputs} x {p.n_inputs}) -> "
                  + ("forward over forward" if hp.mode == "forward" else "reverse over forward (HVPs)"))
            print(indent(hp.explain()))
    return EXIT_OK


def cmd_calibrate(args) -> int:
    """Measure the cost constants on the core's reference problem and store them."""
    if args.repeats < 1:
        print(f"sensitivity: error: --repeats {args.repeats}: needs at least 1", file=sys.stderr)
        return EXIT_INPUT
    progress = Progress()
    with progress.stage(f"timing solves, forward and adjoint sweeps on a reference problem "
                        f"({args.repeats} probe{'s' * (args.repeats != 1)})"):
        cal = api.calibrate_machine(repeats=args.repeats)
    where = save_calibration(cal, args.file)
    print(f"tangent   a = {cal.tangent:.4g}   (forward: S (1 + a n) for n inputs, S one solve)")
    print(f"record    r = {cal.record:.4g}   (adjoint: S (r + b m) for m outputs)")
    print(f"cotangent b = {cal.cotangent:.4g}")
    print(f"saved to {where}")
    if args.file and Path(args.file).resolve() != calibration_store.path().resolve():
        print(f"(plan and run read {calibration_store.path()}; set SENSITIVITY_CALIBRATION={where} "
              "to use these)")
    return EXIT_OK


def cmd_run(args) -> int:
    """Validate, compute, and write the result folder atomically."""
    if is_petab_config(args.config):  # a run config with a `petab:` key
        return petab_run.run_config(args)
    with Interrupt().installed() as interrupt:
        return _run(args, interrupt)


def _run(args, interrupt: Interrupt) -> int:

    progress = Progress(args.quiet, check=interrupt.check)
    started = time.perf_counter()
    with progress.stage(f"validating {args.config}"):
        spec = load_config(args, out=args.out)
    validate_s = time.perf_counter() - started
    force = args.force
    io.check_target(spec.output_dir, force)  # fail before the work, not after it

    check_output_dir(spec.output_dir)  # a test write: read-only, /proc, below a file
    s = spec.config.sensitivity
    mode = args.mode or s.mode
    result = local.run(spec.problem, spec.objective, mode=mode, normalize=s.normalize,
                    hessian=s.hessian, probe=s.probe, stage=progress.stage)
    asked = getattr(spec.config, "analysis", None) is not None
    extra = analysis_runs.run(spec, result, stage=progress.stage) if asked else {}  # identifiability, fit...
    global_results = gsa_run.run_analyses(spec, executor=args.executor, resume=args.resume,
                                          stage=progress.stage, progress=False if args.quiet else None,
                                          check=interrupt.check) if asked else {}
    with progress.stage(f"writing {spec.output_dir}"):
        write_start = time.perf_counter()
        with io.output_folder(spec.output_dir, force) as tmp:
            files = _write(tmp, spec, result, progress)
            if asked:
                files += analysis_runs.write(tmp, spec, extra)
                files += gsa_run.write_analyses(tmp, global_results)
            result.timings["write"] = {"wall": time.perf_counter() - write_start}
            result.timings["validate"] = {"wall": validate_s}
            result.timings["total"] = {"wall": time.perf_counter() - started}
            summary = build_summary(spec, result, files + [io.SUMMARY_FILE], mode, argv=args.argv)
            if global_results:
                summary["analysis"] = gsa_run.summary(global_results)
            if extra:  # identifiability, fit
                summary.setdefault("analysis", {}).update(analysis_runs.summary(extra))
            io.write_json(summary, tmp / io.SUMMARY_FILE)
            interrupt.check()  # the last moment a stop keeps the folder from appearing
    if asked:
        gsa_run.clear_stores(spec.output_dir)
    _report(spec, result)
    for line in analysis_runs.report(extra) if asked else ():
        print(line)
    return EXIT_OK


def _write(folder: Path, spec, result, progress: Progress) -> list[str]:
    """Every file of a result into `folder`; returns their names."""
    p, jac, out = spec.problem, result.jacobian, spec.config.output
    io.write_netcdf(io.dataset(result, p, spec.observations), folder / io.RESULTS_FILE)
    io.write_csv(result.ranking, folder / io.RANKING_FILE)
    io.write_trajectory_csv(p.times, result.trajectory.outputs, p.of, folder / io.TRAJECTORY_FILE)
    io.write_yaml(spec.resolved(), folder / io.CONFIG_FILE)
    files = [io.RESULTS_FILE, io.RANKING_FILE, io.TRAJECTORY_FILE, io.CONFIG_FILE]
    label = result.label
    log_time = spec.config.time is not None and spec.config.time.spacing == "log"
    if "heatmap" in out.plots:
        files += io.write_heatmaps(folder, p, result, out.heatmap, out.heatmap_times)
    if "trajectories" in out.plots:
        plot.trajectories(p.times, result.trajectory.outputs, p.of, folder / "trajectories.png",
                          log_time=log_time, observations=spec.observations,
                          title=f"{p.model.name}: trajectories")
        files.append("trajectories.png")
    if "sensitivities" in out.plots:
        top = [r["input"] for r in result.ranking[:out.top_inputs]]
        plot.sensitivity_courses(p.times, result.sensitivities, jac.input_names, jac.output_names, top,
                                 label, folder / "sensitivities.png", log_time=log_time)
        files.append("sensitivities.png")
    return files


def build_summary(spec, result, files: list[str], mode: str, argv: list[str] | None = None) -> dict:
    """The content of summary.json: the resolved config, the problem, the plans with their
    explanations, the mode that ran, timings (compile apart), solver statistics, the
    ranking, the objective's value and gradient, and package versions."""
    p, jac = spec.problem, result.jacobian
    summary = {
        "status": "complete",
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config_file": str(spec.source.resolve()),
        "overrides": list(spec.overrides),
        "config": spec.resolved(),
        "problem": {
            "model": p.model.name, "inputs": list(p.input_names), "input_values": p.x0(),
            "outputs": list(p.of), "n_times": int(p.times.size), "t0": p.t0,
            "t_end": float(p.times[-1]), "solver": p.solver, "rtol": p.rtol, "atol": p.atol,
            "max_steps": p.max_steps,
        },
        "jacobian": {"mode_requested": mode, "mode": jac.mode, "variant": jac.variant,
                     "normalized": result.normalized, "sensitivity": result.label,
                     "time_inputs": list(result.time_inputs), "plan": jac.plan.to_dict()},
        "ranking": result.ranking,
        "solver_stats": {"simulate": result.trajectory.stats, "jacobian": jac.stats},
        "timings": result.timings,
        "files": files,
        "versions": {name: version(name) for name in VERSIONED} | {"python": platform.python_version()},
        "command": " ".join(["sensitivity", *(argv or ["run", str(spec.source)])]),
    }
    if result.gradient is not None:
        g = result.gradient
        summary["objective"] = {
            "type": spec.config.sensitivity.objective.type, "value": g.value,
            "gradient": dict(zip(g.input_names, g.grad)), "mode": g.mode, "variant": g.variant,
            "plan": g.plan.to_dict() if g.plan is not None else None, "solver_stats": g.stats,
        }
        if result.hessian is not None and p.n_inputs <= 50:
            summary["objective"]["hessian"] = result.hessian
    return summary


def _report(spec, result) -> None:
    """The few lines a user reads on stdout after a run."""
    jac = result.jacobian
    print(f"results in {spec.output_dir}")
    why = next((ln for ln in jac.plan.explain().splitlines() if " chosen" in ln or " forced" in ln), "")
    print(f"Jacobian {tuple(jac.values.shape)} (time, output, input) by {jac.mode}"
          + (f" ({jac.variant})" if jac.mode == "adjoint" else "") + (f": {why}" if why else ""))
    solver = next((ln for ln in jac.plan.explain().splitlines() if ln.startswith("Solver ")), "")
    if solver:  # which solver ran and why (sensitivity.stiffness)
        print(solver)
    first = [r for r in result.ranking if r.get("measure") == result.ranking[0].get("measure")]
    top = ", ".join(f"{r['input']} ({r['share']:.0%})" for r in first[:5])
    print(f"most influential inputs: {top}")
    timed = [r for r in result.ranking if r not in first]
    if timed:  # a log sensitivity to a time would depend on where time starts: ranked apart
        top = ", ".join(f"{r['input']} ({r['share']:.0%})" for r in timed[:5])
        print(f"time inputs, by {timed[0]['measure']} with H = {result.horizon:g} the horizon: {top}")
    if result.gradient is not None:
        print(f"objective {spec.config.sensitivity.objective.type} = {result.gradient.value:.6g}; "
              f"gradient by {result.gradient.mode}")

