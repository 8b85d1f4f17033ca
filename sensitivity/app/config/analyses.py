"""The YAML schema of the `analysis:` block and of the executor, and their checks against
the model.

    analysis:
      ranges: {alpha: [0.5, 1.5], beta: {low: 0.05, high: 0.2, distribution: log-uniform}}
      sobol:  {n: 1024}                      # every output at every save time
      morris: {trajectories: 20, levels: 4, at: [5.0, 10.0]}
      dgsm:   {n: 512}                       # of sensitivity.objective (required)
      identifiability: {sigma: 0.1, scale: log, max_subset: 3, threshold: 15}
                                             # data: FILE (default the fit's; false: every save time)
      fit:
        data: data/observations.csv       # long (time, output, value[, sigma]) or wide (time + outputs)
        sigma: 0.1                        # or {output: sigma}; omit: estimated from the residuals
        start: {k: 1.0}                   # default: the config's values
        wrt: [k, b]                       # default: sensitivity.wrt
        bounds: {k: [0.01, 100]}
        method: auto                      # auto | least_squares | trust-ncg
        starts: 4                         # multi-start from Sobol points over ranges
        ranges: {k: [0.1, 10]}
      design:                             # the next experiment (sens.design)
        n: 6                              # measurements to add
        criterion: D                      # D | A | E | ME | D_s | A_s (with parameters)
        sigma: 0.1                        # or {output: sigma}
        candidates: {from: 0, to: 24, points: 97}   # or [times], or {output: [times]}
        fixed: data/observations.csv      # today's data (time, output[, value, sigma])
        method: exchange                  # exchange | greedy | continuous
    executor: {local: 4}                     # or {address: tcp://host:8786}; default in process

`analysis.ranges` is shared; a method's own `ranges` replaces it. `objective: true` makes
Sobol or Morris analyse sensitivity.objective instead of every output. `name_problems` and
`check` compare the raw block with the model (names, the fit's data file) while the config
is validated; app/runners/gsa.py and app/runners/analyses.py run the analyses. No JAX here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import Field, StrictStr, field_validator, model_validator

from ...core.data import read_data
from ...core.errors import InputError, did_you_mean, list_names
from ...core.problem import resolve_inputs
from ...core.ranges import parse_range
from .base import Strict, check_sigma, find, locate, one_name
from .inference import MultistartConfig, ProfileConfig, SampleConfig
from .inference import name_problems as _inference_problems


def _check_ranges(v):
    """Light checks of a ranges mapping (names are checked against the model later)."""
    if v is None:
        return v
    if not isinstance(v, dict) or not v:
        raise ValueError("must be a mapping input -> [low, high] (or {low, high, distribution})")
    for name, spec in v.items():
        if isinstance(spec, (list, tuple)):
            if len(spec) not in (2, 3) or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                  and math.isfinite(x) for x in spec[:2]):
                raise ValueError(f"@{name}: {spec!r} must be [low, high] or [low, high, distribution]")
        elif not isinstance(spec, dict):
            raise ValueError(f"@{name}: {spec!r} must be [low, high] or a mapping {{low, high, distribution}}")
    return v


class _Method(Strict):
    ranges: Optional[dict[str, Any]] = None
    seed: Annotated[int, Field(ge=0)] = 0
    num_resamples: Annotated[int, Field(ge=2, le=100_000)] = 100
    conf_level: Annotated[float, Field(gt=0, lt=1)] = 0.95

    @field_validator("ranges")
    @classmethod
    def _ranges(cls, v):
        return _check_ranges(v)


class SobolConfig(_Method):
    """`analysis.sobol:` n base rows (n (D + 2) runs), optional outputs `of` and save times
    `at`, or `objective: true` for the sensitivity.objective."""

    n: Annotated[int, Field(ge=4, le=2**24)] = 1024
    of: Optional[list[str]] = None
    at: Optional[list[float]] = None
    objective: bool = False

    @model_validator(mode="after")
    def _objective_alone(self):
        if self.objective and (self.of is not None or self.at is not None):
            raise ValueError("@objective: analyses sensitivity.objective over its own outputs and times; "
                             "remove of/at or set objective: false")
        if self.n & (self.n - 1):
            raise ValueError(f"@n: {self.n} is not a power of 2 (Sobol' points keep their balance at "
                             f"powers of 2), e.g. {2 ** round(math.log2(self.n))}")
        return self


class MorrisConfig(_Method):
    """`analysis.morris:` trajectories of D + 1 runs on a grid of `levels` levels."""

    trajectories: Annotated[int, Field(ge=2, le=100_000)] = 20
    levels: Annotated[int, Field(ge=2, le=100)] = 4
    of: Optional[list[str]] = None
    at: Optional[list[float]] = None
    objective: bool = False

    @model_validator(mode="after")
    def _checks(self):
        if self.levels % 2:
            raise ValueError(f"@levels: {self.levels} must be even (e.g. 4)")
        if self.objective and (self.of is not None or self.at is not None):
            raise ValueError("@objective: remove of/at or set objective: false")
        return self


class DGSMConfig(_Method):
    """`analysis.dgsm:` n gradients of sensitivity.objective at scrambled Sobol' points."""

    n: Annotated[int, Field(ge=4, le=2**24)] = 1024
    mode: str = "auto"

    @field_validator("mode")
    @classmethod
    def _mode(cls, v):
        if v not in ("auto", "forward", "adjoint"):
            raise ValueError("must be one of auto, forward, adjoint")
        return v


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


