"""The YAML schema of global sensitivity analyses and of the executor.

    analysis:
      ranges: {alpha: [0.5, 1.5], beta: {low: 0.05, high: 0.2, distribution: log-uniform}}
      sobol:  {n: 1024}                      # every output at every save time
      morris: {trajectories: 20, levels: 4, at: [5.0, 10.0]}
      dgsm:   {n: 512}                       # of sensitivity.objective (required)
    executor: {local: 4}                     # or {address: tcp://host:8786}; default in process

`analysis.ranges` is shared; a method's own `ranges` replaces it. `objective: true` makes
Sobol or Morris analyse sensitivity.objective instead of every output. No JAX here.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..runners.analyses import FitConfig, IdentifiabilityConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class _Method(_Strict):
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


class AnalysisConfig(_Strict):
    """`analysis:` global analyses of the problem. `ranges` is shared by the methods."""

    ranges: Optional[dict[str, Any]] = None
    batch: Optional[Annotated[int, Field(ge=1, le=1_000_000)]] = None
    sobol: Optional[SobolConfig] = None
    morris: Optional[MorrisConfig] = None
    dgsm: Optional[DGSMConfig] = None
    identifiability: Optional[IdentifiabilityConfig] = None  # sensitivity/analysis_runs.py
    fit: Optional[FitConfig] = None  # sensitivity/analysis_runs.py

    @field_validator("ranges")
    @classmethod
    def _ranges(cls, v):
        return _check_ranges(v)

    @model_validator(mode="after")
    def _have_ranges(self):
        for name in ("sobol", "morris", "dgsm"):
            method = getattr(self, name)
            if method is not None and method.ranges is None and self.ranges is None:
                raise ValueError(f"@{name}: needs ranges: give analysis.ranges or analysis.{name}.ranges, "
                                 "e.g. {alpha: [0.5, 1.5]}")
        return self

    def methods(self) -> dict:
        """name -> the method's config, for the methods asked for."""
        return {k: getattr(self, k) for k in ("sobol", "morris", "dgsm") if getattr(self, k) is not None}

    def ranges_of(self, method) -> dict:
        return dict(method.ranges if method.ranges is not None else self.ranges)


class ExecutorConfig(_Strict):
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
    from ...core.errors import InputError, did_you_mean, list_names
    from ...core.problem import resolve_inputs
    from ...analyses.gsa.sampling import _one

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
                _one(str(key), spec)
            except InputError as exc:
                problems.append(f"{where}.{key}: " + str(exc).split(": ", 1)[-1])
    sens_block = data.get("sensitivity") if isinstance(data.get("sensitivity"), dict) else {}
    needs = [n for n in ("dgsm",) if isinstance(block.get(n), dict)]
    needs += [n for n in ("sobol", "morris") if isinstance(block.get(n), dict) and block[n].get("objective")]
    for n in needs:
        if not sens_block.get("objective"):
            problems.append(f"analysis.{n}: needs sensitivity.objective (the scalar to analyse); add one")
    return problems
