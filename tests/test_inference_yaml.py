"""Multi-start, profiles and posterior sampling as a user runs them: `analysis: {fit,
multistart, profile, sample}` in a YAML config through `sensitivity run`, and a PEtab problem
through `sensitivity petab --starts --identifiability --profile --sample` and a `petab:` run
config; the files in the result folder checked against the closed form.

A model linear in its parameters with Gaussian noise (y = c + a t + b t^2 / 2, and for
PEtab y = a t + b0) has the weighted least-squares estimate beta = (X^T W X)^-1 X^T W y, an
exactly quadratic profile (c - beta_i)^2 / (2 se_i^2) with the interval beta_i +-
sqrt(chi2.ppf(level, 1)) se_i, and (flat prior) the Gaussian posterior N(beta, (X^T W X)^-1).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2

import sensitivity as sens
from sensitivity.app import cli
from sensitivity.app.config import run as config

pytest.importorskip("blackjax")
az = pytest.importorskip("arviz")

T = np.linspace(0.25, 3.0, 12)
SIGMA = 0.5
Z95 = float(np.sqrt(chi2.ppf(0.95, 1)))

MODEL = '''
import jax.numpy as jnp
import sensitivity as sens


def rhs(t, y, p):
    return jnp.stack([p["a"] + p["b"] * t + 0.0 * y[0]])


def model():
    return sens.ODEModel("linear", ["y"], {"a": 1.0, "b": -0.4}, rhs, {"y": 2.0})
'''

CONFIG = '''
model: lin.py:model
time: {start: 0.0, stop: 3.0, points: 7}
solver: {rtol: 1.0e-11, atol: 1.0e-11}
sensitivity: {wrt: [a, b, y0.y], mode: forward, probe: never}
analysis:
  fit: {data: obs.csv, sigma: 0.5, log_params: false, method: least_squares}
  multistart: {starts: 3, ranges: {a: [0.0, 2.0], b: [-1.0, 0.0], y0.y: [1.0, 3.0]}}
  profile: {level: 0.95}
  sample: {n: 150, chains: 2, warmup: 100, seed: 1}
output: {plots: [trajectories]}
'''


def _closed_form(X, y):
    """(beta, covariance, minimum of 1/2 sum r^2 / sigma^2) of weighted least squares."""
    W = np.eye(len(y)) / SIGMA ** 2
    cov = np.linalg.inv(X.T @ W @ X)
    beta = cov @ X.T @ W @ y
    r = (X @ beta - y) / SIGMA
    return beta, cov, 0.5 * float(r @ r)




def _folder(tmp_path: Path, text: str = CONFIG) -> Path:
    (tmp_path / "lin.py").write_text(textwrap.dedent(MODEL))
    (tmp_path / "run.yaml").write_text(textwrap.dedent(text).lstrip())
    return tmp_path / "run.yaml"


# --------------------------------------------------------------------------- a plain model
@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inference_yaml")
    path = _folder(folder)
    X = np.column_stack([T, T ** 2 / 2, np.ones_like(T)])
    y = X @ np.array([1.0, -0.4, 2.0]) + SIGMA * np.random.default_rng(4).standard_normal(T.size)
    pd.DataFrame({"time": T, "output": "y", "value": y}).to_csv(folder / "obs.csv", index=False)
    out = folder / "result"
    assert cli.main(["run", str(path), "--out", str(out), "-q"]) == 0
    return out, _closed_form(X, y)


def test_run_writes_every_file(plain):
    out, _ = plain
    summary = json.loads((out / "summary.json").read_text())
    for name in ("multistart.csv", "waterfall.png", "multistart_parameters.png", "profile_a.csv", "profile_b.csv",
                 "profile_y0.y.csv", "profile_intervals.csv", "profiles.png", "samples.nc", "samples.csv",
                 "sample_diagnostics.csv", "posterior_marginals.png"):
        assert (out / name).stat().st_size > 0, name
        assert name in summary["files"], name


def test_multistart_table_reaches_the_least_squares_minimum(plain):
    out, (beta, _, cost_min) = plain
    table = pd.read_csv(out / "multistart.csv")
    assert list(table["start"]) == [0, 1, 2, 3] and table["converged"].all() and table["at_best"].all()
    np.testing.assert_allclose(table["final_value"], cost_min, rtol=1e-9)
    np.testing.assert_allclose(table[["a", "b", "y0.y"]].to_numpy(), np.tile(beta, (4, 1)), atol=1e-6)
    ms = json.loads((out / "summary.json").read_text())["analysis"]["multistart"]
    assert ms["starts"] == 4 and ms["fraction_at_best"] == 1.0


def test_profiles_on_disk_are_the_exact_quadratics(plain):
    out, (beta, cov, _) = plain
    se = np.sqrt(np.diag(cov))
    intervals = pd.read_csv(out / "profile_intervals.csv", index_col=0)
    summary = json.loads((out / "summary.json").read_text())["analysis"]["profile"]
    for name, b, s in zip(["a", "b", "y0.y"], beta, se):
        assert intervals.loc[name, "lower"] == pytest.approx(b - Z95 * s, abs=1e-3 * s)
        assert intervals.loc[name, "upper"] == pytest.approx(b + Z95 * s, abs=1e-3 * s)
        assert intervals.loc[name, "verdict"] == "identifiable"
        assert summary["parameters"][name]["interval"] == pytest.approx(list(intervals.loc[name, ["lower", "upper"]]))
        path = pd.read_csv(out / f"profile_{name}.csv")
        np.testing.assert_allclose(path["delta_nllh"], (path[name] - b) ** 2 / (2 * s ** 2), atol=1e-6)
    assert summary["threshold"] == pytest.approx(chi2.ppf(0.95, 1) / 2)


def test_samples_on_disk_match_the_gaussian_posterior(plain, capsys):
    out, (beta, cov, _) = plain
    draws = pd.read_csv(out / "samples.csv")
    diag = pd.read_csv(out / "sample_diagnostics.csv", index_col=0)
    assert len(draws) == 2 * 150 and set(draws["chain"]) == {0, 1}
    sd = np.sqrt(np.diag(cov))
    ess = diag.loc[["a", "b", "y0.y"], "ess_bulk"].to_numpy()
    mean = draws[["a", "b", "y0.y"]].mean().to_numpy()
    assert np.all(np.abs(mean - beta) < 4 * sd / np.sqrt(ess)), (mean - beta) / sd
    np.testing.assert_allclose(diag.loc[["a", "b", "y0.y"], "mean"], mean, rtol=1e-9)
    idata = az.from_netcdf(out / "samples.nc")
    np.testing.assert_allclose(idata.posterior["a"].values.reshape(-1), draws["a"].to_numpy(), rtol=1e-9)
    s = json.loads((out / "summary.json").read_text())["analysis"]["sample"]
    # the verdict follows the thresholds it names
    assert s["converged"] == bool(max(s["rhat"].values()) < s["rhat_below"] and s["divergent"] == 0
                                  and min(s["ess_bulk"].values()) > s["ess_above"]
                                  and min(s["ess_tail"].values()) > s["ess_above"])


def test_validate_names_every_problem_of_the_blocks(tmp_path):
    bad = CONFIG.replace("profile: {level: 0.95}", "profile: {level: 1.5, parameters: [aa], method: newton}") \
                .replace("ranges: {a: [0.0, 2.0], b: [-1.0, 0.0], y0.y: [1.0, 3.0]}", "ranges: {c: [0.0, 2.0]}") \
                .replace("seed: 1}", "seed: 1, method: gibbs}")
    path = _folder(tmp_path, bad)
    with pytest.raises(sens.ConfigError) as info:
        config.load(path)
    text = "\n".join(info.value.problems)
    assert "analysis.profile.level" in text and "analysis.profile.method" in text
    assert "analysis.sample.method" in text and "nuts" in text
    assert "analysis.profile.parameters[0] = 'aa'" in text and "did you mean 'a'" in text
    assert "analysis.multistart.ranges.c: not a fitted input" in text
    # profile and sample need the fit's data
    no_fit = CONFIG.replace("  fit: {data: obs.csv, sigma: 0.5, log_params: false, method: least_squares}\n", "") \
                   .replace("  multistart: {starts: 3, ranges: {a: [0.0, 2.0], b: [-1.0, 0.0], y0.y: [1.0, 3.0]}}\n",
                            "")
    with pytest.raises(sens.ConfigError) as info:
        config.load(_folder(tmp_path, no_fit))
    assert any(p.startswith("analysis.profile: needs analysis.fit") for p in info.value.problems)
    assert cli.main(["validate", str(_folder(tmp_path, no_fit))]) == 2


# --------------------------------------------------------------------------- a PEtab problem
PETAB_T = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0])


def _write_petab(d: Path) -> Path:
    """y' = a, y(0) = 0, observed as y + b0 with sigma 0.5: linear in (a, b0)."""
    import libsbml

    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId("linear_petab")
    c = m.createCompartment()
    c.setId("c"), c.setSize(1.0), c.setConstant(True)
    s = m.createSpecies()
    s.setId("y"), s.setCompartment("c"), s.setInitialConcentration(0.0)
    s.setHasOnlySubstanceUnits(False), s.setBoundaryCondition(False), s.setConstant(False)
    p = m.createParameter()
    p.setId("a"), p.setValue(1.0), p.setConstant(True)
    r = m.createReaction()
    r.setId("make"), r.setReversible(False), r.setFast(False)
    prod = r.createProduct()
    prod.setSpecies("y"), prod.setStoichiometry(1), prod.setConstant(True)
    r.createKineticLaw().setMath(libsbml.parseL3Formula("a"))
    libsbml.writeSBMLToFile(doc, str(d / "model.xml"))
    y = 0.8 * PETAB_T + 0.3 + SIGMA * np.random.default_rng(7).standard_normal(PETAB_T.size)
    (d / "conditions.tsv").write_text("conditionId\nc0\n")
    (d / "observables.tsv").write_text("observableId\tobservableFormula\tnoiseFormula\n"
                                       "obs_y\ty + b0\t0.5\n")
    (d / "measurements.tsv").write_text("observableId\tsimulationConditionId\tmeasurement\ttime\n" + "".join(
        f"obs_y\tc0\t{float(v)!r}\t{float(t)!r}\n" for t, v in zip(PETAB_T, y)))
    (d / "parameters.tsv").write_text(
        "parameterId\tparameterScale\tlowerBound\tupperBound\tnominalValue\testimate\n"
        "a\tlin\t-5\t5\t1.0\t1\nb0\tlin\t-5\t5\t0.0\t1\n")
    (d / "problem.yaml").write_text(textwrap.dedent("""\
        format_version: 1
        parameter_file: parameters.tsv
        problems:
        - condition_files: [conditions.tsv]
          measurement_files: [measurements.tsv]
          observable_files: [observables.tsv]
          sbml_files: [model.xml]
        """))
    X = np.column_stack([PETAB_T, np.ones_like(PETAB_T)])
    return d / "problem.yaml", _closed_form(X, y)


