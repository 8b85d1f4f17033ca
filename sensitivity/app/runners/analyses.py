"""Running the `identifiability:` and `fit:` entries of a config's `analysis:` block and
writing their results. Their schema and their checks against the model are in
app/config/analyses.py (`IdentifiabilityConfig`, `FitConfig`, `check`), so validating a
config never imports this module; the CLI calls `run`, `write`, `summary` and `report`.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

from ...analyses.fit import fit
from ...analyses.identifiability import fisher, identifiability
from ...core.errors import InputError
from ..config.base import find


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
        with stage(f"identifiability ({problem.n_inputs} inputs, subsets up to {c.max_subset})"):
            p = problem if c.of is None else problem.replace(of=c.of)
            jac = result.jacobian if tuple(p.of) == tuple(result.jacobian.output_names) else None
            fi = fisher(p, c.sigma, scale=c.scale, jacobian=jac)
            out["identifiability"] = identifiability(fi, max_subset=c.max_subset, threshold=c.threshold,
                                                     eig_rtol=c.eig_rtol)
    if cfg.fit is not None:
        c = cfg.fit
        p = problem if c.wrt is None else problem.replace(wrt=c.wrt)
        path = find(c.data, Path(spec.source).resolve().parent)
        if path is None:
            raise InputError(f"analysis.fit.data: file '{c.data}' not found")
        bounds = {k: tuple(v) for k, v in c.bounds.items()} or None
        with stage(f"fit of {p.n_inputs} inputs to {path.name}"):
            out["fit"] = fit(p, path, sigma=c.sigma, log_params=c.log_params, method=c.method,
                             start=c.start or None, bounds=bounds, starts=c.starts,
                             ranges={k: tuple(v) for k, v in c.ranges.items()} or None, screen=c.screen,
                             max_iter=c.max_iter, tol=c.tol)
    return out


IDENT_FILES = ("identifiability.nc", "identifiability.csv", "collinearity.csv")
FIT_FILES = ("fit.nc", "fit.csv", "fit_path.csv", "fit_starts.csv")


def write(folder: Path, spec, extra: dict) -> list[str]:
    """Write the results of `run` into `folder` (NetCDF, CSV and, as output.plots allows,
    PNG); returns the file names."""
    files: list[str] = []
    plots = bool(spec.config.output.plots)
    ident = extra.get("identifiability")
    if ident is not None:
        ds = ident.dataset.copy()
        ds["sloppy"] = ds["sloppy"].astype("int8")
        ds["direction_label"] = ds["direction_label"].astype(str)
        ds.to_netcdf(folder / IDENT_FILES[0], engine="h5netcdf")
        ident.to_frame("inputs").to_csv(folder / IDENT_FILES[1], float_format="%.10g")
        ident.to_frame("subsets").to_csv(folder / IDENT_FILES[2], float_format="%.10g")
        files += list(IDENT_FILES)
        if plots:
            ident.plot(folder / "identifiability.png",
                       title=f"{spec.problem.model.name}: identifiability ({ident.fisher.n_observations} "
                             "observations)")
            files.append("identifiability.png")
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
    return files


def summary(extra: dict) -> dict:
    """Entries of summary.json for the results of `run`."""
    out: dict = {}
    ident = extra.get("identifiability")
    if ident is not None:
        ds = ident.dataset
        out["identifiability"] = {
            "identifiable": ident.identifiable, "scale": ident.fisher.scale,
            "non_identifiable": [list(s) for s in ident.non_identifiable],
            "sloppy_directions": list(ident.sloppy_directions), "insensitive": list(ident.insensitive),
            "eigenvalues": ds["eigenvalue"].values, "standard_error": dict(zip(ds["input"].values.tolist(),
                                                                               ds["standard_error"].values)),
            "jacobian_mode": ident.fisher.jacobian.mode, "summary": ident.summary(),
        }
    fit = extra.get("fit")
    if fit is not None:
        out["fit"] = {
            "method": fit.method, "success": fit.success, "message": fit.message, "cost": fit.cost,
            "nll": fit.nll, "estimates": fit.estimates,
            "standard_error": dict(zip(fit.input_names, fit.standard_error)),
            "sigma_estimated": fit.sigma_estimated, "iterations": fit.iterations,
            "evaluations": fit.evaluations, "notes": list(fit.notes), "timings": fit.timings,
        }
    return out


def report(extra: dict) -> list[str]:
    """The lines the CLI prints after a run."""
    lines = []
    ident = extra.get("identifiability")
    if ident is not None:
        lines.append("identifiability: " + ("all inputs locally identifiable" if ident.identifiable else
                                            "NOT identifiable: " + "; ".join(
                                                [f"{{{', '.join(s)}}}" for s in ident.non_identifiable]
                                                + list(ident.sloppy_directions) + list(ident.insensitive))))
    fit = extra.get("fit")
    if fit is not None:
        est = ", ".join(f"{k} = {v:.4g} +- {s:.2g}" for k, v, s in
                        zip(fit.input_names, fit.x, fit.standard_error))
        lines.append(f"fit ({fit.method}, {'converged' if fit.success else 'NOT converged'}, "
                     f"{fit.iterations} iterations): {est}")
    return lines
