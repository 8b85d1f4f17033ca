"""The YAML configuration of a sensitivity run: schema, overrides and validation.

`load(path, overrides)` reads a YAML file, applies command-line overrides, checks the whole
file (types and ranges with pydantic, unknown keys, the model name, parameter, state,
input and output names, the data file) and returns a `RunSpec`: the validated config, the
model, the `sensitivity.Problem` and the objective. Every problem found is reported at
once in a `ConfigError` whose `.problems` lists "key.path: what is wrong; what is valid".

No JAX here: building a `Problem` only checks names and values, it compiles nothing, so a
typo fails before any compile. Every key is documented in docs/configuration.md.
"""

from __future__ import annotations

import csv
import importlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional

import numpy as np
import yaml
from pydantic import BaseModel, Field, ValidationError, ValidationInfo, field_validator, model_validator

from ...analyses.metrics import Objective
from ...core.errors import ConfigError, InputError, ModelError, SensitivityError, did_you_mean, list_names
from ...core.lazy import LazyModule
from ...core.model import ODEModel
from ...core.problem import Problem, resolve_outputs
from ...core.problem import resolve_inputs as _resolve_inputs
from ...core.solvers import ADJOINTS, SOLVERS
from . import doses as config_events
from .analyses import AnalysisConfig, ExecutorConfig
from .analyses import check as _analysis_checks
from .analyses import name_problems as _analysis_name_problems
from .base import Strict, check_sigma, finite, locate, mapping, one_name
from .doses import BreakpointsConfig, DosesConfig

# the SBML importer builds JAX functions at import: loaded only when a model: is an SBML file
sbml = LazyModule("sensitivity.importers.sbml")

PLOTS = ("heatmap", "trajectories", "sensitivities")
OBJECTIVES = ("sum_of_squares", "final_value", "integral")


# --------------------------------------------------------------------------- schema
class TimeGrid(Strict):
    """`time: {start, stop, points, spacing, first}`: an evenly (or log-) spaced grid."""

    start: float = 0.0
    stop: float
    points: Annotated[int, Field(ge=2, le=1_000_000)] = 200
    spacing: Literal["linear", "log"] = "linear"
    first: Optional[Annotated[float, Field(gt=0)]] = None

    @field_validator("start", "stop")
    @classmethod
    def _finite(cls, v):
        return finite(v)

    @field_validator("stop")
    @classmethod
    def _after_start(cls, v, info: ValidationInfo):
        start = info.data.get("start")
        if start is not None and v <= start:
            raise ValueError(f"stop = {v:g} must be greater than start = {start:g}")
        return v

    @model_validator(mode="after")
    def _first(self):
        if self.first is not None:
            if self.spacing != "log":
                raise ValueError("@first: only used with spacing: log; remove it or set spacing: log")
            if not self.start <= self.first < self.stop:
                raise ValueError(f"@first: first = {self.first:g} must lie in [start, stop) = "
                                 f"[{self.start:g}, {self.stop:g})")
        return self

    def grid(self) -> tuple[np.ndarray, float]:
        """(save times, t0). Log spacing starts at `first` (default: start if > 0, else
        stop * 1e-6); the solve still starts at `start`."""
        n = self.points
        if self.spacing == "linear":
            return np.linspace(self.start, self.stop, n), self.start
        first = self.first or (self.start if self.start > 0 else self.stop * 1e-6)
        return np.geomspace(first, self.stop, n), self.start


class SolverConfig(Strict):
    """`solver:` the ODE solver and its tolerances."""

    method: Literal[SOLVERS] = "auto"  # type: ignore[valid-type]
    rtol: Annotated[float, Field(gt=0, lt=1)] = 1e-8
    atol: Annotated[float, Field(gt=0)] = 1e-8
    max_steps: Annotated[int, Field(ge=1)] = 100_000
    adjoint: Literal[ADJOINTS] = "checkpoint"  # type: ignore[valid-type]
    checkpoints: Optional[Annotated[int, Field(ge=1)]] = None
    jacobian_reuse: bool = False


