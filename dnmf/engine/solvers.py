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

import bisect
from functools import partial
from typing import NamedTuple

import dask
import numpy as np
from dask.system import CPU_COUNT

from ..numerics import counts, kernels, masked, masked_hals, randomized_svd, spectra
from ..numerics.losses import beta_loss, frobenius_losses, member_slices
from .panels import PanelRead
from .process_setting import SharedSetting

__all__ = [
    "TREE_FAN_IN",
    "Layout",
    "Task",
    "blas_threads",
    "column_blocks",
    "count_sums_pass",
    "filled_panels",
    "final_pass",
    "iteration",
    "normalized_usage_blocks",
    "on_worker",
    "prepared_panels",
    "sketch_pass",
    "spread_iteration",
    "stats_pass",
    "triangle_pass",
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
    return _member_losses(total, H @ H.T if beta == 2 else None, beta, size, members)


def _member_losses(total, H_gram, beta, size, members=()):
    """:func:`member_losses` from ``H Hᵀ`` (the Frobenius loss needs no more of H)."""
    if beta == 2:
        return frobenius_losses(total.loss_terms, total.gram_before, H_gram, members)
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
    numerator = total.h_numerator[:, start:stop]
    if len(step.members) > 1:
        cross = np.array([kernels.dot64(numerator[a:b], H_block[a:b]) for a, b in member_slices(step.members)])
    else:
        cross = kernels.dot64(numerator, H_block)
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
    H_gram = H @ H.T if step.beta == 2 and not step.missing else None
    if not step.update_H:
        return H, _report(total, H_gram, [], step, size, squared_norm)
    H_new = np.concatenate([H_block for H_block, _ in blocks], axis=1)
    return H_new, _report(total, H_gram, [pieces for _, pieces in blocks], step, size, squared_norm)


def _report(total, H_gram, pieces, step, size, squared_norm):
    """``[loss before, loss after, violation]`` (see :func:`finish_step`) from the small
    terms of ``total``, ``H Hᵀ`` of the H the pass started from (Frobenius), and the
    :func:`h_columns` pieces of the H-step's blocks (none when H is frozen)."""
    if step.missing:  # the new iterate's loss needs the new H against V: the next pass reports it
        before = masked.loss_of(total)
    else:
        total = _known_norm(total, squared_norm, step.beta)
        before = sum(_member_losses(total, H_gram, step.beta, size, step.members))
    violation = total.violation + sum(piece[0] for piece in pieces)
    after = np.nan
    if pieces and step.beta == 2 and not step.missing:
        cross = sum(piece[1] for piece in pieces)
        gram = sum(piece[2] for piece in pieces)
        after = sum(
            frobenius_losses([total.loss_terms[0], *np.atleast_1d(cross)], total.h_denominator, gram, step.members)
        )
    return np.array([before, after, violation])


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


class Layout(NamedTuple):
    """Where the tasks of a pass run on a cluster (:func:`spread_iteration`).

    Worker ``p`` (address ``workers[p]``) runs the tasks of the panels ``panels[p]`` (a
    contiguous run, in row order) and owns a contiguous run of H's column blocks
    (``columns[b]`` is owned by worker ``owners[b]``, one block per thread of it): it
    receives those columns of every worker's summed partials, runs their H-step, and holds
    the new blocks, which every worker then fetches once.
    """

    workers: tuple[str, ...]
    panels: tuple[tuple[int, ...], ...]
    columns: tuple[tuple[int, int], ...]
    owners: tuple[int, ...]

    @classmethod
    def of(cls, threads, n_panels, n_columns):
        """Contiguous runs of panels, one per worker of ``threads`` (``{address: threads}``;
        at most one worker per panel), and H's columns in equal runs, one per worker, each
        cut in one block per thread of its owner (of at least :data:`MIN_H_BLOCK_COLUMNS`
        columns)."""
        workers = sorted(threads)[: max(1, min(len(threads), n_panels, n_columns))]
        count = len(workers)
        panel_edges = _edges(n_panels, count)
        column_edges = _edges(n_columns, count)
        columns, owners = [], []
        for p, (start, stop) in enumerate(zip(column_edges[:-1], column_edges[1:])):
            blocks = max(1, min(threads[workers[p]], (stop - start) // MIN_H_BLOCK_COLUMNS))
            edges = [start + e for e in _edges(stop - start, blocks)]
            columns.extend(zip(edges[:-1], edges[1:]))
            owners.extend([p] * blocks)
        return cls(
            tuple(workers),
            tuple(tuple(range(a, b)) for a, b in zip(panel_edges[:-1], panel_edges[1:])),
            tuple(columns),
            tuple(owners),
        )

    def worker_of(self, panel):
        """The address of the worker that runs ``panel``'s tasks (the runs are contiguous)."""
        return self.workers[bisect.bisect_right([panels[0] for panels in self.panels], panel) - 1]

    def owner_of(self, block):
        """The address of the worker that owns column block ``block``."""
        return self.workers[self.owners[block]]

    def split(self, H):
        """H's column blocks (views)."""
        return [H[:, start:stop] for start, stop in self.columns]


def _edges(n, parts):
    return np.linspace(0, n, parts + 1).astype(int).tolist()


def on_worker(address):
    """Dask annotation: the tasks made in the block run on ``address`` (elsewhere only if
    it is gone: a lost worker's tasks are recomputed on the others)."""
    return dask.annotate(workers=[address], allow_other_workers=True)


def _joined(*blocks):
    return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]


def _piece(total, start, stop, beta):
    return total.columns(start, stop, beta)


def _block_step(H_block, total, step):
    """The H-step of one worker's block of columns: the new block and what the pass's
    report needs of it, ``(H_block Hᵀ_block of the H the pass started from, pieces,
    the total's small terms)``."""
    H_new, pieces = h_columns(H_block, total, 0, H_block.shape[1], step)
    small = total._replace(h_numerator=None, h_denominator=total.h_denominator if step.beta in (1, 2) else None)
    H_gram = H_block @ H_block.T if step.beta == 2 and not step.missing else None
    return H_new, (H_gram, pieces, small)


def _spread_report(summaries, step, size, squared_norm):
    """The pass's report (see :func:`finish_step`) from the blocks' summaries."""
    H_gram = None if summaries[0][0] is None else sum(summary[0] for summary in summaries)
    return _report(summaries[0][2], H_gram, [summary[1] for summary in summaries], step, size, squared_norm)


def spread_iteration(V_blocks, W_blocks, H_blocks, step, shape, layout, squared_norm=None):
    """Graph of one outer iteration on a cluster, its traffic independent of the panels.

    :func:`iteration`'s numbers, with the tasks placed by ``layout`` (a :class:`Layout`):

    1. each worker joins H from its blocks (every block fetched once: the all-gather), runs
       its panels' tasks, and sums their partials there (a tree of :data:`TREE_FAN_IN`);
    2. each worker's sum is cut by H's column blocks and each piece goes to the block's
       owner, which adds them in worker order (the reduce-scatter) and runs that block's
       H-step (and extrapolation);
    3. one small task makes the report from the blocks' k x k pieces.

    A worker sends about ``2 (P - 1) / P`` factors (k x n) a pass with P workers, however
    many panels it holds; no task holds every partial or all of H's update.

    Parameters
    ----------
    H_blocks : list
        H's column blocks, those of ``layout.columns`` (Delayed, Futures or ndarrays).
    layout : Layout
    Others as :func:`iteration`.

    Returns
    -------
    W_blocks : list of Delayed
    H : list
        ``[H_new, H_ahead]``, each a list of column blocks (H_ahead None without
        extrapolation).
    report : Delayed ndarray of shape (3,)
    """
    if not step.update_H:
        raise ValueError("a pass spread over workers updates H")
    n_panels = len(V_blocks)
    kernel = _masked_kernels(step).panel_step if step.missing else kernels.panel_step
    panel = Task(_panel_kernel(kernel, step, squared_norm), n_panels)
    join, cut = Task(_joined, n_panels), Task(partial(_piece, beta=step.beta), n_panels)
    H_blocks = [_shared(block) for block in H_blocks]
    W_out, pieces = [None] * n_panels, []
    # Every task below is made inside its worker's annotation, the getitems of nout= outputs
    # too (a task of their own: one made outside could run anywhere and pull W_i there).
    for address, panels in zip(layout.workers, layout.panels):
        with on_worker(address):
            H_here = dask.delayed(join)(*H_blocks)
            outputs = {i: dask.delayed(panel, nout=2)(V_blocks[i], W_blocks[i], H_here) for i in panels}
            for i in panels:
                W_out[i] = outputs[i][0]
            local = _tree_sum([outputs[i][1] for i in panels], kernels.sum_partials, n_panels)
            pieces.append([dask.delayed(cut)(local, start, stop) for start, stop in layout.columns])
    block_step = Task(partial(_block_step, step=step), n_panels)
    add = Task(kernels.sum_partials, n_panels)
    H_new, H_ahead, summaries = [], [], []
    for b in range(len(layout.columns)):
        with on_worker(layout.owner_of(b)):
            total = dask.delayed(add)(*(worker_pieces[b] for worker_pieces in pieces))
            new, summary = dask.delayed(block_step, nout=2)(H_blocks[b], total)
            if step.extrapolation:
                extrapolate = Task(partial(kernels.extrapolate, beta=step.extrapolation), n_panels)
                H_ahead.append(dask.delayed(extrapolate)(new, H_blocks[b]))
        H_new.append(new)
        summaries.append(summary)
    report = Task(partial(_spread_report, step=step, size=shape[0] * shape[1], squared_norm=squared_norm), n_panels)
    return W_out, [H_new, H_ahead or None], dask.delayed(report)(summaries)


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


def _each_panel(function, V_blocks, now=False):
    """``function(V_i)`` for every panel: for a panel read in its task (a PanelRead), as
    part of that read; else as a task of its own (with ``now``, called here on panels that
    are values)."""
    task = Task(function, len(V_blocks))
    if now:
        return [task(v) for v in V_blocks]
    return [PanelRead(function, v) if isinstance(v, PanelRead) else dask.delayed(task, pure=True)(v) for v in V_blocks]


def filled_panels(V_blocks, value, now=False):
    """Dense panels with their NaN at ``value`` (the SVD of V with missing values), see
    :func:`dnmf.numerics.masked.fill_missing`."""
    return _each_panel(partial(masked.fill_missing, value=value), V_blocks, now)


def prepared_panels(V_blocks, missing, now=False):
    """The panels made ready for the masked kernels (:func:`dnmf.numerics.masked.prepare_panel`);
    the driver persists them for in-memory input."""
    return _each_panel(partial(masked.prepare_panel, missing=missing), V_blocks, now)


def _add_stats(*stats):
    total = np.array(stats[0], dtype=np.float64)
    for item in stats[1:]:
        total[0] = min(total[0], item[0])
        total[1:] += item[1:]
    return total


def stats_pass(V_blocks, missing=None, now=False):
    """Graph of the input-statistics pass: ``[min, n_nonfinite, sum, sum_sq, n_zero, size]``
    (with ``missing``: :func:`dnmf.numerics.masked.panel_stats` over observed entries); with
    ``now``, the pass itself, run here on the panels' values (as :func:`iteration`)."""
    stats = partial(masked.panel_stats, missing=missing) if missing else kernels.panel_stats
    stats = Task(stats, len(V_blocks))
    parts = [stats(v) if now else dask.delayed(stats, pure=True)(v) for v in V_blocks]
    return _tree_sum(parts, _add_stats, len(V_blocks), now)


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


def sketch_pass(V_blocks, Z, now=False):
    """Graph of one pass of the randomized SVD (:func:`dnmf.numerics.randomized_svd.panel_sketch`).

    Parameters
    ----------
    V_blocks : list of Delayed
    Z : ndarray of shape (n, l), or a Future of one
        The scaled basis, in V's dtype (one key, shared by every panel task).
    now : bool
        Run the pass here on the panels' values (as :func:`iteration`): the results are
        values.

    Returns
    -------
    Y_blocks : list of Delayed
        ``Y_i``, one per panel.
    P : Delayed
        ``VᵀY``.
    """
    Z = _shared(Z, now)
    panel = Task(randomized_svd.panel_sketch, len(V_blocks))
    outputs = [_task(panel, v, Z, nout=2, now=now) for v in V_blocks]
    return [out[0] for out in outputs], _tree_sum(
        [out[1] for out in outputs], randomized_svd.add_sketches, len(V_blocks), now
    )


def triangle_pass(Y_blocks, now=False):
    """Graph of the triangular factor of ``Y`` (the SVD's last pass's ``Y_i``, one per panel),
    by a TSQR tree (:func:`dnmf.numerics.randomized_svd.add_triangles`); with ``now``, the
    factor itself."""
    panel = Task(randomized_svd.panel_triangle, len(Y_blocks))
    parts = [_task(panel, y, now=now) for y in Y_blocks]
    return _tree_sum(parts, randomized_svd.add_triangles, len(Y_blocks), now)


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
