"""The distribution of one input of a global sensitivity analysis, read from `ranges`.

`ranges` maps input names to a distribution:

    "k": (0.5, 2.0)                          uniform on [low, high]
    "k": (0.01, 10.0, "log-uniform")         log-uniform: ln k uniform on [ln low, ln high]
    "k": {"low": 0.5, "high": 2.0, "distribution": "uniform"}
    "k": {"mean": 1.0, "sd": 0.1, "distribution": "normal"}   (also (1.0, 0.1, "normal"))

`parse_range` reads one entry and `parse_ranges` a whole mapping against a problem. No JAX
here: `sensitivity validate` checks a config's ranges with these before any compile; the
designs built on them are in analyses/gsa/sampling.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .errors import InputError, did_you_mean, list_names
from .problem import Problem, resolve_inputs

DISTRIBUTIONS = ("uniform", "log-uniform", "normal")
_ALIASES = {"uniform": "uniform", "unif": "uniform", "log-uniform": "log-uniform",
            "loguniform": "log-uniform", "log_uniform": "log-uniform", "logunif": "log-uniform",
            "normal": "normal", "norm": "normal", "gaussian": "normal"}
NORMAL_CLIP = 1e-6  # normal quantiles are taken of u clipped to [1e-6, 1 - 1e-6] (finite values)


@dataclass(frozen=True)
class Range:
    """One input's distribution: `distribution` "uniform" or "log-uniform" on [a, b] = [low,
    high], or "normal" with mean a and standard deviation b."""

    name: str
    distribution: str
    a: float
    b: float

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """Values for unit-cube coordinates u (the quantile function)."""
        u = np.asarray(u, dtype=np.float64)
        if self.distribution == "uniform":
            return self.a + u * (self.b - self.a)
        if self.distribution == "log-uniform":
            la, lb = math.log(self.a), math.log(self.b)
            return np.exp(la + u * (lb - la))
        from scipy.stats import norm

        return self.a + self.b * norm.ppf(np.clip(u, NORMAL_CLIP, 1 - NORMAL_CLIP))

    @property
    def poincare(self) -> float:
        """The Poincare constant C of the distribution, in DGSM's bound
        S_T <= C E[(df/dx)^2] / V: (b - a)^2 / pi^2 for a uniform, sd^2 for a normal;
        for a log-uniform the bound is taken in ln x (see `dgsm`): (ln b - ln a)^2 / pi^2."""
        if self.distribution == "uniform":
            return (self.b - self.a) ** 2 / math.pi ** 2
        if self.distribution == "normal":
            return self.b ** 2
        return (math.log(self.b) - math.log(self.a)) ** 2 / math.pi ** 2

    def to_dict(self) -> dict:
        if self.distribution == "normal":
            return {"distribution": "normal", "mean": self.a, "sd": self.b}
        return {"distribution": self.distribution, "low": self.a, "high": self.b}


def parse_ranges(problem: Problem, ranges: Mapping) -> tuple[Range, ...]:
    """Check `ranges` against the problem's model and return one `Range` per named input,
    in the order given. Raises `InputError` naming the bad entry."""
    if not isinstance(ranges, Mapping) or not ranges:
        raise InputError(f"ranges must be a mapping input name -> (low, high), e.g. "
                         f"{{'{problem.input_names[0]}': (0.5, 2.0)}}; got {ranges!r}")

    out = []
    for name, spec in ranges.items():
        try:
            resolve_inputs(problem.model, [name])
        except InputError as exc:
            raise InputError(f"ranges.{name}: " + str(exc).split(": ", 1)[-1]) from None
        out.append(parse_range(str(name), spec))
    return tuple(out)


def parse_range(name: str, spec) -> Range:
    """The `Range` of one entry `name: spec` of a ranges mapping; InputError naming it if bad."""
    where = f"ranges.{name}"
    dist = "uniform"
    if isinstance(spec, Mapping):
        extra = set(spec) - {"low", "high", "mean", "sd", "distribution"}
        if extra:
            raise InputError(f"{where}: unknown key(s) {sorted(extra)}; valid: low, high, mean, sd, distribution")
        dist = _distribution(where, spec.get("distribution", "uniform"))
        keys = ("mean", "sd") if dist == "normal" else ("low", "high")
        if any(k not in spec for k in keys):
            raise InputError(f"{where}: a {dist} distribution needs {keys[0]} and {keys[1]}, got {dict(spec)}")
        a, b = spec[keys[0]], spec[keys[1]]
    elif isinstance(spec, (list, tuple)) and len(spec) in (2, 3):
        a, b = spec[0], spec[1]
        if len(spec) == 3:
            dist = _distribution(where, spec[2])
    else:
        raise InputError(f"{where} = {spec!r}: expected (low, high), (low, high, distribution) or a mapping "
                         "{low, high, distribution}")
    try:
        a, b = float(a), float(b)
    except (TypeError, ValueError):
        raise InputError(f"{where} = {spec!r}: the bounds must be numbers") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise InputError(f"{where} = {spec!r}: the bounds must be finite")
    if dist == "normal":
        if b <= 0:
            raise InputError(f"{where}: sd = {b:g} must be positive")
    elif not a < b:
        raise InputError(f"{where} = {spec!r}: low = {a:g} must be below high = {b:g}")
    if dist == "log-uniform" and a <= 0:
        raise InputError(f"{where}: a log-uniform range needs low > 0, got {a:g}")
    return Range(name, dist, a, b)


def _distribution(where: str, value) -> str:
    key = str(value).strip().lower()
    if key not in _ALIASES:
        raise InputError(f"{where}: distribution '{value}' is unknown{did_you_mean(key, DISTRIBUTIONS)}; "
                         f"valid: {list_names(DISTRIBUTIONS)}")
    return _ALIASES[key]
