"""Rodas5P: a linearly implicit (Rosenbrock) stiff solver as a diffrax solver.

A Rosenbrock method replaces the Newton iterations of an implicit Runge-Kutta method by
one linear solve per stage with one matrix per step. For y' = f(t, y), step h from
(t0, y0), with J = df/dy(t0, y0), T = df/dt(t0, y0) and W = I / (h gamma) - J:

    U_i = y0 + sum_{j<i} a_ij k_j,
    W k_i = f(t0 + c_i h, U_i) + h d_i T + sum_{j<i} (C_ij / h) k_j,     i = 1..8
    y1 = U_8 + k_8,  error estimate k_8 (the embedded order-4 solution is U_8)

(Hairer & Wanner's transformed form, as in rodas.f and OrdinaryDiffEq.jl; stages 6-8 sit at
t0 + h with d = 0, U_7 = U_6 + k_6, U_8 = U_7 + k_7). Per step: one Jacobian, one time
derivative (a JVP in t; zero work when f does not read t), one factorisation of W,
8 rhs evaluations and 8 solves with the factors; no iteration, no convergence test, so
the cost of a step is fixed and known. Compare diffrax's Kvaerno5 (ESDIRK, `VeryChord`):
one Jacobian and factorisation too, but ~10 Newton solves and rhs evaluations and an
optimistix root-find loop per step, and a rejected step whenever Newton does not converge.

Method: Rodas5P (Steinebach, "Construction of Rosenbrock-Wanner method Rodas5P and
numerical benchmarks within the Julia Differential Equations package", BIT Numerical
Mathematics 63, 27 (2023)): order 5, embedded order 4, stiffly accurate, L-stable, with
a dense output of order 4 built from the stages (no extra rhs evaluation):

    y(t0 + theta h) = (1 - theta) y0 + theta (y1 + (1 - theta)(K1 + theta (K2 + theta K3))),
    K_r = sum_j H_rj k_j.

Coefficients (a, C, gamma, c, d, H) are those of `Rodas5PTableau` in OrdinaryDiffEq.jl
(lib/OrdinaryDiffEqRosenbrock/src/rosenbrock_tableaus.jl). The method's own dense output
is used rather than a cubic Hermite interpolant because the Hermite one is of order 3
(error O(h^4) between steps against O(h^5) at the steps), which at rtol 1e-8..1e-10 and a
few hundred steps would make SaveAt(ts) values visibly worse than the step values; the
Rodas5P interpolant costs three linear combinations of the stages per step.
`tests/test_rosenbrock.py` checks the orders empirically (fixed steps, a smooth nonlinear
problem), which a wrong coefficient would break.

One stage kernel: `rosenbrock_step` computes the stages, the new state and the error
estimate of one step of any `Tableau` (Rodas5P and Rodas4 are data here) with a given
linear-solve callable; the diffrax solver `Rodas5P` (W factorised densely or blockwise) and
the lean loop (`lean_step`: a dense W, inverted explicitly up to 24 states and LU-factorised
above, custom JVP; J from n JVPs, or from the c JVPs of a column colouring of an exact
pattern, `jacobian`) both use it.

Linear algebra, chosen per problem by `solvers.linear.choose` (see there): dense
(`jax.jacfwd` + `jax.scipy.linalg.lu_factor`/`lu_solve`, O(n^3) per step) or banded (the
colour-compressed Jacobian in c JVPs of `banded`, then `banded.factor`'s block-tridiagonal
LU with explicit 16 x 16 block inverses, so that each solve is two scans of mat-vecs; O(n m^2) per step).

Derivatives: everything is plain JAX, so forward mode (ForwardMode, DirectAdjoint) and
reverse mode (RecursiveCheckpointAdjoint) differentiate the discrete scheme
(discretise-then-optimise). Each stage solve is a `jax.lax.custom_linear_solve` whose
matvec is v -> v / (h gamma) - J v (a JVP of f) and whose solves use the factors, which
carry no derivative: the tangent of k = W^-1 r is W^-1 (dr - dW k), one more solve and one
second-order JVP of f per stage and direction (the cotangent: a transposed solve and a
VJP), instead of differentiating J and the factorisation (n or c second-order JVPs and
an O(n^3) factor derivative per direction, which dominates the forward pass from a few
tens of dense states on).

Per step on the banded path, the block LU (with the compressed Jacobian) costs the most,
then the 8 solves; the rhs evaluations are a small part. A forward tangent or a reverse
sweep adds a fraction of a step (`benchmarks/stiff_scaling.py` times whole solves).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from ..core import sparsity
from . import banded
from .compat import linear_rescale


@dataclass(frozen=True, eq=False)
class Tableau:
    """A Rosenbrock method in the transformed form (see the module docstring): gamma; A and
    C (s, s), strictly lower (U_i = y0 + sum_j A_ij k_j, couplings C_ij / h); b (s,) the
    solution weights (y1 = y0 + b @ k); c (s,) the stage times; d (s,) the weights of h df/dt;
    the error estimate is the last stage; `order`: the exponent of the step-size control
    (factor ~ err^(-1/order)); H (3, s): the dense output's K_r = H @ k, or None."""
    gamma: float
    A: np.ndarray
    C: np.ndarray
    b: np.ndarray
    c: np.ndarray
    d: np.ndarray
    order: float
    H: np.ndarray | None = None

    @property
    def stages(self) -> int:
        return len(self.b)


