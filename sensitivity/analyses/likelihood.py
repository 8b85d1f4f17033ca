"""One objective for both kinds of problem: a negative log-likelihood on the estimation
scale, with its gradient and a curvature matrix, for a `Problem` with data and for a PEtab
problem alike. Multi-start fitting, profiles and sampling work on this interface only.

    lik.names (n,), lik.lower, lik.upper (n,): bounds on the estimation scale (+-inf: none)
    lik.x0 (n,): the start (the problem's values, PEtab's nominal values)
    lik.scales (n,): "log" (ln p), "log10" or "lin" per parameter
    lik.value(x) -> float                  the nllh (up to a constant), inf where the model fails
    lik.value_and_grad(x) -> (float, (n,)) exact gradient
    lik.hessian(x) -> (n, n)               the exact Hessian (a `Problem`: Hessian-vector
                                           products) or the Fisher information (PEtab)
    lik.minimize(x0, free) -> (x, value, success, message, iterations)
                                           a local fit of the parameters where `free` (n,) is True
    lik.nllh_function() -> f               the nllh as one JAX function x (n,) -> scalar (+inf
                                           where a solve fails), traced through the solve (jit,
                                           vmap) with the exact gradient as its derivative

For a `Problem` the nllh is cost = 1/2 sum r^2 (the Gaussian nllh less sum ln sigma + n/2
ln 2 pi, which do not depend on the parameters), divided by s^2 when the noise scale s was
estimated; it is built by `sensitivity.analyses.fit.likelihood`. For a PEtab problem it is
the problem's own nllh (with its objective priors when `priors=True`); its `hessian` is the
Fisher information, exact for Gaussian noise at a perfect fit and the Gauss-Newton
approximation otherwise (`hessian_kind` says which).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import InputError
from ..integrate.solve import output_function, values_of
from ..plots.fit import parameters_figure, waterfall_figure

BEST_TOL = 0.1  # nllh units: a start whose final value is this close to the best "reaches" it
FORWARD_MAX = 16  # inputs up to which a Problem's traced gradient is forward mode (adjoint above)


class PetabLikelihood:
    """The nllh of a PEtab problem (`PetabProblem`) on its parameter scales."""

    kind = "petab"
    hessian_kind = "fisher"

    def __init__(self, petab, priors: bool = False, mode: str = "auto"):
        for attr in ("nllh", "gradient", "fisher", "x_names", "x_nominal", "lower", "upper", "scales"):
            if not hasattr(petab, attr):
                raise InputError(f"a PEtab problem needs .{attr}; got {type(petab).__name__}")
        self.problem = petab
        self.priors = bool(priors and getattr(petab, "priors", None))
        self.mode = mode
        self.names = tuple(petab.x_names)
        self.scales = tuple(petab.scales)
        self.lower = np.asarray(petab.lower, dtype=np.float64)
        self.upper = np.asarray(petab.upper, dtype=np.float64)
        self.x0 = np.asarray(petab.x_nominal, dtype=np.float64)
        self.counts = {"value": 0, "gradient": 0, "hessian": 0, "failures": 0}

    def value(self, x) -> float:
        self.counts["value"] += 1
        try:
            v = float(self.problem.nllh(np.asarray(x, dtype=np.float64), priors=self.priors))
        except Exception:  # a failed solve at a trial point: the optimiser backs off
            self.counts["failures"] += 1
            return math.inf
        return v if math.isfinite(v) else math.inf

    def value_and_grad(self, x) -> tuple[float, np.ndarray]:
        self.counts["gradient"] += 1
        try:
            g = self.problem.gradient(np.asarray(x, dtype=np.float64), mode=self.mode, priors=self.priors)
        except Exception:
            self.counts["failures"] += 1
            return math.inf, np.full(len(self.names), np.nan)
        return float(g.value), np.asarray(g.grad, dtype=np.float64)

    def nllh_function(self):
        """The nllh (with the objective priors when `priors`) as a JAX function x (n,) ->
        scalar, +inf where a solve fails: `PetabProblem.nllh_function` plus `prior_function`."""
        f = self.problem.nllh_function(mode=self.mode)
        if not self.priors:
            return f
        prior = prior_function(self.problem.priors, self.scales)
        return lambda x: f(x) + prior(x)

    def hessian(self, x) -> np.ndarray:
        """The Fisher information (n, n) on the parameter scales (priors' curvature not included)."""
        self.counts["hessian"] += 1
        return np.asarray(self.problem.fisher(np.asarray(x, dtype=np.float64)), dtype=np.float64)

    def value_grad_hessian(self, x) -> tuple[float, np.ndarray, np.ndarray | None]:
        """The nllh (with the priors when `priors`), its gradient (n,) and the Fisher
        information (n, n) at x from one forward-sensitivity solve
        (`PetabProblem.value_gradient_fisher`); (inf, nan (n,), None) where the solve fails.
        A problem without that call gets `value_and_grad` and `hessian`."""
        x = np.asarray(x, dtype=np.float64)
        if not hasattr(self.problem, "value_gradient_fisher"):
            v, g = self.value_and_grad(x)
            return (v, g, self.hessian(x)) if math.isfinite(v) else (v, g, None)
        self.counts["gradient"] += 1
        self.counts["hessian"] += 1
        try:
            v, g, F = self.problem.value_gradient_fisher(x, priors=self.priors)
        except Exception:  # a failed solve at a trial point
            self.counts["failures"] += 1
            return math.inf, np.full(len(self.names), np.nan), None
        return float(v), np.asarray(g, dtype=np.float64), np.asarray(F, dtype=np.float64)

    def minimize(self, x0, free=None, max_iter: int = 1000, tol: float = 1e-10):
        """L-BFGS-B within the bounds on the free parameters (others held at x0)."""
        return minimize_generic(self, x0, free, max_iter, tol)


def prior_function(priors, scales):
    """The negative log-density of PEtab objective priors as a JAX function of x (n,) on the
    parameter scales: priors [(index into x, type, a, b)] as `PetabProblem.priors`; a
    density over the linear value v includes -log |dv/dx| (see `PetabProblem.prior`)."""
    import jax.numpy as jnp

    def term(x, scale, kind, a, b):
        if kind.startswith("parameterScale"):
            v, logjac, kind = x, 0.0, kind[len("parameterScale"):].lower()
        else:
            kind = kind.lower()
            v = {"lin": x, "log": jnp.exp(x), "log10": 10.0 ** x}[scale]
            logjac = {"lin": 0.0, "log": x, "log10": jnp.log(math.log(10.0)) + x * math.log(10.0)}[scale]
        if kind == "normal":
            val = 0.5 * math.log(2 * math.pi * b * b) + 0.5 * ((v - a) / b) ** 2
        elif kind == "laplace":
            val = math.log(2 * b) + jnp.abs(v - a) / b
        elif kind == "uniform":
            val = jnp.where((v >= a) & (v <= b), math.log(b - a), jnp.inf)
        elif kind == "lognormal":
            lv = jnp.log(v)
            val = lv + 0.5 * math.log(2 * math.pi * b * b) + 0.5 * ((lv - a) / b) ** 2
        elif kind == "loglaplace":
            lv = jnp.log(v)
            val = lv + math.log(2 * b) + jnp.abs(lv - a) / b
        else:
            raise InputError(f"prior type '{kind}' is unknown")
        return val - logjac

    priors = list(priors)

    def prior(x):
        total = jnp.zeros((), dtype=x.dtype)
        for i, kind, a, b in priors:
            total = total + term(x[i], scales[i], kind, float(a), float(b))
        return total

    return prior


def minimize_generic(lik, x0, free=None, max_iter: int = 1000, tol: float = 1e-10):
    """A local fit of lik's parameters where `free` is True (all when None) from x0 (n,), the
    others held at x0, by SciPy's L-BFGS-B on the exact gradient within the bounds.
    Returns (x (n,), value, success, message, iterations)."""
    from scipy.optimize import minimize

    x0 = np.asarray(x0, dtype=np.float64)
    free = np.ones(x0.size, bool) if free is None else np.asarray(free, bool)
    if not free.any():
        return x0.copy(), lik.value(x0), True, "nothing to fit", 0

    def full(z):
        x = x0.copy()
        x[free] = z
        return x

    def f(z):
        v, g = lik.value_and_grad(full(z))
        if not math.isfinite(v) or not np.all(np.isfinite(g)):
            return 1e300, np.zeros(z.size)
        return v, g[free]

    bounds = list(zip(np.where(np.isfinite(lik.lower[free]), lik.lower[free], None),
                      np.where(np.isfinite(lik.upper[free]), lik.upper[free], None)))
    r = minimize(f, x0[free], jac=True, method="L-BFGS-B", bounds=bounds,
                 options={"maxiter": max_iter, "ftol": tol * 1e-2, "gtol": max(tol, 1e-9)})
    x = full(r.x)
    return x, float(r.fun) if r.fun < 1e300 else math.inf, bool(r.success), str(r.message), int(r.nit)


def as_likelihood(problem, priors: bool = False, mode: str = "auto"):
    """A likelihood (this module's interface) from a PEtab problem or from an object that
    already is one (a `FitResult`'s or `LikelihoodFit`'s `likelihood`)."""
    if hasattr(problem, "value_and_grad") and hasattr(problem, "minimize"):
        return problem
    if hasattr(problem, "nllh") and hasattr(problem, "x_names"):
        return PetabLikelihood(problem, priors=priors, mode=mode)
    raise InputError(f"need a Problem with data, a PEtab problem or a fit result; got {type(problem).__name__}")


# --------------------------------------------------------------------------- multi-start
class StartsMixin:
    """Multi-start read-outs of a fit whose `starts` table has one row per start, in the
    order the starts were run, with the final objective in column `_objective` and the
    final parameters in the columns named `input_names`."""

    _objective = "cost"

    def start_values(self) -> np.ndarray:
        """The final objective (nllh up to a constant) of every start, in start order (k,)."""
        return np.asarray(self.starts[self._objective], dtype=np.float64)

    def fraction_at_best(self, tol: float = BEST_TOL) -> float:
        """The fraction of starts whose final value lies within `tol` (nllh units) of the best."""
        v = self.start_values()
        ok = np.isfinite(v)
        return float(np.sum(v[ok] <= v[ok].min() + tol) / v.size) if ok.any() else 0.0

    def waterfall(self, path=None, tol: float = BEST_TOL, title: str = ""):
        """The final values of all starts, sorted (the waterfall plot); the starts within `tol`
        of the best are highlighted. Returns the Figure (a PNG at `path` when given)."""
        return waterfall_figure(self.start_values(), tol=tol, path=path, title=title)

    def parameters(self, path=None, best: int = 10, title: str = ""):
        """The final parameters of the `best` best starts, one line per start, with the
        bounds when finite. Returns the Figure (a PNG at `path` when given)."""
        names = list(self.input_names)
        X = self.starts[names].to_numpy(float)
        lo, hi = getattr(self, "lower", None), getattr(self, "upper", None)
        return parameters_figure(names, X, self.start_values(), lower=lo, upper=hi, best=best, path=path,
                                 title=title)


@dataclass(frozen=True)
class LikelihoodFit(StartsMixin):
    """A multi-start fit of a likelihood (a PEtab problem), on the estimation scale.

    input_names (n,), scales (n,); x (n,): the best estimate on the estimation scale;
    x_natural (n,): on the natural scale; nllh: its value; lower, upper (n,): the bounds;
    starts: one row per start in start order (start, nllh, success, iterations, message,
    start_<name>..., <name>...); success: the best start's optimiser converged;
    likelihood: the objective (for profiles and sampling); notes; timings (seconds).
    """

    input_names: tuple
    scales: tuple
    x: np.ndarray
    nllh: float
    lower: np.ndarray
    upper: np.ndarray
    starts: object
    success: bool
    likelihood: object
    notes: tuple = ()
    timings: dict = field(default_factory=dict)

    _objective = "nllh"

    @property
    def x_natural(self) -> np.ndarray:
        return to_natural(self.x, self.scales)

    @property
    def estimates(self) -> dict:
        """name -> estimate on the estimation scale."""
        return dict(zip(self.input_names, map(float, self.x)))

    @property
    def cost(self) -> float:
        return self.nllh

    def to_frame(self):
        import pandas as pd

        return pd.DataFrame({"scale": list(self.scales), "estimate": self.x, "natural": self.x_natural,
                             "lower": self.lower, "upper": self.upper},
                            index=pd.Index(self.input_names, name="input"))

    def summary(self) -> str:
        lines = [f"nllh {self.nllh:.6g} ({'converged' if self.success else 'NOT converged'}); "
                 f"{len(self.starts)} starts, {100 * self.fraction_at_best():.0f}% within {BEST_TOL:g} of the best"]
        for nm, sc, v in zip(self.input_names, self.scales, self.x):
            lines.append(f"  {nm:>16s} = {v:.6g} ({sc})")
        return "\n".join(lines)


def to_natural(x, scales) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.array([np.exp(v) if s == "log" else 10.0 ** v if s == "log10" else v for v, s in zip(x, scales)])


def start_points(lik, starts, seed: int = 0) -> np.ndarray:
    """Start points (k, n) on the estimation scale: lik.x0, then (an int `starts`) that many
    points of a scrambled Sobol sequence within the bounds, or the given array (k, n)."""
    from scipy.stats import qmc

    n = len(lik.names)
    x0 = np.clip(lik.x0, lik.lower, lik.upper)
    if starts is None:
        return x0[None, :]
    if isinstance(starts, (int, np.integer)) and not isinstance(starts, bool):
        if starts < 1:
            raise InputError(f"starts = {starts}: give a positive number of starts")
        finite = np.isfinite(lik.lower) & np.isfinite(lik.upper)
        if not finite.all():
            i = int(np.argmin(finite))
            raise InputError(f"starts = {starts}: parameter '{lik.names[i]}' has no finite bounds to draw "
                             "starts from; give bounds or an array of starts")
        U = qmc.Sobol(n, scramble=True, seed=seed).random_base2(max(0, math.ceil(math.log2(starts))))[:starts]
        return np.vstack([x0[None, :], qmc.scale(U, lik.lower, lik.upper)])
    X = np.asarray(starts, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != n:
        raise InputError(f"starts has shape {X.shape}; expected (k, {n}) on the estimation scale or a number")
    return np.vstack([x0[None, :], np.clip(X, lik.lower, lik.upper)])


def multistart(lik, starts=None, seed: int = 0, max_iter: int = 1000, tol: float = 1e-10) -> LikelihoodFit:
    """Local fits of `lik` from its x0 and `starts` (see `start_points`), one after another;
    every result kept in start order. Returns a `LikelihoodFit`."""
    import pandas as pd

    began = time.perf_counter()
    points = start_points(lik, starts, seed)
    rows = []
    for k, x0 in enumerate(points):
        x, v, ok, msg, it = lik.minimize(x0, None, max_iter=max_iter, tol=tol)
        rows.append(dict(start=k, nllh=v, success=ok, iterations=it, message=msg,
                         **{f"start_{nm}": s for nm, s in zip(lik.names, x0)}, **dict(zip(lik.names, x))))
    table = pd.DataFrame(rows)
    best = int(np.argmin(np.where(np.isfinite(table["nllh"]), table["nllh"], np.inf)))
    b = rows[best]
    return LikelihoodFit(tuple(lik.names), tuple(lik.scales), np.array([b[nm] for nm in lik.names]),
                         float(b["nllh"]), lik.lower.copy(), lik.upper.copy(), table, bool(b["success"]), lik,
                         (f"multi-start: {len(points)} local fits (L-BFGS-B on the exact gradient) one after "
                          f"another; start {best} won",),
                         {"wall": time.perf_counter() - began})


# --------------------------------------------------------------------------- Problem with data
class ProblemLikelihood:
    """The nllh of a `Problem` against data through the fit's residual evaluator
    (`sensitivity.analyses.fit._Evaluator`): value = 1/2 sum r^2 / noise^2 on theta = ln p
    (log_params) or p. route "least_squares": gradient J^T r from the residuals' Jacobian
    and local fits by SciPy's least_squares; "trust-ncg": the adjoint gradient and
    L-BFGS-B. `hessian` is exact (Hessian-vector products against the unit vectors)."""

    kind = "problem"
    hessian_kind = "exact"

    def __init__(self, evaluator, names, lower, upper, x0, log: bool, route: str = "least_squares",
                 noise: float = 1.0):
        self.ev, self.names, self.route = evaluator, tuple(names), route
        self.lower, self.upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
        self.x0 = np.asarray(x0, dtype=np.float64)
        self.scales = ("log" if log else "lin",) * len(self.names)
        self.s2 = float(noise) ** 2
        self.counts = evaluator.counts

    def value(self, x) -> float:
        return self.ev.cost(np.asarray(x, dtype=np.float64)) / self.s2

    def value_and_grad(self, x) -> tuple[float, np.ndarray]:
        x = np.asarray(x, dtype=np.float64)
        if self.route == "least_squares":
            J = self.ev.jacobian(x)
            r = self.ev.residuals(x)
            if not np.all(np.isfinite(r)):
                return math.inf, np.full(x.size, np.nan)
            return float(0.5 * r @ r) / self.s2, (J.T @ r) / self.s2
        v = self.ev.cost(x)
        if not math.isfinite(v):
            return math.inf, np.full(x.size, np.nan)
        return v / self.s2, self.ev.gradient(x) / self.s2

    def nllh_function(self):
        """The nllh as one JAX function theta (n,) -> scalar, +inf where the solve fails,
        traced through the solve of `sensitivity.integrate.solve.output_function`; its
        derivative (jax.grad, jax.jvp) is the exact gradient: J^T r from forward
        sensitivities (all n tangents in one sweep) for up to FORWARD_MAX inputs, reverse mode
        through the checkpointed solve above; 0 where the solve fails."""
        import diffrax
        import jax
        import jax.numpy as jnp

        ev, s2 = self.ev, self.s2
        forward = len(self.names) <= FORWARD_MAX
        f = output_function(ev.problem, "forward" if forward else "checkpoint")
        values = values_of(ev.problem)
        rows, cols = np.asarray(ev.rows), np.asarray(ev.cols)
        target, w = np.asarray(ev.target, dtype=np.float64), np.asarray(ev.w, dtype=np.float64)

        def residuals(theta):
            out, aux = f(jnp.exp(theta) if ev.log else theta, values)
            ok = jnp.asarray(True)
            if "result" in aux:
                ok = aux["result"] == diffrax.RESULTS.successful
            if "events_exhausted" in aux:
                ok = ok & (aux["events_exhausted"] == 0)
            return (out[rows, cols] - target) * w, ok

        def value_and_grad(theta):
            if forward:
                def one(t):
                    return jax.jvp(residuals, (theta,), (t,), has_aux=True)
                r, J, ok = jax.vmap(one, out_axes=(None, 0, None))(jnp.eye(theta.size, dtype=theta.dtype))
                v, g = 0.5 * jnp.sum(r * r) / s2, (J @ r) / s2
            else:
                def cost(th):
                    r, ok = residuals(th)
                    return 0.5 * jnp.sum(r * r) / s2, ok
                (v, ok), g = jax.value_and_grad(cost, has_aux=True)(theta)
            ok = ok & jnp.isfinite(v) & jnp.all(jnp.isfinite(g))
            return jnp.where(ok, v, jnp.inf), jnp.where(ok, g, 0.0)

        @jax.custom_jvp
        def nllh(theta):
            r, ok = residuals(theta)
            v = 0.5 * jnp.sum(r * r) / s2
            return jnp.where(ok & jnp.isfinite(v), v, jnp.inf)

        @nllh.defjvp
        def _nllh_jvp(primals, tangents):
            v, g = value_and_grad(primals[0])
            return v, g @ tangents[0]

        return nllh

    def hessian(self, x) -> np.ndarray:
        """The exact Hessian (n, n) of the nllh on the estimation scale, from n Hessian-vector
        products, symmetrised."""
        x = np.asarray(x, dtype=np.float64)
        H = np.column_stack([self.ev.hvp(x, e) for e in np.eye(x.size)]) / self.s2
        return 0.5 * (H + H.T)

    def minimize(self, x0, free=None, max_iter: int = 1000, tol: float = 1e-10):
        """SciPy's least_squares (TRF, exact Jacobian) on the free parameters, or L-BFGS-B."""
        if self.route != "least_squares":
            return minimize_generic(self, x0, free, max_iter, tol)
        from scipy.optimize import least_squares

        x0 = np.asarray(x0, dtype=np.float64)
        free = np.ones(x0.size, bool) if free is None else np.asarray(free, bool)
        if not free.any():
            return x0.copy(), self.value(x0), True, "nothing to fit", 0

        def full(z):
            x = x0.copy()
            x[free] = z
            return x

        r = least_squares(lambda z: self.ev.residuals(full(z)), x0[free],
                          jac=lambda z: self.ev.jacobian(full(z))[:, free],
                          bounds=(self.lower[free], self.upper[free]), method="trf", ftol=tol, xtol=tol,
                          gtol=tol, max_nfev=max_iter, x_scale="jac")
        x = full(r.x)
        return x, self.value(x), bool(r.success), str(r.message), int(r.njev or r.nfev)
