"""Experimental design against known answers.

- y = A exp(-k t), A and k unknown: the locally D-optimal design of two measurements on
  [0, T] (T > 1/k) is {0, 1/k}; for k alone (or with A known) it is 1/k; averaged over k
  samples (a robust design for k) the closed-form maximiser of the mean criterion;
- y = a + b t on [-1, 1]: the D-optimal continuous design puts weight 1/2 on each end, the
  equivalence theorem's max d(x) = p = 2 there, and for the uniform design the efficiency
  bound p / max d(x) lies below its efficiency sqrt(mean t^2) (closed forms);
- the rank-one / rank-two scans (determinant lemma, Woodbury) against the criterion of
  F + M_c computed directly, for every criterion;
- a PEtab problem (A <=> B): the candidates' Fisher information against the closed-form
  solution's derivatives.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import sensitivity as sens
from sensitivity.analyses.design import _Search, efficient_rounding, scan, utility

K, A = 0.5, 3.0
GRID = np.linspace(0.0, 10.0, 501)  # step 0.02: 1/k = 2 is on it
PETAB_CASE = Path(__file__).resolve().parents[1] / "../shared/petab-test-suite/cases/v1.0.0/sbml/0001/_0001.yaml"


def _decay():
    return sens.ODEModel("decay", ["y"], {"k": K}, lambda t, y, p: -p["k"] * y, {"y": A})


@pytest.fixture(scope="module")
def problem():
    return sens.Problem(_decay(), GRID, wrt=["y0.y", "k"], rtol=1e-10, atol=1e-12)


@pytest.fixture(scope="module")
def jac(problem):
    return sens.jacobian(problem, mode="forward")


@pytest.mark.parametrize("method", ["exchange", "continuous"])
@pytest.mark.parametrize("scale", ["log", "linear"])
def test_two_point_design_of_exponential_decay(problem, jac, method, scale):
    d = sens.design(problem, n=2, sigma=0.1, scale=scale, method=method, jacobian=jac)
    assert sorted(d.chosen["time"]) == pytest.approx([0.0, 1.0 / K])
    # det F = (A (t2 - t1) exp(-k (t1 + t2)))^2 / sigma^4 on the linear scale
    expected = 2 * np.log(A * (1 / K) * np.exp(-1.0)) - 4 * np.log(0.1)
    if scale == "log":
        expected += 2 * np.log(A * K)
    assert d.value == pytest.approx(expected, rel=1e-6)
    assert d.efficiency_bound <= 1.0 and d.efficiency_bound > 0.99
    if method == "continuous":  # weight 1/2 at each of the two points, max d(x) = p
        w = d.candidates.set_index("time")["weight"]
        assert w.loc[0.0] == pytest.approx(0.5, abs=2e-3)
        # the criterion is flat near 1/k: the multiplicative algorithm spreads that half
        assert w[(w.index > 1.5) & (w.index < 2.5)].sum() == pytest.approx(0.5, abs=5e-3)
        assert d.equivalence["max_derivative"] == pytest.approx(2.0, rel=1e-3)


def test_k_alone_and_with_a_measured_start(problem, jac):
    only_k = dataclasses.replace(jac, values=jac.values[:, :, 1:], input_names=("k",),
                                 input_values=jac.input_values[1:])
    d = sens.design(only_k, n=1, sigma=0.1)
    assert d.chosen["time"].tolist() == [pytest.approx(1.0 / K)]
    # A and k unknown, y(0) already measured: the one measurement to add is at 1/k
    fixed = pd.DataFrame({"time": [0.0], "output": ["y"]})
    d = sens.design(problem, n=1, sigma=0.1, fixed=fixed, jacobian=jac)
    assert d.chosen["time"].tolist() == [pytest.approx(1.0 / K)]
    assert np.isinf(d.standard_error_before[1]) and np.isfinite(d.standard_error_after).all()
    assert d.value > d.value_fixed
    # the greedy path is the criterion of the nested designs: one entry per measurement
    d3 = sens.design(problem, n=3, sigma=0.1, fixed=fixed, jacobian=jac, method="greedy")
    assert d3.path.size == 3 and np.all(np.diff(d3.path) > 0)
    assert d3.value == pytest.approx(d3.path[-1])


def test_candidates_after_the_start_keep_the_start():
    """Candidates from t = 0.4 on, the problem starting at 0: the information of the chosen
    times is the closed form's, y = A exp(-k t) from t = 0 (not from the first candidate)."""
    late = sens.Problem(_decay(), GRID[20::20], t0=0.0, wrt=["y0.y", "k"], rtol=1e-10, atol=1e-12)
    d = sens.design(late, n=3, sigma=0.1, scale="linear")
    t = d.candidates["time"].to_numpy()[d.index]
    J = np.stack([np.exp(-K * t), -A * t * np.exp(-K * t)], axis=-1)
    np.testing.assert_allclose(d.fisher_after, J.T @ J / 0.01, rtol=1e-7)


