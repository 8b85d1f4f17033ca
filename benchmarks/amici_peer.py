"""pyPESTO's problem of a PEtab problem on AMICI, the peer that benchmarks/profiles.py and
benchmarks/sampling.py run beside ours (extras `pypesto` and `amici`).

Imported by those scripts before they take this folder off the import path (it holds
petab.py, named like the `petab` package); it imports pypesto only when called."""

from __future__ import annotations

import logging
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "petab"


def problem_yaml(name: str) -> Path:
    """DATA/name/name.yaml, or the folder's problem.yaml (as Bertozzi_PNAS2020 names it)."""
    own = DATA / name / f"{name}.yaml"
    return own if own.exists() else DATA / name / "problem.yaml"


def amici_problem(name: str, folder: str, rtol: float, atol: float):
    """(importer, pyPESTO problem, build seconds): pyPESTO's PEtab importer on
    the problem's YAML (`problem_yaml`), its AMICI model built in folder/name, CVODES at rtol, atol."""
    import pypesto.petab

    logging.getLogger("amici").setLevel(logging.WARNING)
    logging.getLogger("pypesto").setLevel(logging.WARNING)
    importer = pypesto.petab.PetabImporter.from_yaml(str(problem_yaml(name)),
                                                     output_folder=str(Path(folder) / name), model_name=name)
    t0 = time.perf_counter()
    problem = importer.create_problem(verbose=False)
    build = time.perf_counter() - t0
    for logger in list(logging.root.manager.loggerDict):  # AMICI's debug lines of each condition
        if logger.startswith(("amici", "pypesto")):
            logging.getLogger(logger).setLevel(logging.WARNING)
    solver = problem.objective.amici_solver
    solver.set_relative_tolerance(rtol)
    solver.set_absolute_tolerance(atol)
    return importer, problem, build
