"""Randomized SVD of V from row panels: the NumPy half (no Dask).

Subspace iteration with one pass over V per power iteration (Halko, Martinsson & Tropp,
2011, Algorithm 4.4, with the normalization between power iterations that their
Section 4.5 and scikit-learn's ``randomized_svd`` make). With a basis ``Z`` (n x l, ``l = k
+ oversamples``) each panel task computes, from one read of ``V_i``::

    Y_i = V_i Z            (m_i x l)
    P_i = V_iᵀ Y_i         (n x l)      summed over panels: P = VᵀV Z

and after the last pass, from the ``Y_i`` it leaves (not from V)::

    R_i = qr(Y_i).R        (l x l)      combined by a TSQR tree into Y = QR

Between passes the next basis is ``Z ← orth(P)`` (:func:`next_basis`), so the columns
never grow with (VᵀV)^q as a plain power iteration makes them (the first singular value
of a non-negative matrix would swamp every other direction in rounding, or overflow
float32). ``Z`` is also rotated onto the left singular vectors of ``P``: ``Y = V Z``
then has nearly orthogonal columns of norms ≈ σ_j, whose products in V's dtype keep
every direction to the relative accuracy ``eps · σ_1 / σ_j`` that scikit-learn's
normalized power iterations have.

The passes stop early when the subspace has converged: when the top k singular values
of ``P`` (estimates of σ_j²) moved by at most the square root of the dtype's rounding
unit (relative) since the previous pass (:func:`converged`); at most ``q`` power iterations (``q + 1`` passes) are
made, scikit-learn's number. A matrix with a clear gap after its k-th singular value
converges in three passes; the flat spectrum of a tf-idf matrix takes all of them.

After the last pass, ``Y = Q R`` (the triangular factor from
a tree of QR factorizations of the panels' factors, stable in any dtype; with the SVD
``R = U_R Σ Eᵀ``) gives scikit-learn's small matrix up to a rotation,
``B = (Q U_R)ᵀ V = Σ⁻¹ Eᵀ Pᵀ``, and its SVD ``B = Û S V̂ᵀ`` gives
``U = Q U_R Û = Y T`` (:func:`finish`). Directions of ``Y`` at the rounding level of V's
dtype are dropped (they carry no information, and ``Σ⁻¹`` would magnify their rounding
into the result); when fewer than k remain, the missing singular triples are zero.

Every product is taken with ``Z`` scaled by ``1 / ||V||_F``, so ``|Y| <= 1`` and
``|P| <= σ_1 <= ||V||_F``: nothing overflows in float32 whatever the size of V.
The random start depends on the seed and on n only, so the result does not depend on
the row chunking beyond rounding; on a matrix with a clear gap in its spectrum it does
not depend on the seed either.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .kernels import transposed

__all__ = [
    "LARGE_ENTRIES",
    "OVERSAMPLES",
    "add_sketches",
    "add_triangles",
    "converged",
    "finish",
    "next_basis",
    "panel_sketch",
    "panel_triangle",
    "power_iterations",
    "sketch_width",
    "start_basis",
]

#: Extra directions sampled beyond k, as scikit-learn's ``randomized_svd``.
OVERSAMPLES = 10
#: Power iterations when k is small against the matrix (scikit-learn's ``n_iter="auto"``).
POWER_ITERATIONS_SMALL_K = 7
#: Power iterations otherwise.
POWER_ITERATIONS_LARGE_K = 4
#: "Small k": k below this share of min(m, n) (scikit-learn's rule).
SMALL_K_SHARE = 0.1
#: Directions of Y whose singular value is below this many units of rounding (of V's dtype)
#: times the largest are noise, and dropped.
NOISE_UNITS = 100


#: Stored entries from which a pass over V costs more than further power iterations save
#: the fit: one power iteration then (see :func:`power_iterations`).
LARGE_ENTRIES = 10_000_000


def power_iterations(n_components, shape, entries=None):
    """scikit-learn's rule: 7 power iterations when ``k < 0.1 min(m, n)``, else 4; one for a
    matrix of at least :data:`LARGE_ENTRIES` stored ``entries``.

    Each power iteration is a pass over V. At scale the init was chosen by the time to the
    fit's final error, not by the SVD's accuracy (the Performance page has the measurement):
    NNDSVD only needs the leading subspace roughly, and the NMF iterations refine it.
    """
    if entries is not None and entries >= LARGE_ENTRIES:
        return 1
    small = n_components < SMALL_K_SHARE * min(shape)
    return POWER_ITERATIONS_SMALL_K if small else POWER_ITERATIONS_LARGE_K


def sketch_width(n_components, shape):
    """Columns of the sketch: ``k + OVERSAMPLES``, at most ``min(m, n)``."""
    return int(min(n_components + OVERSAMPLES, *shape))


def start_basis(n_features, width, random_state):
    """The random start: Gaussian columns of unit norm (n x width, float64).

    ``random_state`` is a ``numpy.random.RandomState``; the numbers depend on it and on
    the shape only.
    """
    omega = random_state.normal(size=(n_features, width))
    norms = np.linalg.norm(omega, axis=0)
    return omega / np.where(norms == 0, 1.0, norms)


def _dense(product):
    return product.toarray() if sp.issparse(product) else np.asarray(product)


def panel_sketch(V, Z):
    """One panel's share of a pass: ``Y_i`` and its sketch ``P_i`` (see the module docstring).

    Parameters
    ----------
    V : ndarray or scipy.sparse matrix of shape (m_i, n)
    Z : ndarray of shape (n, l)
        The scaled basis, in V's dtype.

    Returns
    -------
    Y : ndarray of shape (m_i, l)
    P : ndarray of shape (n, l)
        ``V_iᵀ Y_i``, in V's dtype.
    """
    Y = _dense(V @ Z)
    return Y, _dense(transposed(V) @ Y)


def add_sketches(*sketches):
    """The sum of panel sketches ``P_i`` (one node of the tree reduction)."""
    P = sketches[0].copy()
    for P_i in sketches[1:]:
        P += P_i
    return P


def panel_triangle(Y):
    """``R_i`` (at most l x l, float64), the triangular factor of a panel's ``Y_i`` (the
    last pass's)."""
    return np.linalg.qr(np.asarray(Y, dtype=np.float64), mode="r")