def test_robust_design_for_k_averages_over_samples(problem):
    """With A known, the D criterion for k at a sample k_s is 2 log(A k_s t exp(-k_s t)) +
    const: its mean over the samples is largest at t = 1 / mean(k)."""
    ks = np.array([0.4, 1.0])
    samples = [{"k": k} for k in ks]
    fixed = np.diag([1e12, 0.0])
    d = sens.design(problem, n=1, sigma=0.1, fixed=fixed, robust=samples)
    t = GRID[1:]
    mean_crit = np.mean([2 * np.log(A * k * t * np.exp(-k * t)) for k in ks], axis=0)
    assert d.chosen["time"].tolist() == [pytest.approx(t[np.argmax(mean_crit)])]
    assert d.n_samples == 2
    nominal = sens.design(problem, n=1, sigma=0.1, fixed=fixed)
    assert nominal.chosen["time"].tolist() == [pytest.approx(1.0 / K)]


def _line_jacobian(m: int = 201) -> sens.JacobianResult:
    """y = a + b t on [-1, 1]: d y / d(a, b) = (1, t)."""
    t = np.linspace(-1.0, 1.0, m)
    J = np.stack([np.ones_like(t), t], axis=-1)[:, None, :]
    return sens.JacobianResult(J, (1.0 + 0.5 * t)[:, None], t, ("y",), ("a", "b"), np.array([1.0, 0.5]),
                               "forward", None)


def test_continuous_design_of_a_line_and_its_efficiency_bound():
    jac = _line_jacobian()
    t = jac.times
    d = sens.design(jac, n=10, sigma=1.0, scale="linear", method="continuous")
    w = d.candidates["weight"].to_numpy()
    # the multiplicative algorithm stops at an equivalence gap of 1e-4 relative: the weight
    # left on the ends' neighbours is of that order of the criterion
    assert w[0] == pytest.approx(0.5, abs=0.01) and w[-1] == pytest.approx(0.5, abs=0.01)
    assert w[:3].sum() == pytest.approx(0.5, abs=1e-3) and w[-3:].sum() == pytest.approx(0.5, abs=1e-3)
    assert d.equivalence["max_derivative"] == pytest.approx(2.0, rel=1e-3)
    assert sorted(d.chosen["chosen"]) == [5, 5] and sorted(d.chosen["time"]) == [-1.0, 1.0]
    m2 = np.mean(t ** 2)  # the uniform design's M = diag(1, m2); the optimum's diag(1, 1)
    assert d.efficiency_uniform == pytest.approx(np.sqrt(1 / m2), rel=1e-9)
    # at the uniform design: d(x) = 1 + x^2 / m2, bound p / max d <= efficiency sqrt(m2)
    G = (jac.values[:, 0, :])[None, :, None, :]
    search = _Search(G, np.zeros((1, 2, 2)), "D", None, None, None, True)
    start = search.continuous(10.0, iterations=0)
    np.testing.assert_allclose(start["psi"], 1 + t ** 2 / m2, rtol=1e-12)
    bound = 2 / start["psi"].max()
    assert bound == pytest.approx(2 / (1 + 1 / m2))
    assert bound <= np.sqrt(m2) <= 1.0
    # the concavity bound (phi* <= phi + max psi - sum w psi) holds too
    assert np.exp(start["utility"] - start["upper"]) ** 0.5 <= np.sqrt(m2)


