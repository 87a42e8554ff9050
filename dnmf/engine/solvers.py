"""The Dask graphs of one pass over V; the only module that builds solver graphs.

One outer iteration is one graph::

    panel i:  (V_i, W_i, H) ──panel_step──> W_i', partial_i        (one task per panel)
    partials ──tree of sum_partials (fan-in TREE_FAN_IN)──> total
    (H, total) ──finish_step──> H', [loss of (W, H), loss of (W', H')]
    (H', H) ──extrapolate──> H' moved on                         (extrapolated HALS only)

V_i is read by exactly one task per pass (a stored panel inside that task: see
:class:`~dnmf.engine.panels.PanelRead`). W stays as one block per panel; H and the
k x k Grams are the only things every panel task receives. Nothing here computes:
the driver persists what these functions return.
"""

from __future__ import annotations

from functools import partial

import dask
import numpy as np
from dask.system import CPU_COUNT

from ..numerics import counts, kernels, masked, masked_hals, randomized_svd, spectra
from ..numerics.losses import beta_loss, frobenius_losses, member_slices
from .panels import PanelRead
from .process_setting import SharedSetting

__all__ = [
    "TREE_FAN_IN",
    "Task",
    "blas_threads",
    "column_blocks",
    "count_sums_pass",
    "filled_panels",
    "final_pass",
    "iteration",
    "normalized_usage_blocks",
    "prepared_panels",
    "sketch_pass",
    "stats_pass",
    "usage_products_pass",
]

#: Partials added per node of the tree reduction.
TREE_FAN_IN = 8


