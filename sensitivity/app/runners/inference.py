"""What follows a fit, for both kinds of run (a plain config's `analysis:` block and a PEtab
run): profiles parameter by parameter with a progress line each, posterior sampling, and
their verdicts in words (summary.json entries and the lines the CLI prints). The schema is
app/config/inference.py; the files are written by app/output/files.py.

Convergence is loud: a multi-start whose best value only one start reached, a profile that
found a better value than the fit, and a sample whose R-hat, effective sample sizes or
divergent transitions say the chains have not mixed (the sampler's own thresholds) print a
line saying NOT converged (or a WARNING) with what to try.
"""

from __future__ import annotations

import dataclasses
import math
from contextlib import nullcontext

import numpy as np

from ...analyses import sample as sampling
from ...analyses.likelihood import BEST_TOL
from ...analyses.profile import profile
from ...analyses.sample import sample

# the sampler's own thresholds where it names them: R-hat below RHAT_OK (the chains agree,
# Vehtari et al. 2021), bulk and tail effective sample sizes above ESS_OK
RHAT_MAX = float(getattr(sampling, "RHAT_OK", 1.01))
ESS_MIN = float(getattr(sampling, "ESS_OK", 100))


def _stage(stage):
    return stage or (lambda label: nullcontext())


# --------------------------------------------------------------------------- running
class Announced:
    """A likelihood (sensitivity.analyses.likelihood's interface) whose local fits each print
    a line through `note`: "start k/total: nllh ... (converged) after i iterations". Every
    other attribute is the wrapped likelihood's."""

    def __init__(self, likelihood, total: int, note):
        self.wrapped, self.total, self.note, self.done = likelihood, total, note, 0

    def __getattr__(self, name):
        return getattr(self.wrapped, name)

    def minimize(self, x0, free=None, **options):
        out = self.wrapped.minimize(x0, free, **options)
        self.done += 1
        self.note(f"start {self.done}/{self.total}: nllh {out[1]:.6g} "
                  f"({'converged' if out[2] else 'NOT converged'}) after {out[4]} iterations")
        return out


def run_profiles(target, cfg, stage=None, **extra):
    """Profiles of `cfg.parameters` (default all) of a fit result `target`, one parameter at
    a time (a progress line each), merged into one `ProfileResult`. extra: more arguments
    of `sensitivity.profile` (e.g. for a PEtab likelihood with priors)."""
    stage = _stage(stage)
    names = list(getattr(target, "input_names", ()) or target.likelihood.names)
    chosen = names if cfg.parameters is None else list(cfg.parameters)
    parts = []
    for k, name in enumerate(chosen, 1):
        with stage(f"profile {k}/{len(chosen)}: {name} ({cfg.method}, level {cfg.level:g})"):
            parts.append(profile(target, parameters=[name], level=cfg.level, method=cfg.method,
                                 max_distance=cfg.max_distance, max_steps=cfg.max_steps, **extra))
    first = parts[0]
    merged = {k: v for p in parts for k, v in p.profiles.items()}
    notes = tuple(dict.fromkeys(n for p in parts for n in p.notes))
    wall = sum(p.timings.get("wall", 0.0) for p in parts)
    return dataclasses.replace(first, profiles=merged, notes=notes, timings={"wall": wall})


def run_sample(target, cfg, stage=None):
    """Posterior draws of a fit result `target` by `cfg` (n, chains, warmup, method, seed)."""
    warm = "default" if cfg.warmup is None else cfg.warmup
    with _stage(stage)(f"sampling: {cfg.method}, {cfg.chains} chains x ({warm} warm-up + {cfg.n}) steps"):
        return sample(target, method=cfg.method, n=cfg.n, chains=cfg.chains, warmup=cfg.warmup, seed=cfg.seed)


# --------------------------------------------------------------------------- verdicts
def multistart_summary(fit, tol: float = BEST_TOL) -> dict:
    """The summary.json entry of a multi-start fit (a `FitResult` or `LikelihoodFit`)."""
    v = fit.start_values()
    ok = np.isfinite(v)
    best = float(v[ok].min()) if ok.any() else math.inf
    at_best = int(np.sum(v[ok] <= best + tol))
    return {"starts": int(v.size), "best_value": best, "at_best": at_best, "tolerance": tol,
            "fraction_at_best": fit.fraction_at_best(tol), "failed": int((~ok).sum()),
            "converged": int(np.sum(np.asarray(fit.starts["success"], bool))),
            "best_converged": bool(fit.success)}


