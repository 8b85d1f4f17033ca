"""Profile likelihoods (Raue et al. 2009): for a parameter x_i, the best nllh with x_i fixed,

    PL(c) = min over x_{-i} of nllh(x) with x_i = c,

followed from the estimate to both sides until it rises above the threshold
chi2.ppf(level, 1) / 2 over the best nllh; where it crosses is the end of the
likelihood-based confidence interval at `level`. Two ways of following the path, both on
the estimation scale (ln p for a `Problem` fitted with log_params, PEtab's scales):

- "optimization": steps in x_i, re-optimising the others from the previous point (the fit's
  least squares on the exact Jacobian for a `Problem`, L-BFGS-B on the exact gradient for
  PEtab); the step adapts (halved when the profile rises more than a quarter of the
  threshold in one step, doubled when it rises less than a twentieth); the crossing is
  then located by Brent's method on the profile itself.
- "integration" (Chen & Jennrich 2002; Stapor et al. 2018): the path solves
  g_{-i}(x) = 0 with x_i = c, so along s = |c - x_hat_i|

      d x_{-i} / ds = -H_{-i,-i}^-1 (dir H_{-i,i} + gamma g_{-i}),

  an ODE in the parameters (gamma pulls the path back where it strays) integrated by
  SciPy's RK45 with the crossing as a terminal event. H is the exact Hessian for a
  `Problem` (Hessian-vector products) and the Fisher information for a PEtab problem
  (a Gauss-Newton approximation: the path's tangent is approximate there, the pull-back
  term keeps it on the path).

Reading of the shape per parameter: "identifiable" (the profile crosses the threshold on
both sides), "practically non-identifiable" (open to one side or both: it reaches a bound
or `max_distance` below the threshold), "structurally non-identifiable" (flat: open on both
sides and never rising above a hundredth of the threshold).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import InputError, did_you_mean, list_names
from ..core.problem import Problem
from ..plots.fit import profiles_figure
from . import fit as fit_mod
from .likelihood import LikelihoodFit, as_likelihood

METHODS = ("optimization", "integration")
FLAT = 0.01  # a profile that never rises above this fraction of the threshold is flat


@dataclass(frozen=True)
class ProfileResult:
    """Profiles of some parameters of a likelihood, on the estimation scale.

    names (n,), scales (n,): all parameters; x (n,): the estimate the profiles start from;
    nllh: its value; level, threshold = chi2.ppf(level, 1) / 2; method; hessian_kind
    ("exact" or "fisher"); profiles: name -> dict with grid (m,) of the profiled value,
    delta (m,) = profile nllh - nllh, path (m, n) the parameters along the path, interval
    (low, high) (-inf / inf: open), sides ("closed" / "bound" / "distance" per side),
    verdict; notes; timings (seconds).
    """

    names: tuple
    scales: tuple
    x: np.ndarray
    nllh: float
    level: float
    threshold: float
    method: str
    hessian_kind: str
    profiles: dict
    notes: tuple = ()
    timings: dict = field(default_factory=dict)

    @property
    def intervals(self) -> dict:
        """name -> (low, high) on the estimation scale."""
        return {k: p["interval"] for k, p in self.profiles.items()}

    def path(self, name: str):
        """The parameters along the profile of `name` (DataFrame, one row per point, sorted)."""
        import pandas as pd

        p = self.profiles[name]
        df = pd.DataFrame(p["path"], columns=list(self.names))
        df.insert(0, "delta_nllh", p["delta"])
        return df.sort_values(name).reset_index(drop=True)

    def to_frame(self):
        """One row per profiled parameter: scale, estimate, interval, verdict, points."""
        import pandas as pd

        rows = []
        for k, p in self.profiles.items():
            i = self.names.index(k)
            rows.append(dict(input=k, scale=self.scales[i], estimate=self.x[i], lower=p["interval"][0],
                             upper=p["interval"][1], verdict=p["verdict"], points=len(p["grid"])))
        return pd.DataFrame(rows).set_index("input")

    def plot(self, path=None, title: str = ""):
        """The profiles (nllh - best) with the threshold and the intervals; the Figure."""
        items = [(k, p["grid"], p["delta"], float(self.x[self.names.index(k)]), p["interval"], p["verdict"])
                 for k, p in self.profiles.items()]
        return profiles_figure(items, self.threshold, path=path,
                               title=title or f"profiles ({self.method}, {100 * self.level:g}%)")

    def summary(self) -> str:
        lines = [f"profiles by {self.method} at level {self.level:g} (threshold {self.threshold:.4g} nllh units)"]
        for k, p in self.profiles.items():
            lo, hi = p["interval"]
            lines.append(f"  {k:>16s}: [{lo:.6g}, {hi:.6g}]  {p['verdict']}")
        return "\n".join(lines)


def _resolve(target, data, sigma, log_params, bounds, priors):
    """(likelihood, estimate (n,), notes) from a fit result, a Problem with data or a PEtab problem."""
    if isinstance(target, fit_mod.FitResult):
        if target.likelihood is None:
            raise InputError("this FitResult carries no likelihood; refit with sens.fit")
        lik = target.likelihood
        return lik, np.asarray(lik.x0, dtype=np.float64), ()
    if isinstance(target, LikelihoodFit):
        return target.likelihood, np.asarray(target.x, dtype=np.float64), ()
    if isinstance(target, Problem):
        if data is None:
            raise InputError("profile of a Problem needs data (time, output, value[, sigma])")
        lik = fit_mod.likelihood(target, data, sigma=sigma, log_params=log_params, bounds=bounds)
    else:
        lik = as_likelihood(target, priors=priors)
    x, v, ok, msg, _ = lik.minimize(lik.x0)
    if not math.isfinite(v):
        raise InputError(f"profile: the fit from the start failed ({msg}); fit first and pass the result")
    return lik, x, (f"estimate by a local fit from the start ({msg})",)


def profile(target, data=None, parameters=None, level: float = 0.95, method: str = "optimization",
            sigma=None, log_params: bool = True, bounds=None, max_distance=None, max_steps: int = 200,
            priors: bool = False) -> ProfileResult:
    """Profile likelihoods and likelihood-based confidence intervals.

    target: a `FitResult` (sens.fit on a Problem; its sigma, estimated or given, and its
    scale), a `LikelihoodFit` (sens.fit on a PEtab problem), a `Problem` with `data` (and
    `sigma`, `log_params`, `bounds` as in `sens.fit`; fitted first from its values) or a
    PEtab problem (fitted first from its nominal values; priors=True adds its priors).
    parameters: names to profile (default all). level: of the intervals (threshold
    chi2.ppf(level, 1) / 2 on the nllh). method: "optimization" | "integration" (see the
    module). max_distance: how far to follow an open profile on the estimation scale, a
    number or name -> number (default: to the bound where finite, else 5 for ln, 2 for
    log10 and 10 max(1, |x|) for linear parameters). max_steps: per side.
    Returns a `ProfileResult` (estimation scale).
    """
    from scipy.stats import chi2

    began = time.perf_counter()
    if method not in METHODS:
        raise InputError(f"method = '{method}' is unknown{did_you_mean(method, METHODS)}; valid: {', '.join(METHODS)}")
    if not 0 < level < 1:
        raise InputError(f"level = {level!r} must lie between 0 and 1, e.g. 0.95")
    lik, x_hat, notes = _resolve(target, data, sigma, log_params, bounds, priors)
    names = tuple(lik.names)
    chosen = list(names) if parameters is None else [parameters] if isinstance(parameters, str) else list(parameters)
    for k in chosen:
        if k not in names:
            raise InputError(f"parameters: '{k}' is not an estimated parameter{did_you_mean(k, names)}; "
                             f"parameters: {list_names(names)}")
    f_hat = lik.value(x_hat)
    thr = float(chi2.ppf(level, 1) / 2)
    H = lik.hessian(x_hat)
    with np.errstate(invalid="ignore"):
        cov_diag = np.diag(np.linalg.pinv(H, hermitian=True))
    profiles = {}
    for k in chosen:
        i = names.index(k)
        se = math.sqrt(cov_diag[i]) if cov_diag[i] > 0 and np.isfinite(cov_diag[i]) else math.inf
        sides, pts, ends = {}, [(x_hat[i], 0.0, x_hat.copy())], {}
        for d in (-1, 1):
            dist = _distance(lik, x_hat, i, d, max_distance, se)
            walk = _walk_optimization if method == "optimization" else _walk_integration
            side_pts, end, how = walk(lik, x_hat, f_hat, i, d, dist, se, thr, max_steps)
            pts += side_pts
            ends[d], sides[d] = end, how
        pts.sort(key=lambda p: p[0])
        grid = np.array([p[0] for p in pts])
        delta = np.array([p[1] for p in pts])
        interval = (ends[-1], ends[1])
        if min(delta) < -1e-6 * max(1.0, abs(f_hat)):
            notes += (f"{k}: the profile found a better value than the estimate by {-min(delta):.3g}; refit",)
        closed = [sides[d] == "closed" for d in (-1, 1)]
        if all(closed):
            verdict = "identifiable"
        elif not any(closed) and np.nanmax(np.abs(delta)) < FLAT * thr:
            verdict = "structurally non-identifiable (flat)"
        else:
            open_to = [w for w, c in zip(("below", "above"), closed) if not c]
            verdict = "practically non-identifiable (open " + " and ".join(open_to) + ")"
        profiles[k] = dict(grid=grid, delta=delta, path=np.array([p[2] for p in pts]), interval=interval,
                           sides=(sides[-1], sides[1]), verdict=verdict)
    return ProfileResult(names, tuple(lik.scales), x_hat, float(f_hat), float(level), thr, method,
                         getattr(lik, "hessian_kind", "exact"), profiles, notes,
                         {"wall": time.perf_counter() - began})


def _distance(lik, x_hat, i, d, max_distance, se) -> float:
    """How far to follow side d of parameter i: to its bound, or the default / given distance."""
    bound = lik.upper[i] if d > 0 else lik.lower[i]
    if isinstance(max_distance, dict):
        given = max_distance.get(lik.names[i])
    else:
        given = max_distance
    if given is not None:
        dist = float(given)
    elif np.isfinite(bound):
        dist = abs(bound - x_hat[i])
    else:
        scale = lik.scales[i]
        dist = 5.0 if scale == "log" else 2.0 if scale == "log10" else (
            max(20 * se, 10 * max(1.0, abs(x_hat[i]))) if np.isfinite(se) else 10 * max(1.0, abs(x_hat[i])))
    if np.isfinite(bound):
        dist = min(dist, abs(bound - x_hat[i]))
    return dist


def _walk_optimization(lik, x_hat, f_hat, i, d, dist, se, thr, max_steps):
    """One side of an optimisation-based profile: ([(c, delta, x)], interval end, how it ended)."""
    free = np.ones(x_hat.size, bool)
    free[i] = False
    h_max = max(dist / 5, 1e-12)
    h_min = min(1e-6 * max(1.0, abs(x_hat[i])), h_max)
    h = min(0.3 * se if np.isfinite(se) else dist / 20, h_max)
    h = max(h, h_min)
    pts = []
    c_prev, x_prev, delta_prev = x_hat[i], x_hat.copy(), 0.0
    for _ in range(max_steps):
        s_prev = abs(c_prev - x_hat[i])
        c = x_hat[i] + d * min(s_prev + h, dist)
        start = x_prev.copy()
        start[i] = c
        x, v, _, _, _ = lik.minimize(start, free)
        delta = v - f_hat
        if (not math.isfinite(delta) or delta - delta_prev > thr / 4) and h > h_min:
            h = max(h / 2, h_min)
            continue
        pts.append((c, delta, x))
        if delta > thr:
            return pts, _crossing(lik, f_hat, thr, i, free, c_prev, x_prev, c), "closed"
        if abs(c - x_hat[i]) >= dist * (1 - 1e-12):
            at_bound = c >= lik.upper[i] or c <= lik.lower[i]
            return pts, d * math.inf, "bound" if at_bound else "distance"
        if delta - delta_prev < thr / 20:
            h = min(2 * h, h_max)
        c_prev, x_prev, delta_prev = c, x, delta
    return pts, d * math.inf, "steps"


def _crossing(lik, f_hat, thr, i, free, c_in, x_in, c_out) -> float:
    """Where the profile crosses the threshold between c_in (below) and c_out (above), by
    Brent's method, each value a re-optimisation from the point below."""
    from scipy.optimize import brentq

    def g(c):
        start = x_in.copy()
        start[i] = c
        return lik.minimize(start, free)[1] - f_hat - thr

    tol = 1e-10 * max(1.0, abs(c_in))
    return float(brentq(g, c_in, c_out, xtol=tol, rtol=1e-12))


