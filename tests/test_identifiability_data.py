"""The Fisher information of a data table counts its values at their sampling times only:
checked against the closed form of a model whose outputs are linear in its inputs,
x(t) = a t + b t^2 / 2 and z(t) = b t, so J_x(t) = (t, t^2 / 2), J_z(t) = (0, t)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import sensitivity as sens
from sensitivity.analyses.identifiability import fisher, identifiability
from sensitivity.core.errors import InputError

A, B = 0.7, 1.3


def _rhs(t, y, p):
    return jnp.stack([p["a"] + p["b"] * t, p["b"] + 0.0 * y[1]])


@pytest.fixture(scope="module")
def problem():
    model = sens.ODEModel("linear_in_p", ["x", "z"], {"a": A, "b": B}, _rhs, {"x": 0.0, "z": 0.0},
                          observables={"x_obs": lambda t, y, p: y[0], "z_obs": lambda t, y, p: y[1]})
    # save times that differ from the data's: the old count took every one of these
    return sens.Problem(model, np.linspace(0.0, 5.0, 11), wrt=["a", "b"], rtol=1e-10, atol=1e-10)


# x at 1, 2.5 (twice: a replicate) and 4; z at 3; sigma per row
DATA = pd.DataFrame({"time": [1.0, 2.5, 2.5, 4.0, 3.0], "output": ["x_obs", "x_obs", "x_obs", "x_obs", "z_obs"],
                     "value": [0.0] * 5, "sigma": [0.1, 0.2, 0.2, 0.1, 0.5]})


def _closed_form(rows):
    F = np.zeros((2, 2))
    for t, o, s in rows:
        J = np.array([t, t * t / 2]) if o == "x_obs" else np.array([0.0, t])
        F += np.outer(J, J) / s ** 2
    return F


def test_fisher_of_data_counts_its_sampling_times_only(problem):
    fi = fisher(problem, scale="linear", data=DATA)
    expected = _closed_form(zip(DATA["time"], DATA["output"], DATA["sigma"]))
    np.testing.assert_allclose(fi.matrix, expected, rtol=1e-7)
    assert fi.n_observations == len(DATA)
    np.testing.assert_array_equal(fi.jacobian.times, [1.0, 2.5, 3.0, 4.0])  # the data's, not the save times
    assert fi.weights.shape == (4, 2) and np.count_nonzero(fi.weights) == 4  # the replicate sums into one cell
    # log scale: d y / d ln p = J diag(p)
    D = np.diag([A, B])
    np.testing.assert_allclose(fisher(problem, scale="log", data=DATA).matrix, D @ expected @ D, rtol=1e-7)
    # without data the save times count: another matrix (the case the data argument is for)
    every = fisher(problem, sigma=0.1, scale="linear")
    assert every.n_observations == 22 and not np.allclose(every.matrix, expected, rtol=1e-2)


def test_sigma_argument_and_of_with_data(problem):
    table = DATA.drop(columns="sigma")
    fi = fisher(problem, sigma={"x_obs": 0.1, "z_obs": 0.5}, scale="linear", data=table)
    rows = [(t, o, 0.1 if o == "x_obs" else 0.5) for t, o in zip(table["time"], table["output"])]
    np.testing.assert_allclose(fi.matrix, _closed_form(rows), rtol=1e-7)
    only_x = fisher(problem, sigma=0.3, scale="linear", data=table, of=["x_obs"])
    np.testing.assert_allclose(only_x.matrix, _closed_form([(t, o, 0.3) for t, o, _ in rows if o == "x_obs"]),
                               rtol=1e-7)
    assert only_x.n_observations == 4


def test_identifiability_with_data_has_the_closed_form_errors(problem):
    ident = identifiability(problem, scale="linear", data=DATA, max_subset=2)
    cov = np.linalg.inv(_closed_form(zip(DATA["time"], DATA["output"], DATA["sigma"])))
    np.testing.assert_allclose(ident.dataset["standard_error"].values, np.sqrt(np.diag(cov)), rtol=1e-6)
    assert f"{len(DATA)} observations" in ident.summary()
    # one value of x at one time cannot separate a from b: flagged
    single = identifiability(problem, scale="linear", data=DATA.iloc[:1], max_subset=2)
    assert not single.identifiable


def test_data_errors_name_the_element(problem):
    with pytest.raises(InputError, match="before the problem's start"):
        fisher(problem, data=pd.DataFrame({"time": [-1.0], "output": ["x_obs"], "value": [1.0]}))
    with pytest.raises(InputError, match="no value for measured output 'z_obs'"):
        fisher(problem, sigma={"x_obs": 0.1}, data=DATA.drop(columns="sigma"))
    with pytest.raises(InputError, match="data is for a Problem"):
        identifiability(np.eye(2), data=DATA)
