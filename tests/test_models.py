"""The model library: every model against something independent (a closed form, a published
value, a conservation law, a symmetry, finite differences), and forward against adjoint
Jacobians on a small grid.

Budget: every distinct problem structure compiles anew (1-5 s), so each model gets one
module-scoped Problem whose forward and adjoint Jacobians are computed once and reused by
its checks; the trajectory those Jacobians carry (`res.outputs`) doubles as the solution.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import mpmath
import numpy as np
import pytest
from scipy.interpolate import CubicHermiteSpline
from scipy.optimize import brentq

import sensitivity as sens
from sensitivity import models
from sensitivity.models import (
    fitzhugh_nagumo,
    heat_1d,
    lorenz,
    lotka_volterra,
    neural_ode,
    pk_two_compartment,
    reaction_chain,
    robertson,
    van_der_pol,
)

# forward and adjoint differentiate the same discrete solve, so they agree to round-off;
# 1e-6 relative leaves room for the adjoint's different summation order.
JAC_RTOL = 1e-6


def jacobians(prob: sens.Problem):
    """(forward, adjoint) `JacobianResult`s (a forced mode never probes the problem)."""
    fwd = sens.jacobian(prob, mode="forward")
    adj = sens.jacobian(prob, mode="adjoint")
    assert fwd.mode == "forward" and adj.mode == "adjoint"
    return fwd, adj


def solve(prob: sens.Problem) -> np.ndarray:
    """The outputs (n_times, n_of), through the forward Jacobian already compiled for this
    problem structure (a separate `simulate` would compile once more for nothing)."""
    return sens.jacobian(prob, mode="forward").outputs


def assert_jacobians_agree(fwd, adj, rtol=JAC_RTOL):
    """Entry-wise relative agreement to `rtol`; near zero crossings the floor is 1e-3 of
    the largest entry of the same (output, input) column over time."""
    assert fwd.values.shape == adj.values.shape
    assert np.all(np.isfinite(fwd.values))
    scale = np.max(np.abs(fwd.values), axis=0, keepdims=True)
    err = np.abs(adj.values - fwd.values)
    bound = rtol * np.maximum(np.abs(fwd.values), 1e-3 * scale) + 1e-300
    worst = np.unravel_index(np.argmax(err / bound), err.shape)
    assert np.all(err <= bound), (
        f"forward and adjoint differ at (time {worst[0]}, {fwd.output_names[worst[1]]}, "
        f"{fwd.input_names[worst[2]]}): {fwd.values[worst]} vs {adj.values[worst]}"
    )
    np.testing.assert_allclose(adj.outputs, fwd.outputs, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- registry


def test_registry_lists_every_model_and_builds_it():
    names = models.available()
    assert names == sorted(names)
    assert {"lotka_volterra", "sir", "seir", "robertson", "van_der_pol", "lorenz",
            "fitzhugh_nagumo", "pk_two_compartment", "heat_1d", "neural_ode",
            "reaction_chain"} <= set(names)
    for name in names:
        m = models.get(name)
        assert isinstance(m, sens.ODEModel) and m.name == name
        assert m.doc.strip(), f"{name} has no docstring"
        # a second call builds an equal structure, so compiled functions are shared
        assert m.structure_key() == models.get(name).structure_key()
        # the rhs returns one derivative per state, finite at the defaults
        dy = m.rhs(0.0, jnp.asarray(m.y0), {k: jnp.asarray(v) for k, v in m.parameters.items()})
        assert np.asarray(dy).shape == (m.n_states,) and np.all(np.isfinite(np.asarray(dy)))


def test_registry_unknown_name_suggests_the_closest():
    with pytest.raises(sens.InputError, match="did you mean 'lotka_volterra'"):
        models.get("lotka_voltera")
    with pytest.raises(sens.InputError, match="available: .*robertson"):
        models.load("no_such_model")


def test_factory_options_and_overrides():
    assert models.get("heat_1d", n=30).n_states == 30
    assert models.get("reaction_chain", n=7).n_states == 7
    assert float(models.get("lorenz", rho=10.0).parameters["rho"]) == 10.0
    assert models.get("van_der_pol", mu=1000.0).stiff and not models.get("van_der_pol").stiff
    with pytest.raises(sens.InputError, match="did you mean 'sigma'"):
        models.get("lorenz", sigam=1.0)


MODEL_FILE = """
import jax.numpy as jnp
import sensitivity as sens

