"""Initial factors, as lazy Dask graphs (the driver computes them).

``random`` draws exactly the numbers scikit-learn draws (H first, then W, from one
``RandomState``), scaled by ``sqrt(mean(V) / k)``. ``nndsvd``/``nndsvda``/``nndsvdar``
follow Boutsidis & Gallopoulos (2008) as scikit-learn does, from a truncated SVD of V
that the driver computes out of core (:mod:`dnmf.numerics.randomized_svd`: scikit-learn's
normalized power iterations, one pass over V each): this module turns it into factors,
one task per row panel of W.

Passes over V: the input statistics (one pass, done by the driver for every init),
plus, for the NNDSVD family, ``q + 1`` passes of the SVD, where ``q`` is
scikit-learn's number of power iterations (:func:`dnmf.numerics.randomized_svd.power_iterations`:
7 for small k, else 4; 1 for a matrix of 10 million stored entries or more). scikit-learn's
own ``randomized_svd`` takes ``2 q + 2`` passes for the same subspace.
"""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_non_negative

from ..errors import InputError, InputTypeError, ParameterError
from ..params import INIT_METHODS
from .solvers import Task

__all__ = [
    "check_custom",
    "choose_init",
    "custom_init",
    "ensemble_random_init",
    "nndsvd_from_svd",
    "nndsvd_init",
    "random_init",
    "singular_vectors",
    "svd_part_norms",
]

#: NNDSVD entries below this are set to zero, as scikit-learn.
NNDSVD_EPS = 1e-6


def choose_init(init, n_components, shape):
    """``None`` → ``"nndsvda"`` if ``k <= min(m, n)`` else ``"random"``; check the others."""
    if init is None:
        return "nndsvda" if n_components <= min(shape) else "random"
    if init not in INIT_METHODS:
        raise ParameterError(f"init must be one of {INIT_METHODS} or None, got {init!r}")
    if init.startswith("nndsvd") and n_components > min(shape):
        raise ParameterError(
            f"init = {init!r} can only be used when n_components <= min(n_samples, n_features) "
            f"(n_components={n_components}, min(n_samples, n_features)={min(shape)}); use init='random'"
        )
    return init


def _row_blocks(W, row_chunks):
    return da.from_array(W, chunks=(row_chunks, W.shape[1]), name=False)


def random_init(shape, n_components, dtype, mean, random_state, row_chunks):
    """scikit-learn's ``random`` init: ``|N(0, 1)| * sqrt(mean(V) / k)``, H drawn first.

    W is drawn panel by panel from the same stream, so the numbers do not depend on
    the chunking.

    Returns
    -------
    W : dask.array.Array of shape (m, k), row-chunked like V
    H : ndarray of shape (k, n)
    """
    m, n = shape
    avg = np.dtype(dtype).type(np.sqrt(mean / n_components))  # float32 V: float32 factors
    rng = check_random_state(random_state)
    H = np.abs(avg * rng.standard_normal(size=(n_components, n)).astype(dtype, copy=False))
    panels = [
        np.abs(avg * rng.standard_normal(size=(rows, n_components)).astype(dtype, copy=False)) for rows in row_chunks
    ]
    W = np.concatenate(panels) if len(panels) > 1 else panels[0]
    return _row_blocks(W, row_chunks), H


def ensemble_random_init(shape, members, dtype, mean, row_chunks):
    """:func:`random_init` of each member ``(k, seed)`` of an ensemble: its W side by
    side, its H on top of each other.

    Returns
    -------
    W_blocks : iterator of ndarray
        W's row blocks (``row_chunks``), each drawn when it is asked for: each member's
        stream draws its panels in order, as :func:`random_init` does, so a caller that
        ships a block before asking for the next never holds the ensemble's W (``m`` x
        the total rank) whole.
    H : ndarray of shape (sum of k, n)
    """
    n = shape[1]
    streams, H = [], []
    for k, seed in members:
        avg = np.dtype(dtype).type(np.sqrt(mean / k))
        rng = check_random_state(seed)
        H.append(np.abs(avg * rng.standard_normal(size=(k, n)).astype(dtype, copy=False)))
        streams.append((rng, avg, k))

    def blocks():
        for rows in row_chunks:
            yield np.hstack(
                [np.abs(avg * rng.standard_normal(size=(rows, k)).astype(dtype, copy=False)) for rng, avg, k in streams]
            )

    return blocks(), np.vstack(H)


def _part_norms(U):
    """Squared column norms of the positive and negative parts of ``U`` (2 x k, float64)."""
    U = np.asarray(U, dtype=np.float64)
    return np.stack([np.square(np.maximum(U, 0)).sum(axis=0), np.square(np.minimum(U, 0)).sum(axis=0)])


