"""PEtab 2.0 problems as the tables and SBML model `PetabProblem` reads.

`read(path, validate)` reads a PEtab 2.0 YAML file with the `petab` package's v2 API
(`petab.v2.Problem`), validates it there, and returns a `Converted`: a `petab.v1.Problem`
built in memory (condition, measurement, observable, parameter and mapping tables) and
the SBML document it refers to, possibly with events added. `PetabProblem` (petab.py)
then treats the problem like a version-1 one. How each part of PEtab 2.0 maps:

- an *experiment* (periods, each a start time and conditions) is one simulation of the
  model. A period at `-inf` is the preequilibration: its changes form the
  preequilibration condition `_petab_pre_<experiment>`. The first finite period starts
  the simulation at its time t0 (the measurement table's column `_petab_t0`; 0 for
  measurements without an experiment or experiments with a preequilibration only); its
  changes form the simulation condition `_petab_exp_<experiment>`, together with the
  parameter changes of the preequilibration that it does not change again (changes
  persist from one period to the next);
- the changes of a *later period* (start time T) become one SBML event: trigger
  `time >= _petab_period_time_<n>` (initialValue false), whose time parameter is T in its
  experiment's simulation condition and 1e300 (never) elsewhere; all assignments read the
  state before the change (useValuesFromTriggerTime); the PEtab events come first in the
  model's list of events, so they are applied before the model's own events at the same
  time. A compartment whose size changes keeps the concentrations of its species (PEtab),
  not their amounts (SBML): each concentration species in it gets an assignment too;
- a change whose value is a number or a parameter id goes into the condition tables; any
  other expression becomes an event at the period's start. In the first period that event
  fires at t0, after the model's initial values are computed: refused (InputError naming
  the change) where the target is read by an initial assignment, is a compartment, or the
  period is a preequilibration, where this would differ from PEtab 2.0's semantics;
- observable and noise *placeholders* (`observablePlaceholders`, `noisePlaceholders`)
  become PEtab 1's `observableParameter<i>_<id>` / `noiseParameter<i>_<id>`; a noise
  formula may read its own observable's id (its formula is substituted);
- noise distributions `normal`, `laplace`, `log-normal`, `log-laplace` become PEtab 1's
  distribution and `log` transformation (the likelihood is the same); parameters are on
  the linear scale (PEtab 2.0 has no parameterScale);
- mapping-table rows without a `modelEntityId` (names only) are dropped.

Refused with an InputError naming the element: several models, a model that is not
SBML (PySB), an experiment with a period after its last finite measurement time together
with steady-state measurements (the run to steady state after the last time would miss
it). Priors (`priorDistribution`, truncated to the bounds; an estimated parameter without
one has the uniform prior over its bounds) are evaluated by `log_priors` with the `petab`
library's densities: `PetabProblem.prior` of a version-2 problem.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import InputError

PRE, SIM, T0 = "_petab_pre_", "_petab_exp_", "_petab_t0"
PERIOD_TIME = "_petab_period_time_"
NEVER = 1e300  # the time of a period event outside its experiment (inf would make NaN in the solve)
NOISE = {"normal": ("lin", "normal"), "laplace": ("lin", "laplace"),
         "log-normal": ("log", "normal"), "log-laplace": ("log", "laplace")}


@dataclass
class Converted:
    """A PEtab 2.0 problem as PEtab 1 tables: `problem` (petab.v1.Problem, whose model is
    the SBML document with the period events), `original` (the petab.v2.Problem),
    `period_events` (ids of the events made from periods), `priors` (ids of parameters
    with a prior distribution)."""

    problem: object
    original: object
    period_events: tuple = ()
    priors: tuple = ()
    notes: list = field(default_factory=list)


def read(path: Path, validate: bool = True) -> Converted:
    """Read, validate and convert a PEtab 2.0 problem (see the module docstring)."""
    import petab.v2 as pv2
    import yaml
    try:
        models = (yaml.safe_load(Path(path).read_text()) or {}).get("model_files") or {}
    except Exception:  # noqa: BLE001 - the petab package reports it below
        models = {}
    for mid, spec in (models.items() if isinstance(models, dict) else ()):
        language = str((spec or {}).get("language", "sbml")).lower()
        if language != "sbml":
            raise InputError(f"petab: '{Path(path).name}': model '{mid}' is in language '{language}'; this importer "
                             "reads SBML models only")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            problem = pv2.Problem.from_yaml(str(path))
    except Exception as exc:  # the petab package raises many types
        raise InputError(f"petab: cannot read '{path}': {exc}") from None
    if len(problem.models) != 1:
        raise InputError(f"petab: '{path}' has {len(problem.models)} models; this importer reads a "
                         "single model")
    model = problem.model
    if getattr(model, "sbml_model", None) is None:
        raise InputError(f"petab: '{path}': the model '{getattr(model, 'model_id', '?')}' is "
                         f"{type(model).__name__}, not SBML; this importer reads SBML models only")
    if validate:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            issues = problem.validate()
        errors = [i.message for i in issues if int(i.level) >= 30]
        if errors:
            raise InputError(f"petab: '{path}' is not a valid PEtab 2.0 problem: " + "; ".join(errors[:3]))
    return _Converter(problem, path).run()


def _num(v) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


class _Converter:
    def __init__(self, problem, path: Path):
        import libsbml
        self.p, self.path = problem, path
        self.doc = libsbml.SBMLDocument(problem.model.sbml_model.getSBMLDocument())  # a copy
        self.sbml = self.doc.getModel()
        self.pids = {par.id for par in problem.parameters}
        self.mapping = {m.petab_id: m.model_id for m in problem.mappings if m.model_id}
        self.events: list = []   # (event id, time parameter id) in creation order
        self.ia_reads = self._initial_assignment_symbols()
        # what the SBML reading makes a state: species, rate-rule and event-assigned variables
        self.stateful = ({sp_.getId() for sp_ in self.sbml.getListOfSpecies()}
                         | {r.getVariable() for r in self.sbml.getListOfRules() if r.isRate()}
                         | {a.getVariable() for ev in self.sbml.getListOfEvents()
                            for a in ev.getListOfEventAssignments()})

    # ------------------------------------------------------------------ helpers
    def _initial_assignment_symbols(self) -> set:
        """The ids the model's initial assignments read."""
        out = set()
        for ia in self.sbml.getListOfInitialAssignments():
            if ia.isSetMath():
                out |= _ast_names(ia.getMath())
        return out

    def _target(self, tid: str) -> str:
        return self.mapping.get(tid, tid)

    def _simple(self, value) -> float | str | None:
        """A change value for a condition table: a number, a parameter-table id, or None."""
        import sympy as sp
        value = sp.sympify(value)
        if value.is_number:
            return float(value)
        if isinstance(value, sp.Symbol) and value.name in self.pids:
            return value.name
        return None

    def _math(self, expr):
        """sympy expression (PEtab ids, mapped to model ids) -> libsbml ASTNode."""
        import libsbml
        import sympy as sp
        from petab.v1.math.printer import petab_math_str
        expr = sp.sympify(expr)
        expr = expr.xreplace({s: sp.Symbol(self.mapping[s.name]) for s in expr.free_symbols
                              if s.name in self.mapping})
        for s in expr.free_symbols:
            if self.sbml.getElementBySId(s.name) is None:
                if s.name not in self.pids:
                    raise InputError(f"petab: '{self.path.name}': condition value '{expr}' reads '{s.name}', "
                                     "which is neither a model entity nor a parameter of the parameter table")
                self._parameter(s.name, 0.0, constant=True)
        text = petab_math_str(expr).replace("**", "^")
        ast = libsbml.parseL3Formula(text)
        if ast is None:
            raise InputError(f"petab: '{self.path.name}': condition value '{expr}' cannot be written as SBML math")
        return ast

    def _parameter(self, pid: str, value: float, constant: bool):
        par = self.sbml.createParameter()
        par.setId(pid)
        par.setValue(value)
        par.setConstant(constant)
        return par

    # ------------------------------------------------------------------ periods -> events
    def _event(self, eid: str, changes, time_param: str):
        """An SBML event applying `changes` (PEtab Change objects) at `time >= time_param`."""
        import libsbml
        import sympy as sp
        ev = libsbml.Event(self.doc.getLevel(), self.doc.getVersion())
        ev.setId(eid)
        ev.setUseValuesFromTriggerTime(True)
        trig = ev.createTrigger()
        trig.setInitialValue(False)   # true at the start: fires there
        trig.setPersistent(True)
        trig.setMath(libsbml.parseL3Formula(f"time >= {time_param}"))
        targets = {self._target(c.target_id): c.target_value for c in changes}
        compartments = {t for t in targets if (el := self.sbml.getElementBySId(t)) is not None
                        and el.getTypeCode() == libsbml.SBML_COMPARTMENT}
        assigned = {r.getVariable() for r in self.sbml.getListOfRules() if r.isAssignment()}
        out: dict = {}
        for tid, value in targets.items():
            if tid in assigned:
                raise InputError(f"petab: '{self.path.name}': a condition changes '{tid}', which an "
                                 "assignment rule of the model sets")
            el = self.sbml.getElementBySId(tid)
            if el is None:   # an output parameter of the parameter table
                self._parameter(tid, 0.0, constant=False)
            elif el.getTypeCode() in (libsbml.SBML_PARAMETER, libsbml.SBML_COMPARTMENT, libsbml.SBML_SPECIES):
                el.setConstant(False)
            else:
                raise InputError(f"petab: '{self.path.name}': a condition changes '{tid}', which is not a "
                                 "parameter, species or compartment of the model")
            out[tid] = sp.sympify(value)
        # a compartment that changes keeps its species' concentrations (PEtab), the SBML
        # reading keeps amounts: assign each concentration species in it
        for cid in compartments:
            new_v, old_v = out[cid], sp.Symbol(cid)
            for s in self.sbml.getListOfSpecies():
                sid = s.getId()
                if s.getCompartment() != cid or s.getHasOnlySubstanceUnits() or sid in assigned:
                    continue
                s.setConstant(False)
                conc = out.get(sid, sp.Symbol(sid))
                # SBML computes every assignment of an event before the compartment changes:
                # an assigned concentration sets the amount in the old size. PEtab means the
                # concentration in the new size, so the SBML value is conc x new / old
                out[sid] = conc * new_v / old_v
        for tid, value in out.items():
            ea = ev.createEventAssignment()
            ea.setVariable(tid)
            ea.setMath(self._math(value))
        self._parameter(time_param, NEVER, constant=True)
        self.events.append(ev)

    # ------------------------------------------------------------------ run
    def run(self) -> Converted:  # noqa: C901 - one pass over the experiments
        import pandas as pd
        import petab.v1 as pv1
        from petab.v1.models.sbml_model import SbmlModel
        p, name = self.p, self.path.name
        cond_rows: dict[str, dict] = {}
        t0_of: dict[str, float] = {}
        pre_of: dict[str, str] = {}
        period_events: list[str] = []
        meas = p.measurements
        inf_exps = {m.experiment_id for m in meas if math.isinf(float(m.time))}
        last_time: dict = {}
        for m in meas:
            if math.isfinite(float(m.time)):
                last_time[m.experiment_id] = max(last_time.get(m.experiment_id, -math.inf), float(m.time))
        n_event = 0
        for exp in p.experiments:
            periods = exp.sorted_periods
            pre = [q for q in periods if q.is_preequilibration]
            finite = [q for q in periods if not q.is_preequilibration]
            if len(pre) > 1:
                raise InputError(f"petab: '{name}': experiment '{exp.id}' has {len(pre)} preequilibration periods")
            sim_id = SIM + exp.id
            row: dict = {}
            persistent: dict = {}
            if pre:
                pre_row: dict = {}
                for c in p.get_changes_for_period(pre[0]):
                    v, tid = self._simple(c.target_value), self._target(c.target_id)
                    if v is None:
                        raise InputError(f"petab: '{name}': experiment '{exp.id}', preequilibration condition "
                                         f"'{c.condition_id if hasattr(c, 'condition_id') else ''}' sets '{tid}' "
                                         f"to '{c.target_value}': only numbers and parameter ids are read there")
                    pre_row[tid] = v
                    if tid not in self.stateful:
                        persistent[tid] = v   # a parameter or compartment that is not a state keeps its value
                cond_rows[PRE + exp.id] = pre_row
                pre_of[exp.id] = PRE + exp.id
            t0 = float(finite[0].time) if finite else 0.0
            t0_of[exp.id] = t0
            row.update(persistent)
            for k, period in enumerate(finite):
                changes = p.get_changes_for_period(period)
                if not changes:
                    continue
                late = []
                if k == 0:
                    for c in changes:
                        v, tid = self._simple(c.target_value), self._target(c.target_id)
                        if v is not None:
                            row[tid] = v
                            continue
                        el = self.sbml.getElementBySId(tid)
                        if tid in self.ia_reads or (el is not None and el.getTypeCode() == _compartment_code()):
                            raise InputError(
                                f"petab: '{name}': experiment '{exp.id}' sets '{tid}' at its start to "
                                f"'{c.target_value}': an expression there is applied after the initial values; "
                                f"'{tid}' is a compartment or read by an initial assignment, whose values would "
                                "then differ from PEtab 2.0's")
                        late.append(c)
                else:
                    late = changes
                if not late:
                    continue
                if exp.id in inf_exps and float(period.time) > last_time.get(exp.id, -math.inf) and k > 0:
                    raise InputError(f"petab: '{name}': experiment '{exp.id}' has a period at t = {period.time} "
                                     "after its last finite measurement time and steady-state measurements")
                eid = f"_petab_period_{n_event}"
                tpar = f"{PERIOD_TIME}{n_event}"
                n_event += 1
                self._event(eid, late, tpar)
                row[tpar] = float(period.time)
                period_events.append(eid)
            cond_rows[sim_id] = row

        # the PEtab events first: applied before the model's own events at the same time
        if self.events:
            own = [self.sbml.getListOfEvents().remove(0) for _ in range(self.sbml.getNumEvents())]
            for ev in self.events + own:
                self.sbml.addEvent(ev)

        # ---- condition table: one row per condition, one column per target
        cols = sorted({k for r in cond_rows.values() for k in r})
        cdf = pd.DataFrame([{**{c: np.nan for c in cols}, **r} for r in cond_rows.values()],
                           index=pd.Index(list(cond_rows), name=pv1.CONDITION_ID), columns=cols, dtype=object)
        if not len(cond_rows):
            cdf = pd.DataFrame(index=pd.Index([], name=pv1.CONDITION_ID))

        # ---- measurement table
        rows = []
        for m in meas:
            eid = m.experiment_id or ""
            rows.append({
                pv1.OBSERVABLE_ID: m.observable_id,
                "experimentId": eid,
                pv1.SIMULATION_CONDITION_ID: (SIM + eid) if eid else "",
                pv1.PREEQUILIBRATION_CONDITION_ID: pre_of.get(eid, ""),
                pv1.TIME: float(m.time),
                pv1.MEASUREMENT: float(m.measurement),
                pv1.OBSERVABLE_PARAMETERS: ";".join(str(v) for v in m.observable_parameters) or np.nan,
                pv1.NOISE_PARAMETERS: ";".join(str(v) for v in m.noise_parameters) or np.nan,
                T0: t0_of.get(eid, 0.0),
            })
            if float(m.time) < t0_of.get(eid, 0.0):
                raise InputError(f"petab: '{name}': a measurement of '{m.observable_id}' in experiment '{eid}' "
                                 f"at t = {m.time} is before the experiment's start t0 = {t0_of.get(eid, 0.0)}")
        mdf = pd.DataFrame(rows)

        # ---- observable table
        import sympy as sp
        obs_rows = []
        formulas = {o.id: o.formula for o in p.observables}
        for o in p.observables:
            subs = {str(s): sp.Symbol(f"observableParameter{i + 1}_{o.id}")
                    for i, s in enumerate(o.observable_placeholders)}
            nsubs = {str(s): sp.Symbol(f"noiseParameter{i + 1}_{o.id}") for i, s in enumerate(o.noise_placeholders)}
            f = _rename(sp.sympify(o.formula), subs)
            noise = sp.sympify(o.noise_formula)
            own = [s for s in noise.free_symbols if s.name == o.id]
            if own:   # the noise of the observable's own value
                noise = noise.xreplace({own[0]: sp.sympify(formulas[o.id])})
            noise = _rename(noise, {**subs, **nsubs})
            dist = str(getattr(o.noise_distribution, "value", o.noise_distribution) or "normal")
            if dist not in NOISE:
                raise InputError(f"observable '{o.id}': noiseDistribution = '{dist}'; valid: {', '.join(NOISE)}")
            trans, noise_kind = NOISE[dist]
            from petab.v1.math.printer import petab_math_str
            obs_rows.append({pv1.OBSERVABLE_ID: o.id, pv1.OBSERVABLE_FORMULA: petab_math_str(f),
                             pv1.NOISE_FORMULA: petab_math_str(noise), pv1.OBSERVABLE_TRANSFORMATION: trans,
                             pv1.NOISE_DISTRIBUTION: noise_kind})
        odf = pd.DataFrame(obs_rows).set_index(pv1.OBSERVABLE_ID)

        # ---- parameter table (linear scale)
        par_rows, priors = [], []
        for par in p.parameters:
            par_rows.append({pv1.PARAMETER_ID: par.id, pv1.PARAMETER_SCALE: "lin",
                             pv1.LOWER_BOUND: _num(par.lb), pv1.UPPER_BOUND: _num(par.ub),
                             pv1.NOMINAL_VALUE: _num(par.nominal_value), pv1.ESTIMATE: int(bool(par.estimate))})
            if par.prior_distribution:
                priors.append(par.id)
        pdf = pd.DataFrame(par_rows).set_index(pv1.PARAMETER_ID)

        # ---- mapping table: rows that alias a model entity
        mapping_df = None
        if self.mapping:
            mapping_df = pd.DataFrame({pv1.PETAB_ENTITY_ID: list(self.mapping),
                                       pv1.MODEL_ENTITY_ID: list(self.mapping.values())}
                                      ).set_index(pv1.PETAB_ENTITY_ID)
        model = SbmlModel(sbml_model=self.sbml, sbml_document=self.doc)
        v1 = pv1.Problem(model=model, condition_df=cdf, measurement_df=mdf, observable_df=odf,
                         parameter_df=pdf, mapping_df=mapping_df)
        return Converted(problem=v1, original=p, period_events=tuple(period_events), priors=tuple(priors))


