"""Running the `identifiability:`, `fit:`, `design:`, `multistart:`, `profile:` and `sample:`
entries of a config's `analysis:` block and writing their results (the last three build on
the fit: runners/inference.py). Their schema and their checks against the model are in
app/config/analyses.py (`IdentifiabilityConfig`, `FitConfig`, `check`), so validating a
config never imports this module; the CLI calls `run`, `write`, `summary` and `report`.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from ...analyses.design import design
from ...analyses.fit import fit
from ...analyses.identifiability import fisher, identifiability
from ...core.errors import InputError
from ..config.base import find
from ..output import files as io
from . import inference


# --------------------------------------------------------------------------- running
def run(spec, result, stage=None) -> dict:
    """Run the config's identifiability and fit entries after the main run `result` (an
    `analysis.Analysis`); returns {"identifiability": Identifiability, "fit": FitResult}
    for those asked. The main run's Jacobian is reused when the outputs agree."""
    stage = stage or (lambda label: nullcontext())
    cfg = getattr(spec.config, "analysis", None)
    out: dict = {}
    if cfg is None:
        return out
    problem = spec.problem
    if cfg.identifiability is not None:
        c = cfg.identifiability
        data, sigma = cfg.identifiability_data()
        label = f"identifiability ({problem.n_inputs} inputs, subsets up to {c.max_subset}"
        if data is None:  # every output of `of` at every save time: the main run's Jacobian
            with stage(label + ")"):
                p = problem if c.of is None else problem.replace(of=c.of)
                jac = result.jacobian if tuple(p.of) == tuple(result.jacobian.output_names) else None
                fi = fisher(p, sigma, scale=c.scale, jacobian=jac)
        else:  # the data's values at their sampling times
            where = "analysis.identifiability.data" if c.data else "analysis.fit.data"
            path = find(data, Path(spec.source).resolve().parent)
            if path is None:
                raise InputError(f"{where}: file '{data}' not found")
            with stage(label + f", the values of {path.name})"):
                fi = fisher(problem, sigma, of=c.of, scale=c.scale, data=path)
        out["identifiability"] = identifiability(fi, max_subset=c.max_subset, threshold=c.threshold,
                                                 eig_rtol=c.eig_rtol)
    if cfg.fit is not None:
        c = cfg.fit
        p = problem if c.wrt is None else problem.replace(wrt=c.wrt)
        path = find(c.data, Path(spec.source).resolve().parent)
        if path is None:
            raise InputError(f"analysis.fit.data: file '{c.data}' not found")
        bounds = {k: tuple(v) for k, v in c.bounds.items()} or None
        ms = cfg.multistart
        starts = ms.starts if ms is not None else c.starts
        ranges = (ms.ranges if ms is not None and ms.ranges else None) or c.ranges
        label = f"fit of {p.n_inputs} inputs to {path.name}" + (f" from {starts} + 1 starts" if starts else "")
        with stage(label):
            out["fit"] = fit(p, path, sigma=c.sigma, log_params=c.log_params, method=c.method,
                             start=c.start or None, bounds=bounds, starts=starts,
                             ranges={k: tuple(v) for k, v in ranges.items()} or None,
                             screen=ms.screen if ms is not None else c.screen,
                             seed=ms.seed if ms is not None else 0, max_iter=c.max_iter, tol=c.tol)
        if cfg.profile is not None:
            out["profile"] = inference.run_profiles(out["fit"], cfg.profile, stage)
        if cfg.sample is not None:
            out["sample"] = inference.run_sample(out["fit"], cfg.sample, stage)
    if cfg.design is not None:
        c = cfg.design
        fixed = None
        if c.fixed is not None:
            fixed = find(c.fixed, Path(spec.source).resolve().parent)
            if fixed is None:
                raise InputError(f"analysis.design.fixed: file '{c.fixed}' not found")
        candidates = c.candidate_times()
        # the main run's Jacobian serves when the candidates are its save times and outputs
        jac = result.jacobian if candidates is None and fixed is None else None
        with stage(f"design of {c.n} measurements ({c.criterion}, {c.method})"):
            out["design"] = design(problem, candidates=candidates, n=c.n, criterion=c.criterion, sigma=c.sigma,
                                   fixed=fixed, parameters=c.parameters, scale=c.scale, method=c.method,
                                   costs=c.costs, budget=c.budget, replicates=c.replicates, jacobian=jac)
    return out


