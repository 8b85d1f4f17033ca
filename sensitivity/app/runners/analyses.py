"""The `identifiability:` and `fit:` entries of a config's `analysis:` block: their schema
(fields of `gsa.config.AnalysisConfig`, beside sobol, morris and dgsm), their checks
against the model, running them and writing their results.

    analysis:
      identifiability: {sigma: 0.1, scale: log, max_subset: 3, threshold: 15}
      fit:
        data: data/observations.csv       # long (time, output, value[, sigma]) or wide (time + outputs)
        sigma: 0.1                        # or {output: sigma}; omit: estimated from the residuals
        start: {k: 1.0}                   # default: the config's values
        wrt: [k, b]                       # default: sensitivity.wrt
        bounds: {k: [0.01, 100]}
        method: auto                      # auto | least_squares | trust-ncg
        starts: 4                         # multi-start from Sobol points over ranges
        ranges: {k: [0.1, 10]}

The config module calls `check(...)` while validating (names, data file), the CLI calls
`run`, `write`, `summary` and `report` (small hooks); nothing here imports JAX at import
time, so validation stays compile-free.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ...core.errors import InputError, did_you_mean, list_names


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def _sigma(v, allow_none: bool):
    if v is None and allow_none:
        return None
    if isinstance(v, Mapping):
        bad = [k for k, x in v.items() if not _positive(x)]
        if bad:
            raise ValueError(f"sigma.{bad[0]} = {v[bad[0]]!r} must be a positive number")
        return dict(v)
    if not _positive(v):
        raise ValueError(f"sigma = {v!r} must be a positive number or a mapping output -> positive number"
                         + (" (or omitted: estimated from the residuals)" if allow_none else ""))
    return float(v)


def _pairs(v, key: str):
    for name, pair in (v or {}).items():
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise ValueError(f"{key}.{name} = {pair!r} must be [low, high]")
        lo, hi = pair
        for x in (lo, hi):
            if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(x)):
                raise ValueError(f"{key}.{name} = {pair!r}: bounds must be numbers (null: none)")
        if lo is not None and hi is not None and not lo < hi:
            raise ValueError(f"{key}.{name} = {pair!r}: low must be below high")
    return v


class IdentifiabilityConfig(_Strict):
    """`analysis.identifiability:` the Fisher information of sensitivity.wrt and what it says."""

    sigma: Any = 1.0
    of: Optional[list[str]] = None
    scale: Literal["log", "linear"] = "log"
    max_subset: Annotated[int, Field(ge=1, le=6)] = 3
    threshold: Annotated[float, Field(gt=1)] = 15.0
    eig_rtol: Annotated[float, Field(gt=0, lt=1)] = 1e-8

    @field_validator("sigma")
    @classmethod
    def _check_sigma(cls, v):
        return _sigma(v, allow_none=False)


class FitConfig(_Strict):
    """`analysis.fit:` fit inputs to a data file by least squares / Gaussian NLL."""

    data: str
    sigma: Any = None
    wrt: Optional[list[str]] = None
    start: dict[str, float] = {}
    bounds: dict[str, list[Optional[float]]] = {}
    log_params: bool = True
    method: Literal["auto", "least_squares", "trust-ncg"] = "auto"
    starts: Optional[Annotated[int, Field(ge=1, le=10_000)]] = None
    ranges: dict[str, list[float]] = {}
    screen: Optional[Annotated[int, Field(ge=0, le=1_000_000)]] = None
    max_iter: Annotated[int, Field(ge=1)] = 200
    tol: Annotated[float, Field(gt=0, lt=1)] = 1e-10

    @field_validator("sigma")
    @classmethod
    def _check_sigma(cls, v):
        return _sigma(v, allow_none=True)

    @field_validator("bounds")
    @classmethod
    def _check_bounds(cls, v):
        return _pairs(v, "bounds")

    @field_validator("ranges")
    @classmethod
    def _check_ranges(cls, v):
        return _pairs(v, "ranges")

    @field_validator("wrt", mode="before")
    @classmethod
    def _one_name(cls, v):
        return [v] if isinstance(v, str) else v

    @model_validator(mode="after")
    def _starts_need_ranges(self):
        if self.starts is not None and not self.ranges:
            raise ValueError("@ranges: a multi-start fit (starts) samples its starts from ranges: "
                             "{input: [low, high]}; add ranges or remove starts")
        return self


# --------------------------------------------------------------------------- checks
def _locate(relative: str, base: Path) -> list[Path]:
    p = Path(relative).expanduser()
    if p.is_absolute():
        return [p]
    return list(dict.fromkeys([(base / p).resolve(), (Path.cwd() / p).resolve()]))


def data_path(fit_cfg: FitConfig, base: Path) -> Path | None:
    """The fit's data file: next to the config, else in the current folder; None if absent."""
    return next((p for p in _locate(fit_cfg.data, base) if p.is_file()), None)


