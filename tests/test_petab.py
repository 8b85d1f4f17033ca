"""PEtab import against AMICI's published reference log-likelihoods of five problems of the
PEtab benchmark collection (../shared/petab, next to the repository; skipped when absent).

Cheap properties on all five (one compile each: the nllh function, shared with simulate):
nllh at the nominal parameters equals -llh_ref to 1e-3 absolute, and equals the `petab`
package's own likelihood of our simulation table. Expensive ones on Boehm only (the
smallest): forward vs adjoint gradient to 1e-6 relative, and the gradient vs central finite
differences of nllh (at rtol = atol = 1e-11, where FD is accurate) to 1e-4 relative.
"""

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "petab"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"PEtab test problems not found at {DATA} "
                                "(they live next to the repository, not in it)")

# AMICI's reference llh (README of the test data) and options of the load: all five at the
# default tolerances, as a user loads them (Fujita's states span 1e-3 .. 1e7: Kvaerno5 needs
# atol = 1e-12 there, the default Rodas5P loop meets the reference to 1e-6 at atol = 1e-8).
REFERENCE = {
    "Boehm_JProteomeRes2014": (-138.221997, {}),
    "Brannmark_JBC2010": (-141.889114, {}),
    "Elowitz_Nature2000": (63.202800, {}),
    "Fujita_SciSignal2010": (53.083777, {}),
    "Schwen_PONE2014": (-943.999299, {}),
}


def _load(name, **options):
    from sensitivity.importers import petab
    return petab.load(DATA / name / f"{name}.yaml", **options)


@pytest.fixture(scope="module", params=sorted(REFERENCE))
def problem(request):
    name = request.param
    return name, _load(name, **REFERENCE[name][1])


def test_nllh_matches_amici_reference(problem):
    name, prob = problem
    llh_ref = REFERENCE[name][0]
    assert abs(prob.nllh() - (-llh_ref)) < 1e-3


def test_nllh_equals_petab_likelihood_of_our_simulation(problem):
    import petab.v1 as pv1
    name, prob = problem
    sim = prob.simulate()
    P = prob.petab
    assert sim.shape[0] == P.measurement_df.shape[0] and np.isfinite(sim["simulation"]).all()
    llh = pv1.calculate_llh(P.measurement_df, sim, P.observable_df, P.parameter_df)
    assert abs(prob.nllh() + llh) < 1e-8 * max(1.0, abs(llh))


@pytest.fixture(scope="module")
def boehm():
    return _load("Boehm_JProteomeRes2014")


def test_forward_and_adjoint_gradients_agree(boehm):
    gf = boehm.gradient(mode="forward")
    ga = boehm.gradient(mode="adjoint")
    assert gf.mode == "forward" and ga.mode == "adjoint"
    assert abs(gf.value - ga.value) < 1e-10
    assert np.linalg.norm(gf.grad - ga.grad) < 1e-6 * np.linalg.norm(gf.grad)


def test_gradient_matches_central_differences(boehm):
    # same files: the compiled functions are shared; tolerances are arguments
    tight = _load("Boehm_JProteomeRes2014", rtol=1e-11, atol=1e-11)
    x = tight.x_nominal
    g = tight.gradient(x, mode="forward").grad
    h = 1e-5  # truncation error ~1e-5 relative here (1.7e-4 at h = 1e-4)
    fd = np.array([(tight.nllh(x + h * e) - tight.nllh(x - h * e)) / (2 * h) for e in np.eye(x.size)])
    assert np.linalg.norm(fd - g) < 1e-4 * np.linalg.norm(g)


def test_fisher_matches_finite_difference_sensitivities(boehm):
    # Gaussian noise: F = J_mu^T W J_mu + 2 J_s^T W J_s, W = diag(1 / sigma^2). Boehm's sigma
    # is the row's noise parameter (log10 scale: d sigma / d x = sigma ln 10); J_mu by
    # central differences of the simulation table at tight tolerances.
    F = boehm.fisher()
    n = len(boehm.x_names)
    assert F.shape == (n, n) and np.allclose(F, F.T, rtol=1e-10, atol=1e-12)
    tight = _load("Boehm_JProteomeRes2014", rtol=1e-11, atol=1e-11)
    x, h = tight.x_nominal, 1e-5
    J_mu = np.stack([(tight.simulate(x + h * e)["simulation"].to_numpy()
                      - tight.simulate(x - h * e)["simulation"].to_numpy()) / (2 * h) for e in np.eye(n)], 1)
    noise = tight.measurements["noiseParameters"].astype(str).to_list()
    theta = dict(zip(tight.theta_names, tight.theta_nominal))
    sigma = np.array([theta[k] for k in noise])
    J_s = np.array([[sigma[i] * np.log(10) * (name == noise[i]) for name in tight.x_names]
                    for i in range(len(noise))])
    W = 1 / sigma ** 2
    F_fd = (J_mu.T * W) @ J_mu + 2 * (J_s.T * W) @ J_s
    assert np.linalg.norm(F - F_fd) < 1e-4 * np.linalg.norm(F_fd)