class IdentifiabilityConfig(Strict):
    """`analysis.identifiability:` the Fisher information of sensitivity.wrt and what it says.

    data: a data file (as `analysis.fit.data`): only its values count, at their sampling
    times; omitted: the fit's data where the config has `analysis.fit`, else every output
    in `of` at every save time; false: the save times even with a fit. sigma: each value's
    standard deviation where the data has no sigma column (omitted: with the fit's data the
    fit's sigma when it gives one, else 1)."""

    sigma: Any = 1.0
    data: Optional[Union[StrictStr, Literal[False]]] = None
    of: Optional[list[str]] = None
    scale: Literal["log", "linear"] = "log"
    max_subset: Annotated[int, Field(ge=1, le=6)] = 3
    threshold: Annotated[float, Field(gt=1)] = 15.0
    eig_rtol: Annotated[float, Field(gt=0, lt=1)] = 1e-8

    @field_validator("sigma")
    @classmethod
    def _check_sigma(cls, v):
        return check_sigma(v, allow_none=False)

    @field_validator("data")
    @classmethod
    def _check_data(cls, v):
        if isinstance(v, str) and not v.strip():
            raise ValueError("an empty file name; give a data file, or false for the save times")
        return v


class FitConfig(Strict):
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
        return check_sigma(v, allow_none=True)

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
        return one_name(v)

    @model_validator(mode="after")
    def _starts_need_ranges(self):
        if self.starts is not None and not self.ranges:
            raise ValueError("@ranges: a multi-start fit (starts) samples its starts from ranges: "
                             "{input: [low, high]}; add ranges or remove starts")
        return self


class DesignConfig(Strict):
    """`analysis.design:` the next experiment: the n measurements (time, output) among the
    candidates that add the most information to the fixed data (sens.design)."""

    n: Annotated[int, Field(ge=1, le=100_000)]
    criterion: Literal["D", "A", "E", "ME", "D_s", "A_s"] = "D"
    sigma: Any = 1.0
    candidates: Optional[Any] = None
    fixed: Optional[str] = None
    parameters: Optional[list[str]] = None
    scale: Literal["log", "linear"] = "log"
    method: Literal["exchange", "greedy", "continuous"] = "exchange"
    costs: Optional[dict[str, Annotated[float, Field(gt=0)]]] = None
    budget: Optional[Annotated[float, Field(gt=0)]] = None
    replicates: bool = True

    @field_validator("sigma")
    @classmethod
    def _check_sigma(cls, v):
        return check_sigma(v, allow_none=False)

    @field_validator("candidates")
    @classmethod
    def _check_candidates(cls, v):
        """A list of times, {from, to, points}, or a mapping output -> list of times."""
        def times(x, where):
            if not (isinstance(x, list) and x and all(isinstance(t, (int, float)) and not isinstance(t, bool)
                                                      and math.isfinite(t) for t in x)):
                raise ValueError(f"{where}: {x!r} must be a non-empty list of times")
        if v is None:
            return v
        if isinstance(v, list):
            times(v, "@candidates")
        elif isinstance(v, dict) and set(v) == {"from", "to", "points"}:
            if not (isinstance(v["points"], int) and v["points"] >= 2 and v["from"] < v["to"]):
                raise ValueError("@candidates: {from, to, points} needs from < to and points >= 2")
        elif isinstance(v, dict):
            for k, x in v.items():
                times(x, f"@candidates.{k}")
        else:
            raise ValueError("@candidates: give a list of times, {from, to, points}, or a mapping output -> times")
        return v

    @model_validator(mode="after")
    def _subset(self):
        if self.criterion in ("D_s", "A_s") and not self.parameters:
            raise ValueError(f"@parameters: criterion {self.criterion} needs the parameters of interest")
        if self.budget is not None and self.costs is None:
            raise ValueError("@budget: needs costs: {output: cost}")
        return self

    def candidate_times(self):
        """`candidates` as sens.design takes them (None, times, or output -> times)."""
        v = self.candidates
        if isinstance(v, dict) and set(v) == {"from", "to", "points"}:
            a, b, k = float(v["from"]), float(v["to"]), int(v["points"])
            return [a + (b - a) * i / (k - 1) for i in range(k)]
        return v


