"""Helpers shared by the model modules (not part of the public API)."""

from __future__ import annotations

from typing import Mapping

from sensitivity.core.errors import InputError, did_you_mean, list_names
from sensitivity.core.lazy import LazyModule

jnp = LazyModule("jax.numpy")  # jax.numpy, imported when an rhs is first traced


def merge_defaults(model_name: str, defaults: Mapping[str, object],
                   overrides: Mapping[str, object]) -> dict:
    """`defaults` updated with `overrides`, rejecting unknown names with a suggestion."""
    out = dict(defaults)
    for name, value in overrides.items():
        if name not in out:
            raise InputError(
                f"{model_name}.model(): unknown parameter '{name}'{did_you_mean(name, out)}; "
                f"parameters: {list_names(out)}"
            )
        out[name] = value
    return out
