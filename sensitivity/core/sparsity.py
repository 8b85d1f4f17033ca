"""The sparsity structure of a model's rhs Jacobian: pattern, density, bandwidth, a
bandwidth-reducing ordering and a column colouring.

An implicit solver's Newton matrix is I - gamma h J with J = d rhs / d y, so it has the
pattern of J plus the diagonal. When that pattern is banded (after reordering), the
matrix is block tridiagonal with blocks of the bandwidth's size and can be factorised in
O(n b^2) instead of O(n^3); and J itself can be formed from c Jacobian-vector products,
one per colour of a column colouring (columns that share no row get one colour), instead
of n: for a band of half-width b, c <= 2 b + 1 (Curtis, Powell & Reid 1974).

`detect(rhs, t0, y0, params)` evaluates J densely at two random points near (y0, params)
and takes the union of nonzeros (NaN counts as nonzero); a pattern a user declares
(`ODEModel(..., jacobian_sparsity=...)`) replaces the detection. A detected pattern is a
sample: an entry that vanishes at both points but not elsewhere would be missed, which is
why a declared pattern wins and `jacobian_sparsity="dense"` switches structure off.
`from_reads(reads)` is the pattern of a model whose rhs is known symbolically (the SBML
importer: which states each rate reads, through assignment rules): a superset of the true
nonzeros at every point, so it is safe where a missed entry would make J silently wrong.

`compression(pattern)` turns a pattern into the static index arrays that form J from c
JVPs (`solvers.rosenbrock`'s lean step): the seed matrix (c, n) and, for each nonzero
(i, j), the compressed column colour(j) it is read from. Only a declared or symbolic
pattern may be compressed: J is then exact, not a sample.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import ModelError
from .lazy import LazyModule

# SciPy's sparse module costs a noticeable share of a warm run's start; only a declared
# SciPy matrix, a detected pattern or a reordering needs it
sp = LazyModule("scipy.sparse")
csgraph = LazyModule("scipy.sparse.csgraph")

# imported on first use: a model declares its pattern without importing JAX
jax, jnp = LazyModule("jax"), LazyModule("jax.numpy")


@dataclass(frozen=True, eq=False)
class Pattern:
    """A boolean n x n pattern stored as sorted coordinates (rows, cols), diagonal included."""

    n: int
    rows: np.ndarray
    cols: np.ndarray
    source: str  # "declared" | "detected" | "symbolic"

    @property
    def nnz(self) -> int:
        return int(self.rows.size)

    @property
    def density(self) -> float:
        return self.nnz / float(self.n * self.n)

    def matrix(self) -> sp.csr_matrix:
        data = np.ones(self.nnz, dtype=bool)
        return sp.csr_matrix((data, (self.rows, self.cols)), shape=(self.n, self.n))

    def digest(self) -> str:
        h = hashlib.sha1()
        h.update(np.int64(self.n).tobytes())
        h.update(self.rows.astype(np.int64).tobytes())
        h.update(self.cols.astype(np.int64).tobytes())
        return h.hexdigest()[:16]


def _from_coords(n: int, rows, cols, source: str) -> Pattern:
    rows = np.concatenate([np.asarray(rows, dtype=np.int64), np.arange(n)])
    cols = np.concatenate([np.asarray(cols, dtype=np.int64), np.arange(n)])
    m = sp.coo_matrix((np.ones(rows.size, dtype=bool), (rows, cols)), shape=(n, n)).tocsr()
    m.sum_duplicates()
    m.sort_indices()
    coo = m.tocoo()
    order = np.lexsort((coo.col, coo.row))
    return Pattern(n, coo.row[order].astype(np.int64), coo.col[order].astype(np.int64), source)


def declared(value, n: int, field: str = "jacobian_sparsity") -> Pattern:
    """A user's declaration as a `Pattern`: an (n, n) boolean/numeric array (nonzero = may
    be nonzero), a SciPy sparse matrix, or a sequence of (row, col) pairs. The diagonal is
    always added (the Newton matrix has it). Raises `ModelError` on a bad shape or index."""
    if isinstance(value, Pattern):
        if value.n != n:
            raise ModelError(f"{field} is a pattern for {value.n} states, the model has {n}")
        return value
    if sp.issparse(value):
        if value.shape != (n, n):
            raise ModelError(f"{field} has shape {value.shape}, expected ({n}, {n}) for {n} states")
        coo = sp.coo_matrix(value)
        keep = coo.data != 0
        return _from_coords(n, coo.row[keep], coo.col[keep], "declared")
    arr = np.asarray(value)
    if arr.ndim == 2 and arr.shape == (n, n):
        r, c = np.nonzero(arr)
        return _from_coords(n, r, c, "declared")
    if arr.ndim == 2 and arr.shape[1] == 2 and arr.dtype.kind in "iu":
        if arr.size and (arr.min() < 0 or arr.max() >= n):
            raise ModelError(f"{field}: a (row, col) pair is out of range for {n} states "
                             f"(indices must be in 0..{n - 1})")
        return _from_coords(n, arr[:, 0], arr[:, 1], "declared")
    raise ModelError(
        f"{field} has shape {arr.shape}: give an ({n}, {n}) boolean array, a SciPy sparse "
        f"matrix of that shape, a list of (row, col) pairs, or the string 'dense'"
    )


def from_reads(reads) -> Pattern:
    """The pattern of a rhs whose row i reads the states `reads[i]` (an iterable of state
    indices, n rows): J_ij may be nonzero iff j is in reads[i]; diagonal added. Source
    "symbolic": exact in the sense that every entry outside it is zero at every point."""
    n = len(reads)
    pairs = [(i, j) for i, row in enumerate(reads) for j in row]
    for i, j in pairs:
        if not 0 <= j < n:
            raise ModelError(f"row {i} of a Jacobian pattern reads state {j}, out of range for {n} states")
    rows = np.array([i for i, _ in pairs], dtype=np.int64)
    cols = np.array([j for _, j in pairs], dtype=np.int64)
    return _from_coords(n, rows, cols, "symbolic")


def detect(rhs: Callable, t0: float, y0: np.ndarray, params: dict, seed: int = 0,
           chunk: int = 256) -> Pattern:
    """The nonzero pattern of d rhs / d y, the union over two random points near
    (t0, y0, params): y0 + 0.1 (|y0| + 1) u, params (1 + 0.1 u), u ~ N(0, 1) each time.
    Cost: 2 n JVPs, `chunk` columns at a time (memory O(n chunk)); once per model structure."""
    n = int(np.asarray(y0).size)
    rng = np.random.default_rng(seed)
    f = lambda t, y, p: jnp.asarray(rhs(t, y, p)).reshape(n)  # noqa: E731

    @jax.jit
    def columns(t, y, p, basis):  # (k, n) unit vectors -> (k, n) columns J e_j
        return jax.vmap(lambda e: jax.jvp(lambda y_: f(t, y_, p), (y,), (e,))[1])(basis)

    rows_all, cols_all = [], []
    y0 = np.asarray(y0, dtype=np.float64)
    width = min(chunk, n)
    with jax.ensure_compile_time_eval():
        for _ in range(2):
            y = jnp.asarray(y0 + 0.1 * (np.abs(y0) + 1.0) * rng.standard_normal(n))
            p = {k: jnp.asarray(np.asarray(v, dtype=np.float64) * (1.0 + 0.1 * rng.standard_normal(np.shape(v))))
                 for k, v in params.items()}
            t = jnp.asarray(t0, dtype=jnp.float64)
            for start in range(0, n, width):
                idx = np.arange(start, min(start + width, n))
                basis = np.zeros((width, n))
                basis[np.arange(idx.size), idx] = 1.0
                block = np.asarray(columns(t, y, p, jnp.asarray(basis)))[: idx.size]  # (k, n): J[:, j]
                c, r = np.nonzero((block != 0) | ~np.isfinite(block))
                rows_all.append(r)
                cols_all.append(idx[c])
    return _from_coords(n, np.concatenate(rows_all), np.concatenate(cols_all), "detected")


def bandwidth(pattern: Pattern, perm: np.ndarray | None = None) -> int:
    """max |i - j| over the nonzeros (of the pattern reordered by `perm`, if given)."""
    if pattern.nnz == 0:
        return 0
    if perm is None:
        return int(np.max(np.abs(pattern.rows - pattern.cols)))
    inv = np.empty_like(perm)
    inv[perm] = np.arange(perm.size)
    return int(np.max(np.abs(inv[pattern.rows] - inv[pattern.cols])))


def ordering(pattern: Pattern) -> tuple[np.ndarray | None, int]:
    """A bandwidth-reducing ordering (reverse Cuthill-McKee on the symmetrised pattern) if
    it beats the natural one: (perm or None, bandwidth). perm[k] is the state placed k-th."""
    natural = bandwidth(pattern)
    m = pattern.matrix()
    sym = (m + m.T).tocsr()
    perm = np.asarray(csgraph.reverse_cuthill_mckee(sym, symmetric_mode=True), dtype=np.int64)
    reordered = bandwidth(pattern, perm)
    if reordered < natural:
        return perm, reordered
    return None, natural


def _greedy(conflict, order) -> np.ndarray:
    colour = np.full(conflict.shape[0], -1, dtype=np.int64)
    for j in order:
        nb = conflict.indices[conflict.indptr[j]:conflict.indptr[j + 1]]
        used = set(colour[nb][colour[nb] >= 0].tolist())
        c = 0
        while c in used:
            c += 1
        colour[j] = c
    return colour


def colouring(pattern: Pattern, orders: str = "natural") -> np.ndarray:
    """A greedy column colouring (n,) of ints: columns sharing a nonzero row differ in
    colour, so J @ (sum of unit vectors of one colour) recovers each of those columns'
    entries. orders "natural": columns visited in natural order, which gives 2 b + 1
    colours on a band; "best": the fewest colours of the natural order and of columns by
    decreasing conflicts (largest first), ties to the natural order. At least the largest
    number of nonzeros in a row are needed."""
    m = pattern.matrix().astype(np.int32)
    conflict = (m.T @ m).tocsr()  # columns j, k conflict iff they share a row
    best = _greedy(conflict, range(pattern.n))
    if orders == "best":
        degree = np.diff(conflict.indptr)
        other = _greedy(conflict, np.argsort(-degree, kind="stable"))
        if other.max() < best.max():
            best = other
    return best


@dataclass(frozen=True, eq=False)
class Compression:
    """J (n, n) from c JVPs, for a pattern with a column colouring: the JVP in direction
    seeds[k] (seeds (c, n): the indicator of colour k's columns) gives, in row i, the one
    entry J_ij of that colour in the row's pattern; so J[rows, cols] = Jc[colour, rows]
    with Jc (c, n) the c JVPs, and every other entry of J is zero. Equal and hashed by the
    pattern's digest, so it can be a static argument of a traced function."""

    n: int
    n_colours: int
    seeds: np.ndarray   # (c, n) float 0/1
    rows: np.ndarray    # (nnz,) row of each nonzero
    cols: np.ndarray    # (nnz,) column of each nonzero
    colour: np.ndarray  # (nnz,) colour of each nonzero's column
    key: str

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, Compression) and other.key == self.key


