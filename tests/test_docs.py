"""The documentation covers the public API: every public name has an API page.

A page is an entry of an ``autosummary`` list in ``docs/api.rst`` (Sphinx generates one page
per entry, from the docstring); the docs build (``.ci/run``) fails on a broken reference.
"""

import importlib
import pathlib
import re

import pytest

import dnmf
import dnmf.errors

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs"
#: The public modules: their ``__all__`` is the public API.
PUBLIC_MODULES = ("dnmf", "dnmf.errors", "dnmf.tl", "dnmf.pl")


def _documented():
    """``{dotted name}`` of every entry of the autosummary lists in api.rst."""
    found, module, in_list = set(), None, False
    for line in (DOCS / "api.rst").read_text().splitlines():
        directive = re.match(r"\.\. (?:currentmodule|module):: (\S+)", line)
        if directive:
            module = directive.group(1)
        if line.startswith(".. autosummary::"):
            in_list = True
            continue
        if in_list:
            entry = re.match(r"   (\w+)\s*$", line)
            if entry:
                found.add(f"{module}.{entry.group(1)}")
            elif line.strip() and not line.startswith("   :"):
                in_list = False
    return found


def _object(dotted):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("module", PUBLIC_MODULES)
def test_every_public_name_has_an_api_page(module):
    """A name exported by two modules (``dnmf.DnmfError`` is ``dnmf.errors.DnmfError``) has one page."""
    documented = {id(_object(dotted)) for dotted in _documented()}
    names = {f"{module}.{name}" for name in importlib.import_module(module).__all__}
    missing = sorted(name for name in names if id(_object(name)) not in documented)
    assert not missing, f"public names without a page in docs/api.rst: {missing}"


def test_every_api_page_is_a_public_name():
    public = {f"{module}.{name}" for module in PUBLIC_MODULES for name in importlib.import_module(module).__all__}
    public |= {f"dnmf.errors.{name}" for name in dnmf.errors.__all__}
    stale = sorted(_documented() - public)
    assert not stale, f"docs/api.rst lists names that are not public: {stale}"


def test_every_public_name_resolves():
    for name in dnmf.__all__:
        assert getattr(dnmf, name) is not None
