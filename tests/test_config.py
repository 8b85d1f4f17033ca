"""The YAML schema, overrides, objectives, rankings and atomic writes: no JAX compile here.

Numbers are checked against independent computations (numpy/scipy loops written out here,
jax.grad against hand-derived gradients); error messages against the key paths they must name.
"""

from __future__ import annotations

import textwrap

import jax
import numpy as np
import pytest
from scipy.integrate import trapezoid as scipy_trapezoid

from sensitivity import ConfigError
from sensitivity.analyses import metrics
from sensitivity.app.config import run as config
from sensitivity.app.output import files as io

LV = """
model: lotka_volterra
parameters: {alpha: 1.2}
initial_state: {prey: 8.0}
time: {start: 0.0, stop: 10.0, points: 21}
solver: {rtol: 1e-7, atol: 1.0e-9, max_steps: 5000}
sensitivity:
  wrt: [alpha, beta, y0.prey]
  of: [prey]
  normalize: log
"""


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems_of(path, **kw):
    with pytest.raises(ConfigError) as info:
        config.load(path, **kw)
    return info.value.problems


def test_valid_config_builds_the_problem_it_describes(tmp_path):
    spec = config.load(write(tmp_path, LV))
    p = spec.problem
    np.testing.assert_allclose(p.times, np.linspace(0, 10, 21))
    assert p.t0 == 0.0 and p.input_names == ("alpha", "beta", "y0.prey") and p.of == ("prey",)
    assert float(p.parameters["alpha"]) == 1.2 and float(p.parameters["beta"]) == 0.1  # default kept
    assert p.y0.tolist() == [8.0, 5.0]
    assert (p.rtol, p.atol, p.max_steps) == (1e-7, 1e-9, 5000)  # "1e-7" is text in YAML
    assert spec.objective is None and spec.config.sensitivity.normalize == "log"
    assert spec.output_dir.as_posix() == "results/c"  # default: results/<config name>


def test_jacobian_reuse_reaches_the_problem(tmp_path):
    from sensitivity.solvers.newton import reuse
    text = "model: robertson\ntimes: [1.0, 10.0]\nsolver: {method: kvaerno5, jacobian_reuse: true}\n"
    p = config.load(write(tmp_path, text)).problem
    assert p.jacobian_reuse is True and reuse.enabled(p)
    assert config.load(write(tmp_path, LV)).problem.jacobian_reuse is False
    assert any("solver.jacobian_reuse" in m
               for m in problems_of(write(tmp_path, text.replace("true", "often"))))


def test_every_problem_is_reported_with_its_key_path(tmp_path):
    path = write(tmp_path, """
        model: lotka_volterra
        parameters: {alpah: 1.0}
        initial_state: {prye: 3.0}
        time: {start: 5, stop: 1, points: many}
        solver: {rtol: -1e-8, atl: 1e-9, method: rk45}
        sensitivity:
          wrt: [alpha, betta, y0.prye]
          of: [pray]
          mode: fastest
          objective: {type: sum_of_squares, data: nowhere.csv}
        output: {plots: [heatmap, histogram]}
        colour: red
        """)
    probs = problems_of(path)
    text = "\n".join(probs)
    expected = [
        "parameters.alpah: model 'lotka_volterra' has no such parameter (did you mean 'alpha'?)",
        "initial_state.prye: model 'lotka_volterra' has no such state (did you mean 'prey'?)",
        "time.stop: stop = 1 must be greater than start = 5",
        "time.points = 'many': must be a whole number",
        "solver.rtol = '-1e-8': must be greater than 0",
        "solver.atl: unknown key (did you mean 'atol'?)",
        "solver.method = 'rk45': must be one of auto, tsit5",
        "sensitivity.wrt[1] = 'betta'",
        "(did you mean 'beta'?)",
        "sensitivity.wrt[2] = 'y0.prye'",
        "sensitivity.of[0] = 'pray'",
        "sensitivity.mode = 'fastest': must be one of auto, forward or adjoint",
        "sensitivity.objective.data: file 'nowhere.csv' not found",
        "output.plots[1] = 'histogram': must be one of heatmap, trajectories or sensitivities",
        "colour: unknown key",
    ]
    for e in expected:
        assert e in text, f"missing {e!r} in:\n{text}"
    assert len(probs) == 14  # one line per problem, nothing reported twice


