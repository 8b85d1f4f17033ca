"""benchmarks/petab.py, our side only (AMICI is an optional extra and stays out of the
suite): one small problem of the collection through the script's subprocesses, a cold and a
warm process, checked against the collection's published reference likelihood."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "petab"
NAME = "Boehm_JProteomeRes2014"
# AMICI's reference log-likelihood at the nominal parameters and the problem's size, from
# ../shared/petab/README.md
LLH_REF = -138.221997
SIZES = (8, 9, 1)

pytestmark = pytest.mark.skipif(not (DATA / NAME).is_dir(), reason=f"{DATA / NAME} not present")


def test_our_side_on_one_problem(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "petab.py"), "--problems", NAME,
                           "--repeats", "1", "--modes", "auto,forward,adjoint", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads((tmp_path / "petab.json").read_text())
    assert row["problem"] == NAME and "amici" not in row
    cold, warm = row["ours_cold"], row["ours"]
    assert "error" not in cold and "error" not in warm, (cold, warm)
    assert (warm["n_states"], warm["n_parameters"], warm["n_conditions"]) == SIZES
    assert abs(warm["nllh"] + LLH_REF) < 1e-3
    assert len(warm["grad"]["auto"]) == SIZES[1] and warm["auto_mode"] in ("forward", "adjoint")
    # the first call's parts add up, and the per-call medians are below the first call
    for side in (cold, warm):
        assert side["import_s"] + side["load_s"] + side["first_gradient_s"] <= side["first_call_s"] + 1e-6
    assert 0 < warm["auto_s"] < cold["first_gradient_s"] and 0 < warm["nllh_s"]
    text = (tmp_path / "petab.md").read_text()
    assert f"| {NAME} | 8 / 9 / 1 |" in text and "Problems not loaded" in text
    assert not (tmp_path / "petab_ratios.png").exists()  # no AMICI, no ratios
    # the forced modes: the same gradient by forward and by reverse sweeps, in the modes table
    import numpy as np
    assert np.allclose(warm["grad"]["forward"], warm["grad"]["adjoint"], rtol=1e-5, atol=1e-8)
    assert f"| {NAME} | 72 | " in text and "auto / faster" in text