class AnalysisConfig(Strict):
    """`analysis:` global analyses of the problem. `ranges` is shared by the methods."""

    ranges: Optional[dict[str, Any]] = None
    batch: Optional[Annotated[int, Field(ge=1, le=1_000_000)]] = None
    sobol: Optional[SobolConfig] = None
    morris: Optional[MorrisConfig] = None
    dgsm: Optional[DGSMConfig] = None
    identifiability: Optional[IdentifiabilityConfig] = None
    fit: Optional[FitConfig] = None
    design: Optional[DesignConfig] = None
    multistart: Optional[MultistartConfig] = None  # after the fit: config/inference.py
    profile: Optional[ProfileConfig] = None
    sample: Optional[SampleConfig] = None

    @field_validator("ranges")
    @classmethod
    def _ranges(cls, v):
        return _check_ranges(v)

    @model_validator(mode="after")
    def _after_a_fit(self):
        for name in ("multistart", "profile", "sample"):
            if getattr(self, name) is not None and self.fit is None:
                raise ValueError(f"@{name}: needs analysis.fit (the data, sigma and inputs of the likelihood); "
                                 "add analysis.fit: {data: FILE, sigma: ...}")
        if self.multistart is not None:
            if self.fit.starts is not None:
                raise ValueError("@multistart: analysis.fit.starts asks for a multi-start too; give the "
                                 "starts in one place")
            if not (self.multistart.ranges or self.fit.ranges):
                raise ValueError("@multistart: the starts are drawn from ranges: {input: [low, high]} (in "
                                 "analysis.multistart.ranges or analysis.fit.ranges); add them")
        return self

    @model_validator(mode="after")
    def _have_ranges(self):
        for name in ("sobol", "morris", "dgsm"):
            method = getattr(self, name)
            if method is not None and method.ranges is None and self.ranges is None:
                raise ValueError(f"@{name}: needs ranges: give analysis.ranges or analysis.{name}.ranges, "
                                 "e.g. {alpha: [0.5, 1.5]}")
        return self

    def identifiability_data(self) -> tuple:
        """(data file, sigma) of the identifiability entry: its own `data`, else the fit's
        (None: the save times); its own sigma when given, else with the fit's data the fit's
        sigma when it gives one, else 1."""
        c = self.identifiability
        data = c.data if c.data is not None else self.fit.data if self.fit is not None else None
        if data is False:
            data = None
        sigma = c.sigma
        if "sigma" not in c.model_fields_set and data is not None and c.data is None and self.fit is not None \
                and self.fit.sigma is not None:
            sigma = self.fit.sigma
        return data, sigma

    def methods(self) -> dict:
        """name -> the method's config, for the methods asked for."""
        return {k: getattr(self, k) for k in ("sobol", "morris", "dgsm") if getattr(self, k) is not None}

    def ranges_of(self, method) -> dict:
        return dict(method.ranges if method.ranges is not None else self.ranges)


