"""What a run's ranking and heatmap show: magnitudes that do not cancel (the heatmap holds
ranking.csv's values), the signed view only on request and named so, and time inputs
scaled by the horizon instead of log-normalised."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import xarray as xr

import sensitivity as sens
from sensitivity import models
from sensitivity.app import cli
from sensitivity.app.runners import local
from sensitivity.plots import run as plot_run

LV = """
model: lotka_volterra
time: {start: 0.0, stop: 15.0, points: 61}
solver: {rtol: 1.0e-9, atol: 1.0e-9}
sensitivity: {wrt: [alpha, beta, gamma, delta], probe: never}
output: {plots: [heatmap], heatmap_times: [5.0]}
"""


def _trapezoid(times, values):
    return ((values[1:] + values[:-1]) * np.diff(times).reshape(-1, *([1] * (values.ndim - 1)))).sum(axis=0) / 2


@pytest.fixture(scope="module")
def lv_runs(tmp_path_factory):
    """The LV run twice, default and signed heatmap, with the heatmap's panels recorded."""
    folder = tmp_path_factory.mktemp("lv")
    (folder / "lv.yaml").write_text(LV)
    drawn, current = {}, {}
    original = plot_run.heatmap

    def recording(panels, input_names, output_names, titles, label, path, suptitle="", signed=False):
        drawn[(current["run"], path.name)] = dict(panels=[np.asarray(p) for p in panels], titles=titles,
                                                   label=label, signed=signed, inputs=input_names,
                                                   outputs=output_names)
        return original(panels, input_names, output_names, titles, label, path, suptitle, signed)

    mp = pytest.MonkeyPatch()
    mp.setattr(plot_run, "heatmap", recording)
    try:
        for name, extra in (("magnitude", []), ("signed", ["--set", "output.heatmap=signed"])):
            current["run"] = name
            assert cli.main(["run", str(folder / "lv.yaml"), "--out", str(folder / name), "-q", *extra]) == 0
    finally:
        mp.undo()
    return folder, drawn


def _ranking(folder):
    with open(folder / "ranking.csv") as fh:
        return {row["input"]: row for row in csv.DictReader(fh)}


def test_heatmap_shows_the_rankings_magnitude_where_a_sensitivity_changes_sign(lv_runs):
    """gamma -> predator changes sign over the run: its signed time average nearly cancels,
    while the heatmap now shows integral |S| dt, the very number ranking.csv gives."""
    folder, drawn = lv_runs
    out = folder / "magnitude"
    with xr.open_dataset(out / "results.nc", engine="h5netcdf") as ds:
        S, times = ds.jacobian.values, ds.time.values
        inputs, outputs = list(ds.input.values), list(ds.output.values)
    g, pred = inputs.index("gamma"), outputs.index("predator")
    course = S[:, pred, g]
    assert course.max() > 0.2 * np.abs(course).max() and course.min() < -0.2 * np.abs(course).max()
    shown = drawn[("magnitude", "heatmap.png")]
    assert not shown["signed"] and "integrated |S|" in shown["titles"][0] and "|dy/dp|" in shown["label"]
    panel = shown["panels"][0]  # (n_outputs, n_inputs)
    ranking = _ranking(out)
    for i, name in enumerate(inputs):
        for j, output in enumerate(outputs):
            assert panel[j, i] == pytest.approx(float(ranking[name][output]), rel=1e-8), (name, output)
    magnitude = _trapezoid(times, np.abs(course))
    signed_mean = _trapezoid(times, course) / (times[-1] - times[0])
    assert panel[pred, g] == pytest.approx(magnitude, rel=1e-10)
    assert abs(signed_mean) < 0.05 * magnitude  # what the old picture showed: mostly cancelled
    at = drawn[("magnitude", "heatmap_at_times.png")]
    k = int(np.argmin(np.abs(times - 5.0)))
    np.testing.assert_allclose(at["panels"][0], np.abs(S[k]), rtol=1e-12)
    assert "|dy/dp|" in at["label"] and not at["signed"]


def test_the_signed_view_is_on_request_and_named(lv_runs):
    folder, drawn = lv_runs
    with xr.open_dataset(folder / "signed" / "results.nc", engine="h5netcdf") as ds:
        S, times = ds.jacobian.values, ds.time.values
    shown = drawn[("signed", "heatmap.png")]
    assert shown["signed"] and "signed" in shown["titles"][0] and "signed" in shown["label"]
    np.testing.assert_allclose(shown["panels"][0], _trapezoid(times, S), rtol=1e-10, atol=1e-12)
    assert drawn[("signed", "heatmap_at_times.png")]["signed"]
    summary = json.loads((folder / "signed" / "summary.json").read_text())
    assert summary["config"]["output"]["heatmap"] == "signed"


