"""Input distributions and sample designs of global sensitivity analysis.

`ranges` maps input names to a distribution:

    "k": (0.5, 2.0)                          uniform on [low, high]
    "k": (0.01, 10.0, "log-uniform")         log-uniform: ln k uniform on [ln low, ln high]
    "k": {"low": 0.5, "high": 2.0, "distribution": "uniform"}
    "k": {"mean": 1.0, "sd": 0.1, "distribution": "normal"}   (also (1.0, 0.1, "normal"))

Designs are drawn in the unit hypercube [0, 1]^D and mapped to values by each input's
quantile function (`Range.ppf`), so the same design serves every distribution:
`saltelli_design` (SALib's layout of Saltelli's A, AB_1..AB_D, B rows, from a scrambled
Sobol' sequence of scipy.stats.qmc), `morris_design` (SALib's trajectories on a grid of
levels) and `sobol_points` (plain scrambled Sobol' points, for DGSM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from ...core.errors import InputError, did_you_mean, list_names
from ...core.problem import Problem

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
    from ...core.problem import resolve_inputs

    out = []
    for name, spec in ranges.items():
        try:
            resolve_inputs(problem.model, [name])
        except InputError as exc:
            raise InputError(f"ranges.{name}: " + str(exc).split(": ", 1)[-1]) from None
        out.append(_one(str(name), spec))
    return tuple(out)


def _one(name: str, spec) -> Range:
    where = f"ranges.{name}"
    dist = "uniform"
    if isinstance(spec, Mapping):
        extra = set(spec) - {"low", "high", "mean", "sd", "distribution"}
        if extra:
            raise InputError(f"{where}: unknown key(s) {sorted(extra)}; valid: low, high, mean, sd, distribution")
        dist = _dist(where, spec.get("distribution", "uniform"))
        keys = ("mean", "sd") if dist == "normal" else ("low", "high")
        if any(k not in spec for k in keys):
            raise InputError(f"{where}: a {dist} distribution needs {keys[0]} and {keys[1]}, got {dict(spec)}")
        a, b = spec[keys[0]], spec[keys[1]]
    elif isinstance(spec, (list, tuple)) and len(spec) in (2, 3):
        a, b = spec[0], spec[1]
        if len(spec) == 3:
            dist = _dist(where, spec[2])
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


def _dist(where: str, value) -> str:
    key = str(value).strip().lower()
    if key not in _ALIASES:
        raise InputError(f"{where}: distribution '{value}' is unknown{did_you_mean(key, DISTRIBUTIONS)}; "
                         f"valid: {list_names(DISTRIBUTIONS)}")
    return _ALIASES[key]


def to_values(U: np.ndarray, ranges: tuple[Range, ...]) -> np.ndarray:
    """Unit-cube points U (n, D) -> input values (n, D), column j through ranges[j].ppf."""
    U = np.asarray(U, dtype=np.float64)
    return np.column_stack([r.ppf(U[:, j]) for j, r in enumerate(ranges)])


def salib_problem(ranges: tuple[Range, ...]) -> dict:
    """SALib's problem dict for these ranges (uniform bounds; log-uniform as 'logunif',
    normal as 'norm' with [mean, sd], SALib's conventions)."""
    dists = {"uniform": "unif", "log-uniform": "logunif", "normal": "norm"}
    return {"num_vars": len(ranges), "names": [r.name for r in ranges],
            "bounds": [[r.a, r.b] for r in ranges], "dists": [dists[r.distribution] for r in ranges]}


def sobol_points(n: int, d: int, seed: int | None = 0) -> np.ndarray:
    """n scrambled Sobol' points in [0, 1]^d (scipy.stats.qmc); n a power of 2 keeps the
    sequence's balance."""
    from scipy.stats import qmc

    _check_n(n)
    return qmc.Sobol(d=d, scramble=True, seed=seed).random(n)


def saltelli_design(n: int, d: int, seed: int | None = 0) -> np.ndarray:
    """Saltelli's design in the unit cube, shape (n (d + 2), d): for each base row i, the
    rows A_i, AB_i^(1), ..., AB_i^(d), B_i (AB^(j) is A with column j from B), where A and B
    are the two halves of n scrambled Sobol' points in [0, 1]^(2d). SALib's
    `sample.sobol.sample(..., calc_second_order=False)` layout, so SALib's analyzers read it."""
    base = sobol_points(n, 2 * d, seed)
    A, B = base[:, :d], base[:, d:]
    out = np.empty((n, d + 2, d))
    out[:, 0] = A
    for j in range(d):
        out[:, j + 1] = A
        out[:, j + 1, j] = B[:, j]
    out[:, d + 1] = B
    return out.reshape(n * (d + 2), d)


def morris_design(trajectories: int, d: int, levels: int, seed: int | None = 0) -> np.ndarray:
    """Morris' one-at-a-time trajectories in the unit cube (SALib's sampler on [0, 1]^d),
    shape (trajectories (d + 1), d); consecutive rows of a trajectory differ in one input by
    levels / (2 (levels - 1))."""
    from SALib.sample import morris as morris_sampler

    if not (isinstance(levels, (int, np.integer)) and levels >= 2 and levels % 2 == 0):
        raise InputError(f"levels = {levels!r} must be an even integer >= 2 (e.g. 4)")
    if not (isinstance(trajectories, (int, np.integer)) and trajectories >= 2):
        raise InputError(f"trajectories = {trajectories!r} must be an integer >= 2 (e.g. 20)")
    problem = {"num_vars": d, "names": [f"x{j}" for j in range(d)], "bounds": [[0.0, 1.0]] * d}
    return morris_sampler.sample(problem, int(trajectories), num_levels=int(levels), seed=seed)


def _check_n(n) -> None:
    if not (isinstance(n, (int, np.integer)) and n >= 2):
        raise InputError(f"n = {n!r} must be an integer >= 2 (a power of 2 such as 1024 is best)")
