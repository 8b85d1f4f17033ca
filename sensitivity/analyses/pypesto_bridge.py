"""pyPESTO on our derivatives, and our profiles and samples in the tables pyPESTO, pandas
and ArviZ users read (pyPESTO is the optional extra `pypesto`: `pip install
"sensitivity[pypesto]"`).

    problem = sens.petab.load("Boehm_JProteomeRes2014.yaml")
    pp = problem.to_pypesto()             # a pypesto.Problem
    res = pypesto.optimize.minimize(pp, optimizer=pypesto.optimize.FidesOptimizer(), n_starts=20)
    pypesto.profile.parameter_profile(pp, res, optimizer=...)
    pypesto.sample.sample(pp, n_samples=10000, sampler=pypesto.sample.AdaptiveMetropolisSampler())

`to_pypesto` builds the `pypesto.Problem` that pyPESTO's own PEtab importer builds (the
PEtab problem's parameter ids, fixed parameters at their nominal values, bounds and scales
from the parameter table, its objective priors and start-point sampling), with our
objective in place of AMICI's: the value and the exact gradient of the problem's nllh
(`PetabProblem.nllh`, `.gradient`) and, as the Hessian, its Fisher information
(`PetabProblem.fisher`), the approximation least-squares optimisers such as fides use
(pyPESTO's fides then uses its HybridFixed update on it, as with AMICI's objective). The
objective is defined on pyPESTO's full parameter vector (PEtab's x_ids, fixed ones
included); pyPESTO fixes further parameters (as its profiler does) by its own
pre-processing. Parameters fixed in the PEtab table cannot be freed: the objective raises
`InputError` when one of them differs from its nominal value. A failed solve gives
fval = inf and a NaN gradient, as AMICI's objective does. The objective pickles (it is
re-loaded from the problem's YAML with the same solver options), so pyPESTO's
multi-process engines run it.

Exports:
    profiles_frame(profile_result) -> DataFrame, one row per point of every profile
    (a `SampleResult` has its own: `.draws()` (pandas), `.to_arviz()`)
    to_pypesto_result(profile_or_sample_result, problem=None) -> pypesto.Result
                                          (pyPESTO's profile / sampling plots draw it)
    pypesto_samples_to_arviz(pypesto_result, burn_in=None) -> arviz.InferenceData
"""

from __future__ import annotations

import copy
import importlib.util
import math
from functools import lru_cache

import numpy as np

from ..core.errors import InputError
from ..core.lazy import LazyModule
from .likelihood import PetabLikelihood

# the optional extra `pypesto`: imported when first used
pypesto = LazyModule("pypesto")
pypesto_objective = LazyModule("pypesto.objective")
pypesto_petab = LazyModule("pypesto.petab")
pypesto_result = LazyModule("pypesto.result")
az = LazyModule("arviz")


def _need(package: str, extra: str = "pypesto"):
    if importlib.util.find_spec(package) is None:
        raise InputError(f"this needs the optional extra '{extra}' ({package} is missing): "
                         f'pip install "sensitivity[{extra}]"')


# --------------------------------------------------------------------------- the objective
def _init(self, problem, mode: str = "auto", x_ids=None):
    """problem: a `PetabProblem`; x_ids: pyPESTO's full parameter ids (default: PEtab's
    x_ids, fixed ones included); mode: the gradient's ("auto", "forward", "adjoint")."""
    petab = problem.petab
    x_ids = list(petab.x_ids if x_ids is None else x_ids)
    pypesto_objective.ObjectiveBase.__init__(self, x_names=x_ids)
    self.problem, self.mode = problem, mode
    self.likelihood = PetabLikelihood(problem, priors=False, mode=mode)
    names = list(self.likelihood.names)
    missing = [k for k in names if k not in x_ids]
    if missing:
        raise InputError(f"to_pypesto: estimated parameter '{missing[0]}' is not among the ids {x_ids[:5]}...")
    self.dim_full = len(x_ids)
    self.est_index = np.array([x_ids.index(k) for k in names], dtype=int)
    fixed = [i for i, k in enumerate(x_ids) if k not in names]
    nominal = dict(zip(petab.x_ids, petab.x_nominal_scaled))
    self.fixed_index = np.array(fixed, dtype=int)
    self.fixed_values = np.array([nominal[x_ids[i]] for i in fixed], dtype=np.float64)


