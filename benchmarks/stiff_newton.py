"""Steps and rejections of Kvaerno5 on the Brusselator against the Newton termination test
and the step-size controller: diffrax 0.7.2's `VeryChord` against
`sensitivity.chord.Chord`, under PID coefficients and factormax variants.

`brusselator_1d` (default 100 states; --quick: 26), rtol 1e-6, atol 1e-8, 50 save times in
[0.2, 10]; the global error is max |y - y_ref| / (atol + rtol |y_ref|) against SciPy Radau at
rtol 1e-11. Step counts do not depend on the machine's load (no timings here).

    python benchmarks/stiff_newton.py [--quick] [--n 100]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
from scipy.integrate import solve_ivp

import sensitivity  # noqa: F401  (float64)
from sensitivity.models import brusselator_1d
from sensitivity.solvers.newton.chord import Chord

RESULTS = Path(__file__).parent / "results"
CONTROLLERS = [
    ("I: pcoeff 0, icoeff 1 (diffrax default)", {}),
    ("PI 0.3 / 0.3", dict(pcoeff=0.3, icoeff=0.3)),
    ("PI 0.4 / 0.3", dict(pcoeff=0.4, icoeff=0.3)),
    ("PI 0.2 / 0.4", dict(pcoeff=0.2, icoeff=0.4)),
    ("PI 1/6 / 1/6 (H211PI)", dict(pcoeff=1 / 6, icoeff=1 / 6)),
    ("I, factormax 5", dict(factormax=5.0)),
    ("I, factormax 2", dict(factormax=2.0)),
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="26 states")
    ap.add_argument("--n", type=int, default=None)
    args = ap.parse_args(argv)
    n = args.n or (26 if args.quick else 100)
    m = brusselator_1d.model(n=n)
    tsn = np.linspace(0.2, 10.0, 50)
    ts = jnp.asarray(tsn)
    p = {k: jnp.asarray(v) for k, v in m.parameters.items()}
    f = jax.jit(lambda t, y: m.rhs(t, y, p))
    jac = jax.jit(jax.jacfwd(lambda t, y: m.rhs(t, y, p), argnums=1))
    ref = solve_ivp(lambda t, y: np.asarray(f(t, y)), (0.0, 10.0), m.y0, method="Radau", t_eval=tsn,
                    rtol=1e-11, atol=1e-12, jac=lambda t, y: np.asarray(jac(t, y))).y.T
    term = diffrax.ODETerm(lambda t, y, a: m.rhs(t, y, a))
    finders = {"VeryChord (diffrax 0.7.2)": diffrax.VeryChord, "Chord (sensitivity.chord)": Chord}
    lines = ["| controller | Newton | steps | rejected | global error / tolerance |", "|---|---|---:|---:|---:|"]
    for label, kw in CONTROLLERS:
        for fname, cls in finders.items():
            solver = diffrax.Kvaerno5(root_finder=diffrax.with_stepsize_controller_tols(cls)())
            sol = diffrax.diffeqsolve(term, solver, 0.0, ts[-1], None, jnp.asarray(m.y0), p,
                                      saveat=diffrax.SaveAt(ts=ts), max_steps=100_000, throw=False,
                                      stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-8, **kw))
            err = np.max(np.abs(np.asarray(sol.ys) - ref) / (1e-8 + 1e-6 * np.abs(ref)))
            lines.append(f"| {label} | {fname} | {int(sol.stats['num_steps'])} | "
                         f"{int(sol.stats['num_rejected_steps'])} | {err:.3g} |")
            print(lines[-1], flush=True)
    for meth in ("BDF", "Radau"):
        sol = solve_ivp(lambda t, y: np.asarray(f(t, y)), (0.0, 10.0), m.y0, method=meth, t_eval=tsn,
                        rtol=1e-6, atol=1e-8)
        err = np.max(np.abs(sol.y.T - ref) / (1e-8 + 1e-6 * np.abs(ref)))
        lines.append(f"| SciPy {meth} (for scale) | - | nfev {sol.nfev}, LU {sol.nlu} | - | {err:.3g} |")
    text = "\n".join(lines)
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stem = "stiff_newton_quick" if args.quick else "stiff_newton"
    (RESULTS / f"{stem}.md").write_text(
        f"# Kvaerno5 on brusselator_1d ({n} states): Newton termination and step-size controller\n\n"
        f"Written by `python benchmarks/stiff_newton.py{' --quick' if args.quick else ''}` on "
        f"{time.strftime('%Y-%m-%d')}; rtol 1e-6, atol 1e-8, t in [0, 10].\n\n" + text + "\n")
    print(f"wrote {RESULTS / (stem + '.md')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
