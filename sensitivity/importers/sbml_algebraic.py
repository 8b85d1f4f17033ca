"""Algebraic rules and fast reactions of an SBML model: constraints on the states.

An algebraic rule 0 = g(...) determines a variable that nothing else determines: an
element with `constant="false"` that is not set by an assignment or rate rule and, for a
species, is not changed by a reaction (a species changed by reactions is determined by
them). The rules are matched to such variables one at a time: a rule that holds exactly
one of them determines it.

- *Explicit*: a rule linear in its variable z (g = a z + b, a and b free of z) becomes
  the assignment rule z = -b / a; a set of rules whose variables all appear in more than
  one rule is solved together when it is linear in them with a nonzero determinant.
- *DAE*: otherwise (g nonlinear in z) z becomes a state held on g = 0, see below.

Fast reactions (SBML L2 / L3v1 `fast="true"`) are at equilibrium at all times: their
kinetic laws v_j = 0, the fluxes through them whatever keeps them there (a kinetic law
that is the number 0 moves nothing and is no constraint). With f the rate
of every state from the other reactions and rules, F (n_states, m) the columns along which
the constrained quantities move (a fast reaction's column: n_ij cf_i / V_i, the change of
state i per unit of its flux, from the reader; an algebraic DAE variable's column: a unit
vector) and c(t, y) (m,) the residuals (the fast kinetic laws, the nonlinear algebraic
rules), the model is the DAE

    y' = f(t, y) + F(t, y) lambda,     0 = c(t, y)

(index 1 for an algebraic variable, index 2 for a fast flux). Differentiating the
constraint once gives lambda in closed form,

    C F lambda = -(C f + dc/dt),       C = dc/dy (m, n_states),

so the rhs is an ODE in y with one (m, m) linear solve; `jax` differentiates it (forward
and adjoint sensitivities through the same rhs). The initial state and the state after
each event reset are made consistent: y + F xi with c(t, y + F xi) = 0 for the extents
xi (m,), from xi = 0 by pseudo-transient continuation (the fast fluxes relax along their
own rates, so the equilibrium found is the one they run into) ending in Newton steps; the derivatives of xi with respect to y and the
parameters are the implicit function theorem's, -(C F)^-1 dc (one Newton step on the
converged value, differentiated). The constraint holds along the solution to the
integrator's tolerance (it is differentiated, not enforced).

Refused with a `ModelError` naming the rule or reaction: an algebraic rule that holds no
variable left to determine (overdetermined), variables that two or more rules could each
determine and that are not a linear system with a nonzero determinant, a singular C F at
the initial state (a fast reaction whose rate does not change along its own flux, such
as a rate constant 0), an equilibrium that is not found or (fast reactions only) not
stable, a piecewise condition on states or time in a constraint (the solution could jump
to another branch), an event assignment to an algebraic DAE variable, scheduled events
(delays, priorities, ...) in such a model, `rateOf` of a state a constraint moves, more
than `MAX_CONSTRAINTS` fast reactions and nonlinear rules.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp
from jax.scipy.linalg import solve_triangular

from ..core.errors import ModelError

NEWTON_STEPS = 100    # at most this many iterations for a consistent state
MAX_CONSTRAINTS = 24  # fast reactions and nonlinear rules of one model: more are refused (the
                      # consistent start is solved inside each rhs evaluation; 52 took > 300 s)


class Solved:
    """Where the reader expects a libsbml rule: `getMath()` gives a sympy expression that
    the reader's converter passes through (an assignment rule found by solving an
    algebraic rule, or the placeholder rate of a DAE variable)."""

    def __init__(self, expr: sp.Expr):
        self.expr = expr

    def getMath(self):  # noqa: N802 - the libsbml name the reader calls
        return self.expr

    def isSetMath(self):  # noqa: N802
        return True


def _sym(name: str) -> sp.Symbol:
    return sp.Symbol(name, real=True)


def _marker(k: int) -> sp.Symbol:
    return sp.Symbol(f"__constraint_flux_{k}__", real=True)


def _linear_solution(expr: sp.Expr, z: sp.Symbol):
    """-b / a when expr = a z + b with a, b free of z and a not zero; else None."""
    try:
        a = sp.diff(expr, z)
    except (TypeError, ValueError):
        return None
    if a.has(z) or a == 0 or a.has(sp.nan):
        return None
    b = expr - a * z
    if b.has(z):
        b = sp.expand(b)
    if b.has(z):
        return None
    return -b / a


@dataclasses.dataclass
class Constraints:
    """What `read` found: the assignment rules it solved (already placed in the reader's
    `assignment`), the DAE variables (placeholder rate rules in `rate_rules`), the fast
    reactions, and the residuals. Falsy when the model has no DAE part."""

    residuals: list = dataclasses.field(default_factory=list)   # (where, sympy residual or reaction id)
    dae_vars: list = dataclasses.field(default_factory=list)    # algebraic DAE variables (state names)
    fast: list = dataclasses.field(default_factory=list)        # fast reaction ids
    solved: dict = dataclasses.field(default_factory=dict)      # variable -> explicit solution
    columns: dict = dataclasses.field(default_factory=dict)     # state -> {k: coefficient} (F)

    def __bool__(self) -> bool:
        return bool(self.residuals)

    # ---- hooks the reader calls -------------------------------------------------------
    def flux(self, rid: str, v: sp.Expr) -> sp.Expr:
        """The rate a reaction contributes to its species' rates: the marker of its
        unknown flux for a fast reaction, `v` itself otherwise."""
        if rid in self.fast:
            return _marker(len(self.dae_vars) + self.fast.index(rid))
        return v

    def split(self, rates: dict) -> dict:
        """The rates without the constrained fluxes (f), keeping their coefficients (F)."""
        if not self:
            return rates
        marks = [_marker(k) for k in range(len(self.residuals))]
        out = {}
        for state, e in rates.items():
            e = sp.sympify(e)
            if e.free_symbols & set(marks):
                col = {k: sp.diff(e, m) for k, m in enumerate(marks) if e.has(m)}
                if any(c.free_symbols & set(marks) for c in col.values()):
                    raise ModelError(f"SBML: the rate of '{state}' is not linear in the fluxes of the fast "
                                     "reactions / algebraic variables")
                self.columns[state] = col
                e = e.xreplace({m: 0 for m in marks})
            out[state] = e
        return out

    def finish(self, sm, source: Callable[[sp.Expr], str]):
        """The `SBMLModel` `sm` with its rhs, initial state and event resets held on the
        constraints. `source(expr)`: Python source of an expression over the reader's
        generated names (`_y{i}` states, `_p{i}` parameters, `_w{i}` rule variables, `t`, `tc`)."""
        states, rules = list(sm.states), dict(sm.rules)
        moved = set(self.columns)
        for name, expr in list(rules.items()) + list(sm.state_rates.items()):
            for e in sp.sympify(expr).atoms(sp.Function):
                if str(e.func) == "rateOf" and str(e.args[0]) in moved:
                    raise ModelError(f"SBML rateOf('{e.args[0]}') in '{name}': the rate of a quantity that a fast "
                                     "reaction or an algebraic rule moves is not supported")
        if getattr(sm, "event_schedule", ()):
            raise ModelError(f"SBML model '{sm.id}': scheduled events (delays, priorities, non-persistent or "
                             "compound triggers) with fast reactions or nonlinear algebraic rules are not supported")
        for (name, _, _, assigns) in sm._event_exprs:
            hit = sorted(set(assigns) & set(self.dae_vars))
            if hit:
                raise ModelError(f"SBML event '{name}' assigns to '{hit[0]}', which an algebraic rule determines")
        m = len(self.residuals)
        resid = [sp.sympify(rules[e]) if isinstance(e, str) else e for _, e in self.residuals]
        fixed = {_sym(q) for q in sm.parameters}
        for (where, _), e in zip(self.residuals, resid):
            if _switches(e, rules, fixed):
                raise ModelError(f"{where}: a piecewise condition on states or time in it can switch the "
                                 "constraint to another branch, where the solution jumps; not supported")
        F = [[self.columns.get(s, {}).get(k, sp.Integer(0)) for k in range(m)] for s in states]
        c_fn = _compile(sm.id, "residual", resid, states, sm.parameters, rules, source)
        F_fn = _compile(sm.id, "columns", [x for row in F for x in row], states, sm.parameters, rules, source)
        n = len(states)

        def columns(t, y, p, tc):
            return F_fn(t, y, p, tc).reshape(n, m)

        base_rhs = sm.rhs

        def rhs(t, y, p, tc):
            f = base_rhs(t, y, p, tc)
            Fm = columns(t, y, p, tc)
            t = jnp.asarray(t, dtype=f.dtype)
            _, dc = jax.jvp(lambda t_, y_: c_fn(t_, y_, p, tc), (t, y), (jnp.ones_like(t), f))
            CF = jax.jacfwd(lambda y_: c_fn(t, y_, p, tc))(y) @ Fm
            lam = -_solve(CF, dc)
            return f + Fm @ lam

        flow = np.arange(m) >= len(self.dae_vars)   # fast fluxes: relax along their own rates

        def project(t, y, p):
            return _consistent(c_fn, columns, t, y, p, flow)

        base_initial = sm.initial
        guess = np.array([s in self.dae_vars for s in states])

        def initial(p):
            y = base_initial(p)
            y = jnp.where(guess & ~jnp.isfinite(y), 1.0, y)  # a DAE variable without a value: Newton from 1
            return project(jnp.zeros((), y.dtype), y, p)

        events = tuple((name, cond, _after(reset, project), direction) for name, cond, reset, direction in sm.events)
        new = dataclasses.replace(sm, rhs=rhs, initial=initial, events=events, _ode={})
        self._check(new, c_fn, columns)
        # the consistent state depends on every parameter: the ODE model then carries dy0/dp
        psyms = [_sym(q) for q in sm.parameters]
        marked = {s: (sp.Function("consistent_initial_value")(e, *psyms) if s in moved else e)
                  for s, e in sm.initial_exprs.items()}
        return dataclasses.replace(new, initial_exprs=marked)

    def _check(self, sm, c_fn, columns):
        """At the default parameters: C F is regular at the consistent initial state and
        the residuals vanish there; a ModelError naming the constraints otherwise."""
        names = ", ".join(where for where, _ in self.residuals)
        pv = jnp.asarray(sm.parameter_values)
        y = sm.initial(pv)
        t = jnp.zeros((), y.dtype)
        if not bool(jnp.all(jnp.isfinite(y))):
            raise ModelError(f"SBML: no consistent initial state found for {names} (the iteration from the "
                             "initial values did not converge)")
        CF = np.asarray(jax.jacfwd(lambda y_: c_fn(t, y_, pv, t))(y) @ columns(t, y, pv, t))
        cond = np.linalg.cond(CF) if CF.size else 1.0
        if not np.isfinite(cond) or cond > 1e12:
            raise ModelError(f"SBML: {names}: the constraints do not determine the fluxes at the initial "
                             "state (singular d residual / d flux; a fast reaction whose rate does not change "
                             "along its own flux, such as a rate constant 0, is not supported)")
        if not self.dae_vars and CF.size and np.max(np.linalg.eigvals(CF).real) >= 0:
            raise ModelError(f"SBML: {names}: the equilibrium of the fast reactions at the initial state is "
                             "not stable (d rate / d flux has an eigenvalue with nonnegative real part)")


def _switches(expr, rules: dict, fixed: set) -> bool:
    """Whether expr, with the rule variables it reads, holds a piecewise condition on
    anything but the (constant) parameters."""
    seen, todo = set(), [sp.sympify(expr)]
    while todo:
        e = todo.pop()
        for pw in e.atoms(sp.Piecewise):
            if any(not isinstance(c, bool) and getattr(c, "free_symbols", set()) - fixed for _, c in pw.args):
                return True
        for s_ in e.free_symbols:
            if s_.name in rules and s_.name not in seen:
                seen.add(s_.name)
                todo.append(sp.sympify(rules[s_.name]))
    return False


def _solve(A, b):
    """A^-1 b by QR: no pivoting, so no comparison of values that depend on t and the
    parameters (which the discontinuity check would take for a switch in time)."""
    q, r = jnp.linalg.qr(A)
    return solve_triangular(r, q.T @ b)


def _after(reset, project):
    def out(t, y, p):
        return project(t, reset(t, y, p), p)
    return out


def _consistent(c_fn, columns, t, y, p, flow):
    """y + F xi with c(t, y + F xi) = 0: pseudo-transient continuation from xi = 0 (the fast
    fluxes, rows `flow`, relax along their own rates xi' = c, so the equilibrium found is the
    one the fast reactions run into; the algebraic rows take Newton steps; the pseudo time
    step grows as the residual falls, ending in Newton), on values without derivatives, then
    one Newton step with them (the implicit function theorem's derivative of xi). NaN where
    the iteration did not converge."""
    Fm = jax.lax.stop_gradient(columns(t, y, p, t))
    m = Fm.shape[1]
    if m == 0:
        return y
    y_, p_ = jax.lax.stop_gradient(y), jax.tree_util.tree_map(jax.lax.stop_gradient, p)
    flow = jnp.asarray(flow, y.dtype)

    def g(xi):
        return c_fn(t, y_ + Fm @ xi, p_, t)

    def norm(r):
        return jnp.where(jnp.all(jnp.isfinite(r)), jnp.sqrt(jnp.sum(r ** 2)), jnp.inf)

    xi0 = jnp.zeros((m,), y.dtype)
    r0, J0 = g(xi0), jax.jacfwd(g)(xi0)
    h0 = 0.1 / jnp.maximum(jnp.max(jnp.abs(J0)) + norm(r0) / (1.0 + jnp.max(jnp.abs(y_))), 1e-300)

    newton_like = ~jnp.any(flow > 0)

    def step(carry):   # a rejected step (residual up by half or not finite): h / 4, alpha / 2
        i, xi, h, alpha, _ = carry
        r, J = g(xi), jax.jacfwd(g)(xi)
        d = _solve(J - jnp.diag(flow / h), -r)
        new = xi + alpha * d
        ok = jnp.all(jnp.isfinite(d)) & (norm(g(new)) <= 1.5 * norm(r))
        # done: an accepted full step that is Newton's (h large) and changes the state by
        # less than 1e-13 of its size
        small = jnp.max(jnp.abs(Fm @ (alpha * d)), initial=0.0) <= 1e-13 * (1.0 + jnp.max(jnp.abs(y_ + Fm @ new)))
        done = ok & (alpha == 1.0) & small & (newton_like | (h * jnp.max(jnp.abs(J)) >= 1e10))
        return (i + 1, jnp.where(ok, new, xi), jnp.where(ok, 4.0 * h, 0.25 * h),
                jnp.where(ok, jnp.minimum(1.0, 2.0 * alpha), 0.5 * alpha), done)

    start = (0, xi0, h0, jnp.ones((), y.dtype), jnp.asarray(False))
    _, xi, _, _, _ = jax.lax.while_loop(lambda c: (c[0] < NEWTON_STEPS) & ~c[4], step, start)
    # converged: one more full Newton step changes nothing (relative to the state)
    r = g(xi)
    d = _solve(jax.jacfwd(g)(xi), -r)
    scale = 1.0 + jnp.max(jnp.abs(y_ + Fm @ xi))
    ok = jnp.all(jnp.isfinite(d)) & (jnp.max(jnp.abs(Fm @ d), initial=0.0) <= 1e-9 * scale)
    xi = jax.lax.stop_gradient(xi)
    # the step with derivatives: at the root its value is xi, its derivative -(CF)^-1 dc
    Fd = columns(t, y, p, t)
    res = c_fn(t, y + Fd @ xi, p, t)
    J = jax.jacfwd(lambda x: c_fn(t, y + Fd @ x, p, t))(xi)
    xi = xi - _solve(J, res)
    return jnp.where(ok, y + Fd @ xi, jnp.nan)


def _compile(mid: str, what: str, exprs: list, states, params, rules: dict, source) -> Callable:
    """f(t, y, p, tc) -> (len(exprs),) over the reader's generated names."""
    lines = [f"def {what}(t, y, p, tc):"]
    lines += [f"    _p{i} = p[{i}]" for i in range(len(params))]
    lines += [f"    _y{i} = y[{i}]" for i in range(len(states))]
    lines += [f"    _w{i} = {source(e)}" for i, e in enumerate(rules.values())]
    body = ", ".join(f"jnp.asarray({source(e)}, dtype=jnp.float64) + 0.0 * t" for e in exprs)
    lines.append(f"    return jnp.stack([{body}])" if exprs else "    return jnp.zeros((0,))")
    namespace = {"jnp": jnp, "jax": jax, "math": math, "numpy": np}
    exec(compile("\n".join(lines), f"<sbml:{mid}:{what}>", "exec"), namespace)
    return namespace[what]


# --------------------------------------------------------------------------- reading
def _changed_by_reactions(model) -> set:
    out = set()
    for r in model.getListOfReactions():
        for ref in list(r.getListOfReactants()) + list(r.getListOfProducts()):
            s = model.getSpecies(ref.getSpecies())
            if s is not None and not s.getBoundaryCondition() and not s.getConstant():
                out.add(s.getId())
    return out


def _candidates(model) -> set:
    """Ids of elements an algebraic rule may determine: not constant."""
    out = {s.getId() for s in model.getListOfSpecies() if not s.getConstant()}
    out |= {c.getId() for c in model.getListOfCompartments() if not c.getConstant()}
    out |= {p.getId() for p in model.getListOfParameters() if not p.getConstant()}
    if model.getLevel() >= 3:
        for r in model.getListOfReactions():
            for ref in list(r.getListOfReactants()) + list(r.getListOfProducts()):
                if ref.isSetId() and ref.isSetConstant() and not ref.getConstant():
                    out.add(ref.getId())
    return out


def read(model, conv, assignment: dict, rate_rules: dict) -> Constraints:
    """Match the algebraic rules of a libsbml `model` to the variables they determine.
    Explicit solutions join `assignment` (as `Solved`), DAE variables join `rate_rules`
    (a placeholder rate, the marker of their unknown flux); fast reactions are recorded.
    `conv(ast, where) -> sympy` is the reader's converter."""
    import libsbml as L
    out = Constraints()
    for r in model.getListOfReactions():
        if r.isSetFast() and r.getFast():
            kl = r.getKineticLaw()
            # a kinetic law that is the number 0 moves nothing: no constraint
            if kl is None or kl.getMath() is None or conv(kl.getMath(), f"kineticLaw of reaction '{r.getId()}'") != 0:
                out.fast.append(r.getId())
    pending = []
    for k, rule in enumerate(model.getListOfRules()):
        if not rule.isAlgebraic() or not rule.isSetMath():
            continue
        where = f"SBML algebraic rule {k + 1} ({L.formulaToL3String(rule.getMath())} = 0)"
        try:
            e = conv(rule.getMath(), where)
        except TypeError:
            raise ModelError(f"{where}: mixes logical and numeric values") from None
        if not isinstance(e, sp.Expr):
            raise ModelError(f"{where}: is not a numeric expression")
        pending.append((where, e))
    if not pending and not out.fast:
        return out
    determined = set(assignment) | set(rate_rules) | _changed_by_reactions(model)
    free_vars = _candidates(model) - determined
    dae = []   # (where, residual, variable)
    while pending:
        progress = False
        for item in list(pending):
            where, e = item
            names = sorted({s.name for s in e.free_symbols} & free_vars)
            if not names:
                raise ModelError(f"{where}: determines no variable (each of its variables is constant or "
                                 "set by a reaction, another rule or another algebraic rule)")
            if len(names) == 1:
                z = names[0]
                sol = _linear_solution(e, _sym(z))
                if sol is not None:
                    out.solved[z] = sol
                else:
                    dae.append((where, e, z))
                free_vars.discard(z)
                pending.remove(item)
                progress = True
        if progress:
            continue
        # every rule left holds two or more undetermined variables: solved together when
        # they are as many as the rules and the system is linear and regular
        block = sorted({s.name for _, e in pending for s in e.free_symbols} & free_vars)
        if len(block) != len(pending):
            raise ModelError(f"{pending[0][0]}: which of {block} it determines is ambiguous ({len(pending)} "
                             f"algebraic rule(s) for {len(block)} non-constant variables); mark the others "
                             "constant")
        syms = [_sym(z) for z in block]
        try:
            A, b = sp.linear_eq_to_matrix([e for _, e in pending], syms)
            linear = not (A.free_symbols & set(syms)) and A.det() != 0
        except (ValueError, TypeError, sp.PolynomialError):
            linear = False
        if not linear:
            raise ModelError(f"{pending[0][0]}: the algebraic rules over {block} are coupled and not linear; "
                             "only one nonlinear rule per variable is supported")
        for z, v in zip(block, A.LUsolve(b)):
            out.solved[z] = v
        pending = []
    for z, sol in out.solved.items():
        assignment[z] = Solved(sol)
    for k, (where, e, z) in enumerate(dae):
        out.dae_vars.append(z)
        out.residuals.append((where, e))
        rate_rules[z] = Solved(_marker(k))
    for rid in out.fast:
        out.residuals.append((f"SBML fast reaction '{rid}'", rid))
    if len(out.residuals) > MAX_CONSTRAINTS:
        raise ModelError(f"{out.residuals[0][0]}: the model has {len(out.residuals)} fast reactions and nonlinear "
                         f"algebraic rules; the SBML import takes at most {MAX_CONSTRAINTS}")
    return out