def _polynomial_jacobian(degree: int, m: int = 201) -> sens.JacobianResult:
    """y = sum_k c_k t^k on [-1, 1]: d y / d c_k = t^k."""
    t = np.linspace(-1.0, 1.0, m)
    J = np.stack([t ** k for k in range(degree + 1)], axis=-1)[:, None, :]
    names = tuple(f"c{k}" for k in range(degree + 1))
    return sens.JacobianResult(J, np.zeros((m, 1)), t, ("y",), names, np.ones(degree + 1), "forward", None)


def test_continuous_e_optimal_design_of_a_quadratic_and_its_bound():
    """Quadratic regression on [-1, 1]: the E-optimal continuous design puts 1/5, 3/5, 1/5 on
    -1, 0, 1 and has lambda_min(M) = 1/5 (Pukelsheim, Optimal Design of Experiments, 9.12);
    with n = 5 the exact design 1, 3, 1 has lambda_min = 1 (M = [[5, 0, 2], [0, 2, 0],
    [2, 0, 2]]). The duality bound lies above the optimum at any weights."""
    jac = _polynomial_jacobian(2)
    t = jac.times
    d = sens.design(jac, n=5, sigma=1.0, scale="linear", method="continuous", criterion="E")
    w = d.candidates["weight"].to_numpy()
    assert w[t <= -0.9].sum() == pytest.approx(0.2, abs=5e-3)
    assert w[np.abs(t) < 0.2].sum() == pytest.approx(0.6, abs=5e-3)
    assert w[t >= 0.9].sum() == pytest.approx(0.2, abs=5e-3)
    e = d.equivalence
    optimum = 5 * 0.2
    assert e["weights_value"] == pytest.approx(optimum, rel=1e-3) and e["weights_value"] <= optimum + 1e-12
    upper = e["weights_value"] + e["gap"]
    assert optimum - 1e-12 <= upper <= optimum * (1 + 1e-3)
    assert 0.999 <= e["efficiency_bound"] <= 1.0
    assert dict(zip(d.chosen["time"], d.chosen["chosen"])) == {-1.0: 1, 0.0: 3, 1.0: 1}
    assert d.value == pytest.approx(1.0, rel=1e-12)
    # at equal weights (no iteration) the bound is loose, and still above the optimum
    G = jac.values[:, 0, :][None, :, None, :]
    start = _Search(G, np.zeros((1, 3, 3)), "E", None, None, None, True).continuous(5.0, iterations=0)
    assert start["upper"] >= optimum and start["utility"] < optimum
    # an exact E design gets its bound from the same continuous search
    ex = sens.design(jac, n=5, sigma=1.0, scale="linear", criterion="E")
    assert ex.value == pytest.approx(1.0, rel=1e-12) and 0.99 <= ex.efficiency_bound <= 1.0


