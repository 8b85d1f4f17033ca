"""The schema of a run config with a `petab:` key, read and checked before any work.

    petab: path/to/problem.yaml        # relative to the config file
    solver: {method: rodas5p, rtol: 1.0e-8, atol: 1.0e-8, max_steps: 100000}
    mode: auto                         # auto | forward | adjoint
    fit: {enabled: false, maxiter: 200}    # starts: N (a multi-start; implies enabled)
    identifiability: {max_subset: 3, threshold: 15}   # at the fit, else the nominal values
    profile: {parameters: [k1], level: 0.95, method: optimization}   # all parameters if omitted
    sample: {n: 1000, chains: 4, warmup: 500, method: nuts, priors: true}
    output: {dir: results/boehm, plots: true}

A profile or a sample starts from the fit, so either implies fit.enabled. `sensitivity run`
sends such a config to app/runners/petab.py; `sensitivity petab PROBLEM` builds the same
`PetabRunConfig` from its arguments. `check_names` checks the names of profile.parameters
against the problem's parameter table. No JAX here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import Field, ValidationError, model_validator

from ...core.errors import ConfigError
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
    return found