class _BlasThreads:
    """BLAS's thread count while a fit's tasks run: set, so that it is always the same.

    The rounding of a BLAS product depends on how many threads share it, so a fit whose
    products ran on 1 thread here and 2 there (an ``OMP_NUM_THREADS`` in one shell and not
    in another, a resumed run in a worker that a nanny started single-threaded) would not
    repeat itself bit for bit. Every task of a fit, and the driver's own small products,
    run with ``cores // tasks at once`` BLAS threads, where tasks at once is
    ``min(panels, cores, tasks Dask's scheduler runs at once)`` (cores as Dask counts them,
    cgroup limits included; one task at once on the synchronous scheduler): 1 when the panels keep every core busy (Dask's threads and BLAS's would
    otherwise fight: on a busy 2-core machine ``Wᵀ W`` took 37 ms with 2 BLAS threads
    against 2 ms with one), every core when one task runs at a time (the driver runs
    in-memory dense panels that way). The setting is process-wide: a
    :class:`~dnmf.engine.process_setting.SharedSetting` applies it with the first holder (the
    driver holds it for a whole fit) and restores it after the last.

    threadpoolctl (>= 3.6) lets only one "controlling" thread change OpenBLAS's shared
    pool and silently ignores the others, so both changes are made with that role
    explicitly cleared before and after.
    """

    def __init__(self):
        self._setting = SharedSetting()
        self._blas = None

    def _controller(self):
        if self._blas is None:
            from threadpoolctl import ThreadpoolController

            self._blas = ThreadpoolController().select(user_api="blas")
        return self._blas

    @staticmethod
    def _as_any_thread(change):
        """Run ``change`` (a threadpoolctl call) whatever thread controlled OpenBLAS before."""
        import threadpoolctl

        clear = getattr(getattr(threadpoolctl, "OpenBLASController", None), "clear_controlling_thread", None)
        if clear is None:  # threadpoolctl without the controlling-thread rule
            return change()
        clear(force=True)
        try:
            return change()
        finally:
            clear(force=True)

    def _limit(self, threads):
        blas = self._controller()
        if all(lib.num_threads == threads for lib in blas.lib_controllers):
            return None
        limiter = self._as_any_thread(lambda: blas.limit(limits=threads))
        return lambda: self._as_any_thread(limiter.restore_original_limits)

    def limited(self, n_panels):
        """Hold the thread count of a fit over ``n_panels`` panels (a context manager)."""
        at_once = min(n_panels, CPU_COUNT, _tasks_at_once())
        threads = max(1, CPU_COUNT // max(1, at_once))
        return self._setting.held(lambda: self._limit(threads))


def blas_threads(n_panels):
    """Context manager: BLAS at the thread count of a fit over ``n_panels`` panels (see
    :class:`_BlasThreads`); the driver holds it around a fit."""
    return _BLAS_THREADS.limited(n_panels)


def _tasks_at_once():
    """How many tasks Dask's configured local scheduler runs at once: one on the
    synchronous scheduler, ``num_workers`` (default: every core) on a pool."""
    if dask.config.get("scheduler", None) in ("sync", "synchronous", "single-threaded"):
        return 1
    return dask.config.get("num_workers", None) or CPU_COUNT


_BLAS_THREADS = _BlasThreads()


class Task:
    """A kernel as a task of a graph over ``n_panels`` panels: its panels read here
    (:class:`~dnmf.engine.panels.PanelRead`), its array inputs aligned
    (:func:`dnmf.numerics.kernels.aligned`), BLAS under :class:`_BlasThreads`' limit.

    Every task of one graph gets the same limit (it depends on the graph's panel count
    only), so a BLAS call's thread count, and with it its rounding, never depends on which
    tasks happen to run at the same time. A module-level class (not a closure) so that it
    pickles for distributed workers.
    """

    def __init__(self, function, n_panels):
        self.function = function
        self.n_panels = n_panels
        self.__name__ = getattr(getattr(function, "func", function), "__name__", "panel")  # task names

    def __call__(self, *args):
        with _BLAS_THREADS.limited(self.n_panels):
            args = [arg() if isinstance(arg, PanelRead) else arg for arg in args]
            return self.function(*kernels.aligned(args))


def _task(function, *args, nout=None, now=False):
    """``function(*args)`` as a task of a graph; with ``now``, called at once in this thread
    (every input is an in-memory value here: the same call, without a graph or a scheduler)."""
    if now:
        return function(*args)
    return dask.delayed(function, nout=nout)(*args)


def _shared(array, now=False):
    """An ndarray that every task of a graph receives, as one key of it (as it is with ``now``)."""
    return dask.delayed(array, pure=True) if isinstance(array, np.ndarray) and not now else array


def _tree_sum(parts, combine, n_panels, now=False):
    combine = Task(combine, n_panels)
    while len(parts) > 1:
        parts = [
            combine(*parts[i : i + TREE_FAN_IN])
            if now
            else dask.delayed(combine, pure=True)(*parts[i : i + TREE_FAN_IN])
            for i in range(0, len(parts), TREE_FAN_IN)
        ]
    return parts[0]


def _known_norm(total, squared_norm, beta):
    """``total`` with ``||V||²`` put in its first loss term when the caller knows it
    (Frobenius panels then skipped it, see :func:`iteration`)."""
    if squared_norm is None or beta != 2:
        return total
    return total._replace(loss_terms=np.array([squared_norm, *total.loss_terms[1:]], dtype=np.float64))


def member_losses(total, H, beta, size, members=()):
    """The loss of each member (one for a single factorization) of the iterate whose
    pieces ``total`` (a PanelPartial) holds, with ``H``."""
    if beta == 2:
        return frobenius_losses(total.loss_terms, total.gram_before, H @ H.T, members)
    return [beta_loss(terms, beta, size) for terms in np.atleast_2d(total.loss_terms)]


def loss_of(total, H, beta, size, members=()):
    """The loss of the iterate whose pieces ``total`` (a PanelPartial) holds, with ``H``
    (of an ensemble: the sum of its members' losses)."""
    return sum(member_losses(total, H, beta, size, members))


def h_columns(H, total, start, stop, step):
    """The H-step of columns ``start:stop`` of H (one task of the H-step's column blocks).

    Returns
    -------
    H : ndarray of shape (k, stop - start)
    pieces : tuple
        ``(violation, <WᵀV, H>, H Hᵀ)`` of the block: the HALS violation and this block's
        share of the new iterate's Frobenius loss (both 0 / None when not needed).
    """
    kernels_of = _masked_kernels(step) if step.missing else kernels
    H_block, violation = kernels_of.update_h(H[:, start:stop], total.columns(start, stop, step.beta), step)
    if step.beta != 2 or step.missing:
        return H_block, (violation, 0.0, None)
    numerator, H64 = total.h_numerator[:, start:stop].astype(np.float64), H_block.astype(np.float64)
    if len(step.members) > 1:
        cross = np.array([np.vdot(numerator[a:b], H64[a:b]) for a, b in member_slices(step.members)])
    else:
        cross = float(np.vdot(numerator, H64))
    return H_block, (violation, cross, H_block @ H_block.T)


def finish_step(H, total, blocks, step, size, squared_norm=None):
    """The new H from its column blocks, and the iteration's report (one small task).

    ``blocks`` are :func:`h_columns` results in column order (empty when H is frozen);
    ``squared_norm`` is ``||V||²`` when the panels were told to skip it.

    Returns
    -------
    H : ndarray of shape (k, n)
        Updated (or the same, if ``step.update_H`` is False).
    report : ndarray of shape (3,)
        Loss of the iterate the pass started from; loss of the new iterate when it is
        free (Frobenius), else NaN; the pass's HALS violation (W's sweeps and H's; 0 for
        MU), scikit-learn's measure of stationarity.
    """
    if step.missing:  # the new iterate's loss needs the new H against V: the next pass reports it
        before = masked.loss_of(total)
    else:
        total = _known_norm(total, squared_norm, step.beta)
        before = loss_of(total, H, step.beta, size, step.members)
    if not step.update_H:
        return H, np.array([before, np.nan, total.violation])
    H_new = np.concatenate([H_block for H_block, _ in blocks], axis=1)
    violation = total.violation + sum(pieces[0] for _, pieces in blocks)
    after = np.nan
    if step.beta == 2 and not step.missing:
        cross = sum(pieces[1] for _, pieces in blocks)
        gram = sum(pieces[2] for _, pieces in blocks)
        after = sum(
            frobenius_losses([total.loss_terms[0], *np.atleast_1d(cross)], total.h_denominator, gram, step.members)
        )
    return H_new, np.array([before, after, violation])


#: The H-step runs in column blocks of at least this many columns, one per core.
MIN_H_BLOCK_COLUMNS = 1024


def column_blocks(n_columns):
    """``[(start, stop)]``: H's columns split for the H-step's tasks, one block per core
    (the H-step of each column is independent: any split gives the same numbers)."""
    count = max(1, min(CPU_COUNT, n_columns // MIN_H_BLOCK_COLUMNS))
    edges = np.linspace(0, n_columns, count + 1).astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def _masked_kernels(step):
    """The kernels for missing values: masked HALS for ``solver="cd"``, weighted MU otherwise."""
    return masked_hals if step.solver == "cd" else masked


def _panel_kernel(kernel, step, squared_norm, **options):
    """``kernel`` with its options; Frobenius panels skip ``||V_i||²`` when it is known."""
    if squared_norm is not None and step.beta == 2 and not step.missing:
        options["norm"] = False
    return partial(kernel, step=step, **options)


def iteration(V_blocks, W_blocks, H, step, shape, squared_norm=None, now=False):
    """Graph of one outer iteration (with ``now``: the iteration itself, see below).

    Parameters
    ----------
    V_blocks, W_blocks : list of Delayed
        One per row panel.
    H : ndarray of shape (k, n), or a Delayed or Future of one
    step : kernels.StepSpec
    shape : tuple of int
        ``(m, n)``.
    squared_norm : float, optional
        ``||V||²`` if known (the statistics pass has it): the panels then skip summing
        their squares, which is otherwise most of the per-pass cost beyond the two
        products (about 6% of a float32 pass).
    now : bool
        Run the tasks at once, in graph order, in this thread, and return their values
        (Delayed below become ndarrays): for panels, W and H that are all values in this
        process, where a scheduler would run the tasks one at a time anyway. A small
        matrix's pass costs about a millisecond, as much as building and scheduling its
        graph would; the tasks, and so the numbers, are the same.

    Returns
    -------
    W_blocks : list of Delayed
    H : list of Delayed
        ``[H_new, H_ahead]``: the updated H and, with ``step.extrapolation``, the
        extrapolated one that may start the next pass (see :mod:`dnmf.numerics.extrapolation`;
        else None).
    report : Delayed ndarray of shape (3,)
        See :func:`finish_step`.
    """
    kernel = _masked_kernels(step).panel_step if step.missing else kernels.panel_step
    panel = Task(_panel_kernel(kernel, step, squared_norm), len(V_blocks))
    H = _shared(H, now)
    outputs = [_task(panel, v, w, H, nout=2, now=now) for v, w in zip(V_blocks, W_blocks)]
    total = _tree_sum([out[1] for out in outputs], kernels.sum_partials, len(V_blocks), now)
    blocks = []
    if step.update_H:
        columns = Task(partial(h_columns, step=step), len(V_blocks))
        blocks = [_task(columns, H, total, start, stop, nout=2, now=now) for start, stop in column_blocks(shape[1])]
    finish = Task(partial(finish_step, step=step, size=shape[0] * shape[1], squared_norm=squared_norm), len(V_blocks))
    H_new, losses = _task(finish, H, total, blocks, nout=2, now=now)
    if step.extrapolation:
        H_ahead = _task(Task(partial(kernels.extrapolate, beta=step.extrapolation), len(V_blocks)), H_new, H, now=now)
    else:
        H_ahead = None
    return [out[0] for out in outputs], [H_new, H_ahead], losses


def _final_report(H, total, n_done, beta, size, missing=None, squared_norm=None, members=()):
    """``[loss, most updates of a panel, loss of each member]``."""
    if missing:
        losses = [masked.loss_of(total)]
    else:
        losses = member_losses(_known_norm(total, squared_norm, beta), H, beta, size, members)
    return np.array([sum(losses), max(n_done), *losses])


def final_pass(V_blocks, W_blocks, H, step, shape, max_inner, tol, squared_norm=None, now=False):
    """Graph of a pass that solves W with H frozen, and reports its loss.

    ``W_blocks=None`` starts from :func:`dnmf.numerics.kernels.transform_start` (``transform``);
    ``max_inner=0`` only evaluates the loss of ``(W, H)``; ``H``, ``squared_norm`` and ``now``
    as in :func:`iteration`.

    Returns
    -------
    W_blocks : list of Delayed
    report : Delayed ndarray ``[loss, most updates made in a panel]``
    """
    W_blocks = W_blocks if W_blocks is not None else [None] * len(V_blocks)
    H = _shared(H, now)
    kernel = _masked_kernels(step).transform_panel if step.missing else kernels.transform_panel
    panel = Task(_panel_kernel(kernel, step, squared_norm, max_inner=max_inner, tol=tol), len(V_blocks))
    outputs = [_task(panel, v, w, H, nout=3, now=now) for v, w in zip(V_blocks, W_blocks)]
    total = _tree_sum([out[1] for out in outputs], kernels.sum_partials, len(V_blocks), now)
    n_done = [out[2] for out in outputs]
    report_of = partial(
        _final_report,
        beta=step.beta,
        size=shape[0] * shape[1],
        missing=step.missing,
        squared_norm=squared_norm,
        members=step.members,
    )
    report = _task(Task(report_of, len(V_blocks)), H, total, n_done, now=now)
    return [out[0] for out in outputs], report


def _each_panel(function, V_blocks):
    """``function(V_i)`` for every panel: for a panel read in its task (a PanelRead), as
    part of that read; else as a task of its own."""
    task = Task(function, len(V_blocks))
    return [PanelRead(function, v) if isinstance(v, PanelRead) else dask.delayed(task, pure=True)(v) for v in V_blocks]


def filled_panels(V_blocks, value):
    """Dense panels with their NaN at ``value`` (the SVD of V with missing values), see
    :func:`dnmf.numerics.masked.fill_missing`."""
    return _each_panel(partial(masked.fill_missing, value=value), V_blocks)


def prepared_panels(V_blocks, missing):
    """The panels made ready for the masked kernels (:func:`dnmf.numerics.masked.prepare_panel`);
    the driver persists them for in-memory input."""
    return _each_panel(partial(masked.prepare_panel, missing=missing), V_blocks)


def _add_stats(*stats):
    total = np.array(stats[0], dtype=np.float64)
    for item in stats[1:]:
        total[0] = min(total[0], item[0])
        total[1:] += item[1:]
    return total


def stats_pass(V_blocks, missing=None):
    """Graph of the input-statistics pass: ``[min, n_nonfinite, sum, sum_sq, n_zero, size]``
    (with ``missing``: :func:`dnmf.numerics.masked.panel_stats` over observed entries)."""
    stats = partial(masked.panel_stats, missing=missing) if missing else kernels.panel_stats
    stats = Task(stats, len(V_blocks))
    parts = [dask.delayed(stats, pure=True)(v) for v in V_blocks]
    return _tree_sum(parts, _add_stats, len(V_blocks))


def _stats_and_count_sums(V, target_sum):
    return kernels.panel_stats(V), counts.panel_count_sums(V, target_sum)


def _add_stats_and_count_sums(*parts):
    return _add_stats(*(stats for stats, _ in parts)), counts.add_count_sums(*(sums for _, sums in parts))


def count_sums_pass(V_blocks, target_sum):
    """Graph of the statistics pass of count preprocessing, ``(stats, sums)``: the input
    statistics (as :func:`stats_pass`) and :func:`dnmf.numerics.counts.panel_count_sums`
    summed over the panels, from one read of each panel."""
    kernel = Task(partial(_stats_and_count_sums, target_sum=target_sum), len(V_blocks))
    parts = [dask.delayed(kernel, pure=True)(v) for v in V_blocks]
    return _tree_sum(parts, _add_stats_and_count_sums, len(V_blocks))


def sketch_pass(V_blocks, Z):
    """Graph of one pass of the randomized SVD (:func:`dnmf.numerics.randomized_svd.panel_sketch`).

    Parameters
    ----------
    V_blocks : list of Delayed
    Z : ndarray of shape (n, l), or a Future of one
        The scaled basis, in V's dtype (one key, shared by every panel task).

    Returns
    -------
    Y_blocks : list of Delayed
        ``Y_i``, one per panel.
    sketch : Delayed ``(P, R)``
        ``VᵀY`` and the triangular factor of ``Y``.
    """
    Z = _shared(Z)
    panel = Task(randomized_svd.panel_sketch, len(V_blocks))
    outputs = [dask.delayed(panel, nout=2)(v, Z) for v in V_blocks]
    return [out[0] for out in outputs], _tree_sum(
        [out[1] for out in outputs], randomized_svd.add_sketches, len(V_blocks)
    )


def _normalized_usages(W, members):
    return spectra.usage_rows(W, members).astype(W.dtype, copy=False)


def normalized_usage_blocks(W_blocks, members=()):
    """``W_i`` with each member's rows rescaled to sum 1, one task per block."""
    task = Task(partial(_normalized_usages, members=tuple(members)), len(W_blocks))
    return [dask.delayed(task, pure=True)(w) for w in W_blocks]


def usage_products_pass(W_blocks, V_blocks=None, members=()):
    """Graph of the pass of fixed usages (:func:`dnmf.numerics.spectra.panel_usage_products`):
    ``W_i`` (the usages of ranks ``members`` side by side) with ``V_i`` when ``V_blocks``
    is given, summed over the panels into one :class:`~dnmf.numerics.spectra.UsageProducts`."""
    kernel = Task(partial(spectra.panel_usage_products, members=tuple(members)), len(W_blocks))
    V_blocks = [None] * len(W_blocks) if V_blocks is None else V_blocks
    parts = [dask.delayed(kernel, pure=True)(v, w) for v, w in zip(V_blocks, W_blocks)]
    return _tree_sum(parts, spectra.add_usage_products, len(W_blocks))
