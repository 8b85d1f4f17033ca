"""The PEtab pipeline's lean stiff solves: the Rosenbrock loop of `lean.rosenbrock_solve`
(the stage kernel and tableaux of `rosenbrock.py`: Rodas5P, the default, or Rodas4) as a
segment solve and a steady-state solve, its cost constants, and the check that the loop can
take a problem.

The step is a plain function of (t, y, h, p) with a custom JVP, so JAX differentiates it
exactly: forward-mode tangents (jvp, vmapped over the tangent directions) and reverse mode
through a checkpointed loop differentiate the same discrete solve. The step sizes are chosen
on values with their derivatives stopped, as for a solve with a given step sequence: forward
and adjoint gradients agree to rounding. Steps land exactly on the save times, or, with
dense_output (a problem with many save times: `PetabProblem._save`), pass them and save by
Rodas5P's interpolant of order 4 from the step's stages. Segment and save times are
constants of the solve: bounds that move with the parameters are handled outside
(`integrate.bounds.fixed_bounds_segment`).

Each step's Jacobian comes from n JVPs of the rhs, or from the c JVPs of a column colouring
when the model carries an exact pattern (`model.jacobian_pattern`: the SBML importer's,
read from the rate expressions; or an `ODEModel`'s declared `jacobian_sparsity`; never a
sampled one) and the colours pay
(`rosenbrock.colouring_pays`): J is then the same matrix, formed with fewer JVPs.
"""

from __future__ import annotations

import diffrax
import jax
import jax.numpy as jnp

from ..core import sparsity
from .lean import rosenbrock_solve as solve
from .newton.steady_state import newton_polish
from .rosenbrock import TABLEAUS, colouring_pays

__all__ = ["TABLEAUS", "calibration", "compression", "piece_fn", "segment_fn", "solve", "steady_fn"]

# off: every step forms J from n JVPs (for measuring the colouring against it; the values agree to rounding)
COLOURING = True

# Cost constants of the gradient modes with this loop, in simulations, measured on 20 PEtab
# benchmark problems (3 to 36 states, 3 to 72 parameters; `benchmarks/petab.py --modes
# auto,forward,adjoint`): a forward tangent costs about a hundredth of a simulation per
# state (its matrix products and solves grow with the states, while a small model's
# simulation is mostly the loop's fixed cost per step), the checkpointed gradient about six
# simulations. So the auto gradient picks forward mode while states x parameters < ~500.
TANGENT_PER_STATE = 0.01
RECORD, COTANGENT = 5.2, 1.0


def calibration(n_states: int) -> dict:
    """The fields of `ad.cost.Calibration` for a model with n_states states (of one
    condition: the conditions' solves are a batch whose size divides out of both modes)."""
    return dict(tangent=TANGENT_PER_STATE * max(n_states, 1), record=RECORD, cotangent=COTANGENT,
                source=f"PEtab problems with the lean Rodas5P loop (a = {TANGENT_PER_STATE:g} per state; "
                       "sensitivity/solvers/lean_rodas.py)")


def compression(model) -> sparsity.Compression | None:
    """The column-colouring compression of the model's exact Jacobian pattern (an
    `SBMLModel`'s symbolic `jacobian_pattern`, or an `ODEModel`'s declared
    `jacobian_sparsity`; a detected one is refused by `sparsity.compression`) when it pays
    (`rosenbrock.colouring_pays`), else None."""
    pattern = getattr(model, "jacobian_pattern", None)
    if pattern is None:  # an `ODEModel`'s declared pattern (a string "dense", or None: none)
        pattern = getattr(model, "jacobian_sparsity", None)
    if not COLOURING or not isinstance(pattern, sparsity.Pattern):
        return None
    comp = sparsity.compression(pattern)
    return comp if colouring_pays(comp) else None


def _result(ok, success):
    return diffrax.RESULTS.where(ok, success, diffrax.RESULTS.max_steps_reached)


