"""`sensitivity petab problem.yaml` and run configs with a `petab:` key; SBML files as
`model:` of a run config.

A PEtab run: nominal nllh, its gradient (mode by the cost model unless given), the Fisher
information, optionally a fit (L-BFGS-B on the parameter scale within the bounds, exact
gradients), and plots of simulated vs measured values per observable and condition. The
result folder holds summary.json, simulation.tsv (PEtab simulation table), gradient.csv,
fisher.csv and plots/*.png; it is written atomically and never silently replaced.

A run config for a PEtab problem:

    petab: path/to/problem.yaml        # relative to the config file
    solver: {method: rodas5p, rtol: 1.0e-8, atol: 1.0e-8, max_steps: 100000}
    mode: auto                         # auto | forward | adjoint
    fit: {enabled: false, maxiter: 200}
    output: {dir: results/boehm, plots: true}
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..core.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PetabSolver(_Strict):
    method: Literal["rodas5p", "rodas4", "kvaerno5", "kvaerno4", "kvaerno3", "tsit5", "dopri5", "kencarp4",
                    "kencarp5"] = "rodas5p"
    rtol: float = Field(1e-8, gt=0)
    atol: float = Field(1e-8, gt=0)
    max_steps: int = Field(100_000, ge=1)


class PetabFit(_Strict):
    enabled: bool = False
    maxiter: int = Field(200, ge=1)


class PetabOutput(_Strict):
    dir: Optional[str] = None
    plots: bool = True


class PetabRunConfig(_Strict):
    """The schema of a run config with a `petab:` key (see the module docstring)."""

    petab: str
    solver: PetabSolver = PetabSolver()
    mode: Literal["auto", "forward", "adjoint"] = "auto"
    fit: PetabFit = PetabFit()
    output: PetabOutput = PetabOutput()


# --------------------------------------------------------------------------- hooks
def sbml_model(spec: str, base: Path):
    """The ODEModel of an SBML file named as `model:` in a run config (relative paths next
    to the config file, then the current folder); ConfigError if missing or unreadable."""
    from ..core.errors import ModelError
    from ..importers import sbml
    p = Path(spec).expanduser()
    places = [p] if p.is_absolute() else [base / p, Path.cwd() / p]
    found = next((q for q in places if q.is_file()), None)
    if found is None:
        raise ConfigError(f"model: SBML file '{spec}' not found (looked in {', '.join(map(str, places))})")
    try:
        return sbml.load(found)
    except ModelError as exc:
        raise ConfigError(f"model: {exc}") from None


def is_petab_config(path: str) -> bool:
    """True if the YAML run config at `path` has a top-level `petab` key."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "petab" in data


def add_parser(sub) -> None:
    """Add the `petab` subcommand to the CLI's subparsers."""
    c = sub.add_parser("petab", help="nllh, gradient, Fisher information (and a fit) of a PEtab problem",
                       description="Load a PEtab problem (YAML), compute the negative log-likelihood at the "
                                   "nominal parameters, its gradient and the Fisher information, optionally "
                                   "fit, and write a result folder with plots of simulation vs data.")
    c.add_argument("problem", metavar="PROBLEM", help="the PEtab problem YAML file")
    c.add_argument("--mode", choices=("auto", "forward", "adjoint"), default="auto")
    c.add_argument("--solver", default="rodas5p")
    c.add_argument("--rtol", type=float, default=1e-8)
    c.add_argument("--atol", type=float, default=1e-8)
    c.add_argument("--fit", action="store_true", help="fit the estimated parameters (L-BFGS-B)")
    c.add_argument("--maxiter", type=int, default=200)
    c.add_argument("--out", metavar="DIR", help="output folder (default results/<problem name>)")
    c.add_argument("--no-plots", action="store_true")
    c.add_argument("--force", action="store_true", help="replace an existing result folder")
    c.add_argument("--quiet", "-q", action="store_true")
    c.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def command(args) -> int:
    """`sensitivity petab PROBLEM`."""
    cfg = PetabRunConfig(petab=str(Path(args.problem).resolve()),
                         solver=PetabSolver(method=args.solver, rtol=args.rtol, atol=args.atol),
                         mode=args.mode, fit=PetabFit(enabled=args.fit, maxiter=args.maxiter),
                         output=PetabOutput(dir=args.out, plots=not args.no_plots))
    return run(cfg, force=args.force, quiet=args.quiet)


def run_config(args) -> int:
    """`sensitivity run CONFIG` for a config with a `petab:` key."""
    path = Path(args.config)
    data = yaml.safe_load(path.read_text())
    try:
        cfg = PetabRunConfig(**data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path}: " + "; ".join(problems), problems) from None
    problem = Path(cfg.petab)
    if not problem.is_absolute():
        problem = path.parent / problem
    out = getattr(args, "out", None) or cfg.output.dir
    if out is None:
        out = str(Path("results") / path.stem)
    cfg = cfg.model_copy(update={"petab": str(problem), "output": PetabOutput(dir=out, plots=cfg.output.plots)})
    if getattr(args, "mode", None):
        cfg = cfg.model_copy(update={"mode": args.mode})
    return run(cfg, force=getattr(args, "force", False), quiet=getattr(args, "quiet", False))


