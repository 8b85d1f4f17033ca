"""Small helpers shared by the notebooks in this folder (not part of the toolkit).

QUICK is True when the environment variable SENSITIVITY_NB_QUICK is set to anything but
"" or "0". The test suite (tests/test_notebooks.py) runs every notebook that way, with
small sizes and few timing repeats, so that CI stays fast; without it the notebooks run
at the sizes that show the real lesson (a few minutes each).
"""

from __future__ import annotations

import os

QUICK = os.environ.get("SENSITIVITY_NB_QUICK", "").strip() not in ("", "0")


def pick(quick, full):
    """`quick` in quick mode, else `full`."""
    return quick if QUICK else full


def _timings(out) -> dict:
    if isinstance(out, tuple):  # the sensitivity.ad functions return (..., info)
        return out[-1]["timings"]
    return out.timings  # JacobianResult, GradientResult, Trajectory


def timed(call, repeats: int | None = None):
    """Run `call` once (it compiles, unless the compiled function is cached), then
    `repeats` more times and keep the best run.

    `call()` is a toolkit call that reports its own timings: a `sensitivity.ad` function
    returning (..., info) or a result with `.timings`. By default the repeats depend on
    the run time: more for fast calls (whose timings are noisy), one for slow ones, fewer
    in quick mode. Returns (first result, compile seconds, best run seconds); the run
    time never includes compiling.
    """
    first = call()
    t = _timings(first)
    if repeats is None:
        fast, medium = pick((5, 1), (10, 3))
        repeats = fast if t["run"] < 0.05 else medium if t["run"] < 2.0 else pick(0, 1)
    runs = [t["run"]] + [_timings(call())["run"] for _ in range(repeats)]
    return first, float(t["compile"]), float(min(runs))


def ms(seconds: float) -> str:
    """Seconds as a short human string: '840 us', '12.3 ms', '4.1 s'."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} us"
    if seconds < 1.0:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"
