"""The outer loop: the only place that calls ``persist`` or ``compute``.

``factorize`` runs, on whatever Dask scheduler is active (a ``distributed.Client``
if one is, else Dask's threaded scheduler):

1. one statistics pass over V (validation: negative / non-finite entries; mean and
   ``||V||²``),
2. the initialization (random: no pass; NNDSVD: the randomized SVD's passes),
3. outer iterations, each one graph and one pass over V
   (:func:`dnmf.engine.solvers.iteration`), persisted; only three floats come back,
4. for the beta-divergences, when the returned iterate's loss is not known yet, a
   last pass that evaluates it.

Stopping rule
-------------
``tol`` bounds, for every solver, the relative change of the error that further passes could
still bring; with HALS, scikit-learn's test on the gradient applies too. Let ``e_t = sqrt(2 L_t)`` be the
``reconstruction_err_`` of iterate t (``L_t`` the data-fit loss, penalties excluded;
``e_0`` at the initial factors).

Every solver
    The fit stops after iterate t when the passes it has left would change the error by less
    than ``tol`` times ``e_t``, as read from the pace of the last errors
    (:mod:`dnmf.numerics.convergence`: the mean decrease of the last three passes, continued for
    as many passes as the fit has made, at most as many as ``max_iter`` leaves). It waits after
    a pass that raised the error, and for three passes after one that raised it by more than
    ``10 tol``; it fires when the error has not fallen over three passes.
    A solve of H for a fixed W (``update_W=False``), which reproduces scikit-learn's
    ``non_negative_factorization(update_H=False)`` on the transpose, stops by scikit-learn's
    rule instead: every 10 iterations, when the error fell by less than ``tol`` times ``e_0``.
``solver="cd"`` (HALS), also
    scikit-learn's rule: each pass measures the *violation*, the sum of the absolute
    projected gradients met by the first sweep of W and of H
    (:func:`dnmf.numerics.kernels.hals_sweeps`), and the fit stops after pass t when
    ``violation_t <= tol * violation_1``. With extrapolation the violation is measured at
    the extrapolated point, where it can be small while the iterates still move fast: this
    test then also waits until the error changes by at most ``10 tol`` (relative) per pass,
    ``|e_{t-1} - e_t| <= 10 tol e_t``.

An exact fit gets no rule of its own: an error at rounding level is noise (whether the
computed loss is 0 or 1e-16 depends on the order of the panel sums), while the tests
above compare against ``tol``.

For the beta-divergences (and with missing values) the loss of iterate t comes from
the next pass, which forms ``W H`` panel by panel anyway: when a test on the errors
fires one pass late, the fit returns the iterate it fired on. With ``tol == 0`` the fit
runs ``max_iter`` iterations; as scikit-learn, a fit that ran ``max_iter`` iterations
with ``tol > 0`` warns with :class:`sklearn.exceptions.ConvergenceWarning`.

Acceleration
------------
With ``solver="cd"`` (no missing values) the defaults make each pass do more:
``sweeps="auto"`` runs several HALS sweeps of W and of H per read of V, as many as
their cost against the pass's products allows (:func:`auto_sweeps`, Gillis & Glineur's
rule), and ``extrapolate="auto"`` moves both factors on along their last update
(:mod:`dnmf.numerics.extrapolation`). The first pass is never extrapolated, so a one-iteration
fit is a plain descent step. ``sweeps=1, extrapolate=False`` gives scikit-learn's
iterates exactly.

Lost workers
------------
On a ``distributed`` cluster W and H live in workers' memory only. When a worker dies,
Dask recomputes the keys it held from their lineage: the tasks that produced them, back
to data it can read again. Every iteration's W depends on the previous one, so that
lineage reaches back to the initial factors; the scheduler keeps a record of every task
on it (a few per panel per iteration) and, after losing W, replays the iterations from
the start. With a checkpointer, the driver continues after each save from the saved
copy (:meth:`Checkpointer.save` returns the state with W read back from its files), so
the lineage, the scheduler's records and a replay reach back to the last checkpoint
only. Either way a lost worker costs time, not the fit, and the replayed iterations are
the same computations: the result is that of an undisturbed run.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import replace

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from ..errors import InputError, ParameterError
from ..numerics import masked, randomized_svd
from ..numerics.convergence import SETTLED_TOLS, settled
from ..numerics.extrapolation import Schedule
from ..numerics.kernels import StepSpec, aligned
from ..numerics.losses import loss_to_error
from . import initialization, solvers
from .state import FitResult, InputStats, IterationInfo, LoopState

__all__ = [
    "TRANSFORM_TOL",
    "acceleration",
    "active_client",
    "auto_sweeps",
    "compute",
    "count_sums",
    "factorize",
    "normalized_usages",
    "persist",
    "store",
    "to_numpy",
    "truncated_svd",
    "usage_products",
]

logger = logging.getLogger(__name__)

#: Relative change of W below which a frozen-H solve (``transform``) stops.
TRANSFORM_TOL = 1e-7


#: Values of Dask's ``scheduler`` setting that ask for a local scheduler (no cluster).
LOCAL_SCHEDULERS = ("threads", "threading", "sync", "synchronous", "single-threaded")
#: Those of them that run one task at a time, in the calling thread.
SYNC_SCHEDULERS = ("sync", "synchronous", "single-threaded")


def active_client():
    """The active ``distributed.Client``, or None (threaded scheduler).

    A local scheduler set in Dask's config wins over a default client, as it does for
    ``dask.compute`` (:mod:`dnmf.apps.rank` runs whole fits inside worker tasks that way)."""
    if dask.config.get("scheduler", None) in LOCAL_SCHEDULERS:
        return None
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _as_array(blocks, row_chunks, k, dtype, meta=None):
    """One Dask array from W's blocks (persisted Delayed or in-memory arrays)."""
    pieces = [
        da.from_delayed(block, shape=(rows, k), dtype=dtype, meta=meta)
        if isinstance(block, Delayed)
        else da.from_array(block, chunks=block.shape, name=False)
        for block, rows in zip(blocks, row_chunks)
    ]
    return pieces[0] if len(pieces) == 1 else da.concatenate(pieces, axis=0)


