"""Every private name of diffrax, lineax, optimistix and equinox the toolkit uses, in one place.

The rest of the package imports these from here, never from another package's private
modules, so an upgrade that moves or changes one of them breaks this module (and
`tests/test_compat.py`, one test per name) rather than a solve somewhere deep inside.
Public names are used wherever they exist; what is left here has no public equivalent:

- `linear_rescale(t0, t, t1)`: diffrax's (t - t0) / (t1 - t0) with the t0 == t1 case
  giving 0 and zero gradients; the Rosenbrock dense output evaluates its polynomial with it.
- `chord_small(diffsize)`: `VeryChord`'s test that the Newton increment is below the
  floating-point resolution (stop: converged).
- `Static`: equinox's wrapper that keeps a Python value out of the pytree's leaves
  (`eqx.internal.Static`), used in lineax solver states for the `transposed` flag.
- `result_code(item)`, `result_item(code)`, `result_names()`: diffrax's RESULTS items as
  integer codes and back, and all code names; the compiled programs return plain integers
  so they can be exported.
- `equinox_errors_module()`: equinox's module that reads `EQX_ON_ERROR` once at import;
  `integrate.compiled` sets its attribute while tracing when equinox was imported before
  the variable was set.
- `while_loop`: equinox's loop with `kind="checkpointed"`, reverse-differentiable with
  a bounded number of stored states; the lean time-stepping loop runs in it.
"""

from __future__ import annotations

import sys

import diffrax
import equinox as eqx
import numpy as np
from diffrax._misc import linear_rescale
from diffrax._root_finder._verychord import _small as chord_small
from equinox._enum import EnumerationItem

Static = eqx.internal.Static

__all__ = ["EnumerationItem", "Static", "chord_small", "equinox_errors_module",
           "linear_rescale", "result_code", "result_item", "result_names", "while_loop"]


def result_code(item):
    """The integer code (an array, traced or not) of a diffrax/optimistix RESULTS item."""
    return item._value


def result_item(code, enumeration=diffrax.RESULTS):
    """The RESULTS item of integer `code` (for messages and `.where` after a compiled run)."""
    return EnumerationItem(np.asarray(code, dtype=np.int32), enumeration)


def result_names(enumeration=diffrax.RESULTS) -> dict[int, str]:
    """Integer code -> name of every item of `enumeration` (diffrax.RESULTS by default)."""
    return {int(np.asarray(item._value)): name for name, item in enumeration._name_to_item.items()}


def equinox_errors_module():
    """equinox's error module (has the attribute EQX_ON_ERROR), or None if not imported yet."""
    return sys.modules.get("equinox._errors")

# equinox/internal/_loop/loop.py: a while loop with kind="checkpointed" for reverse mode
from equinox.internal import while_loop  # noqa: E402
