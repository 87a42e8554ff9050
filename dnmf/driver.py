"""The outer loop: the only place that calls ``persist`` or ``compute``.

``factorize`` runs, on whatever Dask scheduler is active (a ``distributed.Client``
if one is, else Dask's threaded scheduler):

1. one statistics pass over V (validation: negative / non-finite entries; mean and
   ``||V||²``),
2. the initialization (random: no pass; NNDSVD: the randomized SVD's passes),
3. outer iterations, each one graph and one pass over V
   (:func:`dnmf.solvers.iteration`), persisted; only three floats come back,
4. for the beta-divergences, when the returned iterate's loss is not known yet, a
   last pass that evaluates it.

Stopping rule
-------------
``tol`` has scikit-learn's meaning for each solver. Let ``e_t = sqrt(2 L_t)`` be the
``reconstruction_err_`` of iterate t (``L_t`` the data-fit loss, penalties excluded;
``e_0`` at the initial factors).

``solver="cd"`` (HALS)
    Each pass measures scikit-learn's *violation*: the sum of the absolute projected
    gradients met by the first sweep of W and of H (:func:`dnmf.kernels.hals_sweeps`).
    The fit stops after pass t when ``violation_t <= tol * violation_1`` (scikit-learn's
    rule), or when the error has stalled: ``t >= 10`` and
    ``(e_{t-10} - e_t) / e_t < tol``. The second test fires on flat problems (tf-idf
    matrices), where the error stops moving long before the gradient vanishes. With
    extrapolation the violation is measured at the extrapolated point, where it can be
    small while the iterates still move fast: the first test then also waits until the
    error changes by at most ``10 tol`` (relative) per pass, ``|e_{t-1} - e_t| <= 10 tol e_t``.
``solver="mu"``
    Every 10 iterations, the fit stops when the error fell by less than ``tol`` times
    the initial error since the last check: ``(e_{t-10} - e_t) / e_0 < tol``
    (scikit-learn's rule).

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
(:mod:`dnmf.extrapolation`). The first pass is never extrapolated, so a one-iteration
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
from dataclasses import dataclass, field, replace
from typing import Protocol

import dask
import dask.array as da
from dask.delayed import Delayed
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from . import init as initialization
from . import masked, randomized_svd, solvers
from .extrapolation import Schedule
from .kernels import Penalty, StepSpec, aligned
from .losses import loss_to_error
from .storage import Panels, as_panels

__all__ = [
    "CONVERGENCE_WINDOW",
    "TRANSFORM_TOL",
    "Checkpointer",
    "FitResult",
    "IterationInfo",
    "LoopState",
    "acceleration",
    "auto_sweeps",
    "factorize",
    "to_numpy",
    "truncated_svd",
]

logger = logging.getLogger(__name__)

#: Iterations over which the relative decrease of the error is compared with ``tol``.
CONVERGENCE_WINDOW = 10
#: Relative change of W below which a frozen-H solve (``transform``) stops.
TRANSFORM_TOL = 1e-7


@dataclass(frozen=True)
class IterationInfo:
    """What the driver reports after each outer iteration (for progress bars)."""

    iteration: int
    max_iter: int
    loss: float  # newest known loss
    error: float  # sqrt(2 * loss)
    relative_change: float  # relative decrease of the error over the last iteration known
    seconds: float  # wall time of this iteration


@dataclass(frozen=True)
class LoopState:
    """Everything needed to continue a fit exactly where it stopped.

    Attributes
    ----------
    iteration : int
        Outer iterations done.
    W : dask.array.Array of shape (m, k)
        Row-chunked like V (persisted).
    H : ndarray of shape (k, n)
    loss_history : tuple of float
        Known losses of iterates 0..j (see the stopping rule).
    finished : bool
        The stopping rule fired: a resume runs no further iteration.
    extrapolation : list of float or None
        The extrapolation schedule (:meth:`dnmf.extrapolation.Schedule.as_list`) of an
        ``extrapolate=True`` fit, else None.
    H_next : ndarray of shape (k, n) or None
        The H the next pass starts from when it is not ``H`` (extrapolated HALS).
    violations : tuple of float
        The HALS violation of passes 1..iteration (empty for MU).
    """

    iteration: int
    W: da.Array
    H: np.ndarray
    loss_history: tuple
    finished: bool = False
    extrapolation: list | None = None
    H_next: np.ndarray | None = None
    violations: tuple = ()


class Checkpointer(Protocol):
    """What :func:`factorize` asks of a checkpoint writer (see :mod:`dnmf.checkpoint`)."""

    def due(self, iteration: int) -> bool:
        """Whether to save after this iteration."""

    def save(self, state: LoopState) -> LoopState | None:
        """Persist ``state`` durably; may return it with W read back from the durable copy,
        which the driver then continues from on a cluster (see "Lost workers")."""


@dataclass
class FitResult:
    """Outcome of :func:`factorize`.

    Attributes
    ----------
    W : dask.array.Array of shape (m, k)
        Row-chunked like V, persisted.
    H : ndarray of shape (k, n)
    n_iter : int
        Outer iterations run (for a frozen-H solve: the most updates any panel made).
    loss_history : list of float
        ``loss_history[t]`` is the loss of iterate t (index 0: the initial factors).
    converged : bool
        The stopping rule fired.
    norm_V : float
        ``||V||_F`` (from the statistics pass), for relative errors.
    violations : list of float
        HALS: the violation of passes 1..n_iter (see the stopping rule); MU: empty.
    """

    W: da.Array
    H: np.ndarray
    n_iter: int
    loss_history: list = field(default_factory=list)
    converged: bool = False
    norm_V: float = float("nan")
    violations: list = field(default_factory=list)

    @property
    def loss(self):
        """Loss of the returned factors."""
        return self.loss_history[-1]

    @property
    def reconstruction_err(self):
        """``sqrt(2 * loss)``: the Frobenius norm of V - WH for the Frobenius loss."""
        return loss_to_error(self.loss)


#: Values of Dask's ``scheduler`` setting that ask for a local scheduler (no cluster).
LOCAL_SCHEDULERS = ("threads", "threading", "sync", "synchronous", "single-threaded")


def _client():
    """The active ``distributed.Client``, or None (threaded scheduler).

    A local scheduler set in Dask's config wins over a default client, as it does for
    ``dask.compute`` (``dnmf.rank`` runs whole fits inside worker tasks that way)."""
    if dask.config.get("scheduler", None) in LOCAL_SCHEDULERS:
        return None
    try:
        from distributed import default_client

        return default_client()
    except (ImportError, ValueError):
        return None


def _as_array(blocks, row_chunks, k, dtype):
    """One Dask array from W's blocks (persisted Delayed or in-memory arrays)."""
    pieces = [
        da.from_delayed(block, shape=(rows, k), dtype=dtype)
        if isinstance(block, Delayed)
        else da.from_array(block, chunks=block.shape, name=False)
        for block, rows in zip(blocks, row_chunks)
    ]
    return pieces[0] if len(pieces) == 1 else da.concatenate(pieces, axis=0)