def test_unknown_model_suggests_the_closest(tmp_path):
    probs = problems_of(write(tmp_path, "model: lotka_voltera\ntime: {stop: 1}\n"))
    assert len(probs) == 1 and "did you mean 'lotka_volterra'" in probs[0]


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "model: lotka_volterra\ntime: {stop: 1\nsolver: {rtol: 1e-8}\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+, column \d+"):
        config.load(path)


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("model: lotka_volterra\n", "time: give exactly one of"),
    ("model: lotka_volterra\ntime: {stop: 1}\ntimes: [0, 1]\n", "time: give exactly one of"),
    ("model: lotka_volterra\ntimes: [0, 2, 1]\n", "times: must be strictly increasing: times[1] = 2"),
    ("model: lotka_volterra\ntime: {stop: 1, first: 0.1}\n", "time.first: only used with spacing: log"),
    ("model: lotka_volterra\ntime: {stop: 1}\nsensitivity: {hessian: true}\n",
     "sensitivity.hessian: a Hessian needs sensitivity.objective"),
    ("model: lotka_volterra\ntime: {stop: 1}\nsensitivity: {objective: {type: final_value, data: x.csv}}\n",
     "sensitivity.objective.data: only used by type sum_of_squares"),
    ("model: lotka_volterra\ntime: {stop: 1}\nsensitivity: {objective: {type: sum_of_squares}}\n",
     "sensitivity.objective.data: sum_of_squares needs a data file"),
    ("model: lotka_volterra\ntime: {stop: 1}\nsensitivity: {objective: {type: integral, outputs: [prey, fox]}}\n",
     "sensitivity.objective.outputs[1] = 'fox': not among the outputs"),
    ("model: lotka_volterra\ntime: {stop: 1}\nparameters: {alpha: .nan}\n", "parameters.alpha"),
    ("model: lotka_volterra\ntime: {stop: 1}\nsolver: {atol: 0}\n", "solver.atol = 0: must be greater than 0"),
])
def test_single_problems(tmp_path, text, message):
    with pytest.raises(ConfigError) as info:
        config.load(write(tmp_path, text))
    assert message in str(info.value)


def test_model_file_relative_to_the_config(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "decay.py").write_text(textwrap.dedent("""
        import sensitivity as sens
        def rhs(t, y, p):
            return -p["k"] * y
        def model(k=0.5):
            return sens.ODEModel("decay", ["y"], {"k": k}, rhs, [2.0])
    """))
    spec = config.load(write(tmp_path / "sub", "model: decay.py\nmodel_options: {k: 0.7}\ntimes: [0, 1, 2]\n"))
    assert spec.model.name == "decay" and float(spec.problem.parameters["k"]) == 0.7
    assert spec.problem.input_names == ("k",)
    probs = problems_of(write(tmp_path, "model: sub/decay.py:modle\ntimes: [0, 1]\n"))
    assert "has no function 'modle'" in probs[0] and "did you mean 'model'" in probs[0]
    probs = problems_of(write(tmp_path, "model: missing.py:model\ntimes: [0, 1]\n"))
    assert "file 'missing.py' not found" in probs[0]


def test_log_spacing_and_first():
    g = config.TimeGrid(start=0, stop=1e4, points=5, spacing="log")
    times, t0 = g.grid()
    np.testing.assert_allclose(times, 10.0 ** np.array([-2, -0.5, 1, 2.5, 4]))  # stop * 1e-6 .. stop
    assert t0 == 0.0 and times[0] == pytest.approx(1e4 * 1e-6)
    times, t0 = config.TimeGrid(start=0, stop=100, points=3, spacing="log", first=1).grid()
    np.testing.assert_allclose(times, [1, 10, 100])
    times, t0 = config.TimeGrid(start=2, stop=32, points=5, spacing="log").grid()
    np.testing.assert_allclose(times, [2, 4, 8, 16, 32])
    assert t0 == 2


def test_overrides_and_points(tmp_path):
    path = write(tmp_path, LV)
    spec = config.load(path, overrides=["solver.rtol=1e-5", "sensitivity.wrt=[gamma]",
                                        "output.plots=[]", "output.dir=elsewhere"], points=7)
    assert spec.problem.rtol == 1e-5 and spec.problem.input_names == ("gamma",)
    assert spec.problem.times.size == 7 and spec.config.output.plots == []
    assert spec.output_dir.as_posix() == "elsewhere"
    assert config.load(path, out=tmp_path / "o").output_dir == tmp_path / "o"
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        config.load(path, overrides=["solver.rtol"])
    # the override is validated like the file
    assert "solver.rtol = -1: must be greater than 0" in problems_of(path, overrides=["solver.rtol=-1"])[0]
    data = config.set_points({"times": [0, 1, 2, 3, 4, 5, 6, 7, 8]}, 3)
    assert data["times"] == [0, 4, 8]


OBS = "time,prey,predator\n1.0,9.0,\n2.5,4.0,6.0\n4.0,NA,7.5\n"


