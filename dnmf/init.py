"""Initial factors, as lazy Dask graphs (the driver computes them).

``random`` draws exactly the numbers scikit-learn draws (H first, then W, from one
``RandomState``), scaled by ``sqrt(mean(V) / k)``. ``nndsvd``/``nndsvda``/``nndsvdar``
follow Boutsidis & Gallopoulos (2008) as scikit-learn does, from a randomized SVD of V
computed out of core by :func:`dask.array.linalg.svd_compressed`.

Passes over V: the input statistics (one pass, done by the driver for every init),
plus, for the NNDSVD family, ``2 * SVD_POWER_ITERATIONS + 2`` passes of the SVD.

scikit-learn's ``randomized_svd`` makes 7 power iterations when ``k < 0.1 min(m, n)``
(16 passes over V), 4 otherwise; dnmf always makes 4 (10 passes), as every pass over V
costs as much as an iteration out of core. Measured (``scripts/bench_sklearn.py``,
k = 20): on the dense 20000 x 2000 matrix 7 iterations added 0.6 s (+25%) to the time
to scikit-learn's final error; on the flat-spectrum 100000 x 20000 tf-idf-like matrix
HALS was at relative error 0.945258 after 400 iterations from the 4-iteration init and
0.945189 after 250 from the 7-iteration one (scikit-learn's own init: 0.945127 after
200; the random test matrices differ, so the local minima do too).
"""

from __future__ import annotations

import numbers

import dask.array as da
import numpy as np
from sklearn.utils import check_random_state

__all__ = ["INIT_METHODS", "SVD_POWER_ITERATIONS", "choose_init", "custom_init", "nndsvd_init", "random_init"]

#: Accepted ``init`` names (``None`` picks one, as scikit-learn does).
INIT_METHODS = ("random", "nndsvd", "nndsvda", "nndsvdar", "custom")
#: Oversampling of the randomized SVD, as scikit-learn's ``randomized_svd``.
SVD_OVERSAMPLES = 10
#: Power iterations of the randomized SVD (scikit-learn: 7 or 4; see the module docstring).
SVD_POWER_ITERATIONS = 4
#: NNDSVD entries below this are set to zero, as scikit-learn.
NNDSVD_EPS = 1e-6


def choose_init(init, n_components, shape):
    """``None`` → ``"nndsvda"`` if ``k <= min(m, n)`` else ``"random"``; check the others."""
    if init is None:
        return "nndsvda" if n_components <= min(shape) else "random"
    if init not in INIT_METHODS:
        raise ValueError(f"init must be one of {INIT_METHODS} or None, got {init!r}")
    if init.startswith("nndsvd") and n_components > min(shape):
        raise ValueError(
            f"init={init!r} needs n_components <= min(n_samples, n_features) = "
            f"{min(shape)}, got n_components={n_components}; use init='random'"
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
        np.abs(avg * rng.standard_normal(size=(rows, n_components)).astype(dtype, copy=False))
        for rows in row_chunks
    ]
    W = np.concatenate(panels) if len(panels) > 1 else panels[0]
    return _row_blocks(W, row_chunks), H


