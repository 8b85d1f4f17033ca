"""Neural ODE: a one-hidden-layer MLP vector field with array parameters.

    dx/dt = W2 tanh(W1 x + b1) + b2,   x in R^2,
    W1 (width, 2), b1 (width,), W2 (2, width), b2 (2,)

The set-up of the spiral demo of torchdiffeq (Chen, Rubanova, Bettencourt & Duvenaud,
"Neural Ordinary Differential Equations", NeurIPS 2018; examples/ode_demo.py): two states,
a tanh MLP, weights drawn from N(0, 0.1^2) and biases zero, initial state (2, 0), times in
[0, 25]. The demo uses 50 hidden units; the default width here is 200, so the model has
5 * width + 2 = 1002 weights, each addressable as an input ("W1[3,1]", or "W1" for all).
Weights come from numpy's default_rng(seed): deterministic. The spiral data the demo
fits, dx/dt = (x^3) A with A = [[-0.1, 2], [-2, -0.1]], is generated into
data/spiral.csv by data/make_spiral_data.py.
"""

from __future__ import annotations

import numpy as np

import sensitivity as sens

from ._common import jnp  # jax.numpy, imported on first use

NAME = "neural_ode"
N_STATES = 2
Y0 = {"x1": 2.0, "x2": 0.0}


def rhs(t, y, p):
    hidden = jnp.tanh(p["W1"] @ y + p["b1"])
    return p["W2"] @ hidden + p["b2"]


def n_weights(width: int) -> int:
    """Number of scalar weights for a hidden width: width * (2 d + 1) + d with d = 2."""
    return width * (2 * N_STATES + 1) + N_STATES


def init_weights(width: int, seed: int = 0, scale: float = 0.1) -> dict:
    """Deterministic weights: W ~ N(0, scale^2) from default_rng(seed), biases zero."""
    rng = np.random.default_rng(seed)
    params = {
        "W1": scale * rng.standard_normal((width, N_STATES)),
        "b1": np.zeros(width),
        "W2": scale * rng.standard_normal((N_STATES, width)),
        "b2": np.zeros(N_STATES),
    }
    return params


def model(*, width: int = 200, seed: int = 0) -> sens.ODEModel:
    """The neural ODE with `width` hidden units (default 200: 1002 weights) and weights
    from `seed`."""
    if not (isinstance(width, (int, np.integer)) and width >= 1):
        raise sens.InputError(f"neural_ode.model(width={width!r}): width must be an integer >= 1")
    if not isinstance(seed, (int, np.integer)):
        raise sens.InputError(f"neural_ode.model(seed={seed!r}): seed must be an integer")
    return sens.ODEModel(NAME, states=list(Y0), parameters=init_weights(int(width), int(seed)),
                         rhs=rhs, y0=Y0, stiff=False, doc=__doc__)
