"""Posterior sampling: NUTS on the exact gradients and adaptive Metropolis (blackjax and
ArviZ; the optional extra `sample`: `pip install "sensitivity[sample]"`).

The log-posterior on the estimation scale (ln p for a `Problem` fitted with log_params,
PEtab's scales) is -nllh(x) plus the log-prior: flat within the bounds, or a PEtab
problem's objective priors where it has them (priors=True, the default for PEtab). A
parameter with bounds is sampled through a smooth map from the real line (lo + (hi - lo)
sigmoid(z) for two bounds, lo + exp(z) or hi - exp(z) for one) with the map's log-Jacobian
added, so the flat prior stays flat on the estimation scale and no proposal leaves the
bounds.

Methods:
    "nuts"                 NUTS with Stan's windowed adaptation (blackjax's schedule: dual
                           averaging of the step size, a dense or diagonal mass matrix
                           estimated at the end of each slow window) for `warmup` steps per
                           chain, the chains' draws of each slow window pooled into one
                           estimate (chains x the window's draws; `_nuts_run`), from the
                           Laplace approximation at the mode on the sampling scale (the
                           chains start from its draws, its covariance seeds the mass
                           matrix; see `_laplace`) unless mass_matrix="identity".
    "adaptive_metropolis"  Haario et al. (2001) as pyPESTO's AdaptiveMetropolisSampler: a
                           Gaussian random walk whose covariance is the running mean and
                           covariance of the chain (update rate k^-0.51), scaled towards an
                           acceptance rate of 0.234, regularised where not positive definite.
                           It adapts during `warmup` and then samples with the proposal held
                           fixed (an exact Metropolis chain).

Backends: "jax" traces the nllh through the solve (`lik.nllh_function()`: the PEtab
problem's compiled nllh or a `Problem`'s solve, with the exact gradient as its derivative)
and compiles one chain into one program, run for each chain and each phase of the
warm-up (and the draws) on up to as many threads as cores (vmap_chains=True: all chains as
one vmapped program, in lockstep); "callback" calls the likelihood's nllh and gradient on the host through
`jax.pure_callback` (any likelihood), the chains one after another; "auto" (default) takes "jax" and falls back to "callback"
when the likelihood cannot be traced. R-hat and effective sample sizes are ArviZ's.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import InputError, did_you_mean
from ..core.lazy import LazyModule
from ..integrate.solve import output_function, values_of
from ..plots.fit import pair_figure, predictive_figure, trace_figure
from .profile import _resolve

METHODS = ("nuts", "adaptive_metropolis")
BACKENDS = ("auto", "jax", "callback")
MASS = ("laplace", "identity")
# NUTS warm-up steps per chain: from the identity (Stan's 1000; blackjax's schedule needs
# some 500 for its doubling windows) or from the Laplace approximation, whose covariance
# each slow window's estimate is averaged with as LAPLACE_MEMORY draws' worth
WARMUP, WARMUP_SEEDED, LAPLACE_MEMORY = 500, 200, 25.0
SOFT = 10.0  # two bounds: the soft clip's sharpness, k (hi - lo) (see _Map)
REACH = 20.0  # the mode's search on the sampling scale: within the start +- REACH
# adaptive Metropolis: pyPESTO's defaults
AM_DECAY, AM_TARGET, AM_REG = 0.51, 0.234, 1e-6
# diagnostics' thresholds (Vehtari et al. 2021): R-hat below, bulk / tail ESS above
RHAT_OK, ESS_OK = 1.01, 400
# the optional extra `sample`: imported when first used
az = LazyModule("arviz")
blackjax = LazyModule("blackjax")


@dataclass(frozen=True)
class SampleResult:
    """Posterior samples on the estimation scale.

    names (n,), scales (n,); samples (chains, draws, n); log_posterior (chains, draws);
    divergent (chains, draws) bool (NUTS; all False for adaptive Metropolis); acceptance
    (chains, draws): NUTS' mean acceptance rate of the trajectory, or the Metropolis
    acceptance probability min(1, ratio); step_size (chains,): NUTS' adapted step size or
    the Metropolis proposal's scale factor; rhat (n,), ess_bulk (n,), ess_tail (n,):
    ArviZ's diagnostics; method; backend ("jax": one vmapped program, "callback": on the
    host, chain after chain); notes; timings (seconds: wall, compile, sampling (the chains'
    run, compile apart), compile_cpu and sampling_cpu (the process's CPU seconds), laplace (the mode and Hessian before it), cpu (process CPU time of
    the whole call)); likelihood: the objective (for posterior predictions); evaluations
    (chains, warmup + draws): gradient evaluations (NUTS' leapfrog steps) or log-density
    evaluations (adaptive Metropolis) of each step, warm-up included.
    """

    names: tuple
    scales: tuple
    samples: np.ndarray
    log_posterior: np.ndarray
    divergent: np.ndarray
    acceptance: np.ndarray
    step_size: np.ndarray
    rhat: np.ndarray
    ess_bulk: np.ndarray
    ess_tail: np.ndarray
    method: str = "nuts"
    notes: tuple = ()
    timings: dict = field(default_factory=dict)
    backend: str = "callback"
    likelihood: object = field(default=None, repr=False, compare=False)
    evaluations: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def mean(self) -> np.ndarray:
        """Posterior mean (n,) over all chains and draws."""
        return self.samples.reshape(-1, len(self.names)).mean(axis=0)

    @property
    def covariance(self) -> np.ndarray:
        """Posterior covariance (n, n) over all chains and draws."""
        return np.cov(self.samples.reshape(-1, len(self.names)), rowvar=False).reshape(len(self.names), -1)

    @property
    def n_divergent(self) -> int:
        return int(self.divergent.sum())

    @property
    def ess_per_second(self) -> float:
        """The smallest bulk ESS over the parameters per second of sampling (compile apart)."""
        s = self.timings.get("sampling", self.timings.get("wall", math.nan))
        return float(np.min(self.ess_bulk) / s) if s and s > 0 else math.nan

    @property
    def converged(self) -> bool:
        """R-hat < 1.01 and bulk and tail ESS > 400 for every parameter, no divergences."""
        return bool(np.all(self.rhat < RHAT_OK) and np.all(self.ess_bulk > ESS_OK)
                    and np.all(self.ess_tail > ESS_OK) and self.n_divergent == 0)

    def to_arviz(self):
        """An `arviz.InferenceData`: the samples (posterior, estimation scale) and the
        sampler's statistics (lp, diverging, acceptance_rate)."""
        return az.from_dict(posterior={k: self.samples[:, :, i] for i, k in enumerate(self.names)},
                            sample_stats={"lp": self.log_posterior, "diverging": self.divergent,
                                          "acceptance_rate": self.acceptance})

    def to_frame(self):
        """One row per parameter: mean, sd, quantiles 2.5 / 50 / 97.5 %, R-hat, ESS."""
        import pandas as pd

        flat = self.samples.reshape(-1, len(self.names))
        q = np.quantile(flat, [0.025, 0.5, 0.975], axis=0)
        return pd.DataFrame({"scale": list(self.scales), "mean": flat.mean(0), "sd": flat.std(0, ddof=1),
                             "q2.5": q[0], "median": q[1], "q97.5": q[2], "rhat": self.rhat,
                             "ess_bulk": self.ess_bulk, "ess_tail": self.ess_tail},
                            index=pd.Index(self.names, name="input"))

    def draws(self):
        """Every draw as a row (chain, draw, one column per parameter, log_posterior,
        divergent, acceptance): a pandas DataFrame of chains x draws rows."""
        import pandas as pd

        c, d, n = self.samples.shape
        table = pd.DataFrame(self.samples.reshape(-1, n), columns=list(self.names))
        table.insert(0, "draw", np.tile(np.arange(d), c))
        table.insert(0, "chain", np.repeat(np.arange(c), d))
        table["log_posterior"] = self.log_posterior.reshape(-1)
        table["divergent"] = self.divergent.reshape(-1)
        table["acceptance"] = self.acceptance.reshape(-1)
        return table

    def summary(self) -> str:
        c, d, _ = self.samples.shape
        t = self.timings
        lines = [f"{self.method} ({self.backend}): {c} chains x {d} draws, {self.n_divergent} divergent, "
                 f"mean acceptance {float(self.acceptance.mean()):.2f}; R-hat max {float(np.max(self.rhat)):.3f}, "
                 f"ESS bulk min {float(np.min(self.ess_bulk)):.0f}, tail min {float(np.min(self.ess_tail)):.0f}; "
                 f"{'converged' if self.converged else 'NOT converged'} (R-hat < {RHAT_OK}, ESS > {ESS_OK}, "
                 "no divergences)",
                 f"  {t.get('sampling', math.nan):.3g} s sampling + {t.get('compile', 0.0):.3g} s compile: "
                 f"{self.ess_per_second:.3g} effective samples per second"]
        for k, m, s, r, e, et in zip(self.names, self.mean, np.sqrt(np.diag(self.covariance)), self.rhat,
                                     self.ess_bulk, self.ess_tail):
            flag = "" if r < RHAT_OK and e > ESS_OK and et > ESS_OK else "  <- check"
            lines.append(f"  {k:>16s}: mean {m:.6g} sd {s:.3g}  R-hat {r:.3f}  ESS bulk {e:.0f} tail {et:.0f}{flag}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)

    # ------------------------------------------------------------------ figures
    def plot_trace(self, path=None, title: str = ""):
        """Each parameter's draws against the iteration, one line per chain, with its
        marginal beside it; divergent draws marked. Returns the Figure (PNG at `path`)."""
        return trace_figure(self.names, self.samples, divergent=self.divergent, scales=self.scales, path=path,
                            title=title or f"{self.method}: trace (R-hat max {float(np.max(self.rhat)):.3f})")

    def plot_marginals(self, path=None, title: str = ""):
        """A histogram of each parameter's draws per chain. Returns the Figure (PNG at `path`)."""
        return trace_figure(self.names, self.samples, scales=self.scales, path=path, marginals_only=True,
                            title=title or f"posterior marginals: {self.samples.shape[0]} chains x "
                                           f"{self.samples.shape[1]} draws")

    def plot_pairs(self, path=None, parameters=None, max_points: int = 2000, title: str = ""):
        """Pairwise scatter of the draws (lower triangle), marginals on the diagonal,
        divergent draws in red; `parameters`: names to show (default all). Returns the Figure."""
        idx = self._indices(parameters)
        return pair_figure([self.names[i] for i in idx], self.samples[:, :, idx], divergent=self.divergent,
                           max_points=max_points, path=path, title=title)

    def predictive(self, draws: int = 200, level: float = 0.95, times=None, seed: int = 0):
        """Posterior predictive bands of the observables from `draws` posterior draws.

        A `Problem`: the observed outputs on `times` (default 200 points from t0 to the last
        data time), the noise sigma per output the data's (their median where rows differ;
        times the estimated noise scale of a fit with sigma estimated). A PEtab problem: the
        measurement table's rows (simulated at the measurement times), noise by its noise
        model and observable transformation. Returns a DataFrame with one row per output
        (panel) and time: panel, time, median, lower, upper (the model's credible band at
        `level`), pred_lower, pred_upper (with the noise: the predictive band); and a
        DataFrame of the data (panel, time, value). The panel's `log` column says whether
        its observable is on a log scale."""
        if self.likelihood is None:
            raise InputError("this SampleResult carries no likelihood; sample with sens.sample")
        if not 0 < level < 1:
            raise InputError(f"level = {level!r} must lie between 0 and 1, e.g. 0.95")
        rng = np.random.default_rng(seed)
        flat = self.samples.reshape(-1, len(self.names))
        pick = rng.choice(flat.shape[0], size=min(int(draws), flat.shape[0]), replace=False)
        X = flat[pick]
        if getattr(self.likelihood, "kind", "") == "petab":
            return _predictive_petab(self.likelihood, X, level, rng)
        return _predictive_problem(self.likelihood, X, level, rng, times)

    def plot_predictive(self, path=None, draws: int = 200, level: float = 0.95, times=None, title: str = ""):
        """The observables' posterior median, credible band and predictive band (with the
        noise) against the data, one panel per output (`predictive`). Returns the Figure."""
        bands, data = self.predictive(draws=draws, level=level, times=times)
        return predictive_figure(bands, data, level=level, path=path,
                                 title=title or f"posterior predictive ({min(draws, self.samples[:, :, 0].size)} draws)")

    def _indices(self, parameters) -> list:
        if parameters is None:
            return list(range(len(self.names)))
        chosen = [parameters] if isinstance(parameters, str) else list(parameters)
        for k in chosen:
            if k not in self.names:
                raise InputError(f"parameters: '{k}' is not a sampled parameter{did_you_mean(k, self.names)}")
        return [self.names.index(k) for k in chosen]


class _Map:
    """x = map(z) from the real line into the bounds, per parameter, and log |dx/dz|.

    Two bounds: a soft clip, x = lo + (softplus(k (z - lo)) - softplus(k (z - hi))) / k with
    k = SOFT / (hi - lo): the identity inside the box but for the last (hi - lo) / SOFT at
    each end, and beyond it a tail in which x approaches the bound and the density decays
    like exp(-k distance). A posterior that is a straight ridge on the estimation scale
    stays one on the sampling scale (a logistic map, lo + (hi - lo) sigmoid(z), bends it
    where it runs towards a bound, and NUTS then needs small steps and long trees).
    One bound: lo + exp(z) or hi - exp(z)."""

    def __init__(self, lower, upper):
        self.lo, self.hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        self.kind = np.where(np.isfinite(self.lo) & np.isfinite(self.hi), 3,
                             np.where(np.isfinite(self.lo), 1, np.where(np.isfinite(self.hi), 2, 0)))
        width = np.where(self.kind == 3, self.hi - self.lo, 1.0)
        self.k = SOFT / np.where(np.isfinite(width) & (width > 0), width, 1.0)

    def forward(self, z):
        import jax.numpy as jnp

        lo, hi = jnp.where(jnp.isfinite(self.lo), self.lo, 0.0), jnp.where(jnp.isfinite(self.hi), self.hi, 0.0)
        k = self.k
        u, v = k * (z - lo), k * (z - hi)
        sp_u, sp_v = jnp.logaddexp(0.0, u), jnp.logaddexp(0.0, v)
        # exp of the one-bound entries only: exp(z) of a two-bound entry at z ~ 1e3 is inf in
        # the unselected branch, and the reverse pass would give 0 * inf = NaN
        e = jnp.exp(jnp.where((self.kind == 1) | (self.kind == 2), z, 0.0))
        x = jnp.select([self.kind == 3, self.kind == 1, self.kind == 2],
                       [lo + (sp_u - sp_v) / k, lo + e, hi - e], z)
        logj = jnp.select([self.kind == 3, self.kind == 1, self.kind == 2],
                          [v + math.log(math.expm1(SOFT)) - sp_u - sp_v, z, z], 0.0)
        return x, jnp.sum(logj)

    def derivatives(self, z) -> tuple:
        """On the host, at z (n,): x (n,), dx/dz (n,), log|dx/dz| (n,) and its derivative (n,)."""
        z = np.asarray(z, dtype=np.float64)
        lo, hi = np.where(np.isfinite(self.lo), self.lo, 0.0), np.where(np.isfinite(self.hi), self.hi, 0.0)
        k, kind = self.k, self.kind
        u, v = k * (z - lo), k * (z - hi)
        su, sv = 1.0 / (1.0 + np.exp(-np.clip(u, -700.0, 700.0))), 1.0 / (1.0 + np.exp(-np.clip(v, -700.0, 700.0)))
        sp_u, sp_v = np.logaddexp(0.0, u), np.logaddexp(0.0, v)
        e = np.exp(np.minimum(z, 700.0))
        x = np.select([kind == 3, kind == 1, kind == 2], [lo + (sp_u - sp_v) / k, lo + e, hi - e], z)
        dx = np.select([kind == 3, kind == 1, kind == 2], [su - sv, e, -e], 1.0)
        logj = np.select([kind == 3, kind == 1, kind == 2], [v + math.log(math.expm1(SOFT)) - sp_u - sp_v, z, z],
                         0.0)
        dlogj = np.select([kind == 3, kind == 1, kind == 2], [k * (1.0 - su - sv), 1.0, 1.0], 0.0)
        return x, dx, logj, dlogj

    def curvature(self, z) -> np.ndarray:
        """-d^2 log|dx/dz| / dz^2 (n,) at z (n,): the map's own curvature of the density."""
        z = np.asarray(z, dtype=np.float64)
        lo, hi = np.where(np.isfinite(self.lo), self.lo, 0.0), np.where(np.isfinite(self.hi), self.hi, 0.0)
        su = 1.0 / (1.0 + np.exp(-np.clip(self.k * (z - lo), -700.0, 700.0)))
        sv = 1.0 / (1.0 + np.exp(-np.clip(self.k * (z - hi), -700.0, 700.0)))
        return np.where(self.kind == 3, self.k ** 2 * (su * (1 - su) + sv * (1 - sv)), 0.0)

    def inverse(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            u = np.clip((x - self.lo) / (self.hi - self.lo), 1e-9, 1 - 1e-9)
            a, b = SOFT * u, SOFT * (1.0 - u)  # k (x - lo), k (hi - x)
            inside = self.lo + (np.log(np.expm1(a)) - np.log(-np.expm1(-b))) / self.k
            z = np.select([self.kind == 3, self.kind == 1, self.kind == 2],
                          [inside, np.log(np.maximum(x - self.lo, 1e-300)),
                           np.log(np.maximum(self.hi - x, 1e-300))], x)
        return z


def _host_loglik(lik, gradient: bool):
    """-nllh (and its gradient) of x (n,) through `jax.pure_callback` to the host."""
    import jax
    import jax.numpy as jnp

    n = len(lik.names)
    if not gradient:
        def host_value(x):
            v = lik.value(np.asarray(x, dtype=np.float64))
            return np.float64(-v if math.isfinite(v) else -np.inf)

        return lambda x: jax.pure_callback(host_value, jax.ShapeDtypeStruct((), jnp.float64), x,
                                           vmap_method="sequential")
    shapes = (jax.ShapeDtypeStruct((), jnp.float64), jax.ShapeDtypeStruct((n,), jnp.float64))

    def host(x):
        v, g = lik.value_and_grad(np.asarray(x, dtype=np.float64))
        if not math.isfinite(v) or not np.all(np.isfinite(g)):
            return np.float64(-np.inf), np.zeros(n)
        return np.float64(-v), np.asarray(-g, dtype=np.float64)

    @jax.custom_jvp
    def loglik(x):
        return jax.pure_callback(host, shapes, x, vmap_method="sequential")[0]

    @loglik.defjvp
    def _jvp(primals, tangents):
        v, g = jax.pure_callback(host, shapes, primals[0], vmap_method="sequential")
        t = tangents[0]
        return v, g @ t

    return loglik


def _traced_loglik(lik):
    """-nllh of x (n,) as the likelihood's own JAX function (see `lik.nllh_function`)."""
    f = lik.nllh_function()
    return lambda x: -f(x)


def _laplace(lik, transform: _Map, z0, max_iter: int = 200):
    """The Gaussian (Laplace) approximation of the sampled density on the real line (z):
    its mode from z0 (L-BFGS on the exact gradient, the map's log-Jacobian included) and
    the inverse (n, n) of the Hessian of -log density there, by central differences of the
    gradient (2 n gradients on the host; no program to compile), its eigenvalues taken in
    absolute value and floored at 1e-8 of the largest. The mode is searched within z0 +-
    REACH; where the search does not converge, a diagonal covariance from the curvature at
    the best point found (`_curvature_scales`). Returns (mode (n,), covariance (n, n)
    or None where the gradient fails, note)."""
    from scipy.optimize import minimize

    def u(z):
        x, dx, logj, dlogj = transform.derivatives(z)
        v, g = lik.value_and_grad(x)
        if not (math.isfinite(v) and np.all(np.isfinite(g))):
            return None, None
        return v - float(np.sum(logj)), g * dx - dlogj

    z0 = np.asarray(z0, dtype=np.float64)
    v0, g0 = u(z0)
    if v0 is None:
        return z0, None, "no Laplace approximation: the gradient at the start failed; identity mass matrix"

    def f(z):
        v, g = u(z)
        return (v, g) if v is not None else (v0 + 1e10, np.zeros_like(z))

    # within z0 +- REACH: a direction the density does not bound (a flat likelihood on a
    # half-line) stops there and gets a wide Gaussian instead of running off
    r = minimize(f, z0, jac=True, method="L-BFGS-B", bounds=list(zip(z0 - REACH, z0 + REACH)),
                 options={"maxiter": max_iter, "gtol": 1e-8})
    z = r.x if r.fun <= v0 else z0
    if not r.success:  # no mode: a full covariance from there misleads the sampler; its scales do not
        return z, *_curvature_scales(lik, transform, z, r)
    h = 1e-4 * np.maximum(1.0, np.abs(z))
    cols = []
    for i in range(z.size):
        e = np.zeros_like(z)
        e[i] = h[i]
        (vp, gp), (vm, gm) = u(z + e), u(z - e)
        if vp is None or vm is None:
            return z, None, "no Laplace approximation: a gradient near the mode failed; identity mass matrix"
        cols.append((gp - gm) / (2 * h[i]))
    H = np.column_stack(cols)
    lam, V = np.linalg.eigh(0.5 * (H + H.T))
    lam = np.abs(lam)
    lam = np.maximum(lam, 1e-8 * max(float(lam.max()), 1e-300))
    return z, (V / lam) @ V.T, f"mass matrix seeded by the Laplace approximation ({r.nit} L-BFGS iterations)"


def _curvature_scales(lik, transform: _Map, z, search) -> tuple:
    """(diagonal covariance (n, n) or None, note) where the mode search stopped short: the
    inverse of the diagonal of the likelihood's curvature at the best point z found on the
    real line, `lik.hessian` (the Fisher information of a PEtab problem, the exact Hessian of
    a `Problem`'s) through the map, D H D with D = dx/dz, plus the map's own -d^2 log|dx/dz|
    / dz^2 (`_Map.curvature`), each floored at 1e-8 of the largest. Only the
    scales: the correlations of an unconverged point would send the trajectories astray."""
    x, dx, _, _ = transform.derivatives(z)
    own = transform.curvature(z)
    try:
        H = np.asarray(lik.hessian(x), dtype=np.float64)
    except Exception:  # a failed solve there
        H = np.full((z.size, z.size), np.nan)
    h = np.abs(np.diag(H)) * dx ** 2 + own
    if not np.all(np.isfinite(h)) or h.max() <= 0:
        return None, (f"no Laplace approximation: the mode search did not converge ({search.message}) and the "
                      "curvature there failed; identity mass matrix")
    h = np.maximum(h, 1e-8 * h.max())
    return np.diag(1.0 / h), (f"no Laplace approximation: the mode search did not converge ({search.message}); "
                              f"a diagonal mass matrix from the curvature at the best point found "
                              f"({search.nit} L-BFGS iterations)")


def _nuts_program(logdensity, length: int, target_acceptance: float):
    """(key, z0 (n_params,), inverse mass matrix (n_params, n_params) dense or (n_params,),
    step size, n_adapt, n_steps) -> (z (length, n_params), logdensity (length,), divergent
    (length,), acceptance (length,), step size of each step (length,), leapfrog steps
    (length,), the adapted step size): n_steps NUTS steps from z0 (the rest of `length`
    skipped, so one compiled program serves every phase of the warm-up and the draws) with
    the mass matrix held; the step size by dual averaging restarted from the given one over
    the first n_adapt steps, then held at its final average. The model's program appears
    once, in one scan through one NUTS kernel."""
    import jax
    import jax.numpy as jnp

    kernel = blackjax.mcmc.nuts.build_kernel()
    da_init, da_update, da_final = blackjax.adaptation.step_size.dual_averaging_adaptation(target_acceptance)

    def chain(key, z0, imm, step0, n_adapt, n_steps):
        imm = jnp.asarray(imm, dtype=z0.dtype)
        state = blackjax.mcmc.nuts.init(z0, logdensity)
        step0 = jnp.asarray(step0, dtype=z0.dtype)

        def step(carry, inputs):
            k, i = inputs

            def run(c):
                st, ss, held = c
                adapting = i < n_adapt
                eps = jnp.where(adapting, jnp.exp(ss.log_step_size), held)
                st, info = kernel(k, st, logdensity, eps, imm)
                ss = jax.tree.map(lambda a, b: jnp.where(adapting, a, b), da_update(ss, info.acceptance_rate), ss)
                held = jnp.where(adapting, da_final(ss), held)
                return (st, ss, held), (st.position, st.logdensity, info.is_divergent.astype(bool),
                                        info.acceptance_rate.astype(z0.dtype), eps,
                                        info.num_integration_steps.astype(jnp.int32))

            def skip(c):
                return c, (c[0].position, c[0].logdensity, jnp.asarray(False), jnp.zeros((), z0.dtype),
                           jnp.zeros((), z0.dtype), jnp.zeros((), jnp.int32))

            return jax.lax.cond(i < n_steps, run, skip, carry)

        carry = (state, da_init(step0), step0)
        (_, _, held), outs = jax.lax.scan(step, carry, (jax.random.split(key, length), jnp.arange(length)))
        return (*outs, held)

    return chain


def _phases(warmup: int, n: int) -> list:
    """The warm-up as phases between which the chains' draws are pooled: Stan's windows
    (blackjax's schedule: a fast buffer, slow windows doubling in length, a last fast
    buffer), a phase ending at each slow window's end. Returns [(steps, slow): the phase's
    steps and the number of its last steps in a slow window], the last phase the last fast
    buffer and the n draws (slow = 0)."""
    if warmup < 20:
        return [(int(warmup) + int(n), 0)]
    schedule = np.asarray(blackjax.adaptation.window_adaptation.build_schedule(int(warmup)), dtype=int)
    phases, begin, slow_begin = [], 0, None
    for i, (stage, end) in enumerate(schedule):
        if stage == 1 and slow_begin is None:
            slow_begin = i
        if end == 1:
            phases.append((i + 1 - begin, i + 1 - slow_begin))
            begin, slow_begin = i + 1, None
    return phases + [(int(warmup) - begin + int(n), 0)]


def _pooled(draws, previous, dense: bool, memory: float):
    """The inverse mass matrix from the draws (m, n_params) of every chain's slow window:
    their covariance (dense) or variances, regularised as Stan does ((m C + 1e-3 * 5 I) /
    (m + 5)) and averaged with the one before as `memory` draws' worth."""
    m, d = draws.shape
    C = np.atleast_2d(np.cov(draws, rowvar=False)) if dense else np.var(draws, axis=0, ddof=1)
    eye = np.eye(d) if dense else np.ones(d)
    C = (m * C + 1e-3 * 5.0 * eye) / (m + 5.0)
    w = m / (m + memory)
    return w * C + (1.0 - w) * np.asarray(previous, dtype=np.float64)


def _nuts_run(chain, phases: list, n: int, keys, Z0, imm, dense: bool, memory: float, vmapped: bool,
              threads: int = 1):
    """Compile `chain` (`_nuts_program`) once and run the `phases` (`_phases`; the last
    ends with the n draws): every chain runs a phase
    from where it stopped (on `threads` threads at once, or as one vmapped program), then
    the slow window's draws of all chains are pooled into the next inverse mass matrix
    (`_pooled`), so each estimate has chains x the window's draws. Returns ((z, logdensity,
    divergent, acceptance of the draws, stacked over chains; the adapted step sizes
    (chains,); leapfrog steps (chains, warm-up + draws)), timings as `_run`'s)."""
    import jax

    c = len(Z0)
    imm = np.asarray(imm, dtype=np.float64)
    steps = np.ones(c)
    began, cpu = time.perf_counter(), time.process_time()
    if vmapped:
        exe = jax.jit(jax.vmap(chain, in_axes=(0, 0, None, 0, None, None))).lower(
            keys, Z0, imm, steps, 0, 0).compile()
    else:
        exe = jax.jit(chain).lower(keys[0], Z0[0], imm, 1.0, 0, 0).compile()
    compiled, cpu_compiled = time.perf_counter(), time.process_time()
    z, pieces, draws = np.asarray(Z0, dtype=np.float64), [], None
    for k, (n_steps, slow) in enumerate(phases):
        last = k == len(phases) - 1
        n_adapt = n_steps - n if last else n_steps
        ks = jax.vmap(lambda key: jax.random.fold_in(key, k))(keys)
        if vmapped:
            out = tuple(np.asarray(o) for o in jax.block_until_ready(exe(ks, z, imm, steps, n_adapt, n_steps)))
        else:
            def one(i):
                return jax.block_until_ready(exe(ks[i], z[i], imm, steps[i], n_adapt, n_steps))

            if threads > 1 and c > 1:
                with ThreadPoolExecutor(min(threads, c)) as pool:
                    outs = list(pool.map(one, range(c)))
            else:
                outs = [one(i) for i in range(c)]
            out = tuple(np.stack([np.asarray(o[j]) for o in outs]) for j in range(len(outs[0])))
        zs, lp, div, acc, _, leap, held = out
        z, steps = zs[:, n_steps - 1], held
        pieces.append(leap[:, :n_steps])
        if last:
            draws = (zs[:, n_adapt:n_steps], lp[:, n_adapt:n_steps], div[:, n_adapt:n_steps],
                     acc[:, n_adapt:n_steps])
        elif slow > 1:
            imm = _pooled(zs[:, n_steps - slow:n_steps].reshape(-1, zs.shape[-1]), imm, dense, memory)
    return (*draws, steps, np.concatenate(pieces, axis=1)), {
        "compile": compiled - began, "sampling": time.perf_counter() - compiled,
        "compile_cpu": cpu_compiled - cpu, "sampling_cpu": time.process_time() - cpu_compiled}


def _am_chain(logdensity, n: int, warmup: int):
    """(key, z0 (n_params,), proposal covariance at the start (n_params, n_params)) -> (z (n,
    n_params), logdensity (n,), divergent (n,) all False, acceptance (n,), the proposal's
    scale factor, evaluations (warmup + n,) all ones): adaptive Metropolis (pyPESTO's update
    of the mean, covariance and scale, Haario et al. 2001) for `warmup` steps, adapting,
    then n draws with the proposal held."""
    import jax
    import jax.numpy as jnp

    def regularise(cov):
        e = jnp.linalg.eigvalsh(cov)[0]
        return jnp.where(e <= 0, cov + (jnp.abs(e) + AM_REG) * jnp.eye(cov.shape[0]), cov)

    def propose(key, z, cov):
        e, V = jnp.linalg.eigh(cov)
        return z + V @ (jnp.sqrt(jnp.maximum(e, 0.0)) * jax.random.normal(key, z.shape))

    def chain(key, z0, cov0):
        c0 = jnp.asarray(cov0, dtype=z0.dtype)
        lp0 = logdensity(z0)

        def step(carry, inputs):
            z, lp, mean, cov_hist, scale, cov = carry
            key, k, adapting = inputs
            k_prop, k_acc = jax.random.split(key)
            z_new = propose(k_prop, z, cov)
            lp_new = logdensity(z_new)
            log_acc = jnp.minimum(0.0, jnp.where(jnp.isnan(lp_new), -jnp.inf, lp_new - lp))
            accept = jnp.log(jax.random.uniform(k_acc)) < log_acc
            z, lp = jnp.where(accept, z_new, z), jnp.where(accept, lp_new, lp)
            # pyPESTO's update_history_statistics and scale adaptation, at sample number k
            rate = jnp.maximum(k + 1.0, 1.0) ** -AM_DECAY
            mean_a = (1 - rate) * mean + rate * z
            dz = z - mean_a
            hist_a = (1 - rate) * cov_hist + rate * jnp.outer(dz, dz)
            scale_a = scale * jnp.exp((jnp.exp(log_acc) - AM_TARGET) / (k + 1.0) ** AM_DECAY)
            cov_a = regularise(scale_a * hist_a)
            keep = lambda a, b: jnp.where(adapting, a, b)  # noqa: E731
            carry = (z, lp, keep(mean_a, mean), keep(hist_a, cov_hist), keep(scale_a, scale), keep(cov_a, cov))
            return carry, (z, lp, jnp.asarray(False), jnp.exp(log_acc))

        total = int(warmup) + int(n)
        keys = jax.random.split(key, total)
        ks = jnp.arange(total, dtype=jnp.float64)
        adapting = jnp.arange(total) < int(warmup)
        c0 = regularise(c0)
        carry = (z0, lp0, z0, c0, jnp.asarray(1.0), c0)
        carry, (zs, lp, div, acc) = jax.lax.scan(step, carry, (keys, ks, adapting))
        return zs[warmup:], lp[warmup:], div[warmup:], acc[warmup:], carry[4], jnp.ones(total, dtype=int)

    return chain


def _run(chain, keys, Z0, start, vmapped: bool, threads: int = 1):
    """Compile and run the chains from Z0 (chains, n_params), `start` (the inverse mass matrix
    or proposal covariance) shared: one vmapped program (every chain waits for the slowest
    at each step), or the one-chain program compiled once and run for each chain, on
    `threads` threads at once. Returns (outputs stacked over chains, timings: compile,
    sampling (wall seconds), compile_cpu, sampling_cpu (process CPU seconds))."""
    import jax

    start = np.asarray(start, dtype=np.float64)
    began, cpu = time.perf_counter(), time.process_time()
    if vmapped:
        exe = jax.jit(jax.vmap(chain, in_axes=(0, 0, None))).lower(keys, Z0, start).compile()
    else:
        exe = jax.jit(chain).lower(keys[0], Z0[0], start).compile()
    compiled, cpu_compiled = time.perf_counter(), time.process_time()
    if vmapped:
        out = tuple(np.asarray(o) for o in jax.block_until_ready(exe(keys, Z0, start)))
    else:
        def one(c):
            return jax.block_until_ready(exe(keys[c], Z0[c], start))

        if threads > 1 and len(Z0) > 1:
            with ThreadPoolExecutor(min(threads, len(Z0))) as pool:
                outs = list(pool.map(one, range(len(Z0))))
        else:
            outs = [one(c) for c in range(len(Z0))]
        out = tuple(np.stack([np.asarray(o[i]) for o in outs]) for i in range(len(outs[0])))
    return out, {"compile": compiled - began, "sampling": time.perf_counter() - compiled,
                 "compile_cpu": cpu_compiled - cpu, "sampling_cpu": time.process_time() - cpu_compiled}


def sample(target, data=None, method: str = "nuts", n: int = 1000, chains: int = 4, warmup: int | None = None,
           sigma=None, log_params: bool = True, bounds=None, priors: bool = True, seed: int = 0,
           start=None, target_acceptance: float = 0.8, dense_mass: bool | None = None,
           mass_matrix="laplace", backend: str = "auto", vmap_chains: bool = False,
           threads: int | None = None) -> SampleResult:
    """Sample the posterior of the estimated parameters.

    target: as for `sensitivity.profile` (a fit result, a Problem with `data`, a PEtab
    problem); priors: PEtab's objective priors (flat on the estimation scale within the
    bounds where a parameter has none; always flat for a `Problem`). method: "nuts" (exact
    gradients) | "adaptive_metropolis" (gradient-free; see the module). n: draws per chain
    after `warmup` adaptation steps (default: 200 for NUTS from the Laplace approximation,
    else 500). mass_matrix (NUTS): "laplace" (default: the chains start from draws of the
    Gaussian at the posterior's mode on the sampling scale, and its covariance, the inverse
    Hessian there, seeds the adaptation, so warm-up needs few steps) | "identity" (Stan's
    start: the identity, chains from the estimate jittered by 1e-3) | an inverse mass matrix
    (n_params, n_params) on the sampling scale. The chains adapt together: at the end of
    each slow window of the warm-up, the draws of every chain in it give the next mass
    matrix of all (a chain alone has a window's draws only). `start`: another point (n_params,) on the
    estimation scale to start from (the mode is searched from it). dense_mass: NUTS adapts a
    dense mass matrix (default: with at most 50 parameters), which follows correlated
    parameters in far fewer leapfrog steps than a diagonal one. backend: "auto" | "jax" (the
    nllh traced through the solve) | "callback" (the nllh on the host). vmap_chains: the
    traced chains as one vmapped program (each step waits for the chain with the longest
    trajectory) instead of one compiled chain run for each chain (the default), on `threads`
    threads at once (default: as many as chains and CPU cores allow; 1: one after another).
    Returns a `SampleResult` (estimation scale).
    """
    import jax

    for extra in ("blackjax", "arviz"):
        if importlib.util.find_spec(extra) is None:
            raise InputError(f"sample needs the optional extra 'sample' ({extra} is missing): "
                             'pip install "sensitivity[sample]"')
    if method not in METHODS:
        raise InputError(f"method = '{method}' is unknown{did_you_mean(method, METHODS)}; valid: {', '.join(METHODS)}")
    if backend not in BACKENDS:
        raise InputError(f"backend = '{backend}' is unknown{did_you_mean(backend, BACKENDS)}; "
                         f"valid: {', '.join(BACKENDS)}")
    if isinstance(mass_matrix, str) and mass_matrix not in MASS:
        raise InputError(f"mass_matrix = '{mass_matrix}' is unknown{did_you_mean(mass_matrix, MASS)}; "
                         f"valid: {', '.join(MASS)} or an array (n_params, n_params)")
    seeded = method == "nuts" and not (isinstance(mass_matrix, str) and mass_matrix == "identity")
    for name, v in (("n", n), ("chains", chains), ("warmup", 0 if warmup is None else warmup)):
        if not isinstance(v, (int, np.integer)) or v < (0 if name == "warmup" else 1):
            raise InputError(f"{name} = {v!r} must be a positive whole number")
    n_threads = min(int(chains), os.cpu_count() or 1) if threads is None else int(threads)
    began, cpu = time.perf_counter(), time.process_time()
    lik, x_hat, notes = _resolve(target, data, sigma, log_params, bounds, priors)
    names = tuple(lik.names)
    if start is not None:
        x_hat = np.asarray(start, dtype=np.float64)
        if x_hat.shape != (len(names),):
            raise InputError(f"start has shape {x_hat.shape}; expected ({len(names)},) on the estimation scale")
    d = len(names)
    transform = _Map(lik.lower, lik.upper)
    z_hat = transform.inverse(x_hat)
    dense = d <= 50 if dense_mass is None else bool(dense_mass)
    key = jax.random.PRNGKey(seed)
    k_init, k_chains = jax.random.split(key)
    eps = np.asarray(jax.random.normal(k_init, (int(chains), d)))
    keys = jax.random.split(k_chains, int(chains))
    cov = None
    t_laplace = 0.0
    if seeded and isinstance(mass_matrix, str):
        t0 = time.perf_counter()
        z_hat, cov, note = _laplace(lik, transform, z_hat)
        t_laplace = time.perf_counter() - t0
        notes += (note,)
    elif seeded:
        cov = np.asarray(mass_matrix, dtype=np.float64)
        if cov.shape != (d, d):
            raise InputError(f"mass_matrix has shape {cov.shape}; expected ({d}, {d}) on the sampling scale")
    if warmup is None:
        warmup = WARMUP_SEEDED if cov is not None and not notes[-1].startswith("no Laplace") else WARMUP
    if cov is not None:  # starts: draws of the Gaussian, shrunk towards the mode where a solve fails
        lam, V = np.linalg.eigh(0.5 * (cov + cov.T))
        root = V * np.sqrt(np.maximum(lam, 0.0))
        Z0 = np.empty((int(chains), d))
        for c in range(int(chains)):
            for shrink in (1.0, 0.5, 0.25, 0.1, 0.0):
                Z0[c] = z_hat + shrink * root @ eps[c] + (1e-3 * eps[c] if shrink == 0.0 else 0.0)
                if math.isfinite(lik.value(transform.derivatives(Z0[c])[0])):
                    break
        imm = cov if dense else np.diag(cov)
        memory = LAPLACE_MEMORY
    else:
        Z0 = z_hat[None, :] + 1e-3 * eps
        imm = (np.eye(d) if dense else np.ones(d)) if method == "nuts" else np.eye(d)
        memory = 0.0

    def build(loglik):
        def logdensity(z):
            x, logj = transform.forward(z)
            return loglik(x) + logj

        if method == "nuts":
            return _nuts_program(logdensity, max(p[0] for p in phases), target_acceptance)
        return _am_chain(logdensity, n, warmup)

    def run(chain, vmapped, threads):
        if method == "nuts":
            return _nuts_run(chain, phases, int(n), keys, Z0, imm, dense, memory, vmapped, threads)
        return _run(chain, keys, Z0, imm, vmapped=vmapped, threads=threads)

    phases = _phases(int(warmup), int(n)) if method == "nuts" else []
    out = None
    if backend != "callback" and hasattr(lik, "nllh_function"):
        try:
            out, times = run(build(_traced_loglik(lik)), vmap_chains, n_threads)
            used = "jax"
        except Exception as exc:  # a likelihood that cannot be traced: on the host instead
            if backend == "jax":
                raise
            notes += (f"the nllh could not be traced ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                      "sampled with the nllh on the host, chain after chain",)
    elif backend == "jax":
        raise InputError(f"backend = 'jax': this likelihood ({type(lik).__name__}) has no traceable nllh; "
                         "use backend='callback'")
    if out is None:
        out, times = run(build(_host_loglik(lik, gradient=method == "nuts")), False, 1)
        used = "callback"
    Z, lp_z, div, acc, step, evaluations = out
    X = np.asarray(jax.vmap(jax.vmap(lambda z: transform.forward(z)[0]))(Z))
    lp = lp_z - np.asarray(jax.vmap(jax.vmap(lambda z: transform.forward(z)[1]))(Z))
    if used == "jax":  # the traced nllh against the host's at the last draw of the first chain
        v = lik.value(X[0, -1])
        if math.isfinite(v) and abs(lp[0, -1] + v) > 1e-6 * max(1.0, abs(v)):
            msg = (f"the traced log-posterior {lp[0, -1]:.10g} differs from the host's {-v:.10g} at the last "
                   "draw of chain 0")
            warnings.warn(msg, stacklevel=2)
            notes += (msg,)
    idata = az.from_dict(posterior={k: X[:, :, i] for i, k in enumerate(names)})
    rhat = az.rhat(idata)
    ess_b, ess_t = az.ess(idata, method="bulk"), az.ess(idata, method="tail")
    if getattr(lik, "kind", "") == "petab" and not getattr(lik, "priors", False):
        notes += ("flat prior on the estimation scale within the bounds",)
    return SampleResult(names, tuple(lik.scales), X, lp, div.astype(bool), acc, np.asarray(step, dtype=np.float64),
                        np.array([float(rhat[k]) for k in names]), np.array([float(ess_b[k]) for k in names]),
                        np.array([float(ess_t[k]) for k in names]), method, notes,
                        {"wall": time.perf_counter() - began, **times, "laplace": t_laplace,
                         "cpu": time.process_time() - cpu}, used, lik,
                        np.asarray(evaluations))


# --------------------------------------------------------------------------- posterior predictive
def _bands(Y, level: float):
    lo, hi = (1 - level) / 2, 1 - (1 - level) / 2
    return np.nanquantile(Y, [0.5, lo, hi], axis=0)


def _predictive_problem(lik, X, level, rng, times):
    """Bands of a `ProblemLikelihood`'s observed outputs on a time grid (see `predictive`)."""
    import jax
    import pandas as pd

    ev = lik.ev
    prob = ev.problem
    t_data = np.asarray(prob.times)[ev.rows]
    grid = np.linspace(prob.t0, float(t_data.max()), 200) if times is None else np.asarray(times, dtype=np.float64)
    fine = prob.replace(times=grid, t0=prob.t0)
    f = output_function(fine, "checkpoint")
    values = values_of(fine)
    theta = np.exp(X) if ev.log else X
    outs, _ = jax.jit(jax.vmap(lambda x: f(x, values)))(theta)
    outs = np.asarray(outs)  # (draws, n_times, n_of)
    sd = 1.0 / np.asarray(ev.w) * math.sqrt(lik.s2)
    rows, data = [], []
    for j, name in enumerate(prob.of):
        sel = np.asarray(ev.cols) == j
        s = float(np.median(sd[sel])) if sel.any() else 0.0
        Y = outs[:, :, j]
        med, lo, hi = _bands(Y, level)
        _, plo, phi = _bands(Y + s * rng.standard_normal(Y.shape), level)
        rows.append(pd.DataFrame({"panel": name, "time": grid, "median": med, "lower": lo, "upper": hi,
                                  "pred_lower": plo, "pred_upper": phi, "log": False}))
        data.append(pd.DataFrame({"panel": name, "time": t_data[sel], "value": np.asarray(ev.target)[sel]}))
    return pd.concat(rows, ignore_index=True), pd.concat(data, ignore_index=True)


def _predictive_petab(lik, X, level, rng):
    """Bands of a PEtab problem's measurement rows, per observable and condition."""
    import jax
    import pandas as pd
    import petab.v1 as pv1

    pp = lik.problem
    sim, sig, ok = jax.jit(jax.vmap(pp.simulation_function()))(X)
    sim, sig = np.array(sim), np.array(sig)
    sim[~np.asarray(ok)], sig[~np.asarray(ok)] = np.nan, np.nan
    mdf = pp.measurements
    odf = pp.petab.observable_df

    def per_row(column, default):  # the observable table's column for each measurement row
        known = {} if column not in odf else {k: v for k, v in odf[column].items() if isinstance(v, str) and v}
        return mdf[pv1.OBSERVABLE_ID].map(lambda o: known.get(o, default)).astype(str)

    trans, noise = per_row(pv1.OBSERVABLE_TRANSFORMATION, "lin"), per_row(pv1.NOISE_DISTRIBUTION, "normal")
    eps = np.where(noise.to_numpy() == "laplace", rng.laplace(size=sim.shape), rng.standard_normal(sim.shape))
    h = {"lin": (lambda v: v, lambda v: v), "log": (np.log, np.exp), "log10": (np.log10, lambda v: 10.0 ** v)}
    pred = np.empty_like(sim)
    for tr, (fwd, back) in h.items():
        m = trans.to_numpy() == tr
        with np.errstate(divide="ignore", invalid="ignore"):
            pred[:, m] = back(fwd(sim[:, m]) + sig[:, m] * eps[:, m])
    pre = (mdf[pv1.PREEQUILIBRATION_CONDITION_ID].fillna("").astype(str)
           if pv1.PREEQUILIBRATION_CONDITION_ID in mdf else pd.Series("", index=mdf.index))
    panel = (mdf[pv1.OBSERVABLE_ID].astype(str) + " | " + np.where(pre != "", pre + " -> ", "")
             + mdf[pv1.SIMULATION_CONDITION_ID].astype(str))
    rows, data = [], []
    for p in dict.fromkeys(panel):
        sel = np.flatnonzero((panel == p).to_numpy())
        t = mdf[pv1.TIME].to_numpy(float)[sel]
        order = np.argsort(t, kind="stable")
        sel, t = sel[order], t[order]
        # replicates at one time: one point of the band
        ut, first = np.unique(t, return_index=True)
        cols = sel[first]
        med, lo, hi = _bands(sim[:, cols], level)
        _, plo, phi = _bands(pred[:, cols], level)
        rows.append(pd.DataFrame({"panel": p, "time": ut, "median": med, "lower": lo, "upper": hi,
                                  "pred_lower": plo, "pred_upper": phi,
                                  "log": trans.iloc[sel[0]] in ("log", "log10")}))
        data.append(pd.DataFrame({"panel": p, "time": t, "value": mdf[pv1.MEASUREMENT].to_numpy(float)[sel]}))
    return pd.concat(rows, ignore_index=True), pd.concat(data, ignore_index=True)
