"""Sphinx configuration of dnmf's documentation: ``python -m sphinx -W --keep-going docs docs/_build/html``."""

from __future__ import annotations

import warnings

import dnmf

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
exclude_patterns = ["_build", "examples"]
templates_path = ["_templates"]
html_static_path = ["_static"]
html_css_files = ["dnmf.css"]

# Internal references must resolve: every ``dnmf`` name a page or docstring points at has a
# page. Names of other packages are not linked (no network here for intersphinx inventories).
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(?!dnmf\b).*")]

autosummary_generate = True
autodoc_typehints = "none"  # numpydoc's Parameters sections say the types, in words
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3


class ReturnedFigures:
    """sphinx-gallery scraper for the figures dnmf's plotting functions return: they are
    drawn off pyplot (on the Agg canvas, so that ``import dnmf`` sets no global backend), which
    the matplotlib scraper does not see. Collects every Figure the example's namespace holds,
    the value of a block's last expression (sphinx-gallery's ``___``) included, once."""

    def __init__(self):
        self.example, self.seen = None, []

    def __repr__(self):  # sphinx-gallery keys its cache on the scrapers' reprs
        return "ReturnedFigures()"

    def __call__(self, block, block_vars, gallery_conf):
        from matplotlib._pylab_helpers import Gcf
        from matplotlib.figure import Figure
        from sphinx_gallery.scrapers import figure_rst

        if block_vars["src_file"] != self.example:
            self.example, self.seen = block_vars["src_file"], []
        self.seen += [manager.canvas.figure for manager in Gcf.get_all_fig_managers()]  # the matplotlib scraper's
        figures = [value for value in block_vars["example_globals"].values() if isinstance(value, Figure)]
        paths = []
        for figure in figures:
            if any(figure is seen for seen in self.seen) or not figure.get_axes():
                continue
            self.seen.append(figure)  # held, so that no later figure reuses its id
            path = next(block_vars["image_path_iterator"])
            figure.savefig(path, dpi=100)
            paths.append(path)
        return figure_rst(paths, gallery_conf["src_dir"])


sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "download_all_examples": False,
    "remove_config_comments": True,
    "show_memory": False,
    "abort_on_example_error": True,
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": (ReturnedFigures(), "matplotlib"),  # before the matplotlib scraper closes its figures
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
html_sidebars = {"index": [], "getting_started": [], "changelog": []}

warnings.filterwarnings("ignore", message="Matplotlib is currently using agg", category=UserWarning)
