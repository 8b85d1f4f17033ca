"""The schema of a run config with a `petab:` key, read and checked before any work.

    petab: path/to/problem.yaml        # relative to the config file
    solver: {method: rodas5p, rtol: 1.0e-8, atol: 1.0e-8, max_steps: 100000}
    mode: auto                         # auto | forward | adjoint
    fit: {enabled: false, maxiter: 200}    # starts: N (a multi-start; implies enabled)
    identifiability: {max_subset: 3, threshold: 15}   # at the fit, else the nominal values
    profile: {parameters: [k1], level: 0.95, method: optimization}   # all parameters if omitted
    sample: {n: 1000, chains: 4, method: nuts, priors: true}
    design: {n: 4, criterion: D, method: exchange, parameters: [k1], times: [0, 1, 2, 5],
             conditions: {c_new: {a0: 3.0}}, costs: {obs_a: 1.0}, budget: 10}
    output: {dir: results/boehm, plots: true}

A profile or a sample starts from the fit, so either implies fit.enabled. A design is local
to the fit when there is one, else to the nominal values; its `conditions` are new PEtab
conditions (a mapping id -> {condition-table column: value}, or a condition TSV relative to
the config) under which it may measure every measured observable. `sensitivity run`
sends such a config to app/runners/petab.py; `sensitivity petab PROBLEM` builds the same
`PetabRunConfig` from its arguments. `check_names` checks the names of profile.parameters
and design.parameters against the problem's parameter table, and the new conditions of a
design against its condition table and model. No JAX here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ...core.errors import ConfigError, did_you_mean, list_names
from ...core.solvers import PETAB_SOLVERS
from .base import Strict
from .inference import PetabProfileConfig, PetabSampleConfig, name_problems


class PetabSolver(Strict):
    method: Literal[PETAB_SOLVERS] = "rodas5p"  # type: ignore[valid-type]
    rtol: float = Field(1e-8, gt=0)
    atol: float = Field(1e-8, gt=0)
    max_steps: int = Field(100_000, ge=1)


class PetabFit(Strict):
    """`fit:` L-BFGS-B within the bounds from the nominal values and, with `starts`, from that
    many Sobol points within the bounds (every start kept); `starts` implies enabled."""

    enabled: bool = False
    maxiter: int = Field(200, ge=1)
    starts: Optional[int] = Field(None, ge=1, le=10_000)
    seed: int = Field(0, ge=0)
    best: int = Field(10, ge=1, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _starts_enable(cls, data):
        if isinstance(data, dict) and data.get("starts") is not None and "enabled" not in data:
            data = {**data, "enabled": True}
        return data

    @model_validator(mode="after")
    def _enabled(self):
        if self.starts is not None and not self.enabled:
            raise ValueError("starts: a multi-start is a fit; remove enabled: false (starts implies it)")
        return self


class PetabIdentifiability(Strict):
    """`identifiability:` of the Fisher information at the fit (else the nominal values) on
    the estimation scales: subsets up to max_subset, collinearity threshold, eigenvalue cut."""

    max_subset: int = Field(3, ge=1, le=6)
    threshold: float = Field(15.0, gt=1)
    eig_rtol: float = Field(1e-8, gt=0, lt=1)


class PetabDesign(Strict):
    """`design:` the next experiment (sens.design): the n measurements (observable, condition,
    time) among the candidates that add the most information to the measurement table's.
    times: candidate times (a list or {from, to, points}; default 61 from 0 to the last
    measured time); conditions: new conditions, a mapping id -> {column: value} or a
    condition TSV (a path relative to the config); costs: observable -> cost (with budget:
    the total cost's cap)."""

    n: Optional[int] = Field(None, ge=1, le=100_000)
    criterion: Literal["D", "A", "E", "ME", "D_s", "A_s"] = "D"
    method: Literal["exchange", "greedy", "continuous"] = "exchange"
    parameters: Optional[list[str]] = None
    times: Optional[Any] = None
    conditions: Optional[Union[str, dict[str, dict[str, Union[float, str]]]]] = None
    costs: Optional[dict[str, float]] = None
    budget: Optional[float] = Field(None, gt=0)
    replicates: bool = True

    @field_validator("times")
    @classmethod
    def _times(cls, v):
        if v is None:
            return v
        if isinstance(v, dict) and set(v) == {"from", "to", "points"}:
            if not (isinstance(v["points"], int) and v["points"] >= 2 and v["from"] < v["to"]):
                raise ValueError("{from, to, points} needs from < to and points >= 2")
            return v
        if not (isinstance(v, list) and v and all(isinstance(t, (int, float)) and not isinstance(t, bool)
                                                  and math.isfinite(t) and t >= 0 for t in v)):
            raise ValueError(f"{v!r}: give a non-empty list of times >= 0 or {{from, to, points}}")
        return v

    @field_validator("costs")
    @classmethod
    def _costs(cls, v):
        bad = [k for k, c in (v or {}).items() if not (math.isfinite(c) and c > 0)]
        if bad:
            raise ValueError(f"costs of {list_names(bad)} must be positive finite numbers")
        return v

    @model_validator(mode="after")
    def _complete(self):
        if self.criterion in ("D_s", "A_s") and not self.parameters:
            raise ValueError(f"parameters: criterion {self.criterion} needs the parameters of interest")
        if self.budget is not None and self.costs is None:
            raise ValueError("budget: needs costs: {observable: cost}")
        if self.n is None and self.budget is None:
            raise ValueError("n: give the number of measurements (or costs and a budget)")
        return self

    def candidate_times(self):
        """`times` as sens.design takes them (None or a list of times)."""
        v = self.times
        if isinstance(v, dict):
            a, b, k = float(v["from"]), float(v["to"]), int(v["points"])
            return [a + (b - a) * i / (k - 1) for i in range(k)]
        return v


class PetabOutput(Strict):
    dir: Optional[str] = None
    plots: bool = True


class PetabRunConfig(Strict):
    """The schema of a run config with a `petab:` key (see the module docstring)."""

    petab: str
    solver: PetabSolver = PetabSolver()
    mode: Literal["auto", "forward", "adjoint"] = "auto"
    fit: PetabFit = PetabFit()
    identifiability: Optional[PetabIdentifiability] = None
    profile: Optional[PetabProfileConfig] = None
    sample: Optional[PetabSampleConfig] = None
    design: Optional[PetabDesign] = None
    output: PetabOutput = PetabOutput()

    @property
    def fits(self) -> bool:
        """A fit runs: asked for, or implied by a profile or a sample (they start from it)."""
        return self.fit.enabled or self.profile is not None or self.sample is not None


def is_petab_config(path: str) -> bool:
    """True if the YAML run config at `path` has a top-level `petab` key."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "petab" in data


def load(path: str | Path, out: str | None = None, mode: str | None = None) -> PetabRunConfig:
    """The run config at `path`, checked, with the PEtab problem's path made absolute (a
    relative one is next to the config file) and the output folder filled in: `out`, else
    output.dir, else results/<config name>. `mode` replaces the config's mode when given.
    Raises ConfigError listing every problem of the schema."""
    path = Path(path)
    data = yaml.safe_load(path.read_text())
    try:
        cfg = PetabRunConfig(**data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ConfigError(f"{path}: " + "; ".join(problems), problems) from None
    problem = Path(cfg.petab)
    if not problem.is_absolute():
        problem = path.parent / problem
    if cfg.design is not None and isinstance(cfg.design.conditions, str):
        cfg = cfg.model_copy(update={"design": cfg.design.model_copy(
            update={"conditions": str(path.parent / cfg.design.conditions)})})
    found = check_names(cfg, problem)
    if found:
        raise ConfigError(f"{path}: " + "; ".join(found), found)
    out = out or cfg.output.dir
    if out is None:
        out = str(Path("results") / path.stem)
    cfg = cfg.model_copy(update={"petab": str(problem), "output": PetabOutput(dir=out, plots=cfg.output.plots)})
    if mode:
        cfg = cfg.model_copy(update={"mode": mode})
    return cfg


def estimated_parameters(problem_yaml: str | Path) -> list[str] | None:
    """The ids of the estimated parameters (estimate = 1) in the parameter table(s) a PEtab
    problem YAML names, read without importing the importer; None when they cannot be read
    (the importer reports why when the problem is loaded)."""
    import pandas as pd

    path = Path(problem_yaml)
    try:
        data = yaml.safe_load(path.read_text())
        files = data.get("parameter_file") or data.get("parameter_files")
        if files is None and isinstance(data.get("problems"), list) and data["problems"]:
            files = data["problems"][0].get("parameter_file") or data["problems"][0].get("parameter_files")
        ids: list[str] = []
        for f in [files] if isinstance(files, str) else list(files or []):
            table = pd.read_csv(path.parent / f, sep="\t")
            est = table["estimate"] if "estimate" in table else pd.Series(1, index=table.index)
            ids += [str(v) for v, e in zip(table["parameterId"], est) if int(e) == 1]
        return ids or None
    except Exception:  # noqa: BLE001 - any unreadable table: not checked here
        return None


def check_names(cfg: PetabRunConfig, problem: Path) -> list[str]:
    """Names in profile: and sample: checked against the problem's estimated parameters, and
    a sample: without the optional extra. The problem file itself is checked by its loader."""
    names = estimated_parameters(problem) if problem.is_file() else None
    found: list[str] = []
    for key in ("profile", "sample"):
        block = getattr(cfg, key)
        if block is not None:
            found += name_problems(key, block.model_dump(exclude_none=True), names, what="estimated parameter")
    if cfg.design is not None:
        found += name_problems("design", {"parameters": cfg.design.parameters}, names, what="estimated parameter")
        if problem.is_file():
            found += design_problems(cfg.design, problem)
    return found


def _tables(problem_yaml: Path) -> tuple[list, list, list, list] | None:
    """(condition ids, condition-table columns, observable ids, model entity ids) of a PEtab
    problem, read without the importer; None when they cannot be read."""
    import pandas as pd

    try:
        data = yaml.safe_load(problem_yaml.read_text())
        part = data["problems"][0] if isinstance(data.get("problems"), list) else data

        def files(key):
            f = part.get(key)
            return [f] if isinstance(f, str) else list(f or [])

        cond = [pd.read_csv(problem_yaml.parent / f, sep="\t", dtype=str) for f in files("condition_files")]
        obs = [pd.read_csv(problem_yaml.parent / f, sep="\t", dtype=str) for f in files("observable_files")]
        ids = [str(c) for t in cond for c in t["conditionId"]]
        columns = [str(c) for t in cond for c in t.columns if c not in ("conditionId", "conditionName")]
        observables = [str(o) for t in obs for o in t["observableId"]]
        entities: list[str] = []
        for f in files("sbml_files"):
            import libsbml

            model = libsbml.readSBMLFromFile(str(problem_yaml.parent / f)).getModel()
            if model is not None:
                entities += [e.getId() for lst in (model.getListOfParameters(), model.getListOfSpecies(),
                                                    model.getListOfCompartments()) for e in lst]
        return ids, columns, observables, entities
    except Exception:  # noqa: BLE001 - unreadable tables: the importer reports them
        return None


def design_problems(d: PetabDesign, problem: Path) -> list[str]:
    """Problems of a design's new conditions and costs against the PEtab problem: a new id
    that is an existing condition's, a column that is neither a condition-table column nor a
    model entity, a cost of an unknown observable; a missing condition file."""
    found: list[str] = []
    tables = _tables(problem)
    conditions = d.conditions
    if isinstance(conditions, str):
        if not Path(conditions).is_file():
            return [f"design.conditions: file '{conditions}' not found"]
        import pandas as pd

        try:
            df = pd.read_csv(conditions, sep="\t", dtype=str)
        except Exception as exc:  # noqa: BLE001 - any unreadable file: said here
            return [f"design.conditions: '{conditions}' is not a condition table ({exc})"]
        if "conditionId" not in df.columns:
            return [f"design.conditions: '{conditions}' has no conditionId column"]
        conditions = {str(r["conditionId"]): {k: v for k, v in r.items() if k not in ("conditionId", "conditionName")}
                      for _, r in df.iterrows()}
    if tables is None:
        return found
    ids, columns, observables, entities = tables
    known = list(dict.fromkeys(columns + entities))
    for cid, row in (conditions or {}).items():
        if cid in ids:
            found.append(f"design.conditions.{cid}: '{cid}' is a condition of the condition table already; "
                         f"give the new condition another id (conditions: {list_names(ids)})")
        for col in row:
            if col not in known:
                found.append(f"design.conditions.{cid}.{col}: not a condition-table column nor a parameter, "
                             f"species or compartment of the model{did_you_mean(col, known)}; "
                             f"condition-table columns: {list_names(columns)}")
    for oid in d.costs or {}:
        if oid not in observables:
            found.append(f"design.costs.{oid}: not an observable{did_you_mean(oid, observables)}; "
                         f"observables: {list_names(observables)}")
    return found
