"""Designs of PEtab problems from a run config's `design:` block and from `sensitivity petab
--design N --design-*`, on the PEtab test suite's case 0002 (A <=> B, two conditions that set
a0) with a new condition c_hi (a0 = 3, b0 = 0.5) given as a condition TSV:

- the chosen measurements are those of `sens.design` called from Python;
- the standard errors after the design are those of the Fisher information of the PEtab
  problem whose tables hold the new condition and the chosen measurements (an independent
  `PetabProblem.fisher` of those files);
- `sensitivity validate` names an unknown condition-table column, a new id that clashes with
  an existing condition, an unknown parameter and a missing condition file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sensitivity as sens
from sensitivity.app import cli

CASE = Path(__file__).resolve().parents[1] / "../shared/petab-test-suite/cases/v1.0.0/sbml/0002/_0002.yaml"
NEW = {"c_hi": {"a0": 3.0, "b0": 0.5}}
TIMES = np.linspace(0.0, 10.0, 21)
pytestmark = pytest.mark.skipif(not CASE.is_file(), reason="the PEtab test suite is not in ../shared")

CONFIG = """
petab: {problem}
design:
  n: 3
  criterion: {criterion}
  times: {{from: 0.0, to: 10.0, points: 21}}
  conditions: new_conditions.tsv
output: {{plots: true}}
"""


@pytest.fixture(scope="module")
def prob():
    return sens.petab.load(CASE)


def _conditions(folder: Path) -> Path:
    path = folder / "new_conditions.tsv"
    path.write_text("conditionId\ta0\tb0\nc_hi\t3.0\t0.5\n")
    return path


def _augmented_fisher(chosen: pd.DataFrame, tmp_path: Path) -> np.ndarray:
    """The Fisher information of the PEtab problem that adds c_hi and the chosen rows (a
    replicate as often as chosen)."""
    folder = tmp_path / "augmented"
    shutil.copytree(CASE.parent, folder)
    with open(folder / "_conditions.tsv", "a") as f:
        f.write("c_hi\t3.0\t0.5\n")
    with open(folder / "_measurements.tsv", "a") as f:
        f.writelines(f"{o}\t{c}\t{float(t)!r}\t1.0\n" for o, c, t, k in
                     zip(chosen["output"], chosen["condition"], chosen["time"], chosen["chosen"]) for _ in range(k))
    return sens.petab.load(folder / CASE.name).fisher()


def _check(out: Path, expected, tmp_path: Path, criterion: str):
    chosen = pd.read_csv(out / "design.csv")
    want = expected.to_frame("chosen")
    assert (sorted(zip(chosen["condition"], chosen["time"], chosen["chosen"]))
            == sorted(zip(want["condition"], want["time"], want["chosen"])))
    assert (out / "design.png").is_file() and (out / "design_candidates.csv").is_file()
    summary = json.loads((out / "summary.json").read_text())["design"]
    assert summary["criterion"] == criterion and summary["n"] == 3
    assert summary["value"] == pytest.approx(expected.value, rel=1e-8)
    F = _augmented_fisher(chosen, tmp_path)
    inputs = pd.read_csv(out / "design_inputs.csv", index_col=0)
    se = np.sqrt(np.diag(np.linalg.inv(F)))
    np.testing.assert_allclose(inputs.loc[list(expected.input_names), "standard_error_after"], se, rtol=1e-6)


@pytest.mark.parametrize("criterion", ["D", "A"])
def test_run_config_design_with_new_conditions(prob, tmp_path, criterion):
    _conditions(tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG.format(problem=CASE, criterion=criterion).lstrip())
    out = tmp_path / "result"
    assert cli.main(["validate", str(config)]) == 0
    assert cli.main(["run", str(config), "--out", str(out), "-q"]) == 0
    expected = sens.design(prob, candidates=TIMES, n=3, criterion=criterion, conditions=NEW)
    assert set(expected.chosen["condition"]) == {"c_hi"}
    _check(out, expected, tmp_path, criterion)


def test_cli_design_options(prob, tmp_path):
    path = _conditions(tmp_path)
    out = tmp_path / "cli"
    argv = ["petab", str(CASE), "--design", "3", "--design-criterion", "D_s", "--design-parameters", "k1",
            "--design-method", "greedy", "--design-times", *map(str, TIMES), "--design-conditions", str(path),
            "--out", str(out), "-q"]
    assert cli.main(argv) == 0
    expected = sens.design(prob, candidates=TIMES, n=3, criterion="D_s", parameters=["k1"], method="greedy",
                           conditions=NEW)
    _check(out, expected, tmp_path, "D_s")


def test_validate_names_the_element(tmp_path, capsys):
    (tmp_path / "bad.tsv").write_text("conditionId\ta00\nc0\t1.0\n")
    config = tmp_path / "bad.yaml"
    config.write_text(f"""
petab: {CASE}
design:
  n: 2
  criterion: D_s
  parameters: [k3]
  conditions: {{c1: {{a0: 2.0}}, c_new: {{bb0: 1.0}}}}
  costs: {{obs_b: 1.0}}
""".lstrip())
    assert cli.main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    assert "design.parameters[0] = 'k3'" in err
    assert "design.conditions.c1: 'c1' is a condition of the condition table already" in err
    assert "design.conditions.c_new.bb0: not a condition-table column" in err and "did you mean 'b0'" in err
    assert "design.costs.obs_b: not an observable" in err
    config.write_text(f"petab: {CASE}\ndesign: {{n: 2, conditions: bad.tsv}}\n")
    assert cli.main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    assert "design.conditions.c0: 'c0' is a condition" in err and "design.conditions.c0.a00" in err
    config.write_text(f"petab: {CASE}\ndesign: {{n: 2, conditions: missing.tsv}}\n")
    assert cli.main(["validate", str(config)]) == 2
    assert "design.conditions: file" in capsys.readouterr().err
    assert cli.main(["petab", str(CASE), "--design-criterion", "A", "-q"]) == 2
