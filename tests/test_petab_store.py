"""A PEtab problem's programs and its record in the store of traced programs: a second
process loads them instead of reading the tables and tracing, and computes the same values."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import sensitivity as sens
from sensitivity.importers import petab as petab_import

ROOT = Path(__file__).resolve().parents[1]
PERELSON = ROOT.parent / "shared" / "petab" / "Perelson_Science1996" / "Perelson_Science1996.yaml"
pytestmark = pytest.mark.skipif(not PERELSON.is_file(), reason="../shared/petab not present")

CHILD = """
import json, sys
import sensitivity as sens
from sensitivity.stores import programs
prob = sens.petab.load(sys.argv[1])
g = prob.gradient(mode="forward")
light = sorted(m for m in ("petab", "sympy", "libsbml") if m in sys.modules)
n_states = len(prob.model.states)  # read on demand: the tables and the model are parsed now
print(json.dumps({"value": g.value, "grad": g.grad.tolist(), "store": programs.STATS,
                  "imported": light, "n_states": n_states}))
"""


def _child(cache: Path) -> dict:
    env = dict(os.environ, XDG_CACHE_HOME=str(cache))
    env.pop("SENSITIVITY_NO_EXPORT_STORE", None)
    env.pop("SENSITIVITY_NO_DISK_CACHE", None)
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", CHILD, str(PERELSON)], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_second_process_loads_the_programs_and_the_record_and_gets_the_same_values(tmp_path):
    fresh = sens.petab.load(PERELSON)  # this process: the store is off (conftest), so traced here
    g = fresh.gradient(mode="forward")
    first = _child(tmp_path)
    assert first["store"]["saved"] >= 1 and first["store"]["loaded"] == 0
    assert first["store"]["records saved"] == 1
    second = _child(tmp_path)
    # the gradient's program and the problem's record came from the store: nothing traced,
    # and neither the petab package nor sympy imported until the model was asked for
    assert second["store"]["loaded"] >= 1 and second["store"]["missed"] == 0 and second["store"]["saved"] == 0
    assert second["store"]["records loaded"] == 1
    assert second["imported"] == []
    for run in (first, second):  # the exported program is the traced one: the same numbers
        assert run["value"] == g.value
        np.testing.assert_array_equal(run["grad"], g.grad)
        assert run["n_states"] == len(fresh.model.states)


@pytest.fixture
def store_on(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("SENSITIVITY_NO_EXPORT_STORE", raising=False)
    monkeypatch.delenv("SENSITIVITY_NO_DISK_CACHE", raising=False)


def test_a_problem_from_its_record_has_the_parsed_arrays_and_reads_the_rest_on_demand(store_on):
    parsed = sens.petab.load(PERELSON)
    assert not parsed._light
    stored = sens.petab.load(PERELSON)
    assert stored._light and "model" not in stored.__dict__
    for name in ("x_names", "scales", "theta_names", "priors", "_fingerprint", "_plan_shape"):
        assert getattr(stored, name) == getattr(parsed, name), name
    for name in ("x_nominal", "lower", "upper", "theta_nominal", "est_index", "_scale_code"):
        np.testing.assert_array_equal(getattr(stored, name), getattr(parsed, name))
        assert getattr(stored, name).dtype == getattr(parsed, name).dtype, name
    assert stored.model.id == parsed.model.id and not stored._light  # parsed now
    assert len(stored.measurements) == len(parsed.measurements)
    probe = sens.petab.load(PERELSON)
    assert not hasattr(probe, "value_and_grad") and probe._light  # a probe for another interface: no parse
    with pytest.raises(AttributeError):
        stored.no_such_attribute


def test_changed_files_or_validation_get_another_record(store_on, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(PERELSON.parent, folder)
    yaml_path = folder / PERELSON.name
    spec = yaml.safe_load(yaml_path.read_text())
    key = petab_import._load_key(yaml_path, spec, True)
    assert key == petab_import._load_key(PERELSON, spec, True)  # the same bytes elsewhere
    assert key != petab_import._load_key(yaml_path, spec, False)
    measurements = folder / spec["problems"][0]["measurement_files"][0]
    text = measurements.read_text()
    measurements.write_text(text.replace("\t1029000\t", "\t1029001\t", 1))
    assert measurements.read_text() != text
    assert petab_import._load_key(yaml_path, spec, True) != key
