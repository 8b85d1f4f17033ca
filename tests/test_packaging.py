"""The install layout: the model library is `sensitivity.models`, never a top-level
`models` that would clash with a user's own package of that name."""

import importlib.util
import pathlib
import subprocess
import sys

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = None

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_model_library_is_a_subpackage_and_no_top_level_models(tmp_path):
    # a user's own `models` package on the path must win over nothing of ours, and ours must
    # still import as sensitivity.models
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("USERS_OWN = True\n")
    code = ("import models, sensitivity.models as lib; "
            "assert models.USERS_OWN; assert 'lotka_volterra' in lib.available(); print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.mark.skipif(tomllib is None, reason="tomllib needs Python 3.11")
def test_every_package_folder_is_listed_in_pyproject():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "sensitivity").rglob("__init__.py") if "__pycache__" not in p.parts}
    assert found <= listed, f"add these to [tool.setuptools] packages: {sorted(found - listed)}"
    assert cfg["package-dir"]["sensitivity.models"] == "models"
    assert importlib.util.find_spec("sensitivity.models") is not None


def test_public_functions_survive_importing_their_modules_and_jax_loads_late():
    # importing the modules that define sens.ensemble, fit and identifiability leaves those
    # names the functions. And a bare
    # `import sensitivity` must not import JAX (validate and models stay fast).
    code = ("import sys, sensitivity as s; assert 'jax' not in sys.modules, 'jax imported eagerly'; "
            "import sensitivity.analyses.ensemble, sensitivity.analyses.fit, sensitivity.analyses.identifiability; "
            "assert all(callable(f) and f.__name__ == n for n, f in "
            "[('ensemble', s.ensemble), ('fit', s.fit), ('identifiability', s.identifiability), "
            "('sobol', s.sobol), ('Dose', s.Dose)]), 'a public name is a module'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
