"""The SBML semantic test suite: which cases the SBML import passes, refuses, crashes on or gets wrong.

For each case `NNNNN/` of ../shared/sbml-test-suite/cases/semantic (next to the repository;
its README.md states the rules), in a fresh process with a timeout:

- read the SBML file with `sens.sbml.read(...)`, build `.ode_model()`, simulate it with
  `sens.simulate(sens.Problem(model, times, rtol=1e-10, atol=1e-12, solver="tsit5"))` at
  the case's `steps + 1` output times (again with solver "auto" if tsit5 raises a
  `SolverError`: an explicit solver compiles in half the time of the stiff default);
- take each requested variable as an amount or a concentration as the settings say (a
  species' amount is its concentration times its compartment's size at that time);
- judge by the suite's rule: a value passes when |C - U| <= absolute + relative * |C|
  (C expected, U simulated), a case when every value does.

Each case ends as one of
    pass      every value within tolerance;
    refused   our `ModelError` / `InputError` (the message is the reason), a testType that
              is not a time course (FluxBalanceSteadyState), a package we do not read, or
              the `SolverError` that names the limit on events per segment (max_occurrences);
    crash     any other exception, a dead process or the timeout;
    wrong     it ran, but some value is out of tolerance.

    python benchmarks/sbml_suite.py                   # every case (long: an hour or more)
    python benchmarks/sbml_suite.py --sample 12       # every 12th case
    python benchmarks/sbml_suite.py --cases 1-100 --tags EventWithDelay,AlgebraicRule
    python benchmarks/sbml_suite.py --workers 2 --timeout 300

It prints the counts and writes benchmarks/results/sbml_suite.md (counts overall, by
component tag and test tag, the refusal reasons, every crash and wrong case) and
sbml_suite.csv (one row per case). `run_case` (one case, in this process) is what
tests/test_sbml_suite.py imports.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

# suite_runner from this folder, also when loaded by path, but at the END of the path: the folder
# holds a script named like the `petab` package, which must not shadow it
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]
from suite_runner import STATUSES, failure, run_pool  # noqa: E402

RESULTS = Path(__file__).parent / "results"
SUITE = Path(__file__).resolve().parents[1].parent / "shared" / "sbml-test-suite"
CASES = SUITE / "cases" / "semantic"
PACKAGES_READ = {"comp"}  # packages the import reads (comp: flattened); others are refused
RTOL, ATOL = 1e-10, 1e-12
# an explicit solver compiles in about half the time of the stiff default; a case it cannot
# solve (a SolverError: stiff) is solved again with "auto"
SOLVERS = ("tsit5", "auto")


# --------------------------------------------------------------------------- one case
def case_ids(root: Path = CASES) -> list[str]:
    """Every case id ("00001", ...) of the suite, sorted."""
    return sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.isdigit())


def case_info(case: str, root: Path = CASES) -> dict:
    """The header of `NNNNN-model.m` and the settings of one case.

    Returns {"case", "component_tags", "test_tags" (lists), "test_type", "packages" (list),
    "settings": {"start", "duration", "steps", "variables", "amount", "concentration",
    "absolute", "relative"}, "sbml": the path of the highest-level SBML file}."""
    folder = root / case
    header = {}
    for line in (folder / f"{case}-model.m").read_text(errors="replace").splitlines():
        m = re.match(r"^(componentTags|testTags|testType|packagesPresent):\s*(.*)$", line)
        if m:
            header[m.group(1)] = m.group(2).strip()
    split = lambda s: [x.strip() for x in (s or "").split(",") if x.strip()]  # noqa: E731
    settings = {}
    for line in (folder / f"{case}-settings.txt").read_text().splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            settings[k.strip()] = v.strip()
    out_settings = {
        "start": float(settings.get("start", 0) or 0), "duration": float(settings.get("duration") or 0),
        "steps": int(float(settings.get("steps") or 0)), "variables": split(settings.get("variables")),
        "amount": split(settings.get("amount")), "concentration": split(settings.get("concentration")),
        "absolute": float(settings.get("absolute") or 0), "relative": float(settings.get("relative") or 0),
    }
    xmls = sorted(folder.glob(f"{case}-sbml-l*v*.xml"))
    best = max(xmls, key=lambda p: tuple(int(x) for x in re.findall(r"l(\d+)v(\d+)", p.name)[-1])) if xmls else None
    return {"case": case, "component_tags": split(header.get("componentTags")),
            "test_tags": split(header.get("testTags")), "test_type": header.get("testType", ""),
            "packages": [p for p in split(header.get("packagesPresent")) if p],
            "settings": out_settings, "sbml": best}


def expected(case: str, root: Path = CASES) -> tuple[list[str], "object"]:
    """(column names without time, values (n_times, 1 + n_columns) with time first)."""
    import numpy as np
    with open(root / case / f"{case}-results.csv") as fh:
        rows = [r for r in csv.reader(fh) if r]
    names = [c.strip() for c in rows[0]]
    vals = np.array([[float(x) for x in r] for r in rows[1:]], dtype=float)
    return names[1:], vals


def quantities(sm, times, states) -> dict:
    """Every id of an `SBMLModel` as a time course: name -> (n_times,) array (states, rule
    variables, parameters), from the saved states (n_times, n_states)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    pv = jnp.asarray(sm.parameter_values)
    out = {p: np.full(len(times), float(v)) for p, v in zip(sm.parameters, sm.parameter_values)}
    out.update({s: np.asarray(states[:, i]) for i, s in enumerate(sm.states)})
    if sm.rules:
        rv = np.asarray(jax.vmap(lambda t, y: sm.rule_values(t, y, pv))(jnp.asarray(times), jnp.asarray(states)))
        out.update({r: rv[:, j] for j, r in enumerate(sm.rules)})
    return out


