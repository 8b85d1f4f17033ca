"""The silent-failure check of switches: which parameters the rhs compares against t.

A parameter compared against t in the rhs (`jnp.where(t < p["tau"], ...)`) is the time of a
discontinuity; unless it is a declared breakpoint, its derivative misses the moving jump.
`time_compared_parameters` finds such parameters by tracing the rhs to a jaxpr and following
which inputs each value depends on; `warn_undeclared` warns about those in wrt.
"""

from __future__ import annotations

import warnings

from ...stores import checks as check_store
from ..lazy import LazyModule
from ..schedule import DiscontinuityWarning, param_breakpoints, switch_time_parameters

jax, jnp = (LazyModule(m) for m in ("jax", "jax.numpy"))

_COMPARISONS = {"lt", "le", "gt", "ge", "eq", "ne"}


def _subjaxprs(eqn):
    for v in eqn.params.values():
        vs = v if isinstance(v, (list, tuple)) else [v]
        for s in vs:
            if hasattr(s, "jaxpr") and hasattr(s, "consts"):  # ClosedJaxpr
                yield s.jaxpr
            elif hasattr(s, "eqns") and hasattr(s, "invars"):  # Jaxpr
                yield s


# elementwise primitives: with operands of one shape, element i of the result depends on
# element i of each operand only
_ELEMENTWISE = {"add", "sub", "mul", "div", "neg", "exp", "log", "log1p", "expm1", "pow",
                "integer_pow", "sqrt", "rsqrt", "abs", "sign", "max", "min", "select_n",
                "convert_element_type", "tanh", "logistic", "sin", "cos", "square", "copy", "copy_p",
                "and", "or", "not"} | _COMPARISONS


def _union(d) -> frozenset:
    return frozenset().union(*d) if isinstance(d, tuple) else d


def _elements(d, n: int):
    return d if isinstance(d, tuple) else (d,) * n


def _shape(v):
    return getattr(getattr(v, "aval", None), "shape", None)


def _per_element(eqn, ins):
    """Per-element sources of the outputs of the index and layout primitives a model's rhs
    uses to pack and unpack parameter vectors (stack, concatenate, slice, squeeze) and of
    elementwise primitives; None where that is not known (then every output depends on
    every input)."""
    name = eqn.primitive.name
    out_shape = _shape(eqn.outvars[0]) if len(eqn.outvars) == 1 else None
    if out_shape is None or len(out_shape) > 1:
        return None
    if name == "stack" and eqn.params.get("axis", 0) == 0 and all(_shape(v) == () for v in eqn.invars):
        return tuple(_union(d) for d in ins)
    if name == "concatenate" and eqn.params.get("dimension", 0) == 0 and \
            all(_shape(v) is not None and len(_shape(v)) == 1 for v in eqn.invars):
        return sum((_elements(d, _shape(v)[0]) for d, v in zip(ins, eqn.invars)), ())
    if name == "broadcast_in_dim" and len(eqn.invars) == 1 and _shape(eqn.invars[0]) == ():
        return _union(ins[0])
    if name == "slice" and len(out_shape) == 1 and isinstance(ins[0], tuple) and \
            eqn.params.get("strides") in (None, (1,)):
        return ins[0][eqn.params["start_indices"][0]:eqn.params["limit_indices"][0]]
    if name == "squeeze" and out_shape == () and isinstance(ins[0], tuple) and len(ins[0]) == 1:
        return ins[0][0]
    if name in _ELEMENTWISE:
        n = out_shape[0] if out_shape else None
        if n is None or all(not isinstance(d, tuple) for d in ins):
            return frozenset().union(*[_union(d) for d in ins]) if ins else frozenset()
        if all(_shape(v) in ((), (n,)) or not hasattr(v, "aval") for v in eqn.invars):
            cols = [_elements(d, n) for d in ins]
            return tuple(frozenset().union(*[c[k] for c in cols]) for k in range(n))
    return None