def compression(pattern: Pattern) -> Compression:
    """The `Compression` of a declared or symbolic pattern (`colouring(.., "best")`).
    Raises `ModelError` for a detected one: a sampled pattern may miss entries, and J
    would silently lose them."""
    if pattern.source == "detected":
        raise ModelError("a Jacobian compressed by colours needs a declared or symbolic pattern, "
                         "not one detected by sampling (an entry it missed would be dropped from J)")
    colours = colouring(pattern, "best")
    c = int(colours.max()) + 1 if pattern.n else 0
    seeds = np.zeros((c, pattern.n))
    seeds[colours, np.arange(pattern.n)] = 1.0
    return Compression(pattern.n, c, seeds, pattern.rows.copy(), pattern.cols.copy(), colours[pattern.cols],
                       f"{pattern.digest()}:{c}")


@dataclass(frozen=True, eq=False)
class Structure:
    """What the linear algebra needs to know: the pattern, its density and bandwidth
    (natural and after reordering), the ordering and the colouring."""

    pattern: Pattern
    bandwidth: int  # natural order
    perm: np.ndarray | None  # reordering used (None: natural)
    reordered_bandwidth: int  # bandwidth in the order used
    colours: np.ndarray  # (n,) colour of each column
    n_colours: int

    @property
    def n(self) -> int:
        return self.pattern.n

    @property
    def density(self) -> float:
        return self.pattern.density

    def describe(self) -> str:
        p = self.pattern
        order = (f", {self.reordered_bandwidth} after reverse Cuthill-McKee reordering"
                 if self.perm is not None else "")
        return (f"Jacobian pattern ({p.source}): {p.nnz} nonzeros of {p.n}^2 (density "
                f"{100 * p.density:.3g}%), bandwidth {self.bandwidth}{order}; "
                f"{self.n_colours} colours (JVPs per Jacobian instead of {p.n})")


def analyse(pattern: Pattern) -> Structure:
    """Bandwidth, ordering and colouring of a pattern."""
    perm, bw = ordering(pattern)
    colours = colouring(pattern)
    return Structure(pattern, bandwidth(pattern), perm, bw, colours, int(colours.max()) + 1)
