"""Tools on AnnData objects, the scverse way (``dnmf.tl``, as scanpy's ``sc.tl``).

Each tool reads its matrix from an ``anndata.AnnData`` (``X``, or a layer), writes its
results into the object's ``obsm``, ``varm`` and ``uns`` and returns None (with
``copy=True``: a new object that has them, the one passed left as it was). The matrix is
never changed, and it is read as :class:`dnmf.NMF` reads any input: in memory when it is
(NumPy, SciPy CSR or CSC), lazily when it is a Dask array (for instance from anndata's
own ``anndata.experimental.read_elem_lazy``), from its file, a row panel at a time, when
the object was opened with ``backed="r"``. Out-of-core inputs run on the active Dask
client if there is one, else on Dask's threads.

Results land under keys that exist nowhere else in the object: a key already there is
an error unless ``overwrite=True`` (or ``copy=True``: then the copy's is replaced).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import dask.array as da
import numpy as np
import scipy.sparse as sp

from . import api
from .apps import consensus as consensus_app
from .apps.counts import TOP_GENES
from .engine.driver import to_numpy
from .engine.panels import Panels
from .errors import InputError, InputTypeError, ParameterError
from .io.adata import is_anndata
from .io.formats import open_anndata
from .io.storage import as_panels
from .numerics.losses import loss_to_error
from .params import DEFAULTS, recorded, validate_params

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["consensus", "nmf"]

#: Where :func:`nmf` writes by default (``key_added`` renames all three, as scanpy's ``pca``).
NMF_KEYS = ("X_nmf", "NMF_components", "nmf")
#: :func:`consensus`'s default ``key_added``.
CONSENSUS_KEY = "cnmf"
#: The column of ``adata.var`` that ``use_highly_variable`` reads (scanpy's).
HIGHLY_VARIABLE = "highly_variable"


def nmf(
    adata: AnnData,
    n_components: int,
    *,
    layer: str | None = None,
    use_highly_variable: bool | None = None,
    key_added: str | None = None,
    copy: bool = False,
    overwrite: bool = False,
    random_state: int | None = 0,
    **params: Any,
) -> AnnData | None:
    """Non-negative matrix factorization of an AnnData's matrix, into the object.

    Fits ``dnmf.NMF(n_components, random_state=random_state, **params)`` to ``adata.X``
    (cells x genes) or ``adata.layers[layer]``, and writes, as ``scanpy.tl.pca`` does:

    - ``adata.obsm["X_nmf"]``: the usage of each program by each cell, W (cells x k);
    - ``adata.varm["NMF_components"]``: each program's genes, Hᵀ (genes x k; zeros for
      genes that ``use_highly_variable`` left out);
    - ``adata.uns["nmf"]``: ``params``, ``reconstruction_err``, ``relative_err``
      (over ``||X||``), ``n_iter``, ``converged`` and ``loss_history``.

    X may be a NumPy array, a SciPy CSR or CSC matrix, a Dask array (read lazily, one
    pass per iteration; ``obsm["X_nmf"]`` is then a Dask array too, computed when you
    ask for it), or the X of an object opened with ``backed="r"`` (read from the file a
    row panel at a time; W, cells x k, comes back in memory).

    Parameters
    ----------
    adata : anndata.AnnData
    n_components : int
        The number of programs k, at most the number of cells and of genes used.
    layer : str, optional
        Factorize ``adata.layers[layer]`` instead of ``adata.X``.
    use_highly_variable : bool, optional
        Use only the genes of ``adata.var["highly_variable"]`` (as set by
        ``scanpy.pp.highly_variable_genes``). Default: when that column exists.
    key_added : str, optional
        Write to ``obsm[key_added]``, ``varm[key_added]`` and ``uns[key_added]`` instead.
    copy : bool, default=False
        Return a copy of ``adata`` with the results; ``adata`` is left as it was.
    overwrite : bool, default=False
        Replace results already under these keys (otherwise an error).
    random_state : int or None, default=0
        The seed of the initialization (scanpy's tools default to 0 too).
    **params
        Any other parameter of :class:`dnmf.NMF` (``beta_loss``, ``max_iter``,
        ``client``, ``panel_rows``, ...).

    Returns
    -------
    anndata.AnnData or None
        The copy with ``copy=True``, else None.

    Examples
    --------
    >>> import anndata, numpy as np, dnmf
    >>> adata = anndata.AnnData(np.random.default_rng(0).poisson(1.0, (60, 30)).astype("float32"))
    >>> dnmf.tl.nmf(adata, 3)
    >>> adata.obsm["X_nmf"].shape, adata.varm["NMF_components"].shape
    ((60, 3), (30, 3))
    """
    _check_anndata(adata, copy)
    obsm_key, varm_key, uns_key = NMF_KEYS if key_added is None else (key_added,) * 3
    where = _where(layer)
    X = _matrix(adata, layer)
    columns = _highly_variable(adata, use_highly_variable)
    used = X.shape[1] if columns is None else columns.size
    _check_rank(n_components, X.shape[0], used, columns is not None)
    _check_free(adata, copy or overwrite, obsm=[obsm_key], varm=[varm_key], uns=[uns_key])
    fit_params = {**DEFAULTS, **params, "n_components": n_components, "random_state": random_state}
    validate_params(fit_params)
    with _naming(where):
        result = api.run(
            _take_columns(X, columns, fit_params["panel_rows"]), fit_params, as_numpy=not isinstance(X, da.Array)
        )
    H = result.H
    error = float(loss_to_error(result.loss))
    record = {
        "params": {**recorded(fit_params), "layer": layer, "use_highly_variable": columns is not None},
        "reconstruction_err": error,
        "relative_err": error / result.norm_V if result.norm_V > 0 else 0.0,
        "n_iter": int(result.n_iter),
        "converged": bool(result.converged),
        "loss_history": np.asarray(result.loss_history, dtype=np.float64),
    }
    target = adata.copy() if copy else adata
    target.obsm[obsm_key] = result.W
    target.varm[varm_key] = _per_gene(H.T, columns, adata.n_vars)
    target.uns[uns_key] = record
    return target if copy else None


def consensus(
    adata: AnnData,
    ranks: Iterable[int],
    *,
    k: int | None = None,
    replicates: int = consensus_app.REPLICATES,
    layer: str | None = None,
    preprocess: Literal["none", "counts"] = "none",
    top_genes: int = TOP_GENES,
    key_added: str = CONSENSUS_KEY,
    copy: bool = False,
    overwrite: bool = False,
    random_state: int = 0,
    **params: Any,
) -> AnnData | None:
    """Consensus NMF (cNMF) of an AnnData's matrix for each rank, the chosen rank into the object.

    Runs :func:`dnmf.consensus` (what ``dnmf consensus`` runs: ``replicates`` fits per
    rank sharing each pass over X, the density filter, k-means, the refit of the usages)
    on ``adata.X`` or ``adata.layers[layer]``. With ``preprocess="counts"`` the matrix is
    taken as raw counts and prepared as cNMF's ``prepare`` does (the ``top_genes`` most
    over-dispersed genes, each scaled to unit variance), panel by panel as it is read:
    ``adata`` is not changed. For the chosen rank (``k``, else the recommended one) it
    writes, with ``key = key_added``:

    - ``adata.obsm["X_" + key]``: the usages (cells x k; a Dask array when X is one);
    - ``adata.varm[key + "_spectra"]``: the consensus spectra (genes x k, rows of H;
      zeros for the genes that counts preprocessing left out);
    - with ``preprocess="counts"`` also ``adata.varm[key + "_spectra_tpm"]`` (cNMF's
      spectra in TPM units) and ``adata.varm[key + "_gene_scores"]`` (its z-scored gene
      scores), every gene;
    - ``adata.uns[key]``: ``k``, ``recommended``, and for every rank tried (``ranks``)
      its ``stability``, ``error``, ``relative_error`` and ``kept`` spectra; the
      parameters (``replicates``, ``density_threshold``, ``neighbors``,
      ``preprocessing``, ``params``); the genes used (``genes_used``, indices into
      ``var``) and the scale counts preprocessing gave each (``gene_scale``); and for the
      chosen rank what
      :mod:`dnmf.pl`'s plots need: each replicate spectrum's ``density`` and cluster
      ``labels``, and the ``unit_spectra`` themselves (replicates·k x genes used,
      float32).

    The programs are numbered by their total share of the cells' usage, largest first.

    Parameters
    ----------
    adata : anndata.AnnData
    ranks : iterable of int
        The ranks to try.
    k : int, optional
        The rank written into the object (one of ``ranks``); default: the recommended
        one, the largest whose stability is within 0.05 of the best (see :ref:`consensus`).
    replicates : int, default=100
        Fits per rank (cNMF's ``n_iter``).
    layer : str, optional
        Use ``adata.layers[layer]`` (for counts preprocessing, typically ``"counts"``).
    preprocess : {"none", "counts"}, default="none"
        ``"counts"``: cNMF's preprocessing of raw counts, out of core.
    top_genes : int, default=2000
        With ``preprocess="counts"``: the over-dispersed genes kept (cNMF's ``--numgenes``).
    key_added : str, default="cnmf"
    copy : bool, default=False
        Return a copy of ``adata`` with the results; ``adata`` is left as it was.
    overwrite : bool, default=False
        Replace results already under these keys (otherwise an error).
    random_state : int, default=0
    **params
        Other parameters of :func:`dnmf.consensus` (``density_threshold``,
        ``neighbors``, ``refit_usages``, ``checkpoint``, ``client``, ...) and of
        :class:`dnmf.NMF` for every fit.

    Returns
    -------
    anndata.AnnData or None
        The copy with ``copy=True``, else None.
    """
    _check_anndata(adata, copy)
    ranks = list(ranks)
    if k is not None and k not in ranks:
        raise ParameterError(f"k={k!r} is not one of the ranks tried ({', '.join(map(str, ranks))})")
    key = key_added
    varm_keys = [f"{key}_spectra", *([f"{key}_spectra_tpm", f"{key}_gene_scores"] if preprocess == "counts" else [])]
    _check_free(adata, copy or overwrite, obsm=[f"X_{key}"], varm=varm_keys, uns=[key])
    where = _where(layer)
    X = _matrix(adata, layer)
    with _naming(where):
        result = consensus_app.consensus(
            X,
            ranks,
            replicates=replicates,
            preprocess=preprocess,
            top_genes=top_genes,
            random_state=random_state,
            **params,
        )
    report = result.report
    chosen = report.recommended if k is None else int(k)
    usages = result.usages[chosen]
    columns = None if result.preprocessing is None else np.asarray(result.preprocessing.columns)
    scores = report.scores
    record = {
        "k": chosen,
        "recommended": report.recommended,
        "rule": report.rule,
        "ranks": np.asarray(report.ranks, dtype=np.int64),
        "stability": np.asarray([s.stability for s in scores], dtype=np.float64),
        "error": np.asarray([s.error for s in scores], dtype=np.float64),
        "relative_error": np.asarray([s.relative_error for s in scores], dtype=np.float64),
        "kept": np.asarray([s.kept for s in scores], dtype=np.int64),
        "replicates": report.replicates,
        "density_threshold": report.density_threshold,
        "neighbors": report.neighbors,
        "preprocessing": preprocess,
        "genes_used": np.arange(adata.n_vars) if columns is None else columns,
        "gene_scale": np.ones(adata.n_vars) if result.preprocessing is None else result.preprocessing.scale,
        "refit_usages": report.refit_usages,
        "params": {**recorded(consensus_app.fit_params(params)), "layer": layer, "random_state": random_state},
        "density": np.asarray(result.density[chosen], dtype=np.float64),
        "labels": np.asarray(result.labels[chosen], dtype=np.int64),
        "unit_spectra": np.asarray(result.unit_spectra[chosen], dtype=np.float32),
    }
    target = adata.copy() if copy else adata
    target.obsm[f"X_{key}"] = usages if isinstance(X, da.Array) else to_numpy(usages)
    target.varm[f"{key}_spectra"] = _per_gene(result.spectra[chosen].T, columns, adata.n_vars)
    if result.spectra_tpm is not None and result.spectra_score is not None:
        target.varm[f"{key}_spectra_tpm"] = np.ascontiguousarray(result.spectra_tpm[chosen].T)
        target.varm[f"{key}_gene_scores"] = np.ascontiguousarray(result.spectra_score[chosen].T)
    target.uns[key] = record
    return target if copy else None


# ------------------------------------------------------------------------- the boundary


def _check_anndata(adata, copy):
    if not is_anndata(adata):
        raise InputTypeError(f"expected an anndata.AnnData, got {type(adata).__name__}")
    if copy and adata.isbacked:
        raise ParameterError(
            "copy=True needs the AnnData in memory; a backed one (backed='r') is written into: give copy=False"
        )


def _where(layer):
    """The matrix as the user names it."""
    return "adata.X" if layer is None else f"adata.layers[{layer!r}]"


def _matrix(adata, layer):
    """The matrix to factorize (never a copy of a backed or lazy one)."""
    if layer is not None and layer not in adata.layers:
        raise InputError(f"the AnnData has no layer {layer!r}; its layers are {sorted(adata.layers) or 'none'}")
    X = open_anndata(adata, layer=layer)
    if X is None:
        raise InputError("the AnnData has no X; name one of its layers with layer=")
    return X


def _highly_variable(adata, use_highly_variable):
    """The indices of the genes used, or None (all)."""
    present = HIGHLY_VARIABLE in adata.var.columns
    if use_highly_variable is None:
        use_highly_variable = present
    if not use_highly_variable:
        return None
    if not present:
        raise InputError(
            'use_highly_variable=True but adata.var has no "highly_variable" column; '
            "run scanpy.pp.highly_variable_genes first"
        )
    columns = np.flatnonzero(np.asarray(adata.var[HIGHLY_VARIABLE], dtype=bool))
    if columns.size == 0:
        raise InputError('adata.var["highly_variable"] marks no gene')
    return columns


def _check_rank(n_components, n_obs, n_used, selected):
    if isinstance(n_components, bool) or not isinstance(n_components, (int, np.integer)) or n_components < 1:
        raise ParameterError(f"n_components must be a positive integer, got {n_components!r}")
    if n_components > min(n_obs, n_used):
        genes = f"{n_used} highly variable genes" if selected else f"{n_used} genes"
        raise ParameterError(
            f"n_components={n_components} is more than the matrix allows: it has {n_obs} cells and {genes}"
        )


def _check_free(adata, replace, **keys):
    """An error naming the first result key the object already has, unless ``replace``."""
    if replace:
        return
    for slot, names in keys.items():
        mapping = getattr(adata, slot)
        for name in names:
            if name in mapping:
                raise InputError(
                    f"adata.{slot}[{name!r}] exists already; pass overwrite=True to replace it, "
                    "key_added= to write elsewhere, or copy=True"
                )


@contextlib.contextmanager
def _naming(where):
    """Errors about the input, prefixed with the matrix as the user names it."""
    try:
        yield
    except InputError as error:
        if str(error).startswith(where):
            raise
        raise type(error)(f"{where}: {error}") from None


def _take_columns(X, columns, panel_rows):
    """``X[:, columns]``: sliced when in memory or a Dask array, else each stored panel
    (of ``panel_rows`` rows, if given) as it is read (nothing is copied)."""
    if columns is None:
        return X
    if isinstance(X, (np.ndarray, da.Array)) or sp.issparse(X):
        return X[:, columns]
    panels: Panels = as_panels(X, panel_rows=panel_rows)
    return panels.map_panels(_panel_columns, columns, n_columns=columns.size)


def _panel_columns(panel, index, columns):
    return panel[:, columns]


def _per_gene(values, columns, n_vars):
    """``values`` (genes used x k) as an array over every gene, zeros for those not used."""
    values = np.asarray(values)
    if columns is None:
        return np.ascontiguousarray(values)
    out = np.zeros((n_vars, values.shape[1]), dtype=values.dtype)
    out[columns] = values
    return out
