"""The guard on the numbers a user reads: a gradient, Jacobian, Hessian (-vector product)
or Fisher matrix that is non-finite or absurd against its own scale warns.

A derivative that went wrong (a switching time whose jump the solver did not see, a solve
at far too loose tolerances) rarely comes out as NaN: it comes out as 1e43 beside
components of order one. These checks compare each input's component with the others:

- `check_vector(values, names, what)`: a gradient or a Hessian-vector product, shape
  (n_inputs,);
- `check_jacobian(values, names, what, outputs=...)`: shape (n_times, n_outputs, n_inputs),
  each output on its own scale;
- `check_matrix(matrix, names, what, psd=...)`: a Hessian or Fisher matrix, shape
  (n_inputs, n_inputs); with psd=True (a Fisher matrix) also negative eigenvalues far
  beyond rounding.

An input's magnitude is |component| x |input value| when `input_values` are given and the
value is nonzero (a log-scale sensitivity: d f / d p differs with the units of p, p df/dp
does not), else |component|. A magnitude beyond `RATIO` x the median of the nonzero
magnitudes, or beyond `ABSURD` outright, or a non-finite component raises a
`NumericalWarning` that names the inputs and suggests the check: central differences at
those inputs (`sensitivity.check_gradient`) and tighter tolerances. Each returns the names
of the flagged inputs (empty when all is well). NumPy only: no JAX here.
"""

from __future__ import annotations

import math
import sys
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import NumericalWarning

RATIO = 1e10  # a component this many times the median magnitude of the others is absurd
ABSURD = 1e100  # a scaled magnitude beyond this is absurd whatever the others are
NEGATIVE_EIGENVALUE = 1e-8  # a PSD matrix's eigenvalue below -this x the largest is not rounding
_PACKAGE = str(Path(__file__).resolve().parents[2])


