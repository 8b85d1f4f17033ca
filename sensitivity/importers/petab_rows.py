"""A PEtab problem's observables and their derivatives at any measurement rows: measured or
not, under the problem's conditions or new ones (`PetabProblem.sensitivities`).

    rows = pd.DataFrame({"observableId": ["obs_a"] * 3, "simulationConditionId": "c_new",
                         "time": [0.0, 1.0, 5.0]})
    s = prob.sensitivities(rows, conditions={"c_new": {"a0": 3.0}})
    s.value, s.sigma            # (n_rows,): the observable (transformed scale) and its sigma
    s.jacobian                  # (n_rows, n_estimated): d value / d x, x on the parameter scales
    s.fisher()                  # (n_estimated, n_estimated): the rows' Fisher information

The rows' experiments (pairs of preequilibration and simulation condition) are set up as the
measurement table's are (`PetabProblem._setup`), but their condition arrays, save times and
row indices go into the compiled program as ARGUMENTS: one program serves every set of rows
of the same shape (number of experiments, times, rows per observable) and every x. The
derivatives are forward sensitivities (n_estimated tangents in one vmapped sweep).

Per row, as in `PetabProblem.fisher`: G = [J_mu / sigma; sqrt(c) J_sigma / sigma] (2,
n_estimated) with c = 2 (normal noise) or 1 (Laplace), and the Fisher information is the sum
of G^T G over the rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..core.errors import InputError, did_you_mean, list_names
from ..integrate import compiled as compiled_programs
from .petab import _count_placeholders, _observable_functions, _transform
from .petab_v2 import T0  # the measurement table's column of an experiment's start


@dataclass(frozen=True)
class RowSensitivities:
    """Per measurement row (n_rows = len(rows)): value, the observable on its transformed
    scale; sigma, its noise standard deviation; jacobian and sigma_jacobian (n_rows,
    n_estimated), their derivatives by x (on the parameter scales); noise_factor c (2
    normal, 1 Laplace). rows: the rows as given, with the observable and noise parameters
    that were used; x_names; timings (compile, run) in seconds."""

    rows: object
    value: np.ndarray
    sigma: np.ndarray
    jacobian: np.ndarray
    sigma_jacobian: np.ndarray
    noise_factor: np.ndarray
    x_names: tuple
    timings: dict

    def fisher_rows(self) -> np.ndarray:
        """(n_rows, 2, n_estimated): per row G with G^T G its Fisher information (the mean's
        row J / sigma, the noise model's sqrt(c) J_sigma / sigma)."""
        s = self.sigma[:, None]
        return np.stack([self.jacobian / s, self.sigma_jacobian * np.sqrt(self.noise_factor)[:, None] / s], axis=1)

    def fisher(self) -> np.ndarray:
        """(n_estimated, n_estimated): the Fisher information of all rows."""
        G = self.fisher_rows()
        return np.einsum("nrp,nrq->pq", G, G)


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def new_conditions(problem, conditions) -> dict[str, dict]:
    """New conditions as id -> {column: value}: from a mapping id -> mapping, a DataFrame of
    condition-table rows (conditionId as index or column) or a condition TSV file."""
    import pandas as pd
    import petab.v1 as pv1

    if conditions is None:
        return {}
    if isinstance(conditions, (str, Path)):
        if not Path(conditions).is_file():
            raise InputError(f"conditions: file '{conditions}' not found")
        conditions = pv1.get_condition_df(str(conditions))
    if isinstance(conditions, pd.DataFrame):
        df = conditions
        if pv1.CONDITION_ID in df.columns:
            df = df.set_index(pv1.CONDITION_ID)
        out = {str(cid): {str(k): v for k, v in row.items() if k != pv1.CONDITION_NAME}
               for cid, row in df.iterrows()}
    elif isinstance(conditions, Mapping):
        out = {}
        for cid, row in conditions.items():
            if not isinstance(row, Mapping):
                raise InputError(f"conditions['{cid}'] must be a mapping condition-table column -> value, "
                                 f"got {type(row).__name__}")
            out[str(cid)] = {str(k): v for k, v in row.items() if k not in (pv1.CONDITION_NAME, pv1.CONDITION_ID)}
    else:
        raise InputError(f"conditions: a mapping id -> {{column: value}}, a DataFrame or a condition TSV file, "
                         f"got {type(conditions).__name__}")
    existing = set(map(str, problem.petab.condition_df.index))
    for cid in out:
        if not cid.strip():
            raise InputError("conditions: a new condition needs an id")
        if cid in existing:
            raise InputError(f"conditions: '{cid}' is a condition of the condition table already; "
                             "give the new condition another id")
    return out


@dataclass
class _Observable:
    h: object
    sigma: object
    trans: str
    noise: str
    n_op: int
    n_np: int


_OBSERVABLES: dict = {}


def _observable(problem, oid: str) -> _Observable:
    """The observable's functions: those of the measurement table's rows, or made now for an
    observable the table does not measure."""
    import petab.v1 as pv1

    key = (problem._fingerprint, oid)
    if key in _OBSERVABLES:
        return _OBSERVABLES[key]
    odf = problem.petab.observable_df
    orow = odf.loc[oid]
    found = [o for o in problem._obs if o["id"] == oid]
    if found:
        o = found[0]
        h, sigma, trans, noise = o["h"], o["sigma"], o["trans"], o["noise"]
    else:
        trans = str(orow.get(pv1.OBSERVABLE_TRANSFORMATION, "lin") or "lin")
        trans = "lin" if trans == "nan" else trans
        noise = str(orow.get(pv1.NOISE_DISTRIBUTION, "normal") or "normal")
        noise = "normal" if noise == "nan" else noise
        pids = {k: i for i, k in enumerate(problem.theta_names)}
        h, sigma = _observable_functions(problem.model, oid, orow[pv1.OBSERVABLE_FORMULA], orow[pv1.NOISE_FORMULA],
                                         problem._n_op, problem._n_np, pids, problem.mapping)
    out = _Observable(h, sigma, trans, noise,
                      _count_placeholders(orow[pv1.OBSERVABLE_FORMULA], "observableParameter", oid),
                      _count_placeholders(str(orow[pv1.NOISE_FORMULA]), "noiseParameter", oid))
    _OBSERVABLES[key] = out
    return out


def _table(problem, rows, new: dict):
    """The rows as a DataFrame with every column, observable and noise parameters filled in
    from measured rows where not given."""
    import pandas as pd
    import petab.v1 as pv1

    obs, pre, sim, tcol = (pv1.OBSERVABLE_ID, pv1.PREEQUILIBRATION_CONDITION_ID, pv1.SIMULATION_CONDITION_ID,
                           pv1.TIME)
    op_col, np_col = pv1.OBSERVABLE_PARAMETERS, pv1.NOISE_PARAMETERS
    if not isinstance(rows, pd.DataFrame):
        raise InputError(f"rows: a DataFrame ({obs}, {sim}, {tcol}[, {pre}, {op_col}, {np_col}]), "
                         f"got {type(rows).__name__}")
    for col in (obs, sim, tcol):
        if col not in rows:
            raise InputError(f"rows: the column '{col}' is missing ({obs}, {sim}, {tcol}[, {pre}])")
    if len(rows) == 0:
        raise InputError("rows: no rows")
    df = rows.reset_index(drop=True).copy()
    for col in (pre, op_col, np_col):
        if col not in df:
            df[col] = ""
        df[col] = ["" if _nan(v) else str(v) for v in df[col]]
    df[obs] = df[obs].astype(str)
    df[sim] = ["" if _nan(v) else str(v) for v in df[sim]]
    t = pd.to_numeric(df[tcol], errors="coerce").to_numpy(float)
    if np.any(np.isnan(t)) or np.any(t < 0):
        raise InputError(f"rows: times must be numbers >= 0 (inf: at steady state), got "
                         f"{df[tcol][np.isnan(t) | (t < 0)].iloc[0]!r}")
    df[tcol] = t
    known = list(map(str, problem.petab.observable_df.index))
    conds = set(map(str, problem.petab.condition_df.index)) | set(new)
    for i, r in enumerate(df.itertuples(index=False)):
        o, s, p_ = getattr(r, obs), getattr(r, sim), getattr(r, pre)
        if o not in known:
            raise InputError(f"rows[{i}]: observable '{o}' is not in the observable table"
                             f"{did_you_mean(o, known)}; observables: {list_names(known)}")
        for what, c in (("simulationConditionId", s), ("preequilibrationConditionId", p_)):
            if (c or what.startswith("sim")) and c not in conds:
                raise InputError(f"rows[{i}]: {what} '{c}' is neither in the condition table nor a new "
                                 f"condition{did_you_mean(c, sorted(conds))}")
    # observable and noise parameters: a measured row's (same observable and conditions first)
    mdf = problem.measurements
    m_op = mdf[op_col] if op_col in mdf else pd.Series([""] * len(mdf))
    m_np = mdf[np_col] if np_col in mdf else pd.Series([""] * len(mdf))
    m_op = ["" if _nan(v) else str(v) for v in m_op]
    m_np = ["" if _nan(v) else str(v) for v in m_np]
    for i in range(len(df)):
        o = df.at[i, obs]
        f = _observable(problem, o)
        need = [(op_col, f.n_op, m_op), (np_col, f.n_np, m_np)]
        if not any(n and not df.at[i, col] for col, n, _ in need):
            continue
        same = np.flatnonzero((mdf[obs] == o) & (mdf[sim] == df.at[i, sim]) & (mdf[pre] == df.at[i, pre]))
        hit = same if same.size else np.flatnonzero(mdf[obs] == o)
        for col, n, values in need:
            if n and not df.at[i, col]:
                if hit.size == 0:
                    raise InputError(f"rows[{i}]: observable '{o}' has {n} {col} and no measured row to take "
                                     f"them from; give the column '{col}'")
                df.at[i, col] = values[int(hit[0])]
    return df


def _experiments(problem, df, new: dict):
    """The rows' experiments in two groups (without and with preequilibration): per group
    the static (has_pre, steady_state) and the arrays (sim, pre: the condition arrays
    stacked over its experiments; ts (n_exp, n_t) padded with the last time); per row
    (group, experiment in group, time index)."""
    import petab.v1 as pv1

    pre_c, sim_c, tcol = pv1.PREEQUILIBRATION_CONDITION_ID, pv1.SIMULATION_CONDITION_ID, pv1.TIME
    cdf = problem.petab.condition_df
    cache: dict = {}

    def arrays(cid):
        if cid not in cache:
            row = new[cid] if cid in new else (cdf.loc[cid] if cid else None)
            cache[cid] = problem._condition_arrays(row, cid)
        return cache[cid]

    pairs = list(dict.fromkeys(zip(df[pre_c], df[sim_c])))
    row_exp = np.array([pairs.index(k) for k in zip(df[pre_c], df[sim_c])])
    t_all = df[tcol].to_numpy(float)
    # an experiment's start: that of its measured rows (a PEtab 2 problem's t0), else 0
    mdf = problem.measurements
    start = {}
    if T0 in mdf:
        for p_, s_, t0 in zip(mdf[pre_c], mdf[sim_c], np.asarray(mdf[T0], dtype=np.float64)):
            start.setdefault((p_, s_), float(t0))
    static, dynamic = [], []
    where = np.zeros((len(df), 3), dtype=int)
    for gi, has_pre in enumerate(sorted({bool(p) for p, _ in pairs})):
        members = [e for e, (p, _) in enumerate(pairs) if bool(p) == has_pre]
        finite = [t_all[(row_exp == e) & np.isfinite(t_all)] for e in members]
        t0s = np.array([start.get(pairs[e], 0.0) for e in members])
        ts_list = [np.unique(t) if t.size else np.full(1, t0) for t, t0 in zip(finite, t0s)]
        n_t = max(len(t) for t in ts_list)
        ts = np.stack([np.concatenate([t, np.full(n_t - len(t), t[-1])]) for t in ts_list])
        steady = bool(np.any(np.isinf(t_all[np.isin(row_exp, members)])))
        sim = tuple(np.stack([arrays(pairs[e][1])[i] for e in members]) for i in range(5))
        pre = tuple(np.stack([arrays(pairs[e][0])[i] for e in members]) for i in range(5)) if has_pre else None
        static.append((has_pre, steady))
        dynamic.append(dict(sim=sim, pre=pre, ts=ts, t0=t0s))
        for j, e in enumerate(members):
            for r in np.flatnonzero(row_exp == e):
                k = int(np.searchsorted(ts[j], t_all[r])) if np.isfinite(t_all[r]) else n_t
                where[r] = (gi, j, k)
    return static, dynamic, where


def _setup(problem, rows, x, conditions):
    """The rows as the compiled programs take them: (x, the rows' table, per group its
    static (has_pre, steady_state) and arrays, per block (observable, group) its static key
    and arrays, the rows in block order, the observables' functions)."""
    import petab.v1 as pv1

    x = problem._check_x(x)
    new = new_conditions(problem, conditions)
    df = _table(problem, rows, new)
    static_g, groups, where = _experiments(problem, df, new)
    pids = {k: i for i, k in enumerate(problem.theta_names)}
    # blocks of rows: one per (observable, group), in the order of the rows' observables
    blocks_static, blocks, order = [], [], []
    t_all = df[pv1.TIME].to_numpy(float)
    for oid in dict.fromkeys(df[pv1.OBSERVABLE_ID]):
        for gi in range(len(groups)):
            idx = np.flatnonzero((df[pv1.OBSERVABLE_ID] == oid).to_numpy() & (where[:, 0] == gi))
            if idx.size == 0:
                continue
            op_ref, op_const = problem._row_overrides(df, idx, pv1.OBSERVABLE_PARAMETERS, problem._n_op, pids)
            np_ref, np_const = problem._row_overrides(df, idx, pv1.NOISE_PARAMETERS, problem._n_np, pids)
            blocks_static.append((oid, gi))
            blocks.append(dict(exp=where[idx, 1], tidx=where[idx, 2],
                               t=np.where(np.isfinite(t_all[idx]), t_all[idx], 0.0),  # t = inf: no time
                               op=(op_ref, op_const), np=(np_ref, np_const)))
            order.append(idx)
    order = np.concatenate(order)
    funcs = {oid: _observable(problem, oid) for oid, _ in blocks_static}
    return x, df, tuple(static_g), groups, tuple(blocks_static), blocks, order, funcs


def _parts_fn(problem, static_g, blocks_static, funcs, method: str, transform: bool = True):
    """(x, tol, groups, blocks) -> ((observable, sigma) per row in block order, aux): the
    observable on its transformed scale (transform=True) or as simulated."""
    def parts(x, tol, groups, blocks):
        theta = problem.theta(x)
        gs = [dict(sim=g["sim"], pre=g["pre"], ts=g["ts"], t0=g["t0"], steady_state=steady)
              for g, (_, steady) in zip(groups, static_g)]
        sims = problem._simulate_fn(method, gs)(theta, tol)
        ok = jnp.all(jnp.stack([jnp.all(s[2]) for s in sims]))
        steps = sum(jnp.sum(s[3]) for s in sims)
        mus, sigs = [], []
        for (oid, gi), b in zip(blocks_static, blocks):
            f = funcs[oid]
            ys = sims[gi][0][b["exp"], b["tidx"]]
            pvs = sims[gi][1][b["exp"]]
            op = jnp.where(b["op"][0] >= 0, theta[jnp.maximum(b["op"][0], 0)], b["op"][1])
            npar = jnp.where(b["np"][0] >= 0, theta[jnp.maximum(b["np"][0], 0)], b["np"][1])
            y = jax.vmap(f.h, in_axes=(0, 0, 0, None, 0))(b["t"], ys, pvs, theta, op)
            s = jax.vmap(f.sigma, in_axes=(0, 0, 0, None, 0, 0))(b["t"], ys, pvs, theta, op, npar)
            mus.append(_transform(y, f.trans) if transform else y)
            sigs.append(s)
        return (jnp.concatenate(mus), jnp.concatenate(sigs)), {"ok": ok, "steps": steps}
    return parts


def _back(order) -> np.ndarray:
    back = np.empty_like(order)
    back[order] = np.arange(order.size)
    return back


def sensitivities(problem, rows, x=None, conditions=None) -> RowSensitivities:
    """See `PetabProblem.sensitivities`."""
    x, df, static_g, groups, blocks_static, blocks, order, funcs = _setup(problem, rows, x, conditions)

    def build():
        parts_x = _parts_fn(problem, static_g, blocks_static, funcs, "forward")

        def fn(x, tol, groups, blocks):
            def one(v):
                return jax.jvp(lambda x_: parts_x(x_, tol, groups, blocks), (x,), (v,), has_aux=True)

            (mu, sig), (Jm, Js), aux = jax.vmap(one, out_axes=(None, 0, None))(jnp.eye(x.size))
            return (mu, sig, Jm.T, Js.T), aux
        return fn

    args = (x, problem._tol(), groups, blocks)
    key = ("petab",) + problem._structure() + ("rows", static_g, blocks_static)
    exe, compile_s, _ = compiled_programs.compiled_with_meta(key, build, args)
    start = time.perf_counter()
    (mu, sig, Jm, Js), aux = jax.block_until_ready(exe(*args))
    run_s = time.perf_counter() - start
    problem._check(aux, mu, sig, Jm, Js)
    back = _back(order)
    c = np.concatenate([np.full(b["exp"].size, 2.0 if funcs[oid].noise == "normal" else 1.0)
                        for (oid, _), b in zip(blocks_static, blocks)])
    return RowSensitivities(df, np.asarray(mu)[back], np.asarray(sig)[back], np.asarray(Jm)[back],
                            np.asarray(Js)[back], c[back], tuple(problem.x_names),
                            {"compile": compile_s, "run": run_s})


@dataclass(frozen=True)
class RowValues:
    """Per row (n_rows = len(rows)): simulation, the observable as simulated (the PEtab
    simulation table's value, not transformed); sigma, its noise standard deviation (on the
    observable's transformed scale); transformation (n_rows,) of str: lin, log or log10; rows:
    the rows as given, with the observable and noise parameters that were used; timings
    (compile, run) in seconds."""

    rows: object
    simulation: np.ndarray
    sigma: np.ndarray
    transformation: np.ndarray
    timings: dict


def simulate_rows(problem, rows, x=None, conditions=None, finite: bool = True) -> RowValues:
    """The observables and their noise sigma at any measurement rows (as `sensitivities`
    takes them: measured or not, under the problem's conditions or new ones), without
    derivatives: one program per shape of the rows, e.g. a fine time grid per experiment
    for a figure. x: (n_estimated,) on the parameter scales (default the nominal values).
    finite=False: a value that is not finite (an observable such as x / x(0) at t = 0) is
    returned as NaN instead of raising; a failed solve raises either way."""
    x, df, static_g, groups, blocks_static, blocks, order, funcs = _setup(problem, rows, x, conditions)

    def build():
        parts = _parts_fn(problem, static_g, blocks_static, funcs, "checkpoint", transform=False)
        return lambda x, tol, groups, blocks: parts(x, tol, groups, blocks)

    args = (x, problem._tol(), groups, blocks)
    key = ("petab",) + problem._structure() + ("row values", static_g, blocks_static)
    exe, compile_s, _ = compiled_programs.compiled_with_meta(key, build, args)
    start = time.perf_counter()
    (y, sig), aux = jax.block_until_ready(exe(*args))
    run_s = time.perf_counter() - start
    problem._check(aux, *((y, sig) if finite else ()))
    back = _back(order)
    y, sig = np.asarray(y), np.asarray(sig)
    bad = ~(np.isfinite(y) & np.isfinite(sig))
    y, sig = np.where(bad, np.nan, y), np.where(bad, np.nan, sig)
    trans = np.array([funcs[o].trans for o in df["observableId"]], dtype=object)
    return RowValues(df, np.asarray(y)[back], np.asarray(sig)[back], trans, {"compile": compile_s, "run": run_s})
