"""Profile likelihoods (Raue et al. 2009): for a parameter x_i, the best nllh with x_i fixed,

    PL(c) = min over x_{-i} of nllh(x) with x_i = c,

followed from the estimate to both sides until it rises above the threshold
chi2.ppf(level, 1) / 2 over the best nllh; where it crosses is the end of the
likelihood-based confidence interval at `level`. Two ways of following the path, both on
the estimation scale (ln p for a `Problem` fitted with log_params, PEtab's scales):

- "optimization": steps in x_i, predicting the others by the secant of the last two
  points and re-optimising them by a trust-region Newton iteration on the curvature (the
  exact Hessian for a `Problem`, the Fisher information for PEtab, as fides does) to a
  tolerance far below the threshold; the step aims each point at a rise of a tenth of the
  threshold (halved where a point fails or rises more than a quarter); the crossing is
  located by regula falsi on the profile to 1e-3 of the threshold.
- "integration" (Chen & Jennrich 2002; Stapor et al. 2018): the path solves
  g_{-i}(x) = 0 with x_i = c, so along s = |c - x_hat_i|

      d x_{-i} / ds = -H_{-i,-i}^-1 H_{-i,i} dir,

  an ODE in the parameters followed by Euler steps with the same Newton corrector pulling
  the path back (a predictor-corrector continuation). H is the exact Hessian for a `Problem`
  and the Fisher information for a PEtab problem (a Gauss-Newton approximation: the tangent
  is approximate there, the corrector keeps the path exact). Where a solve fails at a trial
  point, the step shrinks; where the tangent cannot be solved, the secant predicts.

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
            side_pts, end, how, fallbacks = _walk(lik, x_hat, f_hat, i, d, dist, se, thr, max_steps, method)
            if fallbacks:
                notes += (f"{k}: the path's tangent failed (no solve or a poor prediction) at {fallbacks} "
                          f"point(s) ({'below' if d < 0 else 'above'}); the secant predicted them",)
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


def _newton(lik, x0, free, tol: float = 1e-6, max_iter: int = 40, H=None):
    """Re-optimise the free parameters from x0 (n,) by a trust-region Newton iteration on the
    curvature `lik.hessian` (exact for a `Problem`, the Fisher information for PEtab, as fides
    does), projected on the bounds; stops once the predicted decrease falls below `tol` (nllh
    units). A likelihood with `value_grad_hessian` (PEtab: nllh, gradient and Fisher
    information from one forward-sensitivity solve) gives fresh curvature with every value
    at no extra solve, so every step uses the curvature at its point. Otherwise the
    curvature is evaluated once at the start (or taken from `H` (n, n)) and held while the
    steps reduce the nllh as predicted (ratio > 0.5), re-evaluated where not. A failed solve
    at a trial point (inf / nan / an exception) shrinks the region.
    Returns (x (n,), value, curvature (n, n) or None); value inf when x0 cannot be solved."""
    lo, hi = lik.lower, lik.upper
    x = np.clip(np.asarray(x0, dtype=np.float64), lo, hi)
    joint = hasattr(lik, "value_grad_hessian")
    if joint:
        f, g, Hx = _safe_vgh(lik, x)
        H = Hx if Hx is not None else H
    else:
        f, g = _safe_vg(lik, x)
    if not math.isfinite(f):
        return x, math.inf, H
    if H is None:
        H = _safe_hessian(lik, x)
    radius = 1.0
    for _ in range(max_iter):
        if H is None:  # no curvature here: the gradient-only re-optimisation (L-BFGS-B) corrects
            x, f, *_ = lik.minimize(x, free)
            return x, f, None
        act = free & ~(((x <= lo) & (g > 0)) | ((x >= hi) & (g < 0)))
        if not act.any():
            return x, f, H
        ga, Ha = g[act], H[np.ix_(act, act)]
        p = _tr_step(Ha, ga, radius)
        pred = -(ga @ p + 0.5 * p @ Ha @ p)
        if pred < tol:  # g is fresh; a held curvature only scales the predicted decrease
            return x, f, H
        xt = x.copy()
        xt[act] += p
        xt = np.clip(xt, lo, hi)
        if joint:
            ft, gt, Ht = _safe_vgh(lik, xt)
        else:
            (ft, gt), Ht = _safe_vg(lik, xt), None
        rho = (f - ft) / pred if math.isfinite(ft) else -1.0
        if rho > 0.1:
            x, f, g = xt, ft, gt
            if rho > 0.75 and np.linalg.norm(p) > 0.9 * radius:
                radius *= 2
            if Ht is not None:
                H = Ht
            elif rho < 0.5:
                H = _safe_hessian(lik, x)
        else:
            radius = 0.25 * min(radius, np.linalg.norm(p))
            if radius < 1e-10:
                return x, f, H
    return x, f, H


def _tr_step(H, g, radius):
    """argmin g.p + p.H.p / 2 subject to |p| <= radius (eigen-decomposition, bisection on the shift)."""
    w, V = np.linalg.eigh(0.5 * (H + H.T))
    gt = V.T @ g
    floor = 1e-12 * max(1.0, abs(w).max())

    def p_of(lam):
        return -V @ (gt / np.maximum(w + lam, floor))

    lam = max(0.0, -w.min() + floor)
    p = p_of(lam)
    if np.linalg.norm(p) <= radius:
        return p
    a, b = lam, lam + np.linalg.norm(g) / radius + abs(w).max()
    for _ in range(60):
        mid = 0.5 * (a + b)
        if np.linalg.norm(p_of(mid)) > radius:
            a = mid
        else:
            b = mid
    return p_of(b)


def _safe_vg(lik, x):
    try:
        v, g = lik.value_and_grad(x)
    except Exception:  # a failed solve
        return math.inf, None
    if not math.isfinite(v) or g is None or not np.all(np.isfinite(g)):
        return math.inf, None
    return float(v), np.asarray(g, dtype=np.float64)


def _safe_vgh(lik, x):
    """(value, gradient (n,), curvature (n, n) or None) from one solve; (inf, None, None)
    where it fails."""
    try:
        v, g, H = lik.value_grad_hessian(x)
    except Exception:  # a failed solve
        return math.inf, None, None
    if not math.isfinite(v) or g is None or not np.all(np.isfinite(g)):
        return math.inf, None, None
    H = None if H is None or not np.all(np.isfinite(H)) else np.asarray(H, dtype=np.float64)
    return float(v), np.asarray(g, dtype=np.float64), H


def _safe_hessian(lik, x):
    try:
        H = np.asarray(lik.hessian(x), dtype=np.float64)
    except Exception:  # a failed solve
        return None
    return H if np.all(np.isfinite(H)) else None


def _tangent(H, i, d, free):
    """The path's direction d x_free / ds = -H_ff^-1 H_fi d (Chen & Jennrich) from the curvature
    H (n, n) at the previous point; None where it could not be evaluated."""
    if H is None:
        return None
    t = -np.linalg.lstsq(H[np.ix_(free, free)], d * H[free, i], rcond=None)[0]
    return t if np.all(np.isfinite(t)) else None


def _walk(lik, x_hat, f_hat, i, d, dist, se, thr, max_steps, method):
    """One side of a profile by prediction and correction: ([(c, delta, x)], interval end, how it
    ended, notes). The prediction is the secant of the last two points ("optimization") or the
    path's ODE tangent ("integration", one Euler step of Chen & Jennrich's ODE; where the
    tangent cannot be solved it falls back to the secant); the correction re-optimises the
    others by `_newton` to a tolerance far below the threshold. The step adapts to aim each
    point at a rise of a tenth of the threshold (a quadratic model of the profile), halves
    where a point fails or rises by more than a quarter; the crossing is located by secant
    steps on the profile to 1e-3 of the threshold."""
    free = np.ones(x_hat.size, bool)
    free[i] = False
    # Newton on the exact Hessian converges fast to any precision; Gauss-Newton only linearly,
    # so it stops where the interval no longer moves (far below the crossing's 1e-3 thr)
    tol = (1e-8 if getattr(lik, "hessian_kind", "exact") == "exact" else 1e-4) * thr
    h_max = max(dist / 5, 1e-12)
    h_min = min(1e-6 * max(1.0, abs(x_hat[i])), h_max)
    h = min(0.3 * se if np.isfinite(se) else dist / 20, h_max)
    h = max(h, h_min)
    pts, fallbacks = [], 0
    s_prev, x_prev, delta_prev = 0.0, x_hat.copy(), 0.0
    s_pp, x_pp, H_prev = None, None, None
    for _ in range(max_steps):
        s = min(s_prev + h, dist)
        x, delta = None, math.inf
        for kind in (("tangent", "secant", "previous") if method == "integration" else ("secant", "previous")):
            start = x_prev.copy()
            if kind == "tangent":
                t = _tangent(H_prev if H_prev is not None else _safe_hessian(lik, x_prev), i, d, free)
                if t is None:
                    fallbacks += 1
                    continue
                start[free] += (s - s_prev) * t
            elif kind == "secant":
                if s_pp is None or s_prev <= s_pp:
                    continue
                start += (s - s_prev) / (s_prev - s_pp) * (x_prev - x_pp)
            start[i] = x_hat[i] + d * s
            x, v, H = _newton(lik, start, free, tol=tol, H=H_prev)
            delta = v - f_hat
            if math.isfinite(delta) and delta - delta_prev <= thr / 4:
                break
            if kind == "tangent":
                fallbacks += 1
        if (not math.isfinite(delta) or delta - delta_prev > thr / 4) and h > h_min:
            h = max(h / 2, h_min)
            continue
        if not math.isfinite(delta):  # no point can be solved even at the smallest step
            return pts, d * math.inf, "failed", fallbacks
        pts.append((x[i], delta, x))
        if delta > thr:
            c = _cross(lik, f_hat, thr, i, free, d, x_hat[i], (s_prev, delta_prev, x_prev), (s, delta, x), tol, pts, H)
            return pts, c, "closed", fallbacks
        if s >= dist * (1 - 1e-12):
            c = x[i]
            at_bound = c >= lik.upper[i] or c <= lik.lower[i]
            return pts, d * math.inf, "bound" if at_bound else "distance", fallbacks
        # quadratic model delta ~ a s^2 aimed at a rise of thr / 10 in the next step
        rise = delta - delta_prev
        if rise > 0 and s > s_prev:
            slope = rise / (s - s_prev)
            h_new = (thr / 10) / max(slope, 1e-300)
            h = float(np.clip(h_new, h / 2, 3 * h))
        else:
            h = 2 * h
        h = min(max(h, h_min), h_max)
        s_pp, x_pp, H_prev = s_prev, x_prev, H
        s_prev, x_prev, delta_prev = s, x, delta
    return pts, d * math.inf, "steps", fallbacks


def _cross(lik, f_hat, thr, i, free, d, c_hat, below, above, tol, pts, H=None) -> float:
    """Where the profile crosses the threshold between the points below and above (s, delta, x):
    regula falsi (Illinois) on delta - thr in s, each value a re-optimisation from the nearest
    point; stops within 1e-3 of the threshold."""
    (sa, fa, xa), (sb, fb, xb) = below, above
    fa, fb = fa - thr, fb - thr
    side = 0
    for _ in range(20):
        s = sb - fb * (sb - sa) / (fb - fa) if fb != fa else 0.5 * (sa + sb)
        if not (min(sa, sb) < s < max(sa, sb)):
            s = 0.5 * (sa + sb)
        w = (s - sa) / (sb - sa)
        start = (1 - w) * xa + w * xb
        start[i] = c_hat + d * s
        x, v, _ = _newton(lik, start, free, tol=tol, H=H)
        if not math.isfinite(v):
            return c_hat + d * s
        fs = v - f_hat - thr
        pts.append((x[i], fs + thr, x))
        if abs(fs) < 1e-3 * thr or abs(sb - sa) < 1e-10 * max(1.0, abs(c_hat)):
            return c_hat + d * s
        if fs < 0:
            sa, fa, xa = s, fs, x
            if side == -1:
                fb /= 2
            side = -1
        else:
            sb, fb, xb = s, fs, x
            if side == 1:
                fa /= 2
            side = 1
    return c_hat + d * s