def _rodas5p() -> Tableau:
    """Rodas5P, from OrdinaryDiffEq.jl's Rodas5PTableau (Steinebach 2023); stages 7 and 8
    are written as U_6 + k_6 and U_7 + k_7 (rows of A)."""
    a = {  # a_ij of stages 2..6
        2: [3.0],
        3: [2.849394379747939, 0.45842242204463923],
        4: [-6.954028509809101, 2.489845061869568, -10.358996098473584],
        5: [2.8029986275628964, 0.5072464736228206, -0.3988312541770524, -0.04721187230404641],
        6: [-7.502846399306121, 2.561846144803919, -11.627539656261098, -0.18268767659942256,
            0.030198172008377946],
    }
    c = {  # C_ij (the stage couplings, divided by h)
        2: [-14.155112264123755],
        3: [-17.97296035885952, -2.859693295451294],
        4: [147.12150275711716, -1.41221402718213, 71.68940251302358],
        5: [165.43517024871676, -0.4592823456491126, 42.90938336958603, -5.961986721573306],
        6: [24.854864614690072, -3.0009227002832186, 47.4931110020768, 5.5814197821558125,
            -0.6610691825249471],
        7: [30.91273214028599, -3.1208243349937974, 77.79954646070892, 34.28646028294783,
            -19.097331116725623, -28.087943162872662],
        8: [37.80277123390563, -3.2571969029072276, 112.26918849496327, 66.9347231244047,
            -40.06618937091002, -54.66780262877968, -9.48861652309627],
    }
    s = 8
    A = np.zeros((s, s))
    C = np.zeros((s, s))
    for i, row in a.items():
        A[i - 1, : len(row)] = row
    A[6] = A[5]
    A[6, 5] = 1.0
    A[7] = A[6]
    A[7, 6] = 1.0
    for i, row in c.items():
        C[i - 1, : len(row)] = row
    b = A[7].copy()
    b[7] = 1.0
    H = np.array([
        [25.948786856663858, -2.5579724845846235, 10.433815404888879, -2.3679251022685204,
         0.524948541321073, 1.1241088310450404, 0.4272876194431874, -0.17202221070155493],
        [-9.91568850695171, -0.9689944594115154, 3.0438037242978453, -24.495224566215796,
         20.176138334709044, 15.98066361424651, -6.789040303419874, -6.710236069923372],
        [11.419903575922262, 2.8879645146136994, 72.92137995996029, 80.12511834622643,
         -52.072871366152654, -59.78993625266729, -0.15582684282751913, 4.883087185713722],
    ])
    return Tableau(
        gamma=0.21193756319429014, A=A, C=C, b=b,
        c=np.array([0.0, 0.6358126895828704, 0.4095798393397535, 0.9769306725060716, 0.4288403609558664,
                    1.0, 1.0, 1.0]),
        d=np.array([0.21193756319429014, -0.42387512638858027, -0.3384627126235924, 1.8046452872882734,
                    2.325825639765069, 0.0, 0.0, 0.0]),
        order=5.0, H=H)