def _check_stats(stats, beta):
    minimum, n_nonfinite, _, _, n_zero, _ = stats
    if n_nonfinite:
        raise ValueError(f"Input contains NaN or infinity ({int(n_nonfinite)} entries)")
    if minimum < 0:
        raise ValueError(f"Negative values in data passed to NMF (input minimum is {float(minimum)!r})")
    if beta <= 0 and n_zero:
        raise ValueError(
            "When beta_loss <= 0 and X contains zeros, the solver may diverge. Please add small values to X, "
            f"or use a positive beta_loss (X has {int(n_zero)} zeros; beta_loss={beta!r})."
        )


def _compute(*graphs):
    """``dask.compute``, with every array of the results aligned (see
    :func:`dnmf.kernels.aligned`): what arrives from a worker may sit at any byte offset,
    and the driver's own products with it would then round another way."""
    return aligned(dask.compute(*graphs))


def _materialize(graph, client):
    """Run one iteration's graph: ``(W_blocks, H, small)`` with W kept where it was computed.

    On a cluster W and H are persisted there and only the small result travels; on the
    local threaded scheduler one ``compute`` hands back the in-memory blocks directly.
    """
    W_blocks, H, small = graph
    if client is None:
        return _compute(W_blocks, H, small)
    W_blocks, H, small = dask.persist(W_blocks, H, small)
    return W_blocks, H, _compute(small)[0]


