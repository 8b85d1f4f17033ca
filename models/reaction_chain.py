"""Linear reaction (decay) chain A1 -> A2 -> ... -> An, one rate constant per step.

    dA1/dt = -k1 A1
    dAi/dt =  k(i-1) A(i-1) - ki Ai     (1 < i < n)
    dAn/dt =  k(n-1) A(n-1)

The closed-form solution for A1(0) = 1 and distinct rates is Bateman's (Bateman 1910,
"Solution of a system of differential equations occurring in the theory of radioactive
transformations", Proc. Cambridge Philos. Soc. 15:423):
    Am(t) = (k1 ... k(m-1)) sum_{i=1..m} exp(-ki t) / prod_{j=1..m, j != i} (kj - ki),
with kn = 0 for the last, stable species. Defaults: n = 10 species, the n - 1 rates
log-spaced from k_fast = 1e3 down to k_slow = 1e-2 (illustrative, like radioactive series
whose half-lives span many orders of magnitude), A1(0) = 1. The rates span five decades,
so the model is flagged stiff (see `model(stiff=...)`). n scales to hundreds: `model(n=300)`.
"""

from __future__ import annotations

import numpy as np

import sensitivity as sens

from ._common import jnp, merge_defaults  # jnp: jax.numpy, imported on first use

NAME = "reaction_chain"


def rhs(t, y, p):
    n = y.shape[0]
    k = jnp.stack([p[f"k{i}"] for i in range(1, n)])
    flux = k * y[:-1]
    zero = jnp.zeros((1,), dtype=y.dtype)
    return jnp.concatenate([zero, flux]) - jnp.concatenate([flux, zero])


def default_rates(n: int, k_fast: float = 1e3, k_slow: float = 1e-2) -> np.ndarray:
    """The n - 1 rates, log-spaced from k_fast to k_slow."""
    return np.logspace(np.log10(k_fast), np.log10(k_slow), n - 1)


def model(*, n: int = 10, k_fast: float = 1e3, k_slow: float = 1e-2, stiff: bool | None = None,
          **overrides) -> sens.ODEModel:
    """The chain of n species (n >= 2) with rates k1 .. k(n-1); keyword arguments k<i>
    override single rates. stiff: the model's stiff flag; None flags it when the rates span
    three decades or more (k_fast / k_slow >= 1e3, the defaults span five); a chain with
    rates closer together is left to solver="auto", which estimates the stiffness index
    T max(k) from the Jacobian (rates 10 .. 0.1 on [0, 5]: 100, Tsit5)."""
    if not (isinstance(n, (int, np.integer)) and n >= 2):
        raise sens.InputError(f"reaction_chain.model(n={n!r}): n must be an integer >= 2")
    if not (k_fast > 0 and k_slow > 0):
        raise sens.InputError(f"reaction_chain.model(): rates must be positive, got "
                              f"k_fast={k_fast!r}, k_slow={k_slow!r}")
    n = int(n)
    defaults = {f"k{i}": float(k) for i, k in enumerate(default_rates(n, k_fast, k_slow), start=1)}
    y0 = np.zeros(n)
    y0[0] = 1.0
    return sens.ODEModel(NAME, states=[f"A{i}" for i in range(1, n + 1)],
                         parameters=merge_defaults(NAME, defaults, overrides),
                         rhs=rhs, y0=y0, stiff=(k_fast / k_slow >= 1e3) if stiff is None else bool(stiff),
                         doc=__doc__)
