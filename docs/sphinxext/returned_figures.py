"""sphinx-gallery scraper for the figures dnmf's plotting functions return.

They are drawn off pyplot (on the Agg canvas, so that ``import dnmf`` sets no global backend),
which the matplotlib scraper does not see. This one collects every Figure the example's
namespace holds, the value of a block's last expression (sphinx-gallery's ``___``) included,
once; it runs before the matplotlib scraper, and leaves pyplot's figures to it. A module-level
function, so that Sphinx can pickle the configuration that names it.
"""

from __future__ import annotations

#: The example being scraped and the figures already seen in it (held, so that no later
#: figure reuses one's id).
_state: dict = {"example": None, "seen": []}


def scrape(block, block_vars, gallery_conf):
    from matplotlib._pylab_helpers import Gcf
    from matplotlib.figure import Figure
    from sphinx_gallery.scrapers import figure_rst

    if block_vars["src_file"] != _state["example"]:
        _state.update(example=block_vars["src_file"], seen=[])
    seen = _state["seen"]
    seen += [manager.canvas.figure for manager in Gcf.get_all_fig_managers()]  # the matplotlib scraper's
    paths = []
    for figure in [value for value in block_vars["example_globals"].values() if isinstance(value, Figure)]:
        if any(figure is other for other in seen) or not figure.get_axes():
            continue
        seen.append(figure)
        path = next(block_vars["image_path_iterator"])
        figure.savefig(path, dpi=100)
        paths.append(path)
    return figure_rst(paths, gallery_conf["src_dir"])
