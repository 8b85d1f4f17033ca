"""The lean Rosenbrock step with its Jacobian formed from a column colouring (c JVPs instead
of n): the coloured Jacobian against `jax.jacfwd`'s, a solve and its forward and reverse
derivatives with and without colouring, and the SBML importer's symbolic pattern against
the nonzeros of the dense Jacobian at random points (a superset; equal where no term
cancels)."""

import jax
import jax.numpy as jnp
import libsbml
import numpy as np
import pytest

from sensitivity.core import sparsity
from sensitivity.core.errors import ModelError
from sensitivity.importers import sbml
from sensitivity.solvers import lean_rodas, rosenbrock
from sensitivity.solvers.lean import rosenbrock_solve
from sensitivity.solvers.rosenbrock import TABLEAUS, lean_step

N = 32  # above rosenbrock.EXPLICIT_INVERSE_MAX: W by LU, as on the large PEtab models
RNG = np.random.default_rng(3)


def chain(t, y, p):
    """A reversible chain with saturating forward rates, a forcing in time on the first
    state and a degradation: a tridiagonal Jacobian."""
    kf, kb, d = p[0], p[1], p[2]
    flux = kf * y[:-1] ** 2 / (1.0 + y[:-1]) - kb * y[1:]  # (N - 1,) from state i to i + 1
    dy = jnp.zeros_like(y).at[:-1].add(-flux).at[1:].add(flux) - d * y
    return dy.at[0].add(1.0 + jnp.sin(3.0 * t))


TRI = sparsity.declared(np.eye(N, k=1) + np.eye(N, k=-1), N)
COMP = sparsity.compression(TRI)
P = jnp.array([1.3, 0.6, 0.05])
Y0 = jnp.asarray(RNG.uniform(0.2, 1.5, N))


def test_compression_of_a_band_and_its_jacobian_equal_jacfwd():
    assert COMP.n_colours == 3
    for _ in range(2):
        y = jnp.asarray(RNG.uniform(0.1, 2.0, N))
        dense = jax.jacfwd(lambda y_: chain(0.4, y_, P))(y)
        np.testing.assert_allclose(rosenbrock.jacobian(lambda y_: chain(0.4, y_, P), y, COMP), dense,
                                   rtol=1e-14, atol=1e-14)
        for autonomous in (False, True):  # the scanned step's J (and df/dt) from one vmapped JVP
            J, T = rosenbrock._jacobian_and_dt(chain, jnp.asarray(0.4), y, P, autonomous, COMP)
            J0, T0 = rosenbrock._jacobian_and_dt(chain, jnp.asarray(0.4), y, P, autonomous)
            np.testing.assert_allclose(J, dense, rtol=1e-14, atol=1e-14)
            if not autonomous:
                np.testing.assert_allclose(T, T0, rtol=1e-14, atol=1e-14)


def test_a_sampled_pattern_is_not_compressed():
    detected = sparsity.Pattern(TRI.n, TRI.rows, TRI.cols, "detected")
    with pytest.raises(ModelError, match="not one detected by sampling"):
        sparsity.compression(detected)