def _check_fixed(self, x):
    if self.fixed_index.size:
        xf = x[self.fixed_index]
        bad = np.abs(xf - self.fixed_values) > 1e-12 * np.maximum(1.0, np.abs(self.fixed_values))
        if bad.any():
            j = int(np.argmax(bad))
            name = self._x_names[self.fixed_index[j]]
            raise InputError(f"parameter '{name}' is fixed in the PEtab parameter table at "
                             f"{self.fixed_values[j]:g} (on its scale); this objective cannot vary it "
                             f"(got {xf[j]:g}): estimate it in the table instead")


def _call_unprocessed(self, x, sensi_orders, mode, return_dict=False, **kwargs):
    """{fval, grad (dim_full,), hess (dim_full, dim_full)} as requested, at x (dim_full,)."""
    C = pypesto.C
    if mode != C.MODE_FUN:
        raise ValueError(f"this objective offers mode '{C.MODE_FUN}' only (no residuals); got {mode!r}")
    x = np.asarray(x, dtype=np.float64)
    _check_fixed(self, x)
    xe = x[self.est_index]
    lik = self.likelihood
    out = {}
    if 1 in sensi_orders:
        v, g = lik.value_and_grad(xe)
        grad = np.zeros(self.dim_full)
        grad[self.est_index] = g if math.isfinite(v) else np.nan
        out[C.FVAL], out[C.GRAD] = v, grad
    elif 0 in sensi_orders:
        out[C.FVAL] = lik.value(xe)
    if 2 in sensi_orders:
        hess = np.zeros((self.dim_full, self.dim_full))
        try:
            hess[np.ix_(self.est_index, self.est_index)] = lik.hessian(xe)
        except Exception:  # a failed solve: as AMICI's objective, NaN
            hess[np.ix_(self.est_index, self.est_index)] = np.nan
        out[C.HESS] = hess
    return out


def _check_sensi_orders(self, sensi_orders, mode) -> bool:
    return mode == pypesto.C.MODE_FUN and all(o in (0, 1, 2) for o in sensi_orders)


def _check_mode(self, mode) -> bool:
    return mode == pypesto.C.MODE_FUN


def _deepcopy(self, memo):
    """A copy with its own history and pre-processing, sharing the PEtab problem (whose
    compiled programs are shared by every problem of the same files anyway)."""
    other = self.__class__.__new__(self.__class__)
    for key, value in self.__dict__.items():
        if key in ("problem", "likelihood"):
            other.__dict__[key] = value
        else:
            other.__dict__[key] = copy.deepcopy(value, memo)
    return other


def _getstate(self):
    p = self.problem
    state = {k: v for k, v in self.__dict__.items() if k not in ("problem", "likelihood")}
    state["_load"] = (type(p), str(p.path), dict(solver=p.solver, rtol=p.rtol, atol=p.atol, max_steps=p.max_steps))
    return state


def _setstate(self, state):
    cls, path, options = state.pop("_load")
    self.__dict__.update(state)
    self.problem = cls(path, **options)
    self.likelihood = PetabLikelihood(self.problem, priors=False, mode=self.mode)


def _config(self) -> dict:
    info = pypesto_objective.ObjectiveBase.get_config(self)
    p = self.problem
    info.update(problem=str(p.path), solver=p.solver, rtol=p.rtol, atol=p.atol, mode=self.mode,
                hessian="fisher information")
    return info


