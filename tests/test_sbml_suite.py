"""A fixed sample of the SBML semantic test suite (../shared/sbml-test-suite), run by the
same code as benchmarks/sbml_suite.py (`run_case`) against the suite's expected values and
tolerance rule: any wrong result or crash fails. The sample is a greedy cover of every
component and test tag the import supports (each case picked for the most tags not yet
covered), so each supported construct is run at least once; the whole suite is the
benchmark's job.
"""

import importlib.util
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT.parent / "shared" / "sbml-test-suite" / "cases" / "semantic"

pytestmark = pytest.mark.skipif(not SUITE.is_dir(), reason="../shared/sbml-test-suite is absent")

# a greedy cover of the tags of the cases that pass (benchmarks/results/sbml_suite.csv)
SAMPLE = ["00155", "00929", "01029", "01121", "01133", "01141", "01153", "01181", "01209", "01241",
          "01289", "01461", "01497", "01505"]
# scheduled events: delays (values from the trigger and the execution time), priorities,
# persistent and non-persistent triggers, t0 firing
SAMPLE += ["01333", "01337", "01661", "01757"]
# algebraic rules (explicit) and a fast reaction with an algebraic rule (a constraint)
SAMPLE += ["00553", "01567"]
# Booleans as numbers (kinetic laws of true and false; an algebraic rule p1 - true = 0)
SAMPLE += ["01288", "01292"]
# several fast reactions
SAMPLE += ["01569"]
# a delayed event whose trigger on sin(10 t) turns true and false again within the steps the
# error control takes; an event that assigns a concentration and its compartment together
SAMPLE += ["00936", "01506"]
# cases refused by name: not a time course, too many scheduled events, delay(), events that
# accumulate (each reset leaves the trigger closer to its next crossing)
REFUSED = {"01189": "FluxBalanceSteadyState", "01533": "it takes at most 40", "00937": "delay()",
           "00374": "max_occurrences"}


def _runner():
    spec = importlib.util.spec_from_file_location("sbml_suite", ROOT / "benchmarks" / "sbml_suite.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def runner():
    return _runner()


@pytest.mark.parametrize("case", SAMPLE)
def test_case_passes(runner, case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = runner.run_case(case, SUITE)
    assert out["status"] == "pass", f"case {case}: {out['status']}: {out['reason']}"


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_case_refused_by_name(runner, case):
    out = runner.run_case(case, SUITE)
    assert out["status"] == "refused" and REFUSED[case] in out["reason"], out


def test_sample_covers_the_supported_tags(runner):
    """Every tag of a case the full run passes is a tag of some case of the sample."""
    table = ROOT / "benchmarks" / "results" / "sbml_suite.csv"
    if not table.exists():
        pytest.skip("no benchmarks/results/sbml_suite.csv (run benchmarks/sbml_suite.py)")
    import csv
    rows = list(csv.DictReader(open(table)))
    passed = {t for r in rows if r["status"] == "pass" for t in (r["component_tags"] + " " + r["test_tags"]).split()}
    sampled = set()
    for case in SAMPLE:
        info = runner.case_info(case, SUITE)
        sampled |= set(info["component_tags"] + info["test_tags"])
    assert passed <= sampled, f"tags passed by the suite but not sampled: {sorted(passed - sampled)}"


def test_compare_is_the_suites_rule(runner):
    """|C - U| <= absolute + relative |C|, NaN only matched by NaN (hand-computed bounds)."""
    import numpy as np
    want = np.array([[1.0, 0.0], [2.0, np.nan]])
    ok, worst, _ = runner.compare(want, np.array([[1.0 + 1.5e-4, 0.0], [2.0, np.nan]]), 1e-4, 1e-4)
    assert ok and worst == pytest.approx(1.5e-4 / 2e-4)
    ok, _, col = runner.compare(want, np.array([[1.0, 0.0], [2.0, 0.0]]), 1e-4, 1e-4)
    assert not ok and col == 1