@pytest.mark.parametrize("scan", [False, True])
def test_coloured_step_equals_the_dense_one_with_its_tangent(scan):
    tab = TABLEAUS["rodas5p"]

    def step(y, p, comp):
        return lean_step(chain, 0.3, y, 0.02, p, False, tab, scan=scan, compression=comp)

    for a, b in zip(step(Y0, P, COMP), step(Y0, P, None)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    dy, dp = jnp.asarray(RNG.standard_normal(N)), jnp.array([0.1, -0.4, 0.2])
    for a, b in zip(jax.jvp(lambda y, p: step(y, p, COMP), (Y0, P), (dy, dp))[1],
                    jax.jvp(lambda y, p: step(y, p, None), (Y0, P), (dy, dp))[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_coloured_solve_and_its_forward_and_adjoint_gradients_equal_the_dense_ones():
    ts = jnp.array([0.5, 2.0, 5.0])

    def loss(p, comp, kind):
        ys, _, _, ok, _ = rosenbrock_solve(chain, Y0, 0.0, 5.0, ts, p, (1e-8, 1e-8), 2000, kind=kind,
                                           method="rodas5p", compression=comp)
        return jnp.sum(ys ** 2), ys

    ys1, ys0 = loss(P, COMP, "lax")[1], loss(P, None, "lax")[1]
    np.testing.assert_allclose(ys1, ys0, rtol=1e-12, atol=1e-14)
    fwd = [jax.jacfwd(lambda p, c=c: loss(p, c, "lax")[0])(P) for c in (COMP, None)]
    adj = [jax.grad(lambda p, c=c: loss(p, c, "checkpointed")[0])(P) for c in (COMP, None)]
    np.testing.assert_allclose(fwd[0], fwd[1], rtol=1e-12)
    np.testing.assert_allclose(adj[0], adj[1], rtol=1e-12)
    np.testing.assert_allclose(fwd[0], adj[0], rtol=1e-9)
    # and the derivative is the solve's: central differences in kf (steps barely change)
    eps = 1e-6
    e = jnp.array([eps, 0.0, 0.0])
    central = (loss(P + e, COMP, "lax")[0] - loss(P - e, COMP, "lax")[0]) / (2 * eps)
    np.testing.assert_allclose(fwd[0][0], central, rtol=1e-5)


# ------------------------------------------------------------------ the SBML importer's pattern
def _sbml(n: int, gate: bool = False) -> str:
    """n species S0.. in compartment c (size 2): reactions S_i -> S_{i+1} at rate k S_i / (1 + w_i)
    with the assignment rule w_i = K S_{i+2} (where it exists), degradations d S_i; with
    `gate`, one more reaction S0 -> S1 at a rate that reads S3 only in a piecewise
    condition (its derivative in S3 is zero almost everywhere: the pattern is a superset)."""
    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId("colour_chain")
    c = m.createCompartment()
    c.setId("c"), c.setSize(2.0), c.setConstant(True), c.setSpatialDimensions(3)
    for pid, v in (("k", 1.1), ("K", 0.4), ("d", 0.07)):
        p = m.createParameter()
        p.setId(pid), p.setValue(v), p.setConstant(True)
    for i in range(n):
        s = m.createSpecies()
        s.setId(f"S{i}"), s.setCompartment("c"), s.setInitialConcentration(0.5 + 0.03 * i)
        s.setHasOnlySubstanceUnits(False), s.setBoundaryCondition(False), s.setConstant(False)

    def reaction(rid, frm, to, law):
        r = m.createReaction()
        r.setId(rid), r.setReversible(False), r.setFast(False)
        for sid, make in ((frm, r.createReactant), (to, r.createProduct)):
            if sid is not None:
                ref = make()
                ref.setSpecies(sid), ref.setStoichiometry(1.0), ref.setConstant(True)
        r.createKineticLaw().setMath(libsbml.parseL3Formula(law))

    for i in range(n - 1):
        w = "0"
        if i + 2 < n:
            rule = m.createAssignmentRule()
            rule.setVariable(f"w{i}"), rule.setMath(libsbml.parseL3Formula(f"K * S{i + 2}"))
            p = m.createParameter()
            p.setId(f"w{i}"), p.setConstant(False)
            w = f"w{i}"
        reaction(f"r{i}", f"S{i}", f"S{i + 1}", f"c * k * S{i} / (1 + {w})")
    for i in range(n):
        reaction(f"deg{i}", f"S{i}", None, f"c * d * S{i}")
    if gate:
        reaction("gated", "S0", "S1", "c * piecewise(2 * k * S0, S3 > 100, k * S0)")
    return libsbml.writeSBMLToString(doc)


def _nonzeros(model, points: int = 2) -> np.ndarray:
    """The union of the nonzeros of the dense Jacobian at random states and parameters."""
    pv0 = np.asarray(model.parameter_values)
    out = np.zeros((len(model.states),) * 2, dtype=bool)
    for _ in range(points):
        y = jnp.asarray(RNG.uniform(0.1, 2.0, len(model.states)))
        pv = jnp.asarray(pv0 * RNG.uniform(0.5, 2.0, pv0.shape))
        J = np.asarray(jax.jacfwd(lambda y_: model.rhs(0.3, y_, pv, 0.3))(y))
        out |= (J != 0) | ~np.isfinite(J)
    return out


def _dense(pattern) -> np.ndarray:
    A = np.zeros((pattern.n, pattern.n), dtype=bool)
    A[pattern.rows, pattern.cols] = True
    return A


SM = sbml.from_string(_sbml(24), source="colour_chain")


def test_symbolic_pattern_equals_the_jacobian_nonzeros_of_a_model_without_cancellations():
    pattern = SM.jacobian_pattern
    assert pattern.source == "symbolic" and pattern.n == 24
    np.testing.assert_array_equal(_dense(pattern), _nonzeros(SM))
    # read through the rules: the rate of S_i reads S_{i+2} (w_{i}) and S_{i+1} (w_{i-1})
    assert _dense(pattern)[0, 2] and _dense(pattern)[5, 6] and not _dense(pattern)[0, 3]


def test_symbolic_pattern_is_a_superset_when_a_state_is_read_only_by_a_condition():
    gated = sbml.from_string(_sbml(6, gate=True), source="colour_chain_gated")
    A, nz = _dense(gated.jacobian_pattern), _nonzeros(gated)
    assert not np.any(nz & ~A)       # nothing outside the pattern
    assert A[0, 3] and not nz[0, 3]  # S3 read by the condition only: in the pattern, zero in J


def test_petab_segment_solve_uses_the_colouring_and_agrees_with_the_dense_one(monkeypatch):
    assert lean_rodas.compression(SM) is None  # 24 states: too few JVPs saved to pay
    monkeypatch.setattr(rosenbrock, "COLOUR_MIN_SAVED", 16)
    comp = lean_rodas.compression(SM)
    assert comp is not None and comp.n_colours <= 5
    pv = jnp.asarray(SM.parameter_values)
    y0 = SM.initial(pv)
    ts = jnp.array([1.0, 4.0, 10.0])
    tol = jnp.array([1e-8, 1e-8])
    ys = {}
    try:
        for on in (True, False):
            lean_rodas.COLOURING = on
            seg = lean_rodas.segment_fn(SM, "forward", 5000, "rodas5p", scan_stages=True)
            assert (lean_rodas.compression(SM) is not None) == on
            ys[on] = seg(pv, y0, 0.0, 10.0, 10.0, ts, tol)[0]
    finally:
        lean_rodas.COLOURING = True
    np.testing.assert_allclose(ys[True], ys[False], rtol=1e-12, atol=1e-14)


def test_a_model_held_on_algebraic_constraints_has_no_symbolic_pattern():
    # z^3 + z - x = 0 with x' = -k x: z's rate comes from the constraint's projection, which
    # the rate expressions do not show, so the importer gives no pattern (n JVPs)
    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId("cubic_colour")
    for pid, v, const in (("x", 2.0, False), ("z", 0.0, False), ("k", 0.7, True)):
        p = m.createParameter()
        p.setId(pid), p.setValue(v), p.setConstant(const)
    rule = m.createRateRule()
    rule.setVariable("x"), rule.setMath(libsbml.parseL3Formula("-k * x"))
    m.createAlgebraicRule().setMath(libsbml.parseL3Formula("z^3 + z - x"))
    sm = sbml.from_string(libsbml.writeSBMLToString(doc), source="cubic_colour")
    assert "z" in sm.states and sm.jacobian_reads is None and sm.jacobian_pattern is None
    assert lean_rodas.compression(sm) is None



# ------------------------------------------------------------------ a Problem with a declared pattern
def _hub(t, y, p):
    """A source state y0 feeding 39 sinks at rates spread over three decades: J is the
    diagonal and column 0 (two colours), too wide a band for the banded path."""
    rates = p["k"] * jnp.logspace(0.0, 3.0, y.shape[0] - 1)
    feed = p["a"] * y[0] / (1.0 + y[0])
    return jnp.concatenate([jnp.reshape(1.0 + jnp.sin(t) - p["b"] * y[0], (1,)), feed - rates * y[1:]])


def test_a_problem_with_a_declared_pattern_runs_the_coloured_lean_loop(monkeypatch):
    """solver="rodas5p_lean" on an `ODEModel` whose `jacobian_sparsity` is declared: the loop
    forms J from the colouring (the threshold lowered so a small model qualifies) and its
    values and forward and adjoint derivatives equal those of the same model declared dense
    (the same steps: J differs by rounding only)."""
    import sensitivity as sens
    from sensitivity.integrate import solve

    monkeypatch.setattr(rosenbrock, "COLOUR_MIN_SAVED", 16)
    traced = []  # J decompressed from the colours while the programs are traced
    decompress = rosenbrock._decompress
    monkeypatch.setattr(rosenbrock, "_decompress", lambda comp, Jc: traced.append(comp.n) or decompress(comp, Jc))
    n = 40
    pattern = np.eye(n, dtype=bool)
    pattern[:, 0] = True
    probs = []
    for declared_ in ("dense", pattern):
        m = sens.ODEModel("hub_colour", n, {"k": 0.5, "a": 2.0, "b": 0.3}, _hub, np.linspace(1.0, 0.0, n),
                          stiff=True, jacobian_sparsity=declared_)
        probs.append(sens.Problem(m, times=np.linspace(0.0, 2.0, 4), wrt=["k", "a", "b"], of=["u[0]", "u[5]", "u[39]"],
                                  solver="rodas5p_lean", rtol=1e-9, atol=1e-9))
    assert all(solve.lean_rodas_applies(p, "forward") for p in probs)  # dense linear algebra: the lean loop
    comp = lean_rodas.compression(probs[1].model)
    assert lean_rodas.compression(probs[0].model) is None
    assert comp is not None and comp.n_colours == 2
    J = [sens.jacobian(p, mode="forward") for p in probs]
    assert traced and set(traced) == {n}  # the declared model's loop formed J from the colours
    np.testing.assert_allclose(J[1].outputs, J[0].outputs, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(J[1].values, J[0].values, rtol=1e-10, atol=1e-12)
    g = [sens.gradient(p, lambda y: jnp.sum(y ** 2), mode="adjoint").grad for p in probs]
    np.testing.assert_allclose(g[1], g[0], rtol=1e-10)
