"""Structured linear algebra of implicit solvers: sparsity detection, the
banded (block-tridiagonal) lineax solver, and the banded path inside Kvaerno5 against the
dense path, for values and for forward and adjoint sensitivities."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest
import scipy.sparse as sp

import sensitivity as sens
from sensitivity.core import sparsity
from sensitivity.models import brusselator_1d, heat_1d
from sensitivity.solvers import banded
from sensitivity.solvers import linear as stiff_linear


def _band(n, lower, upper, rng):
    A = np.zeros((n, n))
    for i in range(n):
        for j in range(max(0, i - lower), min(n, i + upper + 1)):
            A[i, j] = rng.standard_normal()
    return A + (lower + upper + 2) * np.eye(n)


def _bruss_pattern(n):
    """The known pattern of brusselator_1d: tridiagonal u-u and v-v, diagonal u-v, v-u."""
    N = n // 2
    tri = np.eye(N, k=-1) + np.eye(N) + np.eye(N, k=1)
    return np.block([[tri, np.eye(N)], [np.eye(N), tri]]) != 0


# ------------------------------------------------------------------- patterns and colouring
def test_bandwidth_density_and_colours_of_known_patterns():
    n = 40
    tri = sparsity.analyse(sparsity.declared(np.eye(n, k=1) + np.eye(n, k=-1), n))
    assert (tri.bandwidth, tri.perm, tri.n_colours) == (1, None, 3)
    assert tri.pattern.nnz == 3 * n - 2 and tri.density == pytest.approx((3 * n - 2) / n ** 2)
    penta = sparsity.analyse(sparsity.declared([(i, i + 2) for i in range(n - 2)], n))
    assert penta.bandwidth == 2 and penta.pattern.nnz == n + n - 2  # diagonal always added
    # a band scrambled by a permutation: reverse Cuthill-McKee recovers a small bandwidth
    q = np.random.default_rng(0).permutation(n)
    scrambled = sparsity.analyse(sparsity.declared((_band(n, 2, 2, np.random.default_rng(1)) != 0)[q][:, q], n))
    assert scrambled.bandwidth > 10 and scrambled.perm is not None and scrambled.reordered_bandwidth <= 4
    # colours: columns of one colour never share a row
    m = scrambled.pattern.matrix().toarray()
    for c in range(scrambled.n_colours):
        assert m[:, scrambled.colours == c].sum(axis=1).max() <= 1


def test_detection_finds_the_exact_pattern_of_library_models():
    heat = heat_1d.model(n=30)
    p = sparsity.detect(heat.rhs, 0.0, heat.y0, heat.parameters, chunk=7)  # 5 chunks, the last partial
    want = np.abs(np.subtract.outer(np.arange(30), np.arange(30))) <= 1
    np.testing.assert_array_equal(p.matrix().toarray(), want)
    br = brusselator_1d.model(n=24)
    p = sparsity.detect(br.rhs, 0.0, br.y0, br.parameters)
    np.testing.assert_array_equal(p.matrix().toarray(), _bruss_pattern(24))
    st = sparsity.analyse(p)
    assert st.bandwidth == 12 and st.reordered_bandwidth == 2


def test_declared_sparsity_forms_and_errors():
    n = 6
    pairs = sparsity.declared([(0, 1), (1, 0)], n)
    arr = np.eye(n)
    arr[0, 1] = 2.5
    dense_form = sparsity.declared(arr, n)
    assert pairs.nnz == n + 2 and dense_form.nnz == n + 1
    assert sparsity.declared(sp.eye(n, k=1, format="csr"), n).nnz == 2 * n - 1
    with pytest.raises(sens.ModelError, match="jacobian_sparsity has shape"):
        sens.ODEModel("m", 4, {"k": 1.0}, lambda t, y, p: -y, np.ones(4), jacobian_sparsity=np.ones((3, 3)))
    with pytest.raises(sens.ModelError, match="valid are None"):
        sens.ODEModel("m", 4, {"k": 1.0}, lambda t, y, p: -y, np.ones(4), jacobian_sparsity="banded")
    with pytest.raises(sens.ModelError, match="out of range"):
        sens.ODEModel("m", 4, {"k": 1.0}, lambda t, y, p: -y, np.ones(4), jacobian_sparsity=[(0, 4)])


# ------------------------------------------------------------------- the banded lineax solver
@pytest.mark.parametrize("scramble", [False, True])
def test_banded_solver_solves_transposes_and_differentiates(scramble):
    rng = np.random.default_rng(2)
    n = 37  # not a multiple of the block size: padded rows
    A = _band(n, 3, 2, rng)
    if scramble:
        q = rng.permutation(n)
        A = A[q][:, q]
    st = sparsity.analyse(sparsity.declared(A != 0, n))
    solver = banded.BandedLU(banded.Layout(st, banded.block_size(st.reordered_bandwidth, n)))
    r = rng.standard_normal(n)
    op = lx.MatrixLinearOperator(jnp.asarray(A))
    x = lx.linear_solve(op, jnp.asarray(r), solver).value
    np.testing.assert_allclose(np.asarray(x), np.linalg.solve(A, r), rtol=1e-12, atol=1e-12)
    state, _ = solver.transpose(solver.init(op, {}), {})
    xt = solver.compute(state, jnp.asarray(r), {})[0]
    np.testing.assert_allclose(np.asarray(xt), np.linalg.solve(A.T, r), rtol=1e-12, atol=1e-12)

    # reverse mode through lineax.linear_solve (transpose of its JVP) against jnp.linalg.solve
    def loss(M, v, solve):
        return jnp.sum(jnp.sin(solve(M, v)))
    ours = jax.grad(loss, argnums=(0, 1))(jnp.asarray(A), jnp.asarray(r),
                                          lambda M, v: lx.linear_solve(lx.MatrixLinearOperator(M), v, solver).value)
    ref = jax.grad(loss, argnums=(0, 1))(jnp.asarray(A), jnp.asarray(r), jnp.linalg.solve)
    np.testing.assert_allclose(np.asarray(ours[1]), np.asarray(ref[1]), rtol=1e-10, atol=1e-12)
    mask = A != 0  # the solver reads only the pattern's entries
    np.testing.assert_allclose(np.asarray(ours[0])[mask], np.asarray(ref[0])[mask], rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------- choice
def test_choice_small_explicit_declared_and_large():
    times = np.linspace(0.0, 0.1, 3)
    small = sens.Problem(heat_1d.model(n=20), times=times)
    assert stiff_linear.choose(small).kind == "dense"
    assert "not analysed" in stiff_linear.choose(small).reason
    assert stiff_linear.root_finder_for(small) is None
    assert stiff_linear.choose(sens.Problem(heat_1d.model(n=200), times=times, solver="tsit5")).kind == "none"
    large = stiff_linear.choose(sens.Problem(heat_1d.model(n=200), times=times))
    assert large.kind == "banded" and large.structure.bandwidth == 1 and large.structure.pattern.source == "detected"
    m = heat_1d.model(n=200)
    dense = sens.ODEModel(m.name, m.n_states, m.parameters, m.rhs, m.y0, stiff=True, jacobian_sparsity="dense")
    assert stiff_linear.choose(sens.Problem(dense, times=times)).kind == "dense"


def test_declared_pattern_is_used_without_detection(monkeypatch):
    def no_detection(*a, **k):
        raise AssertionError("detect() ran although the model declares its pattern")
    monkeypatch.setattr(sparsity, "detect", no_detection)
    base = brusselator_1d.model(n=50)
    pattern = _bruss_pattern(50)
    m = sens.ODEModel(base.name, 50, base.parameters, base.rhs, base.y0, stiff=True, jacobian_sparsity=pattern)
    choice = stiff_linear.choose(sens.Problem(m, times=np.linspace(0, 1, 3)))
    assert choice.kind == "banded" and choice.structure.pattern.source == "declared"
    np.testing.assert_array_equal(choice.structure.pattern.matrix().toarray(), pattern)
    assert choice.structure.reordered_bandwidth == 2


# ------------------------------------------------------------------- banded vs dense in Kvaerno5
@pytest.fixture(scope="module")
def bruss_pair():
    """The 50-state Brusselator twice: dense LU, and the banded path (declared pattern)."""
    base = brusselator_1d.model(n=50)
    kw = dict(stiff=True)
    dense = sens.ODEModel(base.name, 50, base.parameters, base.rhs, base.y0, jacobian_sparsity="dense", **kw)
    band = sens.ODEModel(base.name, 50, base.parameters, base.rhs, base.y0,
                         jacobian_sparsity=_bruss_pattern(50), **kw)
    probs = [sens.Problem(m, times=np.linspace(0.1, 1.0, 6), wrt=["A", "B", "alpha", "y0.u[3]"],
                          of=["u[0]", "u[12]", "u[30]"], solver="kvaerno5", rtol=1e-9, atol=1e-9)
             for m in (dense, band)]
    assert stiff_linear.choose(probs[0]).kind == "dense" and stiff_linear.choose(probs[1]).kind == "banded"
    return probs


def _objective(ys):
    return jnp.sum(ys ** 2)


def test_banded_path_equals_dense_path_values_and_forward_sensitivities(bruss_pair):
    dense, band = (sens.jacobian(p, mode="forward") for p in bruss_pair)
    scale = np.abs(dense.values).max()
    np.testing.assert_allclose(band.outputs, dense.outputs, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(band.values, dense.values, rtol=1e-6, atol=1e-7 * scale)
    assert "Linear solver: banded" in band.plan.explain()
    assert "Linear solver: dense" in dense.plan.explain()


def test_banded_path_equals_dense_path_adjoint_gradient(bruss_pair):
    dense, band = (sens.gradient(p, _objective, mode="adjoint") for p in bruss_pair)
    np.testing.assert_allclose(band.value, dense.value, rtol=1e-8)
    np.testing.assert_allclose(band.grad, dense.grad, rtol=1e-6, atol=1e-7 * np.abs(dense.grad).max())
    # the adjoint (transposed solves) agrees with the chain rule through forward tangents
    fwd = sens.jacobian(bruss_pair[1], mode="forward")
    chain = np.einsum("to,toi->i", 2.0 * fwd.outputs, fwd.values)
    np.testing.assert_allclose(band.grad, chain, rtol=1e-6, atol=1e-7 * np.abs(chain).max())


def test_derivative_solves_never_form_the_dense_matrix(bruss_pair):
    """Forward tangents and adjoint sweeps go through root_find's implicit derivative: on
    the banded path no n x n array appears in the traced program (on the dense path it does)."""
    from sensitivity.integrate import solve

    def traced(prob, method):
        f = solve.output_function(prob, method)
        values, x = solve.values_of(prob), jnp.asarray(prob.x0())
        if method == "forward":
            g = lambda x: jax.jacfwd(lambda x: f(x, values)[0])(x)  # noqa: E731
        else:
            g = lambda x: jax.grad(lambda x: jnp.sum(f(x, values)[0] ** 2))(x)  # noqa: E731
        return str(jax.make_jaxpr(g)(x))

    dense, band = bruss_pair
    assert "f64[50,50]" in traced(dense, "forward")
    assert "f64[50,50]" not in traced(band, "forward")
    assert "f64[50,50]" not in traced(band, "checkpoint")


def test_choice_follows_the_pattern_grid_banded_and_arrowhead_dense():
    """A 2-D five-point stencil (10 x 10 grid) is banded with bandwidth 10; an arrowhead
    (one state coupled to all) cannot be reordered to a small band: dense LU."""
    side, n = 10, 100
    k = np.arange(n)
    grid = [(i, j) for i in k for j in (i - 1, i + 1, i - side, i + side)
            if 0 <= j < n and (abs(j - i) == side or j // side == i // side)]
    arrow = [(0, j) for j in range(n)] + [(j, 0) for j in range(n)] + [(j, j + 1) for j in range(n - 1)]
    rhs = lambda t, y, p: -p["k"] * y  # noqa: E731 (never evaluated: the patterns are declared)
    times = np.linspace(0.0, 1.0, 3)
    kinds = {}
    for name, pattern in (("grid", grid), ("arrow", arrow)):
        m = sens.ODEModel(f"pattern_{name}", n, {"k": 1.0}, rhs, np.ones(n), stiff=True, jacobian_sparsity=pattern)
        kinds[name] = stiff_linear.choose(sens.Problem(m, times=times, solver="kvaerno5"))  # its 8-row blocks
    assert kinds["grid"].kind == "banded" and kinds["grid"].structure.reordered_bandwidth <= side
    assert kinds["grid"].block == side and kinds["grid"].structure.n_colours <= 2 * side + 1
    assert kinds["arrow"].kind == "dense" and "would cost" in kinds["arrow"].reason