def check(raw: dict, model, base: Path, span: tuple[float, float] | None) -> list[str]:
    """Problems of the raw `analysis:` identifiability and fit entries against the model:
    output and input names, the data file (readable, known outputs, times in the span).
    Values of a wrong type are left to the schema."""
    from ...core.problem import resolve_inputs

    analysis = raw.get("analysis") if isinstance(raw.get("analysis"), dict) else {}
    problems: list[str] = []
    sens = raw.get("sensitivity") if isinstance(raw.get("sensitivity"), dict) else {}
    of = sens.get("of")
    outputs = list(model.observables) + [s for s in model.states if s not in model.observables]
    chosen = [of] if isinstance(of, str) else of if isinstance(of, list) else list(model.outputs)

    def names_of(wrt) -> list[str] | None:
        try:
            return list(r.name for r in resolve_inputs(model, wrt))
        except InputError:
            return None  # reported by the config's own checks

    base_wrt = sens.get("wrt")
    ident = analysis.get("identifiability")
    if isinstance(ident, dict):
        ident_of = ident.get("of") if isinstance(ident.get("of"), list) else chosen
        for i, name in enumerate(ident.get("of") or [] if isinstance(ident.get("of"), list) else []):
            if name not in outputs:
                problems.append(f"analysis.identifiability.of[{i}] = '{name}': no such output"
                                f"{did_you_mean(name, outputs)}; outputs: {list_names(outputs)}")
        if isinstance(ident.get("sigma"), dict):
            for name in ident["sigma"]:
                if name not in ident_of:
                    problems.append(f"analysis.identifiability.sigma.{name}: not an observed output"
                                    f"{did_you_mean(name, ident_of)}; outputs: {list_names(ident_of)}")
            missing = [o for o in ident_of if o in outputs and o not in ident["sigma"]]
            if missing:
                problems.append(f"analysis.identifiability.sigma: no value for output '{missing[0]}'; give "
                                "one per output, or one number for all")
    fit = analysis.get("fit")
    if isinstance(fit, dict):
        wrt = fit.get("wrt", base_wrt)
        if isinstance(fit.get("wrt"), (list, str)):
            for i, name in enumerate([wrt] if isinstance(wrt, str) else wrt):
                if isinstance(name, str) and names_of([name]) is None:
                    valid = list(model.parameters) + [f"y0.{s}" for s in model.states]
                    problems.append(f"analysis.fit.wrt[{i}] = '{name}': not a parameter or initial value"
                                    f"{did_you_mean(name, valid)}; valid: {list_names(valid)}")
        inputs = names_of(wrt) if not isinstance(wrt, str) or wrt else None
        if inputs is not None:
            for key in ("start", "bounds", "ranges"):
                for name in fit.get(key) or {} if isinstance(fit.get(key), dict) else {}:
                    if name not in inputs:
                        problems.append(f"analysis.fit.{key}.{name}: not a fitted input"
                                        f"{did_you_mean(name, inputs)}; fitted inputs: {list_names(inputs)}")
        data = fit.get("data")
        if isinstance(data, str) and data.strip():
            found = next((p for p in _locate(data, base) if p.is_file()), None)
            if found is None:
                problems.append(f"analysis.fit.data: file '{data}' not found (looked in "
                                f"{', '.join(map(str, _locate(data, base)))})")
            else:
                from ...analyses.fit import read_data

                try:
                    df = read_data(found, outputs)
                except InputError as exc:
                    problems.append(f"analysis.fit.data: {found}: {exc}")
                else:
                    if span is not None and (df["time"].min() < span[0] or df["time"].max() > span[1]):
                        problems.append(f"analysis.fit.data: {found} has times in [{df['time'].min():g}, "
                                        f"{df['time'].max():g}], outside the simulated span [{span[0]:g}, "
                                        f"{span[1]:g}]; widen time: or drop those rows")
                    if isinstance(fit.get("sigma"), dict) and "sigma" not in df.columns:
                        for o in dict.fromkeys(df["output"]):
                            if o not in fit["sigma"]:
                                problems.append(f"analysis.fit.sigma: no value for observed output '{o}'")
    return problems


# --------------------------------------------------------------------------- running
def run(spec, result, stage=None) -> dict:
    """Run the config's identifiability and fit entries after the main run `result` (an
    `analysis.Analysis`); returns {"identifiability": Identifiability, "fit": FitResult}
    for those asked. The main run's Jacobian is reused when the outputs agree."""
    from contextlib import nullcontext

    stage = stage or (lambda label: nullcontext())
    cfg = getattr(spec.config, "analysis", None)
    out: dict = {}
    if cfg is None:
        return out
    problem = spec.problem
    if cfg.identifiability is not None:
        from ...analyses.identifiability import fisher, identifiability

        c = cfg.identifiability
        with stage(f"identifiability ({problem.n_inputs} inputs, subsets up to {c.max_subset})"):
            p = problem if c.of is None else problem.replace(of=c.of)
            jac = result.jacobian if tuple(p.of) == tuple(result.jacobian.output_names) else None
            fi = fisher(p, c.sigma, scale=c.scale, jacobian=jac)
            out["identifiability"] = identifiability(fi, max_subset=c.max_subset, threshold=c.threshold,
                                                     eig_rtol=c.eig_rtol)
    if cfg.fit is not None:
        from ...analyses.fit import fit

        c = cfg.fit
        p = problem if c.wrt is None else problem.replace(wrt=c.wrt)
        path = data_path(c, Path(spec.source).resolve().parent)
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