def _unstacked(eqn, ins):
    """The per-output sources of `unstack` along axis 0 of a vector whose elements' sources
    are known (a parameter vector unpacked in one operation), else None."""
    if eqn.primitive.name == "unstack" and eqn.params.get("axis", 0) == 0 and len(ins) == 1 \
            and isinstance(ins[0], tuple) and len(ins[0]) == len(eqn.outvars):
        return list(ins[0])
    return None


def _walk(jaxpr, deps_in: list, found: set) -> list:
    """Propagate, through the jaxpr, which sources ("t" or a parameter name) each variable
    depends on (per element for the 1-D vectors a parameter vector is packed into, so that
    p[i] depends on parameter i only); record in `found` the parameters an operand of a
    comparison with a t-dependent operand depends on."""
    env = {}
    for v, d in zip(jaxpr.invars, deps_in):
        env[v] = d

    def get(v):
        return env.get(v, frozenset()) if not hasattr(v, "val") else frozenset()

    for eqn in jaxpr.eqns:
        ins = [get(v) for v in eqn.invars]
        union = frozenset().union(*[_union(d) for d in ins]) if ins else frozenset()
        if eqn.primitive.name in _COMPARISONS:
            operands = [_union(d) for d in ins]
            if any("t" in d for d in operands):
                for d in operands:
                    found.update(x for x in d if x != "t")
        subs = list(_subjaxprs(eqn))
        outs = None
        for sub in subs:
            if len(sub.invars) == len(ins):
                res = _walk(sub, ins, found)
                if len(res) == len(eqn.outvars):
                    outs = res
            else:  # cond branches, loops: conservatively everything depends on every input
                _walk(sub, [union] * len(sub.invars), found)
        if outs is None and not subs:
            outs = _unstacked(eqn, ins)
            one = _per_element(eqn, ins) if outs is None else None
            if one is not None:
                outs = [one]
        if outs is None:
            outs = [union] * len(eqn.outvars)
        for v, d in zip(eqn.outvars, outs):
            env[v] = d
    return [get(v) for v in jaxpr.outvars]


def time_compared_parameters(model) -> set[str]:
    """Names of parameters the rhs compares against (a value depending on) t, found by
    tracing the rhs to a jaxpr. Empty when tracing fails."""
    names = list(model.parameters)

    def f(t, y, *ps):
        return model.rhs(t, y, dict(zip(names, ps)))

    try:
        closed = jax.make_jaxpr(f)(jnp.asarray(0.0), jnp.asarray(model.y0),
                                   *[jnp.asarray(model.parameters[k]) for k in names])
    except Exception:  # noqa: BLE001 - a check must never break a valid model
        return set()
    found: set = set()
    deps = [frozenset({"t"}), frozenset()] + [frozenset({k}) for k in names]
    _walk(closed.jaxpr, deps, found)
    return found


_WARNED: dict = {}


def warn_undeclared(problem) -> None:
    """Warn (`DiscontinuityWarning`) when a parameter in wrt is compared against t in the
    rhs and is not a declared breakpoint: its derivative would miss the discontinuity."""
    key = problem.model.structure_key()
    try:
        compared = _WARNED.get(key)
    except TypeError:
        compared = None
    if compared is None:  # remembered across processes: `sensitivity validate` need not import JAX
        digest, stored = check_store.recall(problem.model, "time_compared")
        compared = set(stored) if isinstance(stored, list) else time_compared_parameters(problem.model)
        if stored is None:
            check_store.record(digest, "time_compared", sorted(compared))
        try:
            _WARNED[key] = compared
        except TypeError:
            pass
    declared = set(param_breakpoints(problem)) | switch_time_parameters(problem)
    wrt = {r.target for r in problem.wrt if r.kind == "param"}
    bad = sorted((compared & wrt) - declared)
    if bad:
        warnings.warn(
            f"model '{problem.model.name}': the rhs compares t against parameter(s) {bad}, which are "
            "in wrt but not declared breakpoints; their derivatives miss the moving discontinuity "
            f"(e.g. d/d{bad[0]} = 0 for a switch at t = {bad[0]}). Declare them: "
            f"ODEModel(..., breakpoints={bad}) or Problem(..., breakpoints={bad}), or smooth the switch.",
            DiscontinuityWarning, stacklevel=3)