def test_a_magnitude_heatmap_refuses_negative_values(tmp_path):
    with pytest.raises(ValueError, match="signed=True"):
        plot_run.heatmap([np.array([[1.0, -2.0]])], ["a", "b"], ["y"], ["t"], "x", tmp_path / "h.png")


# ----------------------------------------------------------------------------- time inputs
PK = {"ka": 1.0, "CL": 5.0, "V": 50.0}


def _pk_problem(start):
    times = start + np.linspace(0.0, 48.0, 49)
    return sens.Problem(models.get("pk_one_compartment_oral"), times, parameters=PK,
                        wrt=["ka", "CL", "dose[1].time"], rtol=1e-10, atol=1e-10,
                        doses=sens.doses("depot", 100.0, every=12.0, count=3, start=start))


def test_time_inputs_are_scaled_by_the_horizon_not_log_normalised():
    """A log sensitivity x dy/dx to a dose time grows with the time's distance from the
    origin: the same schedule started at t = 1000 would rank dose[1].time ~80x higher. The
    ranking scales it by the horizon instead, (H / y) dy/dtau, which does not depend on the
    origin, and says so in its measure column."""
    runs = [local.run(_pk_problem(start), normalize="log", mode="forward") for start in (0.0, 1000.0)]
    for a in runs:
        assert a.time_inputs == ("dose[1].time",)
        rows = {r["input"]: r for r in a.ranking}
        assert rows["dose[1].time"]["measure"] == "d ln y / d (tau / H)"
        assert rows["ka"]["measure"] == "d ln y / d ln p"
        J, y, times = a.jacobian.values, a.jacobian.outputs, a.jacobian.times
        with np.errstate(divide="ignore", invalid="ignore"):
            scaled = np.where(y[:, 0] == 0, 0.0, J[:, 0, 2] * 48.0 / y[:, 0])
        assert rows["dose[1].time"]["score"] == pytest.approx(_trapezoid(times, np.abs(scaled)), rel=1e-9)
        assert "time inputs" in a.label and "H = 48" in a.label
    # measures that do not compare are ranked apart: the parameters first, shares per measure
    assert [r["measure"] for r in runs[0].ranking] == ["d ln y / d ln p"] * 2 + ["d ln y / d (tau / H)"]
    assert sum(r["share"] for r in runs[0].ranking[:2]) == pytest.approx(1.0)
    assert runs[0].ranking[2]["share"] == pytest.approx(1.0)
    score = [{r["input"]: r["score"] for r in a.ranking} for a in runs]
    assert score[1]["dose[1].time"] == pytest.approx(score[0]["dose[1].time"], rel=1e-5)
    assert score[1]["ka"] == pytest.approx(score[0]["ka"], rel=1e-5)
    # what log-normalising would have given: scaled by the dose time itself, 12 vs 1012
    logs = [a.jacobian.normalized()[:, :, 2] for a in runs]
    ratio = _trapezoid(runs[1].jacobian.times, np.nan_to_num(np.abs(logs[1]))).sum() / \
        _trapezoid(runs[0].jacobian.times, np.nan_to_num(np.abs(logs[0]))).sum()
    assert ratio == pytest.approx(1012.0 / 12.0, rel=1e-4)


def switch_rhs(t, y, p):
    return jnp.where(t < p["t_off"], p["r"], 0.0) - p["k"] * y


def on_at(t, y, p):
    return t - p["t_on"]


def bump(t, y, p):
    return y + p["b"]


def threshold(t, y, p):
    return y[0] - p["b"]


jnp = pytest.importorskip("jax.numpy")


def test_which_inputs_are_times():
    """Breakpoint parameters, parameters the rhs compares with t, event times t = p and dose
    times are time inputs; a state threshold, a rate or a dose amount is not."""
    m = sens.ODEModel("switches", ["y"], {"r": 1.0, "k": 0.5, "t_off": 4.0, "t_on": 2.0, "b": 0.3, "t_bp": 6.0},
                      switch_rhs, [0.0],
                      events=[sens.Event(on_at, reset=bump), sens.Event(threshold, reset=None, direction=1)])
    with pytest.warns(sens.DiscontinuityWarning):
        prob = sens.Problem(m, np.linspace(0.0, 10.0, 11), doses=[sens.Dose(1.0, "y", 1.0)], breakpoints=["t_bp"],
                            wrt=["r", "k", "t_off", "t_on", "b", "t_bp", "dose[0].time", "dose[0].amount"])
    assert local.time_inputs(prob) == ("t_off", "t_on", "t_bp", "dose[0].time")
