"""One program for the trajectory and the forward Jacobian, for a run that needs both.

A config run simulates and then takes the Jacobian. In forward mode the Jacobian's sweep
solves the very same ODE (the tangents ride along the primal solve, which they do not
steer), so the states can come out of that program: one trace and one compile instead of
two, which is most of a cold run's time on a small model.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .ad.forward import forward_jacobian
from .problem import Problem
from .results import JacobianResult
from .solve import Trajectory, run_checked, states_and_outputs_function, values_of, x0_of


def trajectory_and_jacobian(problem: Problem, mode: str = "auto", **plan_options
                            ) -> Optional[tuple[Trajectory, JacobianResult]]:
    """(Trajectory, JacobianResult) from one compiled program when the plan for the
    Jacobian is forward mode; None otherwise (the caller then simulates and asks
    `jacobian`). States (n_times, n_states), Jacobian (n_times, n_of, n_inputs)."""
    from .api import plan

    p = plan(problem, task="jacobian", mode=mode, **plan_options)
    if p.mode != "forward":
        return None
    g = states_and_outputs_function(problem, "forward")

    def f(x, values):
        ys, outputs, aux = g(x, values)
        return outputs, (aux, ys)  # the states as aux: carried, not differentiated

    def build():
        def h(x, values):
            out, (aux, ys), J = forward_jacobian(f, x, values)
            return out, aux, ys, J
        return h

    (ys, J), info = run_checked(problem, build, (x0_of(problem), values_of(problem)),
                                fn="trajectory_and_jacobian_forward")
    trajectory = Trajectory(problem.times, np.asarray(ys), info["outputs"], problem.model.states,
                            problem.of, info["stats"], info["timings"])
    jac = JacobianResult(np.asarray(J), info["outputs"], problem.times, problem.of, problem.input_names,
                         problem.x0(), "forward", None, p, info["stats"], info["timings"])
    return trajectory, jac

