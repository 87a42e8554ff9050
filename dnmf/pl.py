"""Plots of the results :mod:`dnmf.tl` wrote into an AnnData (``dnmf.pl``, as scanpy's ``sc.pl``).

Every function reads the object only, draws with matplotlib's pyplot and follows
scanpy's conventions: ``show`` (default: when pyplot is interactive, as in a notebook)
shows the figure and returns None; otherwise the axes come back for more drawing.
``save`` writes the figure to that path first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .apps.consensus import draw_clustering, draw_density, draw_k_selection
from .errors import InputError, InputTypeError
from .io.adata import is_anndata
from .tl import CONSENSUS_KEY, NMF_KEYS

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes

__all__ = ["clustering", "density", "k_selection", "top_genes", "usage"]

SavePath = str | os.PathLike[str] | None


def usage(
    adata: AnnData,
    basis: str = "umap",
    *,
    key: str = NMF_KEYS[0],
    components: Sequence[int] | None = None,
    ncols: int = 4,
    size: float | None = None,
    cmap: str = "viridis",
    show: bool | None = None,
    save: SavePath = None,
) -> list[Axes] | None:
    """Each program's usage over an embedding: one panel per program, cells coloured by it.

    Parameters
    ----------
    adata : anndata.AnnData
    basis : str, default="umap"
        The embedding: ``obsm["X_" + basis]`` (as scanpy's ``basis``), or any ``obsm`` key.
    key : str, default="X_nmf"
        The usages, cells x k, in ``obsm`` (``"X_cnmf"`` after :func:`dnmf.tl.consensus`).
    components : sequence of int, optional
        The programs to show, numbered from 1 (default: all).
    ncols : int, default=4
        Panels per row.
    size : float, optional
        Dot size (default: scanpy's ``120000 / n_cells``).
    cmap : str, default="viridis"
    show : bool, optional
    save : str or path, optional

    Returns
    -------
    list of matplotlib.axes.Axes, or None when shown
    """
    _check_anndata(adata)
    coordinates = np.asarray(_obsm(adata, basis if basis in adata.obsm else f"X_{basis}"))[:, :2]
    usages = np.asarray(_obsm(adata, key))
    numbers = _components(components, usages.shape[1])
    figure, axes = _grid(len(numbers), ncols, (3.2, 3.0))
    size = 120000 / max(1, adata.n_obs) if size is None else size
    for ax, number in zip(axes, numbers):
        points = ax.scatter(
            coordinates[:, 0], coordinates[:, 1], c=usages[:, number - 1], s=size, cmap=cmap, rasterized=True
        )
        ax.set_title(f"{key} {number}")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlabel(f"{basis}1")
        ax.set_ylabel(f"{basis}2")
        figure.colorbar(points, ax=ax, fraction=0.046, pad=0.02)
    return _finish(figure, axes, show, save)


def top_genes(
    adata: AnnData,
    *,
    key: str = NMF_KEYS[1],
    n_genes: int = 10,
    components: Sequence[int] | None = None,
    gene_symbols: str | None = None,
    ncols: int = 4,
    show: bool | None = None,
    save: SavePath = None,
) -> list[Axes] | None:
    """The genes of largest weight in each program, as bars.

    Parameters
    ----------
    adata : anndata.AnnData
    key : str, default="NMF_components"
        Genes x k in ``varm``: ``"NMF_components"`` after :func:`dnmf.tl.nmf`;
        ``"cnmf_spectra"``, ``"cnmf_spectra_tpm"`` or ``"cnmf_gene_scores"`` after
        :func:`dnmf.tl.consensus`.
    n_genes : int, default=10
    components : sequence of int, optional
        The programs to show, numbered from 1 (default: all).
    gene_symbols : str, optional
        A column of ``adata.var`` to name the genes by (default: ``var_names``).
    ncols : int, default=4
    show : bool, optional
    save : str or path, optional

    Returns
    -------
    list of matplotlib.axes.Axes, or None when shown
    """
    _check_anndata(adata)
    if key not in adata.varm:
        raise InputError(f"adata.varm has no {key!r}; its keys are {sorted(adata.varm) or 'none'}")
    weights = np.asarray(adata.varm[key])
    if gene_symbols is not None and gene_symbols not in adata.var.columns:
        raise InputError(f"adata.var has no column {gene_symbols!r}")
    names = np.asarray(adata.var_names if gene_symbols is None else adata.var[gene_symbols]).astype(str)
    numbers = _components(components, weights.shape[1])
    figure, axes = _grid(len(numbers), ncols, (2.6, 0.22 * n_genes + 0.9))
    for ax, number in zip(axes, numbers):
        column = weights[:, number - 1]
        top = np.argsort(-column, kind="stable")[:n_genes]
        ax.barh(np.arange(top.size)[::-1], column[top], color="tab:blue")
        ax.set_yticks(np.arange(top.size)[::-1], names[top], fontsize=8)
        ax.set_title(f"{key} {number}")
        ax.tick_params(axis="x", labelsize=7)
    return _finish(figure, axes, show, save)


def k_selection(
    adata: AnnData, *, key: str = CONSENSUS_KEY, show: bool | None = None, save: SavePath = None
) -> Axes | None:
    """Stability and error of the consensus against k, the recommendation marked
    (cNMF's k-selection plot), from :func:`dnmf.tl.consensus`'s ``uns[key]``.

    Returns
    -------
    matplotlib.axes.Axes, or None when shown
        The axes of the stability (the error's are their twin, sharing x).
    """
    record = _consensus_record(adata, key)
    figure, (ax,) = _grid(1, 1, (6.4, 4.0))
    draw_k_selection(
        ax, record["ranks"], record["stability"], record["relative_error"], record["recommended"], record["replicates"]
    )
    return _finish(figure, ax, show, save)


def density(
    adata: AnnData, *, key: str = CONSENSUS_KEY, show: bool | None = None, save: SavePath = None
) -> Axes | None:
    """The histogram of the local density of the chosen rank's replicate spectra, the
    threshold marked (cNMF's), from :func:`dnmf.tl.consensus`'s ``uns[key]``.

    Returns
    -------
    matplotlib.axes.Axes, or None when shown
    """
    record = _consensus_record(adata, key)
    figure, (ax,) = _grid(1, 1, (6.4, 3.6))
    neighbors = max(1, int(record["neighbors"] * record["replicates"]))
    draw_density(
        ax, np.asarray(record["density"]), record["labels"], record["k"], record["density_threshold"], neighbors
    )
    return _finish(figure, ax, show, save)


def clustering(
    adata: AnnData, *, key: str = CONSENSUS_KEY, show: bool | None = None, save: SavePath = None
) -> Axes | None:
    """The distances between the chosen rank's kept replicate spectra, ordered by
    cluster (cNMF's clustergram), from :func:`dnmf.tl.consensus`'s ``uns[key]``.

    Returns
    -------
    matplotlib.axes.Axes, or None when shown
    """
    record = _consensus_record(adata, key)
    figure, (ax,) = _grid(1, 1, (5.6, 5.0))
    image = draw_clustering(ax, np.asarray(record["labels"]), np.asarray(record["unit_spectra"]), record["k"])
    figure.colorbar(image, ax=ax, fraction=0.05, label="Euclidean distance")
    return _finish(figure, ax, show, save)


# ------------------------------------------------------------------------------ helpers


def _check_anndata(adata):
    if not is_anndata(adata):
        raise InputTypeError(f"expected an anndata.AnnData, got {type(adata).__name__}")


def _obsm(adata, key):
    if key not in adata.obsm:
        raise InputError(f"adata.obsm has no {key!r}; its keys are {sorted(adata.obsm) or 'none'}")
    return adata.obsm[key]


def _consensus_record(adata, key) -> dict[str, Any]:
    _check_anndata(adata)
    record = adata.uns.get(key)
    if not isinstance(record, dict) or "stability" not in record:
        raise InputError(f"adata.uns has no consensus under {key!r}; run dnmf.tl.consensus(adata, ranks) first")
    return record


def _components(components, k):
    numbers = list(range(1, k + 1)) if components is None else [int(c) for c in components]
    bad = [c for c in numbers if not 1 <= c <= k]
    if bad:
        raise InputError(f"components are numbered 1 to {k}; got {bad}")
    return numbers


def _grid(count, ncols, panel_size):
    import matplotlib.pyplot as plt

    ncols = max(1, min(ncols, count))
    nrows = -(-count // ncols)
    figure, axes = plt.subplots(
        nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False, layout="constrained"
    )
    flat = list(axes.ravel())
    for ax in flat[count:]:
        ax.set_visible(False)
    return figure, flat[:count]


def _finish(figure, axes, show, save):
    import matplotlib.pyplot as plt

    if save is not None:
        figure.savefig(os.fspath(save), dpi=150)
    if show is None:
        show = plt.isinteractive()
    if show:
        plt.show()
        return None
    return axes
