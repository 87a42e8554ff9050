"""Losses from summed panel partials; no m x n product is ever formed.

Every outer iteration returns, summed over panels, the pieces of the loss of the
iterate it *started* from (see :func:`dnmf.numerics.kernels.panel_step`). For the Frobenius
loss the new iterate's loss also comes for free from the H-step partials:

    ½||V - WH||² = ½ (||V||² - 2 <WᵀV, H> + <WᵀW, H Hᵀ>).

The functions here turn those sums into numbers, with scikit-learn's conventions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["beta_loss", "frobenius_loss", "loss_to_error"]


def frobenius_loss(squared_norm_V, cross, gram, HHt):
    """``½ (||V||² - 2 cross + <gram, HHᵀ>)`` clipped at 0 (rounding can go below).

    Parameters
    ----------
    squared_norm_V : float
        ``||V||²``.
    cross : float
        ``<W, V Hᵀ>`` = ``<WᵀV, H>``.
    gram : ndarray of shape (k, k)
        ``WᵀW``.
    HHt : ndarray of shape (k, k)
        ``H Hᵀ``.
    """
    quad = float(np.vdot(np.asarray(gram, np.float64), np.asarray(HHt, np.float64)))
    return max(0.5 * (squared_norm_V - 2.0 * cross + quad), 0.0)


def member_slices(members):
    """``[(start, stop)]``: the components of each member of an ensemble of
    factorizations of ranks ``members`` (stacked side by side in W, on top of each
    other in H)."""
    edges = np.cumsum([0, *members]).tolist()
    return list(zip(edges[:-1], edges[1:]))


def frobenius_losses(terms, gram, HHt, members=()):
    """The Frobenius loss of each member of an ensemble (one loss when ``members`` is
    empty: a single factorization).

    Parameters
    ----------
    terms : sequence of float
        ``[||V||², cross_1, cross_2, ...]``: one ``<W_r, V H_rᵀ>`` per member.
    gram, HHt : ndarray of shape (k, k)
        ``WᵀW`` and ``H Hᵀ`` of the stacked factors (only their diagonal blocks count).
    members : tuple of int
        The members' ranks (sum k).
    """
    if not members:
        return [frobenius_loss(terms[0], terms[1], gram, HHt)]
    return [
        frobenius_loss(terms[0], cross, gram[a:b, a:b], HHt[a:b, a:b])
        for cross, (a, b) in zip(terms[1:], member_slices(members))
    ]


def beta_loss(terms, beta, size):
    """The beta-divergence from the summed :func:`dnmf.numerics.kernels.beta_loss_pieces`.

    Parameters
    ----------
    terms : ndarray of shape (3,)
        Summed pieces.
    beta : float
        Not 2 (use :func:`frobenius_loss`).
    size : int
        ``m * n``, the number of entries of V (the Itakura-Saito constant term).
    """
    t0, t1, t2 = (float(t) for t in terms)
    if beta == 1:
        value = t0 + t1 - t2
    elif beta == 0:
        value = t0 - size - t1
    else:
        value = (t0 - beta * t1 + (beta - 1) * t2) / (beta * (beta - 1))
    return max(value, 0.0)


def loss_to_error(loss):
    """scikit-learn's ``reconstruction_err_``: ``sqrt(2 * loss)``."""
    return float(np.sqrt(2.0 * max(loss, 0.0)))
