"""The public API is typed: every callable of ``dnmf.__all__`` and ``dnmf.errors.__all__``
annotates its parameters and its return, mypy checks the modules they live in, and the
package ships its ``py.typed`` marker (PEP 561).

Annotations are read as written (``from __future__ import annotations`` keeps them
strings); mypy, run over the modules of ``[tool.mypy] files``, checks what they say.
"""

from __future__ import annotations

import ast
import importlib.resources
import inspect
import pathlib

import pytest

import dnmf
import dnmf.errors

PACKAGE = pathlib.Path(dnmf.__file__).parent
PYPROJECT = PACKAGE.parent / "pyproject.toml"


def _public():
    """The public names, ``(module, name)``: those of ``dnmf.__all__`` and ``dnmf.errors.__all__``,
    a public module's (``dnmf.tl``, ``dnmf.pl``) by those of its own ``__all__``."""
    found = []
    for module in (dnmf, dnmf.errors):
        for name in module.__all__:
            value = getattr(module, name)
            if inspect.ismodule(value):
                found.extend((value, inner) for inner in value.__all__)
            else:
                found.append((module, name))
    return found


#: The public names: (module, name).
PUBLIC = _public()


def _own_functions(cls):
    """``(name, function)`` of ``__init__`` and the public methods and properties that
    ``cls`` or a dnmf base class defines (scikit-learn's mixins and ``object`` are not ours)."""
    found = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("dnmf"):
            continue
        for name, value in vars(klass).items():
            if name.startswith("_") and name != "__init__":
                continue
            if isinstance(value, property):
                value = value.fget
            elif isinstance(value, (classmethod, staticmethod)):
                value = value.__func__
            if inspect.isfunction(value):
                found[name] = value
    return sorted(found.items())


def _functions(module, name):
    """``(qualified name, function)`` of what must be annotated for one public name."""
    value = getattr(module, name)  # resolves the names dnmf imports when first used
    if inspect.isclass(value):
        return [(f"{module.__name__}.{name}.{attr}", function) for attr, function in _own_functions(value)]
    assert inspect.isfunction(value), f"{module.__name__}.{name} is neither a class nor a function"
    return [(f"{module.__name__}.{name}", value)]


def _missing_annotations(function):
    signature = inspect.signature(function)
    missing = [
        parameter.name
        for parameter in signature.parameters.values()
        if parameter.name not in ("self", "cls") and parameter.annotation is inspect.Parameter.empty
    ]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


@pytest.mark.parametrize("module, name", PUBLIC, ids=[f"{m.__name__}.{n}" for m, n in PUBLIC])
def test_public_callables_are_annotated(module, name):
    unannotated = {
        qualified: missing
        for qualified, function in _functions(module, name)
        if (missing := _missing_annotations(function))
    }
    assert not unannotated, f"without annotations: {unannotated}"


def test_the_classes_checked_have_methods():
    # The check above must see the methods of the classes, not pass on an empty list.
    names = {qualified for qualified, _ in _functions(dnmf, "NMF")}
    assert {"dnmf.NMF.__init__", "dnmf.NMF.fit", "dnmf.NMF.fit_transform", "dnmf.NMF.transform"} <= names
    assert "dnmf.Panels.shape" in {qualified for qualified, _ in _functions(dnmf, "Panels")}


def test_lazy_names_are_imported_for_type_checkers():
    # ``dnmf/__init__.py`` imports the names it loads on first use under ``if TYPE_CHECKING:``
    # too (as ``X as X``), so that type checkers see them: the two lists must agree.
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    eager, typed = set(), set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            eager.update(alias.asname or alias.name for alias in node.names)
        elif isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in node.body:
                assert isinstance(inner, ast.ImportFrom)
                assert all(alias.asname == alias.name for alias in inner.names), "re-export as ``X as X``"
                typed.update(alias.name for alias in inner.names)
    assert typed == set(dnmf.__all__) - eager


def test_mypy_checks_the_modules_of_the_public_names():
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads(PYPROJECT.read_text())["tool"]["mypy"]["files"]
    checked = {path for pattern in patterns for path in PACKAGE.parent.glob(pattern)}
    homes = {pathlib.Path(inspect.getfile(getattr(module, name))) for module, name in PUBLIC}
    assert not sorted(str(path) for path in homes - checked)


def test_py_typed_ships_with_the_package():
    assert importlib.resources.files("dnmf").joinpath("py.typed").is_file()
    package_data = pytest.importorskip("tomllib").loads(PYPROJECT.read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["dnmf"]
