"""Posterior sampling with NUTS on the exact gradients (blackjax; the optional extra
`sample`: `pip install "sensitivity[sample]"`).

The log-posterior on the estimation scale (ln p for a `Problem` fitted with log_params,
PEtab's scales) is -nllh(x) plus the log-prior: flat within the bounds, or a PEtab
problem's objective priors where it has them (priors=True, the default for PEtab). A
parameter with bounds is sampled through a smooth map from the real line (lo + (hi - lo)
sigmoid(z) for two bounds, lo + exp(z) or hi - exp(z) for one) with the map's log-Jacobian
added, so the flat prior stays flat on the estimation scale and no proposal leaves the
bounds. NUTS with blackjax's window adaptation (step size and a dense or diagonal mass matrix) for
`warmup` steps per chain. The model's nllh and gradient run on the host (the fit's
evaluator or the PEtab problem's compiled functions) through `jax.pure_callback`, so the
chains run one after another; R-hat and effective sample sizes are ArviZ's.
"""

from __future__ import annotations

import importlib.util
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import InputError, did_you_mean
from ..core.lazy import LazyModule
from .profile import _resolve

METHODS = ("nuts",)
# the optional extra `sample`: imported when first used
az = LazyModule("arviz")
blackjax = LazyModule("blackjax")


@dataclass(frozen=True)
class SampleResult:
    """Posterior samples on the estimation scale.

    names (n,), scales (n,); samples (chains, draws, n); log_posterior (chains, draws);
    divergent (chains, draws) bool; acceptance (chains, draws): NUTS' mean acceptance
    rate per draw; step_size (chains,); rhat (n,), ess_bulk (n,), ess_tail (n,): ArviZ's
    diagnostics; method; notes; timings (seconds).
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

    @property
    def mean(self) -> np.ndarray:
        """Posterior mean (n,) over all chains and draws."""
        return self.samples.reshape(-1, len(self.names)).mean(axis=0)

    @property
    def covariance(self) -> np.ndarray:
        """Posterior covariance (n, n) over all chains and draws."""
        return np.cov(self.samples.reshape(-1, len(self.names)), rowvar=False).reshape(len(self.names), -1)

    def to_arviz(self):
        """An `arviz.InferenceData` with the samples (posterior) and NUTS' statistics."""
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

    def summary(self) -> str:
        c, d, _ = self.samples.shape
        lines = [f"{self.method}: {c} chains x {d} draws, {int(self.divergent.sum())} divergent, "
                 f"mean acceptance {float(self.acceptance.mean()):.2f}"]
        for k, m, r, e in zip(self.names, self.mean, self.rhat, self.ess_bulk):
            lines.append(f"  {k:>16s}: mean {m:.6g}  R-hat {r:.3f}  ESS {e:.0f}")
        return "\n".join(lines)