@pytest.fixture(scope="module")
def petab_run(tmp_path_factory):
    pytest.importorskip("libsbml")
    d = tmp_path_factory.mktemp("petab_inference")
    problem, closed = _write_petab(d)
    out = d / "result"
    assert cli.main(["petab", str(problem), "--out", str(out), "--rtol", "1e-10", "--atol", "1e-10", "--starts", "2",
                     "--identifiability", "--profile", "--sample", "100", "--chains", "2", "--warmup", "100",
                     "-q"]) == 0
    return problem, out, closed


def test_petab_cli_multistart_profiles_and_samples(petab_run, capsys):
    problem, out, (beta, cov, _) = petab_run
    summary = json.loads((out / "summary.json").read_text())
    for name in ("multistart.csv", "waterfall.png", "profile_a.csv", "profile_b0.csv", "profile_intervals.csv",
                 "profiles.png", "samples.nc", "samples.csv", "sample_diagnostics.csv"):
        assert (out / name).stat().st_size > 0 and name in summary["files"], name
    table = pd.read_csv(out / "multistart.csv")
    assert len(table) == 3 and table["converged"].all()
    best = table.loc[table["final_value"].idxmin()]
    np.testing.assert_allclose(best[["a", "b0"]].to_numpy(float), beta, atol=1e-5)
    se = np.sqrt(np.diag(cov))
    intervals = pd.read_csv(out / "profile_intervals.csv", index_col=0)
    for name, b, s in zip(["a", "b0"], beta, se):
        assert intervals.loc[name, "lower"] == pytest.approx(b - Z95 * s, abs=1e-3 * s)
        assert intervals.loc[name, "upper"] == pytest.approx(b + Z95 * s, abs=1e-3 * s)
    draws = pd.read_csv(out / "samples.csv")
    ess = pd.read_csv(out / "sample_diagnostics.csv", index_col=0).loc[["a", "b0"], "ess_bulk"].to_numpy()
    mean = draws[["a", "b0"]].mean().to_numpy()
    assert np.all(np.abs(mean - beta) < 4 * se / np.sqrt(ess)), (mean - beta) / se
    assert summary["fit"]["starts"] == 3 and summary["multistart"]["at_best"] == 3
    # identifiability at the fit: the Fisher information of a linear model is X^T W X exactly
    ident = pd.read_csv(out / "identifiability.csv", index_col=0)
    np.testing.assert_allclose(ident.loc[["a", "b0"], "standard_error"], se, rtol=1e-6)
    assert summary["identifiability"]["identifiable"] and "collinearity.csv" in summary["files"]