def _rodas4() -> Tableau:
    """Rodas4 (Hairer & Wanner, Solving ODEs II (1996)): 6 stages, order 4(3), stiffly
    accurate, L-stable; A and C strictly lower, listed row by row."""
    a = [0.1544e+01, 0.9466785280815826, 0.2557011698983284, 0.3314825187068521e+01,
         0.2896124015972201e+01, 0.9986419139977817, 0.1221224509226641e+01, 0.6019134481288629e+01,
         0.1253708332932087e+02, -0.6878860361058950, 0.1221224509226641e+01, 0.6019134481288629e+01,
         0.1253708332932087e+02, -0.6878860361058950, 1.0]
    c = [-0.56688e+01, -0.2430093356833875e+01, -0.2063599157091915, -0.1073529058151375,
         -0.9594562251023355e+01, -0.2047028614809616e+02, 0.7496443313967647e+01,
         -0.1024680431464352e+02, -0.3399990352819905e+02, 0.1170890893206160e+02,
         0.8083246795921522e+01, -0.7981132988064893e+01, -0.3152159432874371e+02,
         0.1631930543123136e+02, -0.6058818238834054e+01]
    A = np.zeros((6, 6))
    C = np.zeros((6, 6))
    rows, cols = np.tril_indices(6, -1)
    A[rows, cols], C[rows, cols] = a, c
    return Tableau(gamma=0.25, A=A, C=C, b=np.array([a[6], a[7], a[8], a[9], 1.0, 1.0]),
                   c=np.array([0.0, 0.386, 0.210, 0.630, 1.0, 1.0]),
                   d=np.array([0.25, -0.1043, 0.1035, -0.3620000000000023e-01, 0.0, 0.0]), order=4.0)


RODAS5P = _rodas5p()
RODAS4 = _rodas4()
TABLEAUS = {"rodas4": RODAS4, "rodas5p": RODAS5P}


def rosenbrock_step(tab: Tableau, f, solve, t0, h, y0, f0=None, T=None, scan: bool = False):
    """One Rosenbrock step: (y1 (n,), error estimate (n,), stages k (s, n)).

        U_i = y0 + sum_{j<i} A_ij k_j
        k_i = solve(f(i, t0 + c_i h, U_i) + sum_{j<i} C_ij k_j / h + d_i h T)
        y1  = y0 + sum_i b_i k_i,    error estimate k_s

    `solve(r)` applies W^-1 = (I / (h gamma) - J)^-1 (however factorised); `f(i, t, U)` the
    right-hand side at stage i (i a Python int, or a traced one with `scan`); `f0`: f at
    stage 1 if already known; T = df/dt, or None when f ignores t (the d terms vanish). The
    same recurrence gives the tangent stages of the step (f then the linearised rhs), see
    `lean_step`. `scan`: the stages as a `lax.scan` (one traced rhs and solve instead of s:
    smaller programs, faster compiles, especially of derivatives); unrolled otherwise, with
    zero coefficients skipped."""
    s = tab.stages
    if scan:
        dtype = y0.dtype
        K = jnp.zeros((s,) + y0.shape, dtype)
        first = 0  # without f0 the first stage joins the scan (its A and C rows are zero)
        if f0 is not None:
            r0 = f0 if T is None else f0 + (float(tab.d[0]) * h) * T
            K, first = K.at[0].set(solve(r0)), 1
        xs = (jnp.arange(first, s), jnp.asarray(tab.A[first:], dtype), jnp.asarray(tab.C[first:], dtype),
              jnp.asarray(tab.c[first:], dtype), jnp.asarray(tab.d[first:], dtype))

        def body(K, x):
            i, a, c, node, d = x
            r = f(i, t0 + node * h, y0 + a @ K)
            if T is not None:
                r = r + (d * h) * T
            r = r + (c @ K) / h
            return K.at[i].set(solve(r)), None

        K, _ = jax.lax.scan(body, K, xs)
        return y0 + jnp.asarray(tab.b, dtype) @ K, K[-1], K
    ks = []
    for i in range(s):
        if i == 0 and f0 is not None:
            r = f0
        else:
            Ui = y0 + sum(float(tab.A[i, j]) * ks[j] for j in range(i) if tab.A[i, j] != 0.0)
            r = f(i, t0 + float(tab.c[i]) * h, Ui)
        if i > 0:
            r = r + sum(float(tab.C[i, j]) * ks[j] for j in range(i) if tab.C[i, j] != 0.0) / h
        if T is not None and tab.d[i] != 0.0:
            r = r + float(tab.d[i]) * h * T
        ks.append(solve(r))
    y1 = y0 + sum(float(tab.b[i]) * ks[i] for i in range(s) if tab.b[i] != 0.0)
    return y1, ks[-1], jnp.stack(ks)


