"""Fisher information and identifiability, checked against central differences and a model
whose non-identifiable pair is known by construction (only the product k*V enters)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens
from sensitivity.analyses.identifiability import collinearity_indices, describe_direction, fisher, identifiability

SIGMA = 0.1


def _rhs(t, y, p):
    # x decays at rate k*V (only the product enters), z feeds x at rate b
    return jnp.stack([-p["k"] * p["V"] * y[0] + p["b"] * y[1], -p["b"] * y[1]])


def _model():
    return sens.ODEModel("kv_product", ["x", "z"], {"k": 0.5, "V": 2.0, "b": 0.3, "A": 3.0}, _rhs,
                         {"x": 1.0, "z": 2.0},
                         observables={"obs": lambda t, y, p: p["A"] * y[0], "z_obs": lambda t, y, p: y[1]})


@pytest.fixture(scope="module")
def problem():
    return sens.Problem(_model(), np.linspace(0.0, 5.0, 12), wrt=["k", "V", "b", "A"], rtol=1e-11, atol=1e-11)


@pytest.fixture(scope="module")
def fd_jacobian(problem):
    """d outputs / d inputs by central differences of `simulate`, h = 1e-5 relative."""
    x = problem.x0()
    cols = []
    for i in range(x.size):
        h = 1e-5 * abs(x[i])
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        yu = sens.simulate(problem.with_inputs(up)).outputs
        yd = sens.simulate(problem.with_inputs(down)).outputs
        cols.append((yu - yd) / (2 * h))
    return np.stack(cols, axis=-1)


@pytest.fixture(scope="module")
def ident(problem):
    return identifiability(problem, sigma=SIGMA)


@pytest.mark.parametrize("scale", ["linear", "log"])
def test_fisher_matches_central_differences(problem, fd_jacobian, scale):
    fi = fisher(problem, sigma=SIGMA, scale=scale)
    S = fd_jacobian * (problem.x0() if scale == "log" else 1.0)
    expected = np.einsum("toi,toj->ij", S, S) / SIGMA**2
    # solver tolerance 1e-11 over h = 1e-5: differences good to ~1e-6 relative
    np.testing.assert_allclose(fi.matrix, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert fi.n_observations == problem.times.size * len(problem.of)
    da = fi.to_xarray()
    assert da.dims == ("input", "input_2") and list(da["input"].values) == ["k", "V", "b", "A"]
    assert float(da.sel(input="A", input_2="b")) == pytest.approx(fi.matrix[3, 2])


def test_sigma_per_output_and_unobserved_times(problem, fd_jacobian):
    """A mapping sigma weighs each output; inf leaves a value out of the information."""
    fi = fisher(problem, sigma={"obs": 0.1, "z_obs": 0.5}, scale="linear")
    w = np.array([1 / 0.1**2, 1 / 0.5**2])
    np.testing.assert_allclose(fi.matrix, np.einsum("o,toi,toj->ij", w, fd_jacobian, fd_jacobian),
                               rtol=1e-5, atol=1e-5 * np.abs(fi.matrix).max())
    sigma = np.full((problem.times.size, 2), np.inf)
    sigma[::3, 0] = 0.2
    fi2 = fisher(problem, sigma=sigma, scale="linear", jacobian=fi.jacobian)
    J = fd_jacobian[::3, 0]
    np.testing.assert_allclose(fi2.matrix, J.T @ J / 0.2**2, rtol=1e-5, atol=1e-5 * np.abs(fi2.matrix).max())
    assert fi2.n_observations == len(range(0, problem.times.size, 3))


def test_product_kv_is_flagged_non_identifiable(ident):
    ds = ident.dataset
    # the smallest eigenvalue is ~0 and its direction is ln k - ln V, named by k and V
    lam = ds["eigenvalue"].values
    assert lam[0] <= 1e-10 * lam[-1] and lam[1] > 1e-4 * lam[-1]
    v = ds["eigenvector"].sel(direction=0).to_series()
    np.testing.assert_allclose(np.abs(v[["k", "V"]]), [2**-0.5, 2**-0.5], atol=1e-6)
    assert v["k"] * v["V"] < 0 and np.abs(v[["b", "A"]]).max() < 1e-6
    assert ident.sloppy_directions == (describe_direction(v.values, list(v.index)),)
    assert set(ident.sloppy_directions[0].replace("+", " ").replace("-", " ").split()) >= {"ln", "k", "V"}
    # collinearity: {k, V} exactly collinear and the minimal flagged subset; other pairs fine
    gam = ds["collinearity"].to_series()
    assert gam["k,V"] > 1e6
    assert ident.non_identifiable == (("k", "V"),)
    for pair in ("k,b", "k,A", "V,b", "V,A", "b,A"):
        assert gam[pair] < ident.threshold
    assert not ident.identifiable
    se = ds["standard_error"].to_series()
    assert np.isinf(se["k"]) and np.isinf(se["V"]) and np.isfinite(se[["b", "A"]]).all()
    assert ds["correlation"].sel(input="k", input_2="V") == pytest.approx(-1.0, abs=1e-6)
    text = ident.summary()
    assert "{k, V}" in text and "Not identifiable" in text


def test_collinearity_index_matches_brun_definition(problem, fd_jacobian, ident):
    """gamma_K = 1 / min singular value of the unit-length weighted sensitivity columns."""
    S = (fd_jacobian * problem.x0() / SIGMA).reshape(-1, 4)
    Sn = S / np.linalg.norm(S, axis=0)
    gam = ident.dataset["collinearity"].to_series()
    names = ["k", "V", "b", "A"]
    for subset in ("k,b", "V,A", "b,A", "k,b,A"):
        idx = [names.index(n) for n in subset.split(",")]
        expected = 1.0 / np.linalg.svd(Sn[:, idx], compute_uv=False).min()
        assert gam[subset] == pytest.approx(expected, rel=1e-5)
    # scale-free: the linear-scale Fisher gives the same indices
    _, g_lin = collinearity_indices(fisher(problem, SIGMA, scale="linear").matrix, 3)
    finite = np.isfinite(gam.values) & (gam.values < 1e4)
    np.testing.assert_allclose(g_lin[finite], gam.values[finite], rtol=1e-8)


def test_identifiable_subset_has_cramer_rao_errors(problem):
    """Without V the inputs are identifiable; the standard errors are sqrt(diag F^-1)."""
    p = problem.replace(wrt=["k", "b", "A"])
    res = identifiability(p, sigma=SIGMA, scale="linear")
    assert res.identifiable and res.non_identifiable == () and res.sloppy_directions == ()
    F = res.fisher.matrix
    cov = np.linalg.inv(F)
    np.testing.assert_allclose(res.dataset["standard_error"].values, np.sqrt(np.diag(cov)), rtol=1e-8)
    corr = cov / np.sqrt(np.outer(np.diag(cov), np.diag(cov)))
    np.testing.assert_allclose(res.dataset["correlation"].values, corr, atol=1e-8)
    np.testing.assert_allclose(res.dataset["relative_standard_error"].values,
                               np.sqrt(np.diag(cov)) / p.x0(), rtol=1e-8)
    assert "identifiable" in res.summary()


def test_frames_and_plot(ident, tmp_path):
    assert list(ident.to_frame().index) == ["k", "V", "b", "A"]
    subsets = ident.to_frame("subsets")
    assert subsets.index[0] == "k,V" and not subsets["identifiable"].iloc[0]
    assert len(subsets) == 6 + 4  # C(4,2) + C(4,3)
    assert ident.to_frame("eigen")["sloppy"].tolist() == [True, False, False, False]
    assert ident.to_frame("correlation").shape == (4, 4)
    fig = ident.plot(tmp_path / "ident.png")
    assert (tmp_path / "ident.png").stat().st_size > 10_000
    assert len(fig.axes) >= 2


def test_bad_inputs_raise_input_errors(problem):
    with pytest.raises(sens.InputError, match="scale"):
        fisher(problem, SIGMA, scale="ln")
    with pytest.raises(sens.InputError, match="missing"):
        fisher(problem, {"obs": 0.1})
    with pytest.raises(sens.InputError, match="positive"):
        fisher(problem, -1.0)
    with pytest.raises(sens.InputError, match="shape"):
        fisher(problem, np.ones(3))
    with pytest.raises(sens.InputError, match="max_subset"):
        identifiability(problem, SIGMA, max_subset=0)
    zero = problem.replace(wrt=["k", "y0.x"], y0={"x": 0.0})
    with pytest.raises(sens.InputError, match="y0.x = 0"):
        fisher(zero, SIGMA, jacobian=sens.jacobian(zero))


def test_a_fisher_matrix_given_with_names():
    # F = diag(4, 1/4) on the log scale: standard errors 1/2 and 2, nothing sloppy; a rank-one
    # matrix has one sloppy direction, the difference of the two inputs, and infinite errors
    res = identifiability(np.diag([4.0, 0.25]), names=["a", "b"])
    np.testing.assert_allclose(res.dataset["standard_error"].values, [0.5, 2.0])
    assert not res.dataset["sloppy"].values.any() and res.fisher.mode == "given"
    flat = identifiability(np.array([[1.0, 1.0], [1.0, 1.0]]), names=["k", "V"])
    assert flat.dataset["sloppy"].values.sum() == 1 and np.isinf(flat.dataset["standard_error"].values).all()
    assert "ln k" in flat.sloppy_directions[0] and "ln V" in flat.sloppy_directions[0]
    with pytest.raises(sens.InputError, match="square"):
        identifiability(np.ones((2, 3)))
    with pytest.raises(sens.InputError, match="names"):
        identifiability(np.eye(2), names=["only_one"])