def test_sum_of_squares_adds_data_times_to_the_grid(tmp_path):
    (tmp_path / "obs.csv").write_text(OBS)
    path = write(tmp_path, """
        model: lotka_volterra
        time: {start: 0, stop: 5, points: 6}
        sensitivity:
          objective: {type: sum_of_squares, data: obs.csv, sigma: {prey: 0.5}}
          hessian: true
        """)
    spec = config.load(path)
    np.testing.assert_allclose(spec.problem.times, [0, 1, 2, 2.5, 3, 4, 5])
    obj = spec.objective
    ys = np.random.default_rng(0).standard_normal((7, 2))
    # independent: the squared residuals at the observed (time, output) pairs
    expected = ((ys[1, 0] - 9.0) / 0.5) ** 2 + ((ys[3, 0] - 4.0) / 0.5) ** 2 \
        + (ys[3, 1] - 6.0) ** 2 + (ys[5, 1] - 7.5) ** 2
    assert obj(ys) == pytest.approx(expected)
    g = np.asarray(jax.grad(obj)(ys))  # traceable, and its gradient is 2 r / sigma^2
    assert g[1, 0] == pytest.approx(2 * (ys[1, 0] - 9.0) / 0.25) and g[5, 1] == pytest.approx(2 * (ys[5, 1] - 7.5))
    assert g[0].tolist() == [0.0, 0.0] and np.count_nonzero(g) == 4


def test_final_value_and_integral_objectives():
    times = np.array([0.0, 0.5, 2.0, 3.0])
    ys = np.random.default_rng(1).standard_normal((4, 3))
    cfg = config.ObjectiveConfig(type="integral", outputs=["b", "c"])
    obj = config.make_objective(cfg, ("a", "b", "c"), times, None)
    assert obj(ys) == pytest.approx(scipy_trapezoid(ys[:, 1], times) + scipy_trapezoid(ys[:, 2], times))
    dobj = np.asarray(jax.grad(obj)(ys))
    w = np.array([0.25, 1.0, 1.25, 0.5])  # trapezoid weights of these times
    np.testing.assert_allclose(dobj[:, 1], w)
    np.testing.assert_allclose(dobj[:, 0], 0.0)
    fv = config.make_objective(config.ObjectiveConfig(type="final_value"), ("a", "b", "c"), times, None)
    assert fv(ys) == pytest.approx(ys[-1].sum())
    assert config.make_objective(cfg, ("a", "b", "c"), times, None) == obj  # equal by value


@pytest.mark.parametrize("csv_text, message", [
    ("t,prey\n1,2\n", "has no 'time' column; columns found: t, prey"),
    ("time,prye\n1,2\n", "column 'prye' of"),
    ("time,prey\n1,abc\n", "line 2, column 'prey': 'abc' is not a number"),
    ("time,prey\n1,2\n9,3\n", "outside the simulated span [0, 5]"),
    ("time,prey\n2,2\n1,3\n", "strictly increasing"),
    ("time,prey\n", "no data rows"),
])
def test_bad_data_files(tmp_path, csv_text, message):
    (tmp_path / "obs.csv").write_text(csv_text)
    path = write(tmp_path, "model: lotka_volterra\ntime: {stop: 5}\n"
                           "sensitivity: {objective: {type: sum_of_squares, data: obs.csv}}\n")
    assert message in "\n".join(problems_of(path))


def test_trapezoid_ranking_and_time_mean():
    times = np.array([0.0, 1.0, 3.0])
    S = np.zeros((3, 2, 3))
    S[:, 0, 0] = [0.0, 2.0, 2.0]     # integral 1 + 4 = 5
    S[:, 1, 0] = [-1.0, -1.0, -1.0]  # |.| integral 3, signed mean -1
    S[:, 0, 1] = [np.nan, 1.0, 1.0]  # NaN counts as 0: 0.5 + 2 = 2.5
    S[:, 1, 2] = [0.0, 0.0, 10.0]    # 10
    rows = metrics.rank_inputs(times, S, ["p", "q", "r"], ["A", "B"])
    assert [r["input"] for r in rows] == ["r", "p", "q"]
    assert [r["score"] for r in rows] == pytest.approx([10.0, 8.0, 2.5])
    assert rows[1]["A"] == pytest.approx(5.0) and rows[1]["B"] == pytest.approx(3.0)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    mean = metrics.time_mean(times, S)
    assert mean[1, 0] == pytest.approx(-1.0) and mean[0, 0] == pytest.approx(5.0 / 3.0)
    np.testing.assert_allclose(metrics.trapezoid(times, S[:, 1, 2]), scipy_trapezoid(S[:, 1, 2], times))
    assert metrics.nearest_indices(times, [0.9, 1.1, 2.9]) == [1, 2]


def test_output_folder_is_atomic(tmp_path):
    target = tmp_path / "res"
    with pytest.raises(RuntimeError):
        with io.output_folder(target) as tmp:
            (tmp / "half.nc").write_text("x")
            raise RuntimeError("solver died")
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary folder
    with pytest.raises(KeyboardInterrupt):
        with io.output_folder(target) as tmp:
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with io.output_folder(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"
    with pytest.raises(io.OutputExistsError, match="--force"):
        with io.output_folder(target):
            pass
    with io.output_folder(target, force=True) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res"]


def test_jsonable_has_no_nan():
    out = io.jsonable({"a": np.array([1.0, np.nan]), "b": np.float32(2), "c": (np.int64(3), np.inf)})
    assert out == {"a": [1.0, None], "b": 2.0, "c": [3, None]}
