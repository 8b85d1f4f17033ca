"""The package's layers, read from its imports with `ast` (no import runs).

A module imports only from its own layer or below, the imports between the package's own
modules form no circle, and none of them sits inside a function: a function-local import
is for a heavy third-party package (`HEAVY`) that `sensitivity validate` should not load.
The lazy public names of `sensitivity/__init__.py` and the lazy commands of the CLI name
their modules as strings; those are checked against the layers too.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sensitivity"

# lowest first; a module may import its own layer and those below it
LAYERS = [
    ("core", "stores", "plots"),    # types, errors, checks, disk stores, figures; no JAX at import
    ("solvers",),                   # the registry, Rosenbrock and RK kernels, Newton, linear algebra
    ("integrate",),                 # the solve, cut at doses and events; compiled programs
    ("ad",),                        # forward, adjoint, second order, the cost model
    ("api",),                       # simulate, jacobian, gradient, hvp, hessian, plan
    ("analyses", "importers"),      # ensembles, GSA, identifiability, fit; SBML and PEtab
    ("app",),                       # CLI, config, runners, files
    ("__init__", "__main__"),       # the public names and `python -m sensitivity`
]
HEAVY = {"jax", "jaxlib", "diffrax", "equinox", "lineax", "optimistix", "matplotlib", "xarray",
         "libsbml", "petab", "sympy", "dask", "distributed", "scipy", "SALib", "h5netcdf", "pandas",
         "yaml", "pydantic", "tqdm"}


def _modules() -> dict[str, Path]:
    out = {}
    for f in PACKAGE.rglob("*.py"):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f
    return out


MODULES = _modules()


def layer_of(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module}: its folder '{top}' is in no layer of tests/test_layers.py")


def _target(module: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level:
        base = module.split(".")[: None if is_package else -1]
        base = base[: len(base) - node.level + 1]
        tgt = ".".join(base + ([node.module] if node.module else []))
    else:
        tgt = node.module or ""
    found = [f"{tgt}.{a.name}" for a in node.names if f"{tgt}.{a.name}" in MODULES]
    return found or [tgt]


def _edges():
    """(importer, imported, line, local) for every import between the package's modules."""
    for name, path in sorted(MODULES.items()):
        tree = ast.parse(path.read_text())
        local = {id(n) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(fn) if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                targets = _target(name, path.name == "__init__.py", node)
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            for t in targets:
                if t == "sensitivity" or t.startswith("sensitivity."):
                    while t not in MODULES:  # a name inside a module: the module
                        t = t.rsplit(".", 1)[0]
                    if t != name:
                        yield name, t, node.lineno, id(node) in local


def _lazy_edges():
    """Modules named in strings: `__init__`'s lazy table, `LazyModule("sensitivity....")`
    and `"sensitivity.x.y:function"` references."""
    pattern = re.compile(r"""["'](sensitivity(?:\.\w+)+)(?::\w+)?["']""")
    for name, path in MODULES.items():
        for m in pattern.finditer(path.read_text()):
            if m.group(1) in MODULES:
                yield name, m.group(1)
    init = (PACKAGE / "__init__.py").read_text()
    table = init[init.index("_LAZY = {"):]
    for rel in re.findall(r':\s*"([\w.]+)"', table[: table.index("}")]):
        yield "sensitivity", f"sensitivity.{rel}"


def test_every_module_is_in_a_layer():
    for name in MODULES:
        layer_of(name)


def test_no_import_from_a_higher_layer():
    upward = [f"{MODULES[a].relative_to(PACKAGE.parent)}:{line} imports {b}"
              for a, b, line, _ in _edges() if layer_of(b) > layer_of(a)]
    upward += [f"{a} names {b} lazily" for a, b in _lazy_edges() if b not in MODULES or layer_of(b) > layer_of(a)]
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_no_function_local_import_of_the_package():
    local = [f"{MODULES[a].relative_to(PACKAGE.parent)}:{line} imports {b} inside a function"
             for a, b, line, is_local in _edges() if is_local]
    assert not local, "\n".join(local)


def test_function_local_imports_are_of_heavy_packages_only():
    light = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    tops = [a.name.split(".")[0] for a in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    tops = [(node.module or "").split(".")[0]]
                else:
                    continue
                light += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {t}" for t in tops
                          if t not in HEAVY and t != "sensitivity"]
    assert not light, "function-local imports of light packages (import them at the top):\n" + "\n".join(light)


def test_no_import_circle():
    graph: dict[str, set[str]] = {}
    for a, b, _, _ in _edges():
        graph.setdefault(a, set()).add(b)
    # a package's __init__ importing its own submodules is not a circle back to it
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(v):
        state[v] = 1
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if state.get(w) == 1:
                cycle = stack[stack.index(w):] + [w]
                pytest.fail("import circle: " + " -> ".join(cycle))
            if not state.get(w):
                visit(w)
        stack.pop()
        state[v] = 2

    for v in sorted(graph):
        if not state.get(v):
            visit(v)


def test_the_checker_sees_what_it_must():
    """The rules above fail on the violations they exist for (so they cannot pass vacuously)."""
    edges = list(_edges())
    assert len(edges) > 100
    assert layer_of("sensitivity.app.cli") > layer_of("sensitivity.api") > layer_of("sensitivity.core.model")
    tree = ast.parse("def f():\n    from ..api import plan\n")
    node = tree.body[0].body[0]
    assert _target("sensitivity.core.model", False, node) == ["sensitivity.api"]