def _check_stats(stats, beta):
    if stats.n_nonfinite:
        raise InputError(f"Input contains NaN or infinity ({stats.n_nonfinite} entries)")
    if stats.minimum < 0:
        raise InputError(f"Negative values in data passed to NMF (input minimum is {stats.minimum!r})")
    if beta <= 0 and stats.n_zero:
        raise InputError(
            "When beta_loss <= 0 and X contains zeros, the solver may diverge. Please add small values to X, "
            f"or use a positive beta_loss (X has {stats.n_zero} zeros; beta_loss={beta!r})."
        )


def compute(*graphs, scheduler=None):
    """``dask.compute`` (on ``scheduler`` if given), with every array of the results
    aligned (see :func:`dnmf.numerics.kernels.aligned`): what arrives from a worker may
    sit at any byte offset, and the driver's own products with it would then round
    another way."""
    return aligned(dask.compute(*graphs, **({} if scheduler is None else {"scheduler": scheduler})))


def _value(graph, now):
    """What ``graph`` computes: itself when it was run as it was built (``now``, see
    :func:`_runs_here`), else computed here."""
    return graph if now else compute(graph)[0]


def persist(*graphs):
    """``dask.persist``: on a cluster the results stay in the workers' memory."""
    return dask.persist(*graphs)


def store(source, target):
    """Write the Dask array ``source`` into the Zarr array ``target``, each block by the
    task (the worker) that holds it."""
    da.store(source, target, lock=False)


def each(function, items):
    """``[function(item) for item in items]``, each call a task of the active scheduler
    (files hashed where they are read, in parallel)."""
    return list(dask.compute(*(dask.delayed(function, pure=False)(item) for item in items)))


#: On a cluster, an array of at least this many bytes that every panel task of a pass
#: needs (the first H, the SVD's basis, an H read back from a checkpoint) goes to each
#: worker once, scattered, rather than inside a graph through the scheduler (Dask warns
#: of graphs over 10 MB); so do the row blocks of a W made here (random or custom init).
SHIP_BYTES = 2**20


def _shipped(array, client):
    """``array`` for a pass's graph: on a cluster, a big ndarray scattered to every worker
    (a Future); otherwise as it is."""
    if client is None or not isinstance(array, np.ndarray) or array.nbytes < SHIP_BYTES:
        return array
    return client.scatter(array, broadcast=True, hash=False)


def _shipped_rows(W, client):
    """A W made in this process (a Dask array over an ndarray) for the fit's graphs: on a
    cluster, when big, its row blocks scattered to the workers rather than the whole
    array inside a graph; otherwise as it is."""
    if client is None or W.nbytes < SHIP_BYTES:
        return W
    blocks = compute(*W.to_delayed().ravel(), scheduler="sync")
    futures = client.scatter(list(blocks), hash=False)
    return da.concatenate(
        [da.from_delayed(dask.delayed(f, pure=True), shape=b.shape, dtype=b.dtype) for f, b in zip(futures, blocks)],
        axis=0,
    )


def _rows_as_made(blocks, row_chunks, k, dtype, client):
    """Row blocks that an iterator makes one at a time as one row-chunked Dask array; on a
    cluster each block goes to the workers before the next is made (the driver never
    holds them all)."""
    if client is None:
        return _as_array(list(blocks), row_chunks, k, dtype)
    futures = [client.scatter(block, hash=False) for block in blocks]
    return da.concatenate(
        [
            da.from_delayed(dask.delayed(f, pure=True), shape=(rows, k), dtype=dtype)
            for f, rows in zip(futures, row_chunks)
        ],
        axis=0,
    )


def _materialize(graph, client, now=False):
    """Run one iteration's graph: ``(W_blocks, H, small)`` with W kept where it was computed.

    On a cluster W and H are persisted there and only the small result travels; on the
    local threaded scheduler one ``compute`` hands back the in-memory blocks directly;
    ``now``, the graph was run as it was built (its values are here already).
    """
    W_blocks, H, small = graph
    if now:
        return aligned(graph)
    if client is None:
        return compute(W_blocks, H, small)
    W_blocks, H, small = dask.persist(W_blocks, H, small)
    return W_blocks, H, compute(small)[0]