# ----------------------------------------------------------------- the lean step (dense)
# Up to this many states a product with the explicit inverse of W per stage is faster than
# two triangular solves (about even at 28); above it an LU factorisation and a solve per stage win (1.5x at 64
# states, 2.3x at 128 in a compiled step loop), and the inverse's threads cost CPU besides.
EXPLICIT_INVERSE_MAX = 24


def _w_solve(J, h, gamma):
    """r -> W^-1 r for W = I / (h gamma) - J (n, n): by the explicit inverse for
    n <= EXPLICIT_INVERSE_MAX, else by an LU factorisation. Linear in r (the tangent and
    reverse sweeps vmap and transpose it)."""
    n = J.shape[0]
    W = jnp.eye(n, dtype=J.dtype) / (h * gamma) - J
    if n <= EXPLICIT_INVERSE_MAX:
        Ginv = jnp.linalg.inv(W)
        return lambda r: Ginv @ r
    factors = jsl.lu_factor(W)
    return lambda r: jsl.lu_solve(factors, r)


# The lean step forms J from a column colouring when c <= COLOUR_MAX_SHARE n and the colours
# save at least COLOUR_MIN_SAVED JVPs (see `colouring_pays`). Measured on the PEtab models
# (docs/benchmarks.md, `benchmarks/lean_colour.py`): with 20-21 JVPs saved (Laske 34 states,
# 13 colours; Alkan 36, 16) neither a step nor the warm nllh or gradient got faster; with 102
# (Lang, 124 states, 22 colours) the warm nllh took 5.8 instead of 9.9 s CPU, with 358 (Chen,
# 500, 142) a bare step 17.7 instead of 19.8 ms. The n JVPs run as one vmapped JVP of the rhs,
# whose cost grows with the width far less than with the rhs's operations.
COLOUR_MAX_SHARE = 0.5
COLOUR_MIN_SAVED = 64


def colouring_pays(comp: sparsity.Compression | None) -> bool:
    """Whether the lean step should form J from `comp`'s c JVPs rather than n: c <= n
    COLOUR_MAX_SHARE and n - c >= COLOUR_MIN_SAVED (measured, see there): the n JVPs run as
    one vmapped JVP of the rhs, whose cost grows with its width far less than with the rhs's
    operations, so a narrower batch pays only when many directions go."""
    if comp is None:
        return False
    return comp.n_colours <= COLOUR_MAX_SHARE * comp.n and comp.n - comp.n_colours >= COLOUR_MIN_SAVED


def _jvps(f_y, y, directions):
    """(k, n): the JVPs of f_y at y along the rows of directions (k, n)."""
    return jax.vmap(lambda v: jax.jvp(f_y, (y,), (v,))[1])(directions)


