"""Fisher information and local identifiability of the inputs, from the exact Jacobian.

For outputs y(t_k) observed with independent Gaussian errors of standard deviation
sigma_k, the Fisher information of the inputs p is

    F = J^T Sigma^-1 J = sum_k w_k J_k^T J_k,   J_k = d y(t_k) / d p,   w_k = 1 / sigma_k^2,

on the log scale (d y / d ln p = J diag(p), the default: relative changes, unit-free) or
the linear one. `fisher` computes it from `sensitivity.jacobian` (forward or adjoint, as the
cost model decides). `identifiability` reads it:

- the eigen-decomposition F = V diag(lambda) V^T: eigenvectors with small eigenvalues are
  "sloppy" directions, combinations of inputs the data barely constrain; an eigenvalue
  below `eig_rtol * lambda_max` marks a direction as not identifiable, and it is named by
  the inputs it combines (e.g. "+0.71 ln k +0.71 ln V");
- Cramer-Rao standard errors sqrt(diag F^-1) (infinite for an input that loads on a
  non-identifiable direction) and the correlations of the estimates;
- the collinearity index of every subset K of inputs up to `max_subset` inputs (Brun,
  Reichert & Kuensch, Water Resour. Res. 37(4), 1015-1030, 2001):
  gamma_K = 1 / sqrt(lambda_min(S_K^T S_K)), S_K the weighted sensitivity columns of K
  scaled to unit length, i.e. the correlation-normalised block F_KK / sqrt(F_ii F_jj).
  gamma_K > threshold (Brun et al. suggest 10-15) means a change of the inputs in K can be
  compensated by the others in K to within 1/gamma of the output's change: K is not
  identifiable together. The index does not depend on the inputs' scale (log or linear).

Results are labelled (xarray) with `.to_frame()` and `.plot()`. Only diagonal Sigma
(independent errors) is supported.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..ad.forward import weighted_gram
from ..api import jacobian as _jacobian
from ..core.checks import numbers
from ..core.data import read_data
from ..core.errors import InputError
from ..core.problem import Problem
from ..core.results import JacobianResult
from ..plots.analyses import identifiability_figure

SCALES = ("log", "linear")
MAX_SUBSETS = 200_000  # subsets whose collinearity index is computed, at most


# --------------------------------------------------------------------------- weights
def weights(problem: Problem, sigma, name: str = "sigma") -> np.ndarray:
    """1 / sigma^2 at every save time and output, shape (n_times, n_of); 0 where sigma is
    inf (an output not observed at that time).

    sigma: a positive number (every output), a mapping output name -> positive number
    (every output of `problem.of` named), or an array of shape (n_of,) or (n_times, n_of)
    of positive numbers or inf.
    """
    n_times, of = problem.times.size, problem.of
    if isinstance(sigma, Mapping):
        missing = [o for o in of if o not in sigma]
        extra = [k for k in sigma if k not in of]
        if missing or extra:
            raise InputError(f"{name} = {dict(sigma)!r}: give one standard deviation per output; "
                             + (f"missing: {missing}" if missing else f"not an output: {extra}")
                             + f"; outputs: {list(of)}")
        s = np.array([sigma[o] for o in of], dtype=np.float64)
    else:
        try:
            s = np.asarray(sigma, dtype=np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{name} = {sigma!r} is not a number, a mapping output -> number or an "
                             "array") from None
    if s.ndim == 1 and s.shape != (len(of),):
        raise InputError(f"{name} has shape {s.shape}; expected ({len(of)},): one per output {list(of)}")
    if s.ndim == 2 and s.shape != (n_times, len(of)):
        raise InputError(f"{name} has shape {s.shape}; expected ({n_times}, {len(of)}) (n_times, n_of)")
    if s.ndim > 2:
        raise InputError(f"{name} has shape {s.shape}; expected a number, (n_of,) or (n_times, n_of)")
    s = np.broadcast_to(s, (n_times, len(of)))
    if np.any(np.isnan(s)) or np.any(s <= 0):
        bad = s[np.isnan(s) | (s <= 0)].ravel()[0]
        raise InputError(f"{name} contains {bad!r}: standard deviations must be positive numbers "
                         "(inf for an unobserved output)")
    w = np.where(np.isinf(s), 0.0, 1.0 / np.where(np.isinf(s), 1.0, s) ** 2)
    if not np.any(w > 0):
        raise InputError(f"{name}: every standard deviation is inf, nothing is observed")
    return w


def _check_scale(scale: str) -> str:
    if scale not in SCALES:
        raise InputError(f"scale = '{scale}' is unknown; valid: {', '.join(SCALES)}")
    return scale


def scaled_jacobian(jac: JacobianResult, scale: str) -> np.ndarray:
    """The Jacobian (n_times, n_of, n_inputs) on the chosen input scale: d y / d ln p =
    J diag(p) for "log" (every input must be nonzero), J itself for "linear"."""
    if _check_scale(scale) == "linear":
        return np.asarray(jac.values)
    x = np.asarray(jac.input_values)
    zero = [n for n, v in zip(jac.input_names, x) if v == 0]
    if zero:
        raise InputError(f"scale = 'log' needs nonzero inputs, but {zero[0]} = 0; use scale='linear' "
                         "or leave that input out of wrt")
    return np.asarray(jac.values) * x[None, None, :]


# --------------------------------------------------------------------------- Fisher
@dataclass(frozen=True)
class Fisher:
    """The Fisher information of the inputs.

    matrix: (n_inputs, n_inputs), F = sum_{t,o} w[t,o] J[t,o]^T J[t,o] on `scale`;
    weights: (n_times, n_of), 1 / sigma^2 (0 where unobserved; with data, the sum over the
    data's values at that time and output); jacobian: the `JacobianResult` it came from (its
    mode and plan say how it was computed); n_data: the number of data values (replicates
    counted) when the information is that of a data table, else None.
    """

    matrix: np.ndarray
    input_names: tuple[str, ...]
    input_values: np.ndarray
    scale: str
    weights: np.ndarray
    jacobian: JacobianResult | None
    n_data: int | None = None

    @property
    def mode(self) -> str:
        """How the matrix was computed: the Jacobian's mode, or "given" for a matrix passed in."""
        return self.jacobian.mode if self.jacobian is not None else "given"

    @property
    def n_observations(self) -> int:
        """The number of observed scalar outputs: the data's values when computed from data,
        else the times x outputs with finite sigma."""
        return int(self.n_data) if self.n_data is not None else int(np.count_nonzero(self.weights))

    def covariance(self) -> np.ndarray:
        """The Cramer-Rao bound F^-1 (n_inputs, n_inputs) on `scale` (pseudo-inverse when F
        is singular: use `identifiability` to see which inputs that concerns)."""
        return np.linalg.pinv(self.matrix, hermitian=True)

    def to_xarray(self):
        """The matrix as an `xarray.DataArray` with dims (input, input_2)."""
        import xarray as xr

        names = list(self.input_names)
        return xr.DataArray(self.matrix, dims=("input", "input_2"), coords={"input": names, "input_2": names},
                            name="fisher", attrs={"scale": self.scale, "mode": self.mode,
                                                  "n_observations": self.n_observations,
                                                  "long_name": f"Fisher information ({self.scale} inputs)"})

    def to_frame(self):
        """The matrix as a pandas DataFrame, inputs as index and columns."""
        return self.to_xarray().to_pandas()

    def identifiability(self, **options) -> "Identifiability":
        """`identifiability(self, **options)`."""
        return identifiability(self, **options)

    def plot(self, path=None):
        """The eigen-spectrum and correlation matrix (see `Identifiability.plot`)."""
        return identifiability(self, max_subset=1).plot(path)


