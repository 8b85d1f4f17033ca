"""The schema of a run config with a `petab:` key, read and checked before any work.

    petab: path/to/problem.yaml        # relative to the config file
    solver: {method: rodas5p, rtol: 1.0e-8, atol: 1.0e-8, max_steps: 100000}
    mode: auto                         # auto | forward | adjoint
    fit: {enabled: false, maxiter: 200}
    output: {dir: results/boehm, plots: true}

`sensitivity run` sends such a config to app/runners/petab.py; `sensitivity petab PROBLEM`
builds the same `PetabRunConfig` from its arguments. No JAX here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import Field, ValidationError

from ...core.errors import ConfigError
from ...core.solvers import PETAB_SOLVERS
from .base import Strict


class PetabSolver(Strict):
    method: Literal[PETAB_SOLVERS] = "rodas5p"  # type: ignore[valid-type]
    rtol: float = Field(1e-8, gt=0)
    atol: float = Field(1e-8, gt=0)
    max_steps: int = Field(100_000, ge=1)


class PetabFit(Strict):
    enabled: bool = False
    maxiter: int = Field(200, ge=1)


class PetabOutput(Strict):
    dir: Optional[str] = None
    plots: bool = True


class PetabRunConfig(Strict):
    """The schema of a run config with a `petab:` key (see the module docstring)."""

    petab: str
    solver: PetabSolver = PetabSolver()
    mode: Literal["auto", "forward", "adjoint"] = "auto"
    fit: PetabFit = PetabFit()
    output: PetabOutput = PetabOutput()


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
    out = out or cfg.output.dir
    if out is None:
        out = str(Path("results") / path.stem)
    cfg = cfg.model_copy(update={"petab": str(problem), "output": PetabOutput(dir=out, plots=cfg.output.plots)})
    if mode:
        cfg = cfg.model_copy(update={"mode": mode})
    return cfg