def _decompress(comp: sparsity.Compression, Jc):
    """The dense J (n, n) from the JVPs Jc (c, n) along comp's seeds: J[i, j] = Jc[colour(j), i]
    on the pattern, zero elsewhere (static index arrays)."""
    n = comp.n
    vals = Jc[comp.colour, comp.rows]
    return jnp.zeros((n, n), Jc.dtype).at[comp.rows, comp.cols].set(vals, indices_are_sorted=True,
                                                                        unique_indices=True)


def jacobian(f_y, y, comp: sparsity.Compression | None = None):
    """J = d f_y / d y (n, n) at y: n JVPs (`jax.jacfwd`), or with `comp` (the compression of
    a declared or symbolic pattern) c JVPs along its seeds, decompressed."""
    if comp is None:
        return jax.jacfwd(f_y)(y)
    return _decompress(comp, _jvps(f_y, y, jnp.asarray(comp.seeds, y.dtype)))


def _lean_primal(f, t, y, h, args, autonomous: bool, tab: Tableau, linearize: bool, comp=None):
    """(y_new, err, ks, solve (r -> W^-1 r), linear maps of f at the stages (and of df/dt
    first) or []). comp: J from a column colouring (`jacobian`)."""
    J = jacobian(lambda y_: f(t, y_, args), y, comp)
    solve = _w_solve(J, h, tab.gamma)
    lins = []
    T = None
    if not autonomous:
        if linearize:
            T, lin_t = jax.linearize(lambda y_, a_: jax.jvp(lambda t_: f(t_, y_, a_), (t,),
                                                             (jnp.ones_like(t),))[1], y, args)
            lins.append(lin_t)
        else:
            T = jax.jvp(lambda t_: f(t_, y, args), (t,), (jnp.ones_like(t),))[1]

    def stage_rhs(i, ti, Ui):
        if not linearize:
            return f(ti, Ui, args)
        fi, lin = jax.linearize(lambda y_, a_: f(ti, y_, a_), Ui, args)
        lins.append(lin)
        return fi

    y_new, err, ks = rosenbrock_step(tab, stage_rhs, solve, t, h, y, T=T)
    return y_new, err, ks, solve, lins


def _dense(tab: Tableau, K):
    """The dense output's coefficients H K (3, n) from the stages K (s, n) (None without H)."""
    return None if tab.H is None else jnp.asarray(tab.H, K.dtype) @ K


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _lean(f, autonomous, tab, comp, t, h, y, args):
    y_new, err, ks, _, _ = _lean_primal(f, t, y, h, args, autonomous, tab, False, comp)
    return y_new, err, _dense(tab, ks)


@_lean.defjvp
def _lean_jvp(f, autonomous, tab, comp, primals, tangents):
    """Tangent of the step in (y, args), exact for the discrete map: with G k_i = r_i,
    dk_i = G^-1 (dr_i + dJ k_i), dJ k_i = d/d(y, args) [J(y, args) k_i] for all stages in one
    vectorised second derivative, then the stage recurrence of `rosenbrock_step` with the
    linearised rhs; h and t are constants of the step (their tangents, which the step-size
    control stops, are ignored)."""
    t, h, y, args = primals
    _, _, dy, dargs = tangents
    y_new, err, K, solve, lins = _lean_primal(f, t, y, h, args, autonomous, tab, True, comp)

    def jk(y_, a_):
        return jax.vmap(lambda k: jax.jvp(lambda z: f(t, z, a_), (y_,), (k,))[1])(K)

    D = jax.jvp(jk, (y, args), (dy, dargs))[1]  # (s, n)
    dT = None if autonomous else lins.pop(0)(dy, dargs)
    dy_new, derr, dK = rosenbrock_step(tab, lambda i, ti, dU: lins[i](dU, dargs) + D[i], solve,
                                       t, h, dy, T=dT)
    return (y_new, err, _dense(tab, K)), (dy_new, derr, _dense(tab, dK))


