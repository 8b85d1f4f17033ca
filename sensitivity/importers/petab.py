"""PEtab problems: `load("problem.yaml") -> PetabProblem` with nllh, gradient, Fisher, simulate.

    prob = sens.petab.load("Boehm_JProteomeRes2014.yaml")
    prob.nllh()                 # at the nominal values; x on the parameter scale, (n_estimated,)
    g = prob.gradient(x)        # g.value, g.grad (n_estimated,), g.mode ("forward" | "adjoint")
    prob.fisher(x)              # (n_estimated, n_estimated)
    prob.simulate(x)            # PEtab simulation table (pandas)

The tables are read and validated by the `petab` package. What is supported: simulation
conditions overriding parameters, species and compartments (numbers or parameter ids),
also where the model defines them by an assignment rule or an initial assignment (the
condition's value replaces the definition; an empty cell keeps it);
preequilibration (run to steady state: simulate until max_i |f_i| / (atol + rtol |y_i|) < 1,
then one Newton step with its matrix held constant, so that derivatives are the implicit
function theorem's, conservation laws included: `steady_state.py`); measurements with
`observableParameters` and `noiseParameters` (numbers or parameter ids, per row, so
time-point-specific); observable and noise formulas; normal and Laplace noise; lin / log /
log10 observable transformations; parameters on lin / log / log10 scale, fixed or
estimated, with bounds; steady-state measurements (`time = inf`: simulated on from the last
finite time to a steady state, observables evaluated with t = 0); objective priors
(`nllh(x, priors=True)`, `prior(x)`; off by default, as in the reference likelihoods); SBML
events (`petab_events`: time events cut the solve at their times, state events by root
finding; in preequilibration and runs to steady state too: `integrate.sbml_events`); mapping tables
(PEtab ids as aliases of model entities); a parameter-table entry for a parameter that
events change (a state) sets its initial value; PEtab 2.0 problems (`format_version:
2.0.0`), converted into PEtab 1 tables by `petab_v2` (experiments with start times t0 and
periods: later periods become SBML time events). Not: several models (InputError).

The default solver is the lean Rodas5P loop of `solvers/lean_rodas.py` (a Rosenbrock method in one
`lax.while_loop`, exact forward tangents by a custom JVP per step, reverse mode through a
checkpointed loop); `solver="kvaerno5"` etc. run diffrax's solvers (the text below on
batching and Newton constants is about those).

Every experiment (a pair preequilibration + simulation condition) of one problem runs
through one compiled function: `lax.map` runs the experiments' solves one after another
(those with and those without preequilibration form two groups), each with its own step
sizes. Vmapping them in lockstep, with the forward tangents vmapped inside, can speed up
the simulation and the adjoint but slows the forward gradient (`benchmarks/petab_solver.py`
compares both; `batch = "vmap"` switches). One batching
for every function: a vmapped solve takes other steps (other kernels, other rounding), and
nllh, the forward and the adjoint gradient must differentiate the same discrete solve. Each
experiment's solve (preequilibration, segments, events, runs to steady state) is
`integrate.segments.experiment_function`; this module translates the tables into its
parameter vectors, initial states and save times. Piecewise inputs of time are exact: the
solve is cut into segments at their switching times (`SBMLModel.breakpoints`), and the
derivatives with respect to a switching time come through the flow at the segment bounds
(`integrate.bounds`), with every solver.

A second process skips the tracing: the compiled functions go through the store of traced
programs (`stores/programs.py`: `jax.export`, keyed by the problem's structure, the argument
shapes and the toolkit's and JAX's versions; JAX's persistent cache then skips XLA's
compile), and `load` of a problem whose files (the YAML and every file it names, byte for
byte) a process before has read takes the arrays the calls need from the problem's record
in that store: the tables and the SBML model are read, and the petab package and sympy
imported, only when something else is asked for (`.model`, `.petab`, `simulate`, a function
not yet stored). `benchmarks/petab_overhead.py` times a warm process against the bare import
of jax and diffrax, and each call against the compiled program it runs.

The negative log-likelihood per measurement, with h the transformation, s = h(simulation),
z = h(measurement), sigma the noise formula's value (on the transformed scale):
    normal   0.5 log(2 pi sigma^2) + 0.5 ((s - z) / sigma)^2
    laplace  log(2 sigma) + |s - z| / sigma
plus log(m) for `log` and log(m ln 10) for `log10` (the change of variables).
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from ..ad import modes
from ..ad.cost import Calibration, make_plan, stored_calibration
from ..ad.forward import push, weighted_gram
from ..core import compile_watch
from ..core.checks import numbers
from ..core.errors import InputError, SolverError
from ..core.lazy import LazyModule
from ..core.solvers import LEAN_RODAS, PETAB_SOLVERS
from ..integrate import compiled as compiled_programs
from ..integrate import segments
from ..solvers import lean_rodas as petab_rodas
from ..stores import programs as export_store

# SBML reading and sympy only where a problem's files are read (a problem made from its
# stored record does not read them)
petab_events = LazyModule("sensitivity.importers.petab_events")
petab_v2 = LazyModule("sensitivity.importers.petab_v2")  # PEtab 2.0 problems as PEtab 1 tables
petab_rows = LazyModule("sensitivity.importers.petab_rows")
sbml_import = LazyModule("sensitivity.importers.sbml")

SCALES = ("lin", "log", "log10")
TRANSFORMS = ("lin", "log", "log10")
NOISES = ("normal", "laplace")


@dataclass(frozen=True)
class PetabGradient:
    """nllh value, its gradient on the parameter scale (n_estimated,), the mode that ran,
    the cost model's plan (for mode="auto") and timings in seconds (compile apart)."""

    value: float
    grad: np.ndarray
    names: tuple
    mode: str
    plan: object
    timings: dict


def _scale(v, scale):
    if scale == "lin":
        return v
    with np.errstate(divide="ignore"):  # a bound of 0 on a log scale is -inf
        return np.log(v) if scale == "log" else np.log10(v)


def _parse_refs(value, pids: dict, what: str) -> tuple[int, float]:
    """A table entry -> (index into theta or -1, constant)."""
    if isinstance(value, (int, float, np.integer, np.floating)):
        return -1, float(value)
    s = str(value).strip()
    try:
        return -1, float(s)
    except ValueError:
        pass
    if s not in pids:
        raise InputError(f"{what} = '{s}' is neither a number nor a parameter of the parameter table")
    return pids[s], 0.0


def load(yaml_path: str | Path, **options) -> "PetabProblem":
    """Read and validate a PEtab problem (a YAML file listing the tables and the SBML model).

    options: solver ("rodas5p": the lean Rosenbrock loop of solvers/lean_rodas.py; "rodas4"; or a
    diffrax solver: "kvaerno5", ...), rtol, atol (1e-8), max_steps (100000), validate (True).
    Raises `InputError` for a missing or invalid problem, `ModelError` for SBML it cannot read.
    """
    return PetabProblem(yaml_path, **options)


