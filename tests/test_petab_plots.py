"""The PEtab fit figures (sensitivity/plots/petab.py): the simulation on a fine time grid
against the closed form of A <=> B and against `PetabProblem.simulate` at the measured rows,
the noise band against the noise formulas, one figure per plotId of a visualization table,
and log axes for log10 observables. The problem is written by the test."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

import sensitivity as sens
from sensitivity.app.runners.petab import plot_fit
from sensitivity.plots import petab as petab_plots

SBML = """<?xml version="1.0" encoding="UTF-8"?>
<sbml xmlns="http://www.sbml.org/sbml/level2/version4" level="2" version="4">
 <model id="conversion">
  <listOfCompartments><compartment id="c" size="1" constant="true"/></listOfCompartments>
  <listOfSpecies>
   <species id="A" compartment="c" initialConcentration="1"/>
   <species id="B" compartment="c" initialConcentration="0.5"/>
  </listOfSpecies>
  <listOfParameters>
   <parameter id="a0" value="1" constant="true"/><parameter id="b0" value="0.5" constant="true"/>
   <parameter id="k1" value="0.8" constant="true"/><parameter id="k2" value="0.6" constant="true"/>
  </listOfParameters>
  <listOfInitialAssignments>
   <initialAssignment symbol="A"><math xmlns="http://www.w3.org/1998/Math/MathML"><ci>a0</ci></math></initialAssignment>
   <initialAssignment symbol="B"><math xmlns="http://www.w3.org/1998/Math/MathML"><ci>b0</ci></math></initialAssignment>
  </listOfInitialAssignments>
  <listOfReactions>
   <reaction id="fwd" reversible="false">
    <listOfReactants><speciesReference species="A"/></listOfReactants>
    <listOfProducts><speciesReference species="B"/></listOfProducts>
    <kineticLaw><math xmlns="http://www.w3.org/1998/Math/MathML"><apply><times/><ci>k1</ci><ci>A</ci></apply></math></kineticLaw>
   </reaction>
   <reaction id="rev" reversible="false">
    <listOfReactants><speciesReference species="B"/></listOfReactants>
    <listOfProducts><speciesReference species="A"/></listOfProducts>
    <kineticLaw><math xmlns="http://www.w3.org/1998/Math/MathML"><apply><times/><ci>k2</ci><ci>B</ci></apply></math></kineticLaw>
   </reaction>
  </listOfReactions>
 </model>
</sbml>
"""
K1, K2, B0, SCALE = 0.8, 0.6, 0.5, 2.0
A0 = {"c0": 1.0, "c1": 2.0}
TABLES = {
    "conditions.tsv": """\
        conditionId	a0
        c0	1
        c1	2
        """,
    "parameters.tsv": """\
        parameterId	parameterScale	lowerBound	upperBound	nominalValue	estimate
        k1	log10	0.01	10	0.8	1
        k2	log10	0.01	10	0.6	1
        scale_b	lin	0.1	10	2.0	1
        """,
    # obs_lin: noise as numbers in the table (error bars); obs_log: log10, noise 0.1 on log10;
    # obs_rel: noise that depends on the state
    "observables.tsv": """\
        observableId	observableFormula	noiseFormula	observableTransformation
        obs_lin	A	noiseParameter1_obs_lin	lin
        obs_log	scale_b * B	0.1	log10
        obs_rel	A	0.02 + 0.1 * A	lin
        """,
    # under c1, obs_lin's noise parameters differ between time points: drawn at those times only
    "measurements.tsv": """\
        observableId	simulationConditionId	time	measurement	noiseParameters	datasetId
        obs_lin	c0	0	1.02	0.05	d_lin_c0
        obs_lin	c0	1.5	0.74	0.05	d_lin_c0
        obs_lin	c0	6	0.66	0.05	d_lin_c0
        obs_lin	c1	1	1.5	0.05	d_lin_c1
        obs_lin	c1	4	1.1	0.1	d_lin_c1
        obs_log	c0	0.5	1.3		d_log
        obs_log	c0	3	1.7		d_log
        obs_log	c1	2	2.6		d_log
        obs_rel	c0	2	0.7		d_rel
        obs_rel	c0	2	0.64		d_rel
        obs_rel	c0	5	0.62		d_rel
        obs_rel	c1	2	1.35		d_rel
        obs_rel	c1	5	1.3		d_rel
        """,
    "visualization.tsv": """\
        plotId	plotName	plotTypeSimulation	plotTypeData	datasetId	xValues	xScale	yValues	yScale	legendEntry	color
        p_time	A over time	LinePlot	provided	d_lin_c0	time	lin	obs_lin	lin	a0 = 1	red
        p_time	A over time	LinePlot	provided	d_lin_c1	time	lin	obs_lin	lin	a0 = 2	blue
        p_log	B	LinePlot	MeanAndSD	d_log	time	lin	obs_log	log10	B	red
        p_scatter	sim vs data	ScatterPlot	MeanAndSD	d_rel	time	lin	obs_rel	lin	A	red
        p_dose	dose response	LinePlot	MeanAndSD	d_rel	a0	lin	obs_rel	lin	A	red
        p_bar	bars	BarPlot	MeanAndSEM	d_lin_c0	time	lin	obs_lin	lin	A	red
        """,
}
YAML = """\
format_version: 1
parameter_file: parameters.tsv
problems:
- condition_files: [conditions.tsv]
  measurement_files: [measurements.tsv]
  observable_files: [observables.tsv]
  visualization_files: [visualization.tsv]
  sbml_files: [model.xml]