def data_weights(problem: Problem, data, sigma=1.0, of: Sequence[str] | None = None):
    """What a data table observes: (the problem on the data's sampling times (sorted, unique)
    with the measured outputs (those of `of` only, when given) as `of`, weights (n_times,
    n_of): the sum of 1 / sigma^2 over the data's values at that time and output, 0 where
    nothing is measured, and the number of data values counted (replicates included)).

    data: as `core.data.read_data` reads it (long: time, output, value[, sigma]; wide:
    time plus one column per output; a DataFrame, a mapping of arrays or a CSV path).
    sigma: each value's standard deviation where the data has no sigma column: a number or
    a mapping output -> number."""
    valid = tuple(problem.model.observables) + tuple(s for s in problem.model.states
                                                     if s not in problem.model.observables)
    df = read_data(data, valid)
    if of is not None:
        keep = [of] if isinstance(of, str) else list(of)
        unknown = [o for o in keep if o not in valid]
        if unknown:
            raise InputError(f"of names '{unknown[0]}', which is no output of model '{problem.model.id}'")
        df = df[df["output"].isin(keep)]
        if df.empty:
            raise InputError(f"data measures none of the outputs of = {keep}")
    if "sigma" in df.columns:
        s = df["sigma"].to_numpy(float)
    elif isinstance(sigma, Mapping):
        missing = [o for o in dict.fromkeys(df["output"]) if o not in sigma]
        if missing:
            raise InputError(f"sigma = {dict(sigma)!r} has no value for measured output '{missing[0]}'")
        s = df["output"].map({k: float(v) for k, v in sigma.items()}).to_numpy(float)
    else:
        try:
            value = float(sigma)
        except (TypeError, ValueError):
            raise InputError(f"sigma = {sigma!r}: with data, give a number, a mapping output -> number or a "
                             "sigma column in the data") from None
        s = np.full(len(df), value)
    if not np.all(np.isfinite(s) & (s > 0)):
        raise InputError(f"sigma = {sigma!r}: standard deviations must be positive numbers")
    t = df["time"].to_numpy(float)
    if t.min() < problem.t0:
        raise InputError(f"data has time {t.min():g} before the problem's start t0 = {problem.t0:g}")
    outputs = [o for o in problem.of if o in set(df["output"])] + \
        [o for o in dict.fromkeys(df["output"]) if o not in problem.of]
    times = np.unique(t)
    w = np.zeros((times.size, len(outputs)))
    np.add.at(w, (np.searchsorted(times, t), [outputs.index(o) for o in df["output"]]), 1.0 / s ** 2)
    return problem.replace(times=times, t0=problem.t0, of=outputs), w, len(df)


