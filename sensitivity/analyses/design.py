"""Optimal experimental design: which measurements (when, of what, under which condition)
would pin the inputs down best.

Every candidate measurement c (a save time and an output; for a PEtab problem an
observable, a condition and a time) adds its Fisher information M_c = G_c^T G_c to the
information already in hand F_0 (`fixed`, today's data):

    F(design) = F_0 + sum_{c in design} M_c,    G_c = J_c / sigma_c   (rank 1),

G_c the candidate's scaled sensitivity row (on the log or linear input scale, as in
`identifiability.fisher`; for PEtab one row for the mean and one for the noise model's
sigma, rank 2). ONE forward Jacobian over every candidate gives every G_c; the search then
only does linear algebra on them, nothing is solved again.

Criteria (to maximise; `Design.value` is the natural quantity):
    D   log det F                        A   trace F^-1 (the summed variances), minimised
    E   smallest eigenvalue of F         ME  condition number of F, minimised
and, with `parameters` naming the inputs of interest s, D_s = -log det (F^-1)_ss,
A_s = trace (F^-1)_ss (E_s, ME_s likewise on ((F^-1)_ss)^-1).

Methods:
- "greedy": add the candidate with the largest gain n times; a candidate's gain for D is
  log det(I + G_c F^-1 G_c^T) (the matrix determinant lemma), for A the Woodbury
  reduction of the trace, for D_s / A_s the same on the block; all candidates at once, one
  (n_candidates, r, p) product per step. E and ME have no such update: their scan takes
  the eigenvalues of every F + M_c (batched).
- "exchange" (default): greedy, then Fedorov-style exchange passes: each chosen
  measurement is taken out and the best candidate for the rest put in, while that improves
  the criterion.
- "continuous": weights w over the candidates (an approximate design), F(w) = F_0 +
  n sum_c w_c M_c, by the multiplicative algorithm w_c <- w_c psi_c / sum_k w_k psi_k
  (psi_c = d phi / d w_c; Titterington 1976, Yu 2010), with the general equivalence
  theorem's check: at the optimum max_c psi_c = sum_c w_c psi_c (= p for D without F_0:
  the variance function d(x) never exceeds the number of parameters). The gap between the
  two bounds the criterion of ANY design of n measurements (phi concave), which gives the
  efficiency bound; the weights are rounded to n measurements (efficient rounding,
  Pukelsheim & Rieder 1992). E and ME (`_Search.eigen_weights`): mirror ascent on a
  smoothed smallest eigenvalue (and condition number), then for E Kelley's cutting planes,
  whose dual bounds the optimum (Pukelsheim's duality for E).

A design is local: the Jacobian is taken at the inputs given. A robust design averages the
criterion over parameter samples (`robust`: rows of inputs, mappings, or a
`sensitivity.ensemble` dataset), their Jacobians from one vmapped ensemble.

Efficiencies (> 1: better than the reference): D exp((phi - phi_ref) / p) (the ratio of
measurement counts that give the same determinant), A trace_ref / trace, E lambda /
lambda_ref, ME cond_ref / cond. Against "uniform": the same number of measurements spread
with equal weight over every candidate. Against the optimum: a lower bound from the
continuous design's equivalence gap (D, A) or the cutting planes' dual (E); none for ME.
"""

from __future__ import annotations

import math
import time as _time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from ..api import jacobian as _jacobian
from ..core.data import read_data
from ..core.errors import InputError, did_you_mean, list_names
from ..core.problem import Problem
from ..core.results import JacobianResult
from ..importers.petab import PetabProblem
from ..importers.petab_rows import new_conditions
from ..plots.design import design_figure
from .ensemble import ensemble
from .identifiability import Fisher, scaled_jacobian, weights

CRITERIA = ("D", "A", "E", "ME")
METHODS = ("exchange", "greedy", "continuous")
RIDGE = 1e-9  # x the mean diagonal of one candidate's information: keeps scans defined
CHUNK = 2048  # candidates per batched eigen-decomposition (E, ME)
CUTS = 30  # cutting planes kept from the E design's mirror ascent
PETAB_TIMES = 61  # default candidate times per observable and condition of a PEtab problem


# --------------------------------------------------------------------------- criteria
def _criterion(criterion: str, parameters) -> tuple[str, bool]:
    """(base criterion, on a subset); accepts D, A, E, ME and D_s, A_s, Ds, As."""
    c = str(criterion).strip().upper().replace("_", "")
    sub = c.endswith("S") and c[:-1] in CRITERIA
    base = c[:-1] if sub else c
    if base not in CRITERIA:
        raise InputError(f"criterion = '{criterion}' is unknown; valid: D, A, E, ME (modified E: the "
                         "condition number), and D_s, A_s with parameters=[...] of interest")
    if sub and not parameters:
        raise InputError(f"criterion = '{criterion}' needs parameters=[...]: the inputs of interest")
    return base, bool(parameters)


def _label(base: str, sub: bool) -> str:
    return f"{base}_s" if sub else base


def natural(u: float, base: str) -> float:
    """A criterion's natural value from its utility (larger is better): D log det; A the
    trace of the covariance; E the smallest eigenvalue; ME the condition number."""
    return -u if base in ("A", "ME") else u