def test_continuous_e_and_me_designs_of_a_line():
    """y = a + b t on [-1, 1]: M = [[1, m1], [m1, m2]], lambda_min <= m2 <= 1 with equality
    only for weight 1/2 on each end (M = I), which is also the only design of condition
    number 1."""
    jac = _line_jacobian()
    d = sens.design(jac, n=4, sigma=1.0, scale="linear", method="continuous", criterion="E")
    w = d.candidates["weight"].to_numpy()
    assert w[:3].sum() == pytest.approx(0.5, abs=5e-3) and w[-3:].sum() == pytest.approx(0.5, abs=5e-3)
    assert d.equivalence["weights_value"] == pytest.approx(4.0, rel=1e-2)
    assert d.equivalence["weights_value"] + d.equivalence["gap"] >= 4.0 - 1e-9  # the bound holds
    assert dict(zip(d.chosen["time"], d.chosen["chosen"])) == {-1.0: 2, 1.0: 2} and d.value == pytest.approx(4.0)
    me = sens.design(jac, n=4, sigma=1.0, scale="linear", method="continuous", criterion="ME")
    assert me.equivalence["weights_value"] == pytest.approx(1.0, rel=5e-2)
    assert dict(zip(me.chosen["time"], me.chosen["chosen"])) == {-1.0: 2, 1.0: 2} and me.value == pytest.approx(1.0)
    assert np.isnan(me.efficiency_bound)


@pytest.mark.parametrize("subset", [None, [0, 2]])
def test_e_bound_lies_above_every_design(subset):
    """The E bound trace(H F_0) + max psi (with fixed information, on a subset too) against
    the criterion of random weights and of every single-candidate design."""
    rng = np.random.default_rng(3)
    p, N, n = 4, 60, 6.0
    G = rng.normal(size=(1, N, 1, p))
    B = rng.normal(size=(2, p))
    F0 = (B.T @ B)[None]
    sub = None if subset is None else np.array(subset)
    search = _Search(G, F0, "E", sub, None, None, True)
    cont = search.continuous(n, iterations=300)
    M = np.einsum("nrp,nrq->npq", G[0], G[0])
    W = np.vstack([rng.dirichlet(np.full(N, 0.3), size=200), np.eye(N)])
    values = [utility(F0[0] + n * np.einsum("n,npq->pq", w, M), "E", sub) for w in W]
    assert max(values) <= cont["upper"] + 1e-9
    assert cont["utility"] >= max(values) - 1e-9 * abs(max(values)) - cont["gap"]
    assert cont["gap"] <= 1e-3 * cont["utility"]


def test_efficient_rounding_keeps_the_count():
    w = np.array([0.5, 0.3, 0.2, 0.0])
    for n in (1, 2, 3, 7, 10):
        c = efficient_rounding(w, n)
        assert c.sum() == n and c[3] == 0
    assert efficient_rounding(w, 10).tolist() == [5, 3, 2, 0]


@pytest.mark.parametrize("r", [1, 2])
@pytest.mark.parametrize("criterion,subset", [("D", None), ("A", None), ("E", None), ("ME", None),
                                              ("D", [0, 2]), ("A", [1]), ("E", [0, 3])])
def test_scan_matches_the_criterion_computed_directly(criterion, subset, r):
    rng = np.random.default_rng(1)
    p = 5
    B = rng.normal(size=(8, p))
    F = B.T @ B + 0.1 * np.eye(p)
    G = rng.normal(size=(40, r, p))
    sub = None if subset is None else np.array(subset)
    fast = scan(F, G, criterion, sub)
    direct = np.array([utility(F + g.T @ g, criterion, sub) for g in G])
    np.testing.assert_allclose(fast, direct, rtol=1e-9, atol=1e-12)


def test_errors_name_the_element(problem, jac):
    with pytest.raises(sens.InputError, match="criterion = 'Q'"):
        sens.design(problem, n=2, criterion="Q", jacobian=jac)
    with pytest.raises(sens.InputError, match="parameters: 'kk'.*did you mean 'k'"):
        sens.design(problem, n=2, parameters=["kk"], jacobian=jac)
    with pytest.raises(sens.InputError, match="needs parameters"):
        sens.design(problem, n=2, criterion="D_s", jacobian=jac)
    with pytest.raises(sens.InputError, match="candidates: 'z' is not an output"):
        sens.design(problem, n=2, candidates={"z": [1.0]})