def to_numpy(W):
    """Gather a (persisted) Dask array into one (aligned) NumPy array."""
    return aligned(np.asarray(W.compute()))


def _randomized_svd(V_blocks, shape, dtype, k, random_state, squared_norm, client, entries=None, now=False):
    """The truncated SVD of V (:mod:`dnmf.numerics.randomized_svd`), one pass over V per power
    iteration, until the subspace has converged or scikit-learn's number of them is done
    (``now``: the passes run here, on panels that are values, see :func:`_runs_here`).

    Returns
    -------
    Y_blocks : list
        ``Y_i`` of the last pass, one per panel (persisted on a cluster).
    T, S, Vt : ndarray
        ``U_i = Y_i T``; see :func:`dnmf.numerics.randomized_svd.finish`.
    """
    width = randomized_svd.sketch_width(k, shape)
    Z = randomized_svd.start_basis(shape[1], width, check_random_state(random_state))
    scale = 1.0 / np.sqrt(squared_norm) if squared_norm > 0 else 1.0
    sigma = None
    for _ in range(randomized_svd.power_iterations(k, shape, entries) + 1):
        Y_blocks, P = solvers.sketch_pass(V_blocks, _shipped((Z * scale).astype(dtype), client), now)
        if client is None and not now:
            Y_blocks, P = compute(Y_blocks, P)
        elif client is not None:
            Y_blocks, P = dask.persist(Y_blocks, P)
            P = compute(P)[0]
        Z, sigma, previous = (*randomized_svd.next_basis(P), sigma)
        if randomized_svd.converged(sigma, previous, k, dtype):
            break
    # Y's triangular factor, of the last pass only (Y_blocks are values here off a cluster)
    R = _value(solvers.triangle_pass(Y_blocks, now=client is None), client is None)
    return (Y_blocks, *randomized_svd.finish(P, R, k, dtype))


def truncated_svd(V, n_components, random_state=None):
    """The truncated SVD ``V ≈ U diag(S) Vt`` that NNDSVD starts from, out of core.

    scikit-learn's ``randomized_svd`` (same oversampling, same number of power iterations
    below :data:`~dnmf.numerics.randomized_svd.LARGE_ENTRIES` stored entries, normalized
    between them) from one pass over V per power iteration
    (:mod:`dnmf.numerics.randomized_svd`), plus the statistics pass for ``||V||``.

    Parameters
    ----------
    V : Panels
    n_components : int
    random_state : int, RandomState or None

    Returns
    -------
    U : dask.array.Array of shape (m, k), row-chunked like V
    S : ndarray of shape (k,)
    Vt : ndarray of shape (k, n)
    """
    blocks = V.blocks()
    with solvers.blas_threads(V.n_panels):
        stats = InputStats.of(compute(solvers.stats_pass(blocks))[0])
        _check_stats(stats, 2.0)
        Y_blocks, T, S, Vt = _randomized_svd(
            blocks,
            V.shape,
            V.dtype,
            n_components,
            random_state,
            stats.squared_norm,
            active_client(),
            _entries(V, stats),
        )
    return initialization.singular_vectors(Y_blocks, T, V.row_chunks), S, Vt


def count_sums(V, target_sum):
    """The column sums of count preprocessing (:func:`dnmf.numerics.counts.panel_count_sums`)
    over all of ``V`` (a :class:`~dnmf.engine.panels.Panels`), from one pass; V is checked
    as a fit checks it (finite, non-negative) on the way."""
    with solvers.blas_threads(V.n_panels):
        stats, sums = compute(solvers.count_sums_pass(V.blocks(), target_sum))[0]
    _check_stats(InputStats.of(stats), 2.0)
    return sums


def normalized_usages(W, members=()):
    """``W`` (a row-chunked Dask array of usages of ranks ``members`` side by side) with each
    member's rows rescaled to sum 1 (:func:`dnmf.numerics.spectra.usage_rows`), lazily."""
    blocks = solvers.normalized_usage_blocks(list(W.to_delayed().ravel()), members)
    return _as_array(blocks, W.chunks[0], W.shape[1], W.dtype)


def usage_products(W, V=None, members=()):
    """The products of fixed usages ``W`` (a row-chunked Dask array, chunked like ``V``; the
    usages of ranks ``members`` side by side) with ``V`` (a
    :class:`~dnmf.engine.panels.Panels`, or None for W's own products only), from one pass:
    a :class:`dnmf.numerics.spectra.UsageProducts`."""
    W_blocks = list(W.to_delayed().ravel())
    if V is not None and tuple(V.row_chunks) != tuple(W.chunks[0]):
        raise ValueError("W must be row-chunked like V")
    with solvers.blas_threads(len(W_blocks)):
        return compute(solvers.usage_products_pass(W_blocks, None if V is None else V.blocks(), members))[0]