def to_numpy(W):
    """Gather a (persisted) Dask array into one (aligned) NumPy array."""
    return aligned(np.asarray(W.compute()))


def _randomized_svd(V_blocks, shape, dtype, k, random_state, squared_norm, client):
    """The truncated SVD of V (:mod:`dnmf.randomized_svd`), one pass over V per power
    iteration, until the subspace has converged or scikit-learn's number of them is done.

    Returns
    -------
    Y_blocks : list
        ``Y_i`` of the last pass, one per panel (persisted on a cluster).
    T, S, Vt : ndarray
        ``U_i = Y_i T``; see :func:`dnmf.randomized_svd.finish`.
    """
    width = randomized_svd.sketch_width(k, shape)
    Z = randomized_svd.start_basis(shape[1], width, check_random_state(random_state))
    scale = 1.0 / np.sqrt(squared_norm) if squared_norm > 0 else 1.0
    sigma = None
    for _ in range(randomized_svd.power_iterations(k, shape) + 1):
        Y_blocks, sketch = solvers.sketch_pass(V_blocks, (Z * scale).astype(dtype))
        if client is None:
            Y_blocks, (P, R) = _compute(Y_blocks, sketch)
        else:
            Y_blocks, sketch = dask.persist(Y_blocks, sketch)
            P, R = _compute(sketch)[0]
        Z, sigma, previous = (*randomized_svd.next_basis(P), sigma)
        if randomized_svd.converged(sigma, previous, k, dtype):
            break
    return (Y_blocks, *randomized_svd.finish(P, R, k, dtype))


def truncated_svd(V, n_components, random_state=None, panel_rows=None):
    """The truncated SVD ``V ≈ U diag(S) Vt`` that NNDSVD starts from, out of core.

    scikit-learn's ``randomized_svd`` (same oversampling, same number of power iterations,
    normalized between them) from one pass over V per power iteration
    (:mod:`dnmf.randomized_svd`), plus the statistics pass for ``||V||``.

    Parameters
    ----------
    V : Panels or anything :func:`dnmf.storage.as_panels` accepts
    n_components : int
    random_state : int, RandomState or None

    Returns
    -------
    U : dask.array.Array of shape (m, k), row-chunked like V
    S : ndarray of shape (k,)
    Vt : ndarray of shape (k, n)
    """
    if not isinstance(V, Panels):
        V = as_panels(V, panel_rows=panel_rows)
    blocks = V.blocks()
    with solvers.blas_threads(V.n_panels):
        stats = np.asarray(_compute(solvers.stats_pass(blocks))[0])
        _check_stats(stats, 2.0)
        Y_blocks, T, S, Vt = _randomized_svd(blocks, V.shape, V.dtype, n_components, random_state, stats[3], _client())
    U = da.concatenate([
        da.from_delayed(dask.delayed(np.matmul, pure=True)(y, T), shape=(rows, n_components), dtype=np.float64)
        for y, rows in zip(Y_blocks, V.row_chunks)
    ])
    return U, S, Vt


