"""The command line: `sensitivity run | validate | plan | models | calibrate`.

    sensitivity run configs/lotka_volterra.yaml [--out DIR] [--mode auto|forward|adjoint] [--force]
                    [--executor local:N|tcp://host:port] [--resume]   (for an analysis: block)
    sensitivity validate CONFIG      every problem in the file, each with its key path
    sensitivity plan CONFIG          the cost model's decision and why, without running it
    sensitivity models               the registered models
    sensitivity calibrate [--file PATH]   measure this machine's cost constants

Config commands also take `--set KEY=VALUE` (repeatable; e.g. --set solver.rtol=1e-6) and
`--points N` (cut the time grid to N save times). Exit status: 0 success, 1 the run failed
(e.g. the solver), 2 bad input (config, arguments, model file or code, data, output folder, an
existing result without --force), 3 an internal error of the toolkit, 130 interrupted. Messages go to stderr, without a traceback
(--traceback shows one). This module talks to the public API only; see docs/configuration.md.
"""

from __future__ import annotations

import argparse
import platform
import signal
import sys
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
VERSIONED = ("sensitivity", "jax", "jaxlib", "diffrax", "equinox", "numpy", "scipy", "xarray",
             "h5netcdf", "matplotlib", "pydantic")


# --------------------------------------------------------------------------- progress
class Progress:
    """Status lines on stderr: one per stage, with its time. On a terminal the line is
    rewritten in place; quiet=True prints nothing."""

    def __init__(self, quiet: bool = False, stream=None, check=None):
        self.quiet = quiet
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.check = check or (lambda: None)  # raises KeyboardInterrupt when asked to stop

    def note(self, text: str) -> None:
        if not self.quiet:
            print(f"sensitivity: {text}", file=self.stream, flush=True)

    @contextmanager
    def stage(self, label: str):
        self.check()
        if self.quiet:
            yield
            self.check()
            return
        start = time.perf_counter()
        print(f"sensitivity: {label} ...", end="" if self.tty else "\n", file=self.stream, flush=True)
        ok = False
        try:
            yield
            ok = True
        finally:
            took = time.perf_counter() - start
            status = f"done in {took:.2f} s" if ok else f"stopped after {took:.2f} s"
            if self.tty:
                print(f"\rsensitivity: {label} ... {status}", file=self.stream, flush=True)
            else:
                print(f"sensitivity: {label}: {status}", file=self.stream, flush=True)
        self.check()


class Interrupt:
    """Ctrl-C during a run: the first one asks to stop at the next step boundary (a
    KeyboardInterrupt raised inside JAX's callbacks can be swallowed), the second stops
    at once. `check()` raises KeyboardInterrupt once a stop was asked for."""

    def __init__(self):
        self.requested = False

    def handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nsensitivity: interrupted: stopping after the current step (Ctrl-C again to stop now)",
              file=sys.stderr, flush=True)

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    @contextmanager
    def installed(self):
        try:
            previous = signal.signal(signal.SIGINT, self.handler)
        except ValueError:  # not the main thread: leave signals alone
            previous = None
        try:
            yield self
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


