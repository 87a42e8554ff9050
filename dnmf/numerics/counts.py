"""Per-panel maths of cNMF's count preprocessing (Kotliar et al., eLife 2019).

cNMF factorizes a counts matrix (cells x genes) after three steps, reproduced here so
that a row panel at a time suffices:

1. each cell normalized to a common total (TPM: ``target_sum`` = 1e6), for the
   statistics of step 2 only;
2. the ``top`` genes of highest over-dispersion of the normalized counts kept: each
   gene's Fano factor (variance / mean) against the one expected from its mean,
   ``A² mean + B²`` (:func:`highly_variable`);
3. the raw counts of the kept genes scaled to unit variance (sample variance, ``ddof=1``),
   without centering (:func:`scaled_columns`).

Nothing here knows about Dask: :func:`panel_count_sums` is one panel's share of the
statistics, summed over the panels by the graph of :mod:`dnmf.engine.solvers`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .kernels import transposed

__all__ = [
    "COUNT_SUMS",
    "TPM_TOTAL",
    "add_count_sums",
    "gene_scale",
    "highly_variable",
    "normalized_mean_var",
    "normalized_rows",
    "panel_count_sums",
    "scaled_columns",
]

#: cNMF's common total of a normalized cell (transcripts per million).
TPM_TOTAL = 1e6
#: The rows of :func:`panel_count_sums`: per column, over the cells.
COUNT_SUMS = ("counts", "counts_squared", "normalized", "normalized_squared")
#: cNMF fits the expected Fano line to the genes of highest mean ...
TOP_MEAN_GENES = 20
#: ... and to the median Fano factor of the genes inside these quantiles of both.
WINSOR_QUANTILES = (0.10, 0.90)


def _row_scale(V, target_sum):
    totals = np.asarray(V.sum(axis=1), dtype=np.float64).ravel()
    return target_sum / np.where(totals > 0, totals, 1.0)


def normalized_rows(V, target_sum=TPM_TOTAL):
    """``V`` with each row rescaled to sum ``target_sum`` (TPM), in V's dtype (a new
    panel); a row of zeros stays zeros (as scanpy's ``normalize_total``)."""
    scale = _row_scale(V, target_sum)
    if sp.issparse(V):
        out = sp.csr_matrix(V, copy=True)
        out.data = (out.data * np.repeat(scale, np.diff(out.indptr))).astype(V.dtype, copy=False)
        return out
    return (np.asarray(V) * scale[:, None]).astype(V.dtype, copy=False)


def panel_count_sums(V, target_sum=TPM_TOTAL):
    """One panel's column sums (float64, shape ``(4, n)``, rows :data:`COUNT_SUMS`) of the
    counts, their squares, the counts normalized to ``target_sum`` per row, and their squares.

    A row of zeros stays zeros when normalized (as scanpy's ``normalize_total``).
    """
    scale = _row_scale(V, target_sum)
    squares = V.multiply(V) if sp.issparse(V) else np.square(V, dtype=np.float64)
    weights = np.stack([np.ones_like(scale), scale]).T  # (rows, 2)
    counts = np.asarray(transposed(V) @ weights, dtype=np.float64)  # (n, 2)
    squared = np.asarray(squares.T @ np.square(weights), dtype=np.float64)
    return np.stack([counts[:, 0], squared[:, 0], counts[:, 1], squared[:, 1]])


def add_count_sums(*parts):
    """The sum of :func:`panel_count_sums` results."""
    return np.sum(parts, axis=0)


def _mean_var(total, squares, m, ddof):
    mean = total / m
    return mean, np.maximum(squares - m * mean * mean, 0.0) / max(m - ddof, 1)


def normalized_mean_var(sums, m, ddof=0):
    """Each gene's mean and variance (with ``ddof``) of the normalized counts, from
    :func:`panel_count_sums` over all ``m`` cells."""
    return _mean_var(sums[2], sums[3], m, ddof)


def highly_variable(sums, m, top):
    """Indices, in increasing order, of the ``top`` most over-dispersed genes of the
    normalized counts (cNMF's ``get_highvar_genes_sparse`` with ``numgenes=top``).

    Parameters
    ----------
    sums : ndarray of shape (4, n)
        :func:`panel_count_sums` over all the cells.
    m : int
        Number of cells.
    top : int

    Returns
    -------
    columns : ndarray of int64
    fano_ratio : ndarray of shape (n,)
        Each gene's Fano factor over the expected one (NaN for genes never seen).
    """
    mean, var = normalized_mean_var(sums, m)
    with np.errstate(divide="ignore", invalid="ignore"):
        fano = var / mean
        highest_mean = np.argsort(-mean, kind="stable")[:TOP_MEAN_GENES]
        A = np.nanmin(np.sqrt(var[highest_mean]) / mean[highest_mean])
    low_mean, high_mean = np.quantile(mean, WINSOR_QUANTILES)
    low_fano, high_fano = np.nanquantile(fano, WINSOR_QUANTILES)
    with np.errstate(invalid="ignore"):
        box = (fano > low_fano) & (fano < high_fano) & (mean > low_mean) & (mean < high_mean)
        B_squared = np.median(fano[box]) if box.any() else 0.0
        ratio = fano / (A * A * mean + B_squared)
    order = np.argsort(-np.where(np.isnan(ratio), -np.inf, ratio), kind="stable")
    return np.sort(order[: min(int(top), ratio.size)]), ratio


def gene_scale(sums, m):
    """``1 / std`` of each gene's counts (sample standard deviation; 1 where it is 0, as
    scanpy's ``scale``), in float64."""
    _, var = _mean_var(sums[0], sums[1], m, ddof=1)
    std = np.sqrt(var)
    return 1.0 / np.where(std > 0, std, 1.0)


def scaled_columns(V, columns, scale):
    """``V[:, columns] * scale`` in V's dtype (a new panel; V is not changed)."""
    scale = np.asarray(scale).astype(V.dtype, copy=False)
    if sp.issparse(V):
        out = sp.csr_matrix(V)[:, columns]
        out.data *= scale[out.indices]
        return out
    return np.asarray(V)[:, columns] * scale
