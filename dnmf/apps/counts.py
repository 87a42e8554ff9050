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

For cNMF's results in TPM units (:func:`dnmf.apps.consensus.consensus`), the same
counts are also read as :func:`tpm_panels` (every gene, each cell normalized to 1e6)
and :func:`scaled_tpm_panels` (the kept genes of that, each scaled to unit variance:
the matrix cNMF refits its final usages against).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..engine.driver import count_sums
from ..errors import ParameterError
from ..numerics.counts import (
    TPM_TOTAL,
    gene_scale,
    highly_variable,
    normalized_mean_var,
    normalized_rows,
    scaled_columns,
)

__all__ = [
    "PREPROCESSING",
    "TOP_GENES",
    "CountPreprocessing",
    "as_dict",
    "check_top_genes",
    "prepare_counts",
    "scaled_tpm_panels",
    "tpm_panels",
    "tpm_refit_spectra",
]

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
    tpm_mean, tpm_var : ndarray of float64 of shape (n,)
        Every input column's mean and population variance of the normalized counts
        (cNMF's ``tpm_stats``).
    """

    columns: np.ndarray
    scale: np.ndarray
    fano_ratio: np.ndarray
    target_sum: float = TPM_TOTAL
    tpm_mean: np.ndarray | None = None
    tpm_var: np.ndarray | None = None

    def to_dict(self):
        """A JSON-ready dict (the kept columns and their scale)."""
        return {
            "kind": "counts",
            "target_sum": self.target_sum,
            "top_genes": int(self.columns.size),
            "columns": self.columns.tolist(),
            "scale": self.scale.tolist(),
        }


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
    done = CountPreprocessing(columns, scale, ratio, float(target_sum), *normalized_mean_var(sums, m))
    return panels.map_panels(_scaled_panel, columns, scale, n_columns=columns.size), done


def _tpm_panel(panel, _index, target_sum):
    return normalized_rows(panel, target_sum)


def _scaled_tpm_panel(panel, _index, target_sum, columns, scale):
    return scaled_columns(normalized_rows(panel, target_sum), columns, scale)


def tpm_panels(panels, preprocessing):
    """The counts ``panels`` (as given to :func:`prepare_counts`) with each cell normalized
    to ``preprocessing.target_sum``, every gene (cNMF's ``tpm``), made as each panel is read."""
    return panels.map_panels(_tpm_panel, preprocessing.target_sum)


def scaled_tpm_panels(panels, preprocessing):
    """The kept genes of :func:`tpm_panels`, each scaled to unit sample variance (``ddof=1``,
    1 where it is 0), as cNMF scales them (scanpy's ``scale(zero_center=False)``) for its
    final refit of the usages."""
    m, columns = panels.shape[0], preprocessing.columns
    std = np.sqrt(preprocessing.tpm_var[columns] * m / max(m - 1, 1))
    scale = 1.0 / np.where(std > 0, std, 1.0)
    return panels.map_panels(_scaled_tpm_panel, preprocessing.target_sum, columns, scale, n_columns=columns.size)


def tpm_refit_spectra(spectra_tpm, preprocessing):
    """cNMF's spectra of the final usage refit: the TPM spectra's kept genes, each divided by
    its population standard deviation of TPM (1 where it is 0)."""
    columns = preprocessing.columns
    std = np.sqrt(preprocessing.tpm_var[columns])
    return spectra_tpm[:, columns] / np.where(std > 0, std, 1.0)


def as_dict(preprocessing):
    """:meth:`CountPreprocessing.to_dict`, or ``{"kind": "none"}``."""
    return {"kind": "none"} if preprocessing is None else preprocessing.to_dict()