def _nndsvd_scales(part_norms, S, Vt):
    """Boutsidis & Gallopoulos' choice for each singular triple, as scikit-learn makes it.

    For each component j the positive or the negative parts of ``(u_j, v_j)`` are kept,
    whichever has the larger product of norms (the first, non-negative pair keeps
    ``|u|, |v|``), normalized, and scaled by ``sqrt(s_j * that product)``.

    Returns
    -------
    scale_W : ndarray of shape (2, k)
        ``W = max(U, 0) * scale_W[0] + max(-U, 0) * scale_W[1]`` (before thresholding).
    H : ndarray of shape (k, n), float64
        Before thresholding.
    """
    safe = lambda v: np.where(v == 0, 1.0, v)  # noqa: E731 - a zero part gives a zero column anyway
    S = np.asarray(S, dtype=np.float64)
    Vt = np.asarray(Vt, dtype=np.float64)
    x_p, x_n = np.sqrt(part_norms)
    y_p, y_n = np.maximum(Vt, 0), np.maximum(-Vt, 0)
    y_p_nrm, y_n_nrm = np.linalg.norm(y_p, axis=1), np.linalg.norm(y_n, axis=1)
    m_p, m_n = x_p * y_p_nrm, x_n * y_n_nrm
    first = np.arange(S.size) == 0
    positive = (m_p > m_n) | first
    lbd = np.sqrt(S * np.where(first, 1.0, np.where(positive, m_p, m_n)))
    scale_W = (
        np.stack(
            [
                np.where(first, 1.0, np.where(positive, 1 / safe(x_p), 0.0)),
                np.where(first, 1.0, np.where(positive, 0.0, 1 / safe(x_n))),
            ]
        )
        * lbd
    )
    scale_H = (
        np.stack(
            [
                np.where(first, 1.0, np.where(positive, 1 / safe(y_p_nrm), 0.0)),
                np.where(first, 1.0, np.where(positive, 0.0, 1 / safe(y_n_nrm))),
            ]
        )
        * lbd
    )
    return scale_W, y_p * scale_H[0][:, None] + y_n * scale_H[1][:, None]


def _finish(A, dtype, fill):
    """Entries below NNDSVD_EPS set to 0, then the zeros replaced by ``fill`` (a scalar
    for nndsvda, an array of A's shape for nndsvdar, None for nndsvd)."""
    A = A.astype(dtype, copy=False)
    A[A < NNDSVD_EPS] = 0
    if fill is not None:
        zero = A == 0
        A[zero] = fill[zero] if np.ndim(fill) else fill
    return A


def _w_block(U, scale_W, dtype, fill):
    """A row block of the NNDSVD W from the same rows of U."""
    U = np.asarray(U, dtype=np.float64)
    return _finish(np.maximum(U, 0) * scale_W[0] + np.maximum(-U, 0) * scale_W[1], dtype, fill)


def _u_part_norms(Y, T):
    return _part_norms(np.asarray(Y, dtype=np.float64) @ T)


def _w_block_of_sketch(Y, T, scale_W, dtype, fill):
    return _w_block(np.asarray(Y, dtype=np.float64) @ T, scale_W, dtype, fill)


def _fills(variant, mean, shape, row_chunks, dtype, random_state):
    """What replaces the zeros of H and of each row block of W."""
    if variant == "nndsvda":
        return dtype.type(mean), [dtype.type(mean)] * len(row_chunks)
    if variant == "nndsvdar":
        rng = check_random_state(random_state)
        k, n = shape
        noise_H = np.abs(mean * rng.standard_normal(size=(k, n)) / 100).astype(dtype)
        noise_W = [np.abs(mean * rng.standard_normal(size=(rows, k)) / 100).astype(dtype) for rows in row_chunks]
        return noise_H, noise_W
    return None, [None] * len(row_chunks)


def nndsvd_from_svd(U, S, Vt, variant, mean, dtype=np.float64, random_state=None):
    """NNDSVD factors from a given truncated SVD ``U diag(S) Vt`` (all in memory).

    The same arithmetic as :func:`nndsvd_init`, which applies it block by block.

    Returns
    -------
    W : ndarray of shape (m, k)
    H : ndarray of shape (k, n)
    """
    dtype = np.dtype(dtype)
    fill_H, (fill_W,) = _fills(variant, mean, np.shape(Vt), [len(U)], dtype, random_state)
    scale_W, H = _nndsvd_scales(_part_norms(U), S, Vt)
    return _w_block(U, scale_W, dtype, fill_W), _finish(H, dtype, fill_H)


def singular_vectors(Y_blocks, T, row_chunks):
    """``U = Y T`` as a row-chunked Dask array (float64), one task per panel."""
    product = Task(np.matmul, len(Y_blocks))
    k = T.shape[1]
    return da.concatenate(
        [
            da.from_delayed(dask.delayed(product, pure=True)(y, T), shape=(rows, k), dtype=np.float64)
            for y, rows in zip(Y_blocks, row_chunks)
        ]
    )