def variable(sm, values: dict, name: str, as_amount: bool | None):
    """The course of `name` as the suite asks for it: a species' amount (`as_amount` True)
    or concentration (False) from its state or rule and its compartment's size."""
    if name not in values:
        from sensitivity.core.errors import ModelError
        raise ModelError(f"SBML suite: the requested variable '{name}' is not a species, parameter, "
                         "compartment or rule variable of the imported model")
    v = values[name]
    info = sm.species.get(name)
    if info is None or as_amount is None:
        return v
    size = values[info["compartment"]] if info["compartment"] in values else 1.0
    if info["amount"] and not as_amount:
        return v / size
    if not info["amount"] and as_amount:
        return v * size
    return v


def simulate_case(info: dict):
    """Read, build and simulate one case. Returns (expected names, expected values with
    time first, simulated values (n_times, n_names))."""
    import numpy as np

    import sensitivity as sens
    from sensitivity.importers import sbml
    s = info["settings"]
    names, want = expected(info["case"], info["sbml"].parent.parent)
    sm = sbml.read(info["sbml"])
    model = sm.ode_model()
    times = np.asarray(want[:, 0], dtype=float)
    t0 = float(s["start"])
    for k, solver in enumerate(SOLVERS):
        # the states only: the suite's values come from them (and rule values below); an
        # output the suite expects to be NaN must not stop the run
        prob = sens.Problem(model, times=times, t0=t0, rtol=RTOL, atol=ATOL, max_steps=200_000, solver=solver,
                            of=model.states)
        try:
            traj = sens.simulate(prob)
            break
        except sens.SolverError:
            if k == len(SOLVERS) - 1:
                raise
    values = quantities(sm, times, np.asarray(traj.states))
    amount, conc = set(s["amount"]), set(s["concentration"])
    got = np.stack([np.asarray(variable(sm, values, n, True if n in amount else False if n in conc else None),
                               dtype=float) * np.ones(len(times)) for n in names], axis=1)
    return names, want, got


def compare(want, got, absolute: float, relative: float) -> tuple[bool, float, int]:
    """The suite's rule |C - U| <= absolute + relative |C| on every value.
    Returns (pass, the largest |C - U| / (absolute + relative |C|), the index of the worst
    column). NaN and infinite expected values must be matched exactly."""
    import numpy as np
    C, U = np.asarray(want, float), np.asarray(got, float)
    special = ~np.isfinite(C)
    same_special = np.where(np.isnan(C), np.isnan(U), C == U)
    bound = absolute + relative * np.abs(np.where(special, 0.0, C))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(special, np.where(same_special, 0.0, np.inf),
                         np.abs(C - U) / np.where(bound > 0, bound, np.finfo(float).tiny))
    ratio = np.where(np.isnan(ratio), np.inf, ratio)
    worst = float(ratio.max()) if ratio.size else 0.0
    col = int(np.unravel_index(np.argmax(ratio), ratio.shape)[1]) if ratio.size else 0
    return worst <= 1.0, worst, col


