"""Compiled functions are cached per problem structure; new values do not recompile."""

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np

import sensitivity as sens
from sensitivity.integrate import compiled


def rhs(t, y, p):
    return jnp.stack([-p["k"] * y[0] + p["c"], p["k"] * y[0] - y[1]])


def test_new_values_reuse_the_compiled_function():
    model = sens.ODEModel("cache_probe", ["a", "b"], {"k": 0.7, "c": 0.1}, rhs, [1.0, 0.0])
    prob = sens.Problem(model, np.linspace(0, 3, 12), wrt=["k", "y0.a"])
    first = sens.jacobian(prob, mode="forward")
    assert first.timings["compile"] > 0
    moved = prob.replace(parameters={"k": 1.3, "c": 0.2}, y0={"a": 2.0}, times=np.linspace(0, 4, 12),
                         rtol=1e-6)
    second = sens.jacobian(moved, mode="forward")
    assert second.timings["compile"] == 0.0
    assert not np.allclose(first.values, second.values)  # it really ran with the new values
    # and a changed structure (another wrt) compiles anew
    third = sens.jacobian(prob.replace(wrt=["k"]), mode="forward")
    assert third.timings["compile"] > 0


def test_simulate_compiles_its_first_settings_in_and_one_general_program_for_the_rest():
    model = sens.ODEModel("simulate_cache_probe", ["a", "b"], {"k": 0.7, "c": 0.1}, rhs, [1.0, 0.0])
    prob = sens.Problem(model, np.linspace(0, 3, 12))
    first = sens.simulate(prob)
    assert first.timings["compile"] > 0
    new_values = sens.simulate(prob.replace(parameters={"k": 1.3, "c": 0.2}, y0={"a": 2.0}))
    assert new_values.timings["compile"] == 0.0
    assert not np.allclose(first.states, new_values.states)  # it really ran with the new values
    # new settings: the first were compiled in, so one general program is compiled, and it
    # serves every further time grid and tolerance
    second = sens.simulate(prob.replace(times=np.linspace(0, 4, 12), rtol=1e-6))
    assert second.timings["compile"] > 0
    third = sens.simulate(prob.replace(times=np.linspace(0, 5, 12), atol=1e-9))
    assert third.timings["compile"] == 0.0
    assert not np.allclose(third.states[-1], first.states[-1])  # t = 5, not t = 3
    np.testing.assert_allclose(sens.simulate(prob).states, first.states, rtol=0, atol=0)


def test_settings_compiled_in_give_the_numbers_of_the_general_program():
    """The same settings through the general program (arrays) in one structure and
    compiled in as constants in another (a model of another name): same numbers."""
    def model(name):
        return sens.ODEModel(name, ["a", "b"], {"k": 0.7, "c": 0.1}, rhs, [1.0, 0.0])
    times = np.linspace(0, 4, 12)
    sens.simulate(sens.Problem(model("settings_probe_general"), np.linspace(0, 2, 12)))  # takes the first slot
    general = sens.simulate(sens.Problem(model("settings_probe_general"), times, rtol=1e-9, atol=1e-11))
    constant = sens.simulate(sens.Problem(model("settings_probe_constant"), times, rtol=1e-9, atol=1e-11))
    assert general.timings["compile"] > 0 and constant.timings["compile"] > 0
    np.testing.assert_allclose(general.states, constant.states, rtol=1e-13, atol=1e-15)
    assert general.stats == constant.stats


def test_a_small_models_simulate_runs_inline():
    """XLA's CPU client runs a program on the calling thread only below 1000 flops of cost
    analysis; with its settings compiled in and finiteness checked on the host, a small
    model's solve with 1000 save times stays there (with the times as an array it counts
    over 10,000, and every call pays a thread hand-off)."""
    model = sens.ODEModel("inline_probe", ["a", "b"], {"k": 0.7, "c": 0.1}, rhs, [1.0, 0.0])
    run = sens.simulate(sens.Problem(model, np.linspace(0, 3, 1000)))
    assert run.timings["compile"] > 0
    executable = list(compiled._CACHE.values())[-1][0]  # the one just compiled
    analysis = executable.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, list) else analysis
    assert analysis["flops"] < 1000, analysis["flops"]


def test_two_model_instances_from_one_factory_share_compiled_functions():
    def make():
        return sens.ODEModel("cache_probe2", ["a", "b"], {"k": 0.7, "c": 0.1}, rhs, [1.0, 0.0])
    times = np.linspace(0, 1, 5)
    first = sens.simulate(sens.Problem(make(), times))
    second = sens.simulate(sens.Problem(make(), times, parameters={"k": 2.0}))
    assert first.timings["compile"] > 0 and second.timings["compile"] == 0.0
    assert second.states[-1, 0] < first.states[-1, 0]


def test_persistent_cache_is_written_to_the_user_cache_folder(tmp_path):
    code = (
        "import numpy as np, jax.numpy as jnp, sensitivity as sens\n"
        "m = sens.ODEModel('disk', ['y'], {'k': 0.3}, lambda t, y, p: -p['k'] * jnp.sin(y), [1.0])\n"
        "sens.jacobian(sens.Problem(m, np.linspace(0, 1, 7)), mode='adjoint')\n"
    )
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path))
    env.pop("SENSITIVITY_NO_DISK_CACHE", None)
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    written = list((tmp_path / "sensitivity" / "jax").iterdir())
    assert written, "no compiled executable was written to the persistent cache"