def fisher(problem: Problem, sigma=1.0, of: Sequence[str] | None = None, scale: str = "log",
           mode: str = "auto", jacobian: JacobianResult | None = None, data=None, **plan_options) -> Fisher:
    """The Fisher information F = J^T Sigma^-1 J of the problem's inputs, shape (n_inputs, n_inputs).

    sigma: the outputs' standard deviations, a number, a mapping output -> number, or an
    array (n_of,) or (n_times, n_of) (inf: not observed). of: the observed outputs (default
    the problem's). scale: "log" (d y / d ln p, relative changes) or "linear". mode: how the
    Jacobian is computed, "auto" (the cost model) | "forward" | "adjoint"; or pass a
    computed `jacobian` of this problem.
    data: a data table (see `data_weights`): then only its values count, each once, at its
    sampling times and outputs (the problem's save times and `of` play no part; a sigma
    column in the data takes precedence over `sigma`, a number or a mapping here); a given
    `jacobian` must be at the data's times and outputs.
    """
    _check_scale(scale)
    n_data = None
    if data is not None:
        problem, w, n_data = data_weights(problem, data, sigma, of)
    else:
        if of is not None:
            problem = problem.replace(of=list([of] if isinstance(of, str) else of))
        w = weights(problem, sigma)
    if jacobian is None:
        jacobian = _jacobian(problem, mode=mode, **plan_options)
    elif tuple(jacobian.output_names) != problem.of or jacobian.values.shape[0] != problem.times.size:
        raise InputError(f"jacobian has outputs {list(jacobian.output_names)} at {jacobian.values.shape[0]} "
                         f"times; the problem has {list(problem.of)} at {problem.times.size}")
    S = scaled_jacobian(jacobian, scale)
    F = weighted_gram(np.asarray(S), np.asarray(w))  # J^T W J, as PetabProblem.fisher's
    F = 0.5 * (F + F.T)
    numbers.check_matrix(F, jacobian.input_names, f"Fisher information ({scale} scale)", psd=True,
                         input_values=None if scale == "log" else jacobian.input_values,
                         check="sensitivity.check_gradient(problem, inputs=[{inputs}]) (the Jacobian's columns "
                               "against central differences)")
    return Fisher(F, tuple(jacobian.input_names), np.asarray(jacobian.input_values), scale, w, jacobian, n_data)


