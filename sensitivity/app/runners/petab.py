"""Running a PEtab problem: `sensitivity petab problem.yaml` and `sensitivity run` of a run
config with a `petab:` key (its schema is in app/config/petab.py).

A PEtab run: nominal nllh, its gradient (mode by the cost model unless given), the Fisher
information, optionally a fit (L-BFGS-B on the parameter scale within the bounds, exact
gradients; from several starts with fit.starts), profile likelihoods and posterior samples
from the fit (runners/inference.py), a design of the next experiment (design:, with new
conditions the design may choose), and plots of simulated vs measured values per
observable and condition. The result folder holds summary.json, simulation.tsv (PEtab
simulation table), gradient.csv, fisher.csv and plots/*.png, and as asked multistart.csv,
waterfall.png, profile_*.csv, profile_intervals.csv, profiles.png, samples.nc, samples.csv,
sample_diagnostics.csv (app/output/files.py), design*.csv and design.png (runners/analyses.py);
it is written atomically and never silently replaced.

This module imports the PEtab importer, hence JAX: the CLI loads it only to run a command.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from ...analyses.design import design
from ...analyses.identifiability import identifiability
from ...analyses.likelihood import PetabLikelihood, multistart
from ...core.errors import ConfigError, InputError, SolverError
from ...importers import petab, petab_rows
from ...importers.petab_v2 import T0
from ...plots import petab as petab_plots
from ..config.inference import PetabProfileConfig, PetabSampleConfig
from ..config.petab import (
    PetabDesign,
    PetabFit,
    PetabIdentifiability,
    PetabOutput,
    PetabRunConfig,
    PetabSolver,
    check_names,
    load,
)
from ..console import Progress
from ..output import files as io
from . import inference
from .analyses import design_files, design_summary, identifiability_files, identifiability_line, identifiability_summary

FIT_TOL = 1e-8  # of the local fits: L-BFGS-B's ftol 1e-10 (relative), gtol 1e-8 (projected gradient)
OPTIONS = {"fit.starts": "--starts", "fit.maxiter": "--maxiter", "fit.seed": "--seed", "profile.level": "--level",
           "profile.method": "--profile-method", "sample.n": "--sample", "sample.chains": "--chains",
           "sample.warmup": "--warmup", "sample.method": "--sampler", "sample.seed": "--seed",
           "design.n": "--design", "design.criterion": "--design-criterion", "design.method": "--design-method",
           "design.parameters": "--design-parameters", "design.times": "--design-times",
           "design.conditions": "--design-conditions"}


def command(args) -> int:
    """`sensitivity petab PROBLEM`."""
    starts, names = getattr(args, "starts", None), getattr(args, "profile", None)
    n_sample, seed = getattr(args, "sample", None), getattr(args, "seed", 0)
    profile = None if names is None else _block(PetabProfileConfig, "profile", parameters=list(names) or None,
                                                level=args.level, method=args.profile_method)
    sample = None if n_sample is None else _block(PetabSampleConfig, "sample", n=n_sample, chains=args.chains,
                                                  warmup=args.warmup, method=args.sampler, seed=seed)
    fit = _block(PetabFit, "fit", enabled=args.fit or starts is not None, maxiter=args.maxiter, starts=starts,
                 seed=seed)
    ident = PetabIdentifiability() if getattr(args, "identifiability", False) else None
    planned = _design_block(args)
    cfg = PetabRunConfig(petab=str(Path(args.problem).resolve()),
                         solver=PetabSolver(method=args.solver, rtol=args.rtol, atol=args.atol),
                         mode=args.mode, fit=fit, identifiability=ident, profile=profile, sample=sample,
                         design=planned, output=PetabOutput(dir=args.out, plots=not args.no_plots))
    found = [f.replace("profile.parameters", "--profile").replace("design.parameters", "--design-parameters")
             .replace("design.conditions", "--design-conditions") for f in check_names(cfg, Path(cfg.petab))]
    if found:
        raise ConfigError("; ".join(found), found)
    return run(cfg, force=args.force, quiet=args.quiet)


def _design_block(args) -> PetabDesign | None:
    """The `design:` block from --design N and the --design-* options (None without --design)."""
    n = getattr(args, "design", None)
    extra = {k: getattr(args, f"design_{k}", None) for k in ("criterion", "method", "parameters", "times",
                                                             "conditions")}
    if n is None:
        given = [f"--design-{k}" for k, v in extra.items() if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)}: needs --design N", given)
        return None
    values = {k: v for k, v in extra.items() if v is not None}
    if "conditions" in values:
        values["conditions"] = str(Path(values["conditions"]).resolve())
    return _block(PetabDesign, "design", n=n, **values)


def _block(schema, prefix: str, **values):
    """A block of the run config from the CLI's values; a bad value names its option."""
    try:
        return schema(**values)
    except ValidationError as exc:
        found = []
        for e in exc.errors(include_url=False):
            key = f"{prefix}.{e['loc'][0]}" if e["loc"] else prefix
            found.append(f"{OPTIONS.get(key, key)} = {e.get('input')!r}: {e['msg']}")
        raise ConfigError("; ".join(found), found) from None


