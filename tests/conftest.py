"""Test-session settings.

The store of exported programs (`sensitivity/export_store.py`) outlives a process, so a
second run of the suite would load programs instead of tracing them, and tests that count
traces or compiles would see a warm store left by the first run. The suite turns it off;
tests/test_export_store.py turns it back on, in a temporary cache folder, where it tests it.
JAX's own persistent compile cache stays on (it does not skip tracing).
"""

import os

import pytest

os.environ["SENSITIVITY_NO_EXPORT_STORE"] = "1"


def _write_switch_sbml(path, switch: str = "t_on"):
    """An SBML model A' = -k A once time >= `switch` (a piecewise of time), A(0) = 2,
    parameters k = 0.8 and t_on = 1; returns the path."""
    import libsbml

    doc = libsbml.SBMLDocument(3, 1)
    m = doc.createModel()
    m.setId("switch")
    c = m.createCompartment()
    c.setId("c"), c.setSize(1.0), c.setConstant(True)
    s = m.createSpecies()
    s.setId("A"), s.setCompartment("c"), s.setInitialConcentration(2.0)
    s.setHasOnlySubstanceUnits(False), s.setBoundaryCondition(False), s.setConstant(False)
    for pid, v in (("k", 0.8), ("t_on", 1.0)):
        p = m.createParameter()
        p.setId(pid), p.setValue(v), p.setConstant(True)
    r = m.createReaction()
    r.setId("decay"), r.setReversible(False), r.setFast(False)
    x = r.createReactant()
    x.setSpecies("A"), x.setStoichiometry(1), x.setConstant(True)
    r.createKineticLaw().setMath(libsbml.parseL3Formula(f"c * k * A * piecewise(1, time >= {switch}, 0)"))
    libsbml.writeSBMLToFile(doc, str(path))
    return path


@pytest.fixture
def switch_sbml():
    """The writer of a one-species SBML model with a switch in time (`_write_switch_sbml`)."""
    return _write_switch_sbml