def stacklevel() -> int:
    """The warning's stack level: the first frame outside the package (the user's call)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def _scaled(magnitude: np.ndarray, input_values) -> np.ndarray:
    """|component| x |value| where the value is nonzero and finite, per input (last axis)."""
    if input_values is None:
        return magnitude
    x = np.abs(np.asarray(input_values, dtype=np.float64))
    x = np.where(np.isfinite(x) & (x > 0), x, 1.0)
    return magnitude * x


def _plainly_sound(m: np.ndarray, ratio: float) -> bool:
    """True when no magnitude of m (..., n) can be flagged: all finite, none beyond ABSURD,
    along the last axis the largest within ratio x the smallest nonzero one (which is at most
    the median). The usual case, decided in a few microseconds."""
    top = m.max(axis=-1, initial=0.0)
    smallest = np.where(m > 0, m, np.inf).min(axis=-1)
    return bool(np.all(top <= ABSURD) and np.all(top <= ratio * smallest))


def _outliers(m: np.ndarray, ratio: float) -> tuple[np.ndarray, float]:
    """(flags of the magnitudes (n,) beyond ratio x the median of the nonzero ones or beyond
    ABSURD, that median)."""
    nonzero = m[(m > 0) & np.isfinite(m)]
    median = float(np.median(nonzero)) if nonzero.size else 0.0
    flags = m > ABSURD
    if nonzero.size >= 3:  # with two components, neither is "the others"
        flags |= m > ratio * median
    return flags, median


def _beyond_own(m: np.ndarray, scale, ratio: float) -> np.ndarray:
    """Flags of m (..., n) beyond ratio x |scale| (broadcast against m's leading axes; all
    True where the scale is 0, non-finite or not given)."""
    if scale is None:
        return np.ones(m.shape, bool)
    s = np.abs(np.asarray(scale, dtype=np.float64))
    s = s.reshape(s.shape + (1,) * (m.ndim - s.ndim))
    return np.where(np.isfinite(s) & (s > 0), m > ratio * s, True)


def _names(names: Sequence[str], flags: np.ndarray, limit: int = 6) -> list[str]:
    return [str(n) for n, f in zip(names, flags) if f][:limit]


def _warn(what: str, problem: str, flagged: list[str], check: str | None) -> None:
    quoted = ", ".join(repr(n) for n in flagged)
    how = (check or "sensitivity.check_gradient(problem, objective, inputs=[{inputs}])").format(inputs=quoted)
    warnings.warn(
        f"{what}: {problem}. This is very likely wrong, not a property of the model. Check it: {how} "
        "compares it with central differences; solve with tighter tolerances (rtol, atol), and look for "
        "a discontinuity (a switch in time, a dose or event time) that depends on "
        f"{'that input' if len(flagged) == 1 else 'those inputs'}.",
        NumericalWarning, stacklevel=stacklevel())


def _describe(names, values, flags, median, scaled: bool) -> str:
    parts = [f"{n} = {v:.3g}" for n, v, f in zip(names, values, flags) if f][:6]
    of = "scaled by the input's value, " if scaled else ""
    return (f"{'component' if len(parts) == 1 else 'components'} {', '.join(parts)}, beyond "
            f"{RATIO:.0e} x the median magnitude ({of}{median:.3g})")


def check_vector(values, names: Sequence[str], what: str = "gradient", input_values=None,
                 check: str | None = None, ratio: float = RATIO, value: float | None = None) -> list[str]:
    """Warn when a vector over the inputs (n_inputs,) (a gradient, an HVP) is non-finite
    or absurd against its own scale; returns the flagged input names. value: the function
    whose gradient it is, at the point: when nonzero, a component must also exceed ratio x
    |value| (scaled, d f / d ln p beyond 1e10 |f|) to be absurd."""
    g = np.asarray(values, dtype=np.float64).reshape(-1)
    if _plainly_sound(_scaled(np.abs(g), input_values), ratio):
        return []
    names = list(names)
    bad = ~np.isfinite(g)
    if bad.any():
        flagged = _names(names, bad)
        _warn(what, f"non-finite {'component' if bad.sum() == 1 else 'components'} for "
              f"{', '.join(flagged)}", flagged, check)
        return flagged
    m = _scaled(np.abs(g), input_values)
    flags, median = _outliers(m, ratio)
    flags &= _beyond_own(m, value, ratio)
    if not flags.any():
        return []
    flagged = _names(names, flags)
    own = f" and {ratio:.0e} x the value {abs(value):.3g} itself" if value else ""
    _warn(what, _describe(names, g, flags, median, input_values is not None) + own, flagged, check)
    return flagged


def check_jacobian(values, names: Sequence[str], what: str = "Jacobian", outputs: Sequence[str] = (),
                   input_values=None, check: str | None = None, ratio: float = RATIO,
                   output_values=None) -> list[str]:
    """Warn when a Jacobian (n_times, n_outputs, n_inputs) is non-finite or absurd: per
    output, each input's largest |d output / d input| over time against the other inputs'.
    output_values: the outputs (n_times, n_outputs): when an output is not all zero, an
    entry must also exceed ratio x its largest |value| (scaled: d y / d ln p beyond 1e10
    max |y|) to be absurd. Returns the flagged input names."""
    J = np.asarray(values, dtype=np.float64)
    J = J.reshape((-1, 1, J.shape[-1])) if J.ndim < 3 else J
    # the largest |entry| over time, (n_outputs, n_inputs), NaN propagated; over contiguous rows
    # (a reduction along the first axis of a (n_times, few) array is several times slower)
    peak = np.abs(J.reshape(J.shape[0], -1).T).copy().max(axis=1, initial=0.0).reshape(J.shape[1:])
    peak = _scaled(peak, input_values)
    if _plainly_sound(peak, ratio):
        return []
    names = list(names)
    outputs = list(outputs) or [f"output {k}" for k in range(J.shape[1])]
    finite = np.isfinite(J)
    if not finite.all():
        flags = ~finite.all(axis=(0, 1))
        flagged = _names(names, flags)
        o = int(np.argmax(~finite.all(axis=(0, 2))))
        _warn(what, f"non-finite values for {', '.join(flagged)} (first in output {outputs[o]})", flagged, check)
        return flagged
    flags = np.zeros(J.shape[-1], bool)
    where = []
    for o in range(peak.shape[0]):
        f, median = _outliers(peak[o], ratio)
        if output_values is not None:
            f &= _beyond_own(peak[o], np.max(np.abs(np.asarray(output_values)[:, o])), ratio)
        if f.any() and not where:
            where = [outputs[o], median]
        flags |= f
    if not flags.any():
        return []
    flagged = _names(names, flags)
    top = [f"{n} = {v:.3g}" for n, v, f in zip(names, np.abs(J).max(axis=(0, 1)), flags) if f][:6]
    _warn(what, f"the largest |d y / d input| of {', '.join(top)} lies beyond {RATIO:.0e} x the median "
          f"magnitude of the inputs' (for output {where[0]}: {where[1]:.3g})", flagged, check)
    return flagged


def check_matrix(matrix, names: Sequence[str], what: str = "Fisher information", psd: bool = True,
                 input_values=None, check: str | None = None, ratio: float = RATIO,
                 scale: float | None = None) -> list[str]:
    """Warn when a symmetric matrix over the inputs (n_inputs, n_inputs) (a Hessian; a
    Fisher matrix with psd=True) is non-finite or absurd: each input's scale sqrt(|M_ii| x_i^2)
    (psd) or sqrt(max_j |M_ij x_i x_j|) against the others'; with psd=True also an eigenvalue below
    -NEGATIVE_EIGENVALUE x the largest. scale: the matrix's own size in a gradient's units (for a
    PEtab Fisher matrix sqrt(number of measurements): sqrt F_ii of a log-scale noise parameter
    is sqrt(2 x its rows)); when given and nonzero, an input's scale must also exceed ratio x it
    to be absurd. Far from the data most inputs can have a sensitivity at rounding level, which
    puts the median there and any input that still matters beyond it. Returns the flagged
    input names."""
    M = np.asarray(matrix, dtype=np.float64)
    names = list(names)
    if M.size == 0:
        return []
    if psd and np.all(np.isfinite(M)):
        s = _scaled(np.ones(M.shape[0]), input_values)
        if _plainly_sound(np.sqrt(np.abs(np.diag(M))) * s, ratio) and np.all(np.diag(M) >= 0) and \
                _no_negative_eigenvalue(M):
            return []
    finite = np.isfinite(M)
    if not finite.all():
        flagged = _names(names, ~finite.all(axis=1))
        _warn(what, f"non-finite entries for {', '.join(flagged)}", flagged, check)
        return flagged
    s = _scaled(np.ones(M.shape[0]), input_values)
    scaled = np.abs(M) * np.outer(s, s)
    # in a gradient's units: sqrt F_ii (a Fisher matrix's diagonal bounds the rest), else the
    # largest entry of the row
    size = np.sqrt(np.diag(scaled) if psd else np.max(scaled, axis=1))
    flags, median = _outliers(size, ratio)
    flags &= _beyond_own(size, scale, ratio)
    if flags.any():
        flagged = _names(names, flags)
        diag = [f"{n}: {v:.3g}" for n, v, f in zip(names, np.diag(M), flags) if f][:6]
        own = f" and {ratio:.0e} x the matrix's own scale {abs(scale):.3g}" if scale else ""
        _warn(what, f"the diagonal entries {', '.join(diag)} lie far beyond the others' scale "
              f"(in a gradient's units, median {median:.3g}){own}", flagged, check)
        return flagged
    if psd and M.shape[0] > 1 and not _no_negative_eigenvalue(M):
        lam, V = np.linalg.eigh(0.5 * (M + M.T))
        if lam[0] < -NEGATIVE_EIGENVALUE * max(lam[-1], 0.0):
            flagged = _names(names, np.abs(V[:, 0]) >= 0.3 * np.abs(V[:, 0]).max())
            _warn(what, f"an eigenvalue {lam[0]:.3g} against the largest {lam[-1]:.3g}: a Fisher matrix has "
                  f"none below 0 beyond rounding; its direction loads on {', '.join(flagged)}", flagged, check)
            return flagged
    return []


def _no_negative_eigenvalue(M: np.ndarray) -> bool:
    """True when the symmetric M (n, n) has no eigenvalue below -NEGATIVE_EIGENVALUE x its
    largest, as far as a Cholesky factorisation of M + margin x I can tell (cheaper than
    eigh; margin from the largest diagonal entry, a lower bound of the largest eigenvalue):
    True is sure, False may be rounding and is decided by the eigenvalues."""
    if M.shape[0] < 2:
        return True
    margin = NEGATIVE_EIGENVALUE * max(float(np.max(np.diag(M))), 0.0)
    try:
        np.linalg.cholesky(0.5 * (M + M.T) + margin * np.eye(M.shape[0]))
        return True
    except np.linalg.LinAlgError:
        return False


_PETAB_CHECK = "sensitivity.check_gradient(petab_problem, inputs=[{inputs}])"


def check_petab(problem, x, gradient=None, fisher=None, mode: str = "", value: float | None = None) -> list[str]:
    """The guard on a PEtab problem's nllh gradient (n_estimated,) (value: the nllh) or
    Fisher matrix (n_estimated, n_estimated) at x (on the parameter scales): linear-scale
    parameters are weighed by their value, log-scale ones as they are. `problem` has
    x_names and scales, and `measurements` (a table, one row per measurement) when the
    Fisher matrix is to be weighed against its own scale: sqrt F_ii x_i is the change of the
    simulations in noise sigmas per e-fold of the parameter, summed in squares over the rows,
    so a sound one beyond 1e10 x sqrt(rows) is unheard of."""
    x = np.asarray(x, dtype=np.float64)
    lin = np.asarray(problem.scales) == "lin"
    values = np.where(lin, x, 1.0) if lin.any() else None
    if gradient is not None:
        return check_vector(gradient, problem.x_names, f"PEtab nllh gradient{f' ({mode} mode)' if mode else ''}",
                            values, check=_PETAB_CHECK, value=value)
    rows = getattr(problem, "measurements", None)
    return check_matrix(fisher, problem.x_names, "PEtab Fisher information", psd=True, input_values=values,
                        check=_PETAB_CHECK, scale=None if rows is None else math.sqrt(max(len(rows), 1)))