def _initial_factors(V, V_blocks, k, init, W, H, stats, random_state, update_H, client, missing=None):
    shape, dtype, rows = V.shape, V.dtype, V.row_chunks
    mean = stats[2] / stats[5]  # of the observed entries with missing values
    if not update_H:
        return None, np.asarray(H)
    method = initialization.choose_init(init, k, shape)
    if method == "custom":
        W0, H0 = initialization.custom_init(W, H, rows)
    elif method == "random":
        W0, H0 = initialization.random_init(shape, k, dtype, mean, random_state, rows)
    else:
        if missing == "nan":  # the SVD of V with its missing entries at the mean
            V_blocks = [dask.delayed(masked.fill_missing, pure=True)(v, dtype.type(mean)) for v in V_blocks]
        squared_norm = stats[3] + (stats[6] * mean**2 if missing == "nan" else 0.0)
        Y_blocks, T, S, Vt = _randomized_svd(V_blocks, shape, dtype, k, random_state, squared_norm, client)
        norms = _compute(initialization.svd_part_norms(Y_blocks, T))[0]
        W0, H0 = initialization.nndsvd_init(Y_blocks, T, S, Vt, norms, method, mean, random_state, rows, dtype)
    W0, H0 = dask.persist(W0, H0)
    return W0, np.asarray(_compute(H0)[0])


def _loop_state(iteration, W_blocks, H, H_next, known, violations, V, k, dtype, finished, schedule):
    """A LoopState of the current (persisted) factors; fetches only H (and H_next)."""
    H_next = None if H_next is H else H_next
    H, H_next = (None if x is None else np.asarray(x) for x in _compute(H, H_next))
    W = _as_array(W_blocks, V.row_chunks, k, dtype)
    return LoopState(
        iteration, W, H, tuple(known), finished, schedule.as_list() if schedule else None, H_next, tuple(violations)
    )


def _save(checkpointer, state, client, V, k):
    """Save ``state``; on a cluster, continue from the durable copy the checkpointer returns
    (cuts the lineage Dask keeps; see "Lost workers"). Returns ``(W_blocks, H, H_next)`` to go
    on with, or None to keep the current ones."""
    saved = checkpointer.save(state)
    if client is None or not isinstance(saved, LoopState):
        return None
    W = saved.W.rechunk((V.row_chunks, k))
    small = [dask.delayed(np.asarray(x), pure=True) for x in (saved.H, saved.H_next) if x is not None]
    W, small = dask.persist(W, small)
    # Unoptimized: each block's graph holds the futures themselves (an optimized one only
    # names the keys, which are released as soon as ``W`` goes out of scope).
    return list(W.to_delayed(optimize_graph=False).ravel()), small[0], small[-1]


def _stalled(errors, tol, relative_to):
    """``(e_{j-10} - e_j) / relative_to < tol`` on the known errors e_0..e_j (False before 10)."""
    j = len(errors) - 1
    if j < CONVERGENCE_WINDOW:
        return False
    return relative_to == 0 or (errors[j - CONVERGENCE_WINDOW] - errors[j]) / relative_to < tol


#: With extrapolation, the violation test also waits until the error moves by less than
#: this many ``tol`` (relative) per pass (see the stopping rule).
SETTLED = 10


def _stop(solver, errors, violations, tol, extrapolated=False):
    """The stopping rule of the module docstring.

    Returns
    -------
    None, or the iterate the rule fired on: ``len(errors) - 1`` (the newest one whose loss
    is known) for the tests on the errors, ``len(violations)`` (the newest one) for the
    test on the violation.
    """
    j = len(errors) - 1
    if errors and errors[-1] == 0:
        return j
    if tol <= 0:
        return None
    if solver == "cd":
        small = violations and (violations[0] == 0 or violations[-1] <= tol * violations[0])
        if small and extrapolated and j >= 1:
            small = abs(errors[-2] - errors[-1]) <= SETTLED * tol * errors[-1]
        if small:
            return len(violations)
        return j if _stalled(errors, tol, errors[-1]) else None
    if j > 0 and j % CONVERGENCE_WINDOW == 0 and _stalled(errors, tol, errors[0]):
        return j
    return None


