"""The guard on the numbers a user reads (sensitivity.core.checks.numbers): it warns on
constructed absurd gradients, Jacobians and Fisher matrices, names the input, and stays
silent on sound ones; end to end through a custom_jvp whose derivative is 1e15 x too big."""

from __future__ import annotations

import warnings
from pathlib import Path

import jax
import numpy as np
import pytest

import sensitivity as sens
from sensitivity.core.checks import numbers

NAMES = ["a", "b", "c", "d"]


def test_absurd_component_is_named():
    with pytest.warns(sens.NumericalWarning, match=r"c = 1\.5e\+43.*check_gradient\(problem, objective, "
                                                   r"inputs=\['c'\]\)"):
        assert numbers.check_vector([1.0, -2.0, 1.5e43, 0.3], NAMES) == ["c"]


def test_non_finite_component_is_named():
    with pytest.warns(sens.NumericalWarning, match="non-finite component for b"):
        assert numbers.check_vector([1.0, np.nan, 2.0, 3.0], NAMES) == ["b"]


def test_sound_results_are_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # components spanning 1e9 are a model's business, not the guard's
        assert numbers.check_vector([1e4, -2.0, 3e-5, 0.0], NAMES) == []
        # d/dp of an input in other units: 1e12 apart raw, alike once scaled by the values
        assert numbers.check_vector([1e12, 1.0, 2.0, 1.0], NAMES, input_values=[1e-12, 1.0, 1.0, 3.0]) == []
        J = np.random.default_rng(0).standard_normal((5, 2, 4))
        J[:, 1, :] *= 1e8  # one output in other units
        assert numbers.check_jacobian(J, NAMES, outputs=["x", "y"]) == []
        S = np.random.default_rng(1).standard_normal((10, 4))
        assert numbers.check_matrix(S.T @ S, NAMES) == []
        # rounding-sized negative eigenvalue of a singular Fisher matrix
        v = np.array([1.0, 2.0, 3.0, 4.0])
        assert numbers.check_matrix(np.outer(v, v) - 1e-14 * np.eye(4), NAMES) == []


def test_an_input_that_barely_matters_is_no_reason_to_warn():
    """Beside two inputs of negligible influence, a sound component exceeds 1e10 x the
    median; against the function's own value (d f / d ln p vs |f|) it is ordinary."""
    g = [1e3, 1e-8, 1e-9, 0.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert numbers.check_vector(g, NAMES, value=10.0) == []
        J = np.zeros((3, 1, 4))
        J[:, 0, :] = g
        assert numbers.check_jacobian(J, NAMES, output_values=np.full((3, 1), 10.0)) == []
    with pytest.warns(sens.NumericalWarning, match="a = 1e\\+03"):
        numbers.check_vector(g, NAMES)  # the median alone would call it absurd
    with pytest.warns(sens.NumericalWarning, match="value 1e-08 itself"):
        numbers.check_vector(g, NAMES, value=1e-8)


def test_scale_is_the_inputs_value():
    # 1e12 beside 1 in raw units is absurd unless the input's value explains it
    with pytest.warns(sens.NumericalWarning, match="a = 1e\\+12"):
        numbers.check_vector([1e12, 1.0, 2.0, 1.0], NAMES, input_values=[1.0, 1.0, 1.0, 3.0])


def test_jacobian_per_output():
    J = np.ones((5, 2, 4))
    J[3, 1, 2] = 1e30
    with pytest.warns(sens.NumericalWarning, match=r"c = 1e\+30.*output y"):
        assert numbers.check_jacobian(J, NAMES, outputs=["x", "y"]) == ["c"]


def test_fisher_with_negative_eigenvalues_and_absurd_diagonal():
    F = np.diag([1.0, 2.0, 3.0, 4.0])
    F[0, 1] = F[1, 0] = 3.0  # eigenvalue 1.5 - sqrt(9.25) = -1.54: not a Gram matrix
    with pytest.warns(sens.NumericalWarning, match="eigenvalue -1.54.*loads on a, b"):
        assert numbers.check_matrix(F, NAMES) == ["a", "b"]
    with pytest.warns(sens.NumericalWarning, match="d: 1e\\+276"):
        numbers.check_matrix(np.diag([1.0, 2.0, 3.0, 1e276]), NAMES)


# --------------------------------------------------------------------------- end to end
@jax.custom_jvp
def _absurd(c):
    return c


@_absurd.defjvp
def _absurd_jvp(primals, tangents):
    return primals[0], 1e15 * tangents[0]


def _rhs(t, y, p):
    return -p["k"] * y + _absurd(p["c"])


@pytest.fixture(scope="module")
def broken():
    model = sens.ODEModel("inflow", ["y"], {"k": 0.5, "c": 0.3}, _rhs, [2.0])
    return sens.Problem(model, np.linspace(0, 4, 9), wrt=["k", "c", "y0.y"], rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("mode", ["forward", "adjoint"])
def test_absurd_gradient_warns_with_the_input_and_the_check(broken, mode):
    with pytest.warns(sens.NumericalWarning, match=rf"gradient \({mode} mode\): component c = .*"
                                                   r"inputs=\['c'\]\).*tighter tolerances") as rec:
        sens.gradient(broken, lambda ys: ys[-1, 0], mode=mode)
    assert Path(rec[0].filename).resolve() == Path(__file__).resolve()  # points at the caller


def test_absurd_jacobian_and_fisher_warn(broken):
    with pytest.warns(sens.NumericalWarning, match="Jacobian: .*c = "):
        sens.jacobian(broken, mode="forward")
    with pytest.warns(sens.NumericalWarning) as rec:
        sens.fisher(broken, sigma=0.1)
    assert any("Fisher information (log scale)" in str(w.message) and "'c'" in str(w.message) for w in rec)


def test_the_test_suite_fails_on_the_warning():
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    section = text.split("[tool.pytest.ini_options]")[1].split("\n[")[0]
    assert 'filterwarnings = ["error::sensitivity.core.errors.NumericalWarning"]' in section


# --------------------------------------------------------------------------- XLA's log lines
def test_a_slow_compile_is_reported_once_in_our_words(monkeypatch, capsys):
    import jax.monitoring

    from sensitivity.core import compile_watch

    sens.jacobian  # noqa: B018 (loading the API registers the listener)
    monkeypatch.setitem(compile_watch._STATE, "reported", False)
    monkeypatch.setenv("SENSITIVITY_SLOW_COMPILE_SECONDS", "30")
    jax.monitoring.record_event_duration_secs(compile_watch.BACKEND_COMPILE_EVENT, 5.0, fun_name="quick")
    assert capsys.readouterr().err == ""
    jax.monitoring.record_event_duration_secs(compile_watch.BACKEND_COMPILE_EVENT, 95.0, fun_name="solve")
    jax.monitoring.record_event_duration_secs(compile_watch.BACKEND_COMPILE_EVENT, 120.0, fun_name="again")
    jax.monitoring.record_event_duration_secs("/jax/other", 500.0)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sensitivity: a compile took 95 s")


def _xla_error_lines(env: dict) -> str:
    """stderr of a process that imports sensitivity, then makes XLA log C++ errors (a dump
    folder it cannot create)."""
    import os
    import subprocess
    import sys

    code = "import sensitivity, jax, jax.numpy as jnp; jax.jit(lambda x: 2 * x)(jnp.ones(2)).block_until_ready()"
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "SENSITIVITY_XLA_LOGS")} | env
    env["XLA_FLAGS"] = "--xla_dump_to=/proc/1/cannot-be-created"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300).stderr


