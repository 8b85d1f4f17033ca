"""The command line: `sensitivity run | validate | plan | models | calibrate`.

    sensitivity run configs/lotka_volterra.yaml [--out DIR] [--mode auto|forward|adjoint] [--force]
                    [--executor local:N|tcp://host:port] [--resume]   (for an analysis: block)
    sensitivity validate CONFIG      every problem in the file, each with its key path
    sensitivity plan CONFIG          the cost model's decision and why, without running it
    sensitivity models               the registered models
    sensitivity calibrate [--file PATH]   measure this machine's cost constants
    sensitivity petab PROBLEM [--fit] [--starts N] [--identifiability] [--profile [NAME ...]] [--sample N]
                                     a PEtab problem: nllh, gradient, fit, profiles, posterior

Config commands also take `--set KEY=VALUE` (repeatable; e.g. --set solver.rtol=1e-6) and
`--points N` (cut the time grid to N save times). Exit status: 0 success, 1 the run failed
(e.g. the solver), 2 bad input (config, arguments, model file or code, data, output folder, an
existing result without --force), 3 an internal error of the toolkit, 130 interrupted. Messages go to stderr, without a traceback
(--traceback shows one). This module talks to the public API only; see docs/configuration.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..core.checks.fault import exit_status
from ..core.errors import ConfigError
from ..core.lazy import load
from .config import petab as petab_config
from .config.petab import is_petab_config
from .config.run import model_library
from .console import EXIT_FAILED, EXIT_INPUT, EXIT_INTERRUPTED, EXIT_OK, describe, load_config, version

# --------------------------------------------------------------------------- arguments

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sensitivity",
        description="Forward, adjoint and second-order sensitivity analysis of ODE models, "
                    "configured by YAML (see docs/configuration.md).")
    p.add_argument("--version", action="version", version=f"sensitivity {version('sensitivity')}")
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
    _petab_parser(sub)
    return p


def _petab_parser(sub) -> None:
    """Add the `petab` subcommand to the CLI's subparsers."""
    c = sub.add_parser("petab", help="nllh, gradient, Fisher information (a fit, profiles, samples) of a PEtab "
                                     "problem",
                       description="Load a PEtab problem (YAML), compute the negative log-likelihood at the "
                                   "nominal parameters, its gradient and the Fisher information, optionally "
                                   "fit (from several starts), profile and sample the posterior, and write a "
                                   "result folder with plots of simulation vs data.")
    c.add_argument("problem", metavar="PROBLEM", help="the PEtab problem YAML file")
    c.add_argument("--mode", choices=("auto", "forward", "adjoint"), default="auto")
    c.add_argument("--solver", default="rodas5p")
    c.add_argument("--rtol", type=float, default=1e-8)
    c.add_argument("--atol", type=float, default=1e-8)
    c.add_argument("--fit", action="store_true", help="fit the estimated parameters (L-BFGS-B)")
    c.add_argument("--maxiter", type=int, default=200, help="iterations of each local fit (default 200)")
    c.add_argument("--identifiability", action="store_true",
                   help="identifiability from the Fisher information at the fit (else the nominal values): "
                        "non-identifiable subsets, sloppy directions (identifiability.csv, collinearity.csv)")
    c.add_argument("--starts", type=int, metavar="N",
                   help="a multi-start fit: from the nominal values and N Sobol points within the bounds, every "
                        "start kept (multistart.csv, waterfall.png); implies --fit")
    c.add_argument("--profile", nargs="*", metavar="NAME",
                   help="profile likelihoods and confidence intervals of the named parameters (all when no name "
                        "follows) from the fit; implies --fit. Give the names after PROBLEM")
    c.add_argument("--profile-method", choices=("optimization", "integration"), default="optimization",
                   help="follow the profile by re-optimisation (default) or as an ODE in the parameters")
    c.add_argument("--level", type=float, default=0.95, help="confidence level of the profile intervals (0.95)")
    c.add_argument("--sample", type=int, metavar="N",
                   help="N posterior draws per chain from the fit (NUTS on exact gradients; the extra 'sample'); "
                        "implies --fit")
    c.add_argument("--chains", type=int, default=4, help="chains of --sample (default 4)")
    c.add_argument("--warmup", type=int, default=None,
                   help="warm-up (adaptation) steps per chain (default: 200 for NUTS from the Laplace "
                        "approximation, else 500)")
    c.add_argument("--sampler", choices=("nuts", "adaptive_metropolis"), default="nuts")
    c.add_argument("--seed", type=int, default=0, help="of the Sobol starts and the sampler (default 0)")
    c.add_argument("--design", type=int, metavar="N",
                   help="design the next experiment: the N measurements (observable, condition, time) that "
                        "add the most information (D-optimal, sens.design); written as design*.csv")
    c.add_argument("--design-criterion", choices=("D", "A", "E", "ME", "D_s", "A_s"),
                   help="criterion of --design (default D; D_s / A_s need --design-parameters)")
    c.add_argument("--design-method", choices=("exchange", "greedy", "continuous"),
                   help="search of --design (default exchange)")
    c.add_argument("--design-parameters", nargs="+", metavar="ID",
                   help="parameters of interest of --design (the criterion on that subset)")
    c.add_argument("--design-times", nargs="+", type=float, metavar="T",
                   help="candidate times of --design (default 61 from 0 to the last measured time)")
    c.add_argument("--design-conditions", metavar="TSV",
                   help="new conditions --design may choose: a PEtab condition table (conditionId, columns)")
    c.add_argument("--out", metavar="DIR", help="output folder (default results/<problem name>)")
    c.add_argument("--no-plots", action="store_true")
    c.add_argument("--force", action="store_true", help="replace an existing result folder")
    c.add_argument("--quiet", "-q", action="store_true")
    c.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `sensitivity` command; returns the exit status."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_INPUT
    command = COMMANDS[args.command]
    try:
        return (load(command) if isinstance(command, str) else command)(args)
    except KeyboardInterrupt:
        print("sensitivity: interrupted" + ("; no result was written" if args.command == "run" else ""),
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the shell turns every error into a message
        if args.traceback:
            raise
        # 2 bad input (incl. the user's model code), 1 failed, 3 a bug
        status, message = exit_status(exc)
        print(f"sensitivity: {message}", file=sys.stderr)
        return status


# --------------------------------------------------------------------------- commands
def cmd_validate(args) -> int:
    """Print every problem of the config (exit 2), or a one-line description of the run."""
    if is_petab_config(args.config):  # a run config with a `petab:` key: its own schema
        try:
            cfg = petab_config.load(args.config)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            return EXIT_INPUT
        if not Path(cfg.petab).is_file():
            print(f"{args.config}: petab: problem file '{cfg.petab}' not found", file=sys.stderr)
            return EXIT_INPUT
        fit = ""
        if cfg.fits:
            fit = f", fit (maxiter {cfg.fit.maxiter}" + (f", {cfg.fit.starts} starts)" if cfg.fit.starts else ")")
        if cfg.identifiability is not None:
            fit += f", identifiability (subsets up to {cfg.identifiability.max_subset})"
        if cfg.profile is not None:
            names = ", ".join(cfg.profile.parameters) if cfg.profile.parameters else "every parameter"
            fit += f", profiles of {names} ({cfg.profile.method}, level {cfg.profile.level:g})"
        if cfg.sample is not None:
            s = cfg.sample
            fit += f", {s.chains} chains x {s.n} draws ({s.method})"
        if cfg.design is not None:
            d = cfg.design
            new = "" if d.conditions is None else (f" and new conditions from {d.conditions}" if isinstance(
                d.conditions, str) else f" and new conditions {', '.join(d.conditions)}")
            fit += f", {'an' if d.criterion[0] in 'AEM' else 'a'} {d.criterion}-optimal design of {d.n or 'a budget of'} measurements ({d.method}{new})"
        print(f"{args.config}: valid. PEtab problem {cfg.petab}, solver {cfg.solver.method} (rtol "
              f"{cfg.solver.rtol:g}, atol {cfg.solver.atol:g}), gradient mode {cfg.mode}{fit}; results to "
              f"{cfg.output.dir}.")
        return EXIT_OK
    try:
        spec = load_config(args)
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
            print(describe(spec))
    a = spec.config.analysis
    if a is not None and a.fit is not None:
        starts = a.multistart.starts if a.multistart is not None else a.fit.starts
        what = [f"analysis.fit: {a.fit.data}" + (f" from {starts} + 1 starts" if starts else "")]
        if a.profile is not None:
            names = ", ".join(a.profile.parameters) if a.profile.parameters else "every fitted input"
            what.append(f"profiles of {names} ({a.profile.method}, level {a.profile.level:g})")
        if a.sample is not None:
            what.append(f"{a.sample.chains} chains x {a.sample.n} draws ({a.sample.method})")
        print("; ".join(what))
    if spec.output_dir.exists() and any(spec.output_dir.iterdir()):
        print(f"note: {spec.output_dir} already holds a result; `sensitivity run` needs --force to replace it")
    return EXIT_OK


def cmd_models(args) -> int:
    """List the registered models: summary line, states, parameters (defaults), outputs."""
    registry = model_library()
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



# the commands that compute import JAX: named here, loaded when they run
COMMANDS = {"run": "sensitivity.app.commands:cmd_run", "plan": "sensitivity.app.commands:cmd_plan",
            "calibrate": "sensitivity.app.commands:cmd_calibrate", "petab": "sensitivity.app.runners.petab:command",
            "validate": cmd_validate, "models": cmd_models}
