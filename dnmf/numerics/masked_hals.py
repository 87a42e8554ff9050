"""Masked HALS (``solver="cd"`` with missing values): per-panel kernels, no Dask.

With a mask M (see :mod:`dnmf.numerics.masked` for the modes), row i of W has its own Gram
``G_i = Σ_j m_ij h_j h_jᵀ`` and cross term ``c_i = Σ_j m_ij v_ij h_j``; HALS then sweeps
the columns of W exactly as the unmasked rule (:func:`dnmf.numerics.kernels.hals_sweeps`), each row
with its own Gram. The H-step is the same on Hᵀ with one Gram per column of V,
``G_j = Σ_i m_ij w_i w_iᵀ``: each panel emits ``Wᵀ(M⊙V)`` (k x n) and its share of
the column Grams (k² x n), tree-reduced like every other partial. Still one pass over V
per iteration.

All Grams of a panel come from one product each: ``M Q`` with ``Q_j = h_j ⊗ h_j``
(n x k²) for the rows, ``Pᵀ M`` with ``P_i = w_i ⊗ w_i`` for the columns — dense GEMMs
for a dense mask, sparse-dense products over the stored entries for ``"absent"``.
Both Gram products together cost about as much as a whole weighted-MU panel step
(``scripts/bench_masked.py`` measures it), and a HALS pass gains far more per iteration
than an MU pass.

The loss of the iterate a pass starts from is free, from the same products:
``½ Σ_observed (v - wh)² = ½ (||M⊙V||² - 2 Σ_i w_iᵀ c_i + Σ_i w_iᵀ G_i w_i)``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .kernels import in_dtype_of, squared_norm
from .masked import MaskedPartial, NanPanel, prepare_panel

__all__ = ["GRAM_BLOCK_BYTES", "hals_sweeps_per_row", "panel_step", "transform_panel", "update_h"]

#: Bytes of per-row Grams (rows x k x k) held at a time: a panel is sized by its V bytes,
#: and with k² > n its Grams would be larger than the panel.
GRAM_BLOCK_BYTES = 64 * 2**20


def _observed(V, missing):
    """``(values, pattern)`` of a panel: values with 0 where unobserved, and the mask as
    a matrix of the values' dtype (CSR of ones for ``"absent"``)."""
    V = prepare_panel(V, missing)
    if isinstance(V, NanPanel):
        pattern = np.ones(V.shape, dtype=V.dtype)
        pattern.ravel()[V.missing] = 0
        return V.values, pattern
    V = sp.csr_matrix(V)
    return V, sp.csr_matrix((np.ones_like(V.data), V.indices, V.indptr), shape=V.shape)


def _outer_rows(A):
    """``A_i ⊗ A_i`` for every row i of ``A`` (p x k) as a p x k² array."""
    return np.einsum("ik,il->ikl", A, A).reshape(A.shape[0], -1)


def _row_grams(pattern, H):
    """``G_i = Σ_j m_ij h_j h_jᵀ`` for every row of the panel: (m_i, k, k)."""
    k = H.shape[0]
    return np.asarray(pattern @ _outer_rows(np.ascontiguousarray(H.T))).reshape(-1, k, k)


def hals_sweeps_per_row(A, grams, cross, n_sweeps, penalty, tol=0.0):
    """HALS sweeps on ``A`` (p x k, in place), row i with its own Gram ``grams[i]``.

    The rule of :func:`dnmf.numerics.kernels.hals_sweeps` (scikit-learn's ``_update_cdnmf_fast``)
    with the L2 penalty on every Gram's diagonal and L1 taken from the cross term. Stops
    early once a sweep changes A by at most ``tol`` relative to it (``tol > 0``).

    Returns
    -------
    n_done : int
        Sweeps made.
    violation : float
        scikit-learn's violation (summed absolute projected gradients) of the first sweep.
    """
    k = A.shape[1]
    diagonal = np.arange(k)
    hess = grams[:, diagonal, diagonal] + penalty.l2
    cross = cross - penalty.l1 if penalty.l1 else cross
    violation = 0.0
    for sweep in range(1, n_sweeps + 1):
        change = 0.0
        for t in range(k):
            grad = np.einsum("ik,ik->i", grams[:, t, :], A) + penalty.l2 * A[:, t] - cross[:, t]
            if sweep == 1:
                violation += float(np.abs(np.where(A[:, t] == 0, np.minimum(grad, 0), grad)).sum())
            h = hess[:, t]
            new = np.where(h != 0, np.maximum(A[:, t] - grad / np.where(h != 0, h, 1), 0), A[:, t])
            delta = new - A[:, t]
            change += float(np.dot(delta, delta))
            A[:, t] = new
        if tol > 0 and change <= tol**2 * float(np.vdot(A, A)):
            return sweep, violation
    return n_sweeps, violation


