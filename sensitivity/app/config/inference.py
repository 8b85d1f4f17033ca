"""The YAML schema of what follows a fit: a multi-start, profile likelihoods and posterior
sampling, shared by a plain run config (under `analysis:`, next to `analysis.fit`, whose
data, sigma and inputs they use) and a `petab:` run config (top-level keys).

    analysis:                              # a plain config (with analysis.fit)
      fit: {data: obs.csv, sigma: 0.5, wrt: [a, b]}
      multistart: {starts: 20, ranges: {a: [0.1, 10]}, seed: 0}
      profile: {parameters: [a], level: 0.95, method: optimization}
      sample: {n: 1000, chains: 4, method: nuts}

    petab: problem.yaml                    # a PEtab config
    fit: {starts: 20}
    profile: {parameters: [k1, k2], level: 0.95, method: integration}
    sample: {n: 1000, chains: 4, priors: true}

`name_problems` checks the names of a raw block against the fitted inputs (no JAX here);
app/runners/analyses.py and app/runners/petab.py run them.
"""

from __future__ import annotations

import importlib.util
import math
from typing import Annotated, Any, Literal, Optional

from pydantic import Field, field_validator

from ...core.errors import did_you_mean, list_names
from .base import Strict, one_name

PROFILE_METHODS = ("optimization", "integration")
SAMPLE_METHODS = ("nuts", "adaptive_metropolis")


def _positive_distance(v):
    """max_distance: a positive number, or a mapping name -> positive number."""
    if v is None:
        return v
    items = v.items() if isinstance(v, dict) else [(None, v)]
    for name, x in items:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x <= 0:
            where = f"max_distance.{name}" if name is not None else "max_distance"
            raise ValueError(f"{where} = {x!r} must be a positive number (on the estimation scale)")
    return v


class MultistartConfig(Strict):
    """`analysis.multistart:` the fit of `analysis.fit` from `starts` Sobol points over
    `ranges` (default: analysis.fit.ranges) besides its start; every start kept."""

    starts: Annotated[int, Field(ge=1, le=10_000)]
    ranges: dict[str, list[float]] = {}
    screen: Optional[Annotated[int, Field(ge=0, le=1_000_000)]] = None
    seed: Annotated[int, Field(ge=0)] = 0
    best: Annotated[int, Field(ge=1, le=1000)] = 10

    @field_validator("ranges")
    @classmethod
    def _pairs(cls, v):
        for name, pair in v.items():
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in pair)
                    and pair[0] < pair[1]):
                raise ValueError(f"ranges.{name} = {pair!r} must be [low, high] with low < high")
        return v


class ProfileConfig(Strict):
    """`profile:` profile likelihoods of `parameters` (default all fitted) at `level`."""

    parameters: Optional[list[str]] = None
    level: Annotated[float, Field(gt=0, lt=1)] = 0.95
    method: Literal[PROFILE_METHODS] = "optimization"  # type: ignore[valid-type]
    max_distance: Any = None
    max_steps: Annotated[int, Field(ge=1, le=100_000)] = 200

    @field_validator("parameters", mode="before")
    @classmethod
    def _one_name(cls, v):
        return one_name(v)

    @field_validator("max_distance")
    @classmethod
    def _distance(cls, v):
        return _positive_distance(v)


class SampleConfig(Strict):
    """`sample:` posterior draws: `n` per chain after `warmup` adaptation steps (default: the
    sampler's own, 200 for NUTS started from the Laplace approximation, 500 otherwise)."""

    n: Annotated[int, Field(ge=1, le=10_000_000)] = 1000
    chains: Annotated[int, Field(ge=1, le=1024)] = 4
    warmup: Optional[Annotated[int, Field(ge=0, le=10_000_000)]] = None
    method: Literal[SAMPLE_METHODS] = "nuts"  # type: ignore[valid-type]
    seed: Annotated[int, Field(ge=0)] = 0


class PetabProfileConfig(ProfileConfig):
    """`profile:` of a PEtab config; priors: add the problem's objective priors."""

    priors: bool = False


class PetabSampleConfig(SampleConfig):
    """`sample:` of a PEtab config; priors: the problem's objective priors (flat on the
    estimation scale within the bounds where a parameter has none)."""

    priors: bool = True


def sampler_missing() -> str | None:
    """The name of a missing package of the optional extra `sample`, or None."""
    return next((m for m in ("blackjax", "arviz") if importlib.util.find_spec(m) is None), None)


def name_problems(where: str, block: dict, inputs: list[str] | None, what: str = "fitted input") -> list[str]:
    """Problems of a raw `multistart:` / `profile:` / `sample:` block (`where` its key path)
    against the names of the fitted inputs (None: unknown, not checked); a sample block
    without the optional extra is one too. Values of a wrong type are left to the schema."""
    problems: list[str] = []
    if not isinstance(block, dict):
        return problems

    def unknown(key: str, name) -> None:
        if inputs is not None and isinstance(name, str) and name not in inputs:
            article = "an" if what[0] in "aeiou" else "a"
            problems.append(f"{where}.{key}: not {article} {what}{did_you_mean(name, inputs)}; "
                            f"{what}s: {list_names(inputs)}")

    params = block.get("parameters")
    for i, name in enumerate([params] if isinstance(params, str) else params if isinstance(params, list) else []):
        unknown(f"parameters[{i}] = '{name}'", name)
    for key in ("ranges", "max_distance"):
        if isinstance(block.get(key), dict):
            for name in block[key]:
                unknown(f"{key}.{name}", name)
    if where.endswith("sample"):
        missing = sampler_missing()
        if missing:
            problems.append(f"{where}: sampling needs the optional extra 'sample' ({missing} is missing): "
                            'pip install "sensitivity[sample]"')
    return problems
