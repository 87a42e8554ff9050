"""Per-panel NumPy/SciPy maths: update rules, partial sums and loss pieces.

Nothing here knows about Dask. Every function takes in-memory arrays (a row panel
``V_i`` of shape ``(m_i, n)`` as an ndarray or a SciPy CSR matrix, the matching
``W_i`` of shape ``(m_i, k)`` and the broadcast ``H`` of shape ``(k, n)``) and
returns arrays. The graph code in :mod:`dnmf.engine.solvers` calls these one panel per task.

The update rules follow :mod:`sklearn.decomposition._nmf` operation by operation so
that, from the same starting point, our iterates equal scikit-learn's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from .losses import beta_loss, frobenius_losses, loss_to_error, member_slices

__all__ = [
    "EPSILON",
    "aligned",
    "in_dtype_of",
    "PanelPartial",
    "Penalty",
    "StepSpec",
    "beta_loss_pieces",
    "dot64",
    "extrapolate",
    "frobenius_pieces",
    "hals_sweeps",
    "hals_sweeps_transposed",
    "mu_gamma",
    "mu_h_partials",
    "mu_apply",
    "mu_update_h",
    "mu_update_w",
    "panel_stats",
    "panel_step",
    "squared_norm",
    "sum_partials",
    "transform_panel",
    "transform_start",
    "update_h",
]

#: Floor used by the multiplicative updates, as in scikit-learn.
EPSILON = np.finfo(np.float32).eps
#: Values of a factor below this are set to zero after MU steps with beta < 1 (as scikit-learn).
MU_ZERO_THRESHOLD = np.finfo(np.float64).eps
#: Bytes of a dense panel handled at a time by :func:`panel_step` (stays in cache).
CACHE_BLOCK_BYTES = 4 * 2**20
#: Fewest rows in such a block (wide panels: fewer rows would starve the products).
MIN_BLOCK_ROWS = 256
#: Bytes of W swept at a time by scikit-learn's HALS kernel (stays in the core's cache).
SWEEP_BLOCK_BYTES = 128 * 2**10
#: Factors with at least this many columns (and BLOCKED_SWEEP_MIN_WORK) take the
#: column-blocked HALS sweep (``scripts/bench_sweep.py``, 400,000 rows: 0.67x scikit-learn's
#: kernel's time at k = 16 in float32, 1.01x in float64; 0.40-0.51x at 48; at k = 8 no faster).
BLOCKED_SWEEP_MIN_RANK = 16
#: ... and at least this many ``rows k²`` (a sweep's multiply-adds): below, NumPy's calls per
#: column cost more than the BLAS products save. ``scripts/bench_sweep.py --rows 300 600 1000
#: 2500 5000 --ranks 16 25 32 49`` puts the break-even at 0.3-0.7M (float32) and 0.6-1.1M
#: (float64) at every rank from 16 to 49; above 1.5M the column-blocked sweep took 0.26-1.11x
#: the time (the highest at k = 16 in float64).
BLOCKED_SWEEP_MIN_WORK = 2**20
#: Rows of W (transposed: k x rows) swept at a time by the column-blocked sweep.
BLOCKED_SWEEP_ROWS = 8192
#: Columns of W whose gradients the column-blocked sweep takes from one matrix product.
#: Against 8, a sweep of 200,000-2,000,000 rows took 0.64-0.92x the time at k = 16-24 and
#: 0.91-1.09x at k = 32-49 (medians of interleaved runs, float32 and float64): fewer
#: rank-one corrections inside a block, for products of fewer rows.
SWEEP_COLUMN_BLOCK = 4
#: Entries of a factor :func:`extrapolate` moves at a time (in cache).
EXTRAPOLATE_RUN = 2**16
#: Stored values whose squares :func:`squared_norm` sums in V's dtype before going to float64.
SQUARES_RUN = 1024
#: Entries of V whose loss terms :func:`beta_loss_pieces` takes at a time (in cache: a dense
#: KL loss of 20,000 x 192 took 37 ms at once, 20 ms in runs).
LOSS_RUN = 2**14
#: Stored entries of V at which :func:`_wh_at` takes ``W H`` at a time: the gathered rows of W
#: and of Hᵀ stay in cache (1.4-2.5x faster than all at once on MovieLens, the State of the
#: Union tf-idf and PBMC 3k's counts, the same numbers; 2048 to 32768 did about as well).
WH_AT_RUN = 8192
#: A frozen-H MU solve checks its error every this many updates (scikit-learn's 10).
MU_CHECK_EVERY = 10


@dataclass(frozen=True)
class Penalty:
    """Scaled L1 and L2 penalties on one factor (already multiplied by the matrix size)."""

    l1: float = 0.0
    l2: float = 0.0


def aligned(value):
    """``value`` with every array in it aligned (copied only where it is not).

    Arrays rebuilt from network buffers (a distributed worker's inputs, the driver's
    results) can sit at any byte offset; NumPy then multiplies them with loops of its own
    instead of BLAS, which round differently. Aligning every input makes a task's numbers
    the same wherever its inputs came from. Tuples (partials) and CSR matrices are
    aligned member by member.
    """
    if isinstance(value, np.ndarray):
        return value if value.flags.aligned else np.require(value, requirements="A")
    if sp.issparse(value) and value.format == "csr":
        parts = (value.data, value.indices, value.indptr)
        if all(part.flags.aligned for part in parts):
            return value
        out = sp.csr_matrix(value.shape, dtype=value.dtype)
        out.data, out.indices, out.indptr = (np.require(part, requirements="A") for part in parts)
        return out
    if isinstance(value, tuple):
        items = [aligned(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, list):
        return [aligned(item) for item in value]
    return value


def transposed(V):
    """``V.T``; of a CSR matrix, the CSC matrix on V's own arrays.

    SciPy's ``V.T`` checks the new matrix's format, and the check copies ``data`` and
    ``indices`` when they are views into a larger matrix's arrays, as the row panels of an
    in-memory V are (:func:`dnmf.io.storage.as_panels`): a copy of the panel in every pass
    that multiplies by ``V_iᵀ``. The products are the same (SciPy's own kernel, on the
    same arrays).
    """
    if not (sp.issparse(V) and V.format == "csr"):
        return V.T
    out = sp.csc_matrix((V.shape[1], V.shape[0]), dtype=V.dtype)
    out.data, out.indices, out.indptr = V.data, V.indices, V.indptr
    return out


def _dot(a, b):
    """``a @ b`` returning a dense ndarray whether ``a`` or ``b`` is sparse (a dense ``a``
    times a sparse ``b`` as ``(bᵀ aᵀ)ᵀ``, which is how SciPy computes it, with
    :func:`transposed`)."""
    out = (transposed(b) @ a.T).T if sp.issparse(b) and not sp.issparse(a) else a @ b
    if sp.issparse(out):
        out = out.toarray()
    return np.asarray(out)


# --------------------------------------------------------------------- input statistics


def panel_stats(V):
    """One-pass statistics of a panel: ``(min, n_nonfinite, sum, sum_sq, n_zero, size)``.

    Sums are accumulated in float64 whatever the panel dtype, the stored values taken
    :data:`CACHE_BLOCK_BYTES` at a time (no float64 or boolean copy of the whole panel:
    under a worker's memory limit those would be twice the panel).
    """
    data = (V.data if sp.issparse(V) else np.asarray(V)).ravel()
    size = V.shape[0] * V.shape[1]
    implicit_zeros = size - data.size
    step = max(1, CACHE_BLOCK_BYTES // max(1, data.itemsize))
    minimum, n_nonfinite, total, squares, zeros = np.inf, 0, 0.0, 0.0, implicit_zeros
    for start in range(0, data.size, step):
        block = data[start : start + step]
        finite = np.isfinite(block)
        bad = block.size - int(np.count_nonzero(finite))
        if bad:
            n_nonfinite += bad
            block = block[finite]
        if block.size:
            minimum = min(minimum, float(block.min()))
            block64 = block.astype(np.float64, copy=False)
            total += float(block64.sum())
            squares += float(np.dot(block64, block64))
            zeros += block.size - int(np.count_nonzero(block))
    if implicit_zeros:
        minimum = min(minimum, 0.0)
    return np.array([minimum, n_nonfinite, total, squares, zeros, size], dtype=np.float64)


# ------------------------------------------------------------------------ HALS (cd)


def _numpy_sweep(W, gram, cross):
    """One HALS sweep in NumPy (scikit-learn's ``_update_cdnmf_fast``, columns vectorized
    over rows); returns its violation. Used when scikit-learn's compiled kernel is absent."""
    violation = 0.0
    for t in range(W.shape[1]):
        column = W[:, t]
        grad = W @ gram[:, t] - cross[:, t]
        violation += float(np.abs(np.where(column == 0, np.minimum(grad, 0), grad)).sum())
        if gram[t, t] != 0:
            W[:, t] = np.maximum(column - grad / gram[t, t], 0)
    return violation


def _sweep_kernel():
    try:  # scikit-learn's own compiled sweep: its numbers, at compiled speed
        from sklearn.decomposition._cdnmf_fast import _update_cdnmf_fast
    except ImportError:  # pragma: no cover - every scikit-learn since 0.19 has it
        return _numpy_sweep
    return lambda W, gram, cross: float(_update_cdnmf_fast(W, gram, cross, np.arange(W.shape[1], dtype=np.intp)))


_SWEEP = _sweep_kernel()


def _sklearn_sweeps(W, gram, cross, n_sweeps):
    """``n_sweeps`` sweeps of scikit-learn's kernel on the rows of W, :data:`SWEEP_BLOCK_BYTES`
    of W at a time (all sweeps of a block while it is in cache); the first sweep's violation."""
    rows = max(1, SWEEP_BLOCK_BYTES // max(1, W.shape[1] * W.itemsize))
    violation = 0.0
    for start in range(0, W.shape[0], rows):
        block, block_cross = W[start : start + rows], cross[start : start + rows]
        violation += _SWEEP(block, gram, block_cross)
        for _ in range(n_sweeps - 1):
            _SWEEP(block, gram, block_cross)
    return violation


def _column_blocked_sweep(Wt, gram, cross_t, inverse_diagonal, measure=True):
    """One HALS sweep of ``Wt`` (k x rows, W transposed) in place; returns its violation
    (0 when ``measure`` is false: the stopping rule reads only a pass's first sweep's, and
    the measure took 40-60% of a sweep's time at k = 16-49).

    The columns of W are taken :data:`SWEEP_COLUMN_BLOCK` at a time: the gradients of a
    block against the whole of W come from one matrix product, and each column's update is
    passed on to the block's later gradients as a rank-one correction. That is scikit-learn's
    sweep (the same columns in the same order, each against the columns updated before it),
    with most of its ``2 rows k²`` flops in BLAS instead of one dot product per entry.
    """
    k = Wt.shape[0]
    violation = 0.0
    for first in range(0, k, SWEEP_COLUMN_BLOCK):
        last = min(k, first + SWEEP_COLUMN_BLOCK)
        grad = gram[first:last] @ Wt
        grad -= cross_t[first:last]
        before = Wt[first:last].copy()
        for j, t in enumerate(range(first, last)):
            if inverse_diagonal[t] == 0:  # a zero component stays as it is (scikit-learn's rule)
                continue
            column = Wt[t]
            column -= grad[j] * inverse_diagonal[t]
            np.maximum(column, 0, out=column)
            if t + 1 < last:
                grad[j + 1 :] += np.outer(gram[t + 1 : last, t], column - before[j])
        if measure:
            projected = np.where(before == 0, np.minimum(grad, 0), grad)
            violation += float(np.abs(projected).sum())
    return violation


def _inverse_diagonal(gram):
    """``1 / diag(gram)``, 0 where the diagonal is 0 (a zero component is not updated)."""
    diagonal = np.diagonal(gram)
    inverse_diagonal = np.zeros_like(diagonal)
    np.divide(1, diagonal, out=inverse_diagonal, where=diagonal != 0)
    return inverse_diagonal


def _column_blocked_sweeps(Wt, gram, cross_t, inverse_diagonal, n_sweeps):
    """``n_sweeps`` :func:`_column_blocked_sweep` of one block ``Wt`` in place; the first's violation."""
    violation = _column_blocked_sweep(Wt, gram, cross_t, inverse_diagonal)
    for _ in range(n_sweeps - 1):
        _column_blocked_sweep(Wt, gram, cross_t, inverse_diagonal, measure=False)
    return violation


def _blocked_sweep_pays(rows, k):
    """Whether a factor of ``rows`` x ``k`` takes the column-blocked sweep."""
    return k >= BLOCKED_SWEEP_MIN_RANK and rows * k * k >= BLOCKED_SWEEP_MIN_WORK


def _blocked_sweeps(W, gram, cross, n_sweeps):
    """``n_sweeps`` column-blocked sweeps (:func:`_column_blocked_sweep`) on the rows of W,
    :data:`BLOCKED_SWEEP_ROWS` at a time; the first sweep's violation."""
    inverse_diagonal = _inverse_diagonal(gram)
    violation = 0.0
    for start in range(0, W.shape[0], BLOCKED_SWEEP_ROWS):
        Wt = np.ascontiguousarray(W[start : start + BLOCKED_SWEEP_ROWS].T)
        cross_t = cross[start : start + BLOCKED_SWEEP_ROWS].T
        violation += _column_blocked_sweeps(Wt, gram, cross_t, inverse_diagonal, n_sweeps)
        W[start : start + BLOCKED_SWEEP_ROWS] = Wt.T
    return violation


def hals_sweeps(W, gram, cross, n_sweeps, members=()):
    """Run ``n_sweeps`` HALS column sweeps on ``W`` in place.

    Minimizes ``0.5 <W gram, W> - <W, cross>`` over ``W >= 0`` one column at a time,
    by scikit-learn's rule (``_update_cdnmf_fast``). Rows are independent, so they are
    taken a block at a time and every sweep of a block runs while it is in cache. Small
    factors are swept by scikit-learn's own kernel (its numbers); a factor of at least
    :data:`BLOCKED_SWEEP_MIN_RANK` columns and :data:`BLOCKED_SWEEP_MIN_WORK` by
    :func:`_column_blocked_sweep`, the same sweep with its flops in BLAS (its iterates
    agree with scikit-learn's kernel's to rounding; 2.5-3x faster at k = 48).

    Parameters
    ----------
    W : ndarray of shape (p, k), C-contiguous
        Updated in place.
    gram : ndarray of shape (k, k)
        ``H Hᵀ`` (plus the L2 penalty on its diagonal), in W's dtype.
    cross : ndarray of shape (p, k)
        ``V Hᵀ`` (minus the L1 penalty), in W's dtype.
    n_sweeps : int
    members : tuple of int
        For an ensemble: its members' ranks. Each member's columns are swept against
        its own diagonal block of ``gram`` (the members are independent problems).

    Returns
    -------
    violation : float
        scikit-learn's ``violation`` of the first sweep: the sum of the absolute
        projected gradients met along it (the stopping rule's measure).
    """
    if len(members) > 1:
        violation = 0.0
        for a, b in member_slices(members):
            block = np.ascontiguousarray(W[:, a:b])
            violation += hals_sweeps(
                block, np.ascontiguousarray(gram[a:b, a:b]), np.ascontiguousarray(cross[:, a:b]), n_sweeps
            )
            W[:, a:b] = block
        return violation
    if _blocked_sweep_pays(*W.shape):
        return _blocked_sweeps(W, gram, cross, n_sweeps)
    return _sklearn_sweeps(W, gram, cross, n_sweeps)


def hals_sweeps_transposed(Wt, gram, cross_t, n_sweeps, members=()):
    """:func:`hals_sweeps` of ``W = Wt.T``, with the factor stored as ``Wt`` (k x p, C-contiguous,
    updated in place) and the cross term as ``cross_t`` (k x p): the H-step, whose factor and
    ``WᵀV`` are k x n. The column-blocked sweep runs on ``Wt`` as it is, a block of columns
    at a time; scikit-learn's kernel, which sweeps rows, on a transposed copy."""
    k, p = Wt.shape
    if len(members) > 1:
        violation = 0.0
        for a, b in member_slices(members):
            violation += hals_sweeps_transposed(Wt[a:b], gram[a:b, a:b], cross_t[a:b], n_sweeps)
        return violation
    if not _blocked_sweep_pays(p, k):
        W = np.ascontiguousarray(Wt.T)
        violation = hals_sweeps(W, gram, cross_t.T, n_sweeps)
        Wt[...] = W.T
        return violation
    inverse_diagonal = _inverse_diagonal(gram)
    violation = 0.0
    for start in range(0, p, BLOCKED_SWEEP_ROWS):
        block, block_cross = Wt[:, start : start + BLOCKED_SWEEP_ROWS], cross_t[:, start : start + BLOCKED_SWEEP_ROWS]
        violation += _column_blocked_sweeps(block, gram, block_cross, inverse_diagonal, n_sweeps)
    return violation


def dot64(a, b):
    """``<a, b>`` of two 2-D arrays with every product and sum in float64, without float64
    copies of them (NumPy casts a buffer at a time)."""
    return float(np.einsum("ij,ij->", a, b, dtype=np.float64))


def extrapolate(new, old, beta):
    """``max(0, new + beta (new - old))``: a factor moved on along its last update
    (extrapolated HALS, see :mod:`dnmf.numerics.extrapolation`). A new C-contiguous array in
    ``new``'s dtype, made :data:`EXTRAPOLATE_RUN` entries at a time in place (a factor of
    millions of entries is written once, with no temporaries of its size)."""
    new, old = np.ascontiguousarray(new), np.ascontiguousarray(old)
    if old.dtype != new.dtype:  # the difference in the wider dtype, then rounded once
        moved = new + np.asarray(beta * (new - old), dtype=new.dtype)
        return np.maximum(moved, 0, out=moved)
    moved = np.empty(new.shape, dtype=new.dtype)
    flat_new, flat_old, flat_moved = new.reshape(-1), old.reshape(-1), moved.reshape(-1)
    for part in _run_slices(flat_new.size, EXTRAPOLATE_RUN):
        run, run_new = flat_moved[part], flat_new[part]
        np.subtract(run_new, flat_old[part], out=run)
        run *= beta
        run += run_new
        np.maximum(run, 0, out=run)
    return moved


def _run_slices(size, run):
    """Slices that cut ``range(size)`` into runs of ``run`` (the last one shorter): an array
    taken a run at a time stays in cache."""
    return (slice(start, start + run) for start in range(0, size, run))


def _penalized(gram, cross, penalty):
    """Fold L2 into the Gram diagonal and L1 into the cross term (copies)."""
    gram = gram.copy()
    if penalty.l2:
        gram.flat[:: gram.shape[0] + 1] += penalty.l2
    if penalty.l1:
        cross = cross - penalty.l1
    return gram, cross


# --------------------------------------------------------------------------------- MU


def mu_gamma(beta):
    """Exponent of the maximization-minimization MU step (Févotte & Idier, 2011)."""
    if beta < 1:
        return 1.0 / (2.0 - beta)
    if beta > 2:
        return 1.0 / (beta - 1.0)
    return 1.0


def _weighted_ratio(V, WH_at_V, beta):
    """``V ⊙ (WH)^(beta-2)`` where ``WH_at_V`` is WH at V's stored entries (modified)."""
    if sp.issparse(V):
        values, data = WH_at_V.data, V.data
    else:
        values, data = WH_at_V, V
    if beta < 2:
        values[values < EPSILON] = EPSILON
    if beta == 1:
        np.divide(data, values, out=values)
    elif beta == 0:
        values **= -1
        values **= 2
        values *= data
    else:
        values **= beta - 2
        values *= data
    return WH_at_V


def _wh_at(V, W, H):
    """``W @ H`` at the stored entries of a sparse ``V`` (as CSR), or dense for dense ``V``.

    Each value is the dot product of a row of W and a column of H, gathered
    :data:`WH_AT_RUN` entries at a time.
    """
    if not sp.issparse(V):
        return W @ H
    V = V.tocsr()
    rows = np.repeat(np.arange(V.shape[0]), np.diff(V.indptr))
    Ht = np.ascontiguousarray(H.T)
    values = np.empty(V.nnz, dtype=np.result_type(W, H))
    for part in _run_slices(V.nnz, WH_AT_RUN):
        np.einsum("ij,ij->i", W[rows[part]], Ht[V.indices[part]], out=values[part])
    return sp.csr_matrix((values.astype(W.dtype, copy=False), V.indices, V.indptr), shape=V.shape)


def _wh_power(W, H, exponent):
    """``(W @ H) ** exponent`` (dense), flooring at EPSILON for negative exponents."""
    WH = W @ H
    if exponent < 0:
        WH[WH < EPSILON] = EPSILON
    WH **= exponent
    return WH


def mu_update_w(V, W, H, beta, penalty, gamma, HHt=None, VHt=None, members=(), WH_at_V=None):
    """One multiplicative update of ``W`` (a new array), as scikit-learn's ``mu``; of an
    ensemble (``members``), each member's columns against its own rows of H. For beta != 2,
    ``WH_at_V`` is :func:`_wh_at` of ``(V, W, H)`` if known (it is overwritten)."""
    if len(members) > 1 and beta != 2:  # (for beta 2, VHt and the block-diagonal HHt are the members')
        return np.hstack([mu_update_w(V, W[:, a:b], H[a:b], beta, penalty, gamma) for a, b in member_slices(members)])
    if beta == 2:
        numerator = _dot(V, H.T) if VHt is None else VHt.copy()
        denominator = W @ (H @ H.T if HHt is None else HHt)
    else:
        WH_at_V = _wh_at(V, W, H) if WH_at_V is None else WH_at_V
        numerator = _dot(_weighted_ratio(V, WH_at_V, beta), H.T)
        if beta == 1:
            denominator = np.broadcast_to(H.sum(axis=1)[np.newaxis, :], W.shape).copy()
        else:
            denominator = _wh_power(W, H, beta - 1) @ H.T
    return mu_apply(W, numerator, denominator, penalty, gamma, zero_small=beta < 1)


def mu_apply(A, numerator, denominator, penalty, gamma, zero_small):
    """``A ⊙ (numerator / denominator)^γ`` (a new array) with scikit-learn's MU penalties
    and floor: zero denominators become ``EPSILON`` (in ``denominator`` itself when no
    penalty applies), and with ``zero_small`` entries below ``MU_ZERO_THRESHOLD`` become 0
    (scikit-learn does so for W when beta < 1, for H when beta <= 1).
    """
    if penalty.l1 > 0:
        denominator = denominator + penalty.l1
    if penalty.l2 > 0:
        denominator = denominator + penalty.l2 * A
    denominator[denominator == 0] = EPSILON
    ratio = numerator / denominator
    if gamma != 1:
        ratio **= gamma
    A = A * ratio
    if zero_small:
        A[A < MU_ZERO_THRESHOLD] = 0.0
    return A


def mu_h_partials(V, W, H, beta, members=()):
    """This panel's share of the MU H-step for beta != 2.

    Returns ``(numerator, denominator)`` with ``numerator = Wᵀ(V ⊙ (WH)^(beta-2))``
    (k x n) and ``denominator = Wᵀ(WH)^(beta-1)`` (k x n), or, for beta == 1, the
    column sums of ``W`` (k,). Both add up over panels. Of an ensemble (``members``),
    each member's rows from its own ``W_r H_r``.
    """
    if len(members) > 1:
        parts = [mu_h_partials(V, W[:, a:b], H[a:b], beta) for a, b in member_slices(members)]
        join = np.concatenate if beta == 1 else np.vstack
        return np.vstack([numerator for numerator, _ in parts]), join([denominator for _, denominator in parts])
    numerator = _dot(W.T, _weighted_ratio(V, _wh_at(V, W, H), beta))
    if beta == 1:
        denominator = W.sum(axis=0)
    else:
        denominator = W.T @ _wh_power(W, H, beta - 1)
    return numerator, denominator


def mu_update_h(H, numerator, denominator, beta, penalty, gamma):
    """MU H-step from summed partials (a new array), as scikit-learn's ``mu``.

    For beta == 2 pass ``numerator = WᵀV`` and ``denominator = WᵀW H``; for beta == 1
    ``denominator`` is the column sums of W; otherwise ``Wᵀ(WH)^(beta-1)``.
    """
    if beta == 1:
        w_sum = denominator.copy()
        w_sum[w_sum == 0] = 1.0
        denominator = np.broadcast_to(w_sum[:, np.newaxis], H.shape).copy()
    else:
        denominator = denominator.copy()
    return mu_apply(H, numerator, denominator, penalty, gamma, zero_small=beta <= 1)


# ----------------------------------------------------------------------------- losses


def frobenius_pieces(W, VHt, members=()):
    """``(<W, V Hᵀ>, Wᵀ W)``: this panel's share of ``||V - WH||²`` without forming WH.

    ``||V - WH||² = ||V||² - 2 Σ<W_i, V_i Hᵀ> + <Σ W_iᵀW_i, H Hᵀ>``. For an ensemble
    (``members``) the first is an array: one ``<W_r, V H_rᵀ>`` per member.
    """
    if len(members) > 1:
        crosses = np.array([np.vdot(W[:, a:b], VHt[:, a:b]) for a, b in member_slices(members)], np.float64)
        return crosses, member_gram(W, members)
    return float(np.vdot(W, VHt)), W.T @ W


def beta_loss_pieces(V, W, H, beta, members=(), WH_at_V=None):
    """This panel's share of the beta-divergence ``D(V | WH)`` for beta != 2.

    Returns a float64 vector that adds up over panels (of an ensemble, ``members``: one
    row per member, from its own ``W_r H_r``); :func:`dnmf.numerics.losses.beta_loss`
    turns the sum into the loss. Follows scikit-learn's ``_beta_divergence``: entries
    of V at or below EPSILON are left out of the data terms and WH is floored at
    EPSILON there. ``WH_at_V``: :func:`_wh_at` of ``(V, W, H)`` if known (left as it is).
    """
    if len(members) > 1:
        return np.stack([beta_loss_pieces(V, W[:, a:b], H[a:b], beta) for a, b in member_slices(members)])
    WH_at_V = _wh_at(V, W, H) if WH_at_V is None else WH_at_V
    if sp.issparse(V):
        data, values = V.data, WH_at_V.data
    else:
        data, values = np.asarray(V).ravel(), WH_at_V.ravel()
    terms = np.zeros(3)
    for data_run, values_run in _kept_runs(data, values):
        if beta == 1:
            terms += [np.dot(data_run, np.log(data_run / values_run)), 0.0, data_run.sum()]
        elif beta == 0:
            div = data_run / values_run
            terms += [div.sum(), np.log(div).sum(), 0.0]
        else:
            terms += [(data_run**beta).sum(), np.dot(data_run, values_run ** (beta - 1)), 0.0]
    if beta == 1:
        terms[1] = float(np.dot(W.sum(axis=0, dtype=np.float64), H.sum(axis=1, dtype=np.float64)))
    elif beta != 0:
        if sp.issparse(V):
            parts = (W[i] @ H for i in range(W.shape[0]))
        else:
            flat = WH_at_V.ravel()
            parts = (flat[part] for part in _run_slices(flat.size, LOSS_RUN))
        terms[2] = float(sum(np.sum(np.asarray(part, dtype=np.float64) ** beta) for part in parts))
    return terms


def _kept_runs(data, values):
    """The data terms' entries of :func:`beta_loss_pieces`, :data:`LOSS_RUN` at a time (in
    cache): ``(V, WH)`` in float64 where V is above EPSILON, WH floored at EPSILON (new
    arrays: ``values`` is left as it is)."""
    for part in _run_slices(data.size, LOSS_RUN):
        keep = data[part] > EPSILON
        data_run = data[part][keep].astype(np.float64, copy=False)
        values_run = values[part][keep].astype(np.float64, copy=False)
        np.maximum(values_run, EPSILON, out=values_run)
        yield data_run, values_run


# --------------------------------------------------------------- per-panel W solves


def _needs_cross(solver, beta):
    """Whether the W-update uses ``V Hᵀ`` (HALS, and MU for the Frobenius loss)."""
    return solver == "cd" or beta == 2


def _row_ranges(V):
    """The blocks of rows a panel is taken in: :data:`CACHE_BLOCK_BYTES` of a dense panel
    (at least :data:`MIN_BLOCK_ROWS` rows), a sparse panel whole (its products gather
    anyway, and every block would add a k x n partial)."""
    m = V.shape[0]
    if sp.issparse(V):
        return [(0, m)]
    rows = max(MIN_BLOCK_ROWS, CACHE_BLOCK_BYTES // max(1, V.shape[1] * V.itemsize))
    return [(start, min(start + rows, m)) for start in range(0, m, rows)]


def member_gram(A, members=()):
    """``AᵀA``; for an ensemble (``members``) only its members' diagonal blocks, each
    computed on its own (``Σ k_r²`` products per row instead of ``K²``), zeros between
    members, which no update or loss of an ensemble uses."""
    if len(members) < 2:
        return A.T @ A
    out = np.zeros((A.shape[1], A.shape[1]), dtype=A.dtype)
    for a, b in member_slices(members):
        out[a:b, a:b] = A[:, a:b].T @ A[:, a:b]
    return out


class _WRule:
    """The W-update of a pass for blocks of rows, with what every block shares (H Hᵀ;
    for an ensemble, its diagonal blocks only)."""

    def __init__(self, H, solver, beta, penalty, members=()):
        self.H, self.solver, self.beta, self.penalty, self.members = H, solver, beta, penalty, members
        self.HHt = member_gram(H.T, members) if _needs_cross(solver, beta) else None
        if solver == "cd":
            self.gram = self.HHt.copy()
            if penalty.l2:
                self.gram.flat[:: self.gram.shape[0] + 1] += penalty.l2
        else:
            self.gamma = mu_gamma(beta)

    def cross(self, V, W=None):
        """What a block's W-update and loss share: ``V Hᵀ``; for beta-MU, which never needs
        it, ``W H`` at V's stored entries given the block's ``W`` (else None; the first MU
        update overwrites it, so the loss must come first)."""
        if _needs_cross(self.solver, self.beta):
            return _dot(V, self.H.T)
        return _wh_at(V, W, self.H) if W is not None and len(self.members) <= 1 else None

    def update(self, V, W, VHt, n_updates):
        """``n_updates`` HALS sweeps or MU updates of a block's W (in place for HALS).

        Returns
        -------
        W : ndarray
        violation : float
            Of the first HALS sweep (0 for MU).
        """
        if self.solver == "cd":
            cross = VHt - self.penalty.l1 if self.penalty.l1 else VHt
            return W, hals_sweeps(W, self.gram, cross, n_updates, self.members)
        WH_at_V = None if self.beta == 2 else VHt
        for _ in range(n_updates):
            W = mu_update_w(V, W, self.H, self.beta, self.penalty, self.gamma, self.HHt, VHt, self.members, WH_at_V)
            WH_at_V = None  # of the W the update started from
        return W, 0.0

    def loss_pieces(self, V, W, VHt, norm):
        """The block's loss terms of ``(W, H)`` (``[||V_b||², cross of each member]``) and
        its ``WᵀW`` (None for beta != 2; there ``VHt`` is :meth:`cross` of this ``W``, or None)."""
        if self.beta == 2:
            cross, gram = frobenius_pieces(W, VHt, self.members)
            return np.array([norm, *np.atleast_1d(cross)]), gram
        return beta_loss_pieces(V, W, self.H, self.beta, self.members, VHt), None


def _add(total, part):
    return part if total is None else total + part


def transform_start(V, H, solver, members=()):
    """Starting W for a solve with H frozen: zeros for HALS; for MU (which cannot move
    a zero) each row scaled so that its row of ``W H`` has the row mean of V (of an
    ensemble, ``members``: each member's ``W_r H_r``)."""
    k = H.shape[0]
    if solver == "cd":
        return np.zeros((V.shape[0], k), dtype=H.dtype)
    if len(members) > 1:
        return np.hstack([transform_start(V, H[a:b], solver) for a, b in member_slices(members)])
    scale = float(H.mean(axis=1).sum())
    row_means = np.asarray(V.mean(axis=1), dtype=np.float64).ravel()
    level = row_means / scale if scale > 0 else np.zeros_like(row_means)
    return np.repeat(level[:, None], k, axis=1).astype(H.dtype)


# ------------------------------------------------------------- one step of one panel


@dataclass(frozen=True)
class StepSpec:
    """Everything a panel task needs besides its data: which rule and how hard."""

    solver: str  # "cd" (HALS) or "mu"
    beta: float  # 2 Frobenius, 1 KL, 0 IS, or any float (mu only)
    penalty_W: Penalty = Penalty()
    penalty_H: Penalty = Penalty()
    sweeps_W: int = 1  # HALS sweeps / MU updates of W per pass over V
    sweeps_H: int = 1  # ... and of H
    update_H: bool = True
    missing: str | None = None  # None, or a mode of dnmf.numerics.masked: the masked kernels run instead
    extrapolation: float = 0.0  # step beta of extrapolated HALS for this pass (dnmf.numerics.extrapolation); 0: none
    members: tuple = ()  # an ensemble of independent factorizations of these ranks (summing to k); (): one


class PanelPartial(NamedTuple):
    """What one panel contributes to the H-step and the loss; sums over panels.

    ``loss_terms`` (float64) and ``gram_before`` give the loss of the iterate the step
    started from (see :mod:`dnmf.numerics.losses`). ``h_numerator``/``h_denominator`` are
    ``(WᵀV, WᵀW)`` for the Frobenius loss and the MU partials otherwise, from the
    updated W; both None when H is frozen. ``violation`` is the HALS sweep's measure of
    stationarity (see :func:`hals_sweeps`; 0 for MU).
    """

    loss_terms: np.ndarray
    gram_before: np.ndarray | None
    h_numerator: np.ndarray | None
    h_denominator: np.ndarray | None
    violation: float = 0.0

    def __add__(self, other):
        return PanelPartial(*(None if a is None else a + b for a, b in zip(self, other)))

    def columns(self, start, stop, beta):
        """The H-step terms of columns ``start:stop`` of H (the Gram ``WᵀW`` and the column
        sums of W, for beta 2 and 1, are every column's)."""
        denominator = self.h_denominator if beta in (1, 2) else self.h_denominator[:, start:stop]
        return self._replace(h_numerator=self.h_numerator[:, start:stop], h_denominator=denominator)


def sum_partials(*partials):
    """Add panel partials (one node of the tree reduction)."""
    total = partials[0]
    for partial in partials[1:]:
        total = total + partial
    return total


def squared_norm(V):
    """``||V||²`` (dense or sparse) as a float.

    Squares are summed in V's dtype over runs of ``SQUARES_RUN`` stored values and the
    run sums in float64: as accurate as float64 for the purpose, without a float64 copy
    of V (which cost more than the products for float32 panels).
    """
    data = (V.data if sp.issparse(V) else np.asarray(V)).ravel()
    cut = data.size - data.size % SQUARES_RUN
    runs = data[:cut].reshape(-1, SQUARES_RUN)
    tail = data[cut:].astype(np.float64)
    return float(np.einsum("ij,ij->i", runs, runs).sum(dtype=np.float64) + np.dot(tail, tail))


def in_dtype_of(V, *factors):
    """The factors in V's value dtype (no copy when they already are).

    Keeps float32 end to end: a float64 factor next to a float32 panel would make every
    product cast the panel to float64 (a copy of V) and run at half speed.
    """
    dtype = V.dtype
    return tuple(None if A is None else np.asarray(A, dtype=dtype) for A in factors)


def panel_step(V, W, H, step, norm=True):
    """Update one panel's W, then emit its share of the H-step and of the loss.

    This is the whole per-panel work of one outer iteration, and V is used once: a dense
    panel is taken :data:`CACHE_BLOCK_BYTES` of rows at a time, and each block's products
    (``V_b Hᵀ`` for the W-update, then ``W_bᵀ V_b`` with the updated rows), sweeps and
    loss pieces all run while the block is in cache. With ``step.extrapolation`` the new
    W is extrapolated before its partials are taken. ``W`` and ``H`` are taken in V's
    dtype. ``norm=False`` skips ``||V_i||²`` (the caller knows ``||V||²`` already; the
    first loss term is then 0).

    Returns
    -------
    W : ndarray of shape (m_i, k)
    partial : PanelPartial
    """
    W, H = in_dtype_of(V, W, H)
    rule = _WRule(H, step.solver, step.beta, step.penalty_W, step.members)
    W_new = np.empty(W.shape, dtype=W.dtype)
    loss_terms = gram_before = numerator = denominator = None
    violation = 0.0
    for start, stop in _row_ranges(V):
        V_b = V if stop - start == V.shape[0] else V[start:stop]  # a sparse slice is a copy
        W_b = W[start:stop]
        VHt = rule.cross(V_b, W_b)
        norm_b = squared_norm(V_b) if norm and step.beta == 2 else 0.0
        terms, gram = rule.loss_pieces(V_b, W_b, VHt, norm_b)  # before the update, which may overwrite VHt
        loss_terms, gram_before = _add(loss_terms, terms), _add(gram_before, gram)
        new, block_violation = rule.update(V_b, np.array(W_b, order="C", copy=True), VHt, step.sweeps_W)
        violation += block_violation
        if step.extrapolation:
            new = extrapolate(new, W_b, step.extrapolation)
        W_new[start:stop] = new
        if step.update_H:
            if step.beta == 2:
                num, den = _dot(new.T, V_b), member_gram(new, step.members)
            else:
                num, den = mu_h_partials(V_b, new, H, step.beta, step.members)
            numerator, denominator = _add(numerator, num), _add(denominator, den)
    return W_new, PanelPartial(loss_terms, gram_before, numerator, denominator, violation)


def transform_panel(V, W, H, step, max_inner, tol, norm=True):
    """Solve one panel's W with H frozen (from ``W``, or a neutral start if None).

    One read of ``V_i`` serves all ``max_inner`` updates; ``max_inner=0`` only
    evaluates the loss of ``(W, H)``. ``tol`` has scikit-learn's meaning for the panel:
    HALS stops once a sweep's violation is at most ``tol`` times the first sweep's; MU
    checks every :data:`MU_CHECK_EVERY` updates whether the error fell by less than
    ``tol`` times the panel's starting error since the last check. ``norm`` as in
    :func:`panel_step`.

    Returns
    -------
    W : ndarray of shape (m_i, k)
    partial : PanelPartial
        Loss pieces of the returned ``(W, H)``; no H-step terms.
    n_done : int
    """
    W, H = in_dtype_of(V, W, H)
    W = transform_start(V, H, step.solver, step.members) if W is None else np.array(W, order="C", copy=True)
    rule = _WRule(H, step.solver, step.beta, step.penalty_W, step.members)
    VHt = rule.cross(V)
    checks_error = step.solver == "mu" and tol > 0
    norm_i = squared_norm(V) if (norm or checks_error) and step.beta == 2 else 0.0
    first = previous = _panel_error(rule, V, W, VHt, norm_i) if checks_error else None
    n_done = 0
    while n_done < max_inner:
        W, violation = rule.update(V, W, VHt, 1)
        n_done += 1
        if tol <= 0:
            continue
        if step.solver == "cd":
            first = violation if n_done == 1 else first
            if first == 0 or violation <= tol * first:
                break
        elif n_done % MU_CHECK_EVERY == 0:
            error = _panel_error(rule, V, W, VHt, norm_i)
            if first == 0 or (previous - error) / first < tol:
                break
            previous = error
    terms, gram = rule.loss_pieces(V, W, VHt, norm_i if norm else 0.0)
    return W, PanelPartial(terms, gram, None, None), n_done


def _panel_error(rule, V, W, VHt, norm):
    """``sqrt(2 loss)`` of ``(W, H)`` on one panel (``norm`` is ``||V_i||²``)."""
    terms, gram = rule.loss_pieces(V, W, VHt, norm)
    if rule.beta == 2:
        loss = sum(frobenius_losses(terms, gram, rule.HHt, rule.members))
    else:
        loss = sum(beta_loss(row, rule.beta, V.shape[0] * V.shape[1]) for row in np.atleast_2d(terms))
    return loss_to_error(loss)


def update_h(H, total, step):
    """The H-step from the summed partials: HALS sweeps on Hᵀ or one MU update.

    The HALS H-step is the W-step applied to transposes: Gram ``WᵀW``, cross ``(WᵀV)ᵀ``.
    ``H`` is taken in the dtype of the partials (V's). Every rule updates each column of
    H on its own, so ``H`` and ``total`` may be a block of columns (see
    :meth:`PanelPartial.columns`).

    Returns
    -------
    H : ndarray of shape (k, n)
        A new array.
    violation : float
        Of the first HALS sweep (0 for MU).
    """
    H = np.asarray(H, dtype=total.h_numerator.dtype)
    gram = total.h_denominator
    if step.solver == "cd":
        H = np.array(H, order="C", copy=True)
        gram, cross = _penalized(gram, total.h_numerator.T, step.penalty_H)
        return H, hals_sweeps_transposed(H, gram, cross.T, step.sweeps_H, step.members)
    gamma = mu_gamma(step.beta)
    if step.beta == 2:
        return mu_update_h(H, total.h_numerator.copy(), gram @ H, 2, step.penalty_H, gamma), 0.0
    return mu_update_h(H, total.h_numerator, total.h_denominator, step.beta, step.penalty_H, gamma), 0.0