def _jacobian_and_dt(f, t, y, args, autonomous: bool, comp=None):
    """(J = df/dy (n, n), T = df/dt (n,) or None) from one vmapped JVP of f in (t, y): the
    directions e_1..e_n (or comp's c seeds, decompressed) in y and, unless autonomous, one
    in t (one traced copy of f)."""
    n = y.shape[0]
    dirs_y = jnp.eye(n, dtype=y.dtype) if comp is None else jnp.asarray(comp.seeds, y.dtype)
    k = dirs_y.shape[0]

    def dense(cols):  # (k, n) JVPs along dirs_y -> J
        return cols.T if comp is None else _decompress(comp, cols)

    if autonomous:
        return dense(_jvps(lambda y_: f(t, y_, args), y, dirs_y)), None
    dirs_y = jnp.concatenate([dirs_y, jnp.zeros((1, n), y.dtype)])
    dirs_t = jnp.zeros((k + 1,), y.dtype).at[k].set(1.0)
    cols = jax.vmap(lambda dt, v: jax.jvp(lambda t_, y_: f(t_, y_, args), (t, y), (dt, v))[1])(dirs_t, dirs_y)
    return dense(cols[:k]), cols[k]


def _lean_scan_primal(f, t, y, h, args, autonomous: bool, tab: Tableau, comp=None):
    """`_lean_primal` with the stages as a `lax.scan`: (y_new, err, ks (s, n), solve)."""
    J, T = _jacobian_and_dt(f, t, y, args, autonomous, comp)
    solve = _w_solve(J, h, tab.gamma)
    y_new, err, ks = rosenbrock_step(tab, lambda i, ti, Ui: f(ti, Ui, args), solve, t, h, y, T=T, scan=True)
    return y_new, err, ks, solve


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 1, 2, 3))
def _lean_scan(f, autonomous, tab, comp, t, h, y, args):
    y_new, err, K, _ = _lean_scan_primal(f, t, y, h, args, autonomous, tab, comp)
    return y_new, err, _dense(tab, K)


@_lean_scan.defjvp
def _lean_scan_jvp(f, autonomous, tab, comp, primals, tangents):
    """`_lean_jvp` with the stages (primal and tangent) as `lax.scan`s: the tangent of stage
    i is the JVP of f at its stage point U_i = y + sum_j A_ij k_j (recomputed from the
    primal stages: one more rhs evaluation per stage, not batched over the tangents) instead
    of a stored linearisation per stage, and the second derivatives dJ k_i and dT come from
    one vmapped JVP (directions k_1..k_s in y and one in t), so the program holds one copy
    of the rhs per role instead of one per stage."""
    t, h, y, args = primals
    _, _, dy, dargs = tangents
    y_new, err, K, solve = _lean_scan_primal(f, t, y, h, args, autonomous, tab, comp)
    s, n = K.shape
    dirs_y = K if autonomous else jnp.concatenate([K, jnp.zeros((1, n), K.dtype)])
    dirs_t = jnp.zeros((dirs_y.shape[0],), K.dtype).at[s:].set(1.0)

    def directional(y_, a_):  # (J k_1 .. J k_s[, df/dt]) at (y_, a_)
        return jax.vmap(lambda dt, v: jax.jvp(lambda t_, z: f(t_, z, a_), (t, y_), (dt, v))[1])(dirs_t, dirs_y)

    D = jax.jvp(directional, (y, args), (dy, dargs))[1]  # (s[+1], n): dJ k_i [and dT]
    dT = None if autonomous else D[s]
    A = jnp.asarray(tab.A, y.dtype)

    def stage_tangent(i, ti, dU):
        Ui = y + A[i] @ K
        return jax.jvp(lambda y_, a_: f(ti, y_, a_), (Ui, args), (dU, dargs))[1] + D[i]

    dy_new, derr, dK = rosenbrock_step(tab, stage_tangent, solve, t, h, dy, T=dT, scan=True)
    return (y_new, err, _dense(tab, K)), (dy_new, derr, _dense(tab, dK))


