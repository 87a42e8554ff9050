"""Predictions for missing entries: the best unobserved columns of a row of ``W H``
(``dnmf recommend``; the fit is a masked one, see :mod:`dnmf.numerics.masked`)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

__all__ = ["observed_columns", "recommend"]


def observed_columns(row: ArrayLike | sp.spmatrix | sp.sparray, missing: str | None) -> np.ndarray:
    """Columns of one row of V (a 1 x n dense array or CSR matrix) that are observed.

    ``"absent"`` (or a CSR row with ``missing=None``): the stored columns; otherwise the
    non-NaN columns.
    """
    if sp.issparse(row):
        row = sp.csr_matrix(row)
        if missing == "absent" or missing is None:
            return np.asarray(row.indices, dtype=np.int64)
        row = row.toarray()
    return np.flatnonzero(~np.isnan(np.asarray(row, dtype=np.float64).ravel()))


def recommend(w_row: ArrayLike, H: ArrayLike, observed: ArrayLike, top: int) -> list[tuple[int, float]]:
    """The ``top`` unobserved columns of one row with the highest predicted ``w_row @ H``.

    Parameters
    ----------
    w_row : ndarray of shape (k,)
    H : ndarray of shape (k, n)
    observed : array of int
        Columns to leave out (observed entries).
    top : int

    Returns
    -------
    list of (int, float)
        ``(column, predicted value)``, best first; ties broken by column.
    """
    scores = np.asarray(w_row, dtype=np.float64) @ np.asarray(H, dtype=np.float64)
    candidates = np.setdiff1d(np.arange(scores.size), np.asarray(observed, dtype=np.int64))
    order = candidates[np.lexsort((candidates, -scores[candidates]))][:top]
    return [(int(j), float(scores[j])) for j in order]
