"""Checking and wrapping a user's scalar objective `objective(ys) -> scalar`."""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from ..errors import InputError


def scalar_objective(objective: Callable) -> Callable:
    """Wrap `objective(ys)`, ys of shape (n_times, n_of), so that a non-scalar result is an
    `InputError` at trace time rather than an obscure JAX error."""
    if not callable(objective):
        raise InputError(f"objective must be callable objective(ys) -> scalar, got {objective!r}")

    def wrapped(ys):
        value = jnp.asarray(objective(ys))
        if value.shape not in ((), (1,)):
            raise InputError(
                f"objective must return a scalar, got shape {value.shape}; "
                "e.g. lambda ys: (ys ** 2).sum()"
            )
        return value.reshape(())

    return wrapped
