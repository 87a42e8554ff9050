"""Masked (weighted) NMF: per-panel kernels for V with unobserved entries.

Nothing here knows about Dask; :mod:`dnmf.engine.solvers` calls these one panel per task when
``StepSpec.missing`` is set, exactly where it calls :mod:`dnmf.numerics.kernels` otherwise.

Which entries are observed (the mask M) depends on the mode:

``"nan"``
    Dense panels: NaN entries are unobserved, every other entry is observed.
``"absent"``
    CSR panels (ratings): the stored entries are observed (stored zeros included), every
    absent entry is unobserved. Products only ever touch the stored entries: ``WH`` is
    evaluated at the stored positions, never densified.

The loss is the beta-divergence summed over observed entries only, and the updates are
weighted multiplicative updates (any beta; Févotte & Idier's exponent gamma)::

    W ← W ⊙ [((M ⊙ V ⊙ (WH)^(β-2)) Hᵀ) / ((M ⊙ (WH)^(β-1)) Hᵀ)]^γ
    H ← H ⊙ [(Wᵀ (M ⊙ V ⊙ (WH)^(β-2))) / (Wᵀ (M ⊙ (WH)^(β-1)))]^γ

One pass over V per iteration, as the unmasked path: a panel task updates its W rows
and, from the same V_i and the new W_i, emits its share of the two k x n H-step sums
(:class:`MaskedPartial`). A dense panel is processed in row blocks of about
``kernels.CACHE_BLOCK_BYTES`` so that ``WH`` and the masked products stay in cache.

These are the kernels of ``solver="mu"``; ``solver="cd"`` with missing values is masked
HALS (:mod:`dnmf.numerics.masked_hals`, per-row and per-column Grams), which shares the modes,
:func:`prepare_panel` and :class:`MaskedPartial`.

A dense panel is prepared once per pass (:func:`prepare_panel`: NaN replaced by 0 and
the positions of the NaN listed; the driver keeps the prepared panels of in-memory input
for the whole fit) so that the per-iteration kernels never scan for NaN.

Cost (``scripts/bench_masked.py`` measures it against the unmasked iteration): with few
NaN (at most :data:`FEW_MISSING_SHARE` of a panel) the Frobenius products are the
unmasked ones corrected at the missing entries only; with many NaN the Frobenius W- and
H-steps take 6 products with the panel instead of 2 (WH twice, then the masked products
of each step); the beta-divergences form WH anyway. ``"absent"`` on CSR (Frobenius)
evaluates WH at the stored entries twice (a gather-bound NumPy kernel,
:meth:`_Entries.wh`) and makes 4 sparse products instead of 2.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from ..errors import InputError, ParameterError
from .kernels import CACHE_BLOCK_BYTES, EPSILON, in_dtype_of, mu_apply, mu_gamma, squared_norm

__all__ = [
    "MaskedPartial",
    "NanPanel",
    "check_input_kind",
    "check_stats",
    "fill_missing",
    "loss_of",
    "panel_stats",
    "panel_step",
    "prepare_panel",
    "transform_panel",
    "update_h",
]

#: Stored entries of a sparse panel whose ``W H`` values are computed at a time.
ENTRY_CHUNK = 2**16
#: Share of NaN in a dense panel up to which the Frobenius products are the unmasked
#: ones minus sparse corrections at the missing entries (above it: masked dense products).
FEW_MISSING_SHARE = 0.02


# --------------------------------------------------------------------- input statistics


def panel_stats(V, missing):
    """Statistics of the observed entries of a panel.

    Returns
    -------
    ndarray of shape (7,)
        ``[min, n_infinite, sum, sum_sq, n_zero, n_observed, n_nan]`` over observed
        entries (the layout of :func:`dnmf.numerics.kernels.panel_stats` with ``size`` replaced by
        the number of observed entries, plus the NaN count). In ``"absent"`` mode a stored
        NaN counts as non-finite (an error), absent entries are not counted at all.
    """
    if missing == "absent":
        data = np.asarray(V.data if sp.issparse(V) else V).ravel()
        n_nan = 0
        finite = np.isfinite(data)
        n_bad = data.size - int(np.count_nonzero(finite))
    else:
        data = (V.data if sp.issparse(V) else np.asarray(V)).ravel()
        nan = np.isnan(data)
        n_nan = int(np.count_nonzero(nan))
        finite = np.isfinite(data)
        n_bad = data.size - int(np.count_nonzero(finite)) - n_nan
    observed = data[finite]
    implicit = 0 if missing == "absent" or not sp.issparse(V) else V.shape[0] * V.shape[1] - data.size
    minimum = float(observed.min()) if observed.size else np.inf
    if implicit:
        minimum = min(minimum, 0.0)
    values = observed.astype(np.float64, copy=False)
    return np.array(
        [
            minimum,
            n_bad,
            values.sum(),
            np.dot(values, values),
            implicit + observed.size - np.count_nonzero(observed),
            implicit + observed.size,
            n_nan,
        ],
        dtype=np.float64,
    )


def check_stats(stats, beta, missing):
    """Reject infinite or negative observed entries (NaN are missing, not errors).

    Raises
    ------
    ValueError
        Naming the count or the minimum.
    """
    minimum, n_bad, _, _, n_zero, n_observed, _ = stats
    if n_bad:
        what = "infinity" if missing == "nan" else "NaN or infinity among its stored entries"
        hint = "; NaN entries are treated as missing" if missing == "nan" else ""
        raise InputError(f"Input contains {what} ({int(n_bad)} entries){hint}")
    if n_observed == 0:
        raise InputError("Input has no observed entry: every entry is missing")
    if minimum < 0:
        raise InputError(f"Negative values in data passed to NMF (observed minimum is {minimum!r})")
    if beta <= 0 and n_zero:
        raise InputError(
            "When beta_loss <= 0 and X contains zeros, the solver may diverge. Please add small values to X, "
            f"or use a positive beta_loss (X has {int(n_zero)} observed zeros)."
        )


def fill_missing(V, value):
    """A copy of a dense panel with NaN replaced by ``value`` (the SVD of NNDSVD init)."""
    if sp.issparse(V):
        return V
    V = np.array(V, copy=True)
    V[np.isnan(V)] = value
    return V


class NanPanel(NamedTuple):
    """A dense panel with its NaN found once (see :func:`prepare_panel`).

    Attributes
    ----------
    values : ndarray of shape (m_i, n)
        The panel with every NaN replaced by 0 (the panel itself when it has none).
    missing : ndarray of int64
        Row-major flat indices of the NaN entries, increasing.
    """

    values: np.ndarray
    missing: np.ndarray

    @property
    def shape(self):
        return self.values.shape

    @property
    def dtype(self):
        return self.values.dtype


def prepare_panel(V, missing):
    """A panel ready for the masked kernels: a :class:`NanPanel` for ``"nan"`` (a panel
    with NaN is copied, V is never written), V itself (CSR) for ``"absent"``."""
    if isinstance(V, NanPanel):
        return V
    check_input_kind(sp.issparse(V), missing)
    if missing == "absent":
        return V
    V = np.asarray(V)
    flat = np.flatnonzero(np.isnan(V))  # 10x faster than a 2-D nonzero
    if flat.size:
        V = np.array(V, order="C")
        V.ravel()[flat] = 0
    return NanPanel(V, flat)


# ----------------------------------------------------------------- observed entries


def _floor(values):
    values[values < EPSILON] = EPSILON
    return values


def _weights(values, WH_obs, beta):
    """``(V ⊙ (WH)^(β-2), (WH)^(β-1))`` at observed entries.

    ``WH_obs`` (modified in place) holds ``WH`` where observed (anything where not, as
    long as ``values`` is 0 there); the second array is None for beta == 1 (all ones) and
    must be masked by the caller for dense blocks.
    """
    if beta == 2:
        return values, WH_obs
    if beta == 1:
        return np.divide(values, _floor(WH_obs), out=WH_obs), None
    second = WH_obs.copy()
    if beta < 1:
        _floor(second)
    second **= beta - 1
    ratio = _floor(WH_obs) if beta < 2 else WH_obs
    ratio **= beta - 2
    ratio *= values
    return ratio, second


def _entry_loss(values, WH_obs, beta):
    """Beta-divergence summed over the given observed entries (float64), with
    scikit-learn's conventions: entries of V at or below EPSILON leave the data terms,
    where WH is floored at EPSILON."""
    v = np.asarray(values, dtype=np.float64).ravel()
    wh = np.asarray(WH_obs, dtype=np.float64).ravel()
    if beta == 2:
        residual = v - wh
        return 0.5 * float(np.dot(residual, residual))
    keep = v > EPSILON
    vk, whk = v[keep], np.maximum(wh[keep], EPSILON)
    if beta == 1:
        return float(np.dot(vk, np.log(vk / whk)) + wh.sum() - v.sum())
    if beta == 0:
        div = vk / whk
        return float(div.sum() - v.size - np.log(div).sum())
    return float(
        ((vk**beta).sum() - beta * np.dot(vk, whk ** (beta - 1)) + (beta - 1) * (wh**beta).sum()) / (beta * (beta - 1))
    )


def _frobenius_from_products(norm, W, numerator, denominator):
    """``½ Σ_observed (v - wh)²`` from the W-step products (float64 dots):
    ``½ (||M⊙V||² - 2 <W, (M⊙V)Hᵀ> + <W, (M⊙WH)Hᵀ>)``, clipped at 0."""
    W64 = W.astype(np.float64, copy=False)
    cross = float(np.vdot(W64, numerator.astype(np.float64, copy=False)))
    quad = float(np.vdot(W64, denominator.astype(np.float64, copy=False)))
    return max(0.5 * (norm - 2.0 * cross + quad), 0.0)


class _Entries:
    """Given entries ``(rows, cols)`` of an ``(m, n)`` block in row-major order: ``W H``
    at those entries and CSR matrices of values there (never a dense m x n array)."""

    def __init__(self, rows, cols, shape):
        self.rows, self.cols, self.shape = rows, cols, shape
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))])

    def wh(self, W, H):
        """``(W H)`` at the entries (a vector), ``ENTRY_CHUNK`` entries at a time.

        Gathered as k x chunk arrays and summed over the k axis: with k ~ 10 that is
        2-4x faster than a row-wise ``einsum`` of chunk x k gathers."""
        Wt = np.ascontiguousarray(W.T)
        out = np.empty(self.rows.size, dtype=np.result_type(W.dtype, H.dtype))
        for start in range(0, out.size, ENTRY_CHUNK):
            stop = start + ENTRY_CHUNK
            product = Wt.take(self.rows[start:stop], axis=1)
            product *= H.take(self.cols[start:stop], axis=1)
            product.sum(axis=0, out=out[start:stop])
        return out

    def csr(self, values):
        return sp.csr_matrix((values, self.cols, self.indptr), shape=self.shape)

    def times_Ht(self, values, H):
        """``S Hᵀ`` (m x k) for the sparse ``S`` holding ``values`` at the entries."""
        return np.asarray(self.csr(values) @ np.ascontiguousarray(H.T))

    def W_t_times(self, W, values):
        """``Wᵀ S`` (k x n) for the sparse ``S`` holding ``values`` at the entries."""
        return np.ascontiguousarray(np.asarray(self.csr(values).T @ W).T)


class _DenseRows:
    """A block of rows of a dense panel, NaN entries unobserved: masked dense products.

    ``values`` has 0 at the missing entries, whose row-major flat indices (within the
    block) are ``missing``.
    """

    def __init__(self, values, missing):
        self.values = values
        self.mask = np.ones(values.shape, dtype=bool)
        self.mask.ravel()[missing] = False
        self._norm = None
        self._mask_values = None

    def _terms(self, WH, beta):
        ratio, second = _weights(self.values, WH, beta)
        if second is None:
            if self._mask_values is None:
                self._mask_values = self.mask.astype(self.values.dtype)
            return ratio, self._mask_values
        np.multiply(second, self.mask, out=second)
        return ratio, second

    def w_step(self, W, H, beta):
        """``((M⊙V⊙(WH)^(β-2)) Hᵀ, (M⊙(WH)^(β-1)) Hᵀ, loss of (W, H))``."""
        WH = W @ H
        loss = None if beta == 2 else _entry_loss(self.values[self.mask], WH[self.mask], beta)
        ratio, second = self._terms(WH, beta)
        numerator, denominator = ratio @ H.T, second @ H.T
        if beta == 2:
            if self._norm is None:
                self._norm = squared_norm(self.values)
            loss = _frobenius_from_products(self._norm, W, numerator, denominator)
        return numerator, denominator, loss

    def h_terms(self, W, H, beta):
        """``(Wᵀ(M⊙V⊙(WH)^(β-2)), Wᵀ(M⊙(WH)^(β-1)))``."""
        ratio, second = self._terms(W @ H, beta)
        return W.T @ ratio, W.T @ second

    def loss(self, W, H, beta):
        return self.w_step(W, H, beta)[2]

    def row_means(self):
        counts = self.mask.sum(axis=1)
        sums = self.values.sum(axis=1, dtype=np.float64)
        return np.divide(sums, counts, out=np.zeros(len(counts)), where=counts > 0)


class _FewMissingRows(_DenseRows):
    """A dense block with few NaN, Frobenius loss: the unmasked products minus sparse
    corrections at the missing entries C (``(M⊙WH)Hᵀ = W HHᵀ - (C⊙WH)Hᵀ``), so the
    cost is the unmasked one plus O(missing · k)."""

    def __init__(self, values, missing):  # super().__init__ not called: no mask needed
        self.values = values
        self.missing = _Entries(*np.divmod(missing, values.shape[1]), values.shape)
        self._norm = None

    def w_step(self, W, H, beta):
        numerator = self.values @ H.T
        denominator = W @ (H @ H.T)
        if self.missing.rows.size:
            denominator -= self.missing.times_Ht(self.missing.wh(W, H), H)
        if self._norm is None:
            self._norm = squared_norm(self.values)
        return numerator, denominator, _frobenius_from_products(self._norm, W, numerator, denominator)

    def h_terms(self, W, H, beta):
        denominator = (W.T @ W) @ H
        if self.missing.rows.size:
            denominator -= self.missing.W_t_times(W, self.missing.wh(W, H))
        return W.T @ self.values, denominator


class _StoredEntries:
    """A CSR panel whose stored entries are the observed ones; ``WH`` only at those."""

    def __init__(self, V):
        V = sp.csr_matrix(V)
        self.entries = _Entries(np.repeat(np.arange(V.shape[0]), np.diff(V.indptr)), V.indices, V.shape)
        self.values = V.data
        self._ones = None

    def _terms(self, WH, beta):
        ratio, second = _weights(self.values, WH, beta)
        if second is None:
            if self._ones is None:
                self._ones = np.ones_like(self.values)
            second = self._ones
        return ratio, second

    def w_step(self, W, H, beta):
        WH = self.entries.wh(W, H)
        loss = _entry_loss(self.values, WH, beta)
        ratio, second = self._terms(WH, beta)
        return self.entries.times_Ht(ratio, H), self.entries.times_Ht(second, H), loss

    def h_terms(self, W, H, beta):
        ratio, second = self._terms(self.entries.wh(W, H), beta)
        return self.entries.W_t_times(W, ratio), self.entries.W_t_times(W, second)

    def loss(self, W, H, beta):
        return _entry_loss(self.values, self.entries.wh(W, H), beta)

    def row_means(self):
        counts = np.diff(self.entries.indptr)
        sums = np.zeros(len(counts))
        np.add.at(sums, self.entries.rows, self.values.astype(np.float64))
        return np.divide(sums, counts, out=np.zeros(len(counts)), where=counts > 0)


def check_input_kind(sparse, missing):
    """``"absent"`` needs sparse input and ``"nan"`` dense input (:class:`~dnmf.errors.ParameterError` otherwise)."""
    if missing == "absent" and not sparse:
        raise ParameterError(
            "missing_values='absent' needs sparse input (its absent entries are the missing ones); "
            "for dense input mark missing entries with NaN and use missing_values=np.nan"
        )
    if missing == "nan" and sparse:
        raise ParameterError(
            "missing_values=np.nan needs dense input; for sparse input use missing_values='absent' "
            "(every absent entry is missing, stored zeros are observed)"
        )


def _blocks(V, missing, beta):
    """``(row slice, observed rows)`` pieces of a panel (raw or from :func:`prepare_panel`):
    the whole panel for CSR, and for a dense panel with few NaN and the Frobenius loss
    (the correction form, no dense ``WH``); else cache-sized row blocks."""
    V = prepare_panel(V, missing)
    m = V.shape[0]
    if missing == "absent":
        yield slice(0, m), _StoredEntries(V)
        return
    values, flat = V
    if beta == 2 and flat.size <= FEW_MISSING_SHARE * values.size:
        yield slice(0, m), _FewMissingRows(values, flat)
        return
    n = values.shape[1]
    step = max(1, CACHE_BLOCK_BYTES // max(1, n * values.itemsize))
    for start in range(0, m, step):
        stop = min(m, start + step)
        lo, hi = np.searchsorted(flat, [start * n, stop * n])
        yield slice(start, stop), _DenseRows(values[start:stop], flat[lo:hi] - start * n)


# --------------------------------------------------------------------------- updates


def _solve_rows(rows, W, H, beta, penalty, n_updates, tol=0.0):
    """Up to ``n_updates`` weighted MU updates of the rows ``W`` (H fixed).

    Returns ``(W, loss of the starting W, updates made)``.
    """
    gamma = mu_gamma(beta)
    loss_before = None
    n_done = 0
    while n_done < n_updates:
        numerator, denominator, loss = rows.w_step(W, H, beta)
        if loss_before is None:
            loss_before = loss
        previous = W
        W = mu_apply(W, numerator, denominator, penalty, gamma, zero_small=beta < 1)
        n_done += 1
        if tol > 0:
            delta = W - previous
            if np.vdot(delta, delta) <= tol**2 * np.vdot(W, W):
                break
    if loss_before is None:
        loss_before = rows.loss(W, H, beta)
    return W, loss_before, n_done


class MaskedPartial(NamedTuple):
    """One panel's share of a masked iteration; adds up over panels.

    ``loss`` is the loss over the panel's observed entries of the iterate the pass
    started from (of the returned W for :func:`transform_panel`); ``h_numerator`` and
    ``h_denominator`` (k x n) are ``Wᵀ(M⊙V⊙(WH)^(β-2))`` and ``Wᵀ(M⊙(WH)^(β-1))`` of the
    updated W, or None when H is frozen.
    """

    loss: float
    h_numerator: np.ndarray | None
    h_denominator: np.ndarray | None
    violation: float = 0.0  # masked HALS: its sweeps' measure of stationarity (0 for MU)

    def __add__(self, other):
        return MaskedPartial(*(None if a is None else a + b for a, b in zip(self, other)))

    def columns(self, start, stop, beta=None):
        """The H-step terms of columns ``start:stop`` of H (both are per column)."""
        return self._replace(
            h_numerator=self.h_numerator[:, start:stop], h_denominator=self.h_denominator[:, start:stop]
        )


def panel_step(V, W, H, step):
    """Masked counterpart of :func:`dnmf.numerics.kernels.panel_step`: update the panel's W, emit
    its share of the H-step and of the loss; V is used once.

    Returns
    -------
    W : ndarray of shape (m_i, k)
    partial : MaskedPartial
    """
    W, H = in_dtype_of(V, W, H)
    W_new = np.empty_like(W)
    loss = 0.0
    numerator = denominator = None
    for rows, observed in _blocks(V, step.missing, step.beta):
        W_rows, loss_rows, _ = _solve_rows(observed, W[rows], H, step.beta, step.penalty_W, step.sweeps_W)
        W_new[rows] = W_rows
        loss += loss_rows
        if step.update_H:
            num, den = observed.h_terms(W_rows, H, step.beta)
            numerator = num if numerator is None else numerator + num
            denominator = den if denominator is None else denominator + den
    return W_new, MaskedPartial(loss, numerator, denominator)


def transform_panel(V, W, H, step, max_inner, tol):
    """Masked counterpart of :func:`dnmf.numerics.kernels.transform_panel`: solve the panel's W
    with H frozen (from ``W``, or rows scaled to their observed means if None).

    Returns
    -------
    W : ndarray of shape (m_i, k)
    partial : MaskedPartial
        Loss of the returned ``(W, H)``; no H-step terms.
    n_done : int
    """
    W, H = in_dtype_of(V, W, H)
    out = np.empty((V.shape[0], H.shape[0]), dtype=H.dtype)
    loss, n_done = 0.0, 0
    scale = float(H.mean(axis=1).sum())
    for rows, observed in _blocks(V, step.missing, step.beta):
        if W is None:
            level = observed.row_means() / scale if scale > 0 else np.zeros(rows.stop - rows.start)
            W_rows = np.repeat(level[:, None], H.shape[0], axis=1).astype(H.dtype)
        else:
            W_rows = np.array(W[rows], copy=True)
        W_rows, _, done = _solve_rows(observed, W_rows, H, step.beta, step.penalty_W, max_inner, tol)
        out[rows] = W_rows
        loss += observed.loss(W_rows, H, step.beta)
        n_done = max(n_done, done)
    return out, MaskedPartial(loss, None, None), n_done


def update_h(H, total, step):
    """The weighted MU H-step from summed :class:`MaskedPartial` s: ``(H, 0.0)`` (a new
    array, and no HALS violation)."""
    H = np.asarray(H, dtype=total.h_numerator.dtype)
    numerator, denominator = total.h_numerator.copy(), total.h_denominator.copy()
    return mu_apply(H, numerator, denominator, step.penalty_H, mu_gamma(step.beta), zero_small=step.beta < 1), 0.0


def loss_of(total):
    """The loss over observed entries from summed partials (clipped at 0)."""
    return max(float(total.loss), 0.0)