class PetabProblem:
    """A PEtab parameter-estimation problem: data, noise models and the SBML model.

    Attributes: `x_names` (estimated parameter ids), `x_nominal` (their nominal values on
    their scales), `lower`, `upper` (bounds on the scales), `scales`, `model` (the
    `SBMLModel`), `petab` (the `petab.v1.Problem`).
    """

    def __init__(self, yaml_path, solver: str = "rodas5p", rtol: float = 1e-8, atol: float = 1e-8,
                 max_steps: int = 100_000, validate: bool = True):
        path = Path(yaml_path)
        self.path = path
        if not path.is_file():
            raise InputError(f"petab: problem file '{yaml_path}' not found")
        if solver not in PETAB_SOLVERS:
            raise InputError(f"solver = '{solver}' is unknown; valid: {', '.join(PETAB_SOLVERS)}")
        for name, tol in (("rtol", rtol), ("atol", atol)):
            if not (isinstance(tol, (int, float)) and tol > 0):
                raise InputError(f"{name} = {tol!r} must be a positive number, e.g. 1e-8")
        try:
            import yaml
            spec = yaml.safe_load(path.read_text()) or {}
            version = str(spec.get("format_version", "1"))
        except Exception as exc:
            raise InputError(f"petab: cannot read '{yaml_path}': {exc}") from None
        if not version.startswith(("1", "2")):
            raise InputError(f"petab: '{yaml_path}' has format_version {version}; this importer reads "
                             "PEtab 1 and 2.0 problems (format_version: 1 or 2.0.0)")
        self.format_version = 2 if version.startswith("2") else 1
        self.solver, self.rtol, self.atol, self.max_steps = solver, float(rtol), float(atol), int(max_steps)
        # how the solve saves and batches (see _simulate_fn, integrate.segments); part of the structure
        self.batch, self.pid = "map", (0.3, 0.3)
        self.save = None  # "step" (steps land on the save times) or "dense"; None: by the data (_save)
        self.scan_stages = None  # the lean loop's stages as a lax.scan; None: by model size (_scan)
        self.newton_kappa = _NEWTON_KAPPA
        self._validate, self._light = bool(validate), False
        # a problem whose files a process before this one read: its record in the store of
        # traced programs holds what the calls need, and the tables, the SBML model and
        # the petab package are read only when something else is asked for (`__getattr__`)
        key = _load_key(path, spec, self._validate)
        record = export_store.load_record(key) if key else None
        if record is not None and _restore(self, record):
            self._light = True
            return
        self._parse()
        if key:
            export_store.save_record(key, _record(self))

    def __getattr__(self, name):
        """Called only for an attribute not set: on a problem made from its stored record,
        the tables and the model (`petab`, `model`, ...) are read now."""
        state = self.__dict__
        if not state.get("_light") or name not in state.get("_parsed", ()):  # e.g. hasattr probes
            raise AttributeError(f"'PetabProblem' object has no attribute '{name}'")
        state["_light"] = False
        self._parse()
        return getattr(self, name)

    def _parse(self):
        """Read and validate the tables and the SBML model, and set up the arrays the
        compiled functions are traced with."""
        import petab.v1 as pv1
        path, yaml_path, validate = self.path, self.path, self._validate
        self._period_events, self._v2_priors = (), ()
        if self.format_version == 2:  # PEtab 2.0: converted to PEtab 1 tables (petab_v2.py)
            converted = petab_v2.read(path, validate)
            self.petab, self.petab_v2 = converted.problem, converted.original
            self._period_events, self._v2_priors = converted.period_events, converted.priors
            self.model = sbml_import.from_string(converted.problem.model.to_sbml_str(), source=str(path),
                                                 folder=path.parent)
            self._finish_parse(path, converted.problem)
            return
        try:
            with warnings.catch_warnings():  # pandas deprecations inside the petab package
                warnings.simplefilter("ignore")
                problem = pv1.Problem.from_yaml(str(path))
        except Exception as exc:  # the petab package raises many types
            raise InputError(f"petab: cannot read '{yaml_path}': {exc}") from None
        if validate:
            messages: list[str] = []

            class _Collect(logging.Handler):
                def emit(self, record):
                    if record.levelno >= logging.ERROR and record.getMessage() != "Not OK":
                        messages.append(record.getMessage())

            log = logging.getLogger("petab")
            handler, level, propagate = _Collect(), log.level, log.propagate
            log.addHandler(handler)
            log.propagate = False
            try:
                bad = pv1.lint_problem(problem)
            finally:
                log.removeHandler(handler)
                log.setLevel(level)
                log.propagate = propagate
            if bad:
                if not messages:  # an invalid SBML model: petab's linter logs nothing above INFO
                    messages = _sbml_errors(problem)
                detail = "; ".join(messages[:3]) or "run `petablint` on it for the list of errors"
                raise InputError(f"petab: '{yaml_path}' is not a valid PEtab problem: {detail}")
        self.petab = problem
        model_path = self._model_path()
        self.model = _read_model(model_path, problem)
        self._finish_parse(path, problem)

    def _finish_parse(self, path, problem):
        self._setup()
        petab_events.check(self)
        self._fingerprint = _fingerprint(path, problem)
        n_t = sum(int(g["ts"].size) for g in self._groups)
        n_exp = sum(len(g["members"]) for g in self._groups)
        n_states = self.model.n_states if hasattr(self.model, "n_states") else len(self.model.states) * n_exp
        # (the states of all conditions' solves, save times, the states of one condition's model)
        self._plan_shape = (int(n_states), n_t, len(self.model.states))
        # the most save times of one experiment (`_save`)
        self._most_saves = max((len(np.unique(row[np.isfinite(row)])) for g in self._groups
                                for row in np.asarray(g["ts"])), default=0)

    # ------------------------------------------------------------------ setup
    def _model_path(self) -> Path:
        import yaml
        spec = yaml.safe_load(self.path.read_text())
        probs = spec.get("problems") or []
        files = probs[0].get("sbml_files") or probs[0].get("model_files") if probs else None
        if isinstance(files, dict):
            files = [v.get("location") for v in files.values()]
        if not files or len(files) != 1:
            raise InputError(f"petab: '{self.path}' must name exactly one SBML model file")
        return (self.path.parent / files[0]).resolve()

    def _setup(self):  # noqa: C901
        import petab.v1 as pv1
        P = self.petab
        m = self.model
        pdf = P.parameter_df
        self.theta_names = tuple(pdf.index)
        pids = {k: i for i, k in enumerate(self.theta_names)}
        scales = [str(s) for s in pdf[pv1.PARAMETER_SCALE]]
        for k, s in zip(self.theta_names, scales):
            if s not in SCALES:
                raise InputError(f"parameter '{k}': parameterScale = '{s}'; valid: {', '.join(SCALES)}")
        est = np.asarray(pdf[pv1.ESTIMATE], dtype=int) == 1
        self.theta_nominal = np.asarray(pdf[pv1.NOMINAL_VALUE], dtype=np.float64)
        self.est_index = np.flatnonzero(est)
        self.x_names = tuple(self.theta_names[i] for i in self.est_index)
        self.scales = tuple(scales[i] for i in self.est_index)
        self._scale_code = np.array([SCALES.index(s) for s in self.scales], dtype=int)
        self.x_nominal = np.array([_scale(self.theta_nominal[i], scales[i]) for i in self.est_index])
        self.lower = np.array([_scale(float(pdf[pv1.LOWER_BOUND].iloc[i]), scales[i]) for i in self.est_index])
        self.upper = np.array([_scale(float(pdf[pv1.UPPER_BOUND].iloc[i]), scales[i]) for i in self.est_index])
        self.priors = _priors(pdf, self.est_index, self.x_names)

        cdf = P.condition_df
        mdf = P.measurement_df.copy()
        # mapping table: PEtab entity id -> model entity id (an alias in every table)
        self.mapping = {}
        if P.mapping_df is not None and len(P.mapping_df):
            for pid_, mid_ in zip(P.mapping_df.index, P.mapping_df[pv1.MODEL_ENTITY_ID]):
                mid_ = "" if (isinstance(mid_, float) and math.isnan(mid_)) else str(mid_).strip()
                if not mid_ or (m.expression(mid_) is None and mid_ not in pids):
                    raise InputError(f"petab: mapping table row '{pid_}': modelEntityId '{mid_}' is not "
                                     f"a parameter, species, compartment or rule variable of model '{m.id}'")
                self.mapping[str(pid_)] = mid_
        pre_col = pv1.PREEQUILIBRATION_CONDITION_ID
        if pre_col not in mdf:
            mdf[pre_col] = ""
        mdf[pre_col] = [("" if (isinstance(v, float) and math.isnan(v)) else str(v)) for v in mdf[pre_col]]
        self.measurements = mdf.reset_index(drop=True)

        def condition_arrays(cid: str):
            """(p_ref, p_const) (n_p,), (y_ref, y_const, y_set) (n_x,) for one condition."""
            if cid and cid not in cdf.index:
                raise InputError(f"petab: condition '{cid}' is not in the condition table")
            return self._condition_arrays(cdf.loc[cid] if cid else None, cid)

        # experiments: unique (preequilibration, simulation) pairs; two groups
        exps = list(dict.fromkeys(zip(mdf[pre_col], mdf[pv1.SIMULATION_CONDITION_ID])))
        self.experiments = exps
        groups = {}
        for e, (pre, sim) in enumerate(exps):
            groups.setdefault(bool(pre), []).append(e)
        self._groups = []
        obs_df = P.observable_df
        self.observable_ids = tuple(obs_df.index)
        n_op = max([_count_placeholders(f, "observableParameter", o)
                    for o, f in zip(obs_df.index, obs_df[pv1.OBSERVABLE_FORMULA])] + [0])
        n_np = max([_count_placeholders(str(f), "noiseParameter", o)
                    for o, f in zip(obs_df.index, obs_df[pv1.NOISE_FORMULA])] + [0])
        self._n_op, self._n_np = n_op, n_np

        # rows -> experiment, time index
        row_exp = np.array([exps.index(k) for k in zip(mdf[pre_col], mdf[pv1.SIMULATION_CONDITION_ID])])
        times_all = np.asarray(mdf[pv1.TIME], dtype=np.float64)
        self._row_exp = row_exp
        # the start time of each experiment's simulation (PEtab 2.0 experiments: petab_v2.T0)
        t0_col = np.asarray(mdf[petab_v2.T0], dtype=np.float64) if petab_v2.T0 in mdf else np.zeros(len(mdf))
        for has_pre, members in sorted(groups.items()):
            finite = [times_all[(row_exp == e) & np.isfinite(times_all)] for e in members]
            t0s = np.array([t0_col[np.flatnonzero(row_exp == e)[0]] for e in members])
            ts_list = [np.unique(t) if t.size else np.full(1, t0) for t, t0 in zip(finite, t0s)]
            n_t = max(len(t) for t in ts_list)
            ts = np.stack([np.concatenate([t, np.full(n_t - len(t), t[-1])]) for t in ts_list])
            # steady-state measurements (time = inf): the state after simulating on to a steady
            # state, saved in an extra slot n_t
            steady_state = bool(np.any(np.isinf(times_all[np.isin(row_exp, members)])))
            sim = [condition_arrays(exps[e][1]) for e in members]
            pre = [condition_arrays(exps[e][0]) for e in members] if has_pre else None
            g = dict(members=np.array(members), has_pre=has_pre, ts=ts, t0=t0s, steady_state=steady_state,
                     sim=tuple(np.stack([s[i] for s in sim]) for i in range(5)),
                     pre=None if pre is None else tuple(np.stack([s[i] for s in pre]) for i in range(5)))
            self._groups.append(g)

        # measurement rows per observable
        self._obs = []
        for o, oid in enumerate(self.observable_ids):
            rows = np.flatnonzero(np.asarray(mdf[pv1.OBSERVABLE_ID]) == oid)
            if rows.size == 0:
                continue
            orow = obs_df.loc[oid]
            trans = str(orow.get(pv1.OBSERVABLE_TRANSFORMATION, "lin") or "lin")
            trans = "lin" if trans == "nan" else trans
            noise = str(orow.get(pv1.NOISE_DISTRIBUTION, "normal") or "normal")
            noise = "normal" if noise == "nan" else noise
            if trans not in TRANSFORMS:
                raise InputError(f"observable '{oid}': observableTransformation = '{trans}'; "
                                 f"valid: {', '.join(TRANSFORMS)}")
            if noise not in NOISES:
                raise InputError(f"observable '{oid}': noiseDistribution = '{noise}'; valid: {', '.join(NOISES)}")
            op_ref, op_const = self._row_overrides(mdf, rows, pv1.OBSERVABLE_PARAMETERS, n_op, pids)
            np_ref, np_const = self._row_overrides(mdf, rows, pv1.NOISE_PARAMETERS, n_np, pids)
            group_of = {}
            for gi, g in enumerate(self._groups):
                for j, e in enumerate(g["members"]):
                    group_of[e] = (gi, j)
            gidx = np.array([group_of[row_exp[r]][0] for r in rows])
            eidx = np.array([group_of[row_exp[r]][1] for r in rows])
            tidx = np.array([int(np.searchsorted(self._groups[gi]["ts"][j], times_all[r]))
                             if np.isfinite(times_all[r]) else self._groups[gi]["ts"].shape[1]
                             for r, gi, j in zip(rows, gidx, eidx)])
            meas = np.asarray(mdf[pv1.MEASUREMENT].iloc[rows], dtype=np.float64)
            if trans != "lin" and np.any(meas <= 0):
                raise InputError(f"observable '{oid}' has {trans} transformation but a measurement <= 0")
            obs_fn, noise_fn = _observable_functions(
                m, oid, orow[pv1.OBSERVABLE_FORMULA], orow[pv1.NOISE_FORMULA], n_op, n_np, pids, self.mapping)
            self._obs.append(dict(id=oid, rows=rows, trans=trans, noise=noise, group=gidx, exp=eidx,
                                  tidx=tidx, meas=meas, times=times_all[rows],
                                  op=(op_ref, op_const), np=(np_ref, np_const),
                                  h=obs_fn, sigma=noise_fn))

    def _condition_arrays(self, row, cid: str):
        """(p_ref, p_const) (n_p,), (y_ref, y_const, y_set) (n_x,) of one condition: `row` a
        mapping condition-table column -> value (a number or a parameter id; NaN keeps the
        model's value), or None (the model's values); cid names it in errors."""
        import petab.v1 as pv1
        m = self.model
        pids = {k: i for i, k in enumerate(self.theta_names)}
        via_mapping = {mid_: pids[pid_] for pid_, mid_ in self.mapping.items() if pid_ in pids}
        n_p, n_x = len(m.parameters), len(m.states)
        p_ref = np.full(n_p, -1, dtype=int)
        p_const = m.parameter_values.copy()
        for k, name in enumerate(m.parameters):
            if name in pids or name in via_mapping:
                p_ref[k] = pids.get(name, via_mapping.get(name))
        y_ref = np.full(n_x, -1, dtype=int)
        y_const = np.zeros(n_x)
        y_set = np.zeros(n_x, dtype=bool)
        for k, name in enumerate(m.states):  # a parameter that events change is a state
            if name in m.event_parameters and (name in pids or name in via_mapping):
                y_ref[k], y_set[k] = pids.get(name, via_mapping.get(name)), True
        for col, val in ([] if row is None else row.items()):
            if col in (pv1.CONDITION_NAME, pv1.CONDITION_ID):
                continue
            if isinstance(val, float) and math.isnan(val):
                continue  # NaN: keep the model's value
            ref, const = _parse_refs(val, pids, f"condition '{cid}', column '{col}'")
            col = self.mapping.get(col, col)
            if col in m.parameters:
                k = m.parameters.index(col)
                p_ref[k], p_const[k] = ref, const
            elif col in m.states:
                k = m.states.index(col)
                y_ref[k], y_const[k], y_set[k] = ref, const, True
            elif _override(m, col, ref, const, p_ref, p_const):
                pass  # an entity the model defines by a rule or initial assignment
            elif col in m.rules:
                raise InputError(f"petab: condition table column '{col}' is an assignment-rule "
                                 f"variable of model '{m.id}' (or a species in a compartment whose "
                                 "size changes): the condition table cannot set it")
            else:
                raise InputError(f"petab: condition table column '{col}' is not a parameter, "
                                 f"species or compartment of model '{m.id}'")
        return p_ref, p_const, y_ref, y_const, y_set

    @staticmethod
    def _row_overrides(mdf, rows, col, n, pids):
        ref = np.full((len(rows), max(n, 1)), -1, dtype=int)
        const = np.zeros((len(rows), max(n, 1)))
        if col not in mdf or n == 0:
            return ref, const
        import petab.v1 as pv1
        for i, r in enumerate(rows):
            val = mdf[col].iloc[r]
            if isinstance(val, float) and math.isnan(val):
                continue
            parts = pv1.split_parameter_replacement_list(val)
            for k, part in enumerate(parts[:n]):
                ref[i, k], const[i, k] = _parse_refs(part, pids, f"measurement row {r}, {col}")
        return ref, const

    # ------------------------------------------------------------------ x <-> theta
    def theta(self, x) -> jnp.ndarray:
        """All parameters of the parameter table on the linear scale (n_theta,) for x on the
        parameter scale (n_estimated,); fixed ones at their nominal values."""
        x = jnp.asarray(x)
        code = self._scale_code
        # each power of its own scale's entries only: exp of a linear-scale value of 1e3 is
        # inf, and the reverse pass through the unselected branch would give 0 * inf = NaN
        lin = jnp.where(code == 0, x, jnp.where(code == 1, jnp.exp(jnp.where(code == 1, x, 0.0)),
                                                10.0 ** jnp.where(code == 2, x, 0.0)))
        return jnp.asarray(self.theta_nominal).at[self.est_index].set(lin)

    def _check_x(self, x) -> np.ndarray:
        """x (n_estimated,) as float64 NumPy (the compiled programs take it as it is; default
        the nominal values), checked for shape and finiteness. -inf on a log or log10 scale is
        the value 0 (a nominal value of 0 on a log scale: a rate switched off), and the
        derivative by it is 0."""
        x = self.x_nominal if x is None else np.asarray(x, dtype=np.float64)
        if x.shape != self.x_nominal.shape:
            raise InputError(f"x has shape {x.shape}, expected ({len(self.x_names)},): one value per "
                             f"estimated parameter, on its scale (see .x_names, .scales)")
        bad = ~np.isfinite(x) & ~(np.isneginf(x) & (np.asarray(self._scale_code) > 0))
        if bad.any():
            named = ", ".join(f"{self.x_names[i]} = {x[i]} ({self.scales[i]})" for i in np.flatnonzero(bad)[:5])
            raise InputError(f"x is not finite for {named}: NaN and +inf are no parameter values; -inf "
                             "only on a log or log10 scale (the value 0)")
        return x

    # ------------------------------------------------------------------ simulation
    def _implicit(self) -> bool:
        return segments.implicit(self.solver)

    def _simulate_fn(self, method: str, groups=None) -> Callable:
        """(theta, tol) -> per group (ys (n_exp, n_t, n_x), pvs (n_exp, n_p), ok, steps);
        groups: the experiments' arrays (default the measurement table's, `_groups`). The
        solve of one experiment is `integrate.segments.experiment_function`; here the
        conditions become its parameter vectors and initial states."""
        m = self.model
        # a model with events of its own (not only PEtab 2.0 periods): preequilibration and
        # time = inf run them too
        run = segments.experiment_function(
            m, self.solver, method, self.max_steps, save=self._save(), pid=self.pid, newton_kappa=self.newton_kappa,
            scan_stages=self._scan() if self.solver in LEAN_RODAS else False,
            steady_events=any(meta["name"] not in self._period_events for meta in m.event_meta))
        groups = self._groups if groups is None else groups

        def params(theta, arrays):
            p_ref, p_const, y_ref, y_const, y_set = arrays
            pv = jnp.where(p_ref >= 0, theta[jnp.maximum(p_ref, 0)], p_const)
            yo = jnp.where(y_ref >= 0, theta[jnp.maximum(y_ref, 0)], y_const)
            return pv, yo, y_set

        def one(theta, sim, pre, ts, tol, steady_state, t0=0.0):
            pv, yo, y_set = params(theta, sim)

            def after(y):  # the condition's initial values replace the state
                return jnp.where(y_set, yo, y)

            if pre is None:
                ys, ok, steps = run(pv, after(m.initial(pv)), ts, t0, tol, steady_state=steady_state)
            else:
                pv0, yo0, set0 = params(theta, pre)
                y_pre = jnp.where(set0, yo0, m.initial(pv0))
                ys, ok, steps = run(pv, None, ts, t0, tol, pre=(pv0, y_pre), after=after, steady_state=steady_state)
            return ys, pv, ok, steps

        batch = jax.vmap if self.batch == "vmap" else (lambda f: lambda *a: jax.lax.map(lambda z: f(*z), a))

        def simulate_all(theta, tol):
            out = []
            for g in groups:
                sim = tuple(jnp.asarray(a) for a in g["sim"])
                pre = None if g["pre"] is None else tuple(jnp.asarray(a) for a in g["pre"])
                t0 = jnp.asarray(g["t0"] if "t0" in g else np.zeros(len(g["ts"])))
                if pre is None:
                    f = batch(lambda s, ts, t0: one(theta, s, None, ts, tol, g["steady_state"], t0))
                    out.append(f(sim, jnp.asarray(g["ts"]), t0))
                else:
                    f = batch(lambda s, p, ts, t0: one(theta, s, p, ts, tol, g["steady_state"], t0))
                    out.append(f(sim, pre, jnp.asarray(g["ts"]), t0))
            return out

        return simulate_all

    def _observations_fn(self, method: str) -> Callable:
        """(theta, tol) -> (per observable: (simulated values, sigma) over its rows, aux)."""
        simulate_all = self._simulate_fn(method)
        obs = self._obs

        def observe(theta, tol):
            sims = simulate_all(theta, tol)
            ok = jnp.all(jnp.stack([jnp.all(s[2]) for s in sims]))
            steps = sum(jnp.sum(s[3]) for s in sims)
            results = []
            for o in obs:
                ys = _gather(sims, o)
                pvs = _gather_p(sims, o)
                op = jnp.where(o["op"][0] >= 0, theta[jnp.maximum(o["op"][0], 0)], o["op"][1])
                npar = jnp.where(o["np"][0] >= 0, theta[jnp.maximum(o["np"][0], 0)], o["np"][1])
                t = jnp.asarray(np.where(np.isfinite(o["times"]), o["times"], 0.0))  # t = inf: no time
                y_sim = jax.vmap(o["h"], in_axes=(0, 0, 0, None, 0))(t, ys, pvs, theta, op)
                sigma = jax.vmap(o["sigma"], in_axes=(0, 0, 0, None, 0, 0))(t, ys, pvs, theta, op, npar)
                results.append((y_sim, sigma))
            return results, {"ok": ok, "steps": steps}

        return observe

    def _nllh_fn(self, method: str) -> Callable:
        observe = self._observations_fn(method)
        obs = self._obs

        def nllh(x, tol):
            theta = self.theta(x)
            results, aux = observe(theta, tol)
            total = 0.0
            for o, (y_sim, sigma) in zip(obs, results):
                total = total + jnp.sum(_nllh_terms(y_sim, sigma, o))
            return total, (aux, results)  # results: per observable (simulation, sigma)

        return nllh

    def _structure(self) -> tuple:
        """What compiled functions depend on: the files' contents, solver and step budget
        (tolerances and parameter values are arguments)."""
        return (self._fingerprint, self.solver, self.max_steps, self._save(), self.batch, self.pid,
                self.newton_kappa, self.__dict__.get("scan_stages"))

    def _save(self) -> str:
        """How the solves save: `save`, or by default "dense" (the lean Rodas5P loop's dense
        output: steps that do not stop at the save times) when an experiment has at least
        DENSE_SAVES_FROM save times, else "step" (steps land on them)."""
        if self.__dict__.get("save") is not None:
            return self.save
        if self.solver not in LEAN_RODAS or petab_rodas.TABLEAUS[self.solver].H is None:
            return "step"
        return "dense" if self._most_saves >= DENSE_SAVES_FROM else "step"

    def _scan(self) -> bool:
        """The lean loop's stages as a `lax.scan` (`rosenbrock.lean_step`): `scan_stages`, or by
        default from the model's size (see SCAN_STAGES_FROM, SCAN_RHS_EQUATIONS_FROM)."""
        if self.__dict__.get("scan_stages") is not None:
            return bool(self.scan_stages)
        if len(self.model.states) >= SCAN_STAGES_FROM:
            return True
        if "_rhs_equations" not in self.__dict__:
            self._rhs_equations = rhs_equations(self.model)
        return self._rhs_equations >= SCAN_RHS_EQUATIONS_FROM

    def _run(self, key, build, x):
        """Compile `build()` once per problem structure and `key` (shared by every
        PetabProblem of the same files), run it at x; returns (output, timings).

        A program not yet compiled in this process comes from the store of traced programs
        (`stores/programs.py`, keyed by the structure, the argument shapes and the toolkit's
        and JAX's versions) when a process before this one traced it: a warm process then
        compiles from JAX's disk cache without tracing the model or the solver again."""
        full = self._structure() + tuple(key)
        args = (x, self._tol())
        exe = _COMPILED.get(full)
        compile_s = 0.0
        if exe is None:
            # a progress line when preparing the program takes a while (the slow-compile
            # report of core/compile_watch comes after it)
            note = threading.Timer(PROGRESS_SECONDS, self._say_compiling, (key,))
            note.daemon = True
            note.start()
            try:
                exe, compile_s, _ = compiled_programs.compiled_with_meta(("petab",) + full, build, args)
            finally:
                note.cancel()
            _COMPILED[full] = exe
            while len(_COMPILED) > _MAX_COMPILED:  # executables hold memory maps: keep the newest
                _COMPILED.pop(next(iter(_COMPILED)))
        start = time.perf_counter()
        # left on the device: the callers fetch what they read (each fetch of a small
        # array costs about as much as a step of the solve)
        out = jax.block_until_ready(exe(*args))
        return out, {"compile": compile_s, "run": time.perf_counter() - start}

    def _say_compiling(self, key):
        """The progress line of a program that is still being traced and compiled."""
        m = self.model
        n_exp = sum(len(g["members"]) for g in self._groups)
        what = {"nllh": "nllh", "grad": "gradient", "fisher": "Fisher information",
                "value_gradient_fisher": "nllh, gradient and Fisher information"}.get(key[0], key[0])
        mode = f" ({key[1]} mode)" if len(key) > 1 else ""
        try:
            print(f"sensitivity: compiling the {what}{mode} of PEtab problem '{self.path.stem}' ({len(m.states)} "
                  f"states, {len(m.rules)} rules, {n_exp} experiments, {len(self.x_names)} estimated parameters); "
                  f"a first call of a model this size takes "
                  f"{_first_call_guess(len(m.states), len(m.rules), m.rate_arrays is not None)} "
                  "of CPU (more on a busy machine), later calls reuse the program ...", file=sys.stderr, flush=True)
        except (OSError, ValueError):  # a closed stderr: nothing to say it on
            pass

    def _tol(self):
        """[rtol, atol] as a device array, made again only when they change (put on the
        device as it is: `jnp.asarray` of a tuple would compile a conversion program)."""
        key = (self.rtol, self.atol)
        cached = self.__dict__.get("_tol_cache")
        if cached is None or cached[0] != key:
            cached = self._tol_cache = (key, jax.device_put(np.asarray(key, dtype=np.float64)))
        return cached[1]

    def _check(self, aux, *values):
        if not bool(aux["ok"]) or not all(np.all(np.isfinite(np.asarray(v))) for v in values):
            raise SolverError(
                f"petab problem '{self.path.name}': a solve failed or gave NaN/inf (model '{self.model.id}', "
                f"solver {self.solver}, rtol={self.rtol:g}, atol={self.atol:g}, max_steps={self.max_steps}). "
                "Try: other parameter values, a larger max_steps, or another solver."
                + petab_events.failure_hint(self.model))

    # ------------------------------------------------------------------ public
    def nllh(self, x=None, priors: bool = False) -> float:
        """Negative log-likelihood at x (n_estimated,) on the parameter scale (default: the
        nominal values); with priors=True plus the negative log-prior density (`prior`)."""
        x = self._check_x(x)
        (value, (aux, _)), _ = self._run(("nllh",), lambda: self._nllh_fn("checkpoint"), x)
        self._check(aux, value)
        return float(value) + (self.prior(x)[0] if priors else 0.0)

    def prior(self, x=None) -> tuple[float, np.ndarray]:
        """Negative log-density of the parameter table's objective priors at x and its
        gradient (n_estimated,), on the parameter scale (a density over a linear-scale value
        includes the Jacobian of the scale change). Parameters without a prior contribute 0."""
        x = np.asarray(self._check_x(x))
        if self.format_version == 2 and self._v2_priors:  # PEtab 2.0's priors: petab_v2.log_priors
            terms = petab_v2.log_priors(self.petab_v2, dict(zip(self.x_names, x)))
            return (-sum(v for v, _ in terms.values()),
                    np.array([-terms[n][1] if n in terms else 0.0 for n in self.x_names]))
        value, grad = 0.0, np.zeros_like(x)
        for i, kind, a, b in self.priors:
            v, d = _prior_term(x[i], self.scales[i], kind, a, b)
            value, grad[i] = value + v, d
        return value, grad

    def gradient(self, x=None, mode: str = "auto", priors: bool = False) -> PetabGradient:
        """nllh (plus the negative log-prior with priors=True) and its gradient with respect
        to x on the parameter scale, shape (n_estimated,).

        mode: "forward" (n_estimated tangents in one vmapped sweep, diffrax ForwardMode),
        "adjoint" (one backward sweep, checkpointed: exact for the discrete solve), or
        "auto" (the cost model decides from the problem's shape).
        """
        modes.check_mode(mode)
        x = self._check_x(x)
        plan = None
        if mode == "auto":
            plan = self._auto_plan()
            mode = plan.mode

        def build():
            f = self._nllh_fn(modes.METHOD[mode])
            return lambda x, tol: modes.value_and_gradient(mode, f, x, tol)
        (value, (aux, _), grad), t = self._run(("grad", mode), build, x)
        self._check(aux, value, grad)
        value, grad = float(value), np.asarray(grad)
        if priors:
            pv, pg = self.prior(x)
            value, grad = value + pv, grad + pg
        numbers.check_petab(self, x, gradient=grad, mode=mode, value=value)
        return PetabGradient(value, grad, self.x_names, mode, plan, t)

    def nllh_function(self, mode: str = "auto") -> Callable:
        """The nllh as a JAX function of x (n_estimated,) -> scalar (+inf where a solve
        fails), at the problem's tolerances, for programs that evaluate many points at once
        (`jit`, `vmap`, samplers): its derivative (`jax.grad`, `jax.jvp`) is the exact
        gradient by `mode` as in `gradient` (0 where a solve fails). Priors not included."""
        modes.check_mode(mode)
        mode = self._auto_plan().mode if mode == "auto" else mode
        f = self._nllh_fn(modes.METHOD[mode])
        tol = np.asarray((self.rtol, self.atol), dtype=np.float64)

        def value_and_grad(x):
            v, (aux, _), g = modes.value_and_gradient(mode, f, x, tol)
            ok = aux["ok"] & jnp.isfinite(v) & jnp.all(jnp.isfinite(g))
            return jnp.where(ok, v, jnp.inf), jnp.where(ok, g, 0.0)

        @jax.custom_jvp
        def nllh(x):
            v, (aux, _) = f(x, tol)
            return jnp.where(aux["ok"] & jnp.isfinite(v), v, jnp.inf)

        @nllh.defjvp
        def _nllh_jvp(primals, tangents):
            v, g = value_and_grad(primals[0])
            return v, g @ tangents[0]

        return nllh

    def simulation_function(self) -> Callable:
        """The simulation as a JAX function of x (n_estimated,) -> (simulation (n_rows,),
        sigma (n_rows,), ok): per row of the measurement table (`simulate`'s order), the
        observable and its noise sigma (on the observable's transformed scale); ok False
        where a solve failed."""
        observe = self._observations_fn("checkpoint")
        obs, n = self._obs, len(self.measurements)
        tol = np.asarray((self.rtol, self.atol), dtype=np.float64)

        def simulation(x):
            results, aux = observe(self.theta(x), tol)
            sim, sig = jnp.full(n, jnp.nan), jnp.full(n, jnp.nan)
            for o, (y_sim, sigma) in zip(obs, results):
                sim, sig = sim.at[o["rows"]].set(y_sim), sig.at[o["rows"]].set(sigma)
            return sim, sig, aux["ok"]

        return simulation

    def _auto_plan(self):
        """The cost model's plan for mode="auto", made once per problem structure."""
        key = self._structure()
        cached = self.__dict__.get("_plan_cache")
        if cached is not None and cached[0] == key:
            return cached[1]
        n_states, n_t, model_states = self._plan_shape
        plan = make_plan(task="gradient", n_inputs=len(self.x_names), n_outputs=1, n_states=n_states, n_times=n_t,
                         calibration=(Calibration(**petab_rodas.calibration(model_states)) if self.solver in LEAN_RODAS
                                      else _implicit_calibration() if self._implicit()
                                      else stored_calibration() or Calibration()),
                         max_steps=self.max_steps)
        self._plan_cache = (key, plan)
        return plan

    def fisher(self, x=None) -> np.ndarray:
        """Fisher information of the estimated parameters at x (on their scales), shape
        (n_estimated, n_estimated): sum over measurements of J_mu^T J_mu / sigma^2 +
        c J_sigma^T J_sigma / sigma^2, c = 2 (normal) or 1 (Laplace), on the transformed scale;
        by forward sensitivities."""
        x = self._check_x(x)

        def build():
            observe = self._observations_fn("forward")

            def parts(x, tol):
                results, aux = observe(self.theta(x), tol)
                mu, sigma, c = self._residual_parts(results)
                return (mu, sigma), (c, aux)

            def F(x, tol):
                (_, sigma), (c, aux), (Jm, Js) = push(parts, x, tol, jnp.eye(x.size, dtype=x.dtype))
                return _fisher_matrix(Jm.T, Js.T, sigma, c), aux
            return F

        (F, aux), _ = self._run(("fisher",), build, x)
        self._check(aux, F)
        numbers.check_petab(self, x, fisher=np.asarray(F))
        return np.asarray(F)

    def _residual_parts(self, results):
        """From the observations (per observable (simulation, sigma)): the simulations on the
        transformed scale, sigma and the noise factor c (2 normal, 1 Laplace), each (n_rows,)
        in the observables' order."""
        mus, sig, c = [], [], []
        for o, (y_sim, sigma) in zip(self._obs, results):
            mus.append(_transform(y_sim, o["trans"]))
            sig.append(sigma)
            c.append(jnp.full(sigma.shape, 2.0 if o["noise"] == "normal" else 1.0))
        return jnp.concatenate(mus), jnp.concatenate(sig), jnp.concatenate(c)

    def value_gradient_fisher(self, x=None, priors: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
        """nllh, its gradient (n_estimated,) and the Fisher information (n_estimated,
        n_estimated) at x from one forward-sensitivity sweep: the values of `nllh`,
        `gradient(mode="forward")` and `fisher`. priors=True adds the negative log-prior and
        its gradient (as `gradient`; the Fisher information is the likelihood's)."""
        x = self._check_x(x)

        def build():
            observe = self._observations_fn("forward")
            obs = self._obs

            def joint(x, tol):
                results, aux = observe(self.theta(x), tol)
                total = 0.0
                for o, (y_sim, sigma) in zip(obs, results):
                    total = total + jnp.sum(_nllh_terms(y_sim, sigma, o))
                mu, sigma, c = self._residual_parts(results)
                return (total, mu, sigma), (c, aux)

            def vgf(x, tol):
                (value, _, sigma), (c, aux), (grad, Jm, Js) = push(joint, x, tol, jnp.eye(x.size, dtype=x.dtype))
                return (value, grad, _fisher_matrix(Jm.T, Js.T, sigma, c)), aux
            return vgf

        ((value, grad, F), aux), _ = self._run(("value_gradient_fisher",), build, x)
        self._check(aux, value, grad, F)
        value, grad, F = float(value), np.asarray(grad), np.asarray(F)
        if priors:
            pv, pg = self.prior(x)
            value, grad = value + pv, grad + pg
        numbers.check_petab(self, x, gradient=grad, mode="forward", value=value)
        numbers.check_petab(self, x, fisher=F)
        return value, grad, F

    def sensitivities(self, rows, x=None, conditions=None):
        """The observables and their derivatives by x at any measurement rows, measured or
        not, under the problem's conditions or new ones (`petab_rows.sensitivities`).

        rows: a DataFrame (observableId, simulationConditionId, time[,
            preequilibrationConditionId, observableParameters, noiseParameters]), one row per
            measurement (time = inf: at steady state); observable and noise parameters left
            out are those of a measured row of the observable (under the same conditions if
            there is one).
        conditions: new conditions: a mapping id -> {condition-table column: value}, or
            condition-table rows (a DataFrame or a TSV file with conditionId).
        Returns `petab_rows.RowSensitivities`: per row the observable on its transformed
        scale and sigma (n_rows,), their Jacobians by x (n_rows, n_estimated), and
        `.fisher()`. One compiled forward sweep per shape of the rows (the conditions and
        times are arguments of the program, not constants)."""
        return petab_rows.sensitivities(self, rows, x=x, conditions=conditions)

    def simulate(self, x=None):
        """The PEtab simulation table at x: the measurement table with a `simulation` column
        in place of `measurement` (pandas DataFrame)."""
        import petab.v1 as pv1
        x = self._check_x(x)

        (value, (aux, results)), _ = self._run(("nllh",), lambda: self._nllh_fn("checkpoint"), x)
        self._check(aux, *results)
        df = self.measurements.copy()
        sim = np.full(len(df), np.nan)
        for o, (y_sim, _) in zip(self._obs, results):
            sim[o["rows"]] = np.asarray(y_sim)
        df = df.rename(columns={pv1.MEASUREMENT: pv1.SIMULATION})
        df[pv1.SIMULATION] = sim
        if self.format_version == 2:  # PEtab 2.0's columns (experimentId), not the converted ones
            df = df.drop(columns=[pv1.SIMULATION_CONDITION_ID, pv1.PREEQUILIBRATION_CONDITION_ID, petab_v2.T0])
        return df

    def chi2(self, x=None) -> float:
        """The sum over measurements of ((h(simulation) - h(measurement)) / sigma)^2, h the
        observable's transformation (lin, log, log10), at x (default the nominal values)."""
        x = self._check_x(x)
        (_, (aux, results)), _ = self._run(("nllh",), lambda: self._nllh_fn("checkpoint"), x)
        self._check(aux, *[r[0] for r in results])
        total = 0.0
        for o, (y_sim, sigma) in zip(self._obs, results):
            s, z = _transform(np.asarray(y_sim), o["trans"]), _transform(np.asarray(o["meas"]), o["trans"])
            total += float(np.sum(((s - z) / np.asarray(sigma)) ** 2))
        return total

    def to_pypesto(self, priors: bool = True, mode: str = "auto", **problem_kwargs):
        """A `pypesto.Problem` whose objective is this problem's nllh, exact gradient and
        Fisher information (as the Hessian); bounds, scales, fixed parameters and priors as
        pyPESTO's PEtab importer sets them. The optional extra `pypesto`; see
        `sensitivity.analyses.pypesto_bridge`."""
        bridge = LazyModule("sensitivity.analyses.pypesto_bridge")
        return bridge.to_pypesto(self, priors=priors, mode=mode, **problem_kwargs)

    def __repr__(self):
        return (f"PetabProblem({self.path.name}: model {self.model.id}, {len(self.model.states)} states, "
                f"{len(self.x_names)} estimated parameters, {len(self.experiments)} experiments, "
                f"{len(self.measurements)} measurements)")


_COMPILED: dict = {}


def _implicit_calibration():
    """Cost constants (in simulations) of the gradient modes with an implicit solver, typical
    of the PEtab benchmark problems (Kvaerno5, rtol = atol = 1e-8; `benchmarks/petab.py
    --solver kvaerno5`): the Newton iterations of the primal dominate a step, so a forward
    tangent adds only a small fraction of a solve and the forward gradient stays cheaper
    than the adjoint at these problems' tens of inputs. The machine's calibration file
    (Tsit5 on a neural ODE, where a tangent weighs more against a solve) would pick the
    slower adjoint for most of them."""
    return Calibration(tangent=0.05, record=2.5, cotangent=0.5,
                       source="PEtab problems with Kvaerno5 (sensitivity/importers/petab.py)")
# Newton stopping constant of the implicit solvers (diffrax's default 1e-2). With 1e-2,
# Kvaerno5 rejects many steps on the PEtab problems, most (judging by how the count falls
# with a looser stop) because Newton has not converged within its 10 iterations, and the
# controller then shrinks the step; at 0.3 (Hairer & Wanner suggest 1e-2 to
# 1e-1 times the tolerance; the iteration error is still well below the local error
# tolerance) those rejections mostly go, the solves take far fewer steps, and the states
# agree with a solve at rtol = atol = 1e-12 about as closely as at 1e-2
# (`benchmarks/petab_solver.py` compares the two constants).
_NEWTON_KAPPA = 0.3
# states from which the lean loop runs its stages as a lax.scan (one copy of the rhs and of
# its derivatives in the compiled program instead of one per stage): the compile time of a
# large model falls several times, while a small model's unrolled stages, which XLA fuses,
# run faster (`benchmarks/compile_profile.py` measures both)
SCAN_STAGES_FROM = 20
# ... or from this many jaxpr equations in one rhs evaluation (`rhs_equations`): the unrolled
# program holds ~26 copies of the rhs and its derivatives, the scanned one ~11. A 10-state
# model with 30 assignment rules (319 equations; Giordano_Nature2020) compiles its forward
# gradient in 8 instead of 13 s and runs it in 7 instead of 10 ms; models of 60-90
# equations run their forward gradients up to 2x slower scanned, for 1-2 s less compile
SCAN_RHS_EQUATIONS_FROM = 200
# save times of one experiment from which the lean Rodas5P loop saves by its dense output
# (order 4) instead of landing a step on each (`benchmarks/petab_dense.py`): with 714 a
# condition (Beer_MolBioSystems2014) 2,244 instead of 13,751 steps, nllh 76 -> 18 ms, forward
# gradient 927 -> 260 ms; with 46-60 (Giordano, Okuonghae, Oliveira) 1.1-1.4x faster calls;
# with 16 or fewer (Boehm, Schwen) the interpolation at every save time in every step costs
# about what the few steps it saves do (gradients -5 to +10 %)
DENSE_SAVES_FROM = 40
_MAX_COMPILED = 32


PROGRESS_SECONDS = 10.0  # a compile still running after this long says what it compiles


def _first_call_guess(n_states: int, n_rules: int, arrays: bool = False) -> str:
    """A rough duration of a cold first call (trace, XLA compile, one call) from the model's
    size, from the collection's cold first calls (`benchmarks/results/petab.md`): 5-15 s up
    to about ten states, 10-55 s for 22-124 states (their rates as arrays, or up to a few
    dozen states with unrolled rules), minutes for unrolled rules in the hundreds, and
    longer for hundreds of states, where each step's dense linear algebra dominates.
    arrays: the rates are arrays of monomials (`SBMLModel.rate_arrays`): the rules they
    hold no longer grow the program."""
    size = n_states + (0.0 if arrays else 0.2 * n_rules)
    if size < 15:
        return "about 5-30 s"
    if size < 150:
        return "about 20 s to a minute"
    if n_states < 300:
        return "a few minutes"
    return "many minutes (each step of a model with hundreds of states costs a dense LU)"


# model parameters that carry a condition's value of an entity the model defines by a rule
# or an initial assignment (`_read_model`): a switch (1 where the condition sets it) and the value
_OVERRIDE_SET, _OVERRIDE_VALUE = "petab_condition_sets_", "petab_condition_value_"


def _override(m, name: str, ref: int, const: float, p_ref, p_const) -> bool:
    """Set a condition's value (`ref` into theta or -1, `const`) of an entity that `_read_model`
    made overridable, in the condition's parameter arrays p_ref, p_const (n_p,); False if
    `name` is not such an entity."""
    if name not in m.rules or _OVERRIDE_SET + name not in m.parameters:
        return False
    k = m.parameters.index(_OVERRIDE_VALUE + name)
    p_ref[k], p_const[k] = ref, const
    p_const[m.parameters.index(_OVERRIDE_SET + name)] = 1.0
    return True


def _read_model(model_path: Path, problem):
    """The SBML model, where every entity that the condition table sets but the model defines
    by an assignment rule or an initial assignment (a parameter, compartment or species) is
    defined by `piecewise(value, set > 0.5, definition)` with two new parameters per entity
    (`_OVERRIDE_SET` + id, default 0, and `_OVERRIDE_VALUE` + id).

    A condition that gives a value replaces the model's definition (PEtab: a condition-table
    value of an assignment-rule target replaces the rule for that condition; AMICI takes a
    parameter whose initial assignment is a number as a parameter the condition overrides);
    a condition that leaves the column empty (NaN) keeps the definition."""
    import libsbml
    import petab.v1 as pv1
    model = sbml_import.read(model_path)
    cdf = problem.condition_df
    mapping = {}
    if problem.mapping_df is not None and len(problem.mapping_df):
        mapping = {str(a): str(b).strip() for a, b in zip(problem.mapping_df.index,
                                                          problem.mapping_df[pv1.MODEL_ENTITY_ID])}
    columns = [] if cdf is None else [c for c in cdf.columns if c != pv1.CONDITION_NAME and cdf[c].notna().any()]
    targets = sorted({mapping.get(c, c) for c in columns} & set(model.rules))
    if not targets:
        return model
    doc = libsbml.readSBMLFromFile(str(model_path))
    sbml = doc.getModel()
    changed = False
    for name in targets:
        definition = sbml.getAssignmentRuleByVariable(name) or sbml.getInitialAssignmentBySymbol(name)
        if definition is None or not definition.isSetMath():  # e.g. a species in a compartment that grows
            continue
        switch, value = _OVERRIDE_SET + name, _OVERRIDE_VALUE + name
        for pid in (switch, value):
            if sbml.getElementBySId(pid) is not None:
                raise InputError(f"petab: condition table column '{name}' overrides the model's definition "
                                 f"of '{name}', which needs a parameter '{pid}'; model '{sbml.getId()}' "
                                 "already has an element of that id")
            par = sbml.createParameter()
            par.setId(pid)
            par.setValue(0.0)
            par.setConstant(True)
        node = libsbml.ASTNode(libsbml.AST_FUNCTION_PIECEWISE)
        node.addChild(libsbml.parseL3Formula(value))
        node.addChild(libsbml.parseL3Formula(f"{switch} > 0.5"))
        node.addChild(definition.getMath().deepCopy())
        definition.setMath(node)
        changed = True
    if not changed:
        return model
    return sbml_import.from_string(libsbml.writeSBMLToString(doc), source=str(model_path),
                                   folder=model_path.parent)


def _sbml_errors(problem) -> list[str]:
    """The SBML consistency errors of the problem's model, as 'SBML line N: message'."""
    import libsbml
    doc = getattr(problem.model, "sbml_document", None)
    if doc is None:
        return []
    doc.checkConsistency()
    errors = [doc.getError(i) for i in range(doc.getNumErrors())]
    return [f"SBML line {e.getLine()}: {e.getMessage().strip()}" for e in errors
            if e.getSeverity() >= libsbml.LIBSBML_SEV_ERROR][:3]


def _fingerprint(path: Path, problem) -> str:
    """A hash of the problem's tables and model: equal for two loads of the same files."""
    h = hashlib.sha256()
    for df in (problem.parameter_df, problem.condition_df, problem.measurement_df, problem.observable_df,
               problem.mapping_df):  # the mapping table renames entities: it shapes the programs too
        h.update(b"none" if df is None else df.to_csv().encode())
    h.update(problem.model.to_sbml_str().encode() if hasattr(problem.model, "to_sbml_str") else str(path).encode())
    return h.hexdigest()


def rhs_equations(model) -> int:
    """The jaxpr equations of one evaluation of the model's rhs at its initial state."""
    pv = jnp.asarray(model.parameter_values)
    t = jnp.zeros(())
    return compile_watch.equations(jax.make_jaxpr(lambda y, p: model.rhs(t, y, p, t))(model.initial(pv), pv).jaxpr)


# what a problem's record holds: everything the calls read, without the tables and the model
_RECORD_ARRAYS = {"theta_nominal": np.float64, "est_index": np.int64, "_scale_code": np.int64,
                  "x_nominal": np.float64, "lower": np.float64, "upper": np.float64, "_most_saves": np.int64}
_RECORD_TUPLES = ("theta_names", "x_names", "scales", "_plan_shape")


def named_files(spec: dict) -> list[str]:
    """The file names a PEtab YAML (parsed) lists: every `*_file(s)` entry and `location`,
    in the order they appear."""
    named: list[str] = []

    def collect(node, key=""):
        if isinstance(node, dict):
            for k, v in node.items():
                collect(v, str(k))
        elif isinstance(node, list):
            for v in node:
                collect(v, key)
        elif isinstance(node, str) and (key.endswith(("_file", "_files")) or key == "location"):
            named.append(node)

    collect(spec)
    return named


def _load_key(path: Path, spec: dict, validate: bool) -> str | None:
    """The store's key of a problem's record: the bytes of the YAML file and of every file
    it names, and `validate`; None without the store or if a file cannot be read."""
    if not export_store.enabled():
        return None
    named = named_files(spec)
    h = hashlib.sha256(path.read_bytes())
    try:
        for name in named:
            h.update(f"\x00{name}\x00".encode())
            h.update((path.parent / name).read_bytes())
    except OSError:
        return None
    return export_store.fingerprint(("petab problem", h.hexdigest(), validate))


def _record(problem) -> dict:
    """The JSON record of a parsed problem (see `_restore`)."""
    out = {k: np.asarray(getattr(problem, k)).tolist() for k in _RECORD_ARRAYS}
    out.update({k: list(getattr(problem, k)) for k in _RECORD_TUPLES})
    out["priors"] = [list(p) for p in problem.priors]
    out["_fingerprint"] = problem._fingerprint
    out["_parsed"] = sorted(problem.__dict__)  # what a parse sets: the names read on demand
    return out


def _restore(problem, record: dict) -> bool:
    """Set a problem's attributes from its record; False if the record is not complete."""
    try:
        values = {k: np.asarray(record[k], dtype=t) for k, t in _RECORD_ARRAYS.items()}
        values.update({k: tuple(record[k]) for k in _RECORD_TUPLES})
        values["priors"] = [(int(i), str(kind), float(a), float(b)) for i, kind, a, b in record["priors"]]
        values["_fingerprint"] = str(record["_fingerprint"])
        values["_parsed"] = frozenset(str(k) for k in record["_parsed"]) - set(problem.__dict__)
    except (KeyError, TypeError, ValueError):
        return False
    problem.__dict__.update(values)
    return True


def _priors(pdf, est_index, x_names) -> list:
    """[(index into x, type, a, b)] of the estimated parameters with an objective prior."""
    import petab.v1 as pv1
    out = []
    if pv1.OBJECTIVE_PRIOR_TYPE not in pdf:
        return out
    for i, row in enumerate(est_index):
        kind = pdf[pv1.OBJECTIVE_PRIOR_TYPE].iloc[row]
        if not isinstance(kind, str) or not kind.strip():
            continue
        if kind not in pv1.PRIOR_TYPES:
            raise InputError(f"parameter '{x_names[i]}': objectivePriorType = '{kind}'; valid: "
                             f"{', '.join(pv1.PRIOR_TYPES)}")
        raw = str(pdf[pv1.OBJECTIVE_PRIOR_PARAMETERS].iloc[row]) if pv1.OBJECTIVE_PRIOR_PARAMETERS in pdf else ""
        try:
            a, b = (float(v) for v in raw.split(";"))
        except ValueError:
            raise InputError(f"parameter '{x_names[i]}': objectivePriorParameters = '{raw}' must be "
                             "two numbers 'a;b'") from None
        out.append((i, kind, a, b))
    return out


def _prior_term(x: float, scale: str, kind: str, a: float, b: float) -> tuple[float, float]:
    """Negative log-density (and its derivative in x) of one prior; x on `scale`.

    parameterScale*: the density is over x itself; otherwise over the linear value
    v = unscale(x), so -log p(x) = -log p_v(v) - log(dv/dx)."""
    if kind.startswith("parameterScale"):
        v, dv, logjac, dlogjac = x, 1.0, 0.0, 0.0
        kind = kind[len("parameterScale"):].lower()
    else:
        kind = kind.lower()
        c = {"lin": 0.0, "log": 1.0, "log10": math.log(10.0)}[scale]
        v = {"lin": x, "log": math.exp(x), "log10": 10.0 ** x}[scale]
        dv = 1.0 if scale == "lin" else c * v
        logjac, dlogjac = (0.0, 0.0) if scale == "lin" else (math.log(c * v), c)
    if kind == "normal":
        val, d = 0.5 * math.log(2 * math.pi * b * b) + 0.5 * ((v - a) / b) ** 2, (v - a) / b ** 2
    elif kind == "laplace":
        val, d = math.log(2 * b) + abs(v - a) / b, math.copysign(1.0, v - a) / b
    elif kind == "uniform":
        val, d = (math.log(b - a), 0.0) if a <= v <= b else (math.inf, 0.0)
    elif kind in ("lognormal", "loglaplace"):
        lv = math.log(v)
        if kind == "lognormal":
            val, dl = lv + 0.5 * math.log(2 * math.pi * b * b) + 0.5 * ((lv - a) / b) ** 2, 1 + (lv - a) / b ** 2
        else:
            val, dl = lv + math.log(2 * b) + abs(lv - a) / b, 1 + math.copysign(1.0, lv - a) / b
        d = dl / v
    else:  # pragma: no cover - checked in _priors
        raise InputError(f"prior type '{kind}' is unknown")
    return val - logjac, d * dv - dlogjac


def _gather(sims, o):
    groups = np.asarray(o["group"])
    if np.all(groups == groups[0]):
        return sims[int(groups[0])][0][o["exp"], o["tidx"]]
    return jnp.stack([sims[int(g)][0][int(e), int(k)] for g, e, k in zip(o["group"], o["exp"], o["tidx"])])


def _gather_p(sims, o):
    groups = np.asarray(o["group"])
    if np.all(groups == groups[0]):
        return sims[int(groups[0])][1][o["exp"]]
    return jnp.stack([sims[int(g)][1][int(e)] for g, e in zip(o["group"], o["exp"])])


def _transform(v, trans):
    return {"lin": lambda a: a, "log": jnp.log, "log10": jnp.log10}[trans](v)


def _fisher_matrix(Jm, Js, sigma, c):
    """sum over rows of J_mu^T J_mu / sigma^2 + c J_sigma^T J_sigma / sigma^2 (n_x, n_x) from
    the Jacobians Jm, Js (n_rows, n_x) of the transformed simulations and sigma, and sigma,
    c (n_rows,)."""
    w = 1.0 / sigma ** 2
    return weighted_gram(Jm, w) + weighted_gram(Js, c * w)


def _nllh_terms(y_sim, sigma, o):
    meas = jnp.asarray(o["meas"])
    s, z = _transform(y_sim, o["trans"]), _transform(meas, o["trans"])
    jac = {"lin": 0.0, "log": jnp.log(meas), "log10": jnp.log(meas * math.log(10.0))}[o["trans"]]
    if o["noise"] == "normal":
        return 0.5 * jnp.log(2 * math.pi * sigma ** 2) + 0.5 * ((s - z) / sigma) ** 2 + jac
    return jnp.log(2 * sigma) + jnp.abs(s - z) / sigma + jac


def _count_placeholders(formula, kind, oid) -> int:
    found = [int(k) for k in re.findall(rf"\b{kind}(\d+)_{re.escape(oid)}\b", str(formula))]
    return max(found) if found else 0


def _observable_functions(m, oid, formula, noise_formula, n_op, n_np, pids, mapping=None):
    """JAX functions h(t, y, pv, theta, op) and sigma(t, y, pv, theta, op, np) of one observable
    (mapping: PEtab entity ids -> model entity ids, substituted first)."""
    import sympy as sp
    from petab.v1.math import sympify_petab
    try:
        h = sympify_petab(formula)
        s = sympify_petab(noise_formula)
    except Exception as exc:
        raise InputError(f"observable '{oid}': formula cannot be parsed: {exc}") from None
    names = {}
    for i, st in enumerate(m.states):
        names[sp.Symbol(st, real=True)] = sp.Symbol(f"y[{i}]")
    for i, p in enumerate(m.parameters):
        names[sp.Symbol(p, real=True)] = sp.Symbol(f"p[{i}]")
    rules = {sp.Symbol(k, real=True): v for k, v in m.rules.items()}

    def source(expr, where):
        expr = sp.sympify(expr)
        if mapping:
            expr = expr.xreplace({sym: sp.Symbol(mapping[sym.name], real=True) for sym in expr.free_symbols
                                  if sym.name in mapping and mapping[sym.name] not in pids})
        # model rule variables: substitute their expressions (several rounds: rules of rules)
        for _ in range(len(rules) + 1):
            if not (expr.free_symbols & set(rules)):
                break
            expr = expr.xreplace(rules)
        expr = expr.xreplace({sbml_import.TC: sbml_import.T})
        subs = {sbml_import.T: sp.Symbol("t")}
        for sym in expr.free_symbols:
            nm = sym.name
            if sym in names:
                subs[sym] = names[sym]
            elif nm.startswith("observableParameter") and nm.endswith("_" + oid):
                subs[sym] = sp.Symbol(f"op[{int(nm[len('observableParameter'):].split('_')[0]) - 1}]")
            elif nm.startswith("noiseParameter") and nm.endswith("_" + oid):
                subs[sym] = sp.Symbol(f"npar[{int(nm[len('noiseParameter'):].split('_')[0]) - 1}]")
            elif nm in pids:
                subs[sym] = sp.Symbol(f"theta[{pids[nm]}]")
            elif nm == "t" or nm == "time":
                subs[sym] = sp.Symbol("t")
            elif sym not in subs:
                raise InputError(f"observable '{oid}': {where} uses '{nm}', which is neither a model "
                                 "entity, a parameter of the parameter table nor a placeholder")
        printer = sbml_import._Printer()
        return printer.doprint(expr.xreplace(subs)).replace("jax.numpy.", "jnp.")

    code = (f"def h(t, y, p, theta, op):\n    return jnp.asarray({source(h, 'observableFormula')}, "
            f"dtype=jnp.float64) + 0.0 * t\n"
            f"def sigma(t, y, p, theta, op, npar):\n    return jnp.asarray({source(s, 'noiseFormula')}, "
            f"dtype=jnp.float64) + 0.0 * t\n")
    ns = {"jnp": jnp, "jax": jax, "math": math}
    exec(compile(code, f"<petab:{oid}>", "exec"), ns)
    ns["h"].source = code
    return ns["h"], ns["sigma"]