class ExecutorConfig(Strict):
    """`executor:` where ensembles run: `{local: N}` (a LocalCluster of N worker processes)
    or `{address: tcp://host:8786}` (a running Dask scheduler); default in process."""

    local: Optional[Annotated[int, Field(ge=1, le=4096)]] = None
    address: Optional[str] = None
    retries: Annotated[int, Field(ge=0, le=100)] = 2

    @model_validator(mode="after")
    def _one(self):
        if self.local is not None and self.address is not None:
            raise ValueError("give one of local: N and address: tcp://host:port, not both")
        if self.address is not None and "://" not in self.address:
            raise ValueError(f"@address: '{self.address}' is not a scheduler address like tcp://host:8786")
        return self

    def target(self) -> str | None:
        """The `executor=` of sens.ensemble: "local:N", the address, or None."""
        if self.local is not None:
            return f"local:{self.local}"
        return self.address


def name_problems(data: dict, model) -> list[str]:
    """Input and output names of the raw `analysis:` block checked against the model
    (values of a wrong type are left to the schema)."""
    problems = []
    block = data.get("analysis") if isinstance(data, dict) else None
    if not isinstance(block, dict):
        return problems
    places = [("analysis.ranges", block.get("ranges"))]
    for name in ("sobol", "morris", "dgsm"):
        method = block.get(name)
        if isinstance(method, dict):
            places.append((f"analysis.{name}.ranges", method.get("ranges")))
            of = method.get("of")
            valid = list(model.outputs) + [s for s in model.states if s not in model.outputs]
            for i, o in enumerate(of if isinstance(of, list) else []):
                if isinstance(o, str) and o not in valid:
                    problems.append(f"analysis.{name}.of[{i}] = '{o}': no such output{did_you_mean(o, valid)}; "
                                    f"outputs: {list_names(valid)}")
    for where, ranges in places:
        for key, spec in (ranges if isinstance(ranges, dict) else {}).items():
            try:
                resolve_inputs(model, [key])
                parse_range(str(key), spec)
            except InputError as exc:
                problems.append(f"{where}.{key}: " + str(exc).split(": ", 1)[-1])
    sens_block = data.get("sensitivity") if isinstance(data.get("sensitivity"), dict) else {}
    needs = [n for n in ("dgsm",) if isinstance(block.get(n), dict)]
    needs += [n for n in ("sobol", "morris") if isinstance(block.get(n), dict) and block[n].get("objective")]
    for n in needs:
        if not sens_block.get("objective"):
            problems.append(f"analysis.{n}: needs sensitivity.objective (the scalar to analyse); add one")
    return problems


def check(raw: dict, model, base: Path, span: tuple[float, float] | None) -> list[str]:
    """Problems of the raw `analysis:` identifiability and fit entries against the model:
    output and input names, the data file (readable, known outputs, times in the span).
    Values of a wrong type are left to the schema."""
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
    fit = analysis.get("fit")
    if isinstance(ident, dict):
        own = ident.get("data")
        ident_data = own if isinstance(own, str) else None
        if own is None and isinstance(fit, dict) and isinstance(fit.get("data"), str):
            ident_data = fit["data"]  # the fit's data: its file is checked with the fit's entry
        elif ident_data is not None and ident_data.strip():
            problems += _data_problems("analysis.identifiability", ident_data, None, outputs, base, span)
        if ident_data is not None and isinstance(ident.get("of"), list):
            df = _read_quietly(ident_data, outputs, base)
            measured = [] if df is None else list(dict.fromkeys(df["output"]))
            if df is not None and not set(measured) & set(ident["of"]):
                problems.append(f"analysis.identifiability.of = {ident['of']}: the data measures none of these "
                                f"outputs; it measures {list_names(measured)}")
        if ident_data is not None and isinstance(ident.get("sigma"), dict):
            df = _read_quietly(ident_data, outputs, base)
            if df is not None and "sigma" not in df.columns:
                keep = ident["of"] if isinstance(ident.get("of"), list) else None
                for o in dict.fromkeys(df["output"]):
                    if o not in ident["sigma"] and (keep is None or o in keep):
                        problems.append(f"analysis.identifiability.sigma: no value for measured output '{o}'")
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
            if missing and ident_data is None:
                problems.append(f"analysis.identifiability.sigma: no value for output '{missing[0]}'; give "
                                "one per output, or one number for all")
    design = analysis.get("design")
    if isinstance(design, dict):
        problems += _design_problems(design, outputs, chosen, names_of(base_wrt), base, span)
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
            problems += _data_problems("analysis.fit", data, fit.get("sigma") if isinstance(fit.get("sigma"), dict)
                                       else None, outputs, base, span)
    if isinstance(fit, dict):  # multistart, profile, sample: names of the fit's inputs
        wrt = fit.get("wrt", base_wrt)
        fitted = names_of(wrt) if isinstance(wrt, (list, str, type(None))) else None
        for key in ("multistart", "profile", "sample"):
            problems += _inference_problems(f"analysis.{key}", analysis.get(key), fitted)
    return problems