class _Map:
    """x = map(z) from the real line into the bounds, per parameter, and log |dx/dz|."""

    def __init__(self, lower, upper):
        self.lo, self.hi = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        self.kind = np.where(np.isfinite(self.lo) & np.isfinite(self.hi), 3,
                             np.where(np.isfinite(self.lo), 1, np.where(np.isfinite(self.hi), 2, 0)))

    def forward(self, z):
        import jax.numpy as jnp

        lo, hi = jnp.where(jnp.isfinite(self.lo), self.lo, 0.0), jnp.where(jnp.isfinite(self.hi), self.hi, 0.0)
        sig = 1.0 / (1.0 + jnp.exp(-z))
        x = jnp.select([self.kind == 3, self.kind == 1, self.kind == 2],
                       [lo + (hi - lo) * sig, lo + jnp.exp(z), hi - jnp.exp(z)], z)
        logj = jnp.select([self.kind == 3, self.kind == 1, self.kind == 2],
                          [jnp.log(hi - lo) + jnp.log(sig) + jnp.log1p(-sig), z, z], 0.0)
        return x, jnp.sum(logj)

    def inverse(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = (x - self.lo) / (self.hi - self.lo)
            u = np.clip(u, 1e-9, 1 - 1e-9)
            z = np.select([self.kind == 3, self.kind == 1, self.kind == 2],
                          [np.log(u) - np.log1p(-u), np.log(np.maximum(x - self.lo, 1e-300)),
                           np.log(np.maximum(self.hi - x, 1e-300))], x)
        return z


def _log_density(lik, transform):
    """A JAX log-density of z (n,) calling lik's nllh and gradient on the host."""
    import jax
    import jax.numpy as jnp

    n = len(lik.names)
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
        (x,), (t,) = primals, tangents
        v, g = jax.pure_callback(host, shapes, x, vmap_method="sequential")
        return v, g @ t

    def logdensity(z):
        x, logj = transform.forward(z)
        return loglik(x) + logj

    return logdensity


def sample(target, data=None, method: str = "nuts", n: int = 1000, chains: int = 4, warmup: int = 500,
           sigma=None, log_params: bool = True, bounds=None, priors: bool = True, seed: int = 0,
           start=None, target_acceptance: float = 0.8, dense_mass: bool | None = None) -> SampleResult:
    """Sample the posterior of the estimated parameters with NUTS on exact gradients.

    target: as for `sensitivity.profile` (a fit result, a Problem with `data`, a PEtab
    problem); priors: PEtab's objective priors (flat on the estimation scale within the
    bounds where a parameter has none; always flat for a `Problem`). n: draws per chain
    after `warmup` adaptation steps; chains run one after another, from the estimate
    (`start`: another point (n_params,) on the estimation scale) jittered by 1e-3.
    dense_mass: adapt a dense mass matrix (default: with at most 50 parameters), which
    follows correlated parameters in far fewer leapfrog steps than a diagonal one.
    Returns a `SampleResult` (estimation scale).
    """
    import jax

    for extra in ("blackjax", "arviz"):
        if importlib.util.find_spec(extra) is None:
            raise InputError(f"sample needs the optional extra 'sample' ({extra} is missing): "
                             'pip install "sensitivity[sample]"')
    if method not in METHODS:
        raise InputError(f"method = '{method}' is unknown{did_you_mean(method, METHODS)}; valid: {', '.join(METHODS)}")
    for name, v in (("n", n), ("chains", chains), ("warmup", warmup)):
        if not isinstance(v, (int, np.integer)) or v < (0 if name == "warmup" else 1):
            raise InputError(f"{name} = {v!r} must be a positive whole number")
    began = time.perf_counter()
    lik, x_hat, notes = _resolve(target, data, sigma, log_params, bounds, priors)
    names = tuple(lik.names)
    if start is not None:
        x_hat = np.asarray(start, dtype=np.float64)
        if x_hat.shape != (len(names),):
            raise InputError(f"start has shape {x_hat.shape}; expected ({len(names)},) on the estimation scale")
    transform = _Map(lik.lower, lik.upper)
    logdensity = _log_density(lik, transform)
    z_hat = transform.inverse(x_hat)
    dense = len(names) <= 50 if dense_mass is None else bool(dense_mass)
    key = jax.random.PRNGKey(seed)
    out = {k: [] for k in ("z", "lp", "div", "acc", "step")}
    for c in range(chains):
        key, k_init, k_warm, k_run = jax.random.split(key, 4)
        z0 = z_hat + 1e-3 * np.asarray(jax.random.normal(k_init, z_hat.shape))
        adapt = blackjax.window_adaptation(blackjax.nuts, logdensity, is_mass_matrix_diagonal=not dense,
                                           target_acceptance_rate=target_acceptance)
        (state, params), _ = adapt.run(k_warm, z0, num_steps=int(warmup))
        kernel = blackjax.nuts(logdensity, **params)

        def step(st, k, kernel=kernel):
            st, info = kernel.step(k, st)
            return st, (st.position, st.logdensity, info.is_divergent, info.acceptance_rate)

        _, (zs, lp, div, acc) = jax.lax.scan(step, state, jax.random.split(k_run, int(n)))
        out["z"].append(np.asarray(zs))
        out["lp"].append(np.asarray(lp))
        out["div"].append(np.asarray(div))
        out["acc"].append(np.asarray(acc))
        out["step"].append(float(params["step_size"]))
    Z = np.stack(out["z"])  # (chains, draws, n) on the real line
    X = np.asarray(jax.vmap(jax.vmap(lambda z: transform.forward(z)[0]))(Z))
    lp_z = np.stack(out["lp"])
    logj = np.asarray(jax.vmap(jax.vmap(lambda z: transform.forward(z)[1]))(Z))
    idata = az.from_dict(posterior={k: X[:, :, i] for i, k in enumerate(names)})
    rhat = az.rhat(idata)
    ess_b, ess_t = az.ess(idata, method="bulk"), az.ess(idata, method="tail")
    if getattr(lik, "kind", "") == "petab" and not getattr(lik, "priors", False):
        notes += ("flat prior on the estimation scale within the bounds",)
    return SampleResult(names, tuple(lik.scales), X, lp_z - logj, np.stack(out["div"]), np.stack(out["acc"]),
                        np.array(out["step"]), np.array([float(rhat[k]) for k in names]),
                        np.array([float(ess_b[k]) for k in names]), np.array([float(ess_t[k]) for k in names]),
                        method, notes, {"wall": time.perf_counter() - began})
