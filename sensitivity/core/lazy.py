"""Modules imported on first attribute use, so that `import sensitivity`, `sensitivity
validate` and `sensitivity models` do not pay for importing JAX, diffrax and optimistix."""

from __future__ import annotations

import importlib
import types


class LazyModule(types.ModuleType):
    """Stands for the module `name` and imports it when an attribute is first read."""

    __file__ = None

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self.__name__), attr)


def load(reference: str):
    """The object `reference` ("package.module:name") names, its module imported now.

    For what must not be imported before it is used (the JAX-heavy commands of the command
    line). tests/test_layers.py checks every such reference in the package against the
    layers, as it checks imports."""
    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(module), name)
