"""A lineax linear solver for sparse square operators whose pattern is banded after a
reordering: the Jacobian compressed by colouring, then a block-tridiagonal LU.

For an operator A (n x n, typically the Newton matrix I - gamma h J of an implicit
Runge-Kutta stage, given as a `JacobianLinearOperator` or its linearisation):

1. compressed Jacobian: B = A S with S (n x c) the colour seeds, c JVPs (`operator.mv`,
   vectorised) instead of the n of a dense materialisation; A[i, j] = B[i, colour(j)] on
   the pattern.
2. the reordered matrix P A P^T has bandwidth b, so with blocks of size m >= b it is block
   tridiagonal: sub-diagonal blocks L_i, diagonal D_i, super-diagonal U_i (N = n / m
   block rows, padded with identity rows).
3. block LU (the block Thomas algorithm, a `lax.scan`): S_0 = D_0, E_i = S_i^{-1} U_i,
   S_i = D_i - L_i E_{i-1}; each S_i is LU-factorised with partial pivoting inside the
   block. Cost O(N m^3) = O(n m^2) flops, storage O(n m).
   Solve A x = r: w_i = S_i^{-1} (r_i - L_i w_{i-1}) forwards, x_i = w_i - E_i x_{i+1}
   backwards. The transpose A^T = (block upper with I, E)^T (block lower with S, L)^T
   reuses the same factors, which is what reverse-mode sensitivities need (lineax's
   linear_solve transposes to a solve with `transpose(state)`).

There is no pivoting across blocks: stable for the diagonally dominant (or block
diagonally dominant) Newton matrices of stiff ODE steps, like LAPACK's banded solver
without pivoting. A singular block gives non-finite values, which the step-size
controller treats as a failed step.
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import lineax as lx
import numpy as np
from lineax import RESULTS

from ..core.sparsity import Structure
from .compat import Static


class Layout:
    """Static index arrays mapping the compressed Jacobian into block storage.

    gather: (3, N, m, m) indices into concat(B^T.ravel(), [0]) for blocks (L, D, U);
    pad_diag: (N, m, m) identity on padded rows; perm, inv: the reordering (n,)."""

    def __init__(self, structure: Structure, block: int):
        n, m = structure.n, block
        N = -(-n // m)
        perm = structure.perm if structure.perm is not None else np.arange(n)
        inv = np.empty(n, dtype=np.int64)
        inv[perm] = np.arange(n)
        zero = structure.n_colours * n  # index of the appended 0
        gather = np.full((3, N, m, m), zero, dtype=np.int64)
        p = structure.pattern
        # position of each nonzero (i, j) in the reordered matrix
        a, b = inv[p.rows], inv[p.cols]
        bi, bj = a // m, b // m
        kind = bj - bi + 1  # 0: L (block left of the diagonal), 1: D, 2: U
        if np.any((kind < 0) | (kind > 2)):
            raise ValueError(f"block size {m} is smaller than the bandwidth "
                             f"{structure.reordered_bandwidth}")
        gather[kind, bi, a % m, b % m] = structure.colours[p.cols] * n + p.rows
        pad = np.zeros((N, m, m))
        for k in range(n, N * m):
            pad[k // m, k % m, k % m] = 1.0
        self.n, self.m, self.N = n, m, N
        self.gather, self.pad_diag = gather, pad
        self.perm, self.inv = perm, inv
        self.identity_order = structure.perm is None
        seeds = np.zeros((structure.n_colours, n))
        seeds[structure.colours, np.arange(n)] = 1.0
        self.seeds = seeds
        self.key = (structure.pattern.digest(), m)

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, Layout) and other.key == self.key


def block_size(bandwidth: int, n: int, minimum: int = 8) -> int:
    """Blocks of at least the bandwidth and at least `minimum`, at most n. Larger blocks mean
    fewer, larger scan steps: the per-step overhead of a scan on CPU is worth ~8^3 flops, so
    8 suits the LU-per-block factors of `BandedLU`; with explicit block inverses
    (`factor(..., inverse=True)`, Rodas5P's banded path) the work per block is plain
    matrix products and 16 is the better minimum (`rosenbrock.BLOCK_MIN`)."""
    return int(min(max(bandwidth, minimum), n))


def _blocks(layout: Layout, operator) -> jax.Array:
    """(3, N, m, m) blocks L, D, U of the reordered operator, from c JVPs."""
    seeds = jnp.asarray(layout.seeds)
    compressed = jax.vmap(operator.mv)(seeds)  # (c, n) = (A S)^T
    flat = jnp.concatenate([compressed.reshape(-1), jnp.zeros((1,), compressed.dtype)])
    blocks = flat[jnp.asarray(layout.gather)]
    return blocks.at[1].add(jnp.asarray(layout.pad_diag, dtype=blocks.dtype))


def factor(blocks: jax.Array, inverse: bool = False) -> tuple:
    """Block LU of a block-tridiagonal matrix given as (3, N, m, m) blocks (L, D, U).

    Returns (diag, E (N, m, m), L (N, m, m)): diag the per-block factors of the Schur
    complements S_i = D_i - L_i E_{i-1}, E_i = S_i^{-1} U_i (E_{N-1} = 0), and the
    sub-diagonal blocks. diag is (lu (N, m, m), piv (N, m)), LU with partial pivoting inside
    each block, or with `inverse` the explicit inverses S_i^{-1} (N, m, m) (inverted by LU
    with pivoting too): each solve is then two scans of plain mat-vecs instead of per-block
    triangular solves and row permutations, which pays when one factorisation serves many
    solves (a Rosenbrock step's stages)."""
    L, D, U = blocks[0], blocks[1], blocks[2]
    m = D.shape[-1]

    def body(E_prev, xs):
        Li, Di, Ui = xs
        S = Di - Li @ E_prev
        if inverse:
            d = jnp.linalg.inv(S)
            E = d @ Ui
        else:
            d = jsl.lu_factor(S)
            E = jsl.lu_solve(d, Ui)
        return E, (d, E)

    _, (diag, E) = jax.lax.scan(body, jnp.zeros((m, m), D.dtype), (L, D, U))
    return diag, E.at[-1].set(0.0), L


def block_solve(diag, diag_solve, E: jax.Array, L: jax.Array, r: jax.Array) -> jax.Array:
    """x with A x = r from a block LU of block-tridiagonal A: w_i = S_i^{-1}(r_i - L_i w_{i-1}),
    then x_i = w_i - E_i x_{i+1}. `diag`: per-block factors of the Schur complements S_i
    (leading axis N), `diag_solve(d_i, v) = S_i^{-1} v`; r (N, m) or (N, m, k)."""

    def fwd(w_prev, xs):
        di, Li, ri = xs
        w = diag_solve(di, ri - Li @ w_prev)
        return w, w

    _, w = jax.lax.scan(fwd, jnp.zeros_like(r[0]), (diag, L, r))

    def bwd(x_next, xs):
        wi, Ei = xs
        x = wi - Ei @ x_next
        return x, x

    _, x = jax.lax.scan(bwd, jnp.zeros_like(r[0]), (w, E), reverse=True)
    return x


def block_solve_transpose(diag, diag_solve_t, E: jax.Array, L: jax.Array, r: jax.Array) -> jax.Array:
    """x with A^T x = r: y_i = r_i - E_{i-1}^T y_{i-1}, then x_i = S_i^{-T}(y_i - L_{i+1}^T x_{i+1});
    `diag_solve_t(d_i, v) = S_i^{-T} v` (see `block_solve`)."""
    E_prev = jnp.concatenate([jnp.zeros_like(E[:1]), E[:-1]])

    def fwd(y_prev, xs):
        Ep, ri = xs
        y = ri - Ep.T @ y_prev
        return y, y

    _, y = jax.lax.scan(fwd, jnp.zeros_like(r[0]), (E_prev, r))
    L_next = jnp.concatenate([L[1:], jnp.zeros_like(L[:1])])

    def bwd(x_next, xs):
        di, Ln, yi = xs
        x = diag_solve_t(di, yi - Ln.T @ x_next)
        return x, x

    _, x = jax.lax.scan(bwd, jnp.zeros_like(r[0]), (diag, L_next, y), reverse=True)
    return x


def solve(factors: tuple, r: jax.Array) -> jax.Array:
    """x with A x = r, r of shape (N, m) or (N, m, k), from `factor`'s factors (either kind)."""
    diag, E, L = factors
    if isinstance(diag, tuple):  # (lu, piv)
        return block_solve(diag, jsl.lu_solve, E, L, r)
    return block_solve(diag, jnp.matmul, E, L, r)


def solve_transpose(factors: tuple, r: jax.Array) -> jax.Array:
    """x with A^T x = r."""
    diag, E, L = factors
    if isinstance(diag, tuple):
        return block_solve_transpose(diag, lambda d, v: jsl.lu_solve(d, v, trans=1), E, L, r)
    return block_solve_transpose(diag, lambda S, v: S.T @ v, E, L, r)


def by_columns(fn):
    """`fn(factors, r)` (r (N, m), or (N, m, k) for k columns at once) whose vmap over r alone
    (the tangents of a forward Jacobian, cotangent batches) solves the batch as the k
    columns of one right-hand side: (m, m) @ (m, k) products in each scan step instead of a
    vmapped scan: one scan's fixed per-step overhead for all columns instead of one per column."""
    batched = jax.custom_batching.custom_vmap(fn)

    @batched.def_vmap
    def _rule(axis_size, in_batched, factors, r):
        f_batched, r_batched = in_batched
        if any(jax.tree_util.tree_leaves(f_batched)) or not r_batched:  # e.g. an ensemble
            axes = (jax.tree_util.tree_map(lambda b: 0 if b else None, f_batched), 0 if r_batched else None)
            return jax.vmap(fn, in_axes=axes)(factors, r), True
        return jnp.moveaxis(fn(factors, jnp.moveaxis(r, 0, -1)), -1, 0), True

    return batched


solve_columns = by_columns(solve)
solve_transpose_columns = by_columns(solve_transpose)


def solve_in_order(layout: Layout, factors: tuple, r: jax.Array, which=solve_columns) -> jax.Array:
    """x (n,) with A x = r (or A^T x = r), r (n,) in the model's state order: permuted into
    the layout's order, padded to N blocks of m, solved by `which` (`solve`,
    `solve_transpose` or their column-batched forms) and permuted back."""
    v = r if layout.identity_order else r[jnp.asarray(layout.perm)]
    v = jnp.concatenate([v, jnp.zeros((layout.N * layout.m - layout.n,), r.dtype)]).reshape(layout.N, layout.m)
    x = which(factors, v).reshape(-1)[: layout.n]
    return x if layout.identity_order else x[jnp.asarray(layout.inv)]


class BandedLU(lx.AbstractLinearSolver):
    """lineax solver: colour-compressed Jacobian + block-tridiagonal LU in a reordering
    with small bandwidth (see the module docstring). Square operators on a 1-D vector.

    The state is (factors, transposed flag); `transpose` flips the flag, so reverse mode
    through `lineax.linear_solve` reuses the factorisation."""

    layout: Layout = eqx.field(static=True)

    def init(self, operator, options: dict[str, Any]):
        del options
        n = self.layout.n
        if operator.in_size() != n or operator.out_size() != n:
            raise ValueError(f"BandedLU was built for {n} x {n} operators, got "
                             f"{operator.out_size()} x {operator.in_size()}")
        factors = factor(_blocks(self.layout, operator))
        return factors, Static(False)

    def _vector(self, vector):
        leaves = jax.tree_util.tree_leaves(vector)
        if len(leaves) != 1 or leaves[0].ndim != 1:
            raise ValueError("BandedLU solves for a single 1-D vector")
        return leaves[0]

    def compute(self, state, vector, options: dict[str, Any]):
        del options
        factors, transposed = state
        x = solve_in_order(self.layout, factors, self._vector(vector),
                           solve_transpose if transposed.value else solve)
        x = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(vector), [x])
        return x, RESULTS.successful, {}

    def transpose(self, state, options: dict[str, Any]):
        factors, transposed = state
        return (factors, Static(not transposed.value)), {}

    def conj(self, state, options: dict[str, Any]):
        return state, {}  # real matrices only

    def assume_full_rank(self) -> bool:
        return True