def test_xla_log_lines_do_not_reach_the_terminal():
    assert "dump.cc" in _xla_error_lines({"SENSITIVITY_XLA_LOGS": "1"})  # the lines exist ...
    assert "dump.cc" not in _xla_error_lines({})  # ... and are silenced by default


def test_petab_gradient_weighs_against_the_nllh():
    """Perelson_Science1996 at its nominal parameters: the noise parameter's gradient
    beside two near-zero kinetic ones; against the nllh (432) it is ordinary."""
    class Problem:
        x_names, scales = ("c", "delta", "sd_V"), ("log10", "log10", "lin")

    grad, x = [3e-11, -9e-11, 36.8], np.array([0.5, -0.3, 1.2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert numbers.check_petab(Problem(), x, gradient=grad, value=432.0) == []
    with pytest.warns(sens.NumericalWarning, match=r"petab_problem, inputs=\['sd_V'\]"):
        numbers.check_petab(Problem(), x, gradient=[3e-11, -9e-11, 1e40], value=432.0)


def test_petab_fisher_far_from_the_data_weighs_against_the_number_of_measurements():
    """Fujita_SciSignal2010 at a random start within the bounds: the simulations are near 0,
    13 of 19 parameters have a sensitivity at rounding level (sqrt F_ii 1e-26 .. 1e-17), the
    other 6 about 1e-4 (sqrt F_ii, central differences agree): the median rule alone flags
    the 6; against sqrt(rows) they are ordinary. Built here as J^T J from columns of those
    sizes."""
    rng = np.random.default_rng(3)
    rows, sizes = 120, np.r_[10.0 ** rng.uniform(-26, -17, 13), 10.0 ** rng.uniform(-4.5, -3.3, 6)]
    J = rng.standard_normal((rows, 19))
    J *= sizes / np.linalg.norm(J, axis=0)

    class Problem:
        x_names, scales = tuple(f"k{i}" for i in range(19)), ("log10",) * 19
        measurements = range(rows)

    x, F = np.zeros(19), J.T @ J
    assert np.allclose(np.sqrt(np.diag(F)), sizes)
    with pytest.warns(sens.NumericalWarning, match="k13"):
        numbers.check_matrix(F, Problem.x_names)  # the median (1e-20 or so) alone would call it absurd
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert numbers.check_petab(Problem(), x, fisher=F) == []
    J[:, 15] *= 1e18  # a derivative 1e18 x too big stands out against sqrt(rows) too
    with pytest.warns(sens.NumericalWarning, match=r"k15: .*own scale 11\. .*inputs=\['k15'\]"):
        assert numbers.check_petab(Problem(), x, fisher=J.T @ J) == ["k15"]