def _species_code():
    import libsbml
    return libsbml.SBML_SPECIES


def _compartment_code():
    import libsbml
    return libsbml.SBML_COMPARTMENT


def _rename(expr, names: dict):
    """expr with its symbols renamed by name (names: old name -> new symbol)."""
    return expr.xreplace({s: names[s.name] for s in expr.free_symbols if s.name in names})


def _ast_names(ast) -> set:
    """The names an SBML math AST reads."""
    out = set()
    stack = [ast]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        if node.isName():
            out.add(node.getName())
        stack.extend(node.getChild(i) for i in range(node.getNumChildren()))
    return out


# ---------------------------------------------------------------------- priors
def _dlog_density(kind: str, params: list, x: float) -> float:
    """d/dx log p(x) of a PEtab 2.0 prior inside its bounds (truncation only scales p)."""
    a = params[0] if params else math.nan
    b = params[1] if len(params) > 1 else math.nan
    if kind in ("", "uniform"):
        return 0.0
    if kind == "normal":
        return -(x - a) / b ** 2
    if kind == "laplace":
        return -math.copysign(1.0, x - a) / b
    if kind == "cauchy":
        return -2 * (x - a) / (b ** 2 + (x - a) ** 2)
    if kind == "chisquare":
        return (a / 2 - 1) / x - 0.5
    if kind == "exponential":
        return -1.0 / a
    if kind == "gamma":
        return (a - 1) / x - 1.0 / b
    if kind == "rayleigh":
        return 1.0 / x - x / a ** 2
    if kind == "log-normal":
        return -1.0 / x - (math.log(x) - a) / (b ** 2 * x)
    if kind == "log-laplace":
        return -1.0 / x - math.copysign(1.0, math.log(x) - a) / (b * x)
    if kind == "log-uniform":
        return -1.0 / x
    raise InputError(f"prior distribution '{kind}' is unknown")


def log_priors(problem, values: dict) -> dict:
    """{parameter id: (log prior density, its derivative)} at `values` (id -> linear value)
    for the estimated parameters of a PEtab 2.0 problem (`petab.v2.Problem`) with priors:
    the `petab` library's densities, truncated to the bounds; an estimated parameter
    without a prior has the uniform one over its bounds. Empty without priors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dists = problem.get_priors()
    out = {}
    for par in problem.parameters:
        if par.id not in dists:
            continue
        x = float(values[par.id])
        kind = str(getattr(par.prior_distribution, "value", par.prior_distribution) or "")
        with np.errstate(divide="ignore"):
            value = float(np.log(dists[par.id].pdf(x)))
        grad = _dlog_density(kind, [float(v) for v in par.prior_parameters], x) if math.isfinite(value) else 0.0
        out[par.id] = (value, grad)
    return out
