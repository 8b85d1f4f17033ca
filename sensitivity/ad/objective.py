"""Checking and wrapping a user's scalar objective `objective(ys) -> scalar`."""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from ..core.errors import InputError


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


def loss_function(f: Callable, objective: Callable, values) -> Callable:
    """x -> (objective(outputs(x)), (outputs, aux)) for an output map f(x, values) ->
    (outputs, aux): the scalar map the reverse and second-order routes differentiate, with
    the solve's outputs and aux carried alongside (for `has_aux`)."""
    obj = scalar_objective(objective)

    def loss(x):
        out, aux = f(x, values)
        return obj(out), (out, aux)

    return loss