def refusal_by_name(info: dict) -> str | None:
    """The reason a case is refused before it is read, or None."""
    if info["test_type"] and info["test_type"] != "TimeCourse":
        return f"testType {info['test_type']} is not a time course"
    other = [p for p in info["packages"] if p not in PACKAGES_READ]
    if other:
        return f"the SBML package '{other[0]}' is not read"
    if info["sbml"] is None:
        return "no SBML file"
    return None


def run_case(case: str, root: Path = CASES) -> dict:
    """One case in this process: {"case", "status", "reason", "error" (the worst ratio of
    |C - U| to the tolerance), "seconds"}."""
    start = time.perf_counter()
    info = case_info(case, root)
    out = {"case": case, "status": "", "reason": "", "error": "", "seconds": 0.0}
    why = refusal_by_name(info)
    if why:
        out.update(status="refused", reason=why)
        return out
    from sensitivity.core.errors import SolverError
    try:
        names, want, got = simulate_case(info)
        ok, worst, col = compare(want[:, 1:], got, info["settings"]["absolute"], info["settings"]["relative"])
        out.update(status="pass" if ok else "wrong", error=f"{worst:.3g}",
                   reason="" if ok else f"'{names[col]}' off by {worst:.3g} x the tolerance")
    except SolverError as exc:
        first = str(exc).splitlines()[0]
        if "max_occurrences" in first:  # the toolkit's named limit on events per segment
            out.update(status="refused", reason=first[:300])
        else:
            out.update(status="crash", reason=f"SolverError: {first[:240]}")
    except Exception as exc:  # noqa: BLE001 - refused (ModelError, InputError) or a crash
        status, reason = failure(exc)
        out.update(status=status, reason=reason)
    out["seconds"] = round(time.perf_counter() - start, 2)
    return out


# --------------------------------------------------------------------------- many cases
def run_cases(cases: list[str], workers: int = 2, timeout: float = 300.0, progress=print,
              done=lambda row: None) -> list[dict]:
    """Every case in its own process (forked from a server that has imported the toolkit),
    at most `workers` at a time; a case still running after `timeout` seconds is a crash.
    `done(row)` is called as each case ends."""
    def failed(args, reason):
        return {"case": args[0], "status": "crash", "reason": reason, "error": ""}

    results = run_pool([(c,) for c in cases], run_case, failed, workers=workers, timeout=timeout,
                       preload=("numpy", "sympy", "libsbml", "jax", "diffrax", "sensitivity",
                                "sensitivity.importers.sbml", "sensitivity.integrate.solve"),
                       progress=progress, done=lambda args, row: done(row))
    return [results[(c,)] for c in cases]


def reason_class(reason: str) -> str:
    """A refusal's message with the element names taken out: one row per kind of reason."""
    r = re.sub(r"'[^']*'", "'…'", reason)
    r = re.sub(r"\([^()]*\)", "(…)", r)
    r = re.sub(r"\bSBML (file|model) \S+", r"SBML \1 …", r)
    r = re.sub(r"\[\S+:\d+\]", "", r)
    return r.strip()[:160]