#: ``"auto"`` sweeps: the share of a pass's product time spent on sweeps (Gillis &
#: Glineur's alpha).
SWEEP_SHARE = 0.5
#: ``"auto"`` sweeps: the most sweeps of a factor per pass. More did not reach a given
#: error in fewer passes on any benchmark matrix (``scripts/bench_sklearn.py``).
MAX_AUTO_SWEEPS = 10
#: Speed of a sweep's flops against a product's (scikit-learn's compiled sweep against
#: BLAS and SciPy's sparse products, chosen by ``scripts/bench_sklearn.py``'s matrices).
SWEEP_TO_PRODUCT_SPEED = 0.2
#: ``"auto"`` accelerates matrices with at least this many stored entries. Below, a pass
#: costs about a millisecond and plain HALS is kept: scikit-learn's iterates, which agree
#: between float32 and float64 to rounding (extrapolated ones drift apart by ~1e-4).
AUTO_MIN_ENTRIES = 100_000


def auto_sweeps(shape, n_components, entries):
    """HALS sweeps of W and of H per pass for ``sweeps="auto"`` on a large matrix.

    Gillis & Glineur (2012), in time rather than flops: a pass's two products with V take
    ``4 entries k`` flops (``entries`` = V's stored entries), a sweep of W ``2 m k²`` and
    of H ``2 n k²``, at the relative speed :data:`SWEEP_TO_PRODUCT_SPEED`. With
    ``rho`` the ratio of the two times, each factor gets ``1 + floor(SWEEP_SHARE · rho)``
    sweeps, at most :data:`MAX_AUTO_SWEEPS`.

    Returns
    -------
    sweeps_W, sweeps_H : int
    """
    m, n = shape
    k = n_components
    rho_W = 2 * SWEEP_TO_PRODUCT_SPEED * entries / (m * k)
    rho_H = 2 * SWEEP_TO_PRODUCT_SPEED * entries / (n * k)
    return tuple(int(min(MAX_AUTO_SWEEPS, 1 + SWEEP_SHARE * rho)) for rho in (rho_W, rho_H))


def acceleration(solver, missing, shape, n_components, entries, sweeps="auto", extrapolate="auto"):
    """What ``"auto"`` resolves to: ``(sweeps_W, sweeps_H, extrapolate)``.

    HALS without missing values on a matrix of at least :data:`AUTO_MIN_ENTRIES` stored
    entries gets :func:`auto_sweeps` and extrapolation; everything else one sweep (or MU
    update) per factor and pass, no extrapolation. Values other than ``"auto"`` are kept.
    """
    accelerated = solver == "cd" and not missing and entries >= AUTO_MIN_ENTRIES
    if sweeps == "auto":
        sweeps_W, sweeps_H = auto_sweeps(shape, n_components, entries) if accelerated else (1, 1)
    else:
        sweeps_W = sweeps_H = int(sweeps)
    return sweeps_W, sweeps_H, accelerated if isinstance(extrapolate, str) else bool(extrapolate)