# --------------------------------------------------------------------------- arguments
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sensitivity",
        description="Forward, adjoint and second-order sensitivity analysis of ODE models, "
                    "configured by YAML (see docs/configuration.md).")
    p.add_argument("--version", action="version", version=f"sensitivity {_version('sensitivity')}")
    p.add_argument("--traceback", action="store_true", help="show Python tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    def config_command(name, help_, description):
        c = sub.add_parser(name, help=help_, description=description)
        c.add_argument("config", metavar="CONFIG", help="the YAML config file")
        c.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key (dotted path, YAML value), e.g. --set solver.rtol=1e-6; "
                            "repeatable")
        c.add_argument("--points", type=int, metavar="N",
                       help="use N save times (time.points, or N of the times list) e.g. for a quick run")
        c.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return c

    r = config_command("run", "run the sensitivity analysis a config describes",
                       "Validate CONFIG, simulate, compute the Jacobian (and the objective's gradient "
                       "and Hessian if asked) and write results, plots and a summary into one folder.")
    r.add_argument("--out", metavar="DIR", help="output folder (default: output.dir, else results/<config name>)")
    r.add_argument("--mode", choices=("auto", "forward", "adjoint"),
                   help="sensitivity mode (default: sensitivity.mode of the config, else auto)")
    r.add_argument("--force", action="store_true", help="replace an existing result folder")
    r.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    r.add_argument("--executor", metavar="WHERE",
                   help="where the analysis ensembles run: local, local:N (N Dask worker processes), "
                        "tcp://host:port (a Dask scheduler); default: executor: of the config, else here")
    r.add_argument("--resume", action="store_true",
                   help="reuse the finished chunks of an interrupted run's analysis ensembles")

    config_command("validate", "check a config and list every problem found",
                   "Check the whole file (keys, types, ranges, model, names, data file) and print every "
                   "problem with its key path. Compiles nothing.")
    pl = config_command("plan", "show the cost model's choice of mode and why",
                        "Print the cost model's decision (forward or adjoint) and its explanation for the "
                        "config's Jacobian, and for its objective's gradient and Hessian, without running them.")
    pl.add_argument("--mode", choices=("auto", "forward", "adjoint"), help="as for run")
    m = sub.add_parser("models", help="list the registered models",
                       description="List the models of the model library with states, parameters and "
                                   "a one-line description.")
    m.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    c = sub.add_parser("calibrate", help="measure this machine's cost constants",
                       description="Time a solve, forward (JVP) and adjoint (VJP) sweeps on a small "
                                   "reference problem (sensitivity.api.calibrate_machine), derive the cost "
                                   "model's constants and store them where `plan` and `run` read them.")
    c.add_argument("--file", metavar="PATH",
                   help="where to store them (default: $SENSITIVITY_CALIBRATION, else the user cache folder)")
    c.add_argument("--repeats", type=int, default=3, metavar="N",
                   help="probes to take the median of (default 3; 1 is quicker and noisier)")
    c.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    from . import petab as petab_cli  # `sensitivity petab PROBLEM` (issue 14)
    petab_cli.add_parser(sub)
    return p


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sensitivity` command; returns the exit status."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_INPUT
    commands = {"run": cmd_run, "validate": cmd_validate, "plan": cmd_plan, "models": cmd_models,
                "calibrate": cmd_calibrate}
    from . import petab as petab_cli
    commands["petab"] = petab_cli.command
    try:
        import sensitivity  # noqa: F401  (JAX set-up happens here)

        return commands[args.command](args)
    except KeyboardInterrupt:
        print("sensitivity: interrupted" + ("; no result was written" if args.command == "run" else ""),
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the shell turns every error into a message
        if args.traceback:
            raise
        from ..core.checks.fault import exit_status  # 2 bad input (incl. the user's model code), 1 failed, 3 a bug

        status, message = exit_status(exc)
        print(f"sensitivity: {message}", file=sys.stderr)
        return status


# --------------------------------------------------------------------------- commands
def _load(args, out=None):
    from .config import run as config

    return config.load(args.config, overrides=args.overrides, points=args.points, out=out)


def cmd_validate(args) -> int:
    """Print every problem of the config (exit 2), or a one-line description of the run."""
    from ..core.errors import ConfigError

    try:
        spec = _load(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_INPUT
    p = spec.problem
    s = spec.config.sensitivity
    obj = f", objective {s.objective.type}" + (" with Hessian" if s.hessian else "") if s.objective else ""
    print(f"{args.config}: valid. Model '{p.model.name}', {p.times.size} save times in "
          f"[{p.t0:g}, {p.times[-1]:g}], {p.n_inputs} inputs ({', '.join(p.input_names[:8])}"
          f"{', ...' if p.n_inputs > 8 else ''}), {len(p.of)} outputs{obj}; results to {spec.output_dir}.")
    if spec.config.analysis is not None and spec.config.analysis.methods():
        from .runners.gsa import describe

        print(describe(spec))
    if spec.output_dir.exists() and any(spec.output_dir.iterdir()):
        print(f"note: {spec.output_dir} already holds a result; `sensitivity run` needs --force to replace it")
    return EXIT_OK


def cmd_plan(args) -> int:
    """Print the cost model's decision for the Jacobian (and gradient / Hessian)."""
    import sensitivity as sens

    spec = _load(args)
    p = spec.problem
    mode = args.mode or spec.config.sensitivity.mode
    probe = {"auto": None, "always": True, "never": False}[spec.config.sensitivity.probe]
    jp = sens.plan(p, mode=mode, probe_problem=probe)
    print(f"Jacobian: {p.times.size} times x {len(p.of)} outputs = {p.n_outputs} outputs, "
          f"{p.n_inputs} inputs -> {jp.mode}" + (f" ({jp.variant})" if jp.mode == "adjoint" else ""))
    print(_indent(jp.explain()))
    if spec.objective is not None:
        gp = sens.plan(p, spec.objective, mode=mode, probe_problem=probe)
        print(f"\nGradient of the objective ({spec.config.sensitivity.objective.type}) -> {gp.mode}"
              + (f" ({gp.variant})" if gp.mode == "adjoint" else ""))
        print(_indent(gp.explain()))
        if spec.config.sensitivity.hessian:
            hp = sens.plan(p, spec.objective, task="hessian", probe_problem=False)
            print(f"\nHessian ({p.n_inputs} x {p.n_inputs}) -> "
                  + ("forward over forward" if hp.mode == "forward" else "reverse over forward (HVPs)"))
            print(_indent(hp.explain()))
    return EXIT_OK


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def cmd_models(args) -> int:
    """List the registered models: summary line, states, parameters (defaults), outputs."""
    from .config.run import _registry

    registry = _registry()
    if registry is None:
        print("sensitivity: error: the model library `models` is not available (is the package "
              "installed with `pip install -e .`?)", file=sys.stderr)
        return EXIT_FAILED
    names = list(registry.available())
    for name in names:
        m = registry.get(name)
        params = ", ".join(f"{k}={_short(v)}" for k, v in m.parameters.items())
        print(m.summary())
        print(f"    states:     {', '.join(m.states[:12])}{' ...' if m.n_states > 12 else ''}")
        print(f"    parameters: {params}")
        if m.observables:
            print(f"    outputs:    {', '.join(m.outputs)}")
    if not names:
        print("no models registered")
    return EXIT_OK


def _short(v) -> str:
    return f"{float(v):g}" if getattr(v, "ndim", 0) == 0 else f"<array {tuple(v.shape)}>"


def cmd_calibrate(args) -> int:
    """Measure the cost constants on the core's reference problem and store them."""
    from ..stores import calibration as calibration_store
    from ..api import calibrate_machine

    if args.repeats < 1:
        print(f"sensitivity: error: --repeats {args.repeats}: needs at least 1", file=sys.stderr)
        return EXIT_INPUT
    progress = Progress()
    with progress.stage(f"timing solves, forward and adjoint sweeps on a reference problem "
                        f"({args.repeats} probe{'s' * (args.repeats != 1)})"):
        cal = calibrate_machine(repeats=args.repeats)
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
    from . import petab as petab_cli
    if petab_cli.is_petab_config(args.config):  # a run config with a `petab:` key (issue 14)
        return petab_cli.run_config(args)
    with Interrupt().installed() as interrupt:
        return _run(args, interrupt)


def _run(args, interrupt: Interrupt) -> int:
    from ..analyses import metrics
    from .runners import local
    from .output import files as io

    progress = Progress(args.quiet, check=interrupt.check)
    started = time.perf_counter()
    with progress.stage(f"validating {args.config}"):
        spec = _load(args, out=args.out)
    validate_s = time.perf_counter() - started
    force = args.force
    io.check_target(spec.output_dir, force)  # fail before the work, not after it
    from .output.writable import check_output_dir

    check_output_dir(spec.output_dir)  # a test write: read-only, /proc, below a file
    s = spec.config.sensitivity
    mode = args.mode or s.mode
    result = local.run(spec.problem, spec.objective, mode=mode, normalize=s.normalize,
                    hessian=s.hessian, probe=s.probe, stage=progress.stage)
    from .runners import analyses as analysis_runs
    extra = analysis_runs.run(spec, result, stage=progress.stage)  # analysis: identifiability, fit
    from .runners import gsa as gsa_run  # the analysis: block (Sobol, Morris, DGSM)

    global_results = gsa_run.run_analyses(spec, executor=args.executor, resume=args.resume,
                                          stage=progress.stage, progress=False if args.quiet else None,
                                          check=interrupt.check)
    with progress.stage(f"writing {spec.output_dir}"):
        write_start = time.perf_counter()
        with io.output_folder(spec.output_dir, force) as tmp:
            files = _write(tmp, spec, result, progress)
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
    gsa_run.clear_stores(spec.output_dir)
    _report(spec, result)
    for line in analysis_runs.report(extra):
        print(line)
    return EXIT_OK


def _write(folder: Path, spec, result, progress: Progress) -> list[str]:
    """Every file of a result into `folder`; returns their names."""
    from ..analyses import metrics
    from .runners import local
    from .output import files as io
    from ..plots import run as plot

    p, jac, out = spec.problem, result.jacobian, spec.config.output
    io.write_netcdf(io.dataset(result, p, spec.observations), folder / io.RESULTS_FILE)
    io.write_csv(result.ranking, folder / io.RANKING_FILE)
    io.write_trajectory_csv(p.times, result.trajectory.outputs, p.of, folder / io.TRAJECTORY_FILE)
    io.write_yaml(spec.resolved(), folder / io.CONFIG_FILE)
    files = [io.RESULTS_FILE, io.RANKING_FILE, io.TRAJECTORY_FILE, io.CONFIG_FILE]
    label = "d ln y / d ln p" if result.normalized else "dy/dp"
    log_time = spec.config.time is not None and spec.config.time.spacing == "log"
    span = f"t in [{p.times[0]:g}, {p.times[-1]:g}]"
    if "heatmap" in out.plots:
        plot.heatmap([metrics.time_mean(p.times, result.sensitivities)], jac.input_names, jac.output_names,
                     [f"{p.model.name}: time average over {span}"], f"mean {label}", folder / "heatmap.png")
        files.append("heatmap.png")
        if out.heatmap_times:
            idx = metrics.nearest_indices(p.times, out.heatmap_times)
            plot.heatmap([result.sensitivities[k] for k in idx], jac.input_names, jac.output_names,
                         [f"t = {p.times[k]:.4g}" for k in idx], label, folder / "heatmap_at_times.png",
                         suptitle=f"{p.model.name}: {label} at chosen times")
            files.append("heatmap_at_times.png")
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
                     "normalized": result.normalized, "plan": jac.plan.to_dict()},
        "ranking": result.ranking,
        "solver_stats": {"simulate": result.trajectory.stats, "jacobian": jac.stats},
        "timings": result.timings,
        "files": files,
        "versions": {name: _version(name) for name in VERSIONED} | {"python": platform.python_version()},
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
    top = ", ".join(f"{r['input']} ({r['share']:.0%})" for r in result.ranking[:5])
    print(f"most influential inputs: {top}")
    if result.gradient is not None:
        print(f"objective {spec.config.sensitivity.objective.type} = {result.gradient.value:.6g}; "
              f"gradient by {result.gradient.mode}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