def _initial_factors(V, V_blocks, config, W, H, stats, update_H, client, members=(), now=False):
    shape, dtype, rows = V.shape, V.dtype, V.row_chunks
    k, init, random_state, missing = config.n_components, config.init, config.random_state, config.missing_values
    mean = stats.mean  # of the observed entries with missing values
    if not update_H:
        return None, np.asarray(H)
    method = initialization.choose_init(init, k, shape)
    if method == "custom":
        W0, H0 = initialization.custom_init(W, H, rows)
    elif method == "random" and members:
        blocks, H0 = initialization.ensemble_random_init(shape, members, dtype, mean, rows)
        W0 = _rows_as_made(blocks, rows, k, dtype, client)
    elif method == "random":
        W0, H0 = initialization.random_init(shape, k, dtype, mean, random_state, rows)
    elif members:
        raise ParameterError(f"an ensemble starts from init='random' or 'custom', not {method!r}")
    else:
        if missing == "nan":  # the SVD of V with its missing entries at the mean
            V_blocks = solvers.filled_panels(V_blocks, dtype.type(mean), now)
        squared_norm = stats.squared_norm + (stats.n_nan * mean**2 if missing == "nan" else 0.0)
        Y_blocks, T, S, Vt = _randomized_svd(
            V_blocks, shape, dtype, k, random_state, squared_norm, client, _entries(V, stats), now
        )
        norms = _value(initialization.svd_part_norms(Y_blocks, T, now), now)
        W0, H0 = initialization.nndsvd_init(Y_blocks, T, S, Vt, norms, method, mean, random_state, rows, dtype, now)
    if (method == "random" and not members) or (method == "custom" and not isinstance(W, da.Array)):
        W0 = _shipped_rows(W0, client)  # made here, in memory
    W0, H0 = dask.persist(W0, H0)
    return W0, np.asarray(compute(H0)[0])


def _loop_state(iteration, W_blocks, H, H_next, known, violations, V, k, dtype, finished, schedule):
    """A LoopState of the current (persisted) factors; fetches only H (and H_next)."""
    H_next = None if H_next is H else H_next
    H, H_next = (None if x is None else _whole(x) for x in compute(H, H_next))
    W = _as_array(W_blocks, V.row_chunks, k, dtype)
    return LoopState(
        iteration, W, H, tuple(known), finished, schedule.as_list() if schedule else None, H_next, tuple(violations)
    )


def _save(checkpointer, state, client, V, k, layout):
    """Save ``state``; on a cluster, continue from the durable copy the checkpointer returns
    (cuts the lineage Dask keeps; see "Lost workers"). Returns ``(W_blocks, H, H_next)`` to go
    on with (H in the layout's column blocks), or None to keep the current ones."""
    saved = checkpointer.save(state)
    if client is None or not isinstance(saved, LoopState):
        return None
    (W,) = dask.persist(saved.W.rechunk((V.row_chunks, k)))
    H = _placed_columns(saved.H, layout, client)
    H_next = H if saved.H_next is None else _placed_columns(saved.H_next, layout, client)
    # Unoptimized: each block's graph holds the futures themselves (an optimized one only
    # names the keys, which are released as soon as ``W`` goes out of scope).
    return list(W.to_delayed(optimize_graph=False).ravel()), H, H_next


def _stop(solver, errors, violations, tol, max_iter, extrapolated=False, fixed_W=False):
    """The stopping rule of the module docstring.

    Returns
    -------
    None, or the iterate the rule fired on: ``len(errors) - 1`` (the newest one whose loss
    is known) for the test on the errors, ``len(violations)`` (the newest one) for the
    test on the violation.
    """
    j = len(errors) - 1
    if tol <= 0:
        return None
    if fixed_W:  # scikit-learn's MU rule: this solve is its non_negative_factorization(update_H=False)
        window = SCIKIT_LEARN_MU_WINDOW
        stalled = j > 0 and j % window == 0 and (errors[j - window] - errors[j]) / errors[0] < tol
        return j if stalled else None
    if solver == "cd":
        small = violations and (violations[0] == 0 or violations[-1] <= tol * violations[0])
        if small and extrapolated and j >= 1:
            small = abs(errors[-2] - errors[-1]) <= SETTLED_TOLS * tol * errors[-1]
        if small:
            return len(violations)
    return j if settled(errors, tol, max_iter - j) else None


#: A solve of H for a fixed W checks, as scikit-learn's multiplicative updates do, every
#: this many iterations whether the error fell by less than ``tol`` times the first one.
SCIKIT_LEARN_MU_WINDOW = 10