DESIGN_FILES = ("design.csv", "design_candidates.csv", "design_inputs.csv", "design_path.csv")
IDENT_FILES = ("identifiability.nc", "identifiability.csv", "collinearity.csv")
FIT_FILES = ("fit.nc", "fit.csv", "fit_path.csv", "fit_starts.csv")


def write(folder: Path, spec, extra: dict) -> list[str]:
    """Write the results of `run` into `folder` (NetCDF, CSV and, as output.plots allows,
    PNG); returns the file names."""
    files: list[str] = []
    plots = bool(spec.config.output.plots)
    ident = extra.get("identifiability")
    if ident is not None:
        files += identifiability_files(ident, folder, plots, title=f"{spec.problem.model.name}: identifiability "
                                                                   f"({ident.fisher.n_observations} observations)")
    fit = extra.get("fit")
    if fit is not None:
        fit.to_xarray().to_netcdf(folder / FIT_FILES[0], engine="h5netcdf")
        fit.to_frame().to_csv(folder / FIT_FILES[1], float_format="%.10g")
        fit.path.to_csv(folder / FIT_FILES[2], index=False, float_format="%.10g")
        fit.starts.to_csv(folder / FIT_FILES[3], index=False, float_format="%.10g")
        files += list(FIT_FILES)
        if plots:
            fit.plot(folder / "fit.png")
            files.append("fit.png")
        if fit.starts is not None and len(fit.starts) > 1:
            ms = spec.config.analysis.multistart
            files += io.write_multistart(folder, fit, plots, best=ms.best if ms is not None else 10)
    name = spec.problem.model.name
    if extra.get("profile") is not None:
        files += io.write_profiles(folder, extra["profile"], plots, title=f"{name}: profile likelihoods")
    if extra.get("sample") is not None:
        files += io.write_samples(folder, extra["sample"], plots, title=f"{name}: posterior")
    d = extra.get("design")
    if d is not None:
        files += design_files(d, folder, plots, title=f"{spec.problem.model.name}: {d.criterion}-optimal design "
                                                       f"of {d.n} measurements")
    return files


def identifiability_files(ident, folder: Path, plots: bool = True, title: str = "") -> list[str]:
    """Write an `Identifiability` into `folder`: identifiability.nc, identifiability.csv (per
    input), collinearity.csv (per subset) and identifiability.png."""
    ds = ident.dataset.copy()
    ds["sloppy"] = ds["sloppy"].astype("int8")
    ds["direction_label"] = ds["direction_label"].astype(str)
    ds.to_netcdf(folder / IDENT_FILES[0], engine="h5netcdf")
    ident.to_frame("inputs").to_csv(folder / IDENT_FILES[1], float_format="%.10g")
    ident.to_frame("subsets").to_csv(folder / IDENT_FILES[2], float_format="%.10g")
    files = list(IDENT_FILES)
    if plots:
        ident.plot(folder / "identifiability.png", title=title)
        files.append("identifiability.png")
    return files


def identifiability_summary(ident) -> dict:
    """The summary.json entry of an `Identifiability`."""
    ds = ident.dataset
    return {
        "identifiable": ident.identifiable, "scale": ident.fisher.scale,
        "n_observations": ident.fisher.n_observations, "non_identifiable": [list(s) for s in ident.non_identifiable],
        "sloppy_directions": list(ident.sloppy_directions), "insensitive": list(ident.insensitive),
        "eigenvalues": ds["eigenvalue"].values, "standard_error": dict(zip(ds["input"].values.tolist(),
                                                                           ds["standard_error"].values)),
        "jacobian_mode": ident.fisher.mode, "summary": ident.summary(),
    }