def test_auto_mode_is_one_of_the_modes_and_gives_the_same_gradient(boehm):
    g = boehm.gradient(mode="auto")
    ref = boehm.gradient(mode="forward")
    assert g.mode in ("forward", "adjoint") and g.plan is not None
    assert np.allclose(g.grad, ref.grad, rtol=1e-6, atol=1e-12)


def test_bad_inputs_raise_clear_errors(boehm):
    from sensitivity import InputError
    with pytest.raises(InputError, match="x has shape"):
        boehm.nllh(np.zeros(3))
    with pytest.raises(InputError, match="mode"):
        boehm.gradient(mode="sideways")
    with pytest.raises(InputError, match="not found"):
        _load("No_Such_Problem")


def test_schwen_priors_are_normal_on_the_parameter_scale():
    # Schwen's table: parameterScaleNormal priors (mean; sd) on six log10 parameters
    from scipy.stats import norm
    prob = _load("Schwen_PONE2014")
    pdf = prob.petab.parameter_df
    x = prob.x_nominal + 0.1
    want = 0.0
    for i, name in enumerate(prob.x_names):
        kind = pdf.loc[name, "objectivePriorType"]
        if isinstance(kind, str) and kind:
            mean, sd = (float(v) for v in pdf.loc[name, "objectivePriorParameters"].split(";"))
            want -= norm.logpdf(x[i], mean, sd)
    value, grad = prob.prior(x)
    assert len(prob.priors) == 6 and value == pytest.approx(want, rel=1e-12)


def test_the_progress_line_names_the_program_and_a_duration_by_size(boehm, capsys):
    from sensitivity.importers import petab as petab_import

    boehm._say_compiling(("grad", "forward"))
    line = capsys.readouterr().err
    assert "compiling the gradient (forward mode) of PEtab problem 'Boehm_JProteomeRes2014' (8 states" in line
    assert "about 5-30 s" in line
    # the rules of rates held as arrays do not grow the program; hundreds of states do
    assert petab_import._first_call_guess(124, 677) == "a few minutes"
    assert petab_import._first_call_guess(124, 677, arrays=True) == "about 20 s to a minute"
    assert petab_import._first_call_guess(500, 835, arrays=True).startswith("many minutes")


def test_dense_output_by_the_number_of_save_times_against_the_landing_steps(monkeypatch):
    """An experiment with at least DENSE_SAVES_FROM save times saves by Rodas5P's dense output
    (fewer steps), fewer lands a step on each; both give the same nllh and gradients to
    the tolerance, forward and adjoint agreeing."""
    from sensitivity.importers import petab

    prob = _load("Boehm_JProteomeRes2014")  # 16 save times in its one experiment
    assert prob._save() == "step"
    x = prob.x_nominal
    step = prob.gradient(x, mode="forward")
    monkeypatch.setattr(petab, "DENSE_SAVES_FROM", 10)
    assert prob._save() == "dense"
    fwd, adj = prob.gradient(x, mode="forward"), prob.gradient(x, mode="adjoint")
    assert fwd.value != step.value  # another discrete solve ran
    assert abs(fwd.value - step.value) < 1e-5 * abs(step.value)
    np.testing.assert_allclose(fwd.grad, step.grad, rtol=1e-3, atol=1e-4 * np.max(np.abs(step.grad)))
    np.testing.assert_allclose(adj.grad, fwd.grad, rtol=1e-8, atol=1e-10)
    prob.save = "step"  # an explicit choice wins
    assert prob._save() == "step"


def test_auto_plan_costs_a_tangent_by_the_states_of_one_condition(problem):
    """The lean loop's tangent cost follows the model's states, not the batch of all
    conditions' states (Brannmark: 9 states, 8 conditions, 22 parameters is a forward
    problem: forward 0.58x the adjoint's time in `benchmarks/petab.py --modes ...`)."""
    from sensitivity.solvers import lean_rodas
    name, prob = problem
    plan = prob._auto_plan()
    assert plan.calibration.tangent == lean_rodas.calibration(len(prob.model.states))["tangent"]
    if name == "Brannmark_JBC2010":
        assert plan.mode == "forward", plan.explain()


def test_stages_scanned_for_many_states_or_a_large_rhs(boehm):
    """Unrolled stages for a small rhs (XLA fuses them: faster calls), scanned for a large
    one (Giordano: 10 states but 30 assignment rules; one rhs copy per role compiles faster)."""
    from sensitivity.importers import petab
    assert not boehm._scan() and petab.rhs_equations(boehm.model) < petab.SCAN_RHS_EQUATIONS_FROM
    name = "Giordano_Nature2020"
    if not (DATA / name).is_dir():
        pytest.skip(f"{DATA / name} not present")
    big = _load(name)
    assert len(big.model.states) < petab.SCAN_STAGES_FROM and big._scan()