#: ``"auto"`` sweeps: the share of a pass's product time spent on sweeps (Gillis &
#: Glineur's alpha).
SWEEP_SHARE = 0.5
#: ``"auto"`` sweeps: the most sweeps of a factor per pass. More did not reach a given
#: error in fewer passes on any benchmark matrix (``scripts/bench_sklearn.py``).
MAX_AUTO_SWEEPS = 10
#: Speed of a sweep's flops against a product's, by V's format, chosen on
#: ``scripts/bench_sklearn.py``'s matrices. Sparse: 1.0 (of 0.2, 0.5, 0.7, 1.0, 1.5 and 3 the
#: power-law matrix stopped after 45, 38, 28, 19, 19 and 20 passes, PBMC 3k after 27 with 0.2
#: and 18 with the others); SciPy's sparse products run at about the speed of scikit-learn's
#: compiled sweep. Dense: 0.2 kept, although BLAS products run 10-50x faster than the sweep:
#: with 0.02 or 0.05 the planted dense matrices reached scikit-learn's error later, or stopped
#: before it. An ensemble (consensus NMF) keeps 0.2 for a sparse V too: with 1.0,
#: ``scripts/bench_consensus.py`` on PBMC 3k's counts matched two of cNMF's ten programs at
#: k = 10 at cosine 0.02 and 0.94 (every one at 0.9994 or more with 0.2).
SWEEP_TO_PRODUCT_SPEED = {"dense": 0.2, "sparse": 1.0}
#: ``"auto"`` accelerates fits whose pass costs at least as much as the products with this
#: many stored entries (:func:`pass_entries`). Below, a pass costs about a millisecond and
#: plain HALS is kept: scikit-learn's iterates, which agree between float32 and float64 to
#: rounding (extrapolated ones drift apart by ~1e-4).
AUTO_MIN_ENTRIES = 100_000


def pass_entries(shape, n_components, entries):
    """The cost of a plain HALS pass in stored entries of V: its two products take ``4 entries
    k`` flops, and one sweep of each factor ``2 (m + n) k²``, as many as the products with
    ``(m + n) k / 2`` more entries. A sparse graph of 44,000 edges on 11,000 nodes at k = 16
    costs as much as 220,000 entries: its sweeps, not its products, make its pass."""
    m, n = shape
    return entries + (m + n) * n_components / 2


def auto_sweeps(shape, n_components, entries, sparse):
    """HALS sweeps of W and of H per pass for ``sweeps="auto"`` on a large matrix.

    Gillis & Glineur (2012), in time rather than flops: a pass's two products with V take
    ``4 entries k`` flops (``entries`` = V's stored entries), a sweep of W ``2 m k²`` and
    of H ``2 n k²``, at the relative speed :data:`SWEEP_TO_PRODUCT_SPEED` of V's format
    (``sparse``: bool). With
    ``rho`` the ratio of the two times, each factor gets ``1 + floor(SWEEP_SHARE · rho)``
    sweeps, at most :data:`MAX_AUTO_SWEEPS`.

    Returns
    -------
    sweeps_W, sweeps_H : int
    """
    m, n = shape
    k = n_components
    speed = SWEEP_TO_PRODUCT_SPEED["sparse" if sparse else "dense"]
    rho_W = 2 * speed * entries / (m * k)
    rho_H = 2 * speed * entries / (n * k)
    return tuple(int(min(MAX_AUTO_SWEEPS, 1 + SWEEP_SHARE * rho)) for rho in (rho_W, rho_H))


def acceleration(solver, missing, shape, n_components, entries, sparse, sweeps="auto", extrapolate="auto"):
    """What ``"auto"`` resolves to: ``(sweeps_W, sweeps_H, extrapolate)``.

    HALS without missing values whose pass costs at least :data:`AUTO_MIN_ENTRIES` stored
    entries (:func:`pass_entries`) gets :func:`auto_sweeps` and extrapolation; everything
    else one sweep (or MU update) per factor and pass, no extrapolation. Values other than
    ``"auto"`` are kept.
    """
    large = pass_entries(shape, n_components, entries) >= AUTO_MIN_ENTRIES
    accelerated = solver == "cd" and not missing and large
    if sweeps == "auto":
        sweeps_W, sweeps_H = auto_sweeps(shape, n_components, entries, sparse) if accelerated else (1, 1)
    else:
        sweeps_W = sweeps_H = int(sweeps)
    return sweeps_W, sweeps_H, accelerated if isinstance(extrapolate, str) else bool(extrapolate)


