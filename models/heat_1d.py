"""Heat (reaction-diffusion) equation on [0, 1], discretised by the method of lines.

    u_t = D u_xx - r u,   u(0, t) = u(1, t) = 0,   u(x, 0) = sin(pi x)

n interior points x_j = j h, h = 1 / (n + 1), and the second-order central difference
(u_{j-1} - 2 u_j + u_{j+1}) / h^2 give n ODEs (states u[0] .. u[n-1]). The standard
semi-discretisation of LeVeque, Finite Difference Methods for Ordinary and Partial
Differential Equations (SIAM 2007), ch. 9: the discrete Laplacian has eigenvectors
sin(k pi x_j) with eigenvalues -(4 / h^2) sin^2(k pi h / 2) ~ -(k pi)^2, so the initial
mode decays exactly as exp(-(D (4/h^2) sin^2(pi h/2) + r) t) in the semi-discrete system,
and as exp(-(D pi^2 + r) t) in the PDE (relative error of the rate ~ (pi h)^2 / 12).
Defaults (nondimensional): D = 1, r = 1, n = 100. The stiffness ratio grows like n^2
(the fastest mode decays at ~4 D (n+1)^2), so the model is flagged stiff.
"""

from __future__ import annotations

import numpy as np

import sensitivity as sens

from ._common import jnp, merge_defaults  # jnp: jax.numpy, imported on first use

NAME = "heat_1d"
DEFAULTS = {"D": 1.0, "r": 1.0}


def rhs(t, u, p):
    n = u.shape[0]
    inv_h2 = float((n + 1) ** 2)
    zero = jnp.zeros((1,), dtype=u.dtype)
    left = jnp.concatenate([zero, u[:-1]])
    right = jnp.concatenate([u[1:], zero])
    return p["D"] * (left - 2.0 * u + right) * inv_h2 - p["r"] * u


def grid(n: int) -> np.ndarray:
    """The interior points x_j = j / (n + 1), j = 1 .. n."""
    return np.arange(1, n + 1) / (n + 1)


def mode_decay_rate(n: int, D: float, r: float, discrete: bool = True) -> float:
    """The decay rate of the sin(pi x) mode: semi-discrete (default) or continuous."""
    h = 1.0 / (n + 1)
    lam = 4.0 / h ** 2 * np.sin(np.pi * h / 2.0) ** 2 if discrete else np.pi ** 2
    return D * lam + r


def model(*, n: int = 100, **overrides) -> sens.ODEModel:
    """The heat equation on n interior points (n >= 2); keyword arguments override D, r."""
    if not (isinstance(n, (int, np.integer)) and n >= 2):
        raise sens.InputError(f"heat_1d.model(n={n!r}): n must be an integer >= 2")
    return sens.ODEModel(NAME, states=int(n), parameters=merge_defaults(NAME, DEFAULTS, overrides),
                         rhs=rhs, y0=np.sin(np.pi * grid(int(n))), stiff=True, doc=__doc__)