def test_costs_and_budget(problem, jac):
    """Measurements after t = 5 cost a tenth: with a budget of 2 the design buys late ones."""
    costs = np.where(jac.times > 5.0, 0.1, 1.0)
    d = sens.design(problem, n=None, sigma=0.1, jacobian=jac, costs=costs, budget=2.0, replicates=False)
    assert d.chosen["cost"].sum() <= 2.0 + 1e-12
    assert (d.chosen["time"] > 5.0).sum() >= 2
    assert d.n > 2


def test_plot_and_frames(problem, jac, tmp_path):
    d = sens.design(problem, n=3, sigma=0.1, jacobian=jac, fixed=pd.DataFrame({"time": [0.0], "output": ["y"]}))
    fig = d.plot(tmp_path / "design.png")
    assert (tmp_path / "design.png").stat().st_size > 10_000 and fig is not None
    assert list(d.to_frame("inputs").index) == ["y0.y", "k"]
    assert d.to_frame("path").shape == (3, 2)
    assert "design of 3 measurements" in d.summary()


# --------------------------------------------------------------------------- PEtab
def _conversion(t, a0, b0, k1, k2):
    """A(t) of A <=> B (k1 forward, k2 back) and its derivatives by (a0, b0, k1, k2)."""
    def a(theta):
        a0, b0, k1, k2 = theta
        s = k1 + k2
        eq = (a0 + b0) * k2 / s
        return eq + (a0 - eq) * jnp.exp(-s * t)
    import jax
    theta = jnp.array([a0, b0, k1, k2])
    return np.asarray(a(theta)), np.asarray(jax.jacfwd(a)(theta))