def factorize(
    V,
    config,
    *,
    W=None,
    H=None,
    update_H=True,
    update_W=True,
    callback=None,
    start=None,
    checkpointer=None,
    members=None,
):
    """Factorize V ≈ W H on the active Dask scheduler.

    Parameters
    ----------
    V : Panels
    config : dnmf.params.FitConfig
        With its rank decided (:meth:`~dnmf.params.FitConfig.with_rank`). ``max_iter``
        and ``tol`` follow the stopping rule of the module docstring; with
        ``update_H=False`` they bound and stop each panel's updates as scikit-learn's
        ``transform`` does (see :func:`dnmf.numerics.kernels.transform_panel`).
        ``sweeps`` and ``extrapolate`` ``"auto"``: see :func:`acceleration`. With
        ``missing="nan"`` and no NaN in V, the unmasked solver runs.
    W, H : array-like, optional
        Custom initial factors (``init="custom"``, checked by
        :func:`dnmf.engine.initialization.check_custom`); with ``update_H=False``, H is
        the fixed dictionary and W is solved for.
    update_H : bool
        False solves W for a fixed H in one pass (``transform``).
    update_W : bool
        False solves H for the fixed W (``init="custom"``: W and the first H given), one
        pass per multiplicative update (``solver="mu"``), as scikit-learn's solve of its W
        with H fixed on the transposed problem.
    callback : callable, optional
        Called with an :class:`~dnmf.engine.state.IterationInfo` after each iteration.
    start : LoopState, optional
        Continue from this state instead of initializing (resume). Same V, chunking
        and parameters give the iterates of a run that was never interrupted, bit for bit.
    checkpointer : Checkpointer, optional
        Asked after every iteration whether to save the state, and given the final one.
    members : sequence of (int, seed), optional
        An ensemble: independent factorizations of these ranks (summing to
        ``config.n_components``), side by side in W and on top of each other in H, that
        share every pass over V (each panel task updates them all; each is updated
        against its own blocks of the Gram matrices). With ``init="random"`` each member
        starts from its own seed's random init; with ``update_H=False``, H stacks the
        members' fixed dictionaries (the seeds are not used). The stopping rule sees
        the summed losses and violations; :attr:`FitResult.member_losses` has each
        member's loss.

    Returns
    -------
    FitResult
    """
    members = tuple((int(k), seed) for k, seed in members) if members else ()
    client = active_client()
    layout = _layout(client, V)
    with _local_tasks(client, V), solvers.blas_threads(V.n_panels):
        if layout is not None and V.in_memory:  # ship in-memory data once, aligned, to the worker of each panel
            V = _placed_panels(V, layout)
        V_blocks = V.blocks()
        now = _runs_here(client, V)
        if now:  # every pass, from the statistics on, calls its tasks directly on the panels' values
            V_blocks = list(compute(*V_blocks))
        stats, missing = _statistics(V, V_blocks, config, now)
        config = replace(config, missing_values=missing)
        if start is None:
            W0, H0 = _initial_factors(V, V_blocks, config, W, H, stats, update_H, client, members, now)
        else:
            W0, H0 = start.W.rechunk((V.row_chunks, start.W.shape[1])).persist(), np.asarray(start.H)
        step, extrapolate = _step(config, V, stats, H0.shape[0], update_H, tuple(k for k, _ in members))
        if not update_W:
            if step.solver != "mu" or not update_H:
                raise ParameterError("a solve of H for a fixed W runs solver='mu' and updates H")
            step, extrapolate = replace(step, sweeps_W=0, sweeps_H=1), False  # MU: 0 updates leave W as it is
        if step.missing == "nan":  # find the NaN of in-memory panels once, of stored ones at each read
            V_blocks = _on_workers(layout, V_blocks, lambda blocks: solvers.prepared_panels(blocks, step.missing, now))
            if V.in_memory and not now:
                V_blocks = list(dask.persist(*V_blocks))
        if not update_H:
            return _solve_w(V, V_blocks, H0, step, config, stats, client, now)
        first_W, W0 = [W0], None  # _iterate lets go of the first W after the first pass (see there)
        return _iterate(
            V,
            V_blocks,
            first_W,
            H0,
            step,
            extrapolate,
            config,
            stats,
            client,
            callback,
            start,
            checkpointer,
            now,
            layout,
        )


def _layout(client, V):
    """Where each pass's tasks run on a cluster (:class:`dnmf.engine.solvers.Layout`, by
    the workers there when the fit starts); None off a cluster."""
    if client is None:
        return None
    workers = client.scheduler_info(n_workers=-1)["workers"]
    threads = {address: int(info.get("nthreads", 1)) for address, info in workers.items()}
    return solvers.Layout.of(threads, V.n_panels, V.shape[1])


def _on_workers(layout, blocks, make):
    """``make(blocks)`` (a graph of one task per block), each block's task made for the
    worker of its panel when there is a layout."""
    if layout is None:
        return make(blocks)
    made = []
    for i, block in enumerate(blocks):
        with solvers.on_worker(layout.worker_of(i)):
            made.extend(make([block]))
    return made


def _placed_panels(V, layout):
    """In-memory ``V`` on the cluster: each panel aligned and persisted on its worker."""
    blocks = list(dask.persist(*_on_workers(layout, V.blocks(), _aligned_blocks)))
    return replace(V, array=_as_array(blocks, V.row_chunks, V.shape[1], V.dtype, V.array._meta))


def _aligned_blocks(blocks):
    return [dask.delayed(aligned)(block) for block in blocks]


def _placed_columns(H, layout, client):
    """An ndarray H as the layout's column blocks (persisted Delayed, as a pass leaves them),
    each shipped as :func:`_shipped` ships an array: a big one to every worker, so that a lost
    worker cannot take the only copy (it has no lineage to be recomputed from)."""
    blocks = [_shipped(np.ascontiguousarray(block), client) for block in layout.split(np.asarray(H))]
    return list(dask.persist(*(dask.delayed(block, pure=True) for block in blocks)))


def _whole(H):
    """H as one ndarray, from its column blocks (a list) when it comes in blocks."""
    return np.concatenate(H, axis=1) if isinstance(H, list) else np.asarray(H)