"""


def _a(t, a0):
    """A(t) of A <=> B in closed form."""
    s = K1 + K2
    eq = (a0 + B0) * K2 / s
    return eq + (a0 - eq) * np.exp(-s * np.asarray(t, dtype=float))


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    """The problem, its figures (plot_fit: the runner's call) and the figures' objects."""
    folder = tmp_path_factory.mktemp("petab_plots")
    for name, text in TABLES.items():
        (folder / name).write_text(textwrap.dedent(text))
    (folder / "model.xml").write_text(SBML)
    (folder / "problem.yaml").write_text(YAML)
    prob = sens.petab.load(folder / "problem.yaml")
    out = folder / "plots"
    out.mkdir()
    figures = {}
    finish = petab_plots._finish

    def keep(fig, path):
        figures[path.name] = fig
        return finish(fig, path)

    curves = []
    fit_curves = petab_plots.fit_curves

    def keep_curves(*a, **k):
        curves.append(fit_curves(*a, **k))
        return curves[-1]

    mp = pytest.MonkeyPatch()
    mp.setattr(petab_plots, "_finish", keep)
    mp.setattr(petab_plots, "fit_curves", keep_curves)
    try:
        files = plot_fit(prob, out, n_grid=60)
    finally:
        mp.undo()
    return prob, curves[0], files, figures


def test_grid_simulation_is_the_closed_form_and_the_problems_simulation(drawn):
    prob, curves, _, _ = drawn
    g = curves.grid
    for cond, a0 in A0.items():
        rel = g[(g["observableId"] == "obs_rel") & (g["simulationConditionId"] == cond)]
        assert len(rel) >= 60 and rel["time"].min() == 0.0
        np.testing.assert_allclose(rel["simulation"], _a(rel["time"], a0), rtol=1e-6, atol=1e-9)
        log = g[(g["observableId"] == "obs_log") & (g["simulationConditionId"] == cond)]
        np.testing.assert_allclose(log["simulation"], SCALE * (a0 + B0 - _a(log["time"], a0)), rtol=1e-6)
    # at the measured rows the grid's curve passes through PetabProblem.simulate's values
    sim = prob.simulate()
    checked = 0
    for _, r in sim.iterrows():
        key = (r["observableId"], "", r["simulationConditionId"])
        if key in curves.at_measured:
            continue
        at = g[(g["observableId"] == key[0]) & (g["simulationConditionId"] == key[2]) & (g["time"] == r["time"])]
        assert len(at) == 1
        np.testing.assert_allclose(at["simulation"].iloc[0], r["simulation"], rtol=1e-6, atol=1e-9)
        checked += 1
    assert checked == len(sim)
    np.testing.assert_allclose(curves.measured["simulation"], sim["simulation"], rtol=1e-6, atol=1e-9)


def test_band_is_value_plus_minus_the_noise_formulas_sigma(drawn):
    _, curves, _, _ = drawn
    g = curves.grid
    rel = g[g["observableId"] == "obs_rel"]
    a = rel["simulation"].to_numpy()
    np.testing.assert_allclose(rel["sigma"], 0.02 + 0.1 * a, rtol=1e-12)
    np.testing.assert_allclose(rel["lower"], a - (0.02 + 0.1 * a), rtol=1e-12)
    np.testing.assert_allclose(rel["upper"], a + (0.02 + 0.1 * a), rtol=1e-12)
    log = g[g["observableId"] == "obs_log"]  # log10: sigma 0.1 on log10, a factor 10^0.1 either way
    y = log["simulation"].to_numpy()
    np.testing.assert_allclose(log["sigma"], 0.1)
    np.testing.assert_allclose(log["lower"], y / 10 ** 0.1, rtol=1e-12)
    np.testing.assert_allclose(log["upper"], y * 10 ** 0.1, rtol=1e-12)
    lin = g[g["observableId"] == "obs_lin"]  # the measured rows' noise parameter, 0.05
    np.testing.assert_allclose(lin["upper"] - lin["simulation"], 0.05, rtol=1e-9)
    m = curves.measured
    # noise as numbers: obs_lin's noise parameters and obs_log's formula 0.1; obs_rel's is no number
    assert m.loc[m["observableId"] != "obs_rel", "noise_given"].all()
    assert not m.loc[m["observableId"] == "obs_rel", "noise_given"].any()


def test_varying_noise_parameters_band_at_the_measurement_times_and_said(drawn):
    _, curves, files, figures = drawn
    assert curves.at_measured == set() and curves.band_at_measured == {("obs_lin", "", "c1")}
    g = curves.grid
    line = g[(g["observableId"] == "obs_lin") & (g["simulationConditionId"] == "c1")]
    np.testing.assert_allclose(line["simulation"], _a(line["time"], 2.0), rtol=1e-6, atol=1e-9)
    notes = (files[0].parent / "notes.txt").read_text()
    assert "'obs_lin' under 'c1': its noiseParameters differ between time points; noise band drawn at the " \
           "measurement times only" in notes
    # its band is the polygon through the two measured rows: a lower edge at 1.0 and 4.0 only
    m = curves.measured
    rows = m[(m["observableId"] == "obs_lin") & (m["simulationConditionId"] == "c1")]
    np.testing.assert_allclose(rows["upper"] - rows["simulation"], [0.05, 0.1], rtol=1e-9)
    from matplotlib.collections import PolyCollection

    bands = [set(np.round(c.get_paths()[0].vertices[:, 0], 9)) for c in figures["obs_lin.png"].axes[0].collections
             if isinstance(c, PolyCollection)]
    assert len(bands) == 2 and bands[1] == {1.0, 4.0} and len(bands[0]) > 50


def test_varying_observable_parameters_draw_at_the_measurement_times(tmp_path):
    import pandas as pd

    m = pd.DataFrame({"observableId": "o", "simulationConditionId": "c", "time": [0.0, 1.0, 2.0],
                      "measurement": [1.0, 2.0, 3.0], "observableParameters": ["1", "2", "2"]})
    obs = pd.DataFrame({"observableFormula": ["observableParameter1_o * x"], "noiseFormula": ["0.5"]},
                       index=pd.Index(["o"], name="observableId"))

    def simulate(rows):  # a stand-in simulation: y = scale * t
        return rows["time"].to_numpy(float) * rows["observableParameters"].astype(float), np.full(len(rows), 0.5)

    curves = petab_plots.fit_curves(m, obs, simulate, n_grid=5)
    assert curves.at_measured == {("o", "", "c")} and len(curves.grid) == 0
    assert "observableParameters differ between time points; simulation and band drawn at the measurement" \
        in curves.notes[0]
    np.testing.assert_allclose(curves.measured["simulation"], [0.0, 2.0, 4.0])
    assert [p.name for p in petab_plots.observable_figures(curves, tmp_path)] == ["o.png"]


def test_figures_per_observable_and_per_plot_id_with_log_axes(drawn):
    _, _, files, figures = drawn
    names = {f.name for f in files}
    assert names == {"obs_lin.png", "obs_log.png", "obs_rel.png", "vis_p_time.png", "vis_p_log.png",
                     "vis_p_scatter.png", "vis_p_dose.png", "vis_p_bar.png", "notes.txt"}
    assert all(f.stat().st_size > 5000 for f in files if f.suffix == ".png")
    ax = {k: f.axes[0] for k, f in figures.items()}
    assert ax["obs_log.png"].get_yscale() == "log" and ax["vis_p_log.png"].get_yscale() == "log"
    assert ax["obs_lin.png"].get_yscale() == "linear" and ax["vis_p_time.png"].get_yscale() == "linear"
    # p_time: two datasets, each a line; p_dose: x is the condition's a0, one line per time
    assert [ln.get_label() for ln in ax["vis_p_time.png"].get_lines() if not ln.get_label().startswith("_")] \
        == ["a0 = 1", "a0 = 2"]
    dose = [ln for ln in ax["vis_p_dose.png"].get_lines() if not ln.get_label().startswith("_")]
    assert [ln.get_label() for ln in dose] == ["A, t = 2", "A, t = 5"]
    np.testing.assert_allclose(dose[0].get_xdata(), [1.0, 2.0])
    np.testing.assert_allclose(dose[0].get_ydata(), [_a(2.0, 1.0), _a(2.0, 2.0)], rtol=1e-6)
    assert ax["vis_p_scatter.png"].get_xlabel() == "data"
    notes = (files[0].parent / "notes.txt").read_text()
    assert "column color of the visualization table not supported" in notes


def test_a_simulation_that_is_not_finite_somewhere_is_left_out_and_said(tmp_path):
    import pandas as pd

    m = pd.DataFrame({"observableId": "r", "simulationConditionId": "c", "time": [0.0, 2.0],
                      "measurement": [1.0, 1.0]})
    obs = pd.DataFrame({"observableFormula": ["x / x0"], "noiseFormula": ["0.1"],
                        "observableTransformation": ["log"]}, index=pd.Index(["r"], name="observableId"))

    def simulate(rows):  # a stand-in: NaN at t = 0 (0 / 0), e^t / 2 after
        t = rows["time"].to_numpy(float)
        return np.where(t == 0, np.nan, np.exp(t) / 2), np.full(len(rows), 0.1)

    curves = petab_plots.fit_curves(m, obs, simulate, n_grid=11)
    assert curves.not_finite == {("r", "", "c")} and "not finite at 1 grid times" in curves.notes[0]
    g = curves.grid
    np.testing.assert_allclose(g["lower"].iloc[1:], np.exp(g["time"].iloc[1:]) / 2 / np.exp(0.1))  # log: e^-sigma
    files = petab_plots.observable_figures(curves, tmp_path)
    assert [f.name for f in files] == ["r.png"]


def test_replicates_and_their_mean_with_sd_or_sem(tmp_path):
    """plotTypeData on a stand-in simulation: MeanAndSD / MeanAndSEM error bars are NumPy's
    SD (ddof 1) and SD / sqrt(n) of the replicates; `replicate` joins each replicate's points."""
    import pandas as pd
    from matplotlib.collections import LineCollection

    t = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    m = pd.DataFrame({"observableId": "o", "simulationConditionId": "c", "time": t,
                      "measurement": [1.0, 1.4, 0.9, 2.0, 2.6, 2.1], "replicateId": ["r1", "r2", "r3"] * 2,
                      "datasetId": "d"})
    obs = pd.DataFrame({"observableFormula": ["x"], "noiseFormula": ["s"]}, index=pd.Index(["o"], name="observableId"))

    def simulate(rows):
        return 1.0 + rows["time"].to_numpy(float), np.full(len(rows), 0.2)

    curves = petab_plots.fit_curves(m, obs, simulate, n_grid=5)
    vis = pd.DataFrame({"plotId": ["sd", "sem", "rep"], "plotTypeData": ["MeanAndSD", "MeanAndSEM", "replicate"],
                        "datasetId": "d", "yValues": "o"})
    figures = {}
    mp = pytest.MonkeyPatch()
    mp.setattr(petab_plots, "_finish", lambda fig, path: figures.setdefault(path.name, fig))
    try:
        files, notes = petab_plots.visualization_figures(curves, vis, None, tmp_path)
    finally:
        mp.undo()
    assert [f.name for f in files] == ["vis_sd.png", "vis_sem.png", "vis_rep.png"] and notes == []
    y = np.array([[1.0, 1.4, 0.9], [2.0, 2.6, 2.1]])
    for name, err in (("vis_sd.png", y.std(axis=1, ddof=1)), ("vis_sem.png", y.std(axis=1, ddof=1) / np.sqrt(3))):
        bars = [c for c in figures[name].axes[0].collections if isinstance(c, LineCollection)][0]
        half = [0.5 * (s[1, 1] - s[0, 1]) for s in bars.get_segments()]
        np.testing.assert_allclose(half, err, rtol=1e-12)
    joined = [ln for ln in figures["vis_rep.png"].axes[0].get_lines() if ln.get_linestyle() == ":"]
    assert len(joined) == 3 and all(len(ln.get_xdata()) == 2 for ln in joined)