def table(rows: list[dict], infos: dict, command: str) -> str:
    """The markdown report: counts overall, by component tag and by test tag, refusal
    reasons, and every crash and wrong case."""
    total = Counter(r["status"] for r in rows)
    n = len(rows)
    lines = ["# SBML semantic test suite", "", f"Command: `{command}`", "",
             f"{n} cases: " + ", ".join(f"**{total[s]} {s}**" for s in STATUSES)
             + (f" ({100 * total['pass'] / n:.1f} % pass)" if n else ""), ""]
    for title, key in (("component tag", "component_tags"), ("test tag", "test_tags")):
        by = defaultdict(Counter)
        for r in rows:
            for tag in infos[r["case"]][key] or ["(none)"]:
                by[tag][r["status"]] += 1
        lines += [f"## By {title}", "", f"| {title} | cases | " + " | ".join(STATUSES) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in STATUSES) + " |"]
        for tag in sorted(by, key=lambda t: (-sum(by[t].values()), t)):
            lines.append(f"| {tag} | {sum(by[tag].values())} | " + " | ".join(str(by[tag][s]) for s in STATUSES) + " |")
        lines.append("")
    reasons = Counter(reason_class(r["reason"]) for r in rows if r["status"] == "refused")
    lines += ["## Refusal reasons", "", "| reason | cases |", "| --- | ---: |"]
    lines += [f"| {k.replace('|', '/')} | {v} |" for k, v in reasons.most_common()]
    lines.append("")
    for status in ("crash", "wrong"):
        bad = [r for r in rows if r["status"] == status]
        lines += [f"## {status.capitalize()} ({len(bad)})", ""]
        lines += [f"- {r['case']}: {r['reason'].replace('|', '/')}" for r in bad] or ["none"]
        lines.append("")
    return "\n".join(lines)


def select(ids: list[str], cases: str | None, sample: int | None, tags: str | None, root: Path = CASES) -> list[str]:
    """Cases by range ("1-100,250"), every `sample`-th, and by tag (any of a comma list)."""
    if cases:
        keep = set()
        for part in cases.split(","):
            a, _, b = part.partition("-")
            keep.update(range(int(a), int(b or a) + 1))
        ids = [c for c in ids if int(c) in keep]
    if sample:
        ids = ids[::sample]
    if tags:
        want = {t.strip() for t in tags.split(",")}
        ids = [c for c in ids if want & set(case_info(c, root)["component_tags"] + case_info(c, root)["test_tags"])]
    return ids


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, help="every N-th case")
    ap.add_argument("--cases", help="case numbers, e.g. 1-100,250")
    ap.add_argument("--tags", help="only cases with any of these component or test tags (comma list)")
    ap.add_argument("--workers", type=int, default=2, help="processes at a time (at most 2)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per case")
    ap.add_argument("--out", default=str(RESULTS / "sbml_suite"), help="report path without suffix")
    ap.add_argument("--resume", action="store_true",
                    help="keep the rows of <out>.csv and run only the selected cases it lacks")
    args = ap.parse_args(argv)
    if not CASES.is_dir():
        print(f"no suite at {CASES}")
        return 1
    ids = select(case_ids(), args.cases, args.sample, args.tags)
    infos = {c: case_info(c) for c in ids}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = ["case", "status", "reason", "error", "seconds", "component_tags", "test_tags"]
    kept = {}
    if args.resume and out.with_suffix(".csv").exists():
        with open(out.with_suffix(".csv")) as fh:
            kept = {r["case"]: r for r in csv.DictReader(fh)}
    command = ("python benchmarks/sbml_suite.py " + " ".join(sys.argv[1:] if argv is None else argv)).strip()
    start = time.perf_counter()
    finished = dict(kept)

    def write():
        rows = [finished[c] for c in ids if c in finished]
        report = table(rows, infos, command)
        report += (f"\nWall time: {time.perf_counter() - start:.0f} s with {min(args.workers, 2)} workers"
                   + (f" ({len(rows)} of {len(ids)} cases so far)" if len(rows) < len(ids) else "") + ".\n")
        out.with_suffix(".md").write_text(report)
        with open(out.with_suffix(".csv"), "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            for r in finished.values():
                info = infos.get(r["case"]) or case_info(r["case"])
                w.writerow({k: v for k, v in {**r, "component_tags": " ".join(info["component_tags"]),
                                               "test_tags": " ".join(info["test_tags"])}.items() if k in fields})

    def done(row):
        finished[row["case"]] = row
        if len(finished) % 20 == 0:
            write()

    run_cases([c for c in ids if c not in kept], workers=max(1, min(args.workers, 2)), timeout=args.timeout,
              done=done)
    write()
    rows = [finished[c] for c in ids]
    counts = Counter(r["status"] for r in rows)
    print(", ".join(f"{counts[s]} {s}" for s in STATUSES), f"of {len(rows)}",
          f"({100 * counts['pass'] / max(len(rows), 1):.1f} % pass)")
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.csv')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