def _local_tasks(client, V):
    """Dask's threads run in-memory dense panels one at a time, with BLAS on every core:
    their products are bound by memory bandwidth, which parallel tasks only share. Sparse
    products (single-threaded in SciPy) and stored inputs (decompression) keep one task
    per core, but for a sparse V in one panel, which has one task per step anyway."""
    if client is None and V.in_memory and (not V.sparse or V.n_panels == 1):
        return dask.config.set(scheduler="sync")  # one task at a time, without a pool's hand-offs
    return contextlib.nullcontext()


def _runs_here(client, V):
    """Whether the passes (the statistics pass, the SVD's, the fit's) run their tasks at once
    in this thread (``now`` in :func:`dnmf.engine.solvers.iteration`): in-memory panels on
    Dask's synchronous scheduler, which would run the same tasks one at a time here, after
    the cost of building and ordering each pass's graph."""
    return client is None and V.in_memory and dask.config.get("scheduler", None) in SYNC_SCHEDULERS


def _statistics(V, V_blocks, config, now=False):
    """The statistics pass (run here with ``now``), its checks, and the missing-value mode the
    fit runs in."""
    missing = config.missing_values
    if missing is not None:
        masked.check_input_kind(V.sparse, missing)
    stats = InputStats.of(_value(solvers.stats_pass(V_blocks, missing, now), now))
    if missing is None:
        _check_stats(stats, config.beta_loss)
    else:
        masked.check_stats(np.asarray(stats, dtype=np.float64), config.beta_loss, missing)
        if missing == "nan" and stats.n_nan == 0:
            logger.info("no NaN in V: running the unmasked solver")
            missing = None
    return stats, missing


def _step(config, V, stats, k, update_H, members=()):
    """``(step, extrapolate)``: the :class:`~dnmf.numerics.kernels.StepSpec` of every pass
    and whether to extrapolate, their "auto" choices resolved. An ensemble's sweeps cost
    ``sum k_r²`` per row against products of ``k``: it sweeps as a rank ``sum k_r² / k``, and
    weighs a sweep as for a dense V whatever V's format (see :data:`SWEEP_TO_PRODUCT_SPEED`)."""
    if members and config.missing_values:
        raise ParameterError("an ensemble runs without missing values")
    entries = _entries(V, stats)
    sweeping_rank = sum(r * r for r in members) / k if members else k
    sweeps_W, sweeps_H, extrapolate = acceleration(
        config.solver,
        config.missing_values,
        V.shape,
        sweeping_rank,
        entries,
        V.sparse and not members,
        config.inner_sweeps,
        config.extrapolate,
    )
    penalty_W, penalty_H = config.penalties(V.shape)
    step = StepSpec(
        config.solver,
        config.beta_loss,
        penalty_W,
        penalty_H,
        sweeps_W,
        sweeps_H,
        update_H,
        config.missing_values,
        members=members if len(members) > 1 else (),
    )
    return step, extrapolate


def _entries(V, stats):
    """V's stored entries (non-zeros of a sparse V, every entry of a dense one): what a pass costs."""
    size = V.shape[0] * V.shape[1]
    return size - stats.n_zero if V.sparse else size


def _known_norm(stats, step):
    """``||V||²`` for the passes (which then need not sum it again), None with missing values."""
    return None if step.missing else stats.squared_norm


def _solve_w(V, V_blocks, H, step, config, stats, client, now):
    """``transform``: W for the fixed H, from one pass over V."""
    panel_tol = TRANSFORM_TOL if step.missing else config.tol
    graph = solvers.final_pass(
        V_blocks, None, _shipped(H, client), step, V.shape, config.max_iter, panel_tol, _known_norm(stats, step), now
    )
    W_blocks, _, (loss, n_done, *losses) = _materialize((*graph[:1], None, graph[1]), client, now)
    n_done = int(n_done)
    if n_done == config.max_iter and config.tol > 0:
        _warn_max_iter(config.max_iter)
    W = _as_array(W_blocks, V.row_chunks, H.shape[0], V.dtype)
    return FitResult(
        W, H, n_done, [loss], n_done < config.max_iter, stats.norm, member_losses=[float(v) for v in losses]
    )


