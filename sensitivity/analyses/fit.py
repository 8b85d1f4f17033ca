"""Fitting a model's inputs to data with exact derivatives: least squares / Gaussian
negative log-likelihood of the outputs against a table of observations.

    minimise  cost(p) = 1/2 sum_i r_i(p)^2,   r_i = (y_{o_i}(t_i; p) - d_i) / sigma_i

which is the Gaussian negative log-likelihood up to a constant:
NLL = cost + sum_i ln sigma_i + (n/2) ln 2 pi. Two routes, both on exact derivatives:

- "least_squares": SciPy's trust-region reflective `least_squares` (Gauss-Newton steps in
  a trust region) with the residuals' exact Jacobian, dr/dp = J / sigma, from
  `sensitivity.jacobian` (forward or adjoint per the cost model); cheap when the inputs are
  few (the forward Jacobian costs about a solve per ~10 inputs).
- "trust-ncg": SciPy's Newton-CG trust region on the exact gradient (`sensitivity.gradient`,
  one adjoint sweep) and exact Hessian-vector products (`sensitivity.hvp`, ~2 gradients),
  for many inputs; "trust-constr" (the same derivatives) when bounds are given.

"auto" takes least squares unless the Jacobian costs more than 10 gradients (the cost
model's estimates). Inputs are fitted as ln p by default (log_params=True: positive, scale
free), and bounds are imposed on ln p. Standard errors come from the Fisher information at
the estimate (`sensitivity.fisher`); with sigma=None (unknown, equal for all data) they are
scaled by the residual variance s^2 = 2 cost / (n_data - n_inputs).

How good a fit is: chi-square per degree of freedom, chi2 / dof = sum_i r_i^2 / (n_data -
n_inputs), about 1 when the model meets the data within their sigma. Far beyond (p-value of
the chi-square below `FAR_P` and chi2 / dof above `FAR_RATIO`) the fit is not a fit: a local
minimum, or a sigma or model that does not describe the data. Then, and when the optimiser
did not converge, the result's `success` is False (the optimiser's own verdict is
`optimizer_success`), its summary says so, and a `FitWarning` suggests what to try.

Data: a table with columns time, output, value (and optionally sigma), as a pandas
DataFrame, a mapping of arrays or a CSV path; or a wide table (time plus one column per
output, empty cells missing). Data times that are not save times of the problem are
merged into its save times.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from .. import api
from ..api import plan
from ..core.checks.numbers import stacklevel
from ..core.data import read_data
from ..core.errors import FitWarning, InputError, SolverError, did_you_mean, list_names
from ..core.problem import Problem
from ..integrate.solve import simulate
from ..plots.analyses import fit_figure
from .ensemble import ensemble
from .identifiability import fisher as _fisher
from .identifiability import identifiability as _ident
from .likelihood import PetabLikelihood, ProblemLikelihood, StartsMixin, multistart
from .metrics import Objective

METHODS = ("auto", "least_squares", "trust-ncg")
JACOBIAN_VS_GRADIENT = 10.0  # "auto" takes least squares while a Jacobian costs <= this many gradients
TRUST_GTOL = 1e-6  # the trust-region methods' gradient tolerance (in ln p units), at least
FAR_P = 1e-6  # chi-square p-value below which the residuals are "far beyond the noise" ...
FAR_RATIO = 2.0  # ... when chi2 / dof is above this, too (not a mere excess of a huge data set)


# --------------------------------------------------------------------------- data
def union_times(grid: np.ndarray, extra: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """The sorted union of two sets of times; times within rtol * span of a grid time count
    as that time."""
    grid = np.asarray(grid, dtype=np.float64)
    span = max(abs(float(grid[-1] - grid[0])), 1.0)
    out = list(grid)
    for t in np.unique(np.asarray(extra, dtype=np.float64)):
        if np.min(np.abs(grid - t)) > rtol * span:
            out.append(float(t))
    return np.unique(np.asarray(out))


# --------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class FitResult(StartsMixin):
    """A fit.

    input_names, x (n_inputs,): the estimates (natural scale); start: where the best local
    fit started; standard_error (n_inputs,): Cramer-Rao from the Fisher information at x
    (natural scale; inf for a non-identifiable input), standard_error_log: of ln p (about
    the relative error); fisher: the `Fisher` at x (scale of the fit); cost: 1/2 sum r^2;
    nll: the Gaussian negative log-likelihood; sigma_estimated: s when sigma was unknown;
    data: the long table used (time, output, value, sigma); residuals (n_data,):
    (model - data) / sigma; trajectory: the `Trajectory` at x on the merged save times;
    start_trajectory: outputs at the start; method, message, iterations; success (also
    `converged`): the optimiser converged AND the residuals are within reach of the noise
    (not chi2 / dof far beyond 1; with sigma estimated, the optimiser's verdict alone);
    optimizer_success: the optimiser's own flag; chi2 = sum r^2, dof = n_data - n_inputs,
    chi2_dof = chi2 / dof and p_value (the chi-square's upper tail) against sigma (NaN
    p-value with sigma estimated: then chi2 / dof = 1 by construction); quality: a sentence;
    evaluations: how many simulate / jacobian / gradient / hvp calls the fit made
    (failures: solves that failed at trial points; solver_steps: the steps of the forward
    solves of simulate, jacobian and gradient calls, a measure of the work); path: a DataFrame of the iterates
    (cost and inputs); starts: one row per start of a fit, in start order (cost, success,
    iterations, start_<input>, <input>: natural scale; `fraction_at_best`, `waterfall()`,
    `parameters()` read it); timings: seconds; likelihood: the nllh on the fitted scale
    (`sensitivity.analyses.likelihood.ProblemLikelihood`) for profiles and sampling.
    """

    input_names: tuple[str, ...]
    x: np.ndarray
    start: np.ndarray
    standard_error: np.ndarray
    standard_error_log: np.ndarray
    fisher: object
    cost: float
    nll: float
    sigma_estimated: float | None
    data: object
    residuals: np.ndarray
    trajectory: object
    start_trajectory: np.ndarray | None
    method: str
    success: bool
    message: str
    iterations: int
    evaluations: dict
    path: object
    starts: object = None
    notes: tuple[str, ...] = ()
    timings: dict = field(default_factory=dict)
    log_params: bool = True
    optimizer_success: bool | None = None
    chi2: float = float("nan")
    dof: int = 0
    p_value: float = float("nan")
    quality: str = ""
    likelihood: object = None

    @property
    def converged(self) -> bool:
        """`success`: the optimiser converged and the residuals are within reach of the noise."""
        return self.success

    @property
    def chi2_dof(self) -> float:
        """Chi-square per degree of freedom, sum r^2 / (n_data - n_inputs); NaN without any."""
        return self.chi2 / self.dof if self.dof > 0 else float("nan")

    @property
    def estimates(self) -> dict:
        """name -> estimate."""
        return dict(zip(self.input_names, map(float, self.x)))

    def to_frame(self):
        """One row per input: estimate, standard error, relative standard error, start."""
        import pandas as pd

        with np.errstate(divide="ignore", invalid="ignore"):
            rse = self.standard_error / np.abs(self.x)
        return pd.DataFrame({"estimate": self.x, "standard_error": self.standard_error,
                             "relative_standard_error": rse, "start": self.start},
                            index=pd.Index(self.input_names, name="input"))

    def to_xarray(self):
        """Estimates, standard errors, the correlation of the estimates and the fitted
        outputs as an `xarray.Dataset`."""
        import xarray as xr

        names = list(self.input_names)
        cov = self.fisher.covariance()
        sd = np.sqrt(np.clip(np.diag(cov), 1e-300, None))
        tr = self.trajectory
        return xr.Dataset(
            {"estimate": ("input", self.x), "standard_error": ("input", self.standard_error),
             "start": ("input", self.start),
             "correlation": (("input", "input_2"), cov / np.outer(sd, sd)),
             "fitted_outputs": (("time", "output"), tr.outputs),
             "data_time": ("observation", self.data["time"].to_numpy(float)),
             "data_output": ("observation", self.data["output"].to_numpy(str)),
             "data_value": ("observation", self.data["value"].to_numpy(float)),
             "data_sigma": ("observation", self.data["sigma"].to_numpy(float)),
             "residual": ("observation", self.residuals)},
            coords={"input": names, "input_2": names, "time": tr.times, "output": list(tr.output_names)},
            attrs={"cost": self.cost, "nll": self.nll, "method": self.method, "success": int(self.success),
                   "optimizer_success": int(bool(self.optimizer_success)), "chi2": self.chi2, "dof": self.dof,
                   "chi2_dof": self.chi2_dof, "p_value": self.p_value,
                   "iterations": self.iterations, "log_params": int(self.log_params),
                   "sigma_estimated": self.sigma_estimated if self.sigma_estimated is not None else np.nan},
        )

    def plot(self, path=None, title: str = ""):
        """The fitted outputs against the data (with +-sigma bars) and the residuals.
        Returns the Figure; writes a PNG when `path` is given."""
        return fit_figure(self, path, title)

    def summary(self) -> str:
        verdict = "converged" if self.success else (
            "NOT a fit" if self.optimizer_success else "NOT converged")
        lines = [f"{self.method}: {verdict} after {self.iterations} iterations (optimiser: {self.message}); "
                 f"cost {self.cost:.6g}, NLL {self.nll:.6g}, {len(self.residuals)} data."]
        if self.quality:
            lines.append(self.quality)
        for name, v, se in zip(self.input_names, self.x, self.standard_error):
            lines.append(f"  {name:>12s} = {v:.6g} +- {se:.3g}")
        lines.append("evaluations: " + ", ".join(f"{k} {v}" for k, v in self.evaluations.items()))
        return "\n".join(lines)


# --------------------------------------------------------------------------- helpers
def _vector(problem: Problem, value, name: str, default=None) -> np.ndarray:
    """A mapping input -> number or an array (n_inputs,) as an array; entries not named
    take `default` (an array)."""
    names = problem.input_names
    if value is None:
        return np.array(default, dtype=np.float64)
    if isinstance(value, Mapping):
        unknown = [k for k in value if k not in names]
        if unknown:
            raise InputError(f"{name}: '{unknown[0]}' is not a fitted input{did_you_mean(unknown[0], names)}; "
                             f"inputs: {list_names(names)}")
        out = np.array(default, dtype=np.float64)
        for k, v in value.items():
            out[names.index(k)] = float(v)
        return out
    out = np.asarray(value, dtype=np.float64)
    if out.shape != (len(names),):
        raise InputError(f"{name} has shape {out.shape}, expected ({len(names)},): one per input {list(names)}")
    return out


def _bounds(problem: Problem, bounds, log: bool) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds (natural scale), -inf / inf where none."""
    n = problem.n_inputs
    lo, hi = np.full(n, -np.inf), np.full(n, np.inf)
    if bounds is None:
        return lo, hi
    if not isinstance(bounds, Mapping):
        raise InputError(f"bounds must map input names to (low, high), got {type(bounds).__name__}")
    for k, pair in bounds.items():
        if k not in problem.input_names:
            raise InputError(f"bounds: '{k}' is not a fitted input{did_you_mean(k, problem.input_names)}; "
                             f"inputs: {list_names(problem.input_names)}")
        try:
            a, b = (np.inf * s if v is None else float(v) for v, s in zip(pair, (-1, 1)))
        except (TypeError, ValueError):
            raise InputError(f"bounds.{k} = {pair!r} must be (low, high); use null for none") from None
        if not a < b:
            raise InputError(f"bounds.{k} = {pair!r}: low must be below high")
        if log and a <= 0 and np.isfinite(a):
            a = 0.0  # a log parameter is positive anyway
        i = problem.input_names.index(k)
        lo[i], hi[i] = a, b
    return lo, hi


def _sample_starts(problem: Problem, ranges, n: int, log: bool, seed: int) -> np.ndarray:
    """n points (n, n_inputs) from a scrambled Sobol sequence over `ranges` (log-uniform
    when fitting ln p); inputs without a range stay at their start value (column NaN)."""
    from scipy.stats import qmc

    names = problem.input_names
    if not isinstance(ranges, Mapping) or not ranges:
        raise InputError("ranges must map fitted input names to (low, high), e.g. {'k': [0.1, 10]}")
    idx, lo, hi = [], [], []
    for k, pair in ranges.items():
        if k not in names:
            raise InputError(f"ranges: '{k}' is not a fitted input{did_you_mean(k, names)}; "
                             f"inputs: {list_names(names)}")
        try:
            a, b = float(pair[0]), float(pair[1])
        except (TypeError, ValueError, IndexError):
            raise InputError(f"ranges.{k} = {pair!r} must be (low, high)") from None
        if not (np.isfinite(a) and np.isfinite(b) and a < b) or (log and a <= 0):
            raise InputError(f"ranges.{k} = {pair!r}: need finite low < high" + (", both > 0 for log "
                             "parameters" if log else ""))
        idx.append(names.index(k))
        lo.append(np.log(a) if log else a)
        hi.append(np.log(b) if log else b)
    U = qmc.Sobol(len(idx), scramble=True, seed=seed).random_base2(max(0, math.ceil(math.log2(n))))[:n]
    pts = qmc.scale(U, lo, hi) if len(idx) else U
    out = np.full((n, len(names)), np.nan)
    out[:, idx] = np.exp(pts) if log else pts
    return out


class _Evaluator:
    """Residuals and their derivatives at theta (ln p or p), cached per point, counting calls."""

    def __init__(self, problem: Problem, rows, cols, target, w, log: bool, jac_mode: str):
        self.problem, self.rows, self.cols = problem, rows, cols
        self.target, self.w, self.log, self.jac_mode = target, w, log, jac_mode
        self.counts = {"simulate": 0, "jacobian": 0, "gradient": 0, "hvp": 0, "failures": 0,
                       "solver_steps": 0}
        self.seconds = {"compile": 0.0, "run": 0.0}
        self._res: dict = {}
        self._jac: dict = {}
        self._grad: dict = {}
        self.path: list[tuple[float, np.ndarray]] = []
        self._objective = None

    def x(self, theta) -> np.ndarray:
        return np.exp(theta) if self.log else np.asarray(theta, dtype=np.float64)

    def _time(self, timings: dict, stats: dict | None = None) -> None:
        for k in self.seconds:
            self.seconds[k] += float(timings.get(k, 0.0))
        self.counts["solver_steps"] += int((stats or {}).get("num_steps", 0))

    def residuals(self, theta) -> np.ndarray:
        key = np.asarray(theta).tobytes()
        if key not in self._res:
            self.counts["simulate"] += 1
            try:
                tr = simulate(self.problem.with_inputs(self.x(theta)))
                self._time(tr.timings, tr.stats)
                r = (tr.outputs[self.rows, self.cols] - self.target) * self.w
            except SolverError:
                self.counts["failures"] += 1
                r = np.full(self.rows.size, np.nan)
            self._res = {key: r}
        return self._res[key]

    def cost(self, theta) -> float:
        r = self.residuals(theta)
        return float(0.5 * r @ r) if np.all(np.isfinite(r)) else np.inf

    def jacobian(self, theta) -> np.ndarray:
        """d r / d theta, shape (n_data, n_inputs)."""
        key = np.asarray(theta).tobytes()
        if key not in self._jac:
            self.counts["jacobian"] += 1
            x = self.x(theta)
            res = api.jacobian(self.problem.with_inputs(x), mode=self.jac_mode, probe_problem=False)
            self._time(res.timings, res.stats)
            r = (res.outputs[self.rows, self.cols] - self.target) * self.w
            self._res = {key: r}
            Jr = res.values[self.rows, self.cols, :] * self.w[:, None]
            self._jac = {key: (Jr * x[None, :] if self.log else Jr, res)}
            self.path.append((float(0.5 * r @ r), x))
        return self._jac[key][0]

    def jacobian_result(self, theta):
        self.jacobian(theta)
        return self._jac[np.asarray(theta).tobytes()][1]

    # -- the scalar route: 1/2 sum r^2 = 1/2 Objective(sum_of_squares)
    @property
    def objective(self):
        if self._objective is None:
            self._objective = Objective("sum_of_squares", tuple(int(c) for c in self.cols),
                                        tuple(int(r) for r in self.rows), tuple(map(float, self.target)),
                                        tuple(map(float, self.w)))
        return self._objective

    def _gradient_x(self, theta):
        key = np.asarray(theta).tobytes()
        if key not in self._grad:
            self.counts["gradient"] += 1
            g = api.gradient(self.problem.with_inputs(self.x(theta)), self.objective, probe_problem=False)
            self._time(g.timings, g.stats)
            self._grad = {key: (0.5 * g.value, 0.5 * g.grad)}
            self.path.append((0.5 * g.value, self.x(theta)))
        return self._grad[key]

    def gradient(self, theta) -> np.ndarray:
        x = self.x(theta)
        _, gx = self._gradient_x(theta)
        return gx * x if self.log else gx

    def hvp(self, theta, v) -> np.ndarray:
        """H_theta v: for theta = ln p, D H_p D v + diag(D g_p) v with D = diag(p)."""
        x = self.x(theta)
        v = np.asarray(v, dtype=np.float64)
        self.counts["hvp"] += 1
        u = v * x if self.log else v
        hu = 0.5 * api.hvp(self.problem.with_inputs(x), self.objective, u)
        if not self.log:
            return hu
        _, gx = self._gradient_x(theta)
        return x * hu + x * gx * v


def _screen(problem: Problem, X: np.ndarray, rows, cols, target, w) -> np.ndarray:
    """The cost 1/2 sum r^2 at every row of X (k, n_inputs), by one `sensitivity.ensemble`
    simulate (vmapped batches through one compiled function); inf where the solve failed."""
    ds = ensemble(problem, X, task="simulate", progress=False)
    out = ds["outputs"].values  # (k, n_times, n_of)
    r = (out[:, rows, cols] - target[None, :]) * w[None, :]
    cost = 0.5 * np.sum(r * r, axis=1)
    return np.where((ds["status"].values == 0) & np.isfinite(cost), cost, np.inf)


def _choose_method(problem: Problem, method: str, evaluator: _Evaluator) -> tuple[str, str]:
    """The method to run and a note on why."""
    if method not in METHODS:
        raise InputError(f"method = '{method}' is unknown{did_you_mean(method, METHODS)}; "
                         f"valid: {', '.join(METHODS)}")
    if method != "auto":
        return method, f"method {method} as asked"
    pj = plan(problem, task="jacobian", probe_problem=False)
    pg = plan(problem, evaluator.objective, task="gradient", probe_problem=False)
    ratio = pj.chosen.solves / pg.chosen.solves
    if ratio <= JACOBIAN_VS_GRADIENT:
        return "least_squares", (f"least_squares: the residuals' Jacobian ({pj.mode}) costs about {ratio:.2g} "
                                 f"gradients (<= {JACOBIAN_VS_GRADIENT:g}), so Gauss-Newton steps are cheap")
    return "trust-ncg", (f"trust-ncg: the Jacobian ({pj.mode}) costs about {ratio:.2g} gradients "
                         f"(> {JACOBIAN_VS_GRADIENT:g}); exact gradients and Hessian-vector products instead")


def _local_fit(ev: _Evaluator, theta0, lo, hi, method: str, max_iter: int, tol: float):
    """One local optimisation from theta0; returns (theta, success, message, iterations)."""
    from scipy.optimize import least_squares, minimize

    if method == "least_squares":
        r = least_squares(ev.residuals, theta0, jac=ev.jacobian, bounds=(lo, hi), method="trf",
                          ftol=tol, xtol=tol, gtol=tol, max_nfev=max_iter, x_scale="jac")
        return r.x, bool(r.success), str(r.message), int(r.njev or r.nfev)
    bounded = np.any(np.isfinite(lo)) or np.any(np.isfinite(hi))
    # the HVPs agree with the gradient to about the solver tolerance, so ask no more of the
    # gradient than that
    gtol = max(tol, TRUST_GTOL)
    if bounded:
        from scipy.optimize import Bounds

        r = minimize(ev.cost, theta0, jac=ev.gradient, hessp=ev.hvp, method="trust-constr",
                     bounds=Bounds(lo, hi), options={"maxiter": max_iter, "gtol": gtol, "xtol": tol})
    else:
        r = minimize(ev.cost, theta0, jac=ev.gradient, hessp=ev.hvp, method="trust-ncg",
                     options={"maxiter": max_iter, "gtol": gtol})
    ok, msg = bool(r.success), str(r.message)
    gnorm = float(np.linalg.norm(ev.gradient(r.x)))
    if not ok and r.status == 2 and gnorm <= 100 * gtol:
        ok, msg = True, f"{msg} (at |gradient| = {gnorm:.2g}: converged to the derivatives' precision)"
    return r.x, ok, msg, int(r.nit)


# --------------------------------------------------------------------------- data against a problem
def _prepare(problem: Problem, data, sigma):
    """The data against the problem: (problem on the merged save times with the observed
    outputs, the long table with a sigma column, rows, cols (n_data,) into its outputs,
    target, w = 1 / sigma (n_data,), whether sigma is to be estimated)."""
    if not isinstance(problem, Problem):
        raise InputError(f"need a Problem (or a PEtab problem), got {type(problem).__name__}")
    valid = tuple(problem.model.observables) + tuple(s for s in problem.model.states
                                                     if s not in problem.model.observables)
    df = read_data(data, valid)
    observed = [o for o in problem.of if o in set(df["output"])] + \
        [o for o in dict.fromkeys(df["output"]) if o not in problem.of]
    # sigma per row
    estimate_sigma = sigma is None and "sigma" not in df.columns
    if "sigma" not in df.columns:
        if sigma is None:
            df["sigma"] = 1.0
        elif isinstance(sigma, Mapping):
            missing = [o for o in observed if o not in sigma]
            if missing:
                raise InputError(f"sigma = {dict(sigma)!r} has no value for observed output '{missing[0]}'")
            df["sigma"] = df["output"].map({k: float(v) for k, v in sigma.items()})
        else:
            df["sigma"] = float(sigma)
        if not np.all(np.isfinite(df["sigma"]) & (df["sigma"] > 0)):
            raise InputError(f"sigma = {sigma!r}: standard deviations must be positive numbers")
    t_data = df["time"].to_numpy(float)
    if t_data.min() < problem.t0:
        raise InputError(f"data has time {t_data.min():g} before the problem's start t0 = {problem.t0:g}")
    times = union_times(problem.times, t_data)
    prob = problem.replace(times=times, t0=problem.t0, of=observed)
    n = prob.n_inputs
    rows = np.array([int(np.argmin(np.abs(times - t))) for t in t_data], dtype=int)
    cols = np.array([observed.index(o) for o in df["output"]], dtype=int)
    target, w = df["value"].to_numpy(float), 1.0 / df["sigma"].to_numpy(float)
    if rows.size < n:
        raise InputError(f"{rows.size} data values cannot determine {n} inputs; give more data or fewer inputs")

    return prob, df, rows, cols, target, w, estimate_sigma


def likelihood(problem: Problem, data, sigma=None, log_params: bool = True, bounds: Mapping | None = None,
               method: str = "auto", jacobian_mode: str = "auto"):
    """The nllh of `problem` against `data` as a `ProblemLikelihood` (see
    `sensitivity.analyses.likelihood`): on theta = ln p (log_params) or p, bounds on the
    natural scale as in `fit`. The data's sigma must be known (an argument or a column)."""
    prob, df, rows, cols, target, w, estimate_sigma = _prepare(problem, data, sigma)
    if estimate_sigma:
        raise InputError("a likelihood needs the data's sigma: give sigma= or a sigma column "
                         "(or profile a fit result, which carries the estimated sigma)")
    ev = _Evaluator(prob, rows, cols, target, w, log_params, jacobian_mode)
    route, _ = _choose_method(prob, method, ev)
    lo, hi = _bounds(prob, bounds, log_params)
    t_lo, t_hi = _theta_bounds(lo, hi, log_params)
    x0 = prob.x0()
    return ProblemLikelihood(ev, prob.input_names, t_lo, t_hi, np.log(x0) if log_params else x0, log_params,
                             route)


def _theta_bounds(lo, hi, log: bool):
    """Bounds (natural scale) on the fitted scale."""
    if not log:
        return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    with np.errstate(divide="ignore"):
        t_lo, t_hi = np.log(np.maximum(lo, 0)), np.log(hi)
    return np.where(lo > 0, t_lo, -np.inf), t_hi


# --------------------------------------------------------------------------- fit
def fit(problem: Problem, data, sigma=None, log_params: bool = True, method: str = "auto", start=None,
        bounds: Mapping | None = None, starts=None, ranges: Mapping | None = None, screen: int | None = None,
        seed: int = 0, max_iter: int = 200, tol: float = 1e-10, jacobian_mode: str = "auto",
        priors: bool = False):
    """Fit the problem's inputs (`wrt`) to observations by least squares / Gaussian NLL.

    data: observations, a table time, output, value[, sigma] (DataFrame, mapping of arrays
    or CSV path) or a wide table time + output columns (see `read_data`). sigma: the data's
    standard deviation, a number, a mapping output -> number, or None (unknown, equal for
    all: SEs then use the residual variance); a sigma column in the data takes precedence.
    log_params: fit ln p (inputs must be positive) and impose bounds on ln p.
    method: "auto" | "least_squares" (TRF with the exact Jacobian) | "trust-ncg" (exact
    gradient and HVPs; trust-constr with bounds). start: the start (mapping or array
    (n_inputs,); default the problem's values). bounds: name -> (low, high), natural scale.
    starts: for a multi-start fit, an int (that many points from a Sobol sequence over
    `ranges`, log-uniform for log parameters, besides `start`) or an array (k, n_inputs) of
    start points; the best local fit wins. screen: with an int `starts`, first evaluate the
    cost at this many Sobol points (default max(32, 8 starts); 0: none) in one vmapped
    `sensitivity.ensemble` and start the local fits from the best `starts` of them.
    seed: of the Sobol scrambling. max_iter, tol: of the local optimiser.
    jacobian_mode: the Jacobian's mode for least squares ("auto": the cost model).
    Returns a `FitResult`; its `likelihood` (the nllh, divided by s^2 when sigma was
    estimated) serves `sensitivity.profile` and `sensitivity.sample`.

    A PEtab problem (`sensitivity.petab.load`) in place of `problem`: data, sigma,
    log_params, method, start, bounds, ranges, screen and jacobian_mode do not apply (the
    problem holds its data, scales and bounds); the fit starts from its nominal values and,
    with an int `starts`, from that many Sobol points within its bounds, on its estimation
    scales, by L-BFGS-B on the exact gradient; priors=True adds its objective priors.
    Returns a `LikelihoodFit`.
    """
    import pandas as pd


    began = time.perf_counter()
    if not isinstance(problem, Problem) and hasattr(problem, "nllh") and hasattr(problem, "x_names"):
        return multistart(PetabLikelihood(problem, priors=priors), starts=starts, seed=seed,
                          max_iter=max(max_iter, 1000), tol=tol)
    prob, df, rows, cols, target, w, estimate_sigma = _prepare(problem, data, sigma)
    names, n = prob.input_names, prob.n_inputs
    times, observed = prob.times, list(prob.of)
    x_start = _vector(prob, start, "start", prob.x0())
    lo, hi = _bounds(prob, bounds, log_params)
    if log_params and np.any(x_start <= 0):
        i = int(np.argmax(x_start <= 0))
        raise InputError(f"start: {names[i]} = {x_start[i]:g}, but log_params=True needs positive inputs; "
                         "give a positive start or log_params=False")
    if np.any(x_start < lo) or np.any(x_start > hi):
        i = int(np.argmax((x_start < lo) | (x_start > hi)))
        raise InputError(f"start: {names[i]} = {x_start[i]:g} lies outside bounds ({lo[i]:g}, {hi[i]:g})")
    points = [x_start]
    screened = None
    if starts is not None:
        if isinstance(starts, (int, np.integer)) and not isinstance(starts, bool):
            if starts < 1:
                raise InputError(f"starts = {starts}: give a positive number of starts")
            n_screen = max(32, 8 * int(starts)) if screen is None else int(screen)
            if n_screen < 0:
                raise InputError(f"screen = {screen}: give a number of points >= 0 (0: no screening)")
            extra = _sample_starts(prob, ranges, max(n_screen, int(starts)), log_params, seed)
            extra = np.clip(np.where(np.isnan(extra), x_start[None, :], extra), lo, hi)
            if n_screen > int(starts):
                screened = _screen(prob, extra, rows, cols, target, w)
                extra = extra[np.argsort(screened, kind="stable")[:int(starts)]]
        else:
            extra = np.asarray(starts, dtype=np.float64)
            if extra.ndim != 2 or extra.shape[1] != n:
                raise InputError(f"starts has shape {extra.shape}; expected (k, {n}) or a number of starts")
        points += list(np.clip(extra, lo, hi))
    ev = _Evaluator(prob, rows, cols, target, w, log_params, jacobian_mode)
    method_run, why = _choose_method(prob, method, ev)
    to_theta = (lambda x: np.log(x)) if log_params else (lambda x: np.asarray(x, dtype=np.float64))
    t_lo, t_hi = _theta_bounds(lo, hi, log_params)

    first = ev.residuals(to_theta(x_start))
    if not np.all(np.isfinite(first)):
        raise SolverError(f"the model cannot be solved at the start {dict(zip(names, x_start))}; "
                          "give another start")
    runs = []
    for k, x0 in enumerate(points):
        theta0 = to_theta(x0)
        if not np.all(np.isfinite(ev.residuals(theta0))):
            runs.append(dict(start=x0, x=x0, cost=np.inf, success=False, message="the start cannot be solved",
                             iterations=0))
            continue
        theta, ok, msg, it = _local_fit(ev, theta0, t_lo, t_hi, method_run, max_iter, tol)
        runs.append(dict(start=x0, x=ev.x(theta), cost=ev.cost(theta), success=ok, message=msg, iterations=it))
    best = min(range(len(runs)), key=lambda k: (runs[k]["cost"], k))
    b = runs[best]
    x_hat = b["x"]
    theta_hat = to_theta(x_hat)

    # at the estimate: the Jacobian, the Fisher information, the trajectory
    jres = ev.jacobian_result(theta_hat)
    r = ev.residuals(theta_hat)
    cost = float(0.5 * r @ r)
    m = r.size
    s_hat = None
    if estimate_sigma:
        s_hat = float(np.sqrt(2 * cost / (m - n))) if m > n else None
    wsum = np.zeros((times.size, len(observed)))
    np.add.at(wsum, (rows, cols), w ** 2)
    sig = np.where(wsum > 0, 1.0 / np.sqrt(np.where(wsum > 0, wsum, 1.0)), np.inf)
    scale = "log" if log_params else "linear"
    fi = _fisher(prob.with_inputs(x_hat), sigma=sig, scale=scale, jacobian=jres)

    se_fit = _ident(fi, max_subset=1).dataset["standard_error"].values * (s_hat or 1.0)
    se_nat = se_fit * x_hat if log_params else se_fit
    with np.errstate(divide="ignore", invalid="ignore"):
        se_log = se_fit if log_params else se_fit / np.abs(x_hat)
    sig_rows = df["sigma"].to_numpy(float) * (s_hat or 1.0)
    nll = float(0.5 * np.sum((r * df["sigma"].to_numpy(float) / sig_rows) ** 2) + np.log(sig_rows).sum()
                + 0.5 * m * np.log(2 * np.pi))
    traj = simulate(prob.with_inputs(x_hat))
    start_traj = simulate(prob.with_inputs(b["start"])).outputs
    path = pd.DataFrame([dict(iterate=i, cost=c, **dict(zip(names, x))) for i, (c, x) in enumerate(ev.path)])
    table = pd.DataFrame([dict(start=k, cost=rn["cost"], success=rn["success"], iterations=rn["iterations"],
                               **{f"start_{nm}": v for nm, v in zip(names, rn["start"])},
                               **{nm: v for nm, v in zip(names, rn["x"])}) for k, rn in enumerate(runs)])
    notes = (why,)
    if screened is not None:
        ok = np.isfinite(screened)
        notes += (f"multi-start: the cost at {screened.size} Sobol points by one vmapped sens.ensemble "
                  f"({int(ok.sum())} solved, best {np.min(screened[ok]) if ok.any() else np.inf:.4g}); local fits "
                  f"from the best {len(points) - 1} and the start, one after another; start {best} won",)
    elif len(points) > 1:
        notes += (f"multi-start: {len(points)} local fits one after another; start {best} won",)
    total_iterations = sum(rn["iterations"] for rn in runs)
    chi2, dof = float(r @ r), m - n
    p_value, quality, good = _quality(chi2, dof, estimate_sigma, bool(b["success"]), b["message"], len(points))
    if not good:
        warnings.warn(f"fit: {quality}", FitWarning, stacklevel=stacklevel())
    return FitResult(
        names, np.asarray(x_hat, dtype=np.float64), np.asarray(b["start"]), se_nat, se_log, fi, cost, nll, s_hat,
        df, r, traj, start_traj, method_run if not (method_run == "trust-ncg" and np.isfinite(np.r_[t_lo, t_hi]).any())
        else "trust-constr", bool(b["success"]) and good, b["message"], int(b["iterations"]),
        dict(ev.counts, iterations_all_starts=total_iterations), path, table, notes,
        {"wall": time.perf_counter() - began, **ev.seconds}, log_params, bool(b["success"]), chi2, dof, p_value,
        quality, ProblemLikelihood(ev, names, t_lo, t_hi, theta_hat, log_params,
                                   "least_squares" if method_run == "least_squares" else "trust-ncg", s_hat or 1.0))


def _quality(chi2: float, dof: int, estimated: bool, converged: bool, message: str,
             n_starts: int) -> tuple[float, str, bool]:
    """(p-value, a sentence on the fit's quality, whether it is a fit) from chi2 = sum r^2
    over dof = n_data - n_inputs degrees of freedom and the optimiser's verdict."""
    from scipy.stats import chi2 as chi2_dist

    ratio = chi2 / dof if dof > 0 else float("nan")
    p = float(chi2_dist.sf(chi2, dof)) if dof > 0 and not estimated else float("nan")
    if estimated:
        head = (f"chi2/dof = 1 by construction (sigma unknown, estimated from the residuals; {dof} degrees "
                "of freedom)")
    elif dof <= 0:
        head = f"chi2 = {chi2:.4g} with no degrees of freedom left (as many inputs as data)"
    else:
        head = f"chi2/dof = {ratio:.3g} ({chi2:.4g} over {dof} degrees of freedom, p = {p:.2g})"
    far = not estimated and dof > 0 and p < FAR_P and ratio > FAR_RATIO
    more = f"try more starts (starts={max(10, 2 * n_starts)}) over wider ranges" if n_starts > 1 else \
        "try starts=10 with ranges= for the inputs"
    if far:
        return p, (f"{head}: the residuals are far beyond the noise (sigma). A local minimum? {more}; "
                   "else sigma is too small or the model does not describe the data."), False
    if not converged:
        return p, (f"{head}; the optimiser did NOT converge ({message}): raise max_iter, loosen tol, or "
                   f"{more}."), False
    return p, f"{head}: the residuals are about the size of the noise." if not estimated and dof > 0 \
        else head + ".", True
