"""The PEtab test suite: which cases `sens.petab.load` passes, refuses, crashes on or gets wrong.

For each case of ../shared/petab-test-suite/cases (next to the repository; PEtab 1.0 cases
`v1.0.0/sbml/NNNN`, PEtab 2.0 cases `v2.0.0/{sbml,pysb}/NNNN`), read straight from the
folder (the `petabtests` package is not needed), in a fresh process with a timeout:

- load the problem YAML with `sens.petab.load(..., rtol=1e-10, atol=1e-10)`;
- at the nominal parameter values compute the log-likelihood (-nllh), chi2 and the
  simulation table;
- compare with the case's `_NNNN_solution.yaml`: |llh - expected| < tol_llh, |chi2 -
  expected| < tol_chi2, and for the simulations, after matching rows by observable,
  experiment (or conditions) and time, the largest |simulation - expected| < tol_simulations
  (stricter than the suite's own rule, which bounds the mean absolute difference); where
  the solution gives them (PEtab 2.0 priors), each parameter's log prior within
  tol_log_prior and the unnormalised log posterior within tol_unnorm_log_posterior.

Each case ends as one of
    pass      llh, chi2 and every simulation within tolerance;
    refused   our `InputError` / `ModelError` (the message is the reason);
    crash     any other exception, a dead process or the timeout;
    wrong     it ran, but llh, chi2 or a simulation is out of tolerance.

    python benchmarks/petab_suite.py                      # every case (a few minutes)
    python benchmarks/petab_suite.py --versions v2.0.0/sbml --cases 16,22
    python benchmarks/petab_suite.py --workers 2 --timeout 300

It prints the counts and writes benchmarks/results/petab_suite.md (counts by version and
model format, then one row per case). `run_case` (one case, in this process) is what
tests/test_petab_format.py imports.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import Counter
from pathlib import Path

# suite_runner from this folder, also when loaded by path, but at the END of the path: the folder
# holds a script named like the `petab` package, which must not shadow it
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]
from suite_runner import STATUSES, failure, run_pool  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SUITE = Path(__file__).resolve().parents[1].parent / "shared" / "petab-test-suite" / "cases"
VERSIONS = ("v1.0.0/sbml", "v2.0.0/sbml", "v2.0.0/pysb")
RTOL = ATOL = 1e-10


# --------------------------------------------------------------------------- one case
def case_ids(version: str, root: Path = SUITE) -> list[str]:
    """The case folders ("0001", ...) of one version ("v2.0.0/sbml"), sorted."""
    folder = root / version
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit())


def descriptions(version: str, root: Path = SUITE) -> dict:
    """case -> its one-line description from the version's README.md."""
    readme = root / version / "README.md"
    out, case = {}, None
    for line in (readme.read_text().splitlines() if readme.is_file() else []):
        m = re.match(r"^#\s*\[(\d+)\]", line)
        if m:
            case = m.group(1)
        elif case and line.strip() and case not in out:
            out[case] = line.strip()
    return out


def solution(folder: Path) -> dict:
    """The case's solution YAML with the expected simulation table (`simulations`, pandas)."""
    import pandas as pd
    import yaml
    sol = yaml.safe_load((folder / f"_{folder.name}_solution.yaml").read_text())
    sol["simulations"] = pd.concat([pd.read_csv(folder / f, sep="\t") for f in sol["simulation_files"]],
                                   ignore_index=True)
    return sol


def _keys(df) -> list[str]:
    """The columns that identify a row of a simulation table (PEtab 1 or 2)."""
    cols = ["observableId", "experimentId", "simulationConditionId", "preequilibrationConditionId", "time"]
    return [c for c in cols if c in df]


def compare_simulations(got, want) -> float:
    """The largest |simulation - expected| over rows matched by observable, experiment or
    conditions and time (rows sorted by those keys; measurement order breaks ties)."""
    import numpy as np
    keys = [k for k in _keys(want) if k in got]
    a = got.assign(_row=range(len(got)))
    b = want.assign(_row=range(len(want)))
    for df in (a, b):
        for k in keys:
            if k != "time":
                df[k] = df[k].fillna("").astype(str)
    a = a.sort_values(keys + ["_row"], kind="stable")
    b = b.sort_values(keys + ["_row"], kind="stable")
    if len(a) != len(b):
        return float("inf")
    for k in keys:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        same = np.isclose(x.astype(float), y.astype(float)) if k == "time" else (x == y)
        if not np.all(same):
            return float("inf")
    return float(np.max(np.abs(np.asarray(a["simulation"], float) - np.asarray(b["simulation"], float))))