def _read_quietly(data: str, outputs: list[str], base: Path):
    """The data file's table, or None where it is missing or unreadable (reported elsewhere)."""
    found = find(data, base) if data.strip() else None
    try:
        return None if found is None else read_data(found, outputs)
    except InputError:
        return None


def _data_problems(where: str, data: str, sigma: dict | None, outputs: list[str], base: Path,
                   span: tuple[float, float] | None) -> list[str]:
    """Problems of the data file `data` of the entry `where` (analysis.fit, analysis.identifiability):
    found, readable, known outputs, times in the span, a sigma mapping that covers the
    observed outputs where the file has no sigma column."""
    found = find(data, base)
    if found is None:
        return [f"{where}.data: file '{data}' not found (looked in {', '.join(map(str, locate(data, base)))})"]
    try:
        df = read_data(found, outputs)
    except InputError as exc:
        return [f"{where}.data: {found}: {exc}"]
    problems = []
    if span is not None and (df["time"].min() < span[0] or df["time"].max() > span[1]):
        problems.append(f"{where}.data: {found} has times in [{df['time'].min():g}, {df['time'].max():g}], "
                        f"outside the simulated span [{span[0]:g}, {span[1]:g}]; widen time: or drop those rows")
    if sigma is not None and "sigma" not in df.columns:
        for o in dict.fromkeys(df["output"]):
            if o not in sigma:
                problems.append(f"{where}.sigma: no value for observed output '{o}'")
    return problems


def _design_problems(design: dict, outputs: list[str], chosen: list, inputs: list[str] | None, base: Path,
                     span: tuple[float, float] | None) -> list[str]:
    """Names of the raw `analysis.design` entry against the model: outputs of candidates,
    sigma and costs, parameters of interest, the fixed data file."""
    problems: list[str] = []
    where = "analysis.design"
    cand = design.get("candidates")
    if isinstance(cand, dict) and set(cand) != {"from", "to", "points"}:
        for name in cand:
            if name not in outputs:
                problems.append(f"{where}.candidates.{name}: no such output{did_you_mean(str(name), outputs)}; "
                                f"outputs: {list_names(outputs)}")
    for key in ("sigma", "costs"):
        if isinstance(design.get(key), dict):
            for name in design[key]:
                if name not in outputs:
                    problems.append(f"{where}.{key}.{name}: no such output{did_you_mean(str(name), outputs)}; "
                                    f"outputs: {list_names(outputs)}")
    if isinstance(design.get("parameters"), list) and inputs is not None:
        for i, name in enumerate(design["parameters"]):
            if name not in inputs:
                problems.append(f"{where}.parameters[{i}] = '{name}': not an input of sensitivity.wrt"
                                f"{did_you_mean(str(name), inputs)}; inputs: {list_names(inputs)}")
    times = design.get("candidates")
    if isinstance(times, list) and span is not None and times and all(isinstance(t, (int, float)) for t in times):
        if min(times) < span[0]:
            problems.append(f"{where}.candidates: time {min(times):g} is before the start {span[0]:g}")
    data = design.get("fixed")
    if isinstance(data, str) and data.strip():
        found = find(data, base)
        if found is None:
            problems.append(f"{where}.fixed: file '{data}' not found (looked in "
                            f"{', '.join(map(str, locate(data, base)))})")
        else:
            try:
                read_data(found, outputs)
            except InputError as exc:
                problems.append(f"{where}.fixed: {found}: {exc}")
    return problems