def test_petab_run_config_validates_and_names_bad_entries(petab_run, tmp_path, capsys):
    problem, _, _ = petab_run
    good = tmp_path / "good.yaml"
    good.write_text(f"petab: {problem}\nfit: {{starts: 2}}\nprofile: {{parameters: [a]}}\nidentifiability: {{}}\n"
                    f"sample: {{n: 50, chains: 2}}\noutput: {{dir: {tmp_path / 'out'}}}\n")
    assert cli.main(["validate", str(good)]) == 0
    said = capsys.readouterr().out
    assert "2 starts" in said and "profiles of a" in said and "2 chains x 50 draws" in said
    assert "identifiability" in said
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"petab: {problem}\nfit: {{starts: 2, enabled: false}}\nprofile: {{parameters: [aa]}}\n")
    assert cli.main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "fit" in err and "starts implies it" in err
    bad.write_text(f"petab: {problem}\nprofile: {{parameters: [aa], level: 0.9}}\nsample: {{method: gibbs}}\n")
    assert cli.main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "sample.method" in err
    bad.write_text(f"petab: {problem}\nprofile: {{parameters: [aa]}}\n")
    assert cli.main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "profile.parameters[0] = 'aa': not an estimated parameter" in err and "did you mean 'a'" in err
    # sensitivity run of a petab: config: the integration-based profile, against the closed form
    _, _, (beta, cov, _) = petab_run
    run = tmp_path / "run.yaml"
    run.write_text(f"petab: {problem}\nsolver: {{rtol: 1.0e-10, atol: 1.0e-10}}\n"
                   f"profile: {{parameters: [a], method: integration, level: 0.68}}\n"
                   f"output: {{dir: {tmp_path / 'run_out'}, plots: false}}\n")
    assert cli.main(["run", str(run), "-q"]) == 0
    row = pd.read_csv(tmp_path / "run_out" / "profile_intervals.csv", index_col=0).loc["a"]
    z, se = np.sqrt(chi2.ppf(0.68, 1)), np.sqrt(cov[0, 0])
    assert (row["lower"], row["upper"]) == (pytest.approx(beta[0] - z * se, abs=1e-3 * se),
                                            pytest.approx(beta[0] + z * se, abs=1e-3 * se))
    assert json.loads((tmp_path / "run_out" / "summary.json").read_text())["profile"]["method"] == "integration"
    capsys.readouterr()
    # the same check from the command line, before any work
    assert cli.main(["petab", str(problem), "--profile", "aa", "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "--profile[0] = 'aa'" in capsys.readouterr().err
    assert cli.main(["petab", str(problem), "--starts", "0", "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "--starts = 0" in capsys.readouterr().err