# --------------------------------------------------------------------------- reading it
def _petab_fisher(problem, x) -> Fisher:
    """The Fisher information of a PEtab problem's estimated parameters at x (default the
    nominal values), on their estimation scales (log10, log or lin per parameter)."""
    x = np.asarray(problem.x_nominal if x is None else x, dtype=np.float64)
    F = np.asarray(problem.fisher(x))
    return Fisher(F, tuple(problem.x_names), x, "estimation", np.ones(len(problem.measurements)), None)


def _given_fisher(matrix, names, x, scale: str) -> Fisher:
    """A Fisher matrix passed in, checked: square, symmetric, finite, one name per row."""
    F = np.asarray(matrix, dtype=np.float64)
    if F.ndim != 2 or F.shape[0] != F.shape[1] or F.shape[0] == 0:
        raise InputError(f"a Fisher matrix must be square (n, n), got shape {F.shape}")
    n = F.shape[0]
    if not np.isfinite(F).all():
        raise InputError("the Fisher matrix has non-finite entries")
    if not np.allclose(F, F.T, rtol=1e-8, atol=1e-12 * max(np.abs(F).max(), 1e-300)):
        raise InputError("the Fisher matrix is not symmetric")
    names = tuple(names) if names is not None else tuple(f"x{i}" for i in range(n))
    if len(names) != n:
        raise InputError(f"names has {len(names)} entries for a {n} x {n} Fisher matrix")
    values = np.full(n, np.nan) if x is None else np.asarray(x, dtype=np.float64).reshape(n)
    return Fisher(0.5 * (F + F.T), names, values, _check_scale(scale), np.ones(1), None)


def describe_direction(vector: np.ndarray, names: Sequence[str], scale: str = "log", cutoff: float = 0.1) -> str:
    """An eigenvector as a readable combination of inputs, largest components first, e.g.
    "+0.71 ln k +0.70 ln V" (components below `cutoff` in size are left out)."""
    v = np.asarray(vector, dtype=np.float64)
    i_max = int(np.argmax(np.abs(v)))
    v = v * np.sign(v[i_max] or 1.0)
    order = [i for i in np.argsort(-np.abs(v), kind="stable") if abs(v[i]) >= cutoff] or [i_max]
    fmt = (lambda n: f"ln {n}") if scale == "log" else (lambda n: n)
    return " ".join(f"{v[i]:+.2f} {fmt(names[i])}" for i in order)