def _iterate(
    V, V_blocks, first_W, H0, step, extrapolate, config, stats, client, callback, start, checkpointer, now, layout
):
    """The outer loop (see the module docstring).

    ``first_W`` is a list holding the first W (persisted), emptied once the first pass has
    made the next one: on a cluster the first W is then freed, where a name for it in this
    frame or the caller's would keep a third copy of W on the workers for the whole fit.
    ``now``: V_blocks are values, and the passes run as they are built (:func:`_runs_here`).
    ``layout``: on a cluster, where the passes' tasks run (:func:`dnmf.engine.solvers.spread_iteration`);
    H then travels between passes as its column blocks.
    """
    k, dtype = H0.shape[0], V.dtype
    lagged = step.beta != 2 or bool(step.missing)  # the new iterate's loss comes from the next pass
    # A resumed W0 is persisted: its blocks' graphs must hold the futures themselves (as in
    # ``_save``), or they are released with W0 and a resumed finished fit has lost its W.
    W_blocks = list(first_W[0].to_delayed(optimize_graph=start is None).ravel())
    if now:
        W_blocks = list(compute(*W_blocks))
    H_now = H_next = H0  # the iterate's H; the H the next pass starts from (extrapolated HALS: may differ)
    schedule = Schedule() if extrapolate else None
    if start is not None and schedule is not None and start.extrapolation:
        schedule = Schedule.from_list(start.extrapolation)
        H_next = H0 if start.H_next is None else np.asarray(start.H_next)
    if layout is not None:
        H_now = _placed_columns(H_now, layout, client)
        H_next = H_now if H_next is H0 else _placed_columns(H_next, layout, client)
    known = [] if start is None else list(start.loss_history)  # loss of iterates 0..j
    errors = []  # their errors (loss_to_error), made as they come
    violations = [] if start is None else list(start.violations)  # of passes 1..t
    first = 1 if start is None else start.iteration + 1
    converged = start is not None and start.finished
    n_iter = saved = first - 1
    previous = None  # the iterate before the newest: returned when a lagged test fires on it
    for n_iter in range(first, config.max_iter + 1 if not converged else first):
        started = time.perf_counter()
        this_step = replace(step, extrapolation=schedule.beta if n_iter > 1 else 0.0) if schedule else step
        if layout is None:  # off a cluster: H stays here
            graph = solvers.iteration(V_blocks, W_blocks, H_next, this_step, V.shape, _known_norm(stats, step), now)
        else:
            graph = solvers.spread_iteration(
                V_blocks, W_blocks, H_next, this_step, V.shape, layout, _known_norm(stats, step)
            )
        previous = (W_blocks, H_now)
        W_blocks, (H_now, H_ahead), (before, after, violation) = _materialize(graph, client, now)
        first_W.clear()  # never returned now: not a fresh first iterate (_stop), a resumed one holds its futures
        if n_iter == 1:
            known.append(float(before))
        if not lagged:  # the new iterate's loss came for free
            known.append(float(after))
        elif n_iter > 1:
            known.append(float(before))
        if step.solver == "cd":
            violations.append(float(violation))
        H_next = H_now
        if schedule is not None and n_iter > 1 and schedule.accept(known[-1], known[-2]):
            H_next = H_ahead
        errors.extend(loss_to_error(value) for value in known[len(errors) :])
        change = (errors[-2] - errors[-1]) / errors[-2] if len(errors) > 1 and errors[-2] else 0.0
        seconds = time.perf_counter() - started
        logger.debug("iteration %d: loss %.6g (relative change %.3g, %.3fs)", n_iter, known[-1], change, seconds)
        if callback is not None:
            callback(IterationInfo(n_iter, config.max_iter, known[-1], errors[-1], change, seconds))
        fired = _stop(
            step.solver,
            errors,
            violations,
            config.tol,
            config.max_iter,
            extrapolated=schedule is not None,
            fixed_W=step.sweeps_W == 0,
        )
        converged = fired is not None
        if converged and fired < n_iter:  # a lagged test fired on the iterate before: return it
            (W_blocks, H_now), n_iter = previous, fired
            H_next, violations = H_now, violations[:fired]
        previous = None
        if checkpointer is not None and not converged and checkpointer.due(n_iter):
            # the state inline: a name kept for it would hold the saved W's lineage until the next save
            rebased = _save(
                checkpointer,
                _loop_state(n_iter, W_blocks, H_now, H_next, known, violations, V, k, dtype, False, schedule),
                client,
                V,
                k,
                layout,
            )
            W_blocks, H_now, H_next = rebased or (W_blocks, H_now, H_next)
            saved = n_iter
        if converged:
            break

    if checkpointer is not None and saved != n_iter:
        rebased = _save(
            checkpointer,
            _loop_state(n_iter, W_blocks, H_now, H_next, known, violations, V, k, dtype, converged, schedule),
            client,
            V,
            k,
            layout,
        )
        W_blocks, H_now, _ = rebased or (W_blocks, H_now, H_next)
    if n_iter == config.max_iter and config.tol > 0:
        _warn_max_iter(config.max_iter)
    H_final = _whole(compute(H_now)[0])
    if len(known) <= n_iter:  # the returned iterate's loss is not known yet
        graph = solvers.final_pass(
            V_blocks, W_blocks, _shipped(H_final, client), step, V.shape, 0, 0.0, _known_norm(stats, step), now
        )
        W_blocks, _, (loss, *_) = _materialize((graph[0], None, graph[1]), client, now)
        known.append(float(loss))
    W_result = _as_array(W_blocks, V.row_chunks, k, dtype)
    return FitResult(W_result, H_final, n_iter, known, converged, stats.norm, violations)


def _warn_max_iter(max_iter):
    """scikit-learn's warning, worded as scikit-learn words it."""
    warnings.warn(
        f"Maximum number of iterations {max_iter} reached. Increase it to improve convergence.",
        ConvergenceWarning,
        stacklevel=2,
    )