def rhs(t, y, p):
    return -p["k"] * y

def model(k=0.5):
    return sens.ODEModel("decay", states=["y"], parameters={"k": k}, rhs=rhs, y0=[1.0])

def not_a_model():
    return 42

def broken():
    raise ValueError("bad factory")

def bad_y0():
    return sens.ODEModel("decay", states=["y"], parameters={"k": 1.0}, rhs=rhs, y0=[1.0, 2.0])
"""


def test_load_from_file(tmp_path, monkeypatch):
    path = tmp_path / "mymodel.py"
    path.write_text(MODEL_FILE)
    m = models.load(f"{path}:model")
    assert m.name == "decay" and float(m.parameters["k"]) == 0.5
    assert float(models.load(str(path), k=2.0).parameters["k"]) == 2.0  # default factory "model"
    monkeypatch.chdir(tmp_path)
    assert models.load("./mymodel.py:model").name == "decay"  # relative to the working dir
    assert models.load("lotka_volterra").name == "lotka_volterra"


@pytest.mark.parametrize("spec_suffix, message", [
    ("missing.py:model", "not found"),
    ("mymodel.py:modle", "has no function 'modle' \\(did you mean 'model'\\?\\)"),
    ("mymodel.py:not_a_model", "returned int 42, expected a sensitivity.ODEModel"),
    ("mymodel.py:broken", "raised ValueError: bad factory"),
    ("mymodel.py:bad_y0", "bad_y0\\(\\) built an invalid model: y0 has shape \\(2,\\)"),
    ("syntax.py:model", "importing .* failed with SyntaxError"),
    ("mymodel.txt:model", "not a Python file"),
])
def test_load_errors_are_clear(tmp_path, spec_suffix, message):
    (tmp_path / "mymodel.py").write_text(MODEL_FILE)
    (tmp_path / "mymodel.txt").write_text(MODEL_FILE)
    (tmp_path / "syntax.py").write_text("def model(:\n")
    with pytest.raises((sens.InputError, sens.ModelError), match=message):  # ModelError: the model's fault
        models.load(f"{tmp_path}/{spec_suffix}")


# ----------------------------------------------------------------------- Lotka-Volterra


@pytest.fixture(scope="module")
def lv():
    prob = sens.Problem(lotka_volterra.model(), times=np.linspace(0.0, 15.0, 25),
                        wrt=["alpha", "beta", "gamma", "delta", "y0.prey"], rtol=1e-10, atol=1e-10)
    return prob, *jacobians(prob)


def test_lotka_volterra_conserves_its_invariant(lv):
    prob, fwd, _ = lv
    V = np.asarray(lotka_volterra.invariant(fwd.outputs, prob.parameters))
    assert np.ptp(fwd.outputs[:, 0]) > 10.0  # it oscillates: the check is not vacuous
    np.testing.assert_allclose(V, V[0], rtol=1e-8)


def test_lotka_volterra_forward_matches_adjoint(lv):
    assert_jacobians_agree(*lv[1:])


# ---------------------------------------------------------------------------- SIR, SEIR


def final_size(S0: float, N: float, R0: float) -> float:
    """The root S_inf in (0, S0) of ln(S_inf / S0) = -R0 (1 - S_inf / N)."""
    return brentq(lambda s: math.log(s / S0) + R0 * (1.0 - s / N), 1e-12 * S0, S0 * (1 - 1e-12),
                  xtol=1e-14 * N)


@pytest.fixture(scope="module")
def sir():
    prob = sens.Problem(models.get("sir"), times=np.linspace(0.0, 100.0, 21),
                        wrt=["beta", "gamma", "y0.I"], rtol=1e-10, atol=1e-8)
    return prob, *jacobians(prob)


def test_sir_conserves_population_and_meets_final_size(sir):
    prob, fwd, _ = sir
    y = fwd.outputs
    N = prob.y0.sum()
    np.testing.assert_allclose(y.sum(axis=1), N, rtol=1e-12)
    assert y[-1, 1] < 1e-6 * N  # the epidemic is over
    R0 = float(prob.parameters["beta"] / prob.parameters["gamma"])
    S_inf = final_size(prob.y0[0], N, R0)
    assert S_inf < 0.1 * N
    np.testing.assert_allclose(y[-1, 0], S_inf, rtol=1e-7)


def test_sir_forward_matches_adjoint(sir):
    assert_jacobians_agree(*sir[1:])


@pytest.fixture(scope="module")
def seir():
    prob = sens.Problem(models.get("seir"), times=np.linspace(0.0, 365.0, 21),
                        wrt=["beta", "sigma", "gamma"], rtol=1e-10, atol=1e-6)
    return prob, *jacobians(prob)


def test_seir_conserves_population_and_meets_final_size(seir):
    prob, fwd, _ = seir
    y = fwd.outputs
    N = prob.y0.sum()
    np.testing.assert_allclose(y.sum(axis=1), N, rtol=1e-12)
    assert y[-1, 1] + y[-1, 2] < 1e-8 * N
    R0 = float(prob.parameters["beta"] / prob.parameters["gamma"])
    np.testing.assert_allclose(y[-1, 0], final_size(prob.y0[0], N, R0), rtol=1e-7)


def test_seir_forward_matches_adjoint(seir):
    assert_jacobians_agree(*seir[1:])


# ---------------------------------------------------------------------------- Robertson


@pytest.fixture(scope="module")
def rober():
    times = np.array([0.04, 0.4, 4.0, 40.0])
    prob = sens.Problem(robertson.model(), times=times, t0=0.0, rtol=1e-10, atol=1e-14)
    return prob, *jacobians(prob)


def test_robertson_matches_published_values_and_conserves_mass(rober):
    prob, fwd, _ = rober
    assert prob.model.stiff
    y40 = fwd.outputs[-1]
    # the reference values are printed to 7 significant digits
    np.testing.assert_allclose(y40, robertson.REFERENCE_T40, rtol=1e-6)
    np.testing.assert_allclose(fwd.outputs.sum(axis=1), 1.0, rtol=1e-12)


def test_robertson_forward_matches_adjoint(rober):
    assert_jacobians_agree(*rober[1:])


# -------------------------------------------------------------------------- van der Pol


def test_van_der_pol_limit_cycle_period():
    prob = sens.Problem(van_der_pol.model(), times=np.linspace(0.0, 60.0, 601), rtol=1e-10, atol=1e-10)
    tr = sens.simulate(prob)
    x, dxdt = tr.states[:, 0], tr.states[:, 1]  # y = dx/dt: cubic Hermite, O(dt^4) crossings
    spline = CubicHermiteSpline(prob.times, x, dxdt)
    roots = spline.roots(extrapolate=False)
    up = roots[(spline(roots, 1) > 0) & (roots > 20.0)]  # upward crossings after transients
    assert up.size >= 4
    period = (up[-1] - up[0]) / (up.size - 1)
    assert abs(period - van_der_pol.PERIOD_MU1) < 1e-5
    assert np.all(np.abs(np.diff(up) - van_der_pol.PERIOD_MU1) < 1e-4)


def test_van_der_pol_forward_matches_adjoint():
    prob = sens.Problem(van_der_pol.model(), times=np.linspace(0.0, 10.0, 20),
                        wrt=["mu", "y0.x"], rtol=1e-10, atol=1e-10)
    assert_jacobians_agree(*jacobians(prob))


# ------------------------------------------------------------------------------- Lorenz


@pytest.fixture(scope="module")
def lor():
    # start on the attractor (Lorenz's (0, 1, 0) at t = 20): from (0, 1, 0) itself the
    # solution circles one wing for ~16 time units and the growth starts late
    on_attractor = [-1.35636123, -2.38732084, 12.38999375]
    prob = sens.Problem(lorenz.model(), times=np.linspace(0.5, 10.0, 20), t0=0.0, y0=on_attractor,
                        wrt=["sigma", "rho", "beta"], rtol=1e-10, atol=1e-10)
    return prob, *jacobians(prob)


def test_lorenz_mirror_symmetry(lor):
    prob = lor[0]
    x0 = np.array([1.0, 2.0, 20.0])  # off the invariant z axis, so the mirror is a new solution
    a = solve(prob.replace(y0=x0))  # outputs are the states x, y, z
    b = solve(prob.replace(y0=x0 * [-1, -1, 1]))
    assert np.ptp(a[:, 0]) > 10.0
    np.testing.assert_allclose(b, a * [-1, -1, 1], rtol=1e-9, atol=1e-9)


def test_lorenz_sensitivities_grow_with_time(lor):
    prob, fwd, _ = lor
    size = np.linalg.norm(fwd.column("rho"), axis=1)  # |dy/d rho| per save time
    early, late = size[prob.times <= 1.0].max(), size[prob.times >= 8.0].max()
    # chaos: growth ~ exp(0.9 * 8) ~ 1e3 over the horizon (the assertion leaves a factor 10 of slack)
    assert late > 100.0 * early


def test_lorenz_forward_matches_adjoint(lor):
    assert_jacobians_agree(*lor[1:])


# ---------------------------------------------------------------------- FitzHugh-Nagumo


@pytest.fixture(scope="module")
def fhn():
    prob = sens.Problem(fitzhugh_nagumo.model(), times=np.linspace(0.0, 300.0, 20),
                        parameters={"I_ext": 0.0}, wrt=["a", "b", "I_ext", "y0.v"],
                        rtol=1e-10, atol=1e-10)
    return prob, *jacobians(prob)


def test_fitzhugh_nagumo_settles_to_the_nullcline_fixed_point(fhn):
    prob, fwd, _ = fhn
    p = {k: float(v) for k, v in prob.parameters.items()}
    fixed = fitzhugh_nagumo.fixed_points(p["a"], p["b"], p["I_ext"])
    assert fixed.shape == (1, 2)  # one resting state
    np.testing.assert_allclose(fwd.outputs[-1], fixed[0], rtol=1e-8, atol=1e-10)
    # and its sensitivities tend to those of the fixed point (implicit function theorem):
    # f(v) = -v^3/3 + (1 - 1/b) v + I - a/b = 0  =>  dv/dI = -1/f'(v), dv/da = (1/b)/f'(v)
    v = fixed[0, 0]
    fprime = -v ** 2 + 1.0 - 1.0 / p["b"]
    dv = {"I_ext": -1.0 / fprime, "a": (1.0 / p["b"]) / fprime, "y0.v": 0.0}
    for name, expected in dv.items():
        np.testing.assert_allclose(fwd.column(name)[-1, 0], expected, rtol=1e-6, atol=1e-9)


def test_fitzhugh_nagumo_forward_matches_adjoint(fhn):
    assert_jacobians_agree(*fhn[1:])


# ------------------------------------------------------------------------ two-compartment PK


def iv_bolus_concentration(t, dose, CL, V1, Q, V2):
    """Closed-form C(t) after an IV bolus `dose` into the central compartment (jax.numpy)."""
    k10, k12, k21 = CL / V1, Q / V1, Q / V2
    s, prod = k10 + k12 + k21, k10 * k21
    disc = jnp.sqrt(s * s - 4.0 * prod)
    alpha, beta = (s + disc) / 2.0, (s - disc) / 2.0
    A = dose / V1 * (alpha - k21) / (alpha - beta)
    B = dose / V1 * (k21 - beta) / (alpha - beta)
    return A * jnp.exp(-alpha * t) + B * jnp.exp(-beta * t)


@pytest.fixture(scope="module")
def pk():
    prob = sens.Problem(pk_two_compartment.model(), times=np.linspace(0.0, 48.0, 25),
                        y0={"depot": 0.0, "central": 100.0}, of=["C"],
                        wrt=["ka", "CL", "V1", "Q", "V2"], rtol=1e-10, atol=1e-12)
    return prob, *jacobians(prob)


def test_pk_iv_bolus_matches_the_biexponential(pk):
    prob, fwd, _ = pk
    p = {k: float(v) for k, v in prob.parameters.items()}
    theta = jnp.array([p["CL"], p["V1"], p["Q"], p["V2"]])
    closed = lambda th: iv_bolus_concentration(jnp.asarray(prob.times), 100.0, *th)  # noqa: E731
    np.testing.assert_allclose(fwd.outputs[:, 0], closed(theta), rtol=1e-8)
    # the sensitivities too: jax differentiates the closed form, independently of any solve
    dC = np.asarray(jax.jacfwd(closed)(theta))  # (n_times, 4)
    for j, name in enumerate(["CL", "V1", "Q", "V2"]):
        np.testing.assert_allclose(fwd.column(name)[:, 0], dC[:, j], rtol=1e-6,
                                   atol=1e-8 * np.abs(dC[:, j]).max())
    assert np.all(fwd.column("ka") == 0.0)  # nothing in the depot: ka is irrelevant


def test_pk_forward_matches_adjoint(pk):
    assert_jacobians_agree(*pk[1:])


# ------------------------------------------------------------------------------ heat_1d


@pytest.fixture(scope="module")
def heat():
    m = heat_1d.model(n=25)
    of = ["u[0]", "u[6]", "u[12]"]  # a boundary neighbour, a flank and the midpoint x = 1/2
    # n = 25 is only mildly stiff (fastest rate 4 D 26^2 ~ 2.7e3): Tsit5 takes ~300 steps
    # and compiles in half the time of Kvaerno5; robertson and reaction_chain cover "auto"
    prob = sens.Problem(m, times=np.linspace(0.0, 0.3, 16), wrt=["D", "r"], of=of,
                        solver="tsit5", rtol=1e-10, atol=1e-12)
    return prob, *jacobians(prob)


def test_heat_1d_sine_mode_decays_analytically(heat):
    prob, fwd, _ = heat
    n, (D, r) = prob.model.n_states, (float(prob.parameters["D"]), float(prob.parameters["r"]))
    idx = [prob.model.states.index(s) for s in prob.of]
    shape = np.sin(np.pi * heat_1d.grid(n))[idx]
    t = prob.times[:, None]
    rate = heat_1d.mode_decay_rate(n, D, r)  # the semi-discrete eigenvalue: exact
    exact = shape * np.exp(-rate * t)
    np.testing.assert_allclose(fwd.outputs, exact, rtol=1e-7, atol=1e-12)
    # d u / dD = -lambda_h t u and d u / dr = -t u (lambda_h the discrete eigenvalue)
    lam = heat_1d.mode_decay_rate(n, 1.0, 0.0)
    np.testing.assert_allclose(fwd.column("D"), -lam * t * exact, rtol=1e-6, atol=1e-10)
    np.testing.assert_allclose(fwd.column("r"), -t * exact, rtol=1e-6, atol=1e-10)
    # against the PDE's continuous rate D pi^2 + r: the O(h^2) rate error (pi h)^2/12 D pi^2
    # ~ 1.2e-2 here gives a relative error of about rate_err * t <= 4e-3 at t = 0.3
    continuous = shape * np.exp(-heat_1d.mode_decay_rate(n, D, r, discrete=False) * t)
    np.testing.assert_allclose(fwd.outputs, continuous, rtol=5e-3)


def test_heat_1d_forward_matches_adjoint(heat):
    assert_jacobians_agree(*heat[1:])


# ---------------------------------------------------------------------------- neural ODE


def test_neural_ode_parameter_count_and_determinism():
    m = neural_ode.model()
    assert m.n_parameter_values == neural_ode.n_weights(200) == 1002
    assert m.parameters["W1"].shape == (200, 2) and m.parameters["W2"].shape == (2, 200)
    other = neural_ode.model(width=200, seed=1)
    assert other is not m and not np.array_equal(other.parameters["W1"], m.parameters["W1"])
    again = neural_ode.init_weights(200, seed=0)
    for k, v in again.items():
        np.testing.assert_array_equal(m.parameters[k], v)
    assert neural_ode.model(width=16).n_parameter_values == 82


@pytest.fixture(scope="module")
def node():
    m = neural_ode.model(width=8)  # 42 weights: small compile, same code path
    prob = sens.Problem(m, times=np.linspace(0.0, 5.0, 10), wrt=["W1", "b1", "W2", "b2"],
                        rtol=1e-12, atol=1e-12)
    return prob


def test_neural_ode_adjoint_gradient_matches_finite_differences(node):
    prob = node
    target = np.stack([np.cos(prob.times), np.sin(prob.times)], axis=1)

    def loss_np(ys):
        return 0.5 * np.sum((ys - target) ** 2)

    g = sens.gradient(prob, lambda ys: 0.5 * jnp.sum((ys - target) ** 2), mode="adjoint")
    assert g.mode == "adjoint" and g.grad.shape == (42,)
    assert g.input_names[:2] == ("W1[0,0]", "W1[0,1]") and g.input_names[-1] == "b2[1]"
    np.testing.assert_allclose(g.value, loss_np(solve(prob)), rtol=1e-12)
    h = 1e-5
    for entry in ["W1[3,1]", "b1[5]", "W2[1,2]", "b2[0]"]:
        name, idx = entry[:2], tuple(int(i) for i in entry[3:-1].split(","))
        values = []
        for sign in (1.0, -1.0):
            w = prob.parameters[name].copy()
            w[idx] += sign * h
            values.append(loss_np(solve(prob.replace(parameters={name: w}))))
        fd = (values[0] - values[1]) / (2 * h)  # truncation O(h^2) ~ 1e-10, noise ~ tol/h ~ 1e-7
        assert abs(g.grad[g.input_names.index(entry)] - fd) <= 1e-6 * max(1.0, abs(fd)), entry


def test_neural_ode_forward_matches_adjoint(node):
    assert_jacobians_agree(*jacobians(node))


# ------------------------------------------------------------------------ reaction chain


def bateman(t: float, rates: np.ndarray) -> np.ndarray:
    """A_1 .. A_n at time t for A_1(0) = 1, in 50-digit arithmetic (the sum cancels)."""
    with mpmath.workdps(50):
        k = [mpmath.mpf(float(x)) for x in rates] + [mpmath.mpf(0)]
        out = []
        for m in range(1, len(k) + 1):
            coef = mpmath.fprod(k[: m - 1])
            total = mpmath.fsum(
                mpmath.exp(-k[i] * t) / mpmath.fprod(k[j] - k[i] for j in range(m) if j != i)
                for i in range(m))
            out.append(float(coef * total))
    return np.array(out)


@pytest.fixture(scope="module")
def chain():
    m = reaction_chain.model(n=5)
    times = np.geomspace(1e-4, 1e3, 12)
    prob = sens.Problem(m, times=times, t0=0.0, rtol=1e-10, atol=1e-13)
    return prob, *jacobians(prob)


def test_reaction_chain_matches_bateman(chain):
    prob, fwd, _ = chain
    assert prob.model.stiff
    rates = np.array([float(prob.parameters[f"k{i}"]) for i in range(1, 5)])
    assert rates.max() / rates.min() >= 1e4  # several orders of magnitude: stiff
    exact = np.array([bateman(t, rates) for t in prob.times])
    np.testing.assert_allclose(fwd.outputs, exact, rtol=1e-6, atol=1e-11)
    np.testing.assert_allclose(fwd.outputs.sum(axis=1), 1.0, rtol=1e-10)


def test_reaction_chain_forward_matches_adjoint(chain):
    assert_jacobians_agree(*chain[1:])


def test_reaction_chain_scales():
    m = reaction_chain.model(n=300)
    assert m.n_states == 300 and len(m.scalar_parameters) == 299
    dy = np.asarray(m.rhs(0.0, jnp.ones(300), {k: jnp.asarray(v) for k, v in m.parameters.items()}))
    k = reaction_chain.default_rates(300)
    np.testing.assert_allclose(dy, np.concatenate([[0.0], k]) - np.concatenate([k, [0.0]]))