def collinearity_indices(matrix: np.ndarray, max_subset: int = 3) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Collinearity index gamma_K = 1 / sqrt(lambda_min(C_KK)) of every subset K of 2 to
    `max_subset` inputs, C = F / sqrt(diag F diag F^T) the correlation-normalised Fisher
    matrix (Brun et al. 2001). Returns (subsets as index tuples, gamma (n_subsets,)); inf
    where K holds an input without any influence or is exactly collinear."""
    F = np.asarray(matrix, dtype=np.float64)
    n = F.shape[0]
    d = np.sqrt(np.clip(np.diag(F), 0.0, None))
    dead = d == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        C = F / np.outer(np.where(dead, 1.0, d), np.where(dead, 1.0, d))
    subsets: list[tuple[int, ...]] = []
    gammas: list[np.ndarray] = []
    for k in range(2, min(max_subset, n) + 1):
        combos = np.array(list(itertools.combinations(range(n), k)), dtype=int)
        if combos.size == 0:
            continue
        blocks = C[combos[:, :, None], combos[:, None, :]]
        lam = np.linalg.eigvalsh(blocks)[:, 0]
        # rounding leaves ~1e-16 where the columns are exactly collinear: that is gamma ~ 1e8
        with np.errstate(divide="ignore"):
            g = np.where(lam > 0, 1.0 / np.sqrt(np.clip(lam, 1e-300, None)), np.inf)
        g[dead[combos].any(axis=1)] = np.inf
        subsets.extend(tuple(int(i) for i in c) for c in combos)
        gammas.append(g)
    return subsets, (np.concatenate(gammas) if gammas else np.zeros(0))


def _minimal(subsets: list[tuple[int, ...]], flagged: np.ndarray) -> list[tuple[int, ...]]:
    """The flagged subsets that contain no smaller flagged subset."""
    keep: list[tuple[int, ...]] = []
    for s, f in sorted(zip(subsets, flagged), key=lambda sf: len(sf[0])):
        if f and not any(set(k) <= set(s) for k in keep):
            keep.append(s)
    return keep


@dataclass(frozen=True)
class Identifiability:
    """What the Fisher information says about which inputs the observations determine.

    dataset: an `xarray.Dataset` with
        eigenvalue (direction), eigenvector (input, direction), sloppy (direction, bool),
        direction_label (direction): the eigen-decomposition, smallest eigenvalue first;
        standard_error (input): Cramer-Rao, on `scale` (for "log", about the relative error),
        relative_standard_error (input), importance (input): sqrt(F_ii / n_obs), Brun's
        delta_msqr, the root mean square weighted sensitivity;
        correlation (input, input_2): of the estimates;
        collinearity (subset), subset_size (subset): Brun's index per subset.
    non_identifiable: the minimal subsets (input names) whose collinearity index exceeds
    `threshold`; sloppy_directions: labels of the directions with eigenvalue below
    `eig_rtol * lambda_max`; insensitive: inputs the outputs do not depend on at all.
    """

    dataset: object
    fisher: Fisher
    threshold: float
    eig_rtol: float
    non_identifiable: tuple[tuple[str, ...], ...]
    sloppy_directions: tuple[str, ...]
    insensitive: tuple[str, ...]

    @property
    def identifiable(self) -> bool:
        """True when no direction is sloppy and no subset is collinear beyond the threshold."""
        return not (self.non_identifiable or self.sloppy_directions or self.insensitive)

    def summary(self) -> str:
        """A few lines: the verdict, the flagged combinations and directions."""
        ds = self.dataset
        lam = ds["eigenvalue"].values
        lines = [f"{len(self.fisher.input_names)} inputs, {self.fisher.n_observations} observations, "
                 f"Fisher information on the {self.fisher.scale} scale; eigenvalues from {lam[0]:.3g} to "
                 f"{lam[-1]:.3g} (condition number {_ratio(lam[-1], lam[0])})."]
        if self.identifiable:
            lines.append(f"Locally identifiable: no eigenvalue below {self.eig_rtol:g} x the largest, "
                         f"no subset with collinearity index above {self.threshold:g}.")
        for name in self.insensitive:
            lines.append(f"Not identifiable: the outputs do not depend on {name}.")
        for label in self.sloppy_directions:
            lines.append(f"Not identifiable: the direction {label} (eigenvalue ~ 0).")
        subs = ds["collinearity"]
        for s in self.non_identifiable:
            g = float(subs.sel(subset=",".join(s)))
            lines.append(f"Not identifiable together: {{{', '.join(s)}}}, collinearity index "
                         f"{'inf' if not np.isfinite(g) else f'{g:.3g}'} > {self.threshold:g}.")
        return "\n".join(lines)

    def to_frame(self, what: str = "inputs"):
        """A pandas DataFrame: "inputs" (standard errors, importance, per input), "subsets"
        (collinearity index per subset, largest first), "eigen" (eigenvalues and vectors),
        or "correlation" (the correlation matrix)."""
        ds = self.dataset
        if what == "inputs":
            return ds[["input_value", "standard_error", "relative_standard_error", "importance"]].to_dataframe()
        if what == "subsets":
            df = ds[["subset_size", "collinearity"]].to_dataframe()
            df["identifiable"] = df["collinearity"] <= self.threshold
            return df.sort_values("collinearity", ascending=False)
        if what == "eigen":
            df = ds["eigenvector"].to_pandas().T
            df.insert(0, "sloppy", ds["sloppy"].values)
            df.insert(0, "eigenvalue", ds["eigenvalue"].values)
            df.insert(0, "label", ds["direction_label"].values)
            return df
        if what == "correlation":
            return ds["correlation"].to_pandas()
        raise InputError(f"what = '{what}' is unknown; valid: inputs, subsets, eigen, correlation")

    def plot(self, path=None, title: str = ""):
        """The eigen-spectrum (eigenvalues relative to the largest, sloppy ones labelled with
        their inputs) beside the correlation matrix of the estimates. Returns the matplotlib
        Figure; writes a PNG when `path` is given."""
        return identifiability_figure(self, path, title)


def _ratio(big: float, small: float) -> str:
    return "inf" if small <= 0 or not np.isfinite(big / small) else f"{big / small:.3g}"


def identifiability(problem_or_fisher, sigma=1.0, of: Sequence[str] | None = None, scale: str = "log",
                    max_subset: int = 3, threshold: float = 15.0, eig_rtol: float = 1e-8,
                    mode: str = "auto", names: Sequence[str] | None = None, x=None, data=None,
                    **plan_options) -> Identifiability:
    """Local identifiability of the inputs of a `Problem`, of the estimated parameters of a
    PEtab problem (its Fisher information at x, default the nominal values, on the
    parameters' estimation scales), of a computed `Fisher`, or of a Fisher matrix (n, n)
    given with its input `names` (and values `x`) on `scale`.

    sigma, of, scale, mode, data: as for `fisher` (with data, a `Problem`'s information is
    that of the data's values at their sampling times only). max_subset: the largest subsets whose
    collinearity index is computed (every subset of 2..max_subset inputs; their number
    grows like n^max_subset, at most 200,000). threshold: the collinearity index above which
    a subset is flagged (Brun et al. 2001 suggest 10-15). eig_rtol: an eigenvalue below
    eig_rtol * the largest marks a non-identifiable direction.
    Returns an `Identifiability` (dataset, summary(), to_frame(), plot()).
    """
    import xarray as xr

    if not (isinstance(max_subset, (int, np.integer)) and max_subset >= 1):
        raise InputError(f"max_subset = {max_subset!r} must be a whole number >= 1 (2 or 3 is usual)")
    if not (isinstance(threshold, (int, float)) and threshold > 1):
        raise InputError(f"threshold = {threshold!r} must be a number > 1 (Brun et al. suggest 10-15)")
    if not (isinstance(eig_rtol, (int, float)) and 0 < eig_rtol < 1):
        raise InputError(f"eig_rtol = {eig_rtol!r} must lie in (0, 1), e.g. 1e-8")
    if data is not None and not isinstance(problem_or_fisher, Problem):
        raise InputError(f"data is for a Problem; a {type(problem_or_fisher).__name__} carries its "
                         "observations already")
    if isinstance(problem_or_fisher, Fisher):
        fi = problem_or_fisher
    elif isinstance(problem_or_fisher, Problem):
        fi = fisher(problem_or_fisher, sigma, of=of, scale=scale, mode=mode, data=data, **plan_options)
    elif callable(getattr(problem_or_fisher, "fisher", None)) and hasattr(problem_or_fisher, "x_names"):
        fi = _petab_fisher(problem_or_fisher, x)
    elif isinstance(problem_or_fisher, (np.ndarray, list, tuple)):
        fi = _given_fisher(problem_or_fisher, names, x, scale)
    else:
        raise InputError("identifiability needs a Problem, a PEtab problem, a Fisher or a Fisher matrix "
                         f"(n, n), got {type(problem_or_fisher).__name__}")
    names, F, n = list(fi.input_names), fi.matrix, len(fi.input_names)
    n_sub = sum(math.comb(n, k) for k in range(2, min(max_subset, n) + 1))
    if n_sub > MAX_SUBSETS:
        raise InputError(f"max_subset = {max_subset} gives {n_sub} subsets of {n} inputs (at most "
                         f"{MAX_SUBSETS}); lower max_subset or name fewer inputs in wrt")

    lam, V = np.linalg.eigh(F)
    lam_max = max(float(lam[-1]), 0.0)
    null = lam <= eig_rtol * lam_max if lam_max > 0 else np.ones(n, bool)
    labels = [describe_direction(V[:, k], names, fi.scale) for k in range(n)]
    # Cramer-Rao on the identifiable subspace; inf for inputs that load on a null direction
    inv = np.where(null, 0.0, 1.0 / np.where(null, 1.0, lam))
    se = np.sqrt((V ** 2) @ inv)
    se[(V[:, null] ** 2).sum(axis=1) > 1e-6] = np.inf
    # correlations with null eigenvalues raised to eig_rtol * lambda_max: the singular limit
    floor = eig_rtol * lam_max if lam_max > 0 else 1.0
    cov = (V / np.maximum(lam, floor)) @ V.T
    sd = np.sqrt(np.diag(cov))
    corr = np.clip(cov / np.outer(sd, sd), -1.0, 1.0)
    x = np.asarray(fi.input_values)
    with np.errstate(divide="ignore", invalid="ignore"):
        rse = se if fi.scale in ("log", "estimation") else se / np.abs(x)
    importance = np.sqrt(np.clip(np.diag(F), 0, None) / max(fi.n_observations, 1))
    insensitive = tuple(nm for nm, f in zip(names, np.diag(F)) if f <= 0)

    subsets, gamma = collinearity_indices(F, max_subset)
    flagged = ~(gamma <= threshold)
    minimal = tuple(tuple(names[i] for i in s) for s in _minimal(subsets, flagged))
    minimal = tuple(s for s in minimal if not any(nm in insensitive for nm in s))
    sloppy = tuple(lb for lb, z in zip(labels, null) if z)

    direction = np.arange(n)
    ds = xr.Dataset(
        {
            "eigenvalue": ("direction", lam, {"long_name": f"eigenvalue of the Fisher information ({fi.scale} inputs)"}),
            "eigenvector": (("input", "direction"), V, {"long_name": "unit eigenvector (columns)"}),
            "sloppy": ("direction", null, {"long_name": f"eigenvalue <= {eig_rtol:g} x the largest"}),
            "direction_label": ("direction", np.array(labels, dtype=object)),
            "input_value": ("input", x),
            "standard_error": ("input", se, {"long_name": f"Cramer-Rao standard error ({fi.scale} scale)"}),
            "relative_standard_error": ("input", rse, {"long_name": "standard error / |value|"}),
            "importance": ("input", importance, {"long_name": "delta_msqr = sqrt(F_ii / n_observations)"}),
            "correlation": (("input", "input_2"), corr, {"long_name": "correlation of the estimates"}),
            "collinearity": ("subset", gamma, {"long_name": "collinearity index (Brun et al. 2001)",
                                               "threshold": threshold}),
            "subset_size": ("subset", np.array([len(s) for s in subsets], dtype=int)),
        },
        coords={"input": names, "input_2": names, "direction": direction,
                "subset": [",".join(names[i] for i in s) for s in subsets]},
        attrs={"scale": fi.scale, "n_observations": fi.n_observations, "jacobian_mode": fi.mode,
               "eig_rtol": eig_rtol, "threshold": threshold},
    )
    return Identifiability(ds, fi, float(threshold), float(eig_rtol), minimal, sloppy, insensitive)