def run_config(args) -> int:
    """`sensitivity run CONFIG` for a config with a `petab:` key."""
    cfg = load(args.config, out=getattr(args, "out", None), mode=getattr(args, "mode", None))
    return run(cfg, force=getattr(args, "force", False), quiet=getattr(args, "quiet", False))


# --------------------------------------------------------------------------- the run
def run(cfg: PetabRunConfig, force: bool = False, quiet: bool = False, design_n: int | None = None) -> int:
    """Compute and write a PEtab result folder; print a short report. Returns 0.
    design_n: a D-optimal design of that many measurements when the config has no design:
    block (the config's design: block says more: criterion, method, conditions, ...)."""
    def say(text):
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    out = Path(cfg.output.dir or Path("results") / Path(cfg.petab).stem)
    io.check_target(out, force)
    progress = Progress(quiet)
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
    fit = fitted = None
    x_best = prob.x_nominal
    extra: dict = {}
    if cfg.fits:
        n = cfg.fit.starts
        label = f"fitting {len(prob.x_names)} parameters (L-BFGS-B, maxiter {cfg.fit.maxiter})"
        lik = PetabLikelihood(prob, mode=g.mode)
        if n:  # a line per start instead of one stage
            progress.note(f"{label} from the nominal values and {n} Sobol starts")
            fitted = multistart(inference.Announced(lik, n + 1, progress.note), starts=n, seed=cfg.fit.seed,
                                max_iter=cfg.fit.maxiter, tol=FIT_TOL)
        else:
            with progress.stage(label):
                fitted = multistart(lik, starts=None, max_iter=cfg.fit.maxiter, tol=FIT_TOL)
        fitted = dataclasses.replace(fitted, likelihood=lik)
        fit = _fit_entry(prob, fitted, g.mode)
        x_best = fit["x"]
        if n:
            extra["multistart"] = fitted
        if cfg.profile is not None:
            target = _with_priors(prob, fitted, cfg.profile.priors, g.mode, refit=True)
            extra["profile"] = inference.run_profiles(target, cfg.profile, progress.stage)
        if cfg.sample is not None:
            target = _with_priors(prob, fitted, cfg.sample.priors, g.mode, refit=False)
            extra["sample"] = inference.run_sample(target, cfg.sample, progress.stage)
    ident = None
    if cfg.identifiability is not None:
        c = cfg.identifiability
        with progress.stage(f"identifiability at the {'fitted' if fit else 'nominal'} parameters"):
            ident = identifiability(prob, x=x_best, max_subset=c.max_subset, threshold=c.threshold,
                                    eig_rtol=c.eig_rtol)
    sim = prob.simulate(x_best)
    planned = None
    spec = cfg.design if cfg.design is not None else PetabDesign(n=design_n) if design_n else None
    if spec is not None:
        size = f"{spec.n} measurements" if spec.n else f"measurements within a budget of {spec.budget:g}"
        with progress.stage(f"design of {size} ({spec.criterion}, {spec.method}) at the "
                            f"{'fitted' if fit else 'nominal'} parameters"):
            planned = design(prob, candidates=spec.candidate_times(), n=spec.n, criterion=spec.criterion,
                             parameters=spec.parameters, method=spec.method, costs=spec.costs, budget=spec.budget,
                             replicates=spec.replicates, x=x_best, conditions=spec.conditions)
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
    lines = []
    with io.output_folder(out, force) as tmp:
        files = ["summary.json", "simulation.tsv", "gradient.csv", "fisher.csv"]
        sim.to_csv(tmp / "simulation.tsv", sep="\t", index=False)
        io.write_csv([{"parameter": n, "scale": s, "x": float(x), "gradient": float(d)}
                      for n, s, x, d in zip(prob.x_names, prob.scales, prob.x_nominal, g.grad)],
                     tmp / "gradient.csv")
        io.write_csv([dict(parameter=n, **{m: float(v) for m, v in zip(prob.x_names, row)})
                      for n, row in zip(prob.x_names, F)], tmp / "fisher.csv")
        if cfg.output.plots:
            (tmp / "plots").mkdir()
            files += [f"plots/{p.name}" for p in plot_fit(prob, tmp / "plots", x=x_best)]
        if planned is not None:
            files += design_files(planned, tmp, plots=cfg.output.plots,
                                  title=f"{prob.model.id}: {planned.criterion}-optimal design")
            summary["design"] = design_summary(planned)
        name = prob.model.id
        if ident is not None:
            files += identifiability_files(ident, tmp, cfg.output.plots, title=f"{name}: identifiability at the "
                                                                              f"{'fit' if fit else 'nominal values'}")
            summary["identifiability"] = identifiability_summary(ident)
            lines.append(identifiability_line(ident))
        if "multistart" in extra:
            files += io.write_multistart(tmp, fitted, cfg.output.plots, best=cfg.fit.best)
            summary["multistart"] = inference.multistart_summary(fitted)
            lines += inference.multistart_lines(fitted)
        if "profile" in extra:
            files += io.write_profiles(tmp, extra["profile"], cfg.output.plots, title=f"{name}: profile likelihoods")
            summary["profile"] = inference.profile_summary(extra["profile"])
            lines += inference.profile_lines(extra["profile"])
        if "sample" in extra:
            files += io.write_samples(tmp, extra["sample"], cfg.output.plots, title=f"{name}: posterior")
            summary["sample"] = inference.sample_summary(extra["sample"])
            lines += inference.sample_lines(extra["sample"])
        summary["files"] = files
        io.write_json(summary, tmp / "summary.json")
    print(f"{prob.model.id}: nllh = {g.value:.6f} at the nominal parameters; |gradient| = "
          f"{np.linalg.norm(g.grad):.3g} ({g.mode}); Fisher eigenvalues {eig.min():.3g} .. {eig.max():.3g}"
          + ("" if fit is None else "\n" + fit_line(fit))
          + "".join("\n" + ln for ln in lines)
          + ("" if planned is None else "\ndesign: " + planned.summary().splitlines()[0])
          + f"\nresults in {out}")
    return 0