class ObjectiveConfig(Strict):
    """`sensitivity.objective:` a scalar function of the outputs, for gradient and Hessian."""

    type: Literal[OBJECTIVES]  # type: ignore[valid-type]
    data: Optional[str] = None
    outputs: Optional[list[str]] = None
    sigma: Any = 1.0

    @field_validator("sigma")
    @classmethod
    def _sigma(cls, v):
        return check_sigma(v)

    @model_validator(mode="after")
    def _data(self):
        if self.type == "sum_of_squares" and not self.data:
            raise ValueError("@data: sum_of_squares needs a data file: data: path/to/observations.csv "
                             "(columns time + output names)")
        if self.type != "sum_of_squares" and self.data:
            raise ValueError(f"@data: only used by type sum_of_squares, not {self.type}; remove it")
        if self.type == "sum_of_squares" and self.outputs is not None:
            raise ValueError("@outputs: sum_of_squares compares the data file's columns; remove outputs")
        return self


class SensitivityConfig(Strict):
    """`sensitivity:` what to differentiate, how, and the optional objective."""

    wrt: Optional[list[str]] = None
    of: Optional[list[str]] = None
    mode: Literal["auto", "forward", "adjoint"] = "auto"
    probe: Literal["auto", "always", "never"] = "auto"
    normalize: Literal["none", "log"] = "none"
    objective: Optional[ObjectiveConfig] = None
    hessian: bool = False

    @field_validator("normalize", mode="before")
    @classmethod
    def _normalize(cls, v):
        return "none" if v is None or v is False else v

    @field_validator("wrt", "of", mode="before")
    @classmethod
    def _one_name(cls, v):
        return one_name(v)

    @model_validator(mode="after")
    def _hessian(self):
        if self.hessian and self.objective is None:
            raise ValueError("@hessian: a Hessian needs sensitivity.objective; add one or set hessian: false")
        return self


class OutputConfig(Strict):
    """`output:` where results go and which plots to draw."""

    dir: Optional[str] = None
    plots: list[Literal[PLOTS]] = list(PLOTS)  # type: ignore[valid-type]
    heatmap_times: Optional[list[float]] = None
    # "magnitude": time-integrated |S| (the ranking's values, no cancelling); "signed": the
    # signed time integral, where a sensitivity that changes sign cancels
    heatmap: Literal["magnitude", "signed"] = "magnitude"
    top_inputs: Annotated[int, Field(ge=1, le=50)] = 5

    @field_validator("plots", mode="before")
    @classmethod
    def _plots(cls, v):
        if v is None or v is False:
            return []
        if v == "all" or v is True:
            return list(PLOTS)
        return [v] if isinstance(v, str) else v


class RunConfig(Strict):
    """The whole file. Exactly one of `time` (a grid) and `times` (a list) is given."""

    model: str
    model_options: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    initial_state: dict[str, float] = {}
    time: Optional[TimeGrid] = None
    times: Optional[list[float]] = None
    solver: SolverConfig = SolverConfig()
    sensitivity: SensitivityConfig = SensitivityConfig()
    output: OutputConfig = OutputConfig()
    analysis: Optional[AnalysisConfig] = None  # GSA, identifiability, fit (config/analyses.py)
    executor: Optional[ExecutorConfig] = None  # where ensembles run (analyses/executors.py)
    doses: DosesConfig = None
    breakpoints: BreakpointsConfig = None

    @field_validator("parameters")
    @classmethod
    def _parameters(cls, v):
        for name, value in v.items():
            try:
                arr = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"@{name}: {value!r} is not a number or a (nested) list of numbers")
            if isinstance(value, bool) or not np.all(np.isfinite(arr)):
                raise ValueError(f"@{name}: {value!r} must be a finite number (or a list of them)")
        return v

    @field_validator("times")
    @classmethod
    def _times(cls, v):
        if v is None:
            return v
        if len(v) < 2:
            raise ValueError("needs at least two times, e.g. [0.0, 1.0, 2.0]")
        if not all(math.isfinite(t) for t in v):
            raise ValueError("contains NaN or inf")
        for k in range(len(v) - 1):
            if not v[k] < v[k + 1]:
                raise ValueError(f"must be strictly increasing: times[{k}] = {v[k]:g} is followed by "
                                 f"times[{k + 1}] = {v[k + 1]:g}")
        return v

    @model_validator(mode="after")
    def _time_or_times(self):
        if (self.time is None) == (self.times is None):
            raise ValueError("@time: give exactly one of time: {start, stop, points} and "
                             "times: [t0, t1, ...]")
        return self