def segment_fn(model, method: str, max_steps: int, solver: str = "rodas4", scan_stages: bool = False,
               dense_output: bool = False):
    """The PEtab pipeline's segment solve with the Rosenbrock method `solver`: (pv, y0, a, b, tc, ts, tol) ->
    (ys at clip(ts, a, b) (n_t, n), y(b), diffrax result, steps). scan_stages: the step's
    stages as a `lax.scan` (`rosenbrock.lean_step`); dense_output: the save times by the
    method's dense output instead of steps that land on them (`lean.rosenbrock_solve`)."""
    kind = "checkpointed" if method == "checkpoint" else "lax"
    comp = compression(model)

    def f(t, y, args):
        pv, tc = args
        return model.rhs(t, y, pv, tc)

    def segment(pv, y0, a, b, tc, ts, tol):
        ys, y, t, ok, n = solve(f, y0, a, b, ts, (pv, tc), tol, max_steps, kind=kind, method=solver,
                                scan_stages=scan_stages, compression=comp, dense_output=dense_output)
        return ys, y, _result(ok, diffrax.RESULTS.successful), n

    return segment


def steady_fn(model, method: str, max_steps: int, solver: str = "rodas4", scan_stages: bool = False):
    """(pv, y0, tol, t0) -> (steady state, diffrax result (event_occurred when reached),
    steps): simulate until max_i |f_i| / (atol + rtol |y_i|) < 1, then
    `steady_state.newton_polish`."""
    kind = "checkpointed" if method == "checkpoint" else "lax"
    comp = compression(model)

    def f(t, y, args):
        return model.rhs(t, y, args, t)

    def steady(pv, y0, tol, t0=0.0):
        def reached(t, y):
            return jnp.max(jnp.abs(model.rhs(t, y, pv, t)) / (tol[1] + tol[0] * jnp.abs(y))) < 1.0
        t0 = jnp.asarray(t0, dtype=y0.dtype)
        _, y, t, ok, n = solve(f, y0, t0, jnp.inf, jnp.reshape(t0, (1,)), pv, tol, max_steps, kind=kind,
                               steady=reached, method=solver, scan_stages=scan_stages, compression=comp)
        y = newton_polish(lambda u: model.rhs(t, u, pv, t), y)  # derivatives by the IFT
        return y, _result(ok, diffrax.RESULTS.event_occurred), n

    return steady


def piece_fn(model, method: str, max_steps: int, solver: str = "rodas4", scan_stages: bool = False,
             dense_output: bool = False):
    """`steady_fn` and `segment_fn` as one solve, so that a preequilibration and the segments
    after it run through one traced copy of the loop (a lax.scan over the pieces): (pvs, y0,
    a, b, tc, ts, tol) -> (ys (n_t, n), y_end (n,), ok (bool), steps), pvs = (pv, steady).

    steady False: `segment_fn`'s solve from a to b (ys at ts clipped into [a, b]). steady
    True (a traced bool): from a until max_i |f_i| / (atol + rtol |y_i|) < 1 (b and ts
    unused, the rhs sees tc = t), then `steady_state.newton_polish`; ok when it got there.
    The same steps and values as those two functions."""
    kind = "checkpointed" if method == "checkpoint" else "lax"
    comp = compression(model)

    def f(t, y, args):
        pv, tc, steady = args
        return model.rhs(t, y, pv, jnp.where(steady, t, tc))

    def piece(pvs, y0, a, b, tc, ts, tol):
        pv, steady = pvs

        def small(t, y):
            return jnp.max(jnp.abs(model.rhs(t, y, pv, t)) / (tol[1] + tol[0] * jnp.abs(y))) < 1.0

        def reached(t, y):  # the segments never stop early
            return jax.lax.cond(steady, small, lambda t, y: jnp.asarray(False), t, y)

        a = jnp.asarray(a, dtype=y0.dtype)
        t1 = jnp.where(steady, jnp.inf, b)
        ts = jnp.where(steady, a, ts)  # a steady run saves nothing: its steps land on no time
        ys, y, t, ok, n = solve(f, y0, a, t1, ts, (pv, tc, steady), tol, max_steps, kind=kind, steady=reached,
                                method=solver, scan_stages=scan_stages, compression=comp, dense_output=dense_output)
        y = jax.lax.cond(steady, lambda y: newton_polish(lambda u: model.rhs(t, u, pv, t), y), lambda y: y, y)
        return ys, y, ok, n

    return piece