# --------------------------------------------------------------------------- the run
def run(cfg: PetabRunConfig, force: bool = False, quiet: bool = False) -> int:
    """Compute and write a PEtab result folder; print a short report. Returns 0."""
    from .output import files as io
    from ..importers import petab

    def say(text):
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    out = Path(cfg.output.dir or Path("results") / Path(cfg.petab).stem)
    io.check_target(out, force)
    t0 = time.perf_counter()
    say(f"loading {cfg.petab}")
    prob = petab.load(cfg.petab, solver=cfg.solver.method, rtol=cfg.solver.rtol, atol=cfg.solver.atol,
                      max_steps=cfg.solver.max_steps)
    load_s = time.perf_counter() - t0
    say(f"nllh, gradient ({cfg.mode}) and Fisher information of {prob!r}")
    start = time.perf_counter()
    g = prob.gradient(mode=cfg.mode)
    first_gradient_s = time.perf_counter() - start
    F = prob.fisher()
    eig = np.linalg.eigvalsh(F)
    fit = None
    x_best = prob.x_nominal
    if cfg.fit.enabled:
        say(f"fitting {len(prob.x_names)} parameters (L-BFGS-B, maxiter {cfg.fit.maxiter})")
        fit = _fit(prob, g.mode, cfg.fit.maxiter)
        x_best = fit["x"]
    sim = prob.simulate(x_best)
    summary = {
        "problem": str(cfg.petab), "model": prob.model.id, "states": len(prob.model.states),
        "estimated_parameters": list(prob.x_names), "scales": list(prob.scales),
        "experiments": len(prob.experiments), "measurements": int(len(prob.measurements)),
        "solver": cfg.solver.model_dump(), "nllh_nominal": g.value, "gradient_mode": g.mode,
        "gradient_norm": float(np.linalg.norm(g.grad)),
        "fisher_eigenvalues": eig.tolist(),
        "timings_s": {"load": load_s, "first_gradient_total": first_gradient_s,
                      "gradient_compile": g.timings["compile"], "gradient_run": g.timings["run"]},
        "fit": None if fit is None else {k: v for k, v in fit.items() if k != "x"} | {
            "x": dict(zip(prob.x_names, np.asarray(fit["x"]).tolist()))},
    }
    with io.output_folder(out, force) as tmp:
        sim.to_csv(tmp / "simulation.tsv", sep="\t", index=False)
        io.write_csv([{"parameter": n, "scale": s, "x": float(x), "gradient": float(d)}
                      for n, s, x, d in zip(prob.x_names, prob.scales, prob.x_nominal, g.grad)],
                     tmp / "gradient.csv")
        io.write_csv([dict(parameter=n, **{m: float(v) for m, v in zip(prob.x_names, row)})
                      for n, row in zip(prob.x_names, F)], tmp / "fisher.csv")
        if cfg.output.plots:
            (tmp / "plots").mkdir()
            plot_fit(prob, sim, tmp / "plots")
        io.write_json(summary, tmp / "summary.json")
    print(f"{prob.model.id}: nllh = {g.value:.6f} at the nominal parameters; |gradient| = "
          f"{np.linalg.norm(g.grad):.3g} ({g.mode}); Fisher eigenvalues {eig.min():.3g} .. {eig.max():.3g}"
          + ("" if fit is None else f"; fit: nllh = {fit['nllh']:.6f} after {fit['iterations']} iterations")
          + f"\nresults in {out}")
    return 0


def _fit(prob, mode: str, maxiter: int) -> dict:
    from scipy.optimize import minimize

    def fg(x):
        g = prob.gradient(x, mode=mode)
        return g.value, g.grad

    lo = np.where(np.isfinite(prob.lower), prob.lower, None)
    hi = np.where(np.isfinite(prob.upper), prob.upper, None)
    res = minimize(fg, prob.x_nominal, jac=True, method="L-BFGS-B", bounds=list(zip(lo, hi)),
                   options={"maxiter": maxiter})
    return {"x": res.x, "nllh": float(res.fun), "iterations": int(res.nit), "converged": bool(res.success),
            "message": str(res.message)}


def plot_fit(prob, sim, folder: Path) -> list[Path]:
    """One PNG per observable: measurements (points) and simulation (lines) per condition."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    files = []
    meas = prob.measurements
    for oid in prob.observable_ids:
        rows = meas["observableId"] == oid
        if not rows.any():
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        for k, cond in enumerate(dict.fromkeys(meas.loc[rows, "simulationConditionId"])):
            r = rows & (meas["simulationConditionId"] == cond)
            t = meas.loc[r, "time"].to_numpy(float)
            order = np.argsort(t, kind="stable")
            color = f"C{k % 10}"
            ax.plot(t[order], sim.loc[r, "simulation"].to_numpy(float)[order], "-", color=color, label=str(cond))
            ax.plot(t, meas.loc[r, "measurement"].to_numpy(float), "o", color=color, ms=3)
        ax.set_xlabel("time")
        ax.set_ylabel(oid)
        ax.set_title(f"{prob.model.id}: {oid} (points: data, lines: simulation)", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6)
        fig.tight_layout()
        path = folder / f"{oid}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        files.append(path)
    return files