@lru_cache(maxsize=1)
def _objective_class():
    """`PetabObjective`, a subclass of pyPESTO's ObjectiveBase (made when first needed, so
    that this module imports without pyPESTO)."""
    _need("pypesto")
    cls = type("PetabObjective", (pypesto_objective.ObjectiveBase,), {
        "__doc__": "A PEtab problem's nllh for pyPESTO: value, exact gradient, Fisher information as "
                   "the Hessian, on pyPESTO's full parameter vector (dim_full,).",
        "__module__": __name__,
        "__init__": _init, "call_unprocessed": _call_unprocessed, "check_sensi_orders": _check_sensi_orders,
        "check_mode": _check_mode, "__deepcopy__": _deepcopy, "__getstate__": _getstate,
        "__setstate__": _setstate, "get_config": _config,
    })
    return cls


def __getattr__(name):
    """`PetabObjective` (pickles refer to it by this name)."""
    if name == "PetabObjective":
        return _objective_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def objective(problem, mode: str = "auto"):
    """A pyPESTO objective (`PetabObjective`) of a `PetabProblem`'s nllh, without priors,
    on PEtab's full parameter vector (x_ids, (dim_full,))."""
    return _objective_class()(problem, mode=mode)


def to_pypesto(problem, priors: bool = True, mode: str = "auto", **problem_kwargs):
    """The `pypesto.Problem` of a `PetabProblem` with our objective (see the module).

    priors: add the parameter table's objective priors as pyPESTO's importer does (an
    `AggregatedObjective` of ours and pyPESTO's `NegLogParameterPriors`, also passed as
    `x_priors_defs` for its samplers); mode: how the gradient is computed ("auto",
    "forward", "adjoint"); problem_kwargs: passed to `pypesto.Problem`.
    """
    _need("pypesto")
    if not (hasattr(problem, "petab") and hasattr(problem, "x_names") and hasattr(problem, "fisher")):
        raise InputError(f"to_pypesto needs a PetabProblem (sens.petab.load); got {type(problem).__name__}")
    petab = problem.petab
    obj = objective(problem, mode=mode)
    importer = pypesto_petab.PetabImporter(petab, output_folder=str(problem.path.parent), model_name="unused",
                                           validate_petab=False)
    pp = importer.create_problem(objective=obj, problem_kwargs=problem_kwargs or None)
    if not priors and pp.x_priors is not None:
        pp = pypesto.Problem(obj, lb=pp.lb_full, ub=pp.ub_full, x_fixed_indices=pp.x_fixed_indices,
                             x_fixed_vals=pp.x_fixed_vals, x_names=pp.x_names, x_scales=pp.x_scales,
                             startpoint_method=pp.startpoint_method, **problem_kwargs)
    free = [pp.x_names[i] for i in pp.x_free_indices]
    if free != list(problem.x_names):
        raise InputError(f"to_pypesto: pyPESTO's free parameters {free} differ from the problem's {list(problem.x_names)}")
    return pp


# --------------------------------------------------------------------------- exports
def profiles_frame(result):
    """Every profile of a `ProfileResult` as one table: one row per point, sorted by
    parameter and value; columns parameter, value (the profiled parameter on its
    estimation scale), delta_nllh (profile nllh - best), ratio = exp(-delta_nllh) (pyPESTO's
    likelihood ratio), inside (below the threshold), then every parameter along the path."""
    import pandas as pd

    frames = []
    for name, p in result.profiles.items():
        df = pd.DataFrame(np.asarray(p["path"]), columns=list(result.names))
        df.insert(0, "parameter", name)
        df.insert(1, "value", np.asarray(p["grid"], dtype=np.float64))
        df.insert(2, "delta_nllh", np.asarray(p["delta"], dtype=np.float64))
        df.insert(3, "ratio", np.exp(-df["delta_nllh"]))
        df.insert(4, "inside", df["delta_nllh"] <= result.threshold)
        frames.append(df.sort_values("value"))
    if not frames:
        return pd.DataFrame(columns=["parameter", "value", "delta_nllh", "ratio", "inside", *result.names])
    return pd.concat(frames, ignore_index=True)


def _full_vector(names, values, problem):
    """values (n,) of `names` as pyPESTO's full vector (dim_full,) of `problem` (fixed ones
    at their fixed values); `problem` None: as given."""
    if problem is None:
        return np.asarray(values, dtype=np.float64), list(names)
    x = np.full(problem.dim_full, np.nan)
    x[problem.x_fixed_indices] = problem.x_fixed_vals
    for k, v in zip(names, values):
        x[problem.x_names.index(k)] = v
    return x, list(problem.x_names)