def _fit_entry(prob, fitted, mode: str) -> dict:
    """The summary's fit entry of a `LikelihoodFit`: the best start's estimate, nllh,
    iterations, the optimiser's verdict and message, and the projected gradient's norm."""
    row = fitted.starts.iloc[int(np.argmin(np.where(np.isfinite(fitted.start_values()), fitted.start_values(),
                                                    np.inf)))]
    lo = np.where(np.isfinite(prob.lower), prob.lower, None)
    hi = np.where(np.isfinite(prob.upper), prob.upper, None)
    grad = prob.gradient(fitted.x, mode=mode).grad
    return {"x": np.asarray(fitted.x), "nllh": float(fitted.nllh), "iterations": int(row["iterations"]),
            "converged": bool(fitted.success), "message": str(row["message"]),
            "gradient_norm": float(np.linalg.norm(_projected(fitted.x, grad, lo, hi))),
            "starts": len(fitted.starts)}


def _with_priors(prob, fitted, priors: bool, mode: str, refit: bool):
    """The fit with the problem's objective priors in its likelihood when asked and the
    problem has any (refit: the estimate re-optimised with them, from the fit's)."""
    if not (priors and getattr(prob, "priors", None)):
        return fitted
    lik = PetabLikelihood(prob, priors=True, mode=mode)
    x, v = fitted.x, fitted.nllh
    if refit:
        x, v, _, _, _ = lik.minimize(fitted.x)
    return dataclasses.replace(fitted, likelihood=lik, x=np.asarray(x), nllh=float(v))


def fit_line(fit: dict) -> str:
    """The fit's verdict in words: converged or NOT, with the optimiser's reason."""
    where = (f"nllh = {fit['nllh']:.6f}, |projected gradient| = {fit['gradient_norm']:.3g}, after "
             f"{fit['iterations']} iterations")
    if fit["converged"]:
        return f"fit: converged: {where} ({fit['message']})"
    return (f"fit: NOT converged: {where}; the optimiser stopped with '{fit['message']}'. The estimate is not "
            "an optimum: raise --maxiter (fit.maxiter in a run config), or start elsewhere.")


def _projected(x, g, lo, hi) -> np.ndarray:
    """The gradient without the components that push against an active bound."""
    lo = np.array([-np.inf if v is None else v for v in lo], dtype=np.float64)
    hi = np.array([np.inf if v is None else v for v in hi], dtype=np.float64)
    g = np.asarray(g, dtype=np.float64)
    return np.where(((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0)), 0.0, g)


def plot_fit(prob, folder: Path, x=None, n_grid: int = 200) -> list[Path]:
    """The fit's figures (plots/petab.py) at x (default the nominal values): per observable
    <observableId>.png, the simulation on a fine time grid per experiment with its noise
    band and the data; with a visualization table one vis_<plotId>.png per plotId. What the
    figures cannot follow goes to notes.txt beside them."""
    mdf = prob.measurements
    starts = None
    if T0 in mdf:  # a PEtab 2 experiment starts at its t0
        starts = {(p, s): float(t) for p, s, t in zip(mdf["preequilibrationConditionId"],
                                                      mdf["simulationConditionId"], mdf[T0])}

    def simulate(rows):
        out = petab_rows.simulate_rows(prob, rows, x=x, finite=False)
        return out.simulation, out.sigma

    P = prob.petab
    try:
        files, notes = petab_plots.fit_figures(mdf, P.observable_df, simulate, folder, conditions=P.condition_df,
                                               visualization=getattr(P, "visualization_df", None),
                                               title=prob.model.id, n_grid=n_grid, starts=starts)
    except (SolverError, InputError) as exc:  # the figures fail, the results stand
        files, notes = [], [f"no figures: the simulation for them failed: {exc}"]
    if notes:
        (folder / "notes.txt").write_text("\n".join(notes) + "\n")
        files.append(folder / "notes.txt")
    return files