def add_triangles(*triangles):
    """The triangular factor of the panels' ``R_i`` stacked (one node of the TSQR tree)."""
    return panel_triangle(np.vstack(triangles))


def next_basis(P):
    """``orth(P)`` rotated onto P's left singular vectors, and P's singular values.

    From the Gram ``PᵀP = E Λ Eᵀ``: ``Z = P E Λ^-½`` (two products with P, no
    factorization of the tall P). Directions whose ``Λ`` is below the rounding of the
    largest are kept at that floor: they only start the next pass, whose basis the power
    iteration corrects; the last pass is finished from a QR of Y (:func:`finish`).

    Returns
    -------
    Z : ndarray of shape (n, l), float64
    sigma : ndarray of shape (l,)
    """
    P = np.asarray(P, dtype=np.float64)
    eigenvalues, E = np.linalg.eigh(P.T @ P)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, E = eigenvalues[order], E[:, order]
    floor = np.finfo(np.float64).eps * max(eigenvalues[0], np.finfo(np.float64).tiny)
    eigenvalues = np.maximum(eigenvalues, floor)
    return P @ (E / np.sqrt(eigenvalues)), np.sqrt(eigenvalues)


def converged(sigma, previous, n_components, dtype):
    """Whether the top ``n_components`` of ``sigma`` moved by at most ``sqrt(eps)`` of
    V's dtype (relative) from ``previous`` (None: the first pass, never converged): the
    singular values of the Rayleigh-Ritz step then agree with the exact ones to about
    the dtype's rounding."""
    if previous is None:
        return False
    top, before = sigma[:n_components], previous[:n_components]
    scale = np.where(top > 0, top, 1.0)
    return bool(np.all(np.abs(top - before) <= np.sqrt(np.finfo(dtype).eps) * scale))


def finish(P, R, n_components, dtype):
    """The truncated SVD from the last pass's sums.

    Parameters
    ----------
    P : ndarray of shape (n, l)
        ``Vᵀ Y``.
    R : ndarray of shape (r, l)
        The triangular factor of ``Y = QR``.
    n_components : int
    dtype : numpy dtype
        V's: sets the rounding level below which directions are dropped.

    Returns
    -------
    T : ndarray of shape (l, k)
        ``U = Y T`` (float64).
    S : ndarray of shape (k,)
        Singular values, descending (float64).
    Vt : ndarray of shape (k, n)
        Right singular vectors (float64).
    """
    P = np.asarray(P, dtype=np.float64)
    width, n = P.shape[1], P.shape[0]
    _, sigma, Et = np.linalg.svd(R, full_matrices=False)
    kept = sigma > NOISE_UNITS * np.finfo(dtype).eps * (sigma[0] if sigma.size else 0.0)
    inverse = 1.0 / sigma[kept]
    E = Et[kept].T
    B = inverse[:, None] * (E.T @ P.T)
    U_B, S, Vt = np.linalg.svd(B, full_matrices=False)
    T = (E * inverse) @ U_B
    r = min(n_components, S.size)
    T_k = np.zeros((width, n_components))
    S_k = np.zeros(n_components)
    Vt_k = np.zeros((n_components, n))
    T_k[:, :r], S_k[:r], Vt_k[:r] = T[:, :r], S[:r], Vt[:r]
    return T_k, S_k, Vt_k