def identifiability_line(ident) -> str:
    """The CLI's line for an `Identifiability`."""
    return "identifiability: " + ("all inputs locally identifiable" if ident.identifiable else
                                  "NOT identifiable: " + "; ".join(
                                      [f"{{{', '.join(s)}}}" for s in ident.non_identifiable]
                                      + list(ident.sloppy_directions) + list(ident.insensitive)))


def design_files(d, folder: Path, plots: bool = True, title: str = "") -> list[str]:
    """Write a `Design` into `folder`: the chosen measurements, the candidates, the standard
    errors before and after, the criterion against n (CSV), and design.png."""
    d.to_frame("chosen").to_csv(folder / DESIGN_FILES[0], index=False, float_format="%.10g")
    d.to_frame("candidates").to_csv(folder / DESIGN_FILES[1], index=False, float_format="%.10g")
    d.to_frame("inputs").to_csv(folder / DESIGN_FILES[2], float_format="%.10g")
    d.to_frame("path").to_csv(folder / DESIGN_FILES[3], index=False, float_format="%.10g")
    files = list(DESIGN_FILES)
    if plots:
        d.plot(folder / "design.png", title=title)
        files.append("design.png")
    return files


def summary(extra: dict) -> dict:
    """Entries of summary.json for the results of `run`."""
    out: dict = {}
    ident = extra.get("identifiability")
    if ident is not None:
        out["identifiability"] = identifiability_summary(ident)
    fit = extra.get("fit")
    if fit is not None:
        out["fit"] = {
            "method": fit.method, "success": fit.success, "message": fit.message, "cost": fit.cost,
            "nll": fit.nll, "estimates": fit.estimates,
            "standard_error": dict(zip(fit.input_names, fit.standard_error)),
            "sigma_estimated": fit.sigma_estimated, "iterations": fit.iterations,
            "evaluations": fit.evaluations, "notes": list(fit.notes), "timings": fit.timings,
        }
        if fit.starts is not None and len(fit.starts) > 1:
            out["multistart"] = inference.multistart_summary(fit)
    if extra.get("profile") is not None:
        out["profile"] = inference.profile_summary(extra["profile"])
    if extra.get("sample") is not None:
        out["sample"] = inference.sample_summary(extra["sample"])
    d = extra.get("design")
    if d is not None:
        out["design"] = design_summary(d)
    return out


def design_summary(d) -> dict:
    """The summary.json entry of a `Design`."""
    return {
        "criterion": d.criterion, "method": d.method, "n": d.n, "parameters": d.parameters,
        "scale": d.scale, "value": d.value, "value_fixed": d.value_fixed,
        "efficiency_uniform": d.efficiency_uniform, "efficiency_bound": d.efficiency_bound,
        "chosen": d.to_frame("chosen").to_dict(orient="records"),
        "standard_error_before": dict(zip(d.input_names, d.standard_error_before)),
        "standard_error_after": dict(zip(d.input_names, d.standard_error_after)),
        "equivalence": d.equivalence, "timings": d.timings, "summary": d.summary(),
    }


def report(extra: dict) -> list[str]:
    """The lines the CLI prints after a run."""
    lines = []
    ident = extra.get("identifiability")
    if ident is not None:
        lines.append(identifiability_line(ident))
    fit = extra.get("fit")
    if fit is not None:
        est = ", ".join(f"{k} = {v:.4g} +- {s:.2g}" for k, v, s in
                        zip(fit.input_names, fit.x, fit.standard_error))
        lines.append(f"fit ({fit.method}, {'converged' if fit.success else 'NOT converged'}, "
                     f"{fit.iterations} iterations): {est}")
        if fit.starts is not None and len(fit.starts) > 1:
            lines += inference.multistart_lines(fit)
    if extra.get("profile") is not None:
        lines += inference.profile_lines(extra["profile"])
    if extra.get("sample") is not None:
        lines += inference.sample_lines(extra["sample"])
    d = extra.get("design")
    if d is not None:
        lines.append("design: " + d.summary().splitlines()[0])
    return lines