def _svd_seed(random_state):
    if random_state is None or isinstance(random_state, numbers.Integral):
        return random_state
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def nndsvd_init(V, n_components, variant, mean, random_state, row_chunks):
    """NNDSVD (``variant`` in nndsvd/nndsvda/nndsvdar) from a randomized SVD of V.

    Parameters
    ----------
    V : dask.array.Array
        Row panels of V (dense or sparse blocks).

    Returns
    -------
    W : dask.array.Array of shape (m, k)
    H : dask.array.Array of shape (k, n)
    """
    U, S, Vt = da.linalg.svd_compressed(
        V,
        n_components,
        n_power_iter=SVD_POWER_ITERATIONS,
        n_oversamples=SVD_OVERSAMPLES,
        seed=_svd_seed(random_state),
        compute=True,  # persist each stage so V streams through every pass instead of staying in memory
    )
    dtype = V.dtype
    U = U.rechunk({0: row_chunks}).astype(dtype)
    Vt = Vt.astype(dtype)
    S = S.astype(dtype)
    x_p, x_n = da.maximum(U, 0), da.maximum(-U, 0)
    y_p, y_n = da.maximum(Vt, 0), da.maximum(-Vt, 0)
    x_p_nrm, x_n_nrm = da.linalg.norm(x_p, axis=0), da.linalg.norm(x_n, axis=0)
    y_p_nrm, y_n_nrm = da.linalg.norm(y_p, axis=1), da.linalg.norm(y_n, axis=1)
    m_p, m_n = x_p_nrm * y_p_nrm, x_n_nrm * y_n_nrm
    positive = m_p > m_n
    # The leading singular pair is non-negative: use |u|, |v| with sigma = 1 (norms are 1).
    first = da.arange(n_components) == 0
    positive = positive | first
    sigma = da.where(first, 1, da.where(positive, m_p, m_n))
    safe = lambda v: da.where(v == 0, 1, v)  # noqa: E731 - zero parts give a zero column anyway
    u = da.where(first, abs(U), da.where(positive, x_p / safe(x_p_nrm), x_n / safe(x_n_nrm)))
    v = da.where(
        first[:, None],
        abs(Vt),
        da.where(positive[:, None], y_p / safe(y_p_nrm)[:, None], y_n / safe(y_n_nrm)[:, None]),
    )
    lbd = da.sqrt(S * sigma).astype(dtype)
    W = (u * lbd).astype(dtype)
    H = (v * lbd[:, None]).astype(dtype)
    W = da.where(W < NNDSVD_EPS, 0, W).astype(dtype)
    H = da.where(H < NNDSVD_EPS, 0, H).astype(dtype)
    if variant == "nndsvda":
        W = da.where(W == 0, dtype.type(mean), W)
        H = da.where(H == 0, dtype.type(mean), H)
    elif variant == "nndsvdar":
        rng = check_random_state(random_state)
        noise_H = np.abs(mean * rng.standard_normal(size=H.shape) / 100).astype(dtype)
        noise_W = np.concatenate(
            [np.abs(mean * rng.standard_normal(size=(rows, n_components)) / 100) for rows in row_chunks]
        ).astype(dtype)
        W = da.where(W == 0, _row_blocks(noise_W, row_chunks), W)
        H = da.where(H == 0, noise_H, H)
    return W.rechunk({0: row_chunks, 1: -1}), H.rechunk(-1)


def custom_init(W, H, shape, n_components, dtype, row_chunks):
    """Check user-given W and H (shape, dtype, finite, non-negative) and row-chunk W."""
    m, n = shape
    H = np.asarray(H)
    if H.shape != (n_components, n):
        raise ValueError(f"custom H has shape {H.shape}, expected (n_components, n_features) = {(n_components, n)}")
    if W is None:
        raise ValueError("init='custom' needs both W and H")
    if W.shape != (m, n_components):
        raise ValueError(f"custom W has shape {tuple(W.shape)}, expected (n_samples, n_components) = {(m, n_components)}")
    if isinstance(W, da.Array):
        W = W.astype(dtype).rechunk((row_chunks, n_components))
    else:
        W = np.asarray(W)
        _check_factor(W, "W")
        W = _row_blocks(W.astype(dtype, copy=True), row_chunks)
    _check_factor(H, "H")
    return W, H.astype(dtype, copy=True)


def _check_factor(A, name):
    if not np.all(np.isfinite(A)):
        raise ValueError(f"custom {name} contains NaN or infinity")
    if A.size and A.min() < 0:
        raise ValueError(f"custom {name} has negative values (minimum {A.min()})")
    if A.size and np.max(A) == 0:
        raise ValueError(f"custom {name} is all zeros; NMF cannot start from zero factors")
