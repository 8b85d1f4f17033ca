"""Input distributions and sample designs of global sensitivity analysis.

`ranges` maps input names to a distribution:

    "k": (0.5, 2.0)                          uniform on [low, high]
    "k": (0.01, 10.0, "log-uniform")         log-uniform: ln k uniform on [ln low, ln high]
    "k": {"low": 0.5, "high": 2.0, "distribution": "uniform"}
    "k": {"mean": 1.0, "sd": 0.1, "distribution": "normal"}   (also (1.0, 0.1, "normal"))

The distributions (`Range`, `parse_ranges`) are in core/ranges.py.
Designs are drawn in the unit hypercube [0, 1]^D and mapped to values by each input's
quantile function (`Range.ppf`), so the same design serves every distribution:
`saltelli_design` (SALib's layout of Saltelli's A, AB_1..AB_D, B rows, from a scrambled
Sobol' sequence of scipy.stats.qmc), `morris_design` (SALib's trajectories on a grid of
levels) and `sobol_points` (plain scrambled Sobol' points, for DGSM).
"""

from __future__ import annotations

import numpy as np

from ...core.errors import InputError
from ...core.ranges import DISTRIBUTIONS, Range, parse_ranges  # noqa: F401  (gsa's public names)


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
