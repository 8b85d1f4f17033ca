"""SBML import: an SBML file -> `ODEModel` (and the `SBMLModel` the PEtab importer builds on).

    model = sens.sbml.load("model.xml")          # an ODEModel; states and parameters keep SBML ids

What is read (python-libsbml): species as concentrations (amounts when
`hasOnlySubstanceUnits`), compartments, boundary and constant species (states with zero
rate unless a rate rule drives them), global and kinetic-law (local) parameters (a local
`k` of reaction `r` becomes the parameter `r_k`), reactions with stoichiometry
(d[S]/dt = sum_r n_rS v_r / V_S, v_r the kinetic law in amount/time), compartments whose size
changes (rate or assignment rule, or an event: a species' state is then its amount n_S,
d n_S/dt = sum_r n_rS v_r, and its id the rule [S] = n_S / V_S), conversion factors,
assignment rules, rate rules, initial assignments (the initial state is a function y0(p) of
the parameters; a constant set by an initial assignment keeps its value at the start),
function definitions, `piecewise`, relations and logic, csymbol time, avogadro and
`rateOf` (the rate of a state, or the total time derivative of a rule variable), reaction
ids in math (the reaction's rate) and species-reference ids (the stoichiometry: a constant,
or set by an initial assignment, assignment rule, rate rule or event), the comp package
(flattened by libsbml's CompFlatteningConverter before reading). Elements without math
are ignored (SBML L3v2). A model without states gets one constant placeholder state
(`NO_STATE`). Algebraic rules and fast reactions: see `sbml_algebraic` (solved rules become
assignment rules; nonlinear rules and fast reactions constrain the states). Refused with a
`ModelError` naming the element: `delay()`, delayed events, compound triggers, event priorities where two events could
fire together,
required packages other than comp, comp models whose external files are missing.
Events (a trigger `a > b` or `a < b` and assignments to species, parameters, compartments
and species references; a parameter that an event assigns becomes a state with zero rate)
become `sensitivity.Event`s of the ODEModel (root finding on a - b, direction from the
comparison, the assignments as the reset; a compartment that jumps keeps its species'
amounts). Delayed events are refused.
`SBMLModel.event_meta` keeps each trigger's initialValue and, for triggers
`time >= T(p)`, the event time T (the PEtab importer cuts its solve there); parameters that
are switching times of piecewise functions become the ODEModel's breakpoints.

Maths: libsbml AST -> sympy -> Python source over `jax.numpy`, compiled once per file
(keyed by path and content, so two loads share functions and compiled code). The rates of
a large model's mass-action terms are arrays of monomials instead (`sbml_vector`: a few
array operations whatever the number of reactions, so XLA compiles them in seconds);
`SBMLModel.rate_arrays` says which.

Piecewise functions of time (`piecewise(a, t < T, b)`): their switching times are
*breakpoints*; the conditions are evaluated at a separate "condition time" `tc` so that a
solver cut into segments at the breakpoints evaluates each segment on one side
(AMICI treats them as events). `SBMLModel.breakpoints(p)` gives the times.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp
from sympy.printing.numpy import JaxPrinter

from ..core import sparsity
from ..core.errors import ModelError
from ..core.model import ODEModel
from ..core.schedule import Event, SwitchTime
from . import sbml_algebraic, sbml_vector

T = sp.Symbol("__time__", real=True)      # SBML time
TC = sp.Symbol("__tcond__", real=True)    # time as seen by time conditions (piecewise)
AVOGADRO = 6.02214179e23
RateOf = sp.Function("rateOf")  # csymbol rateOf(x): dx/dt, resolved once the rates are known
MAX_SCHEDULED_EVENTS = 40  # scheduled events of one model (integrate.scheduled): more are refused
NO_STATE = "_no_state"  # the constant state of a model that has none (no species, no rate rule)


# --------------------------------------------------------------------------- AST -> sympy
def _as_number(x):
    """x as a number: a Boolean (SBML lets `true`, `false` and comparisons stand for 1 and 0)
    becomes 1 or 0, or piecewise(1, x, 0); anything else as it is."""
    if x is sp.true:
        return sp.Integer(1)
    if x is sp.false:
        return sp.Integer(0)
    if isinstance(x, sp.logic.boolalg.Boolean) and not isinstance(x, sp.Symbol):
        return sp.Piecewise((sp.Integer(1), x), (sp.Integer(0), True))
    return x


def _as_truth(x):
    """x as a truth value: a number is true when nonzero (SBML's rule for a number in logic)."""
    if isinstance(x, sp.logic.boolalg.Boolean):
        return x
    if x.is_number:
        return sp.false if x.is_zero else sp.true
    return sp.Ne(x, 0)


class _Converter:
    """libsbml ASTNode -> sympy expression, with function definitions inlined."""

    def __init__(self, functions: dict, where: str = ""):
        self.functions = functions   # id -> (args tuple of symbols, body)
        self.where = where
        self.locals: dict[str, sp.Expr] = {}

    def __call__(self, node, where: str) -> sp.Expr:
        self.where = where
        if isinstance(node, sp.Basic):  # already solved (sbml_algebraic.Solved)
            return node
        if node is None:
            raise ModelError(f"{where}: has no math")
        out = self.conv(node)
        # a Boolean where a number is meant (a kinetic law or rule of `true`): 1 or 0; a trigger,
        # a function's body (its call decides) and an algebraic rule keep their logic
        return out if where.startswith(("trigger of", "functionDefinition", "SBML algebraic")) else _as_number(out)

    def fail(self, what: str):
        raise ModelError(f"{self.where}: {what} is not supported by the SBML import")

    def conv(self, n) -> sp.Expr:  # noqa: C901 - one dispatch over AST node types
        import libsbml as L
        ty = n.getType()
        kids = [n.getChild(i) for i in range(n.getNumChildren())]
        # operands as numbers (c) or as they are (cb: logic, function arguments)
        c = lambda: [_as_number(self.conv(k)) for k in kids]  # noqa: E731
        cb = lambda: [self.conv(k) for k in kids]  # noqa: E731
        if ty == L.AST_INTEGER:
            return sp.Integer(n.getInteger())
        if ty in (L.AST_REAL, L.AST_REAL_E):
            v = n.getReal()
            if math.isinf(v):
                return sp.oo if v > 0 else -sp.oo
            if math.isnan(v):
                return sp.nan
            return sp.Float(v, 17)
        if ty == L.AST_RATIONAL:
            return sp.Rational(n.getNumerator(), n.getDenominator())
        if ty == L.AST_NAME:
            name = n.getName()
            if name in self.locals:
                return self.locals[name]
            return sp.Symbol(name, real=True)
        if ty == L.AST_NAME_TIME:
            return T
        if ty == L.AST_NAME_AVOGADRO:
            return sp.Float(AVOGADRO, 17)
        if ty == L.AST_CONSTANT_E:
            return sp.E
        if ty == L.AST_CONSTANT_PI:
            return sp.pi
        if ty == L.AST_CONSTANT_TRUE:
            return sp.true
        if ty == L.AST_CONSTANT_FALSE:
            return sp.false
        if ty == L.AST_PLUS:
            return sp.Add(*c()) if kids else sp.Integer(0)
        if ty == L.AST_MINUS:
            a = c()
            return -a[0] if len(a) == 1 else a[0] - a[1]
        if ty == L.AST_TIMES:
            return sp.Mul(*c()) if kids else sp.Integer(1)
        if ty == L.AST_DIVIDE:
            a, b = c()
            return a / b
        if ty in (L.AST_POWER, L.AST_FUNCTION_POWER):
            a, b = c()
            return a ** b
        if ty == L.AST_FUNCTION_ROOT:
            a = c()
            return a[-1] ** (1 / a[0]) if len(a) == 2 else sp.sqrt(a[0])
        if ty == L.AST_FUNCTION_LOG:
            a = c()
            return sp.log(a[-1], a[0]) if len(a) == 2 else sp.log(a[0], 10)
        unary = {
            L.AST_FUNCTION_EXP: sp.exp, L.AST_FUNCTION_LN: sp.log, L.AST_FUNCTION_ABS: sp.Abs,
            L.AST_FUNCTION_FLOOR: sp.floor, L.AST_FUNCTION_CEILING: sp.ceiling,
            L.AST_FUNCTION_SIN: sp.sin, L.AST_FUNCTION_COS: sp.cos, L.AST_FUNCTION_TAN: sp.tan,
            L.AST_FUNCTION_ARCSIN: sp.asin, L.AST_FUNCTION_ARCCOS: sp.acos,
            L.AST_FUNCTION_ARCTAN: sp.atan, L.AST_FUNCTION_SINH: sp.sinh,
            L.AST_FUNCTION_COSH: sp.cosh, L.AST_FUNCTION_TANH: sp.tanh,
            L.AST_FUNCTION_SEC: sp.sec, L.AST_FUNCTION_CSC: sp.csc, L.AST_FUNCTION_COT: sp.cot,
            L.AST_FUNCTION_ARCSINH: sp.asinh, L.AST_FUNCTION_ARCCOSH: sp.acosh,
            L.AST_FUNCTION_ARCTANH: sp.atanh,
            # the reciprocal functions in elementary form (the printer knows these)
            L.AST_FUNCTION_SECH: lambda x: 1 / sp.cosh(x), L.AST_FUNCTION_CSCH: lambda x: 1 / sp.sinh(x),
            L.AST_FUNCTION_COTH: lambda x: 1 / sp.tanh(x), L.AST_FUNCTION_ARCSEC: lambda x: sp.acos(1 / x),
            L.AST_FUNCTION_ARCCSC: lambda x: sp.asin(1 / x), L.AST_FUNCTION_ARCCOT: lambda x: sp.atan(1 / x),
            L.AST_FUNCTION_ARCSECH: lambda x: sp.acosh(1 / x), L.AST_FUNCTION_ARCCSCH: lambda x: sp.asinh(1 / x),
            L.AST_FUNCTION_ARCCOTH: lambda x: sp.atanh(1 / x),
        }
        if ty in unary:
            return unary[ty](*c())
        if ty == L.AST_LOGICAL_NOT:
            return sp.Not(*[_as_truth(x) for x in cb()])
        if ty == L.AST_LOGICAL_AND:
            return sp.And(*[_as_truth(x) for x in cb()])
        if ty == L.AST_LOGICAL_OR:
            return sp.Or(*[_as_truth(x) for x in cb()])
        if ty == L.AST_LOGICAL_XOR:
            return sp.Xor(*[_as_truth(x) for x in cb()])
        if ty == getattr(L, "AST_LOGICAL_IMPLIES", -999):
            a, b = (_as_truth(x) for x in cb())
            return sp.Implies(a, b)
        if ty == getattr(L, "AST_FUNCTION_RATE_OF", -999):
            a = c()
            if len(a) != 1 or not isinstance(a[0], sp.Symbol):
                self.fail("rateOf of an expression (not of one id)")
            return RateOf(a[0])
        rel = {L.AST_RELATIONAL_EQ: sp.Eq, L.AST_RELATIONAL_NEQ: sp.Ne, L.AST_RELATIONAL_LT: sp.Lt,
               L.AST_RELATIONAL_LEQ: sp.Le, L.AST_RELATIONAL_GT: sp.Gt, L.AST_RELATIONAL_GEQ: sp.Ge}
        if ty in rel:
            a = c()
            if len(a) != 2:
                return sp.And(*[rel[ty](x, y) for x, y in zip(a[:-1], a[1:])])
            return rel[ty](a[0], a[1], evaluate=False) if ty not in (L.AST_RELATIONAL_EQ, L.AST_RELATIONAL_NEQ) \
                else rel[ty](a[0], a[1])
        if ty == getattr(L, "AST_FUNCTION_MAX", -999):
            return sp.Max(*c())
        if ty == getattr(L, "AST_FUNCTION_MIN", -999):
            return sp.Min(*c())
        if ty == getattr(L, "AST_FUNCTION_QUOTIENT", -999):
            a, b = c()
            return sp.floor(a / b)
        if ty == getattr(L, "AST_FUNCTION_REM", -999):
            a, b = c()
            return a - b * sp.floor(a / b)
        if ty == L.AST_FUNCTION_PIECEWISE:
            a = cb()
            pieces = [(_as_number(a[i]), _as_truth(a[i + 1])) for i in range(0, len(a) - 1, 2)]
            if len(a) % 2 == 1:
                pieces.append((_as_number(a[-1]), sp.true))
            return sp.Piecewise(*pieces)
        if ty == L.AST_FUNCTION_DELAY:
            self.fail("delay()")
        if ty == L.AST_FUNCTION:
            name = n.getName()
            if name not in self.functions:
                raise ModelError(f"{self.where}: calls unknown function '{name}'")
            args, body = self.functions[name]
            vals = cb()
            if len(vals) != len(args):
                raise ModelError(f"{self.where}: function '{name}' takes {len(args)} arguments, "
                                 f"got {len(vals)}")
            return body.xreplace(dict(zip(args, vals)))
        if ty == L.AST_LAMBDA:
            raise ModelError(f"{self.where}: a lambda outside a function definition")
        self.fail(f"the MathML element '{n.getName() or ty}'")


def _starts_at_zero(meta) -> bool:
    """A trigger `time > 0`: false at t = 0, true just after, so it fires at the start."""
    T = meta["time"]
    return T is not None and T.is_number and T == 0 and meta.get("strict", True)


def _function_definitions(model) -> dict:
    import libsbml as L
    functions: dict = {}
    conv = _Converter(functions)
    for fd in model.getListOfFunctionDefinitions():
        math_ = fd.getMath()
        where = f"functionDefinition '{fd.getId()}'"
        if math_ is None or math_.getType() != L.AST_LAMBDA:
            raise ModelError(f"{where}: its math is not a lambda")
        nargs = math_.getNumChildren() - 1
        args = tuple(sp.Symbol(f"__arg_{fd.getId()}_{math_.getChild(i).getName()}", real=True)
                     for i in range(nargs))
        conv.locals = {math_.getChild(i).getName(): args[i] for i in range(nargs)}
        body = conv(math_.getChild(nargs), where)
        conv.locals = {}
        functions[fd.getId()] = (args, body)
    return functions


# --------------------------------------------------------------------------- the model
@dataclass(frozen=True, eq=False)
class SBMLModel:
    """An SBML model as symbolic pieces and compiled JAX functions.

    states: state ids (species, and parameters/compartments driven by rate rules).
    parameters: free parameter ids with defaults `parameter_values` (global parameters,
        constant compartments, local parameters as `reaction_local`).
    rules: assignment-rule variables and constants set by initial assignments, in
        evaluation order, as sympy expressions of states, parameters and time.
    Functions (all traced by JAX; `pv` is the parameter vector in `parameters` order):
        rhs(t, y, pv, tc) -> dy/dt (n_states,); `tc` is the time the piecewise time
            conditions see (pass t unless solving in segments cut at the breakpoints)
        initial(pv) -> y0 (n_states,)
        rule_values(t, y, pv) -> (n_rules,)
        breakpoints(pv) -> (n_breakpoints,) switching times of piecewise conditions in time
            (+inf where a condition never switches)
    """

    id: str
    states: tuple[str, ...]
    parameters: tuple[str, ...]
    parameter_values: np.ndarray
    rules: dict
    state_rates: dict
    initial_exprs: dict
    breakpoint_exprs: tuple
    rhs: Callable
    initial: Callable
    rule_values: Callable
    breakpoints: Callable
    source: str = ""
    events: tuple = ()
    event_meta: tuple = ()
    event_times: Callable | None = None
    _event_exprs: tuple = ()
    event_parameters: tuple = ()   # parameters assigned by events (states with zero rate)
    # scheduled events (delays, priorities, persistence, compound triggers): per event
    # {"trigger": trigger(g) -> bool, "delay", "priority": (t, y, pv) -> scalar or None}
    event_schedule: tuple = ()
    species: dict = field(default_factory=dict)  # species id -> {"compartment", "amount": its value is an amount}
    hidden: frozenset = frozenset()  # no outputs: reaction rates, stoichiometries
    # per state i, the states its rate reads (through assignment rules): J_ij may be nonzero
    # only for j in jacobian_reads[i]; None when the rhs is not the rates' code alone
    jacobian_reads: tuple | None = None
    # the rates' mass-action terms as arrays (`sbml_vector.MonomialRates`), None when the rhs
    # is unrolled code alone
    rate_arrays: object | None = None
    _ode: dict = field(default_factory=dict)

    def _initial_with_t0_events(self):
        """initial(pv) followed by the events whose trigger is true at t = 0 and whose
        initialValue is false (SBML: they fire at the start), as one function of pv."""
        fire = [k for k, meta in enumerate(self.event_meta) if not meta["initial_value"] or _starts_at_zero(meta)]
        if not fire or self.event_schedule:  # scheduled events fire at t0 in the solve
            return self.initial
        initial, events, meta = self.initial, self.events, self.event_meta

        def init(pv):
            y = initial(pv)
            t0 = jnp.zeros((), y.dtype)
            out = y
            for k in fire:
                g = jnp.asarray(events[k][1](t0, y, pv), y.dtype).reshape(())
                up, strict = meta[k]["direction"] > 0, meta[k].get("strict", True)
                true = (g > 0 if strict else g >= 0) if up else (g < 0 if strict else g <= 0)
                if meta[k]["initial_value"]:  # `time > 0`: turns true just after the start
                    true = jnp.asarray(True)
                out = out + jnp.where(true, jnp.asarray(events[k][2](t0, y, pv), y.dtype) - y, 0.0)
            return out
        return init

    @property
    def n_breakpoints(self) -> int:
        return len(self.breakpoint_exprs)

    @property
    def jacobian_pattern(self) -> sparsity.Pattern | None:
        """The pattern of d rhs / d y read from the rate expressions (`sparsity.from_reads`,
        source "symbolic": every entry outside it is zero at every point), or None."""
        return None if self.jacobian_reads is None else sparsity.from_reads(self.jacobian_reads)

    def symbol(self, name: str) -> sp.Symbol:
        return sp.Symbol(name, real=True)

    def expression(self, name: str) -> sp.Expr | None:
        """The sympy expression of a state, parameter or rule variable, in states, parameters
        and time (rules substituted); None for an unknown name."""
        if name in self.rules:
            return self.rules[name]
        if name in self.states or name in self.parameters:
            return self.symbol(name)
        return None

    def ode_model(self) -> "ODEModel":
        """The `ODEModel` (cached: every call returns the same functions, so compiled code
        is shared). Observables: every species (state) and every assignment-rule variable.

        Initial assignments that depend on parameters: the core's y0 is a number, so a state
        s whose initial value is y0_s(p) is integrated as u_s = s - (y0_s(p) - y0_s(p_default))
        from u_s(0) = y0_s(p_default); the rhs, events and outputs add the shift back. The
        output named s is the species (use it, not the raw state, when parameters move its
        initial value), and derivatives with respect to those parameters include dy0/dp.
        """
        if "model" in self._ode:
            return self._ode["model"]
        names = self.parameters
        rhs_v, rule_values = self.rhs, self.rule_values
        initial = self._initial_with_t0_events()
        y0 = np.asarray(initial(jnp.asarray(self.parameter_values)), dtype=np.float64)
        bad = [s for s, v in zip(self.states, y0) if not np.isfinite(v)]
        if bad:
            raise ModelError(f"SBML model '{self.id}': the initial value of species '{bad[0]}' is "
                             "not finite (missing initialConcentration / initialAmount?)")
        psyms = {sp.Symbol(k, real=True) for k in names}
        mask = np.array([bool(sp.sympify(self.initial_exprs[s]).free_symbols & psyms) for s in self.states])
        for (_, _, _, assigns), meta in zip(self._event_exprs, self.event_meta):
            if (not meta["initial_value"] or _starts_at_zero(meta)) and not self.event_schedule:  # y0 may depend on p
                mask |= np.array([s in assigns for s in self.states])

        def pvec(p):
            return jnp.stack([jnp.asarray(p[k], dtype=jnp.float64) for k in names]) if names \
                else jnp.zeros((0,))

        def species(u, pv):  # the species from the integrated state (see the docstring)
            if not mask.any():
                return u
            return u + jnp.where(mask, initial(pv) - y0, 0.0)

        def rhs(t, u, p):
            pv = pvec(p)
            return rhs_v(t, species(u, pv), pv, t)

        def state_obs(i, t, u, p):
            return species(u, pvec(p))[i]

        def rule_obs(j, t, u, p):
            pv = pvec(p)
            return rule_values(t, species(u, pv), pv)[j]

        def condition(fn, t, u, p):
            pv = pvec(p)
            return fn(t, species(u, pv), pv)

        def reset(fn, t, u, p):
            pv = pvec(p)
            return fn(t, species(u, pv), pv) - (species(u, pv) - u)

        obs = {s: functools.partial(state_obs, i) for i, s in enumerate(self.states)
               if s != NO_STATE and s not in self.hidden}
        for j, r in enumerate(self.rules):
            if r not in obs and r not in self.hidden:
                obs[r] = functools.partial(rule_obs, j)
        params = dict(zip(self.parameters, self.parameter_values.tolist()))
        # a trigger `time >= T` (or >) with a number T <= 0 is true from the start on and never
        # turns true again: it can only fire at t = 0 (handled in the initial state)
        events = [Event(functools.partial(condition, cond), functools.partial(reset, res), direction=direction)
                  for (_, cond, res, direction), meta in zip(self.events, self.event_meta)
                  if not (meta["time"] is not None and meta["time"].is_number and meta["time"] <= 0)]
        if self.event_schedule:  # triggers, delays, priorities, persistence: the scheduled solve
            index = {s: i for i, s in enumerate(self.states)}
            events = [Event(functools.partial(condition, cond), functools.partial(reset, res),
                            trigger=fns["trigger"], persistent=meta["persistent"],
                            delay=None if fns["delay"] is None else functools.partial(condition, fns["delay"]),
                            priority=None if fns["priority"] is None else functools.partial(condition, fns["priority"]),
                            values_at_trigger=meta["trigger_values"], initial_value=meta["initial_value"],
                            targets=tuple(index[s] for s in meta["targets"]))
                      for (_, cond, res, _), meta, fns in zip(self.events, self.event_meta, self.event_schedule)]
        # switching times that are parameters or expressions of parameters: the solve is cut
        # there (exact, and their derivatives right); fixed numbers: the step controller steps
        # onto them
        bps = [str(b) for b in self.breakpoint_exprs if isinstance(b, sp.Symbol) and str(b) in params]

        def switch_time(j, p):
            return self.breakpoints(pvec(p))[j]

        for j, b in enumerate(self.breakpoint_exprs):
            depends = sorted(str(x) for x in b.free_symbols)
            if not isinstance(b, sp.Symbol) and depends and all(q in params for q in depends):
                bps.append(SwitchTime(str(b), functools.partial(switch_time, j), tuple(depends)))
        bps += sorted({float(b) for b in self.breakpoint_exprs if b.is_number and b.is_finite})
        model = ODEModel(self.id, self.states, params, rhs, y0, observables=obs, stiff=True,
                         doc=f"Imported from SBML {self.source}", breakpoints=bps, events=events)
        self._ode["model"] = model
        return model


_CACHE: dict = {}


def load(path: str | Path) -> "ODEModel":
    """Read an SBML file into an `ODEModel` whose states and parameters keep their SBML ids.

    Species are concentrations (amounts if `hasOnlySubstanceUnits`); the default y0 is the
    initial state at the default parameters (initial assignments evaluated). Outputs: every
    state and every assignment-rule variable. Two loads of the same file return the same
    model functions (one compile). Raises `ModelError` naming an unsupported element.
    """
    return read(path).ode_model()


def read(path: str | Path) -> SBMLModel:
    """Read an SBML file into an `SBMLModel` (cached by path and content)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelError(f"SBML file '{path}' cannot be read: {exc.strerror}") from None
    key = (str(path.resolve()), hashlib.sha256(data).hexdigest())
    if key not in _CACHE:
        _CACHE[key] = from_string(data.decode("utf-8"), source=str(path), folder=path.resolve().parent)
    return _CACHE[key]


def from_string(xml: str, source: str = "<string>", folder: str | Path | None = None) -> SBMLModel:
    """Build an `SBMLModel` from SBML text. `folder`: where the comp package's external
    model definitions are looked up (the file's folder; default the working directory)."""
    import libsbml as L
    doc = L.readSBMLFromString(xml)
    errors = [doc.getError(i) for i in range(doc.getNumErrors())
              if doc.getError(i).getSeverity() >= L.LIBSBML_SEV_ERROR]
    if errors:
        raise ModelError(f"SBML file {source}: {errors[0].getMessage().strip()} "
                         f"(line {errors[0].getLine()})")
    doc = _flatten_comp(doc, source, folder)
    model = doc.getModel()
    if model is None:
        raise ModelError(f"SBML file {source} holds no model")
    return _build(model, source)


def _flatten_comp(doc, source: str, folder):
    """The document with the comp package's submodels flattened into one model (libsbml's
    CompFlatteningConverter); `ModelError` naming a required package other than comp, or
    the converter's first error."""
    import libsbml as L
    ns = doc.getSBMLNamespaces().getNamespaces()
    declared = {ns.getPrefix(i) for i in range(ns.getLength()) if ns.getPrefix(i)}
    for name in sorted(declared):
        if doc.getLevel() >= 3 and name != "comp" and doc.isPackageEnabled(name) and doc.getPackageRequired(name):
            raise ModelError(f"SBML file {source}: the package '{name}' is required but not read by the "
                             "SBML import (read: core and comp)")
    if not doc.isPackageEnabled("comp"):
        return doc
    if folder is not None:
        doc.setLocationURI(Path(folder).resolve().as_uri() + "/")
    props = L.ConversionProperties()
    props.addOption("flatten comp", True)
    props.addOption("leavePorts", False)
    status = doc.convert(props)
    if status != L.LIBSBML_OPERATION_SUCCESS:
        errs = [doc.getError(i) for i in range(doc.getNumErrors())
                if doc.getError(i).getSeverity() >= L.LIBSBML_SEV_ERROR]
        why = errs[0].getMessage().strip() if errs else f"libsbml status {status}"
        raise ModelError(f"SBML file {source}: the comp package (submodels) cannot be flattened: {why}")
    return doc


def _build(model, source: str) -> SBMLModel:  # noqa: C901 - the SBML semantics in one place
    import libsbml as L
    mid = model.getId() or Path(source).stem or "sbml_model"
    mid = "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in mid)
    if not (mid[0].isalpha() or mid[0] == "_"):
        mid = "m_" + mid

    functions = _function_definitions(model)
    conv = _Converter(functions)
    sym = lambda name: sp.Symbol(name, real=True)  # noqa: E731

    # an element without math is ignored (SBML L3v2)
    assignment = {r.getVariable(): r for r in model.getListOfRules() if r.isAssignment() and r.isSetMath()}
    rate_rules = {r.getVariable(): r for r in model.getListOfRules() if r.isRate() and r.isSetMath()}
    # algebraic rules: solved ones join the assignment rules, DAE variables get a placeholder
    # rate; fast reactions and DAE variables are held on their constraints (sbml_algebraic)
    constraints = sbml_algebraic.read(model, conv, assignment, rate_rules)
    init_assign = {ia.getSymbol(): ia for ia in model.getListOfInitialAssignments() if ia.isSetMath()}
    # parameters changed by event assignments are states with zero rate (piecewise constant)
    event_targets = {ea.getVariable() for ev in model.getListOfEvents() for ea in ev.getListOfEventAssignments()
                     if ea.isSetMath() and ev.getTrigger() is not None and ev.getTrigger().isSetMath()}

    # ---- compartments and parameters
    params: list[str] = []
    values: list[float] = []
    rules: dict[str, sp.Expr] = {}           # assignment rules and IA-derived constants
    states: list[str] = []
    rates: dict[str, sp.Expr] = {}
    init: dict[str, sp.Expr] = {}
    comp_size: dict[str, sp.Expr] = {}
    reaction_ids: set[str] = set()
    constants: set[str] = set()   # rule variables that are constants: values at the start

    def value_or_nan(obj, has, get):
        return float(get()) if has() else float("nan")

    for comp in model.getListOfCompartments():
        cid = comp.getId()
        size = value_or_nan(comp, comp.isSetSize, comp.getSize)
        if comp.isSetVolume() and not comp.isSetSize():
            size = comp.getVolume()
        if math.isnan(size) and cid not in init_assign and cid not in assignment:
            size = 1.0  # SBML leaves it undefined; 1 is what simulators assume
        comp_size[cid] = sym(cid)
        _classify(cid, size, assignment, rate_rules, init_assign, conv, params, values, rules,
                  states, rates, init, "compartment", event_target=cid in event_targets, constants=constants)
    for par in model.getListOfParameters():
        pid = par.getId()
        val = value_or_nan(par, par.isSetValue, par.getValue)
        _classify(pid, val, assignment, rate_rules, init_assign, conv, params, values, rules,
                  states, rates, init, "parameter", event_target=pid in event_targets, constants=constants)
    compartments_varying = {c for c in comp_size if c in rates or c in assignment}

    # ---- local parameters: renamed reaction_local
    local_subs: dict[str, dict] = {}
    for r in model.getListOfReactions():
        kl = r.getKineticLaw()
        if kl is None:
            continue
        subs = {}
        for lp in list(kl.getListOfParameters()) + list(getattr(kl, "getListOfLocalParameters", lambda: [])()):
            new = f"{r.getId()}_{lp.getId()}"
            if new in params:
                continue
            params.append(new)
            values.append(float(lp.getValue()) if lp.isSetValue() else float("nan"))
            subs[sym(lp.getId())] = sym(new)
        local_subs[r.getId()] = subs

    # ---- species
    species_info = {}
    for s in model.getListOfSpecies():
        sid = s.getId()
        comp = s.getCompartment()
        hosu = bool(s.getHasOnlySubstanceUnits())
        V = comp_size.get(comp, sp.Integer(1))
        if s.isSetInitialConcentration():
            base = sp.Float(s.getInitialConcentration(), 17) * (V if hosu else 1)
        elif s.isSetInitialAmount():
            base = sp.Float(s.getInitialAmount(), 17) / (1 if hosu else V)
        else:
            base = sp.nan
        cf = s.getConversionFactor() if s.isSetConversionFactor() else (
            model.getConversionFactor() if model.isSetConversionFactor() else "")
        species_info[sid] = dict(hosu=hosu, V=V, compartment=comp, boundary=bool(s.getBoundaryCondition()),
                                 constant=bool(s.getConstant()), cf=sym(cf) if cf else sp.Integer(1))
        if sid in assignment:
            rules[sid] = conv(assignment[sid].getMath(), f"assignmentRule for '{sid}'")
            continue
        if comp in compartments_varying and not hosu and sid not in rate_rules:
            # a concentration in a compartment whose size changes: the state is the amount
            # n = [S] V (d n/dt = sum_r n_rS v_r), the concentration the rule [S] = n / V
            amt = f"{sid}_amount"
            if amt in comp_size or model.getElementBySId(amt) is not None:
                raise ModelError(f"SBML species '{sid}' in the variable compartment '{comp}': the id "
                                 f"'{amt}' for its amount is taken")
            species_info[sid]["amount_state"] = amt
            states.append(amt)
            c0 = (conv(init_assign[sid].getMath(), f"initialAssignment for '{sid}'")
                  if sid in init_assign else base)
            init[amt] = c0 * V
            rates[amt] = sp.Integer(0)
            rules[sid] = sym(amt) / V
            continue
        states.append(sid)
        init[sid] = (conv(init_assign[sid].getMath(), f"initialAssignment for '{sid}'")
                     if sid in init_assign else base)
        if sid in rate_rules:
            rates[sid] = conv(rate_rules[sid].getMath(), f"rateRule for '{sid}'")
        else:
            rates[sid] = sp.Integer(0)

    # ---- species references with an id: a rule variable (assignment rule, initial
    # assignment, or its constant stoichiometry) or a state (rate rule, event assignment)
    for r in model.getListOfReactions():
        for ref in list(r.getListOfReactants()) + list(r.getListOfProducts()):
            if not ref.isSetId():
                continue
            srid = ref.getId()
            n0 = float(ref.getStoichiometry()) if ref.isSetStoichiometry() else 1.0
            if ref.isSetStoichiometryMath() or (not ref.isSetStoichiometry() and srid not in init_assign
                                                and srid not in assignment):
                n0 = 1.0 if not ref.isSetStoichiometryMath() else float("nan")
            _classify(srid, n0, assignment, rate_rules, init_assign, conv, params, values, rules,
                      states, rates, init, "speciesReference", event_target=srid in event_targets,
                      constants=constants)
            if params and params[-1] == srid:  # a constant stoichiometry: a named constant
                params.pop()
                rules[srid] = _number(values.pop())
                constants.add(srid)

    # ---- a model without states (only rules and constants) still gets one: a constant
    # placeholder, so that it is an ODE model that simulates
    if not states:
        if model.getElementBySId(NO_STATE) is not None:
            raise ModelError(f"SBML model '{mid}' has no state and the id '{NO_STATE}' for a placeholder is taken")
        states.append(NO_STATE)
        rates[NO_STATE] = sp.Integer(0)
        init[NO_STATE] = sp.Integer(0)

    # ---- reactions
    for r in model.getListOfReactions():
        rid = r.getId()
        kl = r.getKineticLaw()
        if kl is None or kl.getMath() is None:
            raise ModelError(f"SBML reaction '{rid}' has no kinetic law")
        v = conv(kl.getMath(), f"kineticLaw of reaction '{rid}'").xreplace(local_subs.get(rid, {}))
        if rid in rules or rid in states:
            raise ModelError(f"SBML reaction '{rid}': its id is also a rule variable or state")
        rules[rid] = v  # the reaction's rate (amount / time), as used in math and asked as output
        reaction_ids.add(rid)
        for refs, sign in ((r.getListOfReactants(), -1), (r.getListOfProducts(), 1)):
            for ref in refs:
                sid = ref.getSpecies()
                info = species_info.get(sid)
                if info is None:
                    raise ModelError(f"SBML reaction '{rid}' names unknown species '{sid}'")
                if ref.isSetStoichiometryMath():
                    n = conv(ref.getStoichiometryMath().getMath(),
                             f"stoichiometryMath of '{sid}' in reaction '{rid}'")
                elif ref.isSetId():
                    n = sym(ref.getId())
                else:
                    n = sp.Float(ref.getStoichiometry(), 17) if ref.isSetStoichiometry() else sp.Integer(1)
                    if n == int(n):
                        n = sp.Integer(int(n))
                if info["boundary"] or info["constant"] or sid in rate_rules or sid in assignment:
                    continue
                # the reaction's rate by its name: computed once, read by every species it changes
                term = sign * n * constraints.flux(rid, sym(rid)) * info["cf"]
                if "amount_state" in info:
                    rates[info["amount_state"]] = rates[info["amount_state"]] + term
                else:
                    rates[sid] = rates[sid] + (term if info["hosu"] else term / info["V"])

    # ---- rate rules on parameters / compartments (states already made by _classify)
    for name in list(rates):
        if name not in species_info and name in rate_rules:
            rates[name] = conv(rate_rules[name].getMath(), f"rateRule for '{name}'")
    for name, rr in rate_rules.items():
        if name not in rates:
            raise ModelError(f"SBML rateRule for '{name}': no species, parameter or compartment of that id")
    rates = constraints.split(rates)

    # ---- order the rules (dependencies among rule variables)
    rules = _topological(rules)

    # ---- events: trigger g(t, y, p) crossing zero, assignments to states
    events, event_meta = [], []
    live = [ev for ev in model.getListOfEvents() if ev.getTrigger() is not None and ev.getTrigger().isSetMath()]
    for ev in live:
        name, g, direction, assigns, meta = _event(ev, conv, states, rules, species_info)
        events.append((name, g, direction, assigns))
        event_meta.append(meta)
    # delays, priorities among several events, non-persistent and compound triggers: the
    # scheduled events of the solve (integrate.scheduled); every event of the model then is one
    scheduled = any(meta["delay"] is not None or meta["compound"] or not meta["persistent"]
                    or (meta["priority"] is not None and len(live) > 1) for meta in event_meta)
    # two events with one trigger, or time events at one time, fire together: the plain
    # events of the solve would apply one of them
    same = [(meta["atoms"], meta["trigger"]) for meta in event_meta]
    times = [meta["time"] for meta in event_meta if meta["time"] is not None]
    scheduled = scheduled or len(set(same)) < len(same) or len(set(times)) < len(times)
    if scheduled and len(live) > MAX_SCHEDULED_EVENTS:
        raise ModelError(f"SBML model '{mid}' has {len(live)} events that need the scheduled solve (delays, "
                         "priorities, non-persistent or compound triggers, events that fire together): it takes "
                         f"at most {MAX_SCHEDULED_EVENTS} (its pieces and stop points grow with every event)")
    for k, meta in enumerate(event_meta):
        meta["scheduled"] = scheduled
        if scheduled:
            events[k] = (events[k][0], sp.Tuple(*meta["atoms"]), events[k][2], events[k][3])
        if scheduled and meta["delay"] is not None and meta["trigger_values"] and meta["rescaled"]:
            raise ModelError(f"SBML event '{meta['name']}': a delayed event with values from the trigger time "
                             f"that changes the size of the compartment of '{meta['rescaled'][0]}' is not "
                             "supported (its concentration or amount at the execution time is needed)")

    # ---- rateOf(x): the rate of a state, the total time derivative of a rule variable
    rate_of = _RateOf(states, rates, rules, constants)
    rules = {k: rate_of(e) for k, e in rules.items()}
    rates = {k: rate_of(e) for k, e in rates.items()}
    init = {k: rate_of(e) for k, e in init.items()}
    events = [(n_, rate_of(g_), d_, {k: rate_of(e) for k, e in a_.items()}) for n_, g_, d_, a_ in events]
    for meta in event_meta:
        meta["delay"], meta["priority"] = (None if e is None else rate_of(e) for e in (meta["delay"], meta["priority"]))

    # ---- constants set by initial assignments: their values at the start (states and
    # rule variables in them taken at t = 0)
    if constants:
        start = _initial_expressions(states, init, {k: e for k, e in rules.items() if k not in constants})
        fixed = {k: e for k, e in rules.items()}
        at0 = {sym(s_): e for s_, e in start.items()}
        for _ in range(len(rules) + 1):
            changed = False
            for k in constants:
                e = fixed[k].xreplace(at0).xreplace({sym(r_): fixed[r_] for r_ in rules if r_ != k})
                e = e.xreplace({T: sp.Integer(0)})
                changed |= e != fixed[k]
                fixed[k] = e
            if not changed:
                break
        rules = {k: (fixed[k] if k in constants else e) for k, e in rules.items()}
        rules = _topological(rules)

    # ---- time conditions of piecewise functions -> breakpoints, conditions see TC
    state_syms = {sym(s) for s in states}
    breakpoints: list[sp.Expr] = []

    def retime(expr):
        return _retime_conditions(expr, state_syms, breakpoints, set(rules))

    rules = {k: retime(e) for k, e in rules.items()}
    rates = {k: retime(e) for k, e in rates.items()}

    # initial values: substitute rules and other initial values, time = 0
    init_full = _initial_expressions(states, init, rules)

    bad_p = [p for p, v in zip(params, values) if math.isnan(v) and p not in rules]
    if bad_p:
        raise ModelError(f"SBML parameter '{bad_p[0]}' has no value and no initial assignment")

    reads = sbml_vector.state_reads(states, rules)
    rhs, initial, rule_values, bps, ev_fns, ev_times, arrays = _compile(
        mid, states, params, rules, rates, init_full, breakpoints, events,
        [meta["time"] for meta in event_meta], [meta for meta in event_meta if meta["scheduled"]], reads)
    sm = SBMLModel(mid, tuple(states), tuple(params), np.asarray(values, dtype=np.float64), rules,
                     rates, init_full, tuple(breakpoints), rhs, initial, rule_values, bps, source,
                     events=tuple(ev_fns[0]), event_meta=tuple(event_meta), event_times=ev_times,
                     event_schedule=tuple(ev_fns[1]),
                     _event_exprs=tuple(events),
                     species={k: {"compartment": v["compartment"], "amount": v["hosu"]} for k, v in species_info.items()},
                     hidden=frozenset(reaction_ids | {s_ for s_ in rules if s_ not in species_info
                                                      and model.getElementBySId(s_) is not None
                                                      and model.getElementBySId(s_).getTypeCode()
                                                      == L.SBML_SPECIES_REFERENCE}),
                     event_parameters=tuple(p for p in states if p in event_targets and p not in species_info),
                     jacobian_reads=_jacobian_reads(states, rates, reads), rate_arrays=arrays)
    if not constraints:
        return sm
    names = _codegen_names(states, params, rules)
    # the constraints add a projection to the rhs that reads every state it couples
    return dataclasses.replace(constraints.finish(sm, lambda e: expression_source(sp.sympify(e), names)),
                               jacobian_reads=None)


def _jacobian_reads(states, rates, reads) -> tuple:
    """Per state (in `states` order) the sorted indices of the states its rate reads, directly
    or through the assignment rules it reads (`reads`: `sbml_vector.state_reads`; the rhs's
    dependencies, from the same expressions `_compile` turns into code)."""
    return tuple(tuple(sorted(reads(rates[s]))) for s in states)


def _event(ev, conv, states, rules, species_info=None):
    """One SBML event -> (name, g, direction, {state: value expr}, meta); ModelError naming
    what the event machinery cannot represent.

    The trigger `a > b` (or >=) fires where g = a - b crosses zero upwards, `a < b` (<=)
    downwards. meta: {"name", "direction", "strict" (< or >), "initial_value" (the trigger's initialValue: False
    means a trigger already true at the start fires there), "time": T(p) when the trigger is
    `time >= T` / `time > T` with T free of states and rule variables that change (a time
    event: the solve can be cut at T), else None}."""
    name = ev.getId() or ev.getName() or "?"
    where = f"SBML event '{name}'"
    delay = None
    if ev.isSetDelay() and ev.getDelay().isSetMath():
        delay = conv(ev.getDelay().getMath(), f"delay of {where}")
    trig = ev.getTrigger()
    if trig is None or trig.getMath() is None:
        raise ModelError(f"{where} has no trigger")
    cond = conv(trig.getMath(), f"trigger of {where}")
    atoms, trigger = _trigger_atoms(cond, where)
    compound = not isinstance(cond, (sp.StrictGreaterThan, sp.GreaterThan, sp.StrictLessThan, sp.LessThan))
    if compound:  # a scheduled event: the comparisons are its root functions
        cond = sp.StrictGreaterThan(sp.Integer(0), sp.Integer(-1), evaluate=False)
    up = isinstance(cond, (sp.StrictGreaterThan, sp.GreaterThan))
    g = cond.lhs - cond.rhs
    priority = None
    if ev.isSetPriority() and ev.getPriority().isSetMath():
        priority = conv(ev.getPriority().getMath(), f"priority of {where}")
    assigns = {}
    for ea in ev.getListOfEventAssignments():
        if not ea.isSetMath():  # ignored (SBML L3v2)
            continue
        var = ea.getVariable()
        info = (species_info or {}).get(var, {})
        if "amount_state" in info:  # a concentration in a variable compartment: set the amount
            assigns[info["amount_state"]] = conv(ea.getMath(), f"eventAssignment of '{var}' in {where}") * info["V"]
            continue
        if var not in states:
            raise ModelError(f"{where}: assigns to '{var}', which is not a species, parameter or "
                             "rate-rule variable (assignment-rule variables cannot be assigned)")
        assigns[var] = conv(ea.getMath(), f"eventAssignment of '{var}' in {where}")
    # a compartment that jumps keeps its species' amounts: a species whose state is a
    # concentration (driven by a rate rule) is rescaled by old size / new size. Assigned in
    # the same event, its new concentration sets the amount in the old size (every
    # assignment is computed on the state before the event), so it is rescaled as well
    rescaled = [v for v in assigns if "amount_state" in (species_info or {}).get(v, {})]
    rescaled += [info_sid for info_sid, info in (species_info or {}).items()
                 if "amount_state" in info and info["amount_state"] in assigns]
    for info_sid, info in (species_info or {}).items():
        comp_ = info.get("compartment")
        if comp_ in assigns and info_sid in states and not info["hosu"] and "amount_state" not in info:
            value = assigns.get(info_sid, sp.Symbol(info_sid, real=True))
            assigns[info_sid] = value * sp.Symbol(comp_, real=True) / assigns[comp_]
            rescaled.append(info_sid)
    # a time event: g = a t + b with a a positive number and b free of states / rule variables
    t_event = None
    state_syms = {sp.Symbol(s_, real=True) for s_ in states} | {sp.Symbol(r, real=True) for r in rules}
    d = sp.expand(g if up else -g)
    a, b = d.coeff(T, 1), d.coeff(T, 0)
    if (a.is_number and a > 0 and sp.expand(a * T + b - d) == 0 and not b.has(T)
            and not (b.free_symbols & state_syms)):
        t_event = sp.simplify(-b / a)
    initial_value = bool(trig.getInitialValue()) if trig.isSetInitialValue() else True
    strict = isinstance(cond, (sp.StrictGreaterThan, sp.StrictLessThan))
    meta = {"name": name, "direction": 1 if up else -1, "strict": strict, "initial_value": initial_value,
            "time": t_event, "delay": delay,
            "persistent": bool(trig.getPersistent()) if trig.isSetPersistent() else True,
            "trigger_values": bool(ev.getUseValuesFromTriggerTime()) if ev.isSetUseValuesFromTriggerTime() else True,
            "priority": priority, "compound": compound, "atoms": atoms, "trigger": trigger,
            "targets": tuple(assigns), "rescaled": rescaled}
    return name, g, (1 if up else -1), assigns, meta


_RELATIONS = {sp.StrictGreaterThan: ">", sp.GreaterThan: ">=", sp.StrictLessThan: "<", sp.LessThan: "<="}


def _trigger_atoms(cond, where: str):
    """A trigger as root functions and a boolean of them: (atoms (lhs - rhs of each
    comparison), the trigger as Python source over `g`, the atoms' values (n_atoms,)).
    `ModelError` for a trigger that is not comparisons joined by and, or, xor, not, implies."""
    atoms: list = []

    def walk(e):
        if isinstance(e, (sp.And, sp.Or, sp.Xor)):
            op = {sp.And: " & ", sp.Or: " | ", sp.Xor: " ^ "}[type(e)]
            return "(" + op.join(walk(a) for a in e.args) + ")"
        if isinstance(e, sp.Not):
            return f"(~{walk(e.args[0])})"
        if isinstance(e, sp.Implies):
            return f"((~{walk(e.args[0])}) | {walk(e.args[1])})"
        if type(e) in _RELATIONS:
            atoms.append(e.lhs - e.rhs)
            return f"(g[{len(atoms) - 1}] {_RELATIONS[type(e)]} 0)"
        raise ModelError(f"{where}: trigger '{e}' is not made of comparisons (<, <=, >, >=) joined by "
                         "and, or, xor, not")

    source = walk(cond)
    return tuple(atoms), source


class _RateOf:
    """Replaces `rateOf(x)` by dx/dt: the rate of a state, the total time derivative of an
    assignment-rule variable (chain rule through the states and rule variables it reads),
    zero for a constant. `ModelError` when rates read each other's rateOf in a circle."""

    def __init__(self, states, rates, rules, constants):
        self.states, self.rates, self.rules, self.constants = set(states), rates, rules, constants

    def d_dt(self, name: str, depth: int) -> sp.Expr:
        if depth > 64:
            raise ModelError(f"SBML rateOf('{name}'): the rates read each other's rateOf in a circle")
        if name in self.states:
            return self(self.rates[name], depth + 1)
        if name in self.rules and name not in self.constants:
            e = self.rules[name]
            out = sp.diff(e, T)
            for s in e.free_symbols - {T}:
                d = sp.diff(e, s)
                if d != 0:
                    out = out + d * self.d_dt(s.name, depth + 1)
            return self(out, depth + 1)
        return sp.Integer(0)

    def __call__(self, expr, depth: int = 0):
        if not isinstance(expr, sp.Basic) or not expr.has(RateOf):
            return expr
        return expr.replace(lambda e: getattr(e, "func", None) == RateOf, lambda e: self.d_dt(e.args[0].name, depth))


def _number(v: float) -> sp.Expr:
    return sp.Integer(int(v)) if math.isfinite(v) and v == int(v) else sp.Float(v, 17)


def _classify(name, value, assignment, rate_rules, init_assign, conv, params, values, rules,
              states, rates, init, kind, event_target=False, constants=None):
    """Place a parameter or compartment: a rule variable, a state (rate rule, or a parameter
    assigned by an event: zero rate), a derived constant (initial assignment) or a free
    parameter."""
    if name in assignment:
        if event_target:
            raise ModelError(f"SBML {kind} '{name}' has an assignment rule and is assigned by an event")
        rules[name] = conv(assignment[name].getMath(), f"assignmentRule for {kind} '{name}'")
    elif name in rate_rules or event_target:
        states.append(name)
        rates[name] = sp.Integer(0)  # filled in later
        init[name] = (conv(init_assign[name].getMath(), f"initialAssignment for '{name}'")
                      if name in init_assign else sp.Float(value, 17))
    elif name in init_assign:
        rules[name] = conv(init_assign[name].getMath(), f"initialAssignment for {kind} '{name}'")
        if constants is not None:
            constants.add(name)
    else:
        params.append(name)
        values.append(value)


def _topological(rules: dict) -> dict:
    names = set(rules)
    deps = {k: {s.name for s in e.free_symbols} & names for k, e in rules.items()}
    out: dict = {}
    while deps:
        ready = [k for k, d in deps.items() if d <= set(out)]
        if not ready:
            raise ModelError(f"SBML assignment rules form a cycle among {sorted(deps)}")
        for k in ready:
            out[k] = rules[k]
            del deps[k]
    return out


def _retime_conditions(expr, state_syms, breakpoints, rule_names):
    """Replace time by TC inside relations that depend on time but not on states; record the
    switching times (roots of the affine relation in time) as breakpoints."""
    if not isinstance(expr, sp.Basic) or not expr.has(sp.Piecewise):
        return expr

    def fix_rel(rel):
        if not isinstance(rel, sp.core.relational.Relational):
            return rel
        syms = rel.free_symbols
        if T not in syms or syms & state_syms or {s.name for s in syms} & rule_names:
            return rel
        d = sp.expand(rel.lhs - rel.rhs)
        a = d.coeff(T, 1)
        b = d.coeff(T, 0)
        if sp.expand(a * T + b - d) != 0 or a.has(T):
            return rel  # not affine in time: left to the solver
        root = sp.simplify(-b / a)
        if not any(sp.simplify(root - r) == 0 for r in breakpoints):
            breakpoints.append(root)
        return rel.xreplace({T: TC})

    def walk(e):
        if isinstance(e, sp.Piecewise):
            args = []
            for val, cond in e.args:
                cond = cond.replace(lambda x: isinstance(x, sp.core.relational.Relational), fix_rel)
                args.append((walk(val), cond))
            return sp.Piecewise(*args, evaluate=False)
        if e.args:
            return e.func(*[walk(a) for a in e.args])
        return e

    return walk(expr)


def _initial_expressions(states, init, rules) -> dict:
    """Initial values in parameters only: rules and other species substituted, time = 0."""
    subs_rules = {sp.Symbol(k, real=True): v for k, v in rules.items()}
    state_syms = {sp.Symbol(s, real=True): s for s in states}
    out = {}
    current = {s: init[s] for s in states}
    for _ in range(len(states) + len(rules) + 2):
        changed = False
        for s, e in current.items():
            new = e.xreplace(subs_rules).xreplace({T: sp.Integer(0), TC: sp.Integer(0)})
            new = new.xreplace({k: current[v] for k, v in state_syms.items() if k in new.free_symbols and v != s})
            if new != e:
                changed = True
            current[s] = new
        if not changed:
            break
    for s, e in current.items():
        if {x for x in e.free_symbols} & set(state_syms):
            raise ModelError(f"SBML initial value of '{s}' depends on itself ({e})")
        out[s] = e
    return out


class _Printer(JaxPrinter):
    def _print_Piecewise(self, expr):
        # nested where: value of the first true condition
        out = "jnp.nan"
        for val, cond in reversed(expr.args):
            if cond == sp.true:
                out = self._print(val)
            else:
                out = f"jnp.where({self._print(cond)}, {self._print(val)}, {out})"
        return out

    def _print_Pow(self, expr):
        # a negative integer power as a division (numpy's printer makes it a float power,
        # which JAX computes and differentiates as a general power)
        base, e = expr.args
        if e.is_Integer and e < 0:
            inner = base if e == -1 else sp.Pow(base, -e, evaluate=False)
            return f"(1/{self.parenthesize(inner, sp.printing.precedence.PRECEDENCE['Pow'])})"
        return super()._print_Pow(expr)

    def _print_BooleanTrue(self, expr):
        return "True"

    def _print_BooleanFalse(self, expr):
        return "False"


def _codegen_names(states, params, rules):
    names = {}
    for i, s in enumerate(states):
        names[sp.Symbol(s, real=True)] = sp.Symbol(f"_y{i}", real=True)
    for i, p in enumerate(params):
        names[sp.Symbol(p, real=True)] = sp.Symbol(f"_p{i}", real=True)
    for i, r in enumerate(rules):
        names[sp.Symbol(r, real=True)] = sp.Symbol(f"_w{i}", real=True)
    names[T] = sp.Symbol("t", real=True)
    names[TC] = sp.Symbol("tc", real=True)
    return names


def expression_source(expr, names, printer=None) -> str:
    """Python source of a sympy expression over jax.numpy, symbols renamed by `names`."""
    printer = printer or _Printer()
    e = expr.xreplace(names)
    unknown = {s.name for s in e.free_symbols} - {n.name for n in names.values()}
    if unknown:
        raise ModelError(f"SBML: the symbol '{sorted(unknown)[0]}' is not a species, parameter, "
                         "compartment or rule variable of the model")
    return printer.doprint(e).replace("jax.numpy.", "jnp.")


# common subexpressions over at most this many operations of a generated function are taken
# out once (sympy's cse); above it the program is generated without (cse's time grows faster
# than linearly)
CSE_MAX_OPS = 200_000


def _unit_floats(e):
    """`e` with the floats 1.0 and -1.0 (stoichiometries, SBML's `1.0 * ...`) as integers:
    the same values, fewer operations."""
    if not isinstance(e, sp.Basic) or not e.atoms(sp.Float):
        return e
    return e.replace(lambda a: isinstance(a, sp.Float) and float(a) in (1.0, -1.0), lambda a: sp.Integer(int(a)))


def _program(exprs, rules, names, printer, cse: bool = True):
    """The body of a generated function: (source lines "    name = ..." that compute the rule
    variables `exprs` read, directly or through other rules, and no others; the Python sources
    of `exprs`). Each rule variable (a reaction's rate among them) is computed once, and with
    `cse` every subexpression that occurs more than once (`_c{k}`), in an order where each
    name is assigned before it is read. `rules`: {name: sympy expression}, `names`: the
    generated names (`_codegen_names`)."""
    rule_sym = {sp.Symbol(k, real=True): k for k in rules}
    exprs = [sp.sympify(e) for e in exprs]
    need, stack = set(), [s for e in exprs for s in e.free_symbols if s in rule_sym]
    while stack:
        k = rule_sym[stack.pop()]
        if k not in need:
            need.add(k)
            stack.extend(s for s in sp.sympify(rules[k]).free_symbols if s in rule_sym and rule_sym[s] not in need)
    targets = [names[sp.Symbol(k, real=True)] for k in rules if k in need]
    values = [_unit_floats(sp.sympify(rules[k]).xreplace(names)) for k in rules if k in need]
    outs = [_unit_floats(e.xreplace(names)) for e in exprs]
    defs = list(zip(targets, values))
    if cse and sum(sp.count_ops(e) for e in values + outs) <= CSE_MAX_OPS:
        reps, reduced = sp.cse(values + outs, symbols=sp.numbered_symbols("_c", real=True), order="none")
        defs = reps + list(zip(targets, reduced[:len(values)]))
        outs = reduced[len(values):]
    known = {n.name for n in names.values()} | {str(s) for s, _ in defs}
    for e in [v for _, v in defs] + outs:
        unknown = {s.name for s in e.free_symbols} - known
        if unknown:
            raise ModelError(f"SBML: the symbol '{sorted(unknown)[0]}' is not a species, parameter, "
                             "compartment or rule variable of the model")
    # each name after the names it reads (rules that read rateOf(x) may read reactions' rates)
    defined = {s for s, _ in defs}
    waits = {s: {d for d in v.free_symbols if d in defined and d != s} for s, v in defs}
    readers: dict = {}
    for s, d in waits.items():
        for x in d:
            readers.setdefault(x, []).append(s)
    ready = [s for s, _ in defs if not waits[s]]
    value = dict(defs)
    lines = []
    while ready:
        s = ready.pop(0)
        lines.append(f"    {s} = {printer.doprint(value[s]).replace('jax.numpy.', 'jnp.')}")
        for r in readers.get(s, ()):
            waits[r].discard(s)
            if not waits[r]:
                ready.append(r)
    if len(lines) < len(defs):
        left = sorted(str(s) for s in defined if waits[s])
        raise ModelError(f"SBML assignment rules form a cycle among {left}")
    return lines, [printer.doprint(e).replace("jax.numpy.", "jnp.") for e in outs]


def _reads(lines, *sources) -> set:
    """The generated names (`_p{i}`, `_y{i}`) the lines and sources read."""
    text = "\n".join(list(lines) + list(sources))
    return set(re.findall(r"\b_[py]\d+\b", text))


def _unpack(params, states, lines, sources):
    """Lines that take the parameters and states the body reads out of p and y (one
    `unstack` each: one operation, not a slice per entry)."""
    used = _reads(lines, *sources)
    out = []
    for vec, prefix, n in (("p", "_p", len(params)), ("y", "_y", len(states))):
        got = [f"{prefix}{i}" if f"{prefix}{i}" in used else "_" for i in range(n)]
        if any(g != "_" for g in got):
            out.append(f"    {', '.join(got)}, = jnp.unstack(jnp.asarray({vec}))")
    return out


def _stacked(sources, zero: str = "t") -> str:
    """A float64 vector of the scalar sources (numbers too), shaped like `zero` entrywise."""
    return f"    return jnp.asarray(jnp.stack([{', '.join(sources)}]), dtype=jnp.float64) + 0.0 * {zero}"


def _compile(mid, states, params, rules, rates, init, breakpoints, events=(), event_times=(), schedule=(),
             reads=None):
    names = _codegen_names(states, params, rules)
    pr = _Printer()
    src = lambda e: expression_source(sp.sympify(e), names, pr)  # noqa: E731
    unpack_p = [f"    _p{i} = p[{i}]" for i in range(len(params))]
    # mass-action terms of a large model as arrays (`sbml_vector`), the rest unrolled
    monomials, rest, factors = sbml_vector.split(states, params, rules, rates, reads=reads)
    body, outs = _program([rest[s] for s in states] + factors, rules, names, pr)
    dydt, w = outs[:len(states)], outs[len(states):]
    ret = _stacked(dydt)
    if monomials is not None:
        w = f"jnp.stack([{', '.join(w)}]) + 0.0 * t" if w else "None"
        ret = ret.replace("    return ", f"    return _monomials(p, jnp.asarray(y, jnp.float64), {w}) + ", 1)
    lines = ["def rhs(t, y, p, tc):"] + _unpack(params, states, body, outs) + body + [ret]
    all_rules, values = _program([sp.Symbol(k, real=True) for k in rules], rules, names, pr)
    lines += ["", "def rule_values(t, y, p):", "    tc = t"] + _unpack(params, states, all_rules, values) + all_rules
    lines.append(_stacked(values) if rules else "    return jnp.zeros((0,))")
    lines += ["", "def initial(p):", "    t = tc = 0.0"] + unpack_p
    lines.append("    return jnp.stack([" + ", ".join(
        f"jnp.asarray({src(init[s])}, dtype=jnp.float64) + 0.0 * jnp.sum(p)" for s in states) + "])")
    lines += ["", "def breakpoints(p):"] + unpack_p
    if breakpoints:
        lines.append("    return jnp.stack([" + ", ".join(
            f"jnp.nan_to_num(jnp.asarray({src(b)}, dtype=jnp.float64), nan=jnp.inf, posinf=jnp.inf, neginf=jnp.inf)"
            for b in breakpoints) + "])")
    else:
        lines.append("    return jnp.zeros((0,))")
    def function(head, exprs, ret):  # a function of (t, y, p) that computes exprs and returns ret(sources)
        body, out = _program(exprs, rules, names, pr, cse=False)
        value = ret(out)
        return ["", head, "    tc = t"] + _unpack(params, states, body, [value]) + body + [f"    return {value}"]

    for k, (_, g, _, assigns) in enumerate(events):
        lines += function(f"def event_condition_{k}(t, y, p):", [g],
                          lambda out: f"jnp.asarray({out[0]}, dtype=jnp.float64) + 0.0 * t")
        changed = [s_ for s_ in states if s_ in assigns]
        new = {s_: f"_y{i}" for i, s_ in enumerate(states)}

        def reset(out, changed=changed, new=new):
            new = dict(new, **{s_: f"jnp.asarray({o}, dtype=jnp.float64) + 0.0 * t" for s_, o in zip(changed, out)})
            return "jnp.stack([" + ", ".join(new[s_] for s_ in states) + "])"
        lines += function(f"def event_reset_{k}(t, y, p):", [assigns[s_] for s_ in changed], reset)
    for k, meta in enumerate(schedule):  # scheduled events: trigger over the root functions, delay, priority
        lines += ["", f"def event_trigger_{k}(g):", f"    return {meta['trigger']}"]
        for part in ("delay", "priority"):
            if meta[part] is not None:
                lines += function(f"def event_{part}_{k}(t, y, p):", [meta[part]],
                                  lambda out: f"jnp.asarray({out[0]}, dtype=jnp.float64) + 0.0 * t")
    lines += ["", "def event_times(p):"] + unpack_p
    if events:
        lines.append("    return jnp.stack([" + ", ".join(
            "jnp.asarray(jnp.inf)" if te is None else f"jnp.asarray({src(te)}, dtype=jnp.float64) + 0.0 * jnp.sum(p)"
            for te in event_times) + "])")
    else:
        lines.append("    return jnp.zeros((0,))")
    code = "\n".join(lines)
    namespace = {"jnp": jnp, "jax": jax, "functools": functools, "math": math, "numpy": np,
                 "_monomials": monomials}
    try:
        exec(compile(code, f"<sbml:{mid}>", "exec"), namespace)
    except SyntaxError as exc:  # a printer gap: say which model
        raise ModelError(f"SBML model '{mid}': generated code does not compile ({exc})") from None
    ev_fns = [(name, namespace[f"event_condition_{k}"], namespace[f"event_reset_{k}"], direction)
              for k, (name, _, direction, _) in enumerate(events)]
    ev_fns = (ev_fns, [{"trigger": namespace[f"event_trigger_{k}"],
                        **{part: namespace.get(f"event_{part}_{k}") for part in ("delay", "priority")}}
                       for k in range(len(schedule))])
    return (namespace["rhs"], namespace["initial"], namespace["rule_values"], namespace["breakpoints"], ev_fns,
            namespace["event_times"], monomials)
