"""The disk record of checked models (`sensitivity/check_store.py`): a warm `validate` and
`models` do not import JAX, and a model whose code changed is evaluated again.

Each case runs fresh processes with a temporary cache folder (XDG_CACHE_HOME), since what
is tested is what a later process finds on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
import sensitivity as sens
from sensitivity.core.lazy import LazyModule

jnp = LazyModule("jax.numpy")  # as the library models do: JAX only when the rhs is evaluated


def rhs(t, y, p):
    return jnp.stack([-p["k"] * y[0], p["k"] * y[0]])


def model():
    return sens.ODEModel("decay", ["a", "b"], {"k": 0.5}, rhs, [1.0, 0.0])
"""

# the same model with a fault in its rhs: one derivative for two states
BAD = GOOD.replace('jnp.stack([-p["k"] * y[0], p["k"] * y[0]])', 'jnp.stack([-p["k"] * y[0]])')


def _run(code: str, cache: Path, cwd: Path = ROOT) -> dict:
    """Run `code` in a new process; it prints a JSON dict as its last line."""
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    env.pop("SENSITIVITY_NO_DISK_CACHE", None)
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


VALIDATE = """
import contextlib, io, json, sys
from sensitivity.app import cli
with contextlib.redirect_stdout(io.StringIO()):
    code = cli.main(["validate", "configs/lotka_volterra.yaml"])
    models_code = cli.main(["models"])
print(json.dumps({"code": code, "models": models_code, "jax": "jax" in sys.modules}))
"""


def test_a_warm_validate_and_models_do_not_import_jax(tmp_path):
    first = _run(VALIDATE, tmp_path / "cache")
    assert first == {"code": 0, "models": 0, "jax": True}  # the first process evaluates the models
    second = _run(VALIDATE, tmp_path / "cache")
    assert second == {"code": 0, "models": 0, "jax": False}
    # without the disk cache every process evaluates them
    env_off = VALIDATE.replace("import contextlib", "import os; os.environ['SENSITIVITY_NO_DISK_CACHE'] = '1'\nimport contextlib")
    assert _run(env_off, tmp_path / "cache")["jax"] is True


LOAD = """
import json, sys
from sensitivity import models, ModelError
try:
    models.load("model_file.py:model")
    print(json.dumps({"error": None, "jax": "jax" in sys.modules}))
except ModelError as exc:
    print(json.dumps({"error": str(exc), "jax": "jax" in sys.modules}))
"""


def test_a_changed_model_is_checked_again(tmp_path):
    cache = tmp_path / "cache"
    path = tmp_path / "model_file.py"
    path.write_text(GOOD)
    assert _run(LOAD, cache, tmp_path) == {"error": None, "jax": True}
    assert _run(LOAD, cache, tmp_path)["jax"] is False  # recorded: not evaluated again
    path.write_text(BAD)  # same name, same path, new code
    bad = _run(LOAD, cache, tmp_path)
    assert bad["error"] and "rhs" in bad["error"] and "model_file.py" in bad["error"], bad
    assert _run(LOAD, cache, tmp_path)["error"], "a failed check must not be recorded"
    path.write_text(GOOD)
    assert _run(LOAD, cache, tmp_path) == {"error": None, "jax": False}  # the good code's record