def multistart_lines(fit, tol: float = BEST_TOL) -> list[str]:
    s = multistart_summary(fit, tol)
    lines = [f"multi-start: {s['at_best']} of {s['starts']} starts within {tol:g} of the best value "
             f"{s['best_value']:.6g} ({100 * s['fraction_at_best']:.0f}%); {s['converged']} converged"
             + (f", {s['failed']} failed" if s["failed"] else "")]
    if s["starts"] > 1 and s["at_best"] < 2:
        lines.append("WARNING: multi-start: only one start reached the best value, so it may not be the global "
                     "optimum; run more starts (or wider ranges) until several agree")
    if not s["best_converged"]:
        lines.append("multi-start: the best start NOT converged; raise the iterations or check the model")
    return lines


def profile_summary(prof) -> dict:
    """The summary.json entry of a `ProfileResult`: intervals on the estimation and natural scale."""
    params = {}
    for k, p in prof.profiles.items():
        i = prof.names.index(k)
        params[k] = {"estimate": float(prof.x[i]), "scale": prof.scales[i], "interval": list(p["interval"]),
                     "interval_natural": list(natural(p["interval"], prof.scales[i])), "verdict": p["verdict"],
                     "sides": list(p["sides"]), "points": len(p["grid"])}
    return {"method": prof.method, "level": prof.level, "threshold": prof.threshold, "nllh": prof.nllh,
            "hessian": prof.hessian_kind, "parameters": params, "notes": list(prof.notes),
            "timings": prof.timings}


def profile_lines(prof) -> list[str]:
    lines = [f"profiles ({prof.method}, {100 * prof.level:g}%): " + "; ".join(
        f"{k} in [{p['interval'][0]:.4g}, {p['interval'][1]:.4g}] {p['verdict']}" for k, p in prof.profiles.items())]
    for note in prof.notes:
        if "better value" in note:
            lines.append(f"WARNING: profile: {note} (the fit is NOT the optimum; fit again from that point)")
    return lines


def natural(values, scale: str) -> tuple:
    """Values on an estimation scale ("log", "log10", else linear) on the natural scale."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore"):
        out = np.exp(v) if scale == "log" else np.power(10.0, v) if scale == "log10" else v
    return tuple(float(x) for x in out)


def sample_verdict(s) -> tuple[bool, list[str]]:
    """(converged, reasons): R-hat below RHAT_MAX, bulk and tail ESS above ESS_MIN for every
    parameter, and no divergent transitions (the result's own `converged` where it has one)."""
    reasons = []
    rhat = np.asarray(s.rhat, dtype=float)
    if not np.all(rhat < RHAT_MAX):
        i = int(np.argmax(np.where(np.isfinite(rhat), rhat, np.inf)))
        reasons.append(f"R-hat of {s.names[i]} is {rhat[i]:.3g} (>= {RHAT_MAX:g}): the chains disagree")
    for kind in ("bulk", "tail"):
        ess = np.asarray(getattr(s, f"ess_{kind}"), dtype=float)
        if not np.all(ess > ESS_MIN):
            i = int(np.argmin(np.where(np.isfinite(ess), ess, -np.inf)))
            reasons.append(f"{kind} effective sample size of {s.names[i]} is {ess[i]:.0f} (<= {ESS_MIN:g})")
    div = int(np.sum(s.divergent)) if getattr(s, "divergent", None) is not None else 0
    if div:
        reasons.append(f"{div} divergent transitions")
    own = getattr(s, "converged", None)
    ok = bool(own) if isinstance(own, (bool, np.bool_)) else not reasons
    if not ok and not reasons:
        reasons.append("the sampler says so")
    return ok, reasons


def sample_summary(s) -> dict:
    ok, reasons = sample_verdict(s)
    c, d, _ = s.samples.shape
    return {"method": s.method, "chains": c, "draws": d, "converged": ok, "reasons": reasons,
            "rhat_below": RHAT_MAX, "ess_above": ESS_MIN,
            "divergent": int(np.sum(s.divergent)) if getattr(s, "divergent", None) is not None else 0,
            "mean": dict(zip(s.names, s.mean)), "sd": dict(zip(s.names, np.sqrt(np.diag(s.covariance)))),
            "rhat": dict(zip(s.names, s.rhat)), "ess_bulk": dict(zip(s.names, s.ess_bulk)),
            "ess_tail": dict(zip(s.names, s.ess_tail)), "scales": list(s.scales), "notes": list(s.notes),
            "timings": s.timings}


def sample_lines(s) -> list[str]:
    ok, reasons = sample_verdict(s)
    c, d, _ = s.samples.shape
    head = f"sample ({s.method}, {c} chains x {d} draws): "
    if ok:
        ess = float(min(np.min(s.ess_bulk), np.min(s.ess_tail)))
        return [head + f"converged (R-hat < {RHAT_MAX:g}, ESS >= {ess:.0f} > {ESS_MIN:g}, no divergences)"]
    return [head + "NOT converged: " + "; ".join(reasons) + ". Draw more (n), more warm-up, or start from a "
            "better fit"]
