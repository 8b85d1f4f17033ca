"""Derivatives checked against central differences, on request: `check_gradient`.

    chk = sens.check_gradient(problem, objective)            # the gradient, every input
    chk = sens.check_gradient(problem, objective, inputs=["tau"], jacobian=True)
    chk = sens.check_gradient(petab_problem)                 # the PEtab nllh gradient
    print(chk)            # the summary and the table
    chk.ok, chk.table     # all agree?; a pandas DataFrame, one row per input (and check)

Central differences D(h) = (f(x + h e_i) - f(x - h e_i)) / 2h, extrapolated (Richardson:
(4 D(h/2) - D(h)) / 3, exact to O(h^4), which matters at an optimum where the derivative is
small beside the curvature), with a relative step h = step * |x_i| (step itself where
x_i = 0, and for a PEtab parameter on a log scale), the solves at tighter tolerances than the
problem's (`fd_tol`, default 1/100 of them, at least 1e-12) so that the solver's own error,
~tol / h, stays below the comparison's tolerance. A component agrees when

    |ours - fd| <= rtol * max(|fd|, 1e-3 * the largest |fd_j x_j| / |x_i|)

(a component a thousand times smaller than the largest, in a log-scale sense, is judged
against that floor: its central difference holds little more than the solver's noise).
With jacobian=True, the forward-mode Jacobian's column of each input is compared with the
central differences of the outputs the same way, its largest deviation against the
column's largest entry.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .. import api
from ..core.errors import InputError, did_you_mean, list_names
from ..core.problem import Problem
from ..integrate.solve import simulate

FLOOR = 1e-3  # components below this x the largest (scaled) are judged against this floor


@dataclass(frozen=True)
class GradientCheck:
    """The toolkit's derivatives beside central differences.

    table: a pandas DataFrame, one row per checked input (and check: "gradient" or
    "jacobian"), with columns check, input, value (the input's value), ours,
    finite_difference, abs_error, relative_error, ok; ok: every row agrees; step, rtol,
    fd_tol: the settings used; what: the objective checked.
    """

    table: object
    step: float
    rtol: float
    fd_tol: float
    what: str

    @property
    def ok(self) -> bool:
        """True when every checked component agrees with its central difference."""
        return bool(self.table["ok"].all())

    @property
    def failed(self) -> list[str]:
        """The inputs whose derivative does not agree (in table order, each once)."""
        return list(dict.fromkeys(self.table.loc[~self.table["ok"], "input"]))

    def to_frame(self):
        """The table (pandas DataFrame)."""
        return self.table

    def summary(self) -> str:
        """One line for the verdict, one per input that disagrees."""
        t = self.table
        n, bad = len(t), t[~t["ok"]]
        checks = " and ".join(dict.fromkeys(t["check"]))
        head = (f"check_gradient ({self.what}): {checks} of {t['input'].nunique()} inputs against central "
                f"differences (Richardson-extrapolated, relative step {self.step:g}, solves at rtol = atol = "
                f"{self.fd_tol:g}): ")
        if bad.empty:
            return head + f"all {n} agree to rtol {self.rtol:g} (worst relative error " \
                          f"{t['relative_error'].max():.2g})."
        lines = [head + f"{len(bad)} of {n} DISAGREE (rtol {self.rtol:g}):"]
        for _, row in bad.iterrows():
            lines.append(f"  {row['check']} {row['input']}: ours {row['ours']:.6g}, central differences "
                         f"{row['finite_difference']:.6g} (relative error {row['relative_error']:.2g})")
        lines.append("  A derivative that disagrees while the central differences are steady (try another "
                     "step) is wrong: look for a switch or discontinuity that depends on that input.")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary() + "\n" + self.table.to_string(index=False)

    def __repr__(self) -> str:
        return self.summary()


def _steps(x: np.ndarray, step: float) -> np.ndarray:
    return np.where(x != 0, step * np.abs(x), step)


def _richardson(f, h: float):
    """(4 D(h/2) - D(h)) / 3 of f(+-step) -> value (a number or an array), D the central
    difference."""
    d1 = (f(h) - f(-h)) / (2 * h)
    d2 = (f(h / 2) - f(-h / 2)) / h
    return (4 * d2 - d1) / 3


def _errors(ours: np.ndarray, fd: np.ndarray, x: np.ndarray, rtol: float) -> tuple[np.ndarray, np.ndarray]:
    """(relative errors, ok flags) per component, against the floor of the module docstring."""
    s = np.where((x != 0) & np.isfinite(x), np.abs(x), 1.0)
    floor = FLOOR * np.max(np.abs(fd) * s, initial=0.0) / s
    denom = np.maximum(np.abs(fd), floor)
    err = np.abs(ours - fd)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(denom > 0, err / np.where(denom > 0, denom, 1.0), np.where(err > 0, np.inf, 0.0))
    rel = np.where(np.isfinite(ours) & np.isfinite(fd), rel, np.inf)
    return rel, rel <= rtol


def _selected(names: Sequence[str], inputs) -> list[int]:
    names = list(names)
    if inputs is None:
        return list(range(len(names)))
    inputs = [inputs] if isinstance(inputs, str) else list(inputs)
    unknown = [k for k in inputs if k not in names]
    if unknown:
        raise InputError(f"check_gradient: inputs: '{unknown[0]}' is not an input{did_you_mean(unknown[0], names)}; "
                         f"inputs: {list_names(names)}")
    return [names.index(k) for k in inputs]


def _check_settings(step: float, rtol: float) -> None:
    if not (isinstance(step, (int, float)) and 0 < step < 1):
        raise InputError(f"check_gradient: step = {step!r} must lie in (0, 1), e.g. 1e-4 (relative to the input)")
    if not (isinstance(rtol, (int, float)) and rtol > 0):
        raise InputError(f"check_gradient: rtol = {rtol!r} must be a positive number, e.g. 1e-3")


def check_gradient(problem, objective: Callable | None = None, inputs: Sequence[str] | None = None,
                   step: float = 1e-4, rtol: float = 1e-3, mode: str = "auto", jacobian: bool = False,
                   fd_tol: float | None = None) -> GradientCheck:
    """Compare the toolkit's derivatives with central differences at the problem's inputs.

    problem: a `Problem` (its inputs `wrt` at their current values; use
    `problem.with_inputs(x)` for another point) or a PEtab problem (`sens.petab.load`: its
    nllh gradient at the nominal parameters, on the parameter scale). objective: as for
    `sensitivity.gradient`, objective(ys) -> scalar, ys of shape (n_times, n_outputs); None
    for a Problem checks the forward Jacobian only. inputs: names to check (default all).
    step: the relative step of the differences. rtol: the agreement asked for. mode: the
    gradient's mode ("auto" | "forward" | "adjoint"). jacobian: also check the forward-mode
    Jacobian, column by column. fd_tol: rtol = atol of the finite-difference solves
    (default the problem's / 100, at least 1e-12).
    Returns a `GradientCheck` (table, ok, failed, summary()).
    """
    import pandas as pd

    _check_settings(step, rtol)
    if not isinstance(problem, Problem):
        if all(hasattr(problem, a) for a in ("x_names", "x_nominal", "nllh", "gradient")):
            return _check_petab(problem, inputs, step, rtol, mode, fd_tol)
        raise InputError(f"check_gradient needs a Problem or a PEtab problem, got {type(problem).__name__}")
    if objective is None and not jacobian:
        jacobian = True
    idx = _selected(problem.input_names, inputs)
    x = problem.x0()
    tol = fd_tol or max(min(problem.rtol, problem.atol) / 100, 1e-12)
    fine = problem.replace(rtol=tol, atol=tol)
    h = _steps(x, step)
    names = problem.input_names
    rows = []

    outs = {}

    def outputs(i, d):
        if (i, d) not in outs:
            xp = x.copy()
            xp[i] += d
            outs[i, d] = np.asarray(simulate(fine.with_inputs(xp)).outputs)
        return outs[i, d]

    if objective is not None:
        g = api.gradient(problem, objective, mode=mode)
        fd = np.array([_richardson(lambda d: float(objective(outputs(i, d))), h[i]) for i in idx])
        ours = np.asarray(g.grad)[idx]
        rel, ok = _errors(ours, fd, x[idx], rtol)
        rows += [dict(check="gradient", input=names[i], value=x[i], ours=o, finite_difference=f,
                      abs_error=abs(o - f), relative_error=r, ok=bool(k))
                 for i, o, f, r, k in zip(idx, ours, fd, rel, ok)]
    if jacobian:
        J = np.asarray(api.jacobian(problem, mode="forward").values)
        for i in idx:
            col = _richardson(lambda d: outputs(i, d), h[i])
            ours_col = J[:, :, i]
            err = np.abs(ours_col - col)
            k = np.unravel_index(int(np.argmax(err)), err.shape)
            scale = float(np.max(np.abs(col)))
            r = float(err[k] / scale) if scale > 0 else (0.0 if err[k] == 0 else np.inf)
            r = r if np.all(np.isfinite(ours_col)) else np.inf
            rows.append(dict(check="jacobian", input=names[i], value=x[i], ours=float(ours_col[k]),
                             finite_difference=float(col[k]), abs_error=float(err[k]), relative_error=r,
                             ok=bool(r <= rtol)))
    what = "the forward Jacobian" if objective is None else getattr(objective, "__name__", None) or repr(objective)
    return GradientCheck(pd.DataFrame(rows), float(step), float(rtol), float(tol), what)


def _check_petab(prob, inputs, step, rtol, mode, fd_tol) -> GradientCheck:
    """check_gradient of a PEtab problem's nllh at its nominal parameters."""
    import pandas as pd

    idx = _selected(prob.x_names, inputs)
    x = np.asarray(prob.x_nominal, dtype=np.float64)
    tol = fd_tol or max(min(prob.rtol, prob.atol) / 100, 1e-12)
    fine = copy.copy(prob)  # tolerances are arguments of its compiled functions: nothing recompiles
    fine.rtol = fine.atol = tol
    g = prob.gradient(x, mode=mode)
    lin = np.asarray(prob.scales) == "lin"
    h = np.where(lin, _steps(x, step), step)  # a log-scale parameter's step is relative already

    def nllh(i, d):
        xp = x.copy()
        xp[i] += d
        return fine.nllh(xp)

    fd = np.array([_richardson(lambda d: nllh(i, d), h[i]) for i in idx])
    ours = np.asarray(g.grad)[idx]
    values = np.where(lin[idx], x[idx], 1.0)
    rel, ok = _errors(ours, fd, values, rtol)
    rows = [dict(check="gradient", input=prob.x_names[i], value=x[i], ours=o, finite_difference=f,
                 abs_error=abs(o - f), relative_error=r, ok=bool(k))
            for i, o, f, r, k in zip(idx, ours, fd, rel, ok)]
    return GradientCheck(pd.DataFrame(rows), float(step), float(rtol), float(tol), f"PEtab nllh, {g.mode} mode")
