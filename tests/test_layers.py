"""The package's layers import one way, from the source itself (its ``import`` statements).

numerics → params → engine → io → api → estimator → apps → cli, with :mod:`dnmf.errors`
below them all; no module imports one of a later layer, no two modules import each other
in a circle, the NumPy kernels import no Dask, only the driver calls ``compute`` or
``persist``, and ``import dnmf`` loads neither the applications nor the command line.
"""

import ast
import inspect
import pathlib
import re
import subprocess
import sys

import pytest

import dnmf
from dnmf.params import PARAMS

PACKAGE = pathlib.Path(dnmf.__file__).parent
#: Layer of each top-level part of the package (a module may import its own layer or below).
LAYERS = {
    "errors": 0,
    "numerics": 1,
    "params": 2,
    "engine": 3,
    "io": 4,
    "api": 5,
    "estimator": 6,
    "apps": 7,
    "tl": 7,
    "pl": 7,
    "cli": 8,
}


def _modules():
    """``{dotted name: path}`` of every module of the package."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["dnmf", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _package(name, path):
    """The package a module's relative imports start from."""
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _source(node, package):
    """Dotted name of the module an ``ast.ImportFrom`` reads from, relative levels resolved."""
    if not node.level:
        return node.module
    base = package.split(".")
    return ".".join(base[: len(base) - node.level + 1] + ([node.module] if node.module else []))


def _imports(name, path, top_level_only=False):
    """Dotted names of the dnmf modules (and of the other packages) ``name`` imports."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = _source(node, _package(name, path))
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in MODULES)
    return {module for module in found if module in MODULES or not module.startswith("dnmf")}


def _layer(module):
    parts = module.split(".")
    return LAYERS[parts[1]] if len(parts) > 1 else None


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_go_one_way(name):
    if name == "dnmf":
        return  # the package's face re-exports every layer
    wrong = sorted(
        module
        for module in _imports(name, MODULES[name])
        if module.startswith("dnmf") and module != "dnmf" and _layer(module) > _layer(name)
    )
    assert not wrong, f"{name} (layer {_layer(name)}) imports later layers: {wrong}"


def test_no_import_cycles():
    # Imports inside functions count too: a cycle deferred to call time is still a cycle.
    # A submodule's own packages are imported before it anyway: not an edge of a cycle; nor is
    # a package's ``from . import sub`` (it imports the submodule, counted as its own edge).
    graph = {
        name: {
            module
            for module in _imports(name, path)
            if module in MODULES and module != name and not name.startswith(module + ".")
        }
        for name, path in MODULES.items()
    }
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for child in sorted(graph[node]):
            if state.get(child) == "open":
                cycle = trail[trail.index(child) :] + [child]
                pytest.fail(f"import cycle: {' -> '.join(cycle)}")
            if child not in state:
                visit(child, trail + [child])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("name", sorted(name for name in MODULES if name.startswith("dnmf.numerics")))
def test_numerics_are_free_of_dask(name):
    dask = sorted(module for module in _imports(name, MODULES[name]) if module.split(".")[0] in ("dask", "distributed"))
    assert not dask, f"{name} imports {dask}"


def test_only_the_driver_computes():
    calls = []
    for name, path in MODULES.items():
        if name == "dnmf.engine.driver":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("compute", "persist")
            ):
                calls.append(f"{name}:{node.lineno}")
    assert not calls, f"compute/persist outside dnmf.engine.driver: {calls}"


def test_import_dnmf_loads_no_application_or_cli():
    code = "import sys, dnmf; print(sorted(m for m in sys.modules if m.startswith(('dnmf.apps', 'dnmf.cli'))))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"
    code = "import dnmf; print(dnmf.select_rank.__module__, dnmf.plot.__module__)"
    lazily = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert lazily == ["dnmf.apps.rank", "dnmf.apps.plots"]


def test_every_public_name_is_documented():
    for name in dnmf.__all__:
        assert getattr(dnmf, name).__doc__, name


def _imported_modules(tree, package):
    """``{local name: dnmf module}`` for the modules a file imports whole."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update((alias.asname or alias.name, alias.name) for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            module = _source(node, package)
            names.update(
                (alias.asname or alias.name, f"{module}.{alias.name}")
                for alias in node.names
                if f"{module}.{alias.name}" in MODULES
            )
    return names


def test_no_private_name_crosses_modules():
    crossing = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text())
        modules = _imported_modules(tree, _package(name, path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _source(node, _package(name, path)).startswith("dnmf"):
                crossing += [f"{name} imports {alias.name}" for alias in node.names if alias.name.startswith("_")]
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                crossing.append(f"{name} uses {modules[node.value.id]}.{node.attr}")
    assert not crossing, crossing


def test_docstrings_hold_no_dated_figures_or_tracker_references():
    pattern = re.compile(r"\b20\d\d-\d\d-\d\d\b|\bissues? #?\d+\b", re.IGNORECASE)
    found = [
        f"{name}:{number}: {line.strip()}"
        for name, path in MODULES.items()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, found


def test_the_estimator_and_the_function_take_the_parameter_table():
    table = {p.name: p.default for p in PARAMS}
    estimator = inspect.signature(dnmf.NMF).parameters
    assert {name: estimator[name].default for name in table} == table
    assert set(estimator) - set(table) == {"checkpoint", "checkpoint_every"}
    function = inspect.signature(dnmf.non_negative_factorization).parameters
    assert {name: function[name].default for name in table} == table
    assert set(function) - set(table) == {"X", "W", "H", "update_H"}