def svd_part_norms(Y_blocks, T, now=False):
    """Graph of the squared column norms of the positive and negative parts of ``U = Y T``
    (2 x k), summed over the row panels (``Y_blocks``: the SVD's last pass); with ``now``,
    the norms themselves, from ``Y_blocks`` that are values."""
    norms, add = Task(_u_part_norms, len(Y_blocks)), Task(_add, len(Y_blocks))
    if now:
        return add(*[norms(y, T) for y in Y_blocks])
    return dask.delayed(add)(*[dask.delayed(norms, pure=True)(y, T) for y in Y_blocks])


def _add(*parts):
    return sum(parts[1:], parts[0])


def nndsvd_init(Y_blocks, T, S, Vt, part_norms, variant, mean, random_state, row_chunks, dtype, now=False):
    """NNDSVD (``variant`` in nndsvd/nndsvda/nndsvdar) from the driver's randomized SVD.

    Parameters
    ----------
    Y_blocks : list of Delayed
        ``Y_i`` of the SVD's last pass, one per row panel: ``U_i = Y_i T``.
    T, S, Vt : ndarray
        See :func:`dnmf.numerics.randomized_svd.finish`.
    part_norms : ndarray of shape (2, k)
        The computed :func:`svd_part_norms`.
    now : bool
        ``Y_blocks`` are values: W's blocks are made here, at once.

    Returns
    -------
    W : dask.array.Array of shape (m, k), row-chunked like V
    H : ndarray of shape (k, n)
    """
    dtype = np.dtype(dtype)
    k = S.size
    fill_H, fill_W = _fills(variant, mean, (k, Vt.shape[1]), row_chunks, dtype, random_state)
    scale_W, H = _nndsvd_scales(part_norms, S, Vt)
    block = Task(_w_block_of_sketch, len(Y_blocks))
    if now:
        made = (block(y, T, scale_W, dtype, fill) for y, fill in zip(Y_blocks, fill_W))
        blocks = [da.from_array(b, chunks=b.shape, name=False) for b in made]
    else:
        made = (dask.delayed(block, pure=True)(y, T, scale_W, dtype, fill) for y, fill in zip(Y_blocks, fill_W))
        blocks = [da.from_delayed(b, shape=(rows, k), dtype=dtype) for b, rows in zip(made, row_chunks)]
    return da.concatenate(blocks), _finish(H, dtype, fill_H)


def _check_init(A, shape, whom):
    """scikit-learn's ``_check_init``: finite, of ``shape`` (``"auto"``: any), non-negative,
    not all zeros; its messages."""
    try:  # scikit-learn's checks, in our error type
        A = check_array(A)
        check_non_negative(A, whom)
    except ValueError as error:
        raise InputError(str(error)) from None
    for axis, (expected, got) in enumerate(zip(shape, A.shape)):
        if expected != "auto" and got != expected:
            which = "first" if axis == 0 else "second"
            raise InputError(
                f"Array with wrong {which} dimension passed to {whom}. Expected {expected}, but got {got}."
            )
    if np.max(A) == 0:
        raise InputError(f"Array passed to {whom} is full of zeros.")


def check_custom(W, H, shape, n_components, dtype, update_H):
    """Check user-given factors as scikit-learn does; returns the rank they imply.

    ``update_H=True`` (``init="custom"``) checks W (m x k) and H (k x n); ``False``
    (``transform``) checks H. With ``n_components`` "auto" or None, k is ``H.shape[0]``.
    A Dask W is checked for its shape only (its values are read by the fit).

    Raises
    ------
    InputError
        A misshapen, non-finite, negative or all-zero factor.
    ParameterError
        A missing factor.
    InputTypeError
        A factor whose dtype is not V's (as scikit-learn: no silent cast).
    """
    m, n = shape
    k = "auto" if n_components in (None, "auto") else n_components
    if H is None or (update_H and W is None):
        raise ParameterError("init='custom' needs both W and H" if update_H else "update_H=False needs H")
    _check_init(H, (k, n), "NMF (input H)")
    k = np.shape(H)[0] if k == "auto" else k
    if update_H:
        if isinstance(W, da.Array):
            if W.shape != (m, k):
                raise InputError(
                    f"Array with wrong shape passed to NMF (input W). Expected {(m, k)}, but got {W.shape}."
                )
        else:
            _check_init(W, (m, k), "NMF (input W)")
        if np.dtype(H.dtype) != dtype or np.dtype(W.dtype) != dtype:
            raise InputTypeError(
                f"H and W should have the same dtype as X. Got H.dtype = {H.dtype} and W.dtype = {W.dtype}."
            )
    elif np.dtype(H.dtype) != dtype:
        raise InputTypeError(f"H should have the same dtype as X. Got H.dtype = {H.dtype}.")
    return int(k)


def custom_init(W, H, row_chunks):
    """User-given W and H (checked by :func:`check_custom`) as a row-chunked W and a copy of H."""
    k = np.shape(H)[0]
    if isinstance(W, da.Array):
        return W.rechunk((row_chunks, k)), np.array(H, copy=True)
    return _row_blocks(np.array(W, copy=True), row_chunks), np.array(H, copy=True)