# --------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class Observations:
    """The data of a sum_of_squares objective: times (n,), values (n, k) with NaN where a
    value is missing, columns the k output names."""

    path: Path
    times: np.ndarray
    values: np.ndarray
    columns: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class RunSpec:
    """A validated run: the config (overrides applied), where it came from, the model, the
    Problem, the objective (or None), the observations (or None) and the output folder."""

    config: RunConfig
    source: Path
    model: Any
    problem: Problem
    objective: Optional[Objective] = None
    observations: Optional[Observations] = None
    output_dir: Path = Path("results")
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def resolved(self) -> dict:
        """The config with every default filled in, as plain data (for summary.json)."""
        data = self.config.model_dump(mode="json")
        data["output"]["dir"] = str(self.output_dir)
        return data


# --------------------------------------------------------------------------- reading
def read_yaml(path: str | Path) -> dict:
    """The YAML file as a mapping; a syntax error becomes a ConfigError naming the line."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} not found")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a YAML config file, e.g. configs/lotka_volterra.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown place"
        what = " ".join(str(s) for s in (exc.context, exc.problem) if s)
        raise ConfigError(f"{path}: malformed YAML at {where}: {what}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not readable as YAML: {exc}") from None
    except OSError as exc:  # permissions, a broken link, a device
        raise ConfigError(f"config file {path}: cannot read it: {exc.strerror or exc}") from None
    if data is None:
        raise ConfigError(f"{path} is empty; a config needs at least model: and time:")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (model:, time:, ...), "
                          f"got a {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """`data` with each "dotted.key=value" set (the value is read as YAML, so
    `solver.rtol=1e-6`, `sensitivity.wrt=[alpha,beta]` and `output.plots=[]` work)."""
    out = _deep_copy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_0-9][\w\[\],]*)*", key):
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted key, e.g. "
                              "--set solver.rtol=1e-6")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({exc})") from None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a mapping in the config")
            node = nxt
        node[parts[-1]] = value
    return out


def set_points(data: dict, points: int) -> dict:
    """`data` with its time grid cut to `points` save times: `time.points` for a grid; for
    a `times` list, `points` entries evenly chosen from it (first and last kept)."""
    if points < 2:
        raise ConfigError(f"--points {points}: needs at least 2")
    out = _deep_copy(data)
    if isinstance(out.get("time"), dict):
        out["time"]["points"] = points
    elif isinstance(out.get("times"), list) and len(out["times"]) > points:
        idx = np.unique(np.round(np.linspace(0, len(out["times"]) - 1, points)).astype(int))
        out["times"] = [out["times"][i] for i in idx]
    return out


def _deep_copy(data):
    if isinstance(data, dict):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


# --------------------------------------------------------------------------- problems
def _key(loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _schema_at(loc) -> type[BaseModel] | None:
    """The pydantic model class that holds the key at `loc` (for listing valid keys)."""
    cls: Any = RunConfig
    for part in loc:
        if isinstance(part, int) or cls is None:
            return None
        fld = cls.model_fields.get(part)
        if fld is None:
            return None
        ann = fld.annotation
        args = getattr(ann, "__args__", ())
        cls = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return cls


_TYPE_WORDS = {"int_parsing": "a whole number", "int_type": "a whole number",
               "int_from_float": "a whole number", "float_parsing": "a number",
               "float_type": "a number", "string_type": "a text value", "bool_parsing": "true or false",
               "bool_type": "true or false", "list_type": "a list, e.g. [a, b]",
               "dict_type": "a mapping of keys", "model_type": "a mapping of keys",
               "model_attributes_type": "a mapping of keys"}


def _schema_problems(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors(include_url=False):
        loc = [p for p in e["loc"] if isinstance(p, (int, str)) and not str(p).startswith(("function-", "literal["))]
        kind, msg, value = e["type"], e["msg"], e.get("input")
        if kind == "extra_forbidden":
            schema = _schema_at(loc[:-1])
            valid = list(schema.model_fields) if schema else []
            problems.append(f"{_key(loc)}: unknown key{did_you_mean(loc[-1], valid)}; "
                            f"valid keys here: {', '.join(valid)}")
            continue
        if kind == "missing":
            problems.append(f"{_key(loc)}: required key is missing")
            continue
        if kind == "value_error":
            msg = re.sub(r"^Value error, ", "", msg)
            m = re.match(r"^@([\w\[\]]+): (.*)$", msg, re.S)
            if m:
                loc, msg = loc + [m.group(1)], m.group(2)
            problems.append(f"{_key(loc)}: {msg}")
            continue
        if kind in _TYPE_WORDS:
            msg = f"must be {_TYPE_WORDS[kind]}"
        elif kind == "literal_error":
            msg = "must be one of " + e["ctx"]["expected"].replace("'", "")
        elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
            msg = "must be " + msg.replace("Input should be ", "")
        shown = repr(value) if not isinstance(value, (dict, list)) or len(repr(value)) < 60 else type(value).__name__
        problems.append(f"{_key(loc)} = {shown}: {msg}")
    return problems


# --------------------------------------------------------------------------- the model
def model_library():
    """The model library `models` (registry with available()/get()/load()), or None."""
    try:
        mod = importlib.import_module("sensitivity.models")
    except ImportError:
        return None
    return mod if hasattr(mod, "available") and hasattr(mod, "get") else None


def sbml_model(spec: str, base: Path):
    """The ODEModel of an SBML file named as `model:` in a run config (relative paths next
    to the config file, then the current folder); ConfigError if missing or unreadable."""
    p = Path(spec).expanduser()
    places = [p] if p.is_absolute() else [base / p, Path.cwd() / p]
    found = next((q for q in places if q.is_file()), None)
    if found is None:
        raise ConfigError(f"model: SBML file '{spec}' not found (looked in {', '.join(map(str, places))})")
    try:
        return sbml.load(found)
    except ModelError as exc:
        raise ConfigError(f"model: {exc}") from None


def load_model(spec: str, base: Path, options: Mapping | None = None):
    """The `ODEModel` named by `spec` through the model library's `models.load`: a
    registered name, or "path/to/file.py:factory" (a relative path is looked up next to
    the config file, then in the current folder). `options` go to the model's factory.
    Raises ConfigError naming the problem."""
    if spec.lower().endswith((".xml", ".sbml")):  # an SBML file is a model like any other
        return sbml_model(spec, base)
    registry = model_library()
    if registry is None or not hasattr(registry, "load"):
        raise ConfigError("model: the model library `models` is not importable; install the project "
                          "with `pip install -e .` from its folder")
    target = spec
    if spec.endswith(".py") or ".py:" in spec:
        file, sep, factory = spec.rpartition(":") if ".py:" in spec else (spec, "", "")
        places = locate(file, base)
        found = next((p for p in places if p.is_file()), None)
        if found is None:
            raise ConfigError(f"model: file '{file}' not found (looked in {', '.join(map(str, places))})")
        target = f"{found}{sep}{factory}"
    try:
        model = registry.load(target, **dict(options or {}))
    except SensitivityError as exc:
        text = str(exc)
        if options and isinstance(exc, InputError) and not text.startswith("model = "):
            text = f"model_options: {text}"  # the factory refused an option
        raise ConfigError(re.sub(r"^model = ", "model: ", text).replace(target, spec)) from None
    except TypeError as exc:  # a factory given options it does not take
        raise ConfigError(f"model_options: {exc}") from None
    if not isinstance(model, ODEModel):
        raise ConfigError(f"model: '{spec}' gave a {type(model).__name__}, not a sensitivity.ODEModel")
    return model


# --------------------------------------------------------------------------- names
def _name_problems(data: dict, model) -> list[str]:
    """Names in the raw config checked against the model; raw values of a wrong type are
    skipped here (the schema reports them)."""
    problems = []
    params = dict(model.parameters)
    for name in mapping(data.get("parameters")):
        if name not in params:
            problems.append(f"parameters.{name}: model '{model.name}' has no such parameter"
                            f"{did_you_mean(name, params)}; parameters: {list_names(params)}")
    for name in mapping(data.get("initial_state")):
        if name not in model.states:
            problems.append(f"initial_state.{name}: model '{model.name}' has no such state"
                            f"{did_you_mean(name, model.states)}; states: {list_names(model.states)}")
    sens = mapping(data.get("sensitivity"))
    wrt = sens.get("wrt")
    n_doses = config_events.count_doses(data)
    resolve_inputs = lambda m, names: _resolve_inputs(m, names, n_doses)  # noqa: E731

    of = sens.get("of")
    for key, names, resolve in (("wrt", wrt, resolve_inputs), ("of", of, resolve_outputs)):
        for i, name in enumerate([names] if isinstance(names, str) else names if isinstance(names, list) else []):
            if isinstance(name, str):
                try:
                    resolve(model, [name])
                except InputError as exc:
                    problems.append(f"sensitivity.{key}[{i}] = '{name}': " + _strip_prefix(str(exc)))
    objective = mapping(sens.get("objective"))
    outs = objective.get("outputs")
    valid_of = _chosen_outputs(model, of)
    for i, name in enumerate(outs if isinstance(outs, list) else []):
        if isinstance(name, str) and name not in valid_of:
            problems.append(f"sensitivity.objective.outputs[{i}] = '{name}': not among the outputs "
                            f"differentiated{did_you_mean(name, valid_of)}; outputs: {list_names(valid_of)}")
    sigma = objective.get("sigma")
    for name in mapping(sigma):
        if name not in valid_of:
            problems.append(f"sensitivity.objective.sigma.{name}: not among the outputs"
                            f"{did_you_mean(name, valid_of)}; outputs: {list_names(valid_of)}")
    return problems


def _strip_prefix(message: str) -> str:
    return re.sub(r"^(wrt|of)\[\d+\] = '[^']*': ", "", message)


def _chosen_outputs(model, of) -> list[str]:
    if isinstance(of, str):
        of = [of]
    if isinstance(of, list) and of and all(isinstance(o, str) and o in model.outputs for o in of):
        return list(of)
    return list(model.outputs)


# --------------------------------------------------------------------------- data
def read_observations(path: Path, outputs: list[str], span: tuple[float, float]) -> tuple[Observations | None, list[str]]:
    """Read a CSV of observations: a `time` column and one column per observed output
    (a subset of `outputs`); empty cells or NaN are missing values. Returns the data and
    the problems found (key sensitivity.objective.data)."""
    key = "sensitivity.objective.data"
    try:
        with open(path, newline="") as fh:
            rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{key}: cannot read {path}: {exc}"]
    if not rows:
        return None, [f"{key}: {path} is empty; expected a header row: time,{','.join(outputs[:2])}"]
    header = [h.strip() for h in rows[0]]
    problems = []
    if "time" not in header:
        near = did_you_mean("time", header).replace(" (did you mean ", " (is ").replace("?)", " meant to be 'time'?)")
        problems.append(f"{key}: {path} has no 'time' column{near}; "
                        f"columns found: {', '.join(header)}")
        return None, problems
    columns = [h for h in header if h != "time"]
    for c in columns:
        if c not in outputs:
            problems.append(f"{key}: column '{c}' of {path} is not an output being differentiated"
                            f"{did_you_mean(c, outputs)}; outputs: {list_names(outputs)}")
    if not columns:
        problems.append(f"{key}: {path} has no output columns; expected time plus some of: {list_names(outputs)}")
    if len(set(header)) != len(header):
        problems.append(f"{key}: {path} repeats a column name: {', '.join(header)}")
    if len(rows) < 2:
        problems.append(f"{key}: {path} has a header but no data rows")
    if problems:
        return None, problems
    values = np.full((len(rows) - 1, len(header)), np.nan)
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            problems.append(f"{key}: {path} line {i} has {len(row)} fields, the header has {len(header)}")
            continue
        for j, cell in enumerate(row):
            cell = cell.strip()
            if cell == "" or cell.lower() in ("nan", "na"):
                continue
            try:
                values[i - 2, j] = float(cell)
            except ValueError:
                problems.append(f"{key}: {path} line {i}, column '{header[j]}': {cell!r} is not a number")
    if problems:
        return None, problems[:10]
    t = values[:, header.index("time")]
    if not np.all(np.isfinite(t)):
        return None, [f"{key}: {path} has a row without a time"]
    if np.any(np.diff(t) <= 0):
        return None, [f"{key}: {path}: the times must be strictly increasing"]
    if t[0] < span[0] or t[-1] > span[1]:
        return None, [f"{key}: {path} has times in [{t[0]:g}, {t[-1]:g}], outside the simulated span "
                      f"[{span[0]:g}, {span[1]:g}]; widen time: or drop those rows"]
    obs = values[:, [header.index(c) for c in columns]]
    if not np.any(np.isfinite(obs)):
        return None, [f"{key}: {path} has no observed values"]
    return Observations(path, t, obs, tuple(columns)), []


def merge_times(grid: np.ndarray, extra: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """The sorted union of two sets of times; times within rtol * span count as equal (the
    grid's value is kept)."""
    span = max(abs(float(grid[-1] - grid[0])), 1.0)
    out = list(grid)
    for t in extra:
        k = int(np.argmin(np.abs(grid - t)))
        if abs(grid[k] - t) > rtol * span:
            out.append(float(t))
    return np.unique(np.asarray(out, dtype=np.float64))


def make_objective(cfg: ObjectiveConfig, of: tuple[str, ...], times: np.ndarray,
                   observations: Observations | None) -> Objective:
    """The `Objective` for a config entry, over outputs `of` saved at `times`."""
    if cfg.type == "sum_of_squares":
        assert observations is not None
        sigma = cfg.sigma
        rows, cols, target, weights = [], [], [], []
        for i, t in enumerate(observations.times):
            r = int(np.argmin(np.abs(times - t)))
            for j, name in enumerate(observations.columns):
                v = observations.values[i, j]
                if np.isfinite(v):
                    s = sigma.get(name, 1.0) if isinstance(sigma, dict) else sigma
                    rows.append(r)
                    cols.append(of.index(name))
                    target.append(float(v))
                    weights.append(1.0 / float(s))
        return Objective("sum_of_squares", tuple(cols), tuple(rows), tuple(target), tuple(weights))
    names = cfg.outputs or list(of)
    return Objective(cfg.type, tuple(of.index(n) for n in names), times=tuple(float(t) for t in times))


# --------------------------------------------------------------------------- load
def load(path: str | Path, overrides: tuple[str, ...] | list[str] = (), points: int | None = None,
         out: str | Path | None = None) -> RunSpec:
    """Read, override and validate a config; build the model, Problem and objective.

    overrides: "dotted.key=value" strings (see `apply_overrides`); points: cut the time
    grid to this many save times (see `set_points`); out: the output folder, replacing
    output.dir. Raises ConfigError with every problem found.
    """
    path = Path(path)
    data = read_yaml(path)
    data = apply_overrides(data, overrides)
    if points is not None:
        data = set_points(data, points)
    if out is not None:
        data.setdefault("output", {})
        if isinstance(data["output"], dict):
            data["output"]["dir"] = str(out)

    problems: list[str] = []
    cfg = None
    try:
        cfg = RunConfig.model_validate(data)
    except ValidationError as exc:
        problems.extend(_schema_problems(exc))

    base = path.resolve().parent
    model = None
    spec = data.get("model")
    if isinstance(spec, str) and spec.strip():
        try:
            options = data.get("model_options")
            model = load_model(spec.strip(), base, options if isinstance(options, dict) else None)
        except ConfigError as exc:
            problems.extend(exc.problems)
    if model is not None:
        problems.extend(_name_problems(data, model))
        problems.extend(_analysis_name_problems(data, model))
        grid, start = _times(cfg) if cfg is not None else (None, None)
        span = (start, float(grid[-1])) if cfg is not None else None
        problems.extend(config_events.name_problems(data, model, span))
        problems.extend(_analysis_checks(data, model, base, span))  # identifiability and fit entries

    observations = None
    objective_raw = mapping(mapping(data.get("sensitivity")).get("objective"))
    data_file = objective_raw.get("data")
    if isinstance(data_file, str) and data_file.strip():
        places = locate(data_file, base)
        found = next((p for p in places if p.is_file()), None)
        if found is None:
            problems.append(f"sensitivity.objective.data: file '{data_file}' not found "
                            f"(looked in {', '.join(map(str, places))})")
        elif cfg is not None and model is not None:
            times, t0 = _times(cfg)
            of = _chosen_outputs(model, cfg.sensitivity.of)
            observations, found_problems = read_observations(found, of, (t0, float(times[-1])))
            problems.extend(found_problems)

    if problems or cfg is None or model is None:
        raise _config_error(path, problems or ["model: required key is missing"])

    times, t0 = _times(cfg)
    if observations is not None:
        times = merge_times(times, observations.times)
    s = cfg.sensitivity
    try:
        problem = Problem(model, times=times, wrt=s.wrt, of=s.of, parameters=cfg.parameters,
                          y0=cfg.initial_state or None, t0=t0, solver=cfg.solver.method,
                          rtol=cfg.solver.rtol, atol=cfg.solver.atol, max_steps=cfg.solver.max_steps,
                          adjoint=cfg.solver.adjoint, checkpoints=cfg.solver.checkpoints,
                          jacobian_reuse=cfg.solver.jacobian_reuse,
                          doses=config_events.build_doses(cfg.doses), breakpoints=cfg.breakpoints)
    except InputError as exc:
        raise _config_error(path, [_problem_key(str(exc))]) from None
    objective = make_objective(s.objective, problem.of, problem.times, observations) if s.objective else None
    out_dir = Path(cfg.output.dir) if cfg.output.dir else Path("results") / path.stem
    return RunSpec(cfg, path, model, problem, objective, observations, out_dir, tuple(overrides))


def _times(cfg: RunConfig) -> tuple[np.ndarray, float]:
    if cfg.time is not None:
        return cfg.time.grid()
    ts = np.asarray(cfg.times, dtype=np.float64)
    return ts, float(ts[0])


def _problem_key(message: str) -> str:
    if message.startswith(("wrt[", "of[")):
        return "sensitivity." + message
    if message.startswith("y0"):
        return "initial_state" + message[2:]
    return message


def _config_error(path: Path, problems: list[str]) -> ConfigError:
    n = len(problems)
    head = f"{path}: {n} problem{'s' * (n != 1)} found"
    return ConfigError(head + ":\n" + "\n".join(f"  - {p}" for p in problems), problems)