def to_pypesto_result(result, problem=None):
    """A `pypesto.Result` of a `ProfileResult` (its optimize_result holds the estimate,
    its profile_result one `ProfilerResult` per parameter, None for parameters not
    profiled) or a `SampleResult` (sample_result: a `McmcPtResult`, chains as pyPESTO's
    trace (chains, draws, n), burn-in 0: the draws are after warm-up). `problem`: the
    `pypesto.Problem` (e.g. `to_pypesto()`), whose full parameter vector the traces then
    use; without it, the estimated parameters only."""
    _need("pypesto")
    R = pypesto_result
    if hasattr(result, "profiles"):
        x_hat, ids = _full_vector(result.names, result.x, problem)
        opt = R.OptimizerResult(id="0", x=x_hat, fval=float(result.nllh), n_fval=0, n_grad=0,
                                exitflag=0, message="the estimate the profiles start from")
        out = R.Result(problem=problem)
        out.optimize_result.append(opt)
        plist = []
        for k in ids:
            p = result.profiles.get(k)
            if p is None:
                plist.append(None)
                continue
            X = np.stack([_full_vector(result.names, row, problem)[0] for row in np.asarray(p["path"])], axis=1)
            fval = float(result.nllh) + np.asarray(p["delta"], dtype=np.float64)
            plist.append(R.ProfilerResult(x_path=X, fval_path=fval, ratio_path=np.exp(-(fval - result.nllh)),
                                          time_total=float(result.timings.get("wall", 0.0)),
                                          message=p["verdict"]))
        out.profile_result.append_empty_profile_list()
        out.profile_result.list[-1] = plist
        return out
    if hasattr(result, "samples"):
        c, d, n = result.samples.shape
        if problem is not None:
            full = np.stack([_full_vector(result.names, s, problem)[0] for s in result.samples.reshape(-1, n)])
            trace = full.reshape(c, d, -1)
        else:
            trace = np.asarray(result.samples)
        lp = np.asarray(result.log_posterior, dtype=np.float64)
        sample = R.McmcPtResult(trace_x=trace, trace_neglogpost=-lp, trace_neglogprior=np.full(lp.shape, np.nan),
                                betas=np.ones(c), burn_in=0, time=float(result.timings.get("wall", 0.0)),
                                message=f"{result.method}: {c} independent chains (not tempered)")
        out = R.Result(problem=problem)
        out.sample_result = sample
        return out
    raise InputError(f"to_pypesto_result takes a ProfileResult or a SampleResult; got {type(result).__name__}")


def pypesto_samples_to_arviz(results, names=None, burn_in=None):
    """An `arviz.InferenceData` of pyPESTO sampling: `results` a `pypesto.Result` or a list
    of them (one chain each: independent runs); each result's chain at inverse temperature 1
    (trace_x[0]) after its burn-in (`burn_in`, or the result's own, or 0), the free
    parameters only (`names`: their ids, default the problem's free x_names)."""
    _need("arviz", "sample")
    results = list(results) if isinstance(results, (list, tuple)) else [results]
    chains, lps = [], []
    for r in results:
        s = r.sample_result
        b = burn_in if burn_in is not None else (s.burn_in or 0)
        X = np.asarray(s.trace_x)[0, b:]
        if r.problem is not None and X.shape[1] == r.problem.dim_full:
            X = X[:, r.problem.x_free_indices]
        chains.append(X)
        lps.append(-np.asarray(s.trace_neglogpost)[0, b:])
    m = min(len(x) for x in chains)
    X = np.stack([x[:m] for x in chains])
    if names is None:
        p = results[0].problem
        names = [p.x_names[i] for i in p.x_free_indices] if p is not None else [f"x{i}" for i in range(X.shape[2])]
    return az.from_dict(posterior={k: X[:, :, i] for i, k in enumerate(names)},
                        sample_stats={"lp": np.stack([lp[:m] for lp in lps])})
