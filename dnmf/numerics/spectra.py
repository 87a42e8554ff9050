"""Per-panel maths of cNMF's results in TPM units (Kotliar et al., eLife 2019).

Once the usages ``U`` of a consensus are refit, cNMF turns its spectra into units a
biologist reads, over *all* genes, against the counts normalized to 1e6 per cell (TPM,
``T``):

- ``spectra_tpm``: the non-negative least-squares spectra of ``T`` for the usages
  normalized to sum 1 per cell, ``N`` (scikit-learn's coordinate descent with ``N``
  fixed, from zeros, stopped by its rule: :func:`nonnegative_spectra`);
- ``spectra_score``: the least-squares coefficients of each gene's z-scored TPM on the
  usages ``U`` (:func:`gene_scores`, cNMF's ``efficient_ols_all_cols``).

Both need only ``NᵀT``, ``UᵀT``, their Gram matrices and column sums, which one read of
each panel gives (:func:`panel_usage_products`, summed over the panels by the graph of
:mod:`dnmf.engine.solvers`); the solves are k-sized and run on the driver. Nothing here
knows about Dask.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .kernels import hals_sweeps, transposed
from .losses import member_slices

__all__ = [
    "SCORE_VARIANCE_FLOOR",
    "UsageProducts",
    "add_usage_products",
    "gene_scores",
    "nonnegative_spectra",
    "panel_usage_products",
    "usage_rows",
]

#: cNMF floors each gene's TPM variance at this before z-scoring (genes never seen).
SCORE_VARIANCE_FLOOR = 1e-12


class UsageProducts(NamedTuple):
    """Sums over the cells of ``S = [N | U]`` (float64; ``2K`` columns for usages of total
    rank ``K``): ``cross = SᵀV`` (``None`` when no V was read), ``gram = SᵀS``,
    ``totals = Sᵀ1``."""

    cross: np.ndarray | None
    gram: np.ndarray
    totals: np.ndarray

    def __add__(self, other):
        cross = None if self.cross is None else self.cross + other.cross
        return UsageProducts(cross, self.gram + other.gram, self.totals + other.totals)


def usage_rows(U, members=()):
    """``U`` (float64) with each row of each member's block of columns rescaled to sum 1
    (rows of zeros stay zeros; cNMF's ``norm_usages``)."""
    U = np.asarray(U, dtype=np.float64)
    out = np.zeros_like(U)
    for a, b in member_slices(members or (U.shape[1],)):
        sums = U[:, a:b].sum(axis=1, keepdims=True)
        np.divide(U[:, a:b], sums, out=out[:, a:b], where=sums > 0)
    return out


def panel_usage_products(V, U, members=()):
    """One panel's :class:`UsageProducts` of the usages ``U`` (m_i x K) of ranks ``members``
    side by side, and of ``V`` (m_i x n, dense or CSR; None: no V products)."""
    U = np.asarray(U, dtype=np.float64)
    S = np.hstack([usage_rows(U, members), U])
    cross = None if V is None else np.asarray(transposed(V) @ S, dtype=np.float64).T
    return UsageProducts(cross, S.T @ S, S.sum(axis=0))


def add_usage_products(*parts):
    """The sum of :func:`panel_usage_products` results."""
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


def nonnegative_spectra(gram, cross, tol=1e-4, max_iter=1000):
    """``argmin_{H >= 0} ||T - N H||²`` from ``gram = NᵀN`` (k x k) and ``cross = NᵀT``
    (k x n): scikit-learn's coordinate descent for the spectra with the usages fixed
    (``non_negative_factorization(Tᵀ, H=Nᵀ, update_H=False, solver="cd")``, as cNMF's
    ``refit_spectra`` runs it), from zeros, until a sweep's violation is at most ``tol``
    times the first's.

    Returns
    -------
    H : ndarray of shape (k, n), float64
    n_iter : int
    """
    gram = np.ascontiguousarray(gram, dtype=np.float64)
    cross_t = np.ascontiguousarray(np.asarray(cross, dtype=np.float64).T)
    H_t = np.zeros_like(cross_t)
    first, n_iter = None, 0
    while n_iter < max_iter:
        violation = hals_sweeps(H_t, gram, cross_t, 1)
        n_iter += 1
        first = violation if first is None else first
        if first == 0 or violation <= tol * first:
            break
    return np.ascontiguousarray(H_t.T), n_iter


def gene_scores(gram, cross, totals, mean, var):
    """cNMF's gene scores: the least-squares coefficients ``B`` (k x n) of
    ``(T - mean) / sqrt(var) ≈ U B`` (each gene's TPM z-scored with its mean and
    population variance over all the cells, the variance floored at
    :data:`SCORE_VARIANCE_FLOOR`), from ``gram = UᵀU``, ``cross = UᵀT``,
    ``totals = Uᵀ1``; solved as cNMF solves it (``numpy.linalg.lstsq``)."""
    std = np.sqrt(np.maximum(np.asarray(var, dtype=np.float64), SCORE_VARIANCE_FLOOR))
    target = (np.asarray(cross, dtype=np.float64) - np.outer(totals, mean)) / std
    return np.linalg.lstsq(np.asarray(gram, dtype=np.float64), target, rcond=None)[0]
