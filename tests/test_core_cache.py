"""Compiled functions are cached per problem structure; new values do not recompile."""

import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np

import sensitivity as sens


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