def run_case(version: str, case: str, root: Path = SUITE) -> dict:
    """One case in this process: {"version", "case", "status", "reason", "llh", "chi2",
    "sim" (the differences to the expected values), "seconds"}."""
    start = time.perf_counter()
    folder = root / version / case
    out = {"version": version, "case": case, "status": "", "reason": "", "llh": "", "chi2": "", "sim": "",
           "prior": "", "seconds": 0.0}
    import sensitivity as sens
    try:
        sol = solution(folder)
        prob = sens.petab.load(folder / f"_{case}.yaml", rtol=RTOL, atol=ATOL)
        llh, chi2, sim = -prob.nllh(), prob.chi2(), prob.simulate()
        d_llh, d_chi2 = abs(llh - sol["llh"]), abs(chi2 - sol["chi2"])
        d_sim = compare_simulations(sim, sol["simulations"])
        checks = [("llh", d_llh, sol.get("tol_llh", 1e-3)), ("chi2", d_chi2, sol.get("tol_chi2", 1e-3)),
                  ("simulations", d_sim, sol.get("tol_simulations", 1e-3))]
        if "log_prior" in sol:  # PEtab 2.0 priors: each parameter's log density, and the posterior
            from sensitivity.importers import petab_v2
            terms = petab_v2.log_priors(prob.petab_v2, dict(zip(prob.x_names, prob.x_nominal)))
            d_prior = (max(abs(terms[k][0] - v) for k, v in sol["log_prior"].items())
                       if set(terms) == set(sol["log_prior"]) else float("inf"))
            checks.append(("log_prior", d_prior, sol.get("tol_log_prior", 1e-3)))
            out["prior"] = f"{d_prior:.2g}"
            if "unnorm_log_posterior" in sol:
                d_post = abs(llh - prob.prior()[0] - sol["unnorm_log_posterior"])
                checks.append(("unnorm_log_posterior", d_post, sol.get("tol_unnorm_log_posterior", 1e-3)))
        bad = [what for what, d, tol in checks if not d < tol]
        out.update(status="wrong" if bad else "pass", llh=f"{d_llh:.2g}", chi2=f"{d_chi2:.2g}", sim=f"{d_sim:.2g}",
                   reason="" if not bad else f"{', '.join(bad)} off: llh {llh:.8g} (expected {sol['llh']:.8g}), "
                                             f"chi2 {chi2:.8g} (expected {sol['chi2']:.8g})")
    except Exception as exc:  # noqa: BLE001 - refused (ModelError, InputError) or a crash
        status, reason = failure(exc)
        out.update(status=status, reason=reason)
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


# --------------------------------------------------------------------------- many cases
def run_cases(todo: list[tuple[str, str]], workers: int = 2, timeout: float = 300.0, progress=print) -> list[dict]:
    """Every (version, case) in its own process (forked from a server that has imported the
    toolkit), at most `workers` at a time; a case still running after `timeout` s is a crash."""
    def failed(args, reason):
        return {"version": args[0], "case": args[1], "status": "crash", "reason": reason, "llh": "", "chi2": "",
                "sim": "", "prior": ""}

    results = run_pool(list(todo), run_case, failed, workers=workers, timeout=timeout,
                       preload=("numpy", "sympy", "libsbml", "jax", "diffrax", "petab.v1", "petab.v2", "sensitivity",
                                "sensitivity.importers.petab", "sensitivity.importers.sbml"),
                       progress=progress)
    return list(results.values())


def table(rows: list[dict], command: str, wall: float) -> str:
    """The markdown report: counts by version, then every case."""
    lines = ["# PEtab test suite", "", f"Command: `{command}`", "",
             "| version | cases | " + " | ".join(STATUSES) + " |", "| --- | ---: | " + " | ".join("---:" for _ in STATUSES) + " |"]
    by = {}
    for r in rows:
        by.setdefault(r["version"], Counter())[r["status"]] += 1
    for v in VERSIONS:
        if v in by:
            lines.append(f"| {v} | {sum(by[v].values())} | " + " | ".join(str(by[v][s]) for s in STATUSES) + " |")
    lines += ["", "Differences to the expected values: |llh|, |chi2|, the largest |simulation| (tolerance "
              "1e-3 each), the largest |log prior| of a parameter (tolerance 1e-14).", "",
              "| version | case | what it tests | status | llh | chi2 | simulations | log prior | s | reason |",
              "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    desc = {v: descriptions(v) for v in VERSIONS}
    order = {v: i for i, v in enumerate(VERSIONS)}
    for r in sorted(rows, key=lambda r: (order.get(r["version"], 9), r["case"])):
        what = desc.get(r["version"], {}).get(r["case"], "").replace("|", "/")
        lines.append(f"| {r['version']} | {r['case']} | {what} | {r['status']} | {r['llh']} | {r['chi2']} | "
                     f"{r['sim']} | {r.get('prior', '')} | {r['seconds']} | {r['reason'].replace('|', '/')} |")
    lines += ["", f"Wall time: {wall:.0f} s.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", default=",".join(VERSIONS), help="comma list, e.g. v1.0.0/sbml,v2.0.0/sbml")
    ap.add_argument("--cases", help="case numbers, e.g. 1-5,16")
    ap.add_argument("--workers", type=int, default=2, help="processes at a time (at most 2)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per case")
    ap.add_argument("--out", default=str(RESULTS / "petab_suite.md"), help="the report's path")
    args = ap.parse_args(argv)
    if not SUITE.is_dir():
        print(f"no suite at {SUITE}")
        return 1
    keep = None
    if args.cases:
        keep = set()
        for part in args.cases.split(","):
            a, _, b = part.partition("-")
            keep.update(range(int(a), int(b or a) + 1))
    todo = [(v, c) for v in args.versions.split(",") for c in case_ids(v) if keep is None or int(c) in keep]
    command = ("python benchmarks/petab_suite.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    start = time.perf_counter()
    rows = run_cases(todo, workers=max(1, min(args.workers, 2)), timeout=args.timeout)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(table(rows, command, time.perf_counter() - start))
    for v in args.versions.split(","):
        counts = Counter(r["status"] for r in rows if r["version"] == v)
        print(f"{v}: " + ", ".join(f"{counts[s]} {s}" for s in STATUSES))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