def _loss(norm, A, grams, cross):
    """``½ (norm - 2 Σ_i a_iᵀ c_i + Σ_i a_iᵀ G_i a_i)`` in float64, clipped at 0."""
    A64 = A.astype(np.float64)
    quad = float(np.vdot(A64, np.einsum("ikl,il->ik", grams, A).astype(np.float64)))
    return max(0.5 * (norm - 2.0 * float(np.vdot(A64, cross.astype(np.float64))) + quad), 0.0)


def _solve_rows(values, pattern, W, H, penalty, n_sweeps, tol=0.0):
    """Masked HALS on a panel's W with H fixed, :data:`GRAM_BLOCK_BYTES` of row Grams at
    a time.

    Returns
    -------
    W : ndarray (a new array)
    loss_before, loss_after : float
        Loss over the panel's observed entries of the starting and of the returned W.
    n_done : int
        Most sweeps made in a block.
    violation : float
        Of the first sweep (see :func:`hals_sweeps_per_row`).
    """
    k = H.shape[0]
    Ht = np.ascontiguousarray(H.T)
    W = np.array(W, copy=True)
    step = max(1, GRAM_BLOCK_BYTES // (k * k * W.itemsize))
    before = after = violation = 0.0
    n_done = 0
    for start in range(0, W.shape[0], step):
        rows = slice(start, min(W.shape[0], start + step))
        grams = _row_grams(pattern[rows], H)
        cross = np.asarray(values[rows] @ Ht)
        norm = squared_norm(values[rows])
        before += _loss(norm, W[rows], grams, cross)
        block = W[rows]  # a view: swept in place
        done, block_violation = hals_sweeps_per_row(block, grams, cross, n_sweeps, penalty, tol)
        n_done, violation = max(n_done, done), violation + block_violation
        after += _loss(norm, block, grams, cross)
    return W, before, after, n_done, violation


def panel_step(V, W, H, step):
    """Update one panel's W by masked HALS and emit its share of the H-step.

    Returns
    -------
    W : ndarray of shape (m_i, k)
    partial : MaskedPartial
        Loss of the starting iterate over observed entries; ``h_numerator`` is
        ``Wᵀ(M⊙V)`` (k x n) and ``h_denominator`` the column Grams (k² x n), both of
        the updated W (None when H is frozen).
    """
    W, H = in_dtype_of(V, W, H)
    values, pattern = _observed(V, step.missing)
    W_new, loss, _, _, violation = _solve_rows(values, pattern, W, H, step.penalty_W, step.sweeps_W)
    numerator = denominator = None
    if step.update_H:
        numerator = np.ascontiguousarray(np.asarray(values.T @ W_new).T)
        denominator = np.ascontiguousarray(np.asarray(pattern.T @ _outer_rows(W_new)).T)
    return W_new, MaskedPartial(loss, numerator, denominator, violation)


def transform_panel(V, W, H, step, max_inner, tol):
    """Solve one panel's W with H frozen (from ``W``, or zeros if None); ``max_inner=0``
    only evaluates the loss.

    Returns
    -------
    W : ndarray of shape (m_i, k)
    partial : MaskedPartial
        Loss of the returned ``(W, H)``; no H-step terms.
    n_done : int
    """
    W, H = in_dtype_of(V, W, H)
    values, pattern = _observed(V, step.missing)
    start = np.zeros((values.shape[0], H.shape[0]), dtype=H.dtype) if W is None else W
    W_new, _, loss, done, _ = _solve_rows(values, pattern, start, H, step.penalty_W, max_inner, tol)
    return W_new, MaskedPartial(loss, None, None), done


def update_h(H, total, step):
    """The masked HALS H-step from summed partials: ``(H, violation)`` (a new array)."""
    k = H.shape[0]
    Ht = np.array(np.asarray(H, dtype=total.h_numerator.dtype).T, order="C", copy=True)
    grams = np.ascontiguousarray(total.h_denominator.T).reshape(-1, k, k)
    _, violation = hals_sweeps_per_row(
        Ht, grams, np.ascontiguousarray(total.h_numerator.T), step.sweeps_H, step.penalty_H
    )
    return np.ascontiguousarray(Ht.T), violation