def factorize(
    V,
    n_components,
    *,
    solver="cd",
    beta=2.0,
    init=None,
    W=None,
    H=None,
    update_H=True,
    max_iter=200,
    tol=1e-4,
    penalty_W=Penalty(),
    penalty_H=Penalty(),
    sweeps="auto",
    random_state=None,
    callback=None,
    panel_rows=None,
    start=None,
    checkpointer=None,
    missing=None,
    extrapolate="auto",
):
    """Factorize V ≈ W H on the active Dask scheduler (parameters already validated).

    Parameters
    ----------
    V : Panels or anything :func:`dnmf.storage.as_panels` accepts
    n_components : int
    solver : {"cd", "mu"}
    beta : float
        2 (Frobenius), 1 (KL), 0 (IS) or any float for ``"mu"``.
    init : str or None
        See :func:`dnmf.init.choose_init`.
    W, H : array-like, optional
        Custom initial factors (``init="custom"``); with ``update_H=False``, H is the
        fixed dictionary and W is solved for.
    update_H : bool
        False solves W for a fixed H in one pass (``transform``).
    max_iter, tol : int, float
        See the stopping rule in the module docstring. With ``update_H=False``,
        ``max_iter`` bounds the updates of each panel's W and ``tol`` stops them as
        scikit-learn's ``transform`` does (see :func:`dnmf.kernels.transform_panel`).
    penalty_W, penalty_H : Penalty
        Scaled L1/L2 penalties.
    sweeps : int or "auto"
        HALS sweeps (or MU updates) of each factor per pass over V; ``"auto"``: see
        :func:`acceleration`.
    random_state : int, RandomState or None
    callback : callable, optional
        Called with an :class:`IterationInfo` after each iteration.
    panel_rows : int, optional
        Rows per panel (see :func:`dnmf.storage.as_panels`).
    start : LoopState, optional
        Continue from this state instead of initializing (resume). Same V, chunking
        and parameters give the iterates of a run that was never interrupted.
    checkpointer : Checkpointer, optional
        Asked after every iteration whether to save the state, and given the final one.
    missing : {None, "nan", "absent"}
        Which entries are unobserved (see :mod:`dnmf.masked`): they are left out of the
        loss and the updates. ``"nan"`` with no NaN in V runs the unmasked solver.
    extrapolate : bool or "auto"
        Extrapolated HALS (:mod:`dnmf.extrapolation`; :func:`dnmf.params.validate_params`
        allows True with ``solver="cd"`` and no missing values only); ``"auto"``: see
        :func:`acceleration`.

    Returns
    -------
    FitResult
    """
    if not isinstance(V, Panels):
        V = as_panels(V, panel_rows=panel_rows)
    client = _client()
    with _local_tasks(client, V), solvers.blas_threads(V.n_panels):
        return _factorize(
            V, client, n_components, solver, beta, init, W, H, update_H, max_iter, tol, penalty_W, penalty_H,
            sweeps, random_state, callback, start, checkpointer, missing, extrapolate,
        )


def _local_tasks(client, V):
    """Dask's threads run in-memory dense panels one at a time, with BLAS on every core:
    their products are bound by memory bandwidth, which parallel tasks only share (a pass
    over a 256 MB float64 matrix, k = 25: 63 ms against 96 ms with two tasks at once).
    Sparse products (single-threaded in SciPy) and stored inputs (decompression) keep
    one task per core."""
    if client is None and V.in_memory and not V.sparse:
        return dask.config.set(num_workers=1)
    return contextlib.nullcontext()