def relative_efficiency(u: float, u_ref: float, base: str, q: int) -> float:
    """The efficiency of a design of utility u against one of u_ref (> 1: u is better);
    q: the number of parameters the criterion is about (D: exp((u - u_ref) / q))."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if base == "D":
            if u == u_ref:
                return 1.0
            return float(np.exp((u - u_ref) / q))
        if base == "E":
            return float(u / u_ref) if u_ref > 0 else (np.inf if u > 0 else np.nan)
        # A, ME: utilities are minus the trace / condition number
        return float(u_ref / u) if u < 0 else np.nan


def _cov_block(F: np.ndarray, sub: np.ndarray | None) -> np.ndarray | None:
    """(F^-1)_ss (the whole inverse without a subset); None when F does not determine the
    subset (it loads on a direction of eigenvalue ~ 0)."""
    lam, V = np.linalg.eigh(0.5 * (F + F.T))
    top = max(float(lam[-1]), 0.0)
    null = lam <= 1e-12 * top if top > 0 else np.ones(lam.size, bool)
    idx = np.arange(F.shape[0]) if sub is None else sub
    if null.any() and (V[idx][:, null] ** 2).sum(axis=1).max() > 1e-8:
        return None
    keep = ~null
    Vs = V[idx][:, keep]
    return (Vs / lam[keep]) @ Vs.T


def utility(F: np.ndarray, base: str, sub: np.ndarray | None = None) -> float:
    """The criterion of the information F (p, p) as a utility (larger is better; -inf for a
    design that does not determine the inputs concerned). sub: indices of the inputs of
    interest (D_s, A_s, E_s, ME_s) or None."""
    if sub is None and base in ("D", "E"):
        lam = np.linalg.eigvalsh(0.5 * (F + F.T))
        if base == "E":
            return float(max(lam[0], 0.0))
        top = max(float(lam[-1]), 0.0)
        return float(np.sum(np.log(lam))) if top > 0 and lam[0] > 1e-12 * top else -np.inf
    C = _cov_block(F, sub)
    if C is None:
        return 0.0 if base == "E" else -np.inf
    if base == "A":
        return -float(np.trace(C))
    mu = np.linalg.eigvalsh(0.5 * (C + C.T))  # eigenvalues of the covariance block
    if base == "D":
        return -float(np.sum(np.log(mu)))
    if base == "E":
        return float(1.0 / mu[-1])
    return -float(mu[-1] / mu[0]) if mu[0] > 0 else -np.inf


def _inverse(F: np.ndarray) -> np.ndarray:
    """F^-1 of a positive definite F (Cholesky)."""
    L = np.linalg.cholesky(F)
    Li = np.linalg.solve(L, np.eye(F.shape[0]))
    return Li.T @ Li


def scan(F: np.ndarray, G: np.ndarray, base: str, sub: np.ndarray | None = None) -> np.ndarray:
    """The utility of F + M_c for every candidate c at once, shape (n_candidates,).

    F: (p, p) positive definite (the current design, with the ridge); G: (n_candidates, r,
    p), M_c = G_c^T G_c. D, A and their subset forms by rank-r updates of F^-1 (the matrix
    determinant lemma and Woodbury's identity: O(n_candidates r p^2)); E and ME by the
    eigenvalues of every F + M_c.
    """
    N, r, p = G.shape
    if base in ("E", "ME") and sub is None and r == 1:
        return _rank_one_extremes(F, G[:, 0], base)
    if base in ("E", "ME"):
        out = np.empty(N)
        for a in range(0, N, CHUNK):
            Gb = G[a:a + CHUNK]
            Fn = F[None] + np.einsum("nrp,nrq->npq", Gb, Gb)
            if sub is None:
                lam = np.linalg.eigvalsh(Fn)
                out[a:a + CHUNK] = lam[:, 0] if base == "E" else -lam[:, -1] / lam[:, 0]
            else:
                C = np.linalg.inv(Fn)[:, sub[:, None], sub[None, :]]
                mu = np.linalg.eigvalsh(C)
                out[a:a + CHUNK] = 1.0 / mu[:, -1] if base == "E" else -mu[:, -1] / mu[:, 0]
        return out
    C = _inverse(F)
    U = (G.reshape(N * r, p) @ C).reshape(N, r, p)  # G_c F^-1, one matrix product
    K = np.eye(r)[None] + _pairs(U, G)  # I + G_c F^-1 G_c^T  (N, r, r)
    if sub is None:
        if base == "D":
            u0 = float(np.linalg.slogdet(F)[1])
            if r == 1:
                return u0 + np.log(K[:, 0, 0])
            return u0 + np.linalg.slogdet(K)[1]
        # A: trace (F + G^T G)^-1 = trace C - trace(K^-1 U U^T)
        UU = _pairs(U, U)
        red = UU[:, 0, 0] / K[:, 0, 0] if r == 1 else np.trace(np.linalg.solve(K, UU), axis1=1, axis2=2)
        return -(np.trace(C) - red)
    Us = U[:, :, sub]  # (N, r, s)
    Css = C[np.ix_(sub, sub)]
    if base == "A":
        UU = _pairs(Us, Us)
        red = UU[:, 0, 0] / K[:, 0, 0] if r == 1 else np.trace(np.linalg.solve(K, UU), axis1=1, axis2=2)
        return -(np.trace(Css) - red)
    # D_s: (F_new^-1)_ss = C_ss - U_s^T K^-1 U_s; log det of it by Sylvester's identity
    u0 = -float(np.linalg.slogdet(Css)[1])
    W = (Us.reshape(N * r, -1) @ np.linalg.inv(Css)).reshape(N, r, -1)  # U_s C_ss^-1
    inner = _pairs(W, Us)  # U_s C_ss^-1 U_s^T  (N, r, r)
    if r == 1:
        return u0 - np.log1p(-inner[:, 0, 0] / K[:, 0, 0])
    return u0 - np.linalg.slogdet(np.eye(r)[None] - np.linalg.solve(K, inner))[1]


def _rank_one_extremes(F: np.ndarray, g: np.ndarray, base: str, steps: int = 64) -> np.ndarray:
    """E (smallest eigenvalue) or ME (minus the condition number) of F + g_c g_c^T for
    every row g_c of g (N, p), from ONE eigendecomposition F = V diag(lam) V^T: the new
    eigenvalues are the roots of the secular equation 1 + sum_i z_i^2 / (lam_i - mu) = 0,
    z = V^T g_c, and interlace with lam (Golub 1973): the smallest lies in [lam_1, lam_2],
    the largest in [lam_p, lam_p + |z|^2]. Bisection on those brackets (the left side of
    the root has f < 0), all candidates at once."""
    lam, V = np.linalg.eigh(0.5 * (F + F.T))
    z2 = (g @ V) ** 2  # (N, p)

    def root(lo, hi):
        for _ in range(steps):
            mid = 0.5 * (lo + hi)
            with np.errstate(divide="ignore", invalid="ignore"):
                f = 1.0 + np.sum(z2 / (lam[None, :] - mid[:, None]), axis=1)
            left = f < 0  # the root lies above mid
            lo, hi = np.where(left, mid, lo), np.where(left, hi, mid)
        return 0.5 * (lo + hi)

    N, p = g.shape
    low = root(np.full(N, lam[0]), np.full(N, lam[1] if p > 1 else lam[0] + z2.sum(axis=1).max()))
    if p == 1:
        low = lam[0] + z2[:, 0]
    if base == "E":
        return low
    high = lam[-1] + z2[:, -1] if p == 1 else root(np.full(N, lam[-1]), lam[-1] + z2.sum(axis=1))
    return -high / low


def derivatives(F: np.ndarray, G: np.ndarray, base: str, sub: np.ndarray | None, n: float) -> np.ndarray:
    """psi_c = d phi(F_0 + n sum_k w_k M_k) / d w_c for every candidate, shape (n_candidates,):
    D: n trace(F^-1 M_c), A: n trace(F^-1 M_c F^-1), and the subset forms (D and A only;
    a singular F that determines the subset: through its pseudo-inverse)."""
    try:
        C = _inverse(F)
    except np.linalg.LinAlgError:
        C = np.linalg.pinv(F, rcond=1e-12, hermitian=True)
    if sub is None:
        H = C if base == "D" else C @ C
    else:
        B = C[:, sub]
        H = B @ np.linalg.solve(C[np.ix_(sub, sub)], B.T) if base == "D" else B @ B.T
    N, r, p = G.shape
    GH = (G.reshape(N * r, p) @ H).reshape(N, r, p)
    return n * np.einsum("nrp,nrp->n", GH, G)


def _pairs(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """A_c B_c^T for every candidate: (N, r, k) x (N, q, k) -> (N, r, q)."""
    if A.shape[1] == 1 and B.shape[1] == 1:
        return np.einsum("nk,nk->n", A[:, 0], B[:, 0])[:, None, None]
    return np.einsum("nrk,nqk->nrq", A, B)


def _gram(G: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """sum_c w_c G_c^T G_c (p, p) for G (N, r, p), w (N,) (default 1): one matrix product."""
    N, r, p = G.shape
    Gm = G.reshape(N * r, p)
    if w is None:
        return Gm.T @ Gm
    return Gm.T @ (Gm * np.repeat(w, r)[:, None])


# --------------------------------------------------------------------------- the search
@dataclass
class _Search:
    """What the search works on: G (n_samples, n_candidates, r, p), F0 (n_samples, p, p)."""

    G: np.ndarray
    F0: np.ndarray
    base: str
    sub: np.ndarray | None
    costs: np.ndarray | None
    budget: float | None
    replicates: bool
    ridge: np.ndarray = field(init=False)

    def __post_init__(self):
        S, N, r, p = self.G.shape
        mean_diag = np.array([np.trace(_gram(Gs)) for Gs in self.G]) / (N * p)
        self.ridge = RIDGE * np.where(mean_diag > 0, mean_diag, 1.0)

    def info(self, chosen: Sequence[int]) -> np.ndarray:
        """F_0 + sum of the chosen candidates' information, (n_samples, p, p)."""
        F = self.F0.copy()
        for c in chosen:
            F += np.einsum("srp,srq->spq", self.G[:, c], self.G[:, c])
        return F

    def value(self, F: np.ndarray) -> float:
        """The mean utility over the samples, without the ridge."""
        return float(np.mean([utility(Fs, self.base, self.sub) for Fs in F]))

    def _regular(self, F):
        p = F.shape[-1]
        return F + self.ridge[:, None, None] * np.eye(p)[None]

    def regular_value(self, F: np.ndarray) -> float:
        return float(np.mean([utility(Fs, self.base, self.sub) for Fs in self._regular(F)]))

    def scores(self, F: np.ndarray) -> np.ndarray:
        """Mean utility (with the ridge) after adding each candidate, (n_candidates,)."""
        Fr = self._regular(F)
        return np.mean([scan(Fr[s], self.G[s], self.base, self.sub) for s in range(F.shape[0])], axis=0)

    def allowed(self, chosen: list[int], spent: float, limit: float | None) -> np.ndarray:
        N = self.G.shape[1]
        ok = np.ones(N, bool)
        if not self.replicates and chosen:
            ok[np.asarray(chosen)] = False
        if self.costs is not None and limit is not None:
            ok &= spent + self.costs <= limit * (1 + 1e-12)
        return ok

    def greedy(self, n: int | None) -> tuple[list[int], list[float]]:
        chosen: list[int] = []
        path: list[float] = []
        F = self.F0.copy()
        spent = 0.0
        count = n if n is not None else self.G.shape[1] * (1 if not self.replicates else 10**6)
        while len(chosen) < count:
            ok = self.allowed(chosen, spent, self.budget)
            if not ok.any():
                break
            u = self.scores(F)
            if self.costs is not None:
                gain = (u - self.regular_value(F)) / self.costs
                u = np.where(np.isfinite(gain), gain, -np.inf)
            u = np.where(ok, u, -np.inf)
            j = int(np.argmax(u))
            if not np.isfinite(u[j]) and not ok[j]:
                break
            chosen.append(j)
            spent += 0.0 if self.costs is None else float(self.costs[j])
            F += np.einsum("srp,srq->spq", self.G[:, j], self.G[:, j])
            path.append(self.value(F))
        return chosen, path

    def exchange(self, chosen: list[int], max_passes: int = 50, rtol: float = 1e-10) -> tuple[list[int], int]:
        """Fedorov-style exchange: each chosen candidate out, the best one for the rest in,
        while the criterion improves (with costs: the total cost stays within the budget,
        or within the greedy design's cost). Returns (design, swaps made)."""
        chosen = list(chosen)
        F = self.info(chosen)
        current = self.regular_value(F)
        limit = self.budget if self.budget is not None else (
            None if self.costs is None else float(self.costs[chosen].sum()))
        swaps = 0
        for _ in range(max_passes):
            improved = False
            for i in range(len(chosen)):
                out = chosen[i]
                F_minus = F - np.einsum("srp,srq->spq", self.G[:, out], self.G[:, out])
                rest = chosen[:i] + chosen[i + 1:]
                spent = 0.0 if self.costs is None else float(self.costs[rest].sum())
                u = np.where(self.allowed(rest, spent, limit), self.scores(F_minus), -np.inf)
                j = int(np.argmax(u))
                if j != out and u[j] > current + rtol * max(abs(current), 1.0):
                    chosen[i] = j
                    F = F_minus + np.einsum("srp,srq->spq", self.G[:, j], self.G[:, j])
                    current = self.regular_value(F)
                    improved, swaps = True, swaps + 1
            if not improved:
                break
        return chosen, swaps

    def continuous(self, n: float, iterations: int = 1000, tol: float = 1e-4,
                   seconds: float | None = None, rounds: int = 40) -> dict:
        """The multiplicative algorithm over weights (D and A families), from equal weights.
        For D without fixed information (one sample), candidates that cannot support a
        D-optimal design are dropped as it goes (Harman & Pronzato 2007: d(x) below
        p (1 + e/2 - sqrt(e (4 + e - 4/p)) / 2), e = max d - p). Returns weights, psi (the
        mean derivatives), the equivalence gap, the utility and the upper bound on any
        design's utility, iterations. E and ME: `eigen_weights`."""
        if self.base in ("E", "ME"):
            return self.eigen_weights(n, iterations=iterations, tol=tol, seconds=seconds, rounds=rounds)
        S, N, r, p = self.G.shape
        w = np.full(N, 1.0 / N)
        active = np.arange(N)
        power = 1.0 if self.base == "D" else 0.5
        prune = self.base == "D" and self.sub is None and S == 1 and not np.any(self.F0)
        start = _time.perf_counter()
        k = 0
        while True:
            Ga = self.G[:, active]
            wa = w[active]
            F = self.F0 + n * np.stack([_gram(Gs, wa) for Gs in Ga])
            psi_a = np.mean([derivatives(F[s], Ga[s], self.base, self.sub, n) for s in range(S)], axis=0)
            mean = float(wa @ psi_a)
            gap = float(psi_a.max() - mean)
            if gap <= tol * max(mean, 1e-300) or k >= iterations or (
                    seconds is not None and _time.perf_counter() - start > seconds):
                break
            if prune and k % 10 == 9:
                e = psi_a.max() - p
                h = p * (1 + e / 2 - math.sqrt(max(e * (4 + e - 4 / p), 0.0)) / 2)
                keep = psi_a >= h
                if not keep.all():
                    w[active[~keep]] = 0.0
                    active, psi_a, wa = active[keep], psi_a[keep], wa[keep]
                    wa = wa / wa.sum()
                    mean = float(wa @ psi_a)
            w[active] = wa * (psi_a / mean) ** power
            w /= w.sum()
            k += 1
        # psi for every candidate (the dropped ones too), at the final weights
        psi = np.mean([derivatives(F[s], self.G[s], self.base, self.sub, n) for s in range(S)], axis=0)
        mean = float(w @ psi)
        gap = float(psi.max() - mean)
        u = self.value(F)
        return {"weights": w, "psi": psi, "gap": gap, "mean_psi": mean, "utility": u,
                "upper": u + gap, "iterations": k}


    def eigen_weights(self, n: float, iterations: int = 1000, tol: float = 1e-4,
                      seconds: float | None = None, rounds: int = 40) -> dict:
        """Weights for E (the smallest eigenvalue) and ME (the condition number): mirror
        ascent (exponentiated gradient with a backtracking step) on a smoothed criterion,
        with the smoothing tightened in stages.

        The smallest eigenvalue is replaced by the soft minimum -t log sum exp(-lambda_i / t)
        (concave, within t log q of lambda_min; its gradient in the information matrix is
        E_t = sum_i pi_i v_i v_i^T, pi the softmax of -lambda / t); ME maximises
        log softmin - log softmax. psi_c = n trace(H M_c), H = L^T E_t L, with L = I (all
        inputs) or L = C_s (F^-1)_{s,:} for the subset s (C_s = ((F^-1)_ss)^-1, whose
        derivative in F is L dF L^T).

        The bound for E (Pukelsheim's duality): for ANY trace-one E >= 0 and L with
        L K = I (K the subset's columns of the identity), the best weights w* satisfy
        lambda_min(C_s(F(w*))) <= trace(E L F(w*) L^T) <= trace(H F_0) + max_c psi_c, since
        C_s(F) <= L F L^T (Gauss-Markov) and F(w*) = F_0 + n sum_c w*_c M_c. At the optimum
        the bound is attained (the general equivalence theorem for E). ME (not concave): no
        bound (upper = NaN)."""
        S, N, r, p = self.G.shape
        w = np.full(N, 1.0 / N)
        sub = self.sub
        start = _time.perf_counter()

        def info(w):
            return self.F0 + n * np.stack([_gram(Gs, w) for Gs in self.G])

        def parts(F, temps):
            """(smoothed utility averaged over samples, H per sample (S, p, p))."""
            vals, Hs = [], []
            for Fs, (t_lo, t_hi) in zip(self._regular(F), temps):
                if sub is None:
                    C, L = Fs, None
                else:
                    Fi = _inverse(Fs)
                    C = np.linalg.inv(Fi[np.ix_(sub, sub)])
                    L = C @ Fi[sub, :]
                lam, V = np.linalg.eigh(0.5 * (C + C.T))
                e = np.exp(-(lam - lam[0]) / t_lo)
                lo, E_lo = lam[0] - t_lo * np.log(e.sum()), (V * (e / e.sum())) @ V.T
                if self.base == "E":
                    val, Hq = lo, E_lo
                else:
                    e = np.exp((lam - lam[-1]) / t_hi)
                    hi, E_hi = lam[-1] + t_hi * np.log(e.sum()), (V * (e / e.sum())) @ V.T
                    val, Hq = (np.log(lo) - np.log(hi), E_lo / lo - E_hi / hi) if lo > 0 else (-np.inf, E_lo)
                vals.append(val)
                Hs.append(Hq if L is None else L.T @ Hq @ L)
            return float(np.mean(vals)), np.stack(Hs)

        def temperatures(F, tau):
            out = []
            for Fs in self._regular(F):
                C = Fs if sub is None else np.linalg.inv(_inverse(Fs)[np.ix_(sub, sub)])
                lam = np.linalg.eigvalsh(0.5 * (C + C.T))
                out.append((tau * max(lam[0], 1e-300), tau * max(lam[-1], 1e-300)))
            return out

        best = {"u": -np.inf, "w": w.copy(), "upper": np.inf}
        cuts: deque = deque(maxlen=CUTS)  # (trace(H F_0) (S,), psi (S, N)) of the iterates
        k, eta = 0, 1.0
        psi = np.zeros(N)
        stages = (1e-1, 1e-2, 1e-3, 1e-4)
        per_stage = iterations  # a stage ends when the smoothed criterion is stationary
        done = False
        for tau in stages:
            temps = temperatures(info(w), tau)
            for _ in range(per_stage):
                F = info(w)
                val, Hs = parts(F, temps)
                psi_s = np.stack([n * np.einsum("nrp,nrp->n", (Gs.reshape(N * r, p) @ H).reshape(N, r, p), Gs)
                                  for Gs, H in zip(self.G, Hs)])
                psi = psi_s.mean(axis=0)
                cuts.append((np.einsum("spq,spq->s", Hs, self.F0), psi_s))
                u = self.value(F)
                if u > best["u"]:
                    best.update(u=u, w=w.copy())
                if self.base == "E":
                    upper = float(np.mean([np.sum(H * F0s) for H, F0s in zip(Hs, self.F0)]) + psi.max())
                    best["upper"] = min(best["upper"], upper)
                    if best["upper"] - best["u"] <= tol * max(abs(best["u"]), 1e-300):
                        done = True
                if done or k >= iterations or (seconds is not None and _time.perf_counter() - start > seconds):
                    done = True
                    break
                g = psi - float(w @ psi)
                scale = float(np.max(np.abs(g)))
                if not scale > 0 or scale <= tol * max(abs(val), 1e-300):
                    break  # stationary at this smoothing: tighten it
                while eta > 1e-12:  # backtracking: the smoothed criterion must not fall
                    trial = w * np.exp(np.clip(eta * g / scale, -50.0, 50.0))
                    trial /= trial.sum()
                    if parts(info(trial), temps)[0] >= val:
                        w, eta = trial, min(eta * 1.5, 1e3)
                        break
                    eta *= 0.5
                k += 1
            if done:
                break
        if self.base == "E" and best["upper"] - best["u"] > tol * max(abs(best["u"]), 1e-300):
            self._cutting_planes(n, best, list(cuts), info, tol, start, seconds, rounds)
        w = best["w"]
        F = info(w)
        u = self.value(F)
        _, Hs = parts(F, temps)
        psi = np.mean([n * np.einsum("nrp,nrp->n", (Gs.reshape(N * r, p) @ H).reshape(N, r, p), Gs)
                       for Gs, H in zip(self.G, Hs)], axis=0)
        upper = best["upper"] if self.base == "E" else np.nan
        mean = float(w @ psi)
        return {"weights": w, "psi": psi, "gap": (upper - u) if self.base == "E" else float(psi.max() - mean),
                "mean_psi": mean, "utility": u, "upper": upper, "iterations": k}


    def _cutting_planes(self, n: float, best: dict, cuts: list, info, tol: float, start: float,
                        seconds: float | None, rounds: int = 40) -> None:
        """Kelley's cutting planes for E, from the mirror ascent's cuts: every H of the
        iterates gives a linear function of the weights that lies above the criterion
        everywhere (cut_j(w) = trace(H_j F_0) + sum_c w_c psi_jc, see `eigen_weights`). The
        linear program max_w mean_s min_j cut_sj(w) over the simplex, on a subset of the
        candidates (those the cuts favour, grown by column generation), gives a new point,
        where the eigenvectors of the smallest eigenvalues add cuts that touch the
        criterion; its dual, weights mu_j >= 0 summing to one over the cuts (per sample),
        gives the bound sum_j mu_j a_j + max_c sum_j mu_j psi_jc over ALL candidates (a
        convex combination of functions above the criterion lies above it). Updates best
        (u, w, upper) in place."""
        from scipy.optimize import linprog

        S, N, r, p = self.G.shape
        sub = self.sub
        width = min(N, max(200, 10 * p))
        cols = np.union1d(np.argsort(-cuts[-1][1].mean(axis=0))[:width], np.flatnonzero(best["w"] > 0))
        for _ in range(rounds):
            if seconds is not None and _time.perf_counter() - start > seconds:
                return
            a = np.stack([c[0] for c in cuts])  # (J, S)
            Psi = np.stack([c[1] for c in cuts])  # (J, S, N)
            J, m = a.shape[0], cols.size
            A = np.zeros((J * S, m + S))  # lambda_s - psi_sj . w <= a_sj
            for s_ in range(S):
                A[s_ * J:(s_ + 1) * J, :m] = -Psi[:, s_, cols]
                A[s_ * J:(s_ + 1) * J, m + s_] = 1.0
            b = a.T.reshape(-1)
            c = np.concatenate([np.zeros(m), -np.full(S, 1.0 / S)])
            res = linprog(c, A_ub=A, b_ub=b, A_eq=np.concatenate([np.ones(m), np.zeros(S)])[None], b_eq=[1.0],
                          bounds=[(0, None)] * m + [(None, None)] * S, method="highs")
            if res.status != 0:
                return
            mu = np.clip(-res.ineqlin.marginals, 0.0, None).reshape(S, J)
            total = mu.sum(axis=1, keepdims=True)
            if np.all(total > 0):
                mu = mu / (S * total)
                price = np.einsum("sj,jsn->n", mu, Psi)  # the dual's linear function of the weights
                best["upper"] = min(best["upper"], float(np.sum(mu * a.T) + price.max()))
                grow = np.setdiff1d(np.argsort(-price)[:max(width // 4, 1)], cols)
                if grow.size and price[grow].max() > -res.fun:
                    cols = np.union1d(cols, grow)
            w = np.zeros(N)
            w[cols] = np.clip(res.x[:m], 0.0, None)
            w /= w.sum()
            F = info(w)
            u = self.value(F)
            if u > best["u"]:
                best.update(u=u, w=w)
            if best["upper"] - best["u"] <= tol * max(abs(best["u"]), 1e-300):
                return
            # cuts at w: E = v v^T for the smallest eigenvalues' eigenvectors
            for j in range(min(3, p if sub is None else sub.size)):
                Hs = []
                for Fs in self._regular(F):
                    if sub is None:
                        C, L = Fs, np.eye(p)
                    else:
                        Fi = _inverse(Fs)
                        C = np.linalg.inv(Fi[np.ix_(sub, sub)])
                        L = C @ Fi[sub, :]
                    v = np.linalg.eigh(0.5 * (C + C.T))[1][:, j]
                    Hs.append(np.outer(L.T @ v, L.T @ v))
                Hs = np.stack(Hs)
                psi_s = np.stack([n * np.einsum("nrp,nrp->n", (Gs.reshape(N * r, p) @ H).reshape(N, r, p), Gs)
                                  for Gs, H in zip(self.G, Hs)])
                cuts.append((np.einsum("spq,spq->s", Hs, self.F0), psi_s))

def efficient_rounding(w: np.ndarray, n: int, support_rtol: float = 1e-4) -> np.ndarray:
    """Counts (n_candidates,) summing to n from continuous weights w: Pukelsheim and
    Rieder's efficient rounding over the support (weights above support_rtol x the
    largest, at most n points)."""
    w = np.asarray(w, dtype=np.float64)
    support = np.flatnonzero(w > support_rtol * w.max())
    support = support[np.argsort(-w[support], kind="stable")][:n]
    ws = w[support] / w[support].sum()
    counts = np.ceil((n - support.size / 2) * ws).astype(int)
    while counts.sum() < n:
        counts[int(np.argmin(counts / ws))] += 1
    while counts.sum() > n:
        i = int(np.argmax(np.where(counts > 0, (counts - 1) / ws, -np.inf)))
        counts[i] -= 1
    out = np.zeros(w.size, dtype=int)
    out[support] = counts
    return out


# --------------------------------------------------------------------------- the result
@dataclass(frozen=True)
class Design:
    """An experimental design and what it is predicted to achieve.

    candidates: pandas DataFrame, one row per candidate measurement: time, output (for
        PEtab the observable), condition, preequilibration and new_condition (PEtab: True
        for a condition of `conditions`), cost, chosen (times chosen), weight (a
        continuous design's weight; NaN otherwise), derivative (psi_c of the continuous
        design: the equivalence theorem's variance function).
    chosen: the chosen measurements (rows of `candidates`, with their count).
    index: (n,) candidate indices of the design (repeated for replicates).
    criterion: "D", "A", "E", "ME" or "D_s" ...; parameters: the inputs of interest (or None).
    value: the criterion (natural: log det, trace, eigenvalue, condition number) of the
        fixed information plus the design, averaged over the samples of a robust design;
    value_fixed: of the fixed information alone; path: (n,) the criterion after the first
        k = 1..n greedy measurements (how many are worth taking).
    efficiency_uniform: against n measurements spread evenly over every candidate;
    efficiency_bound: a lower bound of the efficiency against the best design of n
        (D, A and E families; NaN for ME, or where the bound does not hold: see notes).
    notes: what the design could not do, e.g. inputs no candidate determines (the
        criterion is then on the others).
    standard_error_before / _after: (p,) Cramer-Rao standard errors (scale) with the fixed
        information / with the design added (inf: not determined); fisher_fixed,
        fisher_after: (p, p) at the nominal inputs.
    """

    candidates: object
    index: np.ndarray
    criterion: str
    parameters: tuple[str, ...] | None
    input_names: tuple[str, ...]
    scale: str
    method: str
    value: float
    value_fixed: float
    path: np.ndarray
    efficiency_uniform: float
    efficiency_bound: float
    standard_error_before: np.ndarray
    standard_error_after: np.ndarray
    fisher_fixed: np.ndarray
    fisher_after: np.ndarray
    n_samples: int
    equivalence: dict | None
    timings: dict
    series: tuple = ()
    notes: tuple[str, ...] = ()

    @property
    def chosen(self):
        df = self.candidates
        return df[df["chosen"] > 0].drop(columns=[c for c in ("weight", "derivative") if c in df]).copy()

    @property
    def n(self) -> int:
        return int(self.index.size)

    def summary(self) -> str:
        """A few lines: what was chosen and what it achieves."""
        df = self.chosen
        where = ", ".join(
            (f"{r.output}" + (f" [{r.condition}]" if "condition" in df and r.condition else "")
             + f" at t = {r.time:.4g}" + (f" (x{int(r.chosen)})" if r.chosen > 1 else ""))
            for r in df.itertuples())
        lines = [f"{self.method} {self.criterion}-optimal design of {self.n} measurements"
                 + (f" for {', '.join(self.parameters)}" if self.parameters else "")
                 + (f", robust over {self.n_samples} parameter samples" if self.n_samples > 1 else "")
                 + f": {where}.",
                 (f"criterion {self.criterion}: {self.value_fixed:.4g} with the fixed data -> {self.value:.4g}; "
                  if np.any(self.fisher_fixed) else f"criterion {self.criterion} = {self.value:.4g} (no fixed data); ")
                 + f"efficiency {self.efficiency_uniform:.3g} x the uniform design"
                 + ("" if not np.isfinite(self.efficiency_bound) else
                    f", >= {self.efficiency_bound:.3g} of the optimum") + "."]
        lines += [f"note: {text}" for text in self.notes]
        if self.equivalence:
            e = self.equivalence
            lines.append(f"equivalence theorem: max psi = {e['max_derivative']:.4g} vs sum w psi = "
                         f"{e['mean_derivative']:.4g} (equal at the optimum), after {e['iterations']} iterations.")
        for nm, a, b in zip(self.input_names, self.standard_error_before, self.standard_error_after):
            lines.append(f"  {nm}: standard error {a:.3g} -> {b:.3g} ({self.scale} scale)")
        return "\n".join(lines)

    def to_frame(self, what: str = "chosen"):
        """pandas DataFrame: "chosen", "candidates", "inputs" (standard errors before and
        after), or "path" (the criterion against the number of measurements)."""
        import pandas as pd

        if what == "chosen":
            return self.chosen
        if what == "candidates":
            return self.candidates.copy()
        if what == "inputs":
            return pd.DataFrame({"standard_error_before": self.standard_error_before,
                                 "standard_error_after": self.standard_error_after},
                                index=pd.Index(list(self.input_names), name="input"))
        if what == "path":
            return pd.DataFrame({"n": np.arange(1, self.path.size + 1), self.criterion: self.path})
        raise InputError(f"what = '{what}' is unknown; valid: chosen, candidates, inputs, path")

    def plot(self, path=None, title: str = ""):
        """The chosen measurements on the predicted outputs with their uncertainty bands
        (+-2 standard errors from the inputs' uncertainty, before and after), the criterion
        against the number of measurements, and the standard errors before and after.
        Returns the matplotlib Figure; writes a PNG when `path` is given."""
        return design_figure(self.series, self.path, self.criterion, list(self.input_names),
                             self.standard_error_before, self.standard_error_after, path=path,
                             title=title or f"{self.criterion}-optimal design of {self.n} measurements",
                             scale=self.scale, value_fixed=self.value_fixed)


def standard_errors(F: np.ndarray) -> np.ndarray:
    """Cramer-Rao standard errors sqrt(diag F^-1), inf for an input on a direction of
    eigenvalue ~ 0, shape (p,)."""
    lam, V = np.linalg.eigh(0.5 * (F + F.T))
    top = max(float(lam[-1]), 0.0)
    null = lam <= 1e-12 * top if top > 0 else np.ones(lam.size, bool)
    se = np.sqrt((V[:, ~null] ** 2) @ (1.0 / lam[~null]))
    se[(V[:, null] ** 2).sum(axis=1) > 1e-8] = np.inf
    return se


def _prediction_se(S: np.ndarray, F: np.ndarray) -> np.ndarray:
    """Standard errors of predicted outputs with sensitivity rows S (..., p) under the
    Cramer-Rao covariance F^-1 (NaN where F is singular)."""
    lam, V = np.linalg.eigh(0.5 * (F + F.T))
    top = max(float(lam[-1]), 0.0)
    if top <= 0 or lam[0] <= 1e-12 * top:
        return np.full(S.shape[:-1], np.nan)
    cov = (V / lam) @ V.T
    return np.sqrt(np.clip(np.einsum("...p,pq,...q->...", S, cov, S), 0.0, None))


# --------------------------------------------------------------------------- inputs
@dataclass
class _Setup:
    """The candidates as arrays, whatever the problem was."""

    G: np.ndarray  # (n_samples, N, r, p)
    F0: np.ndarray  # (n_samples, p, p)
    table: object  # DataFrame: time, output[, condition]
    input_names: tuple[str, ...]
    scale: str
    series: list  # per output (and condition): dict(label, time, value, rows (N-indices), S (n, p), fixed_times)
    timings: dict
    G_nominal: np.ndarray  # (N, r, p) at the nominal inputs (the reports)
    F0_nominal: np.ndarray  # (p, p)


def _as_times(values, what: str) -> np.ndarray:
    try:
        t = np.unique(np.asarray(values, dtype=np.float64).ravel())
    except (TypeError, ValueError):
        raise InputError(f"{what} = {values!r} must be numbers (save times)") from None
    if t.size == 0 or not np.all(np.isfinite(t)):
        raise InputError(f"{what} must hold finite times, got {values!r}")
    return t


def _problem_candidates(problem: Problem, candidates) -> tuple[np.ndarray, tuple[str, ...], dict[str, np.ndarray]]:
    """(the grid of times, the outputs, output -> its candidate times)."""
    of = tuple(problem.of)
    if candidates is None:
        return problem.times, of, {o: problem.times for o in of}
    if isinstance(candidates, Mapping):
        valid = list(problem.model.outputs) + [s for s in problem.model.states if s not in problem.model.outputs]
        bad = [k for k in candidates if k not in valid]
        if bad:
            raise InputError(f"candidates: '{bad[0]}' is not an output of model '{problem.model.name}'"
                             f"{did_you_mean(str(bad[0]), valid)}; outputs: {list_names(valid)}")
        per = {str(o): _as_times(t, f"candidates['{o}']") for o, t in candidates.items()}
        grid = np.unique(np.concatenate(list(per.values())))
        return grid, tuple(per), per
    grid = _as_times(candidates, "candidates")
    return grid, of, {o: grid for o in of}


def _fixed_rows(fixed, outputs: Sequence[str]):
    """A fixed-measurement table (time, output[, sigma]) from a DataFrame, mapping or CSV."""
    df = read_data(fixed, list(outputs)) if not _is_frame_without_value(fixed) else fixed
    for col in ("time", "output"):
        if col not in df:
            raise InputError(f"fixed: the measurements need a '{col}' column (long format: time, output[, sigma])")
    return df


def _is_frame_without_value(x) -> bool:
    return hasattr(x, "columns") and "value" not in x.columns


def _fixed_matrix(fixed, names: tuple[str, ...], scale: str) -> np.ndarray:
    if isinstance(fixed, Fisher):
        if tuple(fixed.input_names) != names:
            raise InputError(f"fixed: a Fisher information of inputs {list(fixed.input_names)}; the design is "
                             f"about {list(names)}")
        if fixed.scale != scale:
            raise InputError(f"fixed: a Fisher information on the {fixed.scale} scale; the design's is {scale}")
        return np.asarray(fixed.matrix, dtype=np.float64)
    F = np.asarray(fixed, dtype=np.float64)
    p = len(names)
    if F.shape != (p, p) or not np.all(np.isfinite(F)):
        raise InputError(f"fixed: a matrix of shape {F.shape}; expected a finite ({p}, {p}) Fisher information "
                         f"of {list(names)}")
    return 0.5 * (F + F.T)


def _is_matrix(fixed) -> bool:
    if isinstance(fixed, Fisher):
        return True
    if isinstance(fixed, (str, Path, Mapping)) or hasattr(fixed, "columns"):
        return False
    return np.ndim(fixed) == 2


def _setup_problem(problem, candidates, sigma, fixed, scale, robust, jacobian, mode) -> _Setup:
    import pandas as pd

    timings: dict = {}
    if isinstance(problem, JacobianResult):
        jac, prob = problem, None
        grid, outputs = np.asarray(jac.times), tuple(jac.output_names)
        per = {o: grid for o in outputs}
        if candidates is not None:
            raise InputError("candidates: a design from a JacobianResult uses its times; compute the Jacobian "
                             "at the candidate times")
    else:
        grid, outputs, per = _problem_candidates(problem, candidates)
        fixed_df = None
        if fixed is not None and not _is_matrix(fixed):
            fixed_df = _fixed_rows(fixed, list(problem.model.outputs) + list(problem.model.states))
            grid = np.unique(np.concatenate([grid, np.asarray(fixed_df["time"], dtype=np.float64)]))
            outputs = tuple(dict.fromkeys(list(outputs) + [str(o) for o in fixed_df["output"]]))
        prob = problem.replace(times=grid, t0=problem.t0, of=list(outputs))  # the start stays
        if jacobian is not None:
            jac = jacobian
            if tuple(jac.output_names) != outputs or not np.array_equal(np.asarray(jac.times), grid):
                raise InputError(f"jacobian: at {len(jac.times)} times of {list(jac.output_names)}; the design "
                                 f"needs the candidate grid ({grid.size} times) of {list(outputs)}")
        else:
            start = _time.perf_counter()
            jac = _jacobian(prob, mode=mode)
            timings["jacobian"] = _time.perf_counter() - start
    names = tuple(jac.input_names)
    n_t, n_o = grid.size, len(outputs)
    if isinstance(problem, JacobianResult):
        s = np.asarray(sigma, dtype=np.float64) if not isinstance(sigma, Mapping) else np.array(
            [sigma[o] for o in outputs], dtype=np.float64)
        if np.any(~(s > 0)):
            raise InputError(f"sigma = {sigma!r} must be positive")
        W = np.broadcast_to(np.where(np.isinf(s), 0.0, 1.0 / np.where(np.isinf(s), 1.0, s) ** 2), (n_t, n_o))
    else:
        W = weights(prob, sigma)
    is_cand = np.zeros((n_t, n_o), bool)
    for k, o in enumerate(outputs):
        if o in per:
            is_cand[:, k] = np.isin(grid, per[o])
    is_cand &= W > 0
    ti, oi = np.nonzero(is_cand)
    if ti.size == 0:
        raise InputError("candidates: no candidate measurement (every sigma is inf?)")
    table = pd.DataFrame({"time": grid[ti], "output": [outputs[k] for k in oi]})

    # the Jacobians: the nominal one, then one per robust sample
    samples = _samples(prob, robust, names) if robust is not None else None
    if samples is not None and prob is None:
        raise InputError("robust: needs the Problem (the Jacobian at each sample), not a JacobianResult")
    Ss = [scaled_jacobian(jac, scale)]
    if samples is not None:
        X, ds = samples
        if ds is None:
            start = _time.perf_counter()
            ds = ensemble(prob, X, task="jacobian", mode="forward")
            timings["ensemble"] = _time.perf_counter() - start
        status = np.asarray(ds["status"].values)
        if np.any(status != 0):
            raise InputError(f"robust: the solve failed at samples {np.flatnonzero(status)[:10].tolist()}; "
                             "leave them out")
        J = np.asarray(ds["jacobian"].values)
        if scale == "log" and np.any(X == 0):
            raise InputError("robust: scale = 'log' needs nonzero inputs in every sample")
        Ss += [J[i] * (X[i][None, None, :] if scale == "log" else 1.0) for i in range(X.shape[0])]
    sw = np.sqrt(W)
    G = np.stack([(S * sw[:, :, None])[ti, oi][:, None, :] for S in Ss])  # (1 + n_samples, N, 1, p)
    p = len(names)
    F0 = np.zeros((len(Ss), p, p))
    fixed_times: dict[str, list[float]] = {}
    if fixed is not None:
        if _is_matrix(fixed):
            F0[:] = _fixed_matrix(fixed, names, scale)
        else:
            sig = fixed_df["sigma"].to_numpy(float) if "sigma" in fixed_df else None
            rows_t = np.searchsorted(grid, fixed_df["time"].to_numpy(float))
            rows_o = np.array([outputs.index(str(o)) for o in fixed_df["output"]])
            w_fixed = W[rows_t, rows_o] if sig is None else 1.0 / sig ** 2
            for s, S in enumerate(Ss):
                R = S[rows_t, rows_o] * np.sqrt(w_fixed)[:, None]
                F0[s] = R.T @ R
            for o, t in zip(fixed_df["output"], fixed_df["time"]):
                fixed_times.setdefault(str(o), []).append(float(t))
    # the plot's series: per output, the nominal prediction over its candidate times
    series = []
    y = np.asarray(jac.outputs)
    for k, o in enumerate(outputs):
        rows = np.flatnonzero(oi == k)
        if rows.size == 0:
            continue
        series.append(dict(label=o, time=grid[ti[rows]], value=y[ti[rows], k], rows=rows,
                           S=Ss[0][ti[rows], k], fixed_times=np.asarray(fixed_times.get(o, []))))
    # the nominal point for the reports; the samples (if any) for the search
    search = slice(1, None) if len(Ss) > 1 else slice(0, 1)
    return _Setup(G[search], F0[search], table, names, scale, series, timings, G[0], F0[0])


def _samples(prob: Problem | None, robust, names) -> tuple[np.ndarray, object] | None:
    """(X (n_samples, p), an ensemble dataset with its Jacobians or None)."""
    if hasattr(robust, "data_vars"):  # a sens.ensemble dataset
        X = np.asarray(robust["x"].values, dtype=np.float64)
        if "jacobian" in robust and prob is not None and robust["jacobian"].shape[1:] == (
                prob.times.size, len(prob.of), len(names)) and np.allclose(robust["time"].values, prob.times):
            return X, robust
        return X, None
    if prob is None:
        return None
    x0 = prob.x0()
    rows = []
    for i, item in enumerate(robust):
        if isinstance(item, Mapping):
            x = x0.copy()
            for k, v in item.items():
                if k not in names:
                    raise InputError(f"robust[{i}]: '{k}' is not an input{did_you_mean(str(k), names)}; "
                                     f"inputs: {list_names(names)}")
                x[names.index(k)] = float(v)
            rows.append(x)
        else:
            rows.append(np.asarray(item, dtype=np.float64))
    X = np.asarray(rows, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(names) or X.shape[0] < 1:
        raise InputError(f"robust: {X.shape[0] if X.ndim else 0} samples of shape {X.shape[1:]}; expected rows "
                         f"of {len(names)} inputs ({', '.join(names[:6])}) or mappings input -> value")
    return X, None


# --------------------------------------------------------------------------- PEtab
def _petab_candidates(problem: PetabProblem, candidates, new: Sequence[str]):
    """The candidate rows (observableId, preequilibrationConditionId, simulationConditionId,
    time): times for every measured (observable, conditions) and every measured observable
    under each new condition, or the rows of a candidate table."""
    import pandas as pd
    import petab.v1 as pv1

    mdf = problem.measurements
    pre, sim, obs = pv1.PREEQUILIBRATION_CONDITION_ID, pv1.SIMULATION_CONDITION_ID, pv1.OBSERVABLE_ID
    keys = list(dict.fromkeys(zip(mdf[obs], mdf[pre], mdf[sim])))
    keys += [(o, "", c) for c in new for o in dict.fromkeys(mdf[obs])]
    t = np.asarray(mdf[pv1.TIME], dtype=np.float64)
    t_max = float(np.max(t[np.isfinite(t)])) if np.isfinite(t).any() else 1.0
    if candidates is None or not hasattr(candidates, "columns"):
        times = np.linspace(0.0, t_max, PETAB_TIMES) if candidates is None else _as_times(candidates, "candidates")
        rows = pd.DataFrame([(o, p_, s, tt) for (o, p_, s) in keys for tt in times],
                            columns=[obs, pre, sim, pv1.TIME])
    else:
        rows = candidates.copy()
        for col in (obs, sim, pv1.TIME):
            if col not in rows:
                raise InputError(f"candidates: a PEtab candidate table needs the column '{col}' "
                                 f"({obs}, {sim}, {pv1.TIME}[, {pre}, {pv1.OBSERVABLE_PARAMETERS}, "
                                 f"{pv1.NOISE_PARAMETERS}])")
        if pre not in rows:
            rows[pre] = ""
        rows[pre] = ["" if (isinstance(v, float) and math.isnan(v)) else str(v) for v in rows[pre]]
        keep = [obs, pre, sim, pv1.TIME] + [c for c in (pv1.OBSERVABLE_PARAMETERS, pv1.NOISE_PARAMETERS) if c in rows]
        rows = rows[keep].reset_index(drop=True)
    if not np.all(np.isfinite(rows[pv1.TIME].to_numpy(float))) or np.any(rows[pv1.TIME].to_numpy(float) < 0):
        raise InputError("candidates: times must be finite and >= 0")
    return rows


def _setup_petab(problem: PetabProblem, candidates, fixed, robust, x, conditions) -> _Setup:
    """The candidates' rows G from `PetabProblem.sensitivities` (one compiled forward sweep
    over today's measurements and the candidates, per parameter point)."""
    import pandas as pd
    import petab.v1 as pv1

    timings: dict = {}
    new = new_conditions(problem, conditions)
    rows = _petab_candidates(problem, candidates, list(new))
    mdf = problem.measurements
    cols = [pv1.OBSERVABLE_ID, pv1.PREEQUILIBRATION_CONDITION_ID, pv1.SIMULATION_CONDITION_ID, pv1.TIME]
    cols += [c for c in (pv1.OBSERVABLE_PARAMETERS, pv1.NOISE_PARAMETERS) if c in mdf]
    today = mdf[cols] if fixed is None else mdf[cols].iloc[:0]
    n_fixed = len(today)
    every = pd.concat([today, rows], ignore_index=True)
    X = [x] + ([] if robust is None else _petab_samples(problem, robust))
    outs = []
    start = _time.perf_counter()
    for xi in X:
        s = problem.sensitivities(every, x=xi, conditions=new)
        outs.append(s)
        timings.setdefault("compile", s.timings["compile"])
    timings["jacobian"] = _time.perf_counter() - start
    p = len(problem.x_names)
    Gs, F0s = [], []
    for s in outs:
        Gall = s.fisher_rows()  # (rows, 2, p)
        Gf = Gall[:n_fixed]
        F0s.append(np.einsum("nrp,nrq->pq", Gf, Gf) if n_fixed else np.zeros((p, p)))
        Gs.append(Gall[n_fixed:])
    G, F0 = np.stack(Gs), np.stack(F0s)
    if fixed is not None and fixed is not False:
        if not _is_matrix(fixed):
            raise InputError("fixed: for a PEtab problem, the measurement table is today's data (fixed=None) or "
                             "nothing is (fixed=False); or give a Fisher information matrix")
        F0[:] = _fixed_matrix(fixed, tuple(problem.x_names), "petab")
    cand = outs[0].rows.iloc[n_fixed:].reset_index(drop=True)
    table = pd.DataFrame({"time": cand[pv1.TIME].to_numpy(float), "output": cand[pv1.OBSERVABLE_ID].astype(str),
                          "condition": cand[pv1.SIMULATION_CONDITION_ID].astype(str),
                          "preequilibration": cand[pv1.PREEQUILIBRATION_CONDITION_ID].astype(str)})
    table["new_condition"] = table["condition"].isin(list(new))
    mu0, Jm0 = outs[0].value, outs[0].jacobian
    series = []
    for (o, s_, p_), idx in table.groupby(["output", "condition", "preequilibration"], sort=False).indices.items():
        idx = np.asarray(idx)
        idx = idx[np.argsort(table["time"].to_numpy()[idx], kind="stable")]
        f_rows = np.flatnonzero((mdf[pv1.OBSERVABLE_ID] == o) & (mdf[pv1.SIMULATION_CONDITION_ID] == s_)
                                & (mdf[pv1.PREEQUILIBRATION_CONDITION_ID] == p_))
        ft = mdf[pv1.TIME].to_numpy(float)[f_rows] if fixed is None else np.zeros(0)
        series.append(dict(label=f"{o} [{s_}{' (new)' if s_ in new else ''}]", time=table["time"].to_numpy()[idx],
                           value=mu0[n_fixed + idx], rows=idx, S=Jm0[n_fixed + idx], fixed_times=ft[np.isfinite(ft)]))
    search = slice(1, None) if len(outs) > 1 else slice(0, 1)
    return _Setup(G[search], F0[search], table, tuple(problem.x_names), "petab", series, timings, G[0], F0[0])


def _petab_samples(problem: PetabProblem, robust) -> list[np.ndarray]:
    if hasattr(robust, "data_vars"):
        robust = np.asarray(robust["x"].values)
    out = []
    for i, item in enumerate(robust):
        if isinstance(item, Mapping):
            x = problem.x_nominal.copy()
            for k, v in item.items():
                if k not in problem.x_names:
                    raise InputError(f"robust[{i}]: '{k}' is not an estimated parameter"
                                     f"{did_you_mean(str(k), problem.x_names)}")
                x[problem.x_names.index(k)] = float(v)
            out.append(x)
        else:
            out.append(np.asarray(item, dtype=np.float64))
    if not out:
        raise InputError("robust: no samples")
    return out


# --------------------------------------------------------------------------- the API
def _costs(costs, table, N: int) -> np.ndarray | None:
    if costs is None:
        return None
    if isinstance(costs, Mapping):
        outs = list(dict.fromkeys(table["output"]))
        bad = [k for k in costs if k not in outs]
        missing = [o for o in outs if o not in costs]
        if bad or missing:
            raise InputError(f"costs: give one cost per output {list_names(outs)}"
                             + (f"; not an output: {bad[0]}" if bad else f"; missing: {missing[0]}"))
        c = np.array([float(costs[o]) for o in table["output"]])
    else:
        c = np.asarray(costs, dtype=np.float64)
        if c.ndim == 0:
            c = np.full(N, float(c))
        if c.shape != (N,):
            raise InputError(f"costs has shape {c.shape}; expected ({N},): one per candidate, or a mapping "
                             "output -> cost")
    if not np.all(np.isfinite(c)) or np.any(c <= 0):
        raise InputError("costs must be positive finite numbers")
    return c


def design(problem, candidates=None, n: int | None = None, criterion: str = "D", sigma=1.0, fixed=None,
           parameters: Sequence[str] | None = None, scale: str = "log", method: str = "exchange", costs=None,
           robust=None, budget: float | None = None, replicates: bool = True, x=None,
           jacobian: JacobianResult | None = None, mode: str = "forward", max_passes: int = 50,
           bound: bool = True, conditions=None, threads: int | None = 1) -> Design:
    """The next experiment: which n measurements add the most information.

    problem: a `Problem`, a `JacobianResult` (its times and outputs are the candidates) or a
        `PetabProblem`.
    candidates: Problem: save times (default the problem's), or a mapping output -> times;
        every output of the problem is a candidate at every time unless the mapping says
        otherwise. PetabProblem: times (default 61 from 0 to the last measured time) for
        every observable and condition that is measured and every measured observable under
        each new condition (`conditions`), or a DataFrame of rows (observableId,
        simulationConditionId, time[, preequilibrationConditionId, observableParameters,
        noiseParameters]); observable and noise parameters not given are those of a
        measured row of the observable (`PetabProblem.sensitivities`).
    n: the number of measurements (replicates allowed unless replicates=False).
    criterion: "D" | "A" | "E" | "ME" (modified E: the condition number), or "D_s" / "A_s";
        with `parameters` (names of inputs of interest) every criterion is on that subset.
    sigma: the outputs' standard deviations (a number, mapping output -> number, or (n_of,)),
        as for `fisher`; a PetabProblem's noise model gives its own.
    fixed: what is already measured: a `Fisher`, a (p, p) matrix, or measurements (a
        DataFrame, mapping or CSV in long format: time, output[, value, sigma]). For a
        PetabProblem None means its measurement table, False nothing.
    scale: "log" | "linear" inputs (a PetabProblem: its parameters' own scales).
    method: "exchange" (greedy then exchange passes), "greedy", or "continuous" (weights by
        the multiplicative algorithm, D and A families, rounded to n measurements).
    costs: per candidate (n_candidates,), or a mapping output -> cost; the greedy steps take
        the best gain per cost, and `budget` (with costs) caps the total cost.
    robust: parameter samples to average the criterion over: rows (n_samples, p) of inputs
        (PEtab: x on the parameter scale), mappings input -> value, or a
        `sensitivity.ensemble` dataset.
    x: PetabProblem only: the parameters (on their scales) the design is local to
        (default the nominal values). jacobian: a computed JacobianResult at the candidate
        grid (skips the solve). bound: compute the efficiency bound against the optimum
        (a continuous design; D, A and E families).
    conditions: PetabProblem only: new experimental conditions the design may choose, a
        mapping id -> {condition-table column: value} (numbers or parameter ids; columns
        left out keep the model's values) or condition-table rows (a DataFrame or TSV file
        with conditionId).
    threads: BLAS threads during the search (threadpoolctl; None leaves them as they are): its
        scans are many small matrix products, where more threads cost more than they give
        (benchmarks/design.py).
    Returns a `Design` (summary(), to_frame(), plot()).
    """
    limit = threadpool_limits(limits=threads, user_api="blas") if threads else nullcontext()
    with limit:
        return _design(problem, candidates, n, criterion, sigma, fixed, parameters, scale, method, costs, robust,
                       budget, replicates, x, jacobian, mode, max_passes, bound, conditions)


def _design(problem, candidates=None, n: int | None = None, criterion: str = "D", sigma=1.0, fixed=None,
           parameters: Sequence[str] | None = None, scale: str = "log", method: str = "exchange", costs=None,
           robust=None, budget: float | None = None, replicates: bool = True, x=None,
           jacobian: JacobianResult | None = None, mode: str = "forward", max_passes: int = 50,
           bound: bool = True, conditions=None) -> Design:
    """`design` with the BLAS threads as they are."""
    if method not in METHODS:
        raise InputError(f"method = '{method}' is unknown{did_you_mean(str(method), METHODS)}; "
                         f"valid: {', '.join(METHODS)}")
    base, on_subset = _criterion(criterion, parameters)
    if n is None and budget is None:
        raise InputError("n: give the number of measurements (or costs and a budget)")
    if n is not None and not (isinstance(n, (int, np.integer)) and n >= 1):
        raise InputError(f"n = {n!r} must be a whole number >= 1")
    if budget is not None and costs is None:
        raise InputError("budget needs costs (one per candidate, or a mapping output -> cost)")
    start = _time.perf_counter()
    if isinstance(problem, PetabProblem):
        setup = _setup_petab(problem, candidates, fixed, robust, x, conditions)
    elif isinstance(problem, (Problem, JacobianResult)):
        if x is not None:
            raise InputError("x is for a PetabProblem; for a Problem use problem.with_inputs(x)")
        if conditions is not None:
            raise InputError("conditions are for a PetabProblem (new PEtab conditions); for a Problem design "
                             "each condition's problem on its own")
        if scale not in ("log", "linear"):
            raise InputError(f"scale = '{scale}' is unknown; valid: log, linear")
        setup = _setup_problem(problem, candidates, sigma, fixed, scale, robust, jacobian, mode)
    else:
        raise InputError(f"design needs a Problem, a JacobianResult or a PetabProblem, got {type(problem).__name__}")
    setup_s = _time.perf_counter() - start
    names = setup.input_names
    sub = None
    if on_subset:
        bad = [p for p in parameters if p not in names]
        if bad:
            raise InputError(f"parameters: '{bad[0]}' is not an input{did_you_mean(str(bad[0]), names)}; "
                             f"inputs: {list_names(names)}")
        sub = np.array([names.index(p) for p in parameters])
    notes: list[str] = []
    if sub is None:
        # inputs that no combination of the candidates (and the fixed data) determines leave
        # every criterion infinite: the design is then for the others
        se_all = standard_errors(setup.F0[0] + _gram(setup.G[0]))
        loose = ~np.isfinite(se_all)
        if loose.all():
            raise InputError("no design of these candidates determines any input; add other outputs, "
                             "conditions or times")
        if loose.any():
            sub = np.flatnonzero(~loose)
            on_subset, parameters = True, [names[i] for i in sub]
            notes.append(f"no design of these candidates determines {', '.join(names[i] for i in np.flatnonzero(loose))}"
                         f" (structurally, or not from these outputs): the {base} criterion is on the other "
                         f"{sub.size} inputs ({base}_s)")
    q = len(names) if sub is None else sub.size
    N = setup.G.shape[1]
    c = _costs(costs, setup.table, N)
    search = _Search(setup.G, setup.F0, base, sub, c, budget, bool(replicates))

    t_search = _time.perf_counter()
    equivalence = None
    weights_ = np.full(N, np.nan)
    psi = np.full(N, np.nan)
    if method == "continuous":
        if n is None:
            raise InputError("method = 'continuous' needs n")
        _check_determined(search, n, names, sub)
        cont = search.continuous(float(n))
        weights_, psi = cont["weights"], cont["psi"]
        counts = efficient_rounding(weights_, n)
        if not replicates and counts.max() > 1:
            counts = np.minimum(counts, 1)
        # the rounded weights, polished by exchange passes (the weights converge slowly
        # where the criterion is flat: neighbouring candidates share the weight)
        index, _ = search.exchange(np.repeat(np.arange(N), counts).tolist(), max_passes=max_passes)
        index = np.asarray(index, dtype=int)
        _, path = search.greedy(n)
        equivalence = {"max_derivative": float(psi.max()), "mean_derivative": cont["mean_psi"],
                       "gap": cont["gap"], "iterations": cont["iterations"],
                       "weights_value": natural(cont["utility"], base)}
        upper = cont["upper"]
    else:
        chosen, path = search.greedy(n)
        swaps = 0
        if method == "exchange" and chosen:
            chosen, swaps = search.exchange(chosen, max_passes=max_passes)
        index = np.asarray(chosen, dtype=int)
        upper = np.nan
        if bound and base in ("D", "A", "E") and index.size and _determined(search, index.size, sub):
            cont = search.continuous(float(index.size), iterations=100, tol=1e-4, rounds=10)
            upper = cont["upper"]
    search_s = _time.perf_counter() - t_search

    F_design = search.info(index.tolist())
    u = search.value(F_design)
    u_fixed = search.value(search.F0)
    m = max(index.size, 1)
    F_uniform = search.F0 + m * np.stack([_gram(Gs) for Gs in setup.G]) / N
    u_uniform = search.value(F_uniform)
    eff_uniform = relative_efficiency(u, u_uniform, base, q)
    if equivalence is not None and base == "D" and sub is None and not np.any(search.F0) and search.G.shape[0] == 1:
        # without fixed information the sharper bound p / max d(x) (AM-GM on F*^-1 F)
        eff_bound_cont = q / equivalence["max_derivative"]
        equivalence["efficiency_bound"] = max(eff_bound_cont, relative_efficiency(cont["utility"], upper, base, q))
    elif equivalence is not None:
        equivalence["efficiency_bound"] = relative_efficiency(cont["utility"], upper, base, q)
    eff_bound = relative_efficiency(u, upper, base, q) if np.isfinite(upper) else np.nan
    if np.isfinite(eff_bound) and eff_bound > 1.0 + 1e-6:
        # a design above the "upper bound": the criterion is not concave where it was taken,
        # e.g. a subset criterion on information with a direction of eigenvalue ~ 0 (taken
        # as null) that still loads on the subset
        notes.append(f"no efficiency bound: the design's {base} criterion exceeds the continuous bound "
                     f"(efficiency {eff_bound:.4g} > 1), so the criterion is not concave over these candidates "
                     "(information nearly singular in directions of the inputs concerned)")
        eff_bound = np.nan
    elif np.isfinite(eff_bound):
        eff_bound = min(eff_bound, 1.0)

    counts = np.bincount(index, minlength=N)
    table = setup.table.copy()
    cost_col = c if c is not None else np.ones(N)
    table["cost"] = cost_col
    table["chosen"] = counts
    table["weight"] = weights_
    table["derivative"] = psi
    F_fixed_nominal = setup.F0_nominal
    F_after_nominal = F_fixed_nominal + np.einsum("nrp,nrq->pq", setup.G_nominal[index], setup.G_nominal[index])
    se_before, se_after = standard_errors(F_fixed_nominal), standard_errors(F_after_nominal)
    series = []
    for s in setup.series:
        rows = s["rows"]
        band_b = 2.0 * _prediction_se(s["S"], F_fixed_nominal)
        band_a = 2.0 * _prediction_se(s["S"], F_after_nominal)
        series.append(dict(label=s["label"], time=s["time"], value=s["value"], band_before=band_b,
                           band_after=band_a, chosen=counts[rows], fixed_times=s["fixed_times"]))
    timings = dict(setup.timings, setup=setup_s, search=search_s)
    return Design(table, index, _label(base, on_subset), tuple(parameters) if on_subset else None, names,
                  setup.scale, method, natural(u, base), natural(u_fixed, base),
                  np.array([natural(v, base) for v in path]), eff_uniform, eff_bound, se_before, se_after,
                  F_fixed_nominal, F_after_nominal, setup.G.shape[0], equivalence, timings, tuple(series),
                  tuple(notes))


def _determined(search: _Search, n: int, sub) -> bool:
    """Whether the candidates together determine the inputs (of interest)."""
    F = search.F0[0] + n * _gram(search.G[0]) / search.G.shape[1]
    return utility(F, "D" if search.base == "D" else "A", sub) > -np.inf


def _check_determined(search: _Search, n: int, names, sub) -> None:
    """The candidates together must determine the inputs (of interest): else no design does."""
    if not _determined(search, n, sub):
        F = search.F0[0] + n * _gram(search.G[0]) / search.G.shape[1]
        se = standard_errors(F)
        idx = range(len(names)) if sub is None else sub
        loose = [names[i] for i in idx if not np.isfinite(se[i])]
        raise InputError("no design of these candidates determines "
                         + (", ".join(loose) if loose else "the inputs") + ": every candidate together leaves "
                         "them loose; add other outputs, conditions or times, or name parameters= of interest")
