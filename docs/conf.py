"""Sphinx configuration of dnmf's documentation: ``python -m sphinx -W --keep-going docs docs/_build/html``."""

from __future__ import annotations

import os
import sys
import warnings

import dnmf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "sphinxext"))
from returned_figures import scrape  # noqa: E402

project = "dnmf"
author = "the dnmf developers"
copyright = "2026, the dnmf developers"
release = version = dnmf.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
    "sphinx_copybutton",
    "sphinx_design",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "examples", "sphinxext"]
templates_path = ["_templates"]
# sphinx-gallery's configuration names a scraper function, which Sphinx cannot cache (it rebuilds instead).
suppress_warnings = ["config.cache"]
html_static_path = ["_static"]
html_css_files = ["dnmf.css"]

# Internal references must resolve: every ``dnmf`` name a page or docstring points at has a
# page. Names of other packages are not linked (no network here for intersphinx inventories).
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(?!dnmf\b).*")]

autosummary_generate = True
autosummary_ignore_module_all = False  # a module's page lists its __all__ only
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types, in words
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3


sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "abort_on_example_error": True,
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": (scrape, "matplotlib"),  # dnmf's figures, before the matplotlib scraper closes its own
    "matplotlib_animations": False,
    "reference_url": {"dnmf": None},
    "doc_module": ("dnmf",),
    "backreferences_dir": "generated/backreferences",
    "min_reported_time": 1,
}

html_theme = "pydata_sphinx_theme"
html_title = f"dnmf {version}"
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"index": [], "getting_started": [], "performance": [], "changelog": []}

warnings.filterwarnings("ignore", message="Matplotlib is currently using agg", category=UserWarning)