def _factorize(
    V, client, n_components, solver, beta, init, W, H, update_H, max_iter, tol, penalty_W, penalty_H, sweeps,
    random_state, callback, start, checkpointer, missing, extrapolate,
):
    if client is not None and V.in_memory:  # ship in-memory data once, aligned where it lands
        V = Panels(V.array.map_blocks(aligned, dtype=V.dtype, meta=V.array._meta).persist(), V.sparse, V.in_memory)
    V_blocks = V.blocks()
    size = V.shape[0] * V.shape[1]
    if missing is not None:
        masked.check_input_kind(V.sparse, missing)
    stats = np.asarray(_compute(solvers.stats_pass(V_blocks, missing))[0])
    if missing is None:
        _check_stats(stats, beta)
    else:
        masked.check_stats(stats, beta, missing)
        if missing == "nan" and stats[6] == 0:
            logger.info("no NaN in V: running the unmasked solver")
            missing = None
    norm_V = float(np.sqrt(stats[3]))
    squared_norm = None if missing else float(stats[3])  # the passes need not sum it again
    if start is None:
        W0, H0 = _initial_factors(V, V_blocks, n_components, init, W, H, stats, random_state, update_H, client, missing)
    else:
        W0, H0 = start.W.rechunk((V.row_chunks, start.W.shape[1])).persist(), np.asarray(start.H)
    k, dtype = H0.shape[0], V.dtype
    entries = size - stats[4] if V.sparse else size  # stored (non-zero) entries: what a pass costs
    sweeps_W, sweeps_H, extrapolate = acceleration(solver, missing, V.shape, k, entries, sweeps, extrapolate)
    step = StepSpec(solver, float(beta), penalty_W, penalty_H, sweeps_W, sweeps_H, update_H, missing)
    if step.missing == "nan":  # find the NaN of in-memory panels once, of stored ones at each read
        V_blocks = solvers.prepared_panels(V_blocks, step.missing)
        if V.in_memory:
            V_blocks = list(dask.persist(*V_blocks))

    if not update_H:
        panel_tol = TRANSFORM_TOL if step.missing else tol
        graph = solvers.final_pass(V_blocks, None, H0, step, V.shape, max_iter, panel_tol, squared_norm)
        W_blocks, _, (loss, n_done) = _materialize((*graph[:1], None, graph[1]), client)
        n_done = int(n_done)
        if n_done == max_iter and tol > 0:
            _warn_max_iter(max_iter)
        return FitResult(_as_array(W_blocks, V.row_chunks, k, dtype), H0, n_done, [loss], n_done < max_iter, norm_V)

    lagged = step.beta != 2 or bool(step.missing)  # the new iterate's loss comes from the next pass
    W_blocks = list(W0.to_delayed().ravel())
    H_now = H_next = H0  # the iterate's H; the H the next pass starts from (extrapolated HALS: may differ)
    schedule = Schedule() if extrapolate else None
    if start is not None and extrapolate and start.extrapolation:
        schedule = Schedule.from_list(start.extrapolation)
        H_next = H0 if start.H_next is None else np.asarray(start.H_next)
    known = [] if start is None else list(start.loss_history)  # loss of iterates 0..j
    violations = [] if start is None else list(start.violations)  # of passes 1..t
    first = 1 if start is None else start.iteration + 1
    converged = start is not None and start.finished
    n_iter = saved = first - 1
    previous = None  # the iterate before the newest: returned when a lagged test fires on it
    for n_iter in range(first, max_iter + 1 if not converged else first):
        started = time.perf_counter()
        this_step = replace(step, extrapolation=schedule.beta if n_iter > 1 else 0.0) if schedule else step
        graph = solvers.iteration(V_blocks, W_blocks, H_next, this_step, V.shape, squared_norm)
        previous = (W_blocks, H_now)
        W_blocks, (H_now, H_ahead), (before, after, violation) = _materialize(graph, client)
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
        errors = [loss_to_error(value) for value in known]
        change = (errors[-2] - errors[-1]) / errors[-2] if len(errors) > 1 and errors[-2] else 0.0
        seconds = time.perf_counter() - started
        logger.debug("iteration %d: loss %.6g (relative change %.3g, %.3fs)", n_iter, known[-1], change, seconds)
        if callback is not None:
            callback(IterationInfo(n_iter, max_iter, known[-1], errors[-1], change, seconds))
        fired = _stop(step.solver, errors, violations, tol, extrapolated=schedule is not None)
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
                client, V, k,
            )
            W_blocks, H_now, H_next = rebased or (W_blocks, H_now, H_next)
            saved = n_iter
        if converged:
            break

    if checkpointer is not None and saved != n_iter:
        rebased = _save(
            checkpointer,
            _loop_state(n_iter, W_blocks, H_now, H_next, known, violations, V, k, dtype, converged, schedule),
            client, V, k,
        )
        W_blocks, H_now, _ = rebased or (W_blocks, H_now, H_next)
    if n_iter == max_iter and tol > 0:
        _warn_max_iter(max_iter)
    H_final = np.asarray(_compute(H_now)[0])
    if len(known) <= n_iter:  # the returned iterate's loss is not known yet
        graph = solvers.final_pass(V_blocks, W_blocks, H_final, step, V.shape, 0, 0.0, squared_norm)
        W_blocks, _, (loss, _) = _materialize((graph[0], None, graph[1]), client)
        known.append(float(loss))
    W_result = _as_array(W_blocks, V.row_chunks, k, dtype)
    return FitResult(W_result, H_final, n_iter, known, converged, norm_V, violations)


def _warn_max_iter(max_iter):
    """scikit-learn's warning, worded as scikit-learn words it."""
    warnings.warn(
        f"Maximum number of iterations {max_iter} reached. Increase it to improve convergence.",
        ConvergenceWarning,
    )
