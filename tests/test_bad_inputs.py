"""A catalogue of bad inputs, through the Python API and the command line.

Every row is a mistake a user makes: a config key, a value, a shape, a fault in their own
model code, a data file, an output path, Ctrl-C. Each must be rejected with the right
error class (API) and exit status (CLI: 2 bad input, 1 a failed run, 3 only a toolkit bug,
130 interrupted), a message holding the key words a user acts on, no traceback, nothing
half-written on disk, and, where the fault is knowable before compiling, within 2 s and
before anything compiles (the toolkit's cache of compiled functions does not grow).

The CLI cases run in-process through `cli.main([...])` (a fresh process costs seconds of
imports); two real subprocesses check the exit status end to end.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import sensitivity as sens
from sensitivity import ConfigError, InputError, ModelError, SolverError, models
from sensitivity.app import cli
from sensitivity.app.config import run as config
from sensitivity.app.output.files import check_output_dir
from sensitivity.core.errors import OutputPathError
from sensitivity.integrate import compiled

FAST = 2.0  # seconds: a fault knowable before compiling is rejected within this


# --------------------------------------------------------------------------- helpers
def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def run_main(capsys, *args) -> tuple[int, str, str, float, int]:
    """cli.main in-process: (status, stdout, stderr, seconds, functions compiled)."""
    capsys.readouterr()
    n_compiled = len(compiled._CACHE)
    start = time.perf_counter()
    code = cli.main([str(a) for a in args])
    took = time.perf_counter() - start
    out, err = capsys.readouterr()
    return code, out, err, took, len(compiled._CACHE) - n_compiled


def assert_nothing_left(out: Path) -> None:
    """No result folder, no partial folder beside it, no write-test leftovers."""
    assert not out.exists(), list(out.iterdir()) if out.is_dir() else out
    parent = out.parent
    if parent.is_dir():
        left = [p.name for p in parent.iterdir() if p.name.startswith((f".{out.name}.", ".sensitivity-write-test"))]
        assert left == [], left


def assert_fast_clean(code, err, took, n_compiled, status=2, words=()):
    assert code == status, err
    assert "Traceback" not in err and "internal error" not in err, err
    assert err.count("sensitivity: error") == 1, err  # one message
    for w in words:
        assert w in err, (w, err)
    assert took < FAST, f"took {took:.2f} s"
    assert n_compiled == 0, "compiled before rejecting"


# --------------------------------------------------------------------------- model code
MODEL_FILE = '''
import math

import jax.numpy as jnp
import jax.numpy as jnp
import numpy as np

import sensitivity as sens


def rhs(t, y, p):
{body}


def model():
    return sens.ODEModel("{name}", ["a", "b"], {{"k": 0.5, "c": 1.0}}, rhs, [1.0, 2.0]{extra})
'''
RHS_LINE = 1 + textwrap.dedent(MODEL_FILE).lstrip("\n").splitlines().index("def rhs(t, y, p):")

# name: (rhs body, extra ODEModel arguments, the user's faulty line (None: the def line), key words)
CODE_FAULTS = {
    "wrong_shape": ("    return jnp.stack([-p['k'] * y[0], y[1], y[0]])", "", None,
                    ["shape (3,)", "expected shape (2,)", "one derivative per state"]),
    "raises": ("    raise RuntimeError('rate table missing')", "", "raise RuntimeError",
               ["raised RuntimeError", "rate table missing"]),
    "misspelt_parameter": ("    return -p['kk'] * y", "", "p['kk']",
                           ["reads parameter 'kk'", "did you mean 'k'?", "parameters: k, c"]),
    "if_on_traced_time": ("    if t < 5:\n        return -p['k'] * y\n    return y", "", "if t < 5",
                          ["`if`", "jnp.where", "jax.lax.cond"]),
    "if_on_traced_state": ("    if y[0] > 0:\n        return -p['k'] * y\n    return y", "", "if y[0] > 0",
                           ["`if`", "jnp.where"]),
    "numpy_on_traced": ("    return -p['k'] * np.exp(y)", "", "np.exp",
                        ["NumPy", "use jax.numpy"]),
    "math_on_traced": ("    return -p['k'] * math.exp(y[0]) * y", "", "math.exp",
                       ["`math` module", "jax.numpy"]),
    "in_place_assignment": ("    dy = jnp.zeros(2)\n    dy[0] = -p['k'] * y[0]\n    return dy", "", "dy[0] =",
                            ["in-place assignment", ".at[i].set(v)"]),
    "missing_return": ("    -p['k'] * y", "", None, ["returned None", "`return` missing"]),
    "complex_output": ("    return -p['k'] * y * 1j", "", None, ["complex", "real (float) values"]),
    "observable_not_scalar": ("    return -p['k'] * y", ", observables={'total': lambda t, y, p: y}", "observables=",
                              ["observable 'total'", "shape (2,)", "expected a scalar"]),
}


def model_file(folder: Path, case: str) -> Path:
    body, extra, _, _ = CODE_FAULTS[case]
    return write(folder / f"{case}.py", MODEL_FILE.format(body=body, name=case, extra=extra))


def fault_line(path: Path, case: str) -> int:
    marker = CODE_FAULTS[case][2]
    if marker is None:
        return RHS_LINE
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if marker in line)


def assert_blames_user_line(message: str, path: Path, case: str) -> None:
    assert f"{path.name}:{fault_line(path, case)}" in message, message
    assert f"model '{case}'" in message and ("`rhs`" in message or "observable 'total'" in message), message
    for internal in ("/jax/", "/equinox/", "/diffrax/", "model.py", "model_check.py", "site-packages"):
        assert internal not in message, (internal, message)


@pytest.mark.parametrize("case", sorted(CODE_FAULTS))
def test_model_code_fault_api(tmp_path, case):
    path = model_file(tmp_path, case)
    start = time.perf_counter()
    with pytest.raises(ModelError) as err:
        models.load(f"{path}:model")
    assert time.perf_counter() - start < FAST
    message = str(err.value)
    for w in CODE_FAULTS[case][3]:
        assert w in message, (w, message)
    assert_blames_user_line(message, path, case)


@pytest.mark.parametrize("case", sorted(CODE_FAULTS))
def test_model_code_fault_cli(tmp_path, capsys, case):
    path = model_file(tmp_path, case)
    cfg = write(tmp_path / "c.yaml", f"model: {path.name}:model\ntime: {{start: 0, stop: 5, points: 20}}\n")
    out = tmp_path / "res" / "out"
    code, _, err, took, n = run_main(capsys, "run", cfg, "--out", out, "-q")
    assert_fast_clean(code, err, took, n, words=CODE_FAULTS[case][3] + ["model:"])
    assert_blames_user_line(err, path, case)
    assert_nothing_left(out)
    # `validate` runs the same check: "valid" means the model evaluates
    code, out_text, err, took, n = run_main(capsys, "validate", cfg)
    assert code == 2 and "valid." not in out_text and CODE_FAULTS[case][3][0] in err, out_text + err


def test_good_models_pass_the_check_quickly():
    """Every library model passes; a second build of the same model is not re-checked."""
    for name in models.available():
        models.get(name)
    start = time.perf_counter()
    for name in models.available():
        models.get(name)
    assert time.perf_counter() - start < 1.0


def test_inline_model_fault_names_the_function(tmp_path):
    def my_rhs(t, y, p):
        return y[:1]

    with pytest.raises(ModelError) as err:
        sens.ODEModel("inline", ["a", "b"], {"k": 1.0}, my_rhs, [1.0, 2.0])
    message = str(err.value)
    assert "model 'inline'" in message and "`test_inline_model_fault_names_the_function.<locals>.my_rhs`" \
        in message and "test_bad_inputs.py" in message and "shape (1,)" in message, message


# --------------------------------------------------------------------------- model files
FILE_FAULTS = {  # name: (file content, model spec, key words of the API's and the CLI's message)
    "file_missing": (None, "nowhere.py:model", ["model file", "nowhere.py' not found"],
                     ["file 'nowhere.py' not found"]),
    "import_fails": ("import jax.numpy as jnp\nraise ImportError('no module named kinetics')\n",
                     "broken.py:model", ["importing", "ImportError: no module named kinetics, at", "broken.py:2"], None),
    "factory_raises": ("def model(k=1.0):\n    return {'k': k}['rate']\n", "raising.py:model",
                       ["calling model() raised KeyError: 'rate', at", "raising.py:2"], None),
    "factory_missing": ("def modle():\n    return None\n", "typo.py:model",
                        ["no function 'model'", "did you mean 'modle'"], None),
    "factory_not_a_model": ("def model():\n    return 42\n", "fortytwo.py:model", ["returned int", "ODEModel"],
                            None),
}


@pytest.mark.parametrize("case", sorted(FILE_FAULTS))
def test_model_file_fault(tmp_path, capsys, case):
    source, spec, api_words, cli_words = FILE_FAULTS[case]
    if source is not None:
        write(tmp_path / spec.partition(":")[0], source)
    with pytest.raises(InputError) as err:
        models.load(str(tmp_path / spec))
    assert all(w in str(err.value) for w in api_words), str(err.value)
    cfg = write(tmp_path / "c.yaml", f"model: {spec}\ntimes: [0, 1, 2]\n")
    out = tmp_path / "out"
    code, _, err_text, took, n = run_main(capsys, "run", cfg, "--out", out)
    assert_fast_clean(code, err_text, took, n, words=["model:"] + (cli_words or api_words))
    assert_nothing_left(out)


# --------------------------------------------------------------------------- configs
GOOD = """
model: lotka_volterra
time: {start: 0, stop: 5, points: 20}
solver: {rtol: 1.0e-8, atol: 1.0e-8}
sensitivity: {wrt: [alpha, beta]}
"""

# name: (config text, key words)
CONFIG_FAULTS = {
    "unknown_key": (GOOD.replace("rtol:", "rtl:"), ["solver.rtl: unknown key (did you mean 'rtol'?)"]),
    "wrong_type": (GOOD.replace("points: 20", "points: many"), ["time.points = 'many': must be a whole number"]),
    "negative_tolerance": (GOOD.replace("atol: 1.0e-8", "atol: -1.0e-8"), ["solver.atol", "greater than 0"]),
    "unknown_parameter": (GOOD + "parameters: {alhpa: 1.0}\n", ["parameters.alhpa", "did you mean 'alpha'"]),
    "unknown_input": (GOOD.replace("[alpha, beta]", "[alpha, btea]"), ["sensitivity.wrt[1] = 'btea'", "'beta'"]),
    "unknown_state": (GOOD + "initial_state: {pray: 2.0}\n", ["initial_state.pray", "did you mean 'prey'"]),
    "array_parameter_shape": ("model: neural_ode\nmodel_options: {width: 3}\ntime: {start: 0, stop: 1, points: 5}\n"
                              "parameters: {W1: [1.0, 2.0]}\nsensitivity: {wrt: [b2]}\n",
                              ["parameters.W1 has shape (2,), expected (3, 2)"]),
    "times_not_increasing": ("model: lotka_volterra\ntimes: [0, 2, 1]\n", ["times", "strictly increasing"]),
    "malformed_yaml": ("model: lotka_volterra\ntime: {start: 0, stop: 5\n", ["malformed YAML at line"]),
    "unknown_model": (GOOD.replace("lotka_volterra", "lotka-voltera"), ["did you mean 'lotka_volterra'"]),
    "bad_model_option": ("model: heat_1d\nmodel_options: {cells: 5}\ntimes: [0, 1]\n", ["model_options"]),
}


@pytest.mark.parametrize("case", sorted(CONFIG_FAULTS))
def test_config_fault(tmp_path, capsys, case):
    text, words = CONFIG_FAULTS[case]
    cfg = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError) as err:
        config.load(cfg)
    for w in words:
        assert w in str(err.value), (w, str(err.value))
    out = tmp_path / "out"
    code, _, err_text, took, n = run_main(capsys, "run", cfg, "--out", out, "-q")
    assert_fast_clean(code, err_text, took, n, words=words)
    assert_nothing_left(out)


def test_unreadable_config_is_bad_input(tmp_path, capsys):
    code, _, err, took, n = run_main(capsys, "run", tmp_path / "absent.yaml")
    assert_fast_clean(code, err, took, n, words=["absent.yaml not found"])
    code, _, err, took, n = run_main(capsys, "run", tmp_path)  # a folder
    assert_fast_clean(code, err, took, n, words=["is a folder"])


# --------------------------------------------------------------------------- data files
DATA_CONFIG = GOOD.replace("{wrt: [alpha, beta]}",
                           "{wrt: [alpha, beta], objective: {type: sum_of_squares, data: obs.csv}}")
DATA_FAULTS = {
    "no_time_column": ("tim,prey\n0,10\n1,9\n", ["no 'time' column", "is 'tim' meant to be 'time'?"]),
    "not_a_number": ("time,prey\n0,10\n1,lots\n", ["line 3", "'lots' is not a number"]),
    "outside_span": ("time,prey\n0,10\n9,3\n", ["outside the simulated span"]),
    "unknown_column": ("time,pray\n0,10\n", ["column 'pray'", "did you mean 'prey'"]),
    "empty": ("", ["is empty"]),
    "missing_file": (None, ["file 'obs.csv' not found"]),
}


@pytest.mark.parametrize("case", sorted(DATA_FAULTS))
def test_data_fault(tmp_path, capsys, case):
    text, words = DATA_FAULTS[case]
    if text is not None:
        (tmp_path / "obs.csv").write_text(text)
    cfg = write(tmp_path / "c.yaml", DATA_CONFIG)
    with pytest.raises(ConfigError) as err:
        config.load(cfg)
    assert all(w in str(err.value) for w in words), str(err.value)
    out = tmp_path / "out"
    code, _, err_text, took, n = run_main(capsys, "run", cfg, "--out", out, "-q")
    assert_fast_clean(code, err_text, took, n, words=["sensitivity.objective.data"] + words)
    assert_nothing_left(out)


# --------------------------------------------------------------------------- output paths
def _read_only(monkeypatch, folder: Path):
    """Make `folder` behave like a read-only file system (as root, chmod would not stop us)."""
    real_mkdir = Path.mkdir

    def mkdir(self, *a, **k):
        if Path(os.path.abspath(self)).parent == folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)


OUTPUT_FAULTS = {
    "proc": (lambda tmp: Path("/proc/sensitivity-results"), ["/proc", "virtual file system"]),
    "sys": (lambda tmp: Path("/sys/sensitivity/results"), ["/sys", "virtual file system"]),
    "below_a_file": (lambda tmp: write(tmp / "notes.txt", "x") / "results",
                     ["notes.txt is a file", "no folder can be created below it"]),
    "deep_below_a_file": (lambda tmp: write(tmp / "notes.txt", "x") / "a" / "b",
                          ["notes.txt is a file"]),
    "is_a_file": (lambda tmp: write(tmp / "result.txt", "x"), ["exists and is not a folder"]),
    "read_only": (lambda tmp: tmp / "ro" / "results", ["Read-only file system", "read-only"]),
}


@pytest.mark.parametrize("case", sorted(OUTPUT_FAULTS))
def test_output_path_fault(tmp_path, capsys, monkeypatch, case):
    make, words = OUTPUT_FAULTS[case]
    out = make(tmp_path)
    if case == "read_only":
        (tmp_path / "ro").mkdir()
        _read_only(monkeypatch, tmp_path / "ro")
    if case != "is_a_file":  # that one is io.check_target's OutputExistsError
        with pytest.raises(OutputPathError) as err:
            check_output_dir(out)
        assert isinstance(err.value, InputError) and all(w in str(err.value) for w in words), str(err.value)
    cfg = write(tmp_path / "c.yaml", GOOD)
    code, _, err_text, took, n = run_main(capsys, "run", cfg, "--out", out, "-q")
    assert_fast_clean(code, err_text, took, n, words=words + [str(out)])
    if case != "is_a_file":
        assert_nothing_left(out)
    else:
        assert out.read_text() == "x"


def test_writable_output_leaves_nothing(tmp_path):
    check_output_dir(tmp_path / "new" / "deeper" / "results")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- runs that fail
SQRT_MODEL = '''
import jax.numpy as jnp
import sensitivity as sens


def rhs(t, y, p):
    return -p["k"] * jnp.sqrt(y)


def model():
    return sens.ODEModel("sqrt_decay", ["y"], {"k": 1.0}, rhs, [1.0])
'''


def test_nan_is_named_not_max_steps(tmp_path, capsys):
    """y' = -k sqrt(y) reaches 0 at t = 2/k and the solver's steps go below: NaN. The
    message names NaN, the time, the state going negative, and no max_steps advice."""
    path = write(tmp_path / "sqrt_model.py", SQRT_MODEL)
    model = models.load(f"{path}:model")
    prob = sens.Problem(model, np.linspace(0, 4, 5))
    with pytest.raises(SolverError) as err:
        sens.simulate(prob)
    message = str(err.value)
    for w in ["returned NaN", "before t = 3 (last good save at t = 2)", "y = ", "is negative",
              "dy/dt is NaN", "jnp.maximum"]:
        assert w in message, (w, message)
    assert "max_steps" not in message and message.count("Try") == 1, message
    # the same through the CLI: a failed run (status 1), one message, no result folder
    cfg = write(tmp_path / "c.yaml", "model: sqrt_model.py:model\ntimes: [0, 1, 2, 3, 4]\n"
                "sensitivity: {probe: never}\n")
    out = tmp_path / "out"
    code, _, err_text, _, _ = run_main(capsys, "run", cfg, "--out", out, "-q")
    assert code == 1 and "returned NaN" in err_text and "max_steps" not in err_text, err_text
    assert "Traceback" not in err_text and err_text.count("sensitivity: error") == 1
    assert_nothing_left(out)


def test_interrupt_leaves_no_result(tmp_path, capsys, monkeypatch):
    from sensitivity.app.runners import local

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(local, "run", interrupted)
    out = tmp_path / "res" / "lv"
    code, _, err, _, _ = run_main(capsys, "run", write(tmp_path / "c.yaml", GOOD), "--out", out, "-q")
    assert code == 130 and "interrupted; no result was written" in err and "Traceback" not in err
    assert_nothing_left(out)


def test_exit_3_only_for_toolkit_bugs(tmp_path, capsys, monkeypatch):
    """A bug of the toolkit is an internal error (3); the same exception raised in the
    user's own code, past the model check, is bad input (2) naming their line."""
    from sensitivity.app.runners import local

    # a function whose code lives in the toolkit's own file, as a bug there would
    namespace = {}
    exec(compile("def run(*args, **kwargs):\n    return {}['missing']\n", local.__file__, "exec"), namespace)
    monkeypatch.setattr(local, "run", namespace["run"])
    cfg = write(tmp_path / "c.yaml", GOOD)
    code, _, err, _, _ = run_main(capsys, "run", cfg, "--out", tmp_path / "o1", "-q")
    assert code == 3 and "internal error: KeyError" in err and "please report it" in err, err

    user = write(tmp_path / "helpers.py", "def weights(*args, **kwargs):\n    return 1 / 0\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import helpers  # noqa: F401  (a user's module, imported as their model would)

        monkeypatch.setattr(local, "run", helpers.weights)
        code, _, err, _, _ = run_main(capsys, "run", cfg, "--out", tmp_path / "o2", "-q")
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("helpers", None)
    assert code == 2 and "ZeroDivisionError" in err and f"{user.name}:2" in err and "Traceback" not in err, err
    assert_nothing_left(tmp_path / "o1")
    assert_nothing_left(tmp_path / "o2")


# --------------------------------------------------------------------------- real processes
def test_exit_status_in_a_real_process(tmp_path):
    """Two faults end to end in fresh processes: model code, and an output path."""
    path = model_file(tmp_path, "if_on_traced_time")
    cfg = write(tmp_path / "c.yaml", f"model: {path.name}\ntime: {{start: 0, stop: 5, points: 20}}\n")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    line = fault_line(path, "if_on_traced_time")
    for args, words in [(["run", cfg, "--out", tmp_path / "out"], ["jnp.where", f"{path.name}:{line}"]),
                        (["run", write(tmp_path / "g.yaml", GOOD), "--out", "/proc/sensitivity-out"],
                         ["/proc", "virtual file system"])]:
        proc = subprocess.run([sys.executable, "-m", "sensitivity", *map(str, args)], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and all(w in proc.stderr for w in words), proc.stderr
        assert "compiling" not in proc.stderr
    assert_nothing_left(tmp_path / "out")


def test_array_parameter_mismatch_names_the_shapes():
    def matrix_rhs(t, y, p):
        return p["W"] @ y

    with pytest.raises(ModelError) as err:
        sens.ODEModel("matrix", ["a", "b"], {"W": np.eye(3), "k": 1.0}, matrix_rhs, [1.0, 2.0])
    message = str(err.value)
    assert "raised TypeError at" in message and "test_bad_inputs.py" in message and "p[\"W\"] @ y" in message
    assert "y of shape (2,)" in message and "W (3, 3)" in message, message


def test_non_finite_observable_and_zero_parameter():
    """NaN made by an observable (the solve itself is fine) is blamed on the observable; an
    rhs non-finite at the start names the parameter equal to 0."""
    def decay(t, y, p):
        return -y / p["tau"]

    logged = sens.ODEModel("logged", ["y"], {"tau": 1.0}, decay, [1.0],
                           observables={"log_excess": lambda t, y, p: jnp.log(y[0] - 0.5)})
    with pytest.raises(SolverError) as err:
        sens.simulate(sens.Problem(logged, np.linspace(0, 2, 5)))
    message = str(err.value)
    assert "log_excess is NaN at t = 1" in message and "observable" in message and "max_steps" not in message

    plain = sens.ODEModel("plain_decay", ["y"], {"tau": 1.0}, decay, [1.0])
    with pytest.raises(SolverError) as err:
        sens.simulate(sens.Problem(plain, np.linspace(0, 2, 5), parameters={"tau": 0.0}))
    message = str(err.value)
    assert "returned" in message and "at t = 0" in message and "Parameters equal to 0: tau" in message, message
    assert "max_steps" not in message


def _odeint_order(y, t, p):
    return -y


def _two_arguments(t, y):
    return -y


@pytest.mark.parametrize("rhs, words", [
    (_odeint_order, ["takes (y, t, ...)", "time first", "swap the first two arguments"]),
    (_two_arguments, ["signature (t, y)", "called as rhs(t, y, p)"]),
])
def test_signature_faults(rhs, words):
    with pytest.raises(ModelError) as err:
        sens.ODEModel("signature", ["a", "b"], {"k": 1.0}, rhs, [1.0, 2.0])
    assert all(w in str(err.value) for w in words) and rhs.__name__ in str(err.value), str(err.value)