def _walk_integration(lik, x_hat, f_hat, i, d, dist, se, thr, max_steps):
    """One side of an integration-based profile (RK45 on the path's ODE)."""
    from scipy.integrate import solve_ivp

    n = x_hat.size
    free = np.ones(n, bool)
    free[i] = False
    gamma = 1.0 / se if np.isfinite(se) and se > 0 else 1.0

    def point(s, z):
        x = x_hat.copy()
        x[i] = x_hat[i] + d * s
        x[free] = z
        return x

    def rhs(s, z):
        x = point(s, z)
        _, g = lik.value_and_grad(x)
        H = lik.hessian(x)
        Hff = H[np.ix_(free, free)]
        b = d * H[free, i] + gamma * g[free]
        return -np.linalg.lstsq(Hff, b, rcond=None)[0]

    def cross(s, z):
        v = lik.value(point(s, z))
        return (v - f_hat - thr) if math.isfinite(v) else thr

    cross.terminal, cross.direction = True, 1
    sol = solve_ivp(rhs, (0.0, dist), x_hat[free], method="RK45", events=cross, dense_output=True,
                    rtol=1e-8, atol=1e-10, max_step=max(dist / 5, 1e-12))
    s_end = float(sol.t[-1])
    m = min(max_steps, 25)
    pts = []
    for s in np.linspace(0.0, s_end, m + 1)[1:]:
        x = point(s, sol.sol(s))
        pts.append((x[i], lik.value(x) - f_hat, x))
    if sol.status == 1 and len(sol.t_events[0]):
        return pts, float(x_hat[i] + d * sol.t_events[0][0]), "closed"
    if sol.status == -1:
        return pts, d * math.inf, "failed"
    c = x_hat[i] + d * s_end
    return pts, d * math.inf, "bound" if (c >= lik.upper[i] or c <= lik.lower[i]) else "distance"
