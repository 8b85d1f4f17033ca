"""The rates of a large SBML model as arrays: stoichiometry times monomials, not one unrolled
expression per species.

Most kinetic laws of large models are mass action: a product of a rate constant (a parameter,
a compartment size) and species to integer powers. The rate of species i is then a sum of
monomials,

    dy_i/dt = sum_e [target_e = i] c_e m_{k_e}(p, y),
    m_k(p, y) = prod_j x[num_kj] / prod_j x[den_kj],    x = (p, y, w, 1),

a handful of array operations (gathers, products, and a dense product with the
stoichiometry or, where it is sparse, a segment sum) whatever the number of reactions. The
unrolled code of `sbml._compile` grows with every reaction and species, and XLA's compile of
a solve and its derivatives grows with it: minutes for a few hundred species. The arrays
compile in seconds at any size and, on large models, run faster.

`split` reads the terms of each state's rate: a term that expands into at most
`MAX_TERMS` monomials of the states, the parameters and the factors w free of states (a
switch in time, an `exp` of a parameter: the unrolled code computes them once per call)
joins the arrays, through assignment rules (reaction rates among them) substituted; every
other term (a Michaelis-Menten or Hill law, a piecewise that reads a state) stays in the
unrolled code, which adds it. `sbml._compile` uses the arrays
when they hold at least `MIN_MONOMIAL_TERMS` terms; smaller models keep the unrolled code,
which XLA fuses into a few kernels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp
from jax.custom_derivatives import SymbolicZero

# a term of a state's rate joins the arrays when it expands into at most this many monomials
# with integer exponents of magnitude at most MAX_DEGREE per factor
MAX_TERMS = 16
MAX_DEGREE = 4
# the arrays are used when the model's rates hold at least this many monomial terms
MIN_MONOMIAL_TERMS = 200
# the rates sum their monomials by a dense product S m when S has at most this many cells per
# entry, else by a segment sum (a scatter, which XLA's CPU backend runs element by element, far
# slower per entry than a dense product per cell: SalazarCavazos, 21 cells an entry, nllh
# 230 -> 181 ms with the dense product, `benchmarks/petab.py`)
DENSE_SUM_CELLS = 32


@dataclass(frozen=True, eq=False)  # the arrays are constants of the model: equal and hashed by identity
class MonomialRates:
    """The monomial part of the rates, as arrays: `__call__(p, y, w)` -> (n_states,), w the
    values of the state-free factors (`split`).

    num (n_monomials, k_num), den (n_monomials, k_den): indices into x = (p, y, w, 1) of each
    monomial's factors (repeated for powers; padded with the index of the 1, n_params +
    n_states + n_factors); target, monomial, coef (n_entries,): entry e adds coef[e] *
    m[monomial[e]] to the rate of state target[e] (sorted by target).

    Derivatives: a custom JVP whose tangent is J_y dy + J_pw (dp, dw), with the Jacobians
    (`jacobians`) assembled from the monomials' partial derivatives by one sorted segment sum
    each. Differentiating the gathers and products instead costs, under the n directions of
    a Jacobian, a batched scatter per operation: 13x the time on a 75-state model."""

    n_states: int
    n_params: int
    n_factors: int
    num: np.ndarray
    den: np.ndarray
    target: np.ndarray
    monomial: np.ndarray
    coef: np.ndarray

    def __call__(self, p, y, w=None):
        w = jnp.zeros((0,), y.dtype) if w is None else jnp.asarray(w, y.dtype).reshape(-1)
        return _rates(self, jnp.asarray(p, y.dtype).reshape(-1), y, w)

    def _x(self, p, y, w):
        return jnp.concatenate([p, y, w, jnp.ones((1,), y.dtype)])

    def _values(self, x):
        m = _product(x, self.num)
        if self.den.shape[1]:
            m = m / _product(x, self.den)
        if self._stoichiometry is not None:
            return self._stoichiometry @ m
        return jax.ops.segment_sum(self.coef * m[self.monomial], self.target, num_segments=self.n_states,
                                   indices_are_sorted=True)

    @functools.cached_property
    def _stoichiometry(self):
        """The sum over the monomials as a dense matrix S (n_states, n_monomials), rates = S m,
        where S has at most DENSE_SUM_CELLS cells per entry (else None: a segment sum)."""
        if self.n_states * self.num.shape[0] > DENSE_SUM_CELLS * len(self.coef):
            return None
        S = np.zeros((self.n_states, self.num.shape[0]))
        np.add.at(S, (self.target, self.monomial), self.coef)
        return S

    @functools.cached_property
    def _entries(self):
        """Static index arrays of the Jacobians: for the state columns and for the (p, w)
        columns, (flat position in J sorted, position in the flattened partials (n_monomials,
        k_num + k_den), coefficient) of every (entry, factor) pair."""
        kn, kd = self.num.shape[1], self.den.shape[1]
        slots = np.concatenate([self.num, self.den], axis=1)[self.monomial]  # (n_entries, k)
        e, slot = np.nonzero(slots != self.n_params + self.n_states + self.n_factors)
        col = slots[e, slot]
        src = self.monomial[e] * (kn + kd) + slot
        is_y = (col >= self.n_params) & (col < self.n_params + self.n_states)
        out = []
        for keep, width, c in ((is_y, self.n_states, col - self.n_params),
                               (~is_y, self.n_params + self.n_factors, np.where(col < self.n_params, col,
                                                                                 col - self.n_states))):
            flat = self.target[e[keep]] * width + c[keep]
            order = np.argsort(flat, kind="stable")
            out.append((width, flat[order], src[keep][order], self.coef[e[keep]][order]))
        return out

    def jacobians(self, p, y, w):
        """(J_y (n_states, n_states), J_pw (n_states, n_params + n_factors)): the derivatives
        of the rates in the states and in (p, w), from the monomials' partials d m_k / d x_j =
        (product of m_k's other factors), for numerator and denominator factors."""
        x = self._x(p, y, w)
        top = x[self.num]
        parts = [_others(top)]
        if self.den.shape[1]:
            bottom = x[self.den]
            d = jnp.prod(bottom, axis=1)
            parts = [parts[0] / d[:, None], -(jnp.prod(top, axis=1) / d ** 2)[:, None] * _others(bottom)]
        partials = jnp.concatenate(parts, axis=1).reshape(-1)
        return tuple(jax.ops.segment_sum(coef * partials[src], flat, num_segments=self.n_states * width,
                                         indices_are_sorted=True).reshape(self.n_states, width)
                     for width, flat, src, coef in self._entries)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _rates(arrays: MonomialRates, p, y, w):
    return arrays._values(arrays._x(p, y, w))


def _rates_jvp(arrays: MonomialRates, primals, tangents):
    p, y, w = primals
    dp, dy, dw = tangents
    J_y, J_pw = arrays.jacobians(p, y, w)
    out = _rates(arrays, p, y, w)
    dout = jnp.zeros_like(out)
    if not isinstance(dy, SymbolicZero):
        dout = dout + J_y @ dy
    if not (isinstance(dp, SymbolicZero) and isinstance(dw, SymbolicZero)):
        dpw = jnp.concatenate([jnp.zeros_like(p) if isinstance(dp, SymbolicZero) else dp,
                               jnp.zeros_like(w) if isinstance(dw, SymbolicZero) else dw])
        dout = dout + J_pw @ dpw
    return out, dout


_rates.defjvp(_rates_jvp, symbolic_zeros=True)


def _others(factors):
    """(n_monomials, k): for each slot l, the product of the other k - 1 factors of the row."""
    k = factors.shape[1]
    return jnp.stack([functools.reduce(jnp.multiply, [factors[:, j] for j in range(k) if j != l],
                                       jnp.ones_like(factors[:, 0])) for l in range(k)], axis=1)


def state_reads(states, rules: dict):
    """reads(expr) -> frozenset of the indices (in `states` order) of the states expr reads,
    directly or through the assignment rules it reads (memoised per rule; `sbml._jacobian_reads`
    and `split` share one)."""
    index = {sp.Symbol(s, real=True): i for i, s in enumerate(states)}
    rule_sym = {sp.Symbol(k, real=True): k for k in rules}
    memo: dict = {}

    def reads(expr) -> frozenset:
        out = set()
        for x in sp.sympify(expr).free_symbols:
            if x in index:
                out.add(index[x])
            elif x in rule_sym:
                k = rule_sym[x]
                if k not in memo:
                    memo[k] = frozenset()  # a circle of rules is refused when the code is built
                    memo[k] = reads(rules[k])
                out |= memo[k]
        return frozenset(out)

    return reads


def _product(x, index):
    out = x[index[:, 0]]
    for j in range(1, index.shape[1]):
        out = out * x[index[:, j]]
    return out


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for s, e in b.items():
        out[s] = out.get(s, 0) + e
        if out[s] == 0:
            del out[s]
    return out


def _times(a: list, b: list) -> list | None:
    if len(a) * len(b) > MAX_TERMS:
        return None
    return [(c1 * c2, _merge(f1, f2)) for c1, f1 in a for c2, f2 in b]


class _Monomials:
    """expr -> [(coef, {symbol: exponent})] over the states, the parameters and the factors
    free of states (`factors`: a rule of time and parameters such as a switch, an `exp` of a
    parameter), or None when it is not a short sum of monomials of them (rules substituted,
    memoised per rule)."""

    def __init__(self, states, params, rules: dict, reads):
        self.leaf = {sp.Symbol(s, real=True) for s in list(states) + list(params)}
        self.rules = {sp.Symbol(k, real=True): v for k, v in rules.items()}
        self.reads = reads  # `state_reads`
        self.memo: dict = {}
        self.factors: dict = {}  # state-free factors -> their symbol in the monomials

    def __call__(self, e) -> list | None:
        out = self._expand(e)
        if out is None and not self.reads(e):  # computed by the unrolled code
            x = self.factors.setdefault(e, sp.Dummy(f"w{len(self.factors)}"))
            out = [(1.0, {x: 1})]
        return out

    def _expand(self, e) -> list | None:  # noqa: C901 - one dispatch over sympy node types
        if e.is_number:
            return [(float(e), {})] if e.is_finite and e.is_real else None
        if e.is_Symbol:
            if e in self.leaf:
                return [(1.0, {e: 1})]
            if e in self.rules:
                if e not in self.memo:
                    self.memo[e] = None  # a circle of rules is refused when the code is built
                    self.memo[e] = self._expand(sp.sympify(self.rules[e]))
                return self.memo[e]
            return None
        if e.is_Add:
            out: list = []
            for a in e.args:
                m = self(a)
                if m is None or len(out) + len(m) > MAX_TERMS:
                    return None
                out += m
            return out
        if e.is_Mul:
            out = [(1.0, {})]
            for a in e.args:
                m = self(a)
                out = None if m is None else _times(out, m)
                if out is None:
                    return None
            return out
        if e.is_Pow:
            base, k = e.args
            if not k.is_Integer or abs(int(k)) > MAX_DEGREE:
                return None
            m, k = self(base), int(k)
            if m is None:
                return None
            if len(m) == 1:
                c, f = m[0]
                return [(c ** k, {s: x * k for s, x in f.items()})] if c != 0 or k > 0 else None
            if k < 0:
                return None
            out = [(1.0, {})]
            for _ in range(k):
                out = _times(out, m)
                if out is None:
                    return None
            return out
        return None


def split(states, params, rules: dict, rates: dict, minimum: int | None = None, reads=None):
    """(MonomialRates or None, the rest of the rates {state: sympy expression}, the
    state-free factors [sympy expressions]): the terms of each state's rate that are short
    sums of monomials as arrays, when there are at least `minimum` (default
    `MIN_MONOMIAL_TERMS`) of them, and the factors free of states they read, whose values
    the caller computes and passes as `w`; otherwise (None, rates, []). reads: the model's
    `state_reads` (made here if not given)."""
    minimum = MIN_MONOMIAL_TERMS if minimum is None else minimum
    mono = _Monomials(states, params, rules, reads or state_reads(states, rules))
    keys: dict = {}  # ((symbol, exponent), ...) -> monomial number
    entries: dict = {}
    rest = {}
    for i, s in enumerate(states):
        left = []
        for term in sp.Add.make_args(sp.sympify(rates[s])):
            ms = mono(term)
            if ms is None:
                left.append(term)
                continue
            for c, f in ms:
                k = keys.setdefault(tuple(sorted(f.items(), key=lambda xe: str(xe[0]))), len(keys))
                entries[(i, k)] = entries.get((i, k), 0.0) + c
        rest[s] = sp.Add(*left)
    if len(entries) < max(minimum, 1):
        return None, rates, []
    used = {x for key in keys for x, _ in key}
    factors = [e for e, x in mono.factors.items() if x in used]  # in the order they were met
    where = {sp.Symbol(s, real=True): i for i, s in enumerate(params)}
    where.update({sp.Symbol(s, real=True): len(params) + i for i, s in enumerate(states)})
    where.update({mono.factors[e]: len(params) + len(states) + j for j, e in enumerate(factors)})
    one = len(where)
    num = [[j for x, e in key if e > 0 for j in [where[x]] * e] for key in keys]
    den = [[j for x, e in key if e < 0 for j in [where[x]] * -e] for key in keys]
    k_num, k_den = max(1, max(map(len, num))), max(map(len, den))
    num_a = np.full((len(keys), k_num), one, dtype=np.int32)
    den_a = np.full((len(keys), k_den), one, dtype=np.int32)
    for k, (n, d) in enumerate(zip(num, den)):
        num_a[k, :len(n)] = n
        den_a[k, :len(d)] = d
    order = sorted(entries)
    return MonomialRates(len(states), len(params), len(factors), num_a, den_a,
                         np.array([i for i, _ in order], dtype=np.int32),
                         np.array([k for _, k in order], dtype=np.int32),
                         np.array([entries[e] for e in order], dtype=np.float64)), rest, factors