def lean_step(f, t, y, h, args, autonomous: bool, tab: Tableau, scan: bool = False,
              compression: sparsity.Compression | None = None, dense: bool = False):
    """One Rosenbrock step of y' = f(t, y, args) with a dense W (`_w_solve`):
    (y_new (n,), error estimate (n,)).

    Differentiable in (y, args) by a custom JVP (`_lean_jvp`) that does not differentiate
    the factorisation of W; t and h are constants of the step (the step-size control stops their
    derivatives), so the derivative is that of the discrete map with the chosen steps.
    scan: the stages (and their tangents) as `lax.scan`s, one traced copy of the rhs per
    role instead of one per stage (`_lean_scan_jvp`): programs several times smaller that
    compile faster, for large models; unrolled stages let XLA fuse a small model's stage
    arithmetic and run faster. compression: J (n, n) from the c JVPs of a column colouring
    of a declared or symbolic pattern (`sparsity.compression`; see `colouring_pays`) instead
    of n; the rest of the step, its tangents and cotangents, are the same. dense: also the
    dense output's coefficients H K (3, n) of a tableau that has one (`RodasInterpolation`),
    with their tangents."""
    step = _lean_scan if scan else _lean
    y_new, err, kd = step(f, autonomous, tab, compression, jax.lax.stop_gradient(t), jax.lax.stop_gradient(h), y,
                          args)
    return (y_new, err, kd) if dense else (y_new, err)


# ----------------------------------------------------------------- the diffrax solver
class RodasInterpolation(diffrax.AbstractLocalInterpolation):
    """Rodas5P's dense output on [t0, t1] (order 4): y0, y1 (n,) and K (3, n)."""

    t0: jax.Array
    t1: jax.Array
    y0: jax.Array
    y1: jax.Array
    k: jax.Array

    def evaluate(self, t0, t1=None, left: bool = True):
        del left
        if t1 is not None:
            return self.evaluate(t1) - self.evaluate(t0)
        return rodas_dense(linear_rescale(self.t0, t0, self.t1), self.y0, self.y1, self.k)


def rodas_dense(th, y0, y1, k):
    """Rodas5P's dense output at th = (t - t0) / (t1 - t0) (a scalar, or (m, 1) for m
    times) from the step's y0, y1 (n,) and coefficients k = H K (3, n)."""
    th1 = 1.0 - th
    return th1 * y0 + th * (y1 + th1 * (k[0] + th * (k[1] + th * k[2])))


class _Dense:
    """W = I / (h gamma) - J factorised densely: J by `jax.jacfwd` (n JVPs), LU by LAPACK."""

    @staticmethod
    def factor(f_y, y0, scale):
        J = jax.jacfwd(f_y)(y0)
        W = jnp.diag(jnp.full(y0.shape, scale)) - J
        return jsl.lu_factor(W)

    @staticmethod
    def solve(factors, r):
        return jsl.lu_solve(factors, r)

    @staticmethod
    def solve_t(factors, r):
        return jsl.lu_solve(factors, r, trans=1)


class _BandedW:
    """W as a lineax-like operator for `banded._blocks`: v -> v / (h gamma) - J v."""

    def __init__(self, f_y, y0, scale):
        self.f_y, self.y0, self.scale = f_y, y0, scale

    def mv(self, v):
        return v * self.scale - jax.jvp(self.f_y, (self.y0,), (v,))[1]


# Blocks of at least 16 on Rodas5P's banded path: with explicit block inverses a larger
# block costs only larger matrix products, while each block row is a scan step with a
# fixed overhead, so 16 x 16 blocks factorise faster than 8 x 8 ones at a few hundred
# states; `banded.BandedLU`'s per-block LU keeps the minimum 8.
BLOCK_MIN = 16


def block_size(bandwidth: int, n: int) -> int:
    """`banded.block_size` with Rodas5P's minimum block (`BLOCK_MIN`)."""
    return banded.block_size(bandwidth, n, minimum=BLOCK_MIN)


