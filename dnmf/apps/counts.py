"""cNMF's preprocessing of a counts matrix, out of core: one statistics pass, no copy.

``prepare_counts(panels, top_genes)`` reads V once (:func:`dnmf.engine.driver.count_sums`)
for each gene's statistics, picks the ``top_genes`` most over-dispersed genes of the
counts normalized per cell (:func:`dnmf.numerics.counts.highly_variable`), and returns V
as cNMF factorizes it: the raw counts of those genes, each scaled to unit variance
without centering. The returned panels make that matrix from each stored panel as it is
read (:meth:`dnmf.engine.panels.Panels.map_panels`): nothing is written, the input is
never changed. The steps and their defaults are cNMF's ``prepare`` (``--numgenes 2000``,
TPM normalization for the gene statistics); the values stay in V's dtype (cNMF's in
float64).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.driver import count_sums
from ..errors import ParameterError
from ..numerics.counts import TPM_TOTAL, gene_scale, highly_variable, scaled_columns

__all__ = ["PREPROCESSING", "TOP_GENES", "CountPreprocessing", "as_dict", "check_top_genes", "prepare_counts"]

#: cNMF's ``--numgenes``: the over-dispersed genes kept.
TOP_GENES = 2000
#: Names of the preprocessings: ``"none"`` (V as given), ``"counts"`` (cNMF's).
PREPROCESSING = ("none", "counts")


@dataclass(frozen=True)
class CountPreprocessing:
    """What :func:`prepare_counts` did.

    Attributes
    ----------
    columns : ndarray of int64
        The input's columns (genes) kept, in increasing order: column ``j`` of the
        factorized matrix is input column ``columns[j]``.
    scale : ndarray of float64
        The factor of each kept column (``1 / std`` of its counts).
    fano_ratio : ndarray of float64 of shape (n,)
        Every input column's over-dispersion (NaN for a gene with no counts).
    target_sum : float
        The per-cell total of the normalization behind the gene statistics.
    """

    columns: np.ndarray
    scale: np.ndarray
    fano_ratio: np.ndarray
    target_sum: float = TPM_TOTAL

    def to_dict(self):
        """A JSON-ready dict (the kept columns and their scale)."""
        return {"kind": "counts", "target_sum": self.target_sum, "top_genes": int(self.columns.size),
                "columns": self.columns.tolist(), "scale": self.scale.tolist()}


def check_top_genes(top_genes, spell="top_genes"):
    """``top_genes`` if it is an integer >= 1."""
    if isinstance(top_genes, bool) or int(top_genes) != top_genes or top_genes < 1:
        raise ParameterError(f"{spell} must be an integer >= 1, got {top_genes!r}")
    return int(top_genes)


def _scaled_panel(panel, _index, columns, scale):
    return scaled_columns(panel, columns, scale)


def prepare_counts(panels, top_genes=TOP_GENES, target_sum=TPM_TOTAL):
    """``(panels of the preprocessed V, CountPreprocessing)`` (module docstring).

    Parameters
    ----------
    panels : dnmf.engine.panels.Panels
        Counts, cells as rows.
    top_genes : int, default=TOP_GENES
        Genes kept (all of them when there are fewer).
    target_sum : float, default=TPM_TOTAL
    """
    top_genes = check_top_genes(top_genes)
    m = panels.shape[0]
    sums = count_sums(panels, target_sum)
    columns, ratio = highly_variable(sums, m, top_genes)
    scale = gene_scale(sums[:, columns], m)
    done = CountPreprocessing(columns, scale, ratio, float(target_sum))
    return panels.map_panels(_scaled_panel, columns, scale, n_columns=columns.size), done


def as_dict(preprocessing):
    """:meth:`CountPreprocessing.to_dict`, or ``{"kind": "none"}``."""
    return {"kind": "none"} if preprocessing is None else preprocessing.to_dict()

