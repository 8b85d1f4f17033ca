"""The store of traced programs: a second process (or a cleared cache) skips tracing, and
its fingerprints change with the code and are stable across processes."""

import subprocess
import sys
import textwrap

import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens
from sensitivity.integrate import compiled
from sensitivity.stores import programs as export_store

RATE = 0.3


def rhs(t, y, p):
    return -p["k"] * jnp.sin(y) * RATE


def make_problem():
    model = sens.ODEModel("store_probe", ["y"], {"k": 0.8}, rhs, [1.0])
    return sens.Problem(model, np.linspace(0.0, 1.0, 6))


def test_a_stored_program_is_used_without_tracing(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv("SENSITIVITY_NO_EXPORT_STORE", raising=False)
    monkeypatch.delenv("SENSITIVITY_NO_DISK_CACHE", raising=False)
    prob = make_problem()
    first = sens.jacobian(prob, mode="forward")
    assert list((tmp_path / "sensitivity" / "exported").glob("*.jaxexport"))
    compiled.clear()
    from sensitivity.ad import forward

    def no_tracing(*a, **k):
        raise AssertionError("traced again although the program was stored")

    monkeypatch.setattr(forward, "push", no_tracing)  # tracing the Jacobian would call it
    again = sens.jacobian(prob, mode="forward")
    np.testing.assert_array_equal(again.values, first.values)
    # and the stored program computes the derivative: a central difference, h = 1e-6
    h = 1e-6
    up = sens.simulate(prob.replace(parameters={"k": 0.8 + h})).states[-1, 0]
    down = sens.simulate(prob.replace(parameters={"k": 0.8 - h})).states[-1, 0]
    assert again.values[-1, 0, 0] == pytest.approx((up - down) / (2 * h), rel=1e-6)


def _digest_in_subprocess(code_change: str = "") -> str:
    script = textwrap.dedent(f"""
        import numpy as np, jax.numpy as jnp, sensitivity as sens, sys
        sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r})
        import test_export_store as t
        {code_change}
        from sensitivity.stores import programs as export_store
        p = t.make_problem()
        print(export_store.fingerprint(p.structure_key(fn="x")))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120)
    return out.stdout.strip().splitlines()[-1]


def test_fingerprints_are_stable_across_processes_and_follow_the_code():
    here = export_store.fingerprint(make_problem().structure_key(fn="x"))
    assert here is not None and len(here) == 64
    assert _digest_in_subprocess() == here
    # a global the rhs reads changes the program: a new fingerprint
    assert _digest_in_subprocess("t.RATE = 0.5") != here


def test_functions_without_a_source_file_are_not_stored():
    namespace: dict = {}
    exec("f = lambda t, y, p: -y", {"jnp": jnp}, namespace)  # no file: cannot be fingerprinted
    model = sens.ODEModel("store_lambda", ["y"], {"k": 1.0}, namespace["f"], [1.0])
    assert export_store.fingerprint(sens.Problem(model, [0.0, 1.0]).structure_key()) is None


def test_equinox_imported_first_still_gives_programs_without_host_callbacks(tmp_path):
    """equinox reads EQX_ON_ERROR when imported: imported before the toolkit, it would put
    host callbacks into the programs (no export, JAX's slow Python call path)."""
    script = textwrap.dedent("""
        import equinox, diffrax  # before the toolkit
        import numpy as np, jax.numpy as jnp, sys
        import sensitivity as sens
        from sensitivity.integrate import compiled
        sys.path.insert(0, %r)
        import test_export_store as t
        sens.gradient(t.make_problem(), lambda ys: jnp.sum(ys ** 2), mode="adjoint")
        exe, _ = next(iter(compiled._CACHE.values()))
        print(exe._executable.unsafe_call.has_host_callbacks)
    """ % str(__file__.rsplit("/", 1)[0]))
    env = dict(__import__("os").environ, XDG_CACHE_HOME=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         timeout=300, env=env)
    assert out.stdout.strip().splitlines()[-1] == "False"