class _Banded:
    """W factorised blockwise: colour-compressed J (c JVPs), `banded.factor`'s
    block-tridiagonal LU with explicit block inverses (one factorisation, 8 solves)."""

    def __init__(self, layout: banded.Layout):
        self.layout = layout

    def factor(self, f_y, y0, scale):
        return banded.factor(banded._blocks(self.layout, _BandedW(f_y, y0, scale)), inverse=True)

    def solve(self, factors, r):
        return banded.solve_in_order(self.layout, factors, r, banded.solve_columns)

    def solve_t(self, factors, r):
        return banded.solve_in_order(self.layout, factors, r, banded.solve_transpose_columns)


class Rodas5P(diffrax.AbstractAdaptiveSolver):
    """Rodas5P (order 5, embedded 4, L-stable, stiffly accurate) for `diffrax.ODETerm`s on a
    1-D state. `layout`: a `banded.Layout` for the block-tridiagonal linear algebra, or
    None for dense LU; `scan_stages`: the 8 stages as a `lax.scan` (True), unrolled
    (False), or None (scan on the banded path only). Use with a `PIDController`; see the
    module docstring."""

    layout: banded.Layout | None = eqx.field(static=True, default=None)
    # stages as a lax.scan (None: on the banded path only). Unrolled stages let XLA fuse a
    # small system's stage arithmetic, which makes simulate and adjoint faster there; a scan
    # keeps programs small, compiles faster and wins at hundreds of banded states
    scan_stages: bool | None = eqx.field(static=True, default=None)

    term_structure: ClassVar = diffrax.AbstractTerm
    interpolation_cls: ClassVar = RodasInterpolation

    def order(self, terms):
        return 5

    def error_order(self, terms):
        return 5  # local error of the embedded order-4 solution: O(h^5)

    def init(self, terms, t0, t1, y0, args):
        return None

    def func(self, terms, t0, y0, args):
        return terms.vf(t0, y0, args)

    def _linear(self):
        return _Dense() if self.layout is None else _Banded(self.layout)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        del solver_state, made_jump
        if y0.ndim != 1:
            raise ValueError(f"Rodas5P solves 1-D states, got shape {y0.shape}")
        dtype = y0.dtype
        h = jnp.asarray(t1 - t0, dtype)
        f = lambda t, y: jnp.asarray(terms.vf(t, y, args), dtype=dtype)  # noqa: E731
        f_y = lambda y: f(t0, y)  # noqa: E731
        # f(t0, y0) and T = df/dt in one JVP (T is zero, and free, when f ignores t)
        f0, T = jax.jvp(lambda t: f(t, y0), (jnp.asarray(t0, dtype),), (jnp.ones((), dtype),))
        lin = self._linear()
        scale = 1.0 / (h * RODAS5P.gamma)
        # W's factors carry no derivative: tangents and cotangents of the stage solves come
        # from implicit differentiation, dk = W^-1 (dr - dW k), with dW k one second-order
        # JVP of f (custom_linear_solve), not from differentiating J and the LU (n or c
        # second-order JVPs and O(n^3) or O(n m^2) factor derivatives per direction)
        sg = jax.lax.stop_gradient
        args_sg = jax.tree_util.tree_map(sg, args)
        factors = lin.factor(lambda y: jnp.asarray(terms.vf(sg(t0), y, args_sg), dtype=dtype), sg(y0), sg(scale))

        def matvec(v):  # W v = v / (h gamma) - J v
            return v * scale - jax.jvp(f_y, (y0,), (v,))[1]

        def solve(r):
            return jax.lax.custom_linear_solve(matvec, r, lambda _, b: lin.solve(factors, b),
                                               lambda _, b: lin.solve_t(factors, b))

        scan = self.layout is not None if self.scan_stages is None else self.scan_stages
        y1, err, ks = rosenbrock_step(RODAS5P, lambda i, t, y: f(t, y), solve, t0, h, y0, f0=f0, T=T, scan=scan)
        dense = dict(y0=y0, y1=y1, k=_dense(RODAS5P, ks))
        ok = jnp.all(jnp.isfinite(y1))
        # a singular W gives non-finite stages: report a huge error so the controller
        # rejects the step and shrinks h, rather than failing the solve
        err = jnp.where(ok, err, jnp.inf)
        return y1, err, dense, None, diffrax.RESULTS.successful