@pytest.mark.skipif(not PETAB_CASE.is_file(), reason="the PEtab test suite is not in ../shared")
def test_petab_candidates_against_the_closed_form():
    prob = sens.petab.load(PETAB_CASE)
    d = sens.design(prob, candidates=np.linspace(0.0, 10.0, 21), n=2)
    assert set(d.candidates.columns) >= {"time", "output", "condition"}
    a0, b0, k1, k2 = prob.x_nominal  # linear scale in this case; noise sigma = 0.5
    _, J_fixed = _conversion(jnp.array([0.0, 10.0]), a0, b0, k1, k2)
    np.testing.assert_allclose(d.fisher_fixed, J_fixed.T @ J_fixed / 0.25, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(d.fisher_fixed, prob.fisher(), rtol=1e-6, atol=1e-9)
    _, J_new = _conversion(jnp.asarray(np.asarray(d.candidates["time"])[d.index]), a0, b0, k1, k2)
    np.testing.assert_allclose(d.fisher_after - d.fisher_fixed, J_new.T @ J_new / 0.25, rtol=1e-6, atol=1e-9)
    # A(t) depends on a0, s = k1 + k2 and (a0 + b0) k2 / s only: no design determines all
    # four, but a0 alone is determined: the criterion is on it
    assert d.parameters == ("a0",) and d.criterion == "D_s" and "determines b0, k1, k2" in d.notes[0]
    assert np.isfinite(d.value) and np.isfinite(d.standard_error_after[0])


CASE_TWO_CONDITIONS = PETAB_CASE.parents[1] / "0002" / "_0002.yaml"  # A <=> B, conditions set a0 (b0)
NEW = {"c_hi": {"a0": 3.0, "b0": 0.5}}


def _conversion_rows(t, a0, b0, k1, k2):
    """A(t) and its derivatives by (k1, k2) under initial amounts a0, b0 (arrays per row)."""
    import jax

    def a(theta):
        k1, k2 = theta
        s = k1 + k2
        eq = (a0 + b0) * k2 / s
        return eq + (a0 - eq) * jnp.exp(-s * t)
    theta = jnp.array([k1, k2])
    return np.asarray(a(theta)), np.asarray(jax.jacfwd(a)(theta))


@pytest.mark.skipif(not CASE_TWO_CONDITIONS.is_file(), reason="the PEtab test suite is not in ../shared")
def test_petab_sensitivities_at_new_rows_against_the_closed_form(tmp_path):
    """PetabProblem.sensitivities at rows under a measured, an unmeasured and a new condition
    (given as a mapping and as a condition TSV): the closed form of A <=> B; a second call
    with other times of the same shape runs the same compiled program."""
    prob = sens.petab.load(CASE_TWO_CONDITIONS)
    t = np.array([0.0, 0.7, 2.0, 6.0, 0.3, 4.0])
    cond = ["c_hi"] * 4 + ["c0", "c1"]
    rows = pd.DataFrame({"observableId": "obs_a", "simulationConditionId": cond, "time": t})
    a0 = np.array([3.0] * 4 + [0.8, 0.9])
    b0 = np.array([0.5] * 4 + [1.0, 1.0])  # c0, c1 leave b0 to the model (1)
    s = prob.sensitivities(rows, conditions=NEW)
    value, J = _conversion_rows(jnp.asarray(t), jnp.asarray(a0), jnp.asarray(b0), *prob.x_nominal)
    np.testing.assert_allclose(s.value, value, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(s.jacobian, J, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(s.sigma, 1.0)  # noiseFormula 1
    np.testing.assert_allclose(s.fisher(), J.T @ J, rtol=1e-6, atol=1e-9)
    (tmp_path / "new.tsv").write_text("conditionId\ta0\tb0\nc_hi\t3.0\t0.5\n")
    again = prob.sensitivities(rows.assign(time=t * 1.5), conditions=tmp_path / "new.tsv")
    assert again.timings["compile"] == 0.0
    value, J = _conversion_rows(jnp.asarray(t * 1.5), jnp.asarray(a0), jnp.asarray(b0), *prob.x_nominal)
    np.testing.assert_allclose(again.jacobian, J, rtol=1e-6, atol=1e-9)
    with pytest.raises(sens.InputError, match="'c0' is a condition of the condition table already"):
        prob.sensitivities(rows, conditions={"c0": {"a0": 1.0}})
    with pytest.raises(sens.InputError, match="column 'zz' is not a parameter, species or compartment"):
        prob.sensitivities(rows, conditions={"c_hi": {"zz": 1.0}})
    with pytest.raises(sens.InputError, match="simulationConditionId 'c_hj'.*did you mean 'c_hi'"):
        prob.sensitivities(rows.assign(simulationConditionId="c_hj"), conditions=NEW)


V2_START_AT_10 = PETAB_CASE.parents[3] / "v2.0.0" / "sbml" / "0018" / "_0018.yaml"  # preequilibrated, t0 = 10


@pytest.mark.skipif(not V2_START_AT_10.is_file(), reason="the PEtab test suite is not in ../shared")
def test_petab_sensitivities_at_the_measured_rows_give_the_problems_fisher():
    """At the measurement table's own rows (an experiment preequilibrated and started at
    t0 = 10, PEtab 2), the rows' Fisher information is PetabProblem.fisher's."""
    import petab.v1 as pv1

    prob = sens.petab.load(V2_START_AT_10)
    cols = [pv1.OBSERVABLE_ID, pv1.PREEQUILIBRATION_CONDITION_ID, pv1.SIMULATION_CONDITION_ID, pv1.TIME]
    s = prob.sensitivities(prob.measurements[cols])
    np.testing.assert_allclose(s.fisher(), prob.fisher(), rtol=1e-8, atol=1e-12)


@pytest.mark.skipif(not CASE_TWO_CONDITIONS.is_file(), reason="the PEtab test suite is not in ../shared")
def test_petab_design_under_a_new_condition_against_the_problem_that_measures_it(tmp_path):
    """More of A and B (a0 = 3, b0 = 0.5 against 0.8 and 0.9 with b0 = 1) make every
    measurement more informative about k1 and k2: the design takes the new condition.
    Its Fisher information after the design is that of the PEtab problem whose tables hold
    the new condition and the chosen measurements (PetabProblem.fisher of those files)."""
    import shutil

    prob = sens.petab.load(CASE_TWO_CONDITIONS)
    d = sens.design(prob, candidates=np.linspace(0.0, 10.0, 21), n=3, conditions=NEW)
    assert set(d.candidates["condition"]) == {"c0", "c1", "c_hi"}
    assert d.candidates.loc[d.candidates["condition"] == "c_hi", "new_condition"].all()
    chosen = d.chosen
    assert set(chosen["condition"]) == {"c_hi"} and chosen["chosen"].sum() == 3
    folder = tmp_path / "augmented"
    shutil.copytree(CASE_TWO_CONDITIONS.parent, folder)
    with open(folder / "_conditions.tsv", "a") as f:
        f.write("c_hi\t3.0\t0.5\n")
    t = d.candidates["time"].to_numpy()[d.index]
    with open(folder / "_measurements.tsv", "a") as f:
        f.writelines(f"obs_a\tc_hi\t{float(ti)!r}\t1.0\n" for ti in t)
    augmented = sens.petab.load(folder / "_0002.yaml")
    np.testing.assert_allclose(d.fisher_after, augmented.fisher(), rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(d.fisher_fixed, prob.fisher(), rtol=1e-6, atol=1e-10)


# --------------------------------------------------------------------------- YAML and CLI
DECAY_MODEL = '''
import sensitivity as sens


def model():
    return sens.ODEModel("decay_yaml", ["y"], {"k": 0.5}, lambda t, y, p: -p["k"] * y, {"y": 3.0})
'''

DESIGN_CONFIG = '''
model: decay.py:model
time: {start: 0.0, stop: 10.0, points: 501}
solver: {rtol: 1.0e-10, atol: 1.0e-12}
sensitivity: {wrt: [y0.y, k], mode: forward, probe: never}
analysis:
  design: {n: 2, sigma: 0.1, criterion: D}
output: {plots: []}
'''


def _config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "decay.py").write_text(DECAY_MODEL)
    (tmp_path / "run.yaml").write_text(text.lstrip())
    return tmp_path / "run.yaml"


def test_yaml_design_is_validated_with_the_rest(tmp_path):
    from sensitivity.app.config import run as config

    bad = DESIGN_CONFIG.replace("{n: 2, sigma: 0.1, criterion: D}",
                                "{n: 2, sigma: {yy: 0.1}, criterion: D_s, parameters: [kk], fixed: none.csv, "
                                "candidates: {z: [1.0]}}")
    with pytest.raises(sens.ConfigError) as info:
        config.load(_config(tmp_path, bad))
    text = "\n".join(info.value.problems)
    assert "analysis.design.sigma.yy" in text
    assert "analysis.design.parameters[0] = 'kk'" in text and "did you mean 'k'" in text
    assert "analysis.design.fixed" in text and "not found" in text
    assert "analysis.design.candidates.z" in text
    spec = config.load(_config(tmp_path, DESIGN_CONFIG))
    assert spec.config.analysis.design.n == 2


def test_yaml_design_runs_and_writes_its_files(tmp_path):
    from sensitivity.app import cli

    out = tmp_path / "result"
    assert cli.main(["run", str(_config(tmp_path, DESIGN_CONFIG)), "--out", str(out), "-q"]) == 0
    chosen = pd.read_csv(out / "design.csv")
    assert sorted(chosen["time"]) == pytest.approx([0.0, 1.0 / K])
    summary = json.loads((out / "summary.json").read_text())["analysis"]["design"]
    assert summary["n"] == 2 and summary["criterion"] == "D"
    inputs = pd.read_csv(out / "design_inputs.csv", index_col=0)
    assert list(inputs.index) == ["y0.y", "k"] and np.isfinite(inputs["standard_error_after"]).all()
