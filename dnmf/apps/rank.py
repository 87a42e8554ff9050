"""Rank selection by stability (the NMFk method), out of core and concurrent.

For each rank k, :func:`select_rank` fits ``replicates`` factorizations of perturbed
copies of V (each entry multiplied by ``1 + perturbation * U(-1, 1)``, drawn per panel
inside the panel task, so no copy of V is ever stored) from differently seeded random
starts. All ``len(ranks) x replicates`` fits are independent and run at once, in one of
two ways (``mode``):

``"tasks"`` (default on a cluster whose workers are processes)
    each fit is one task: the library driver runs inside a worker on that worker's
    threads, reading V panel by panel from its store (in-memory input is scattered to the
    workers once). No per-iteration round trip to the scheduler, so small fits overlap
    perfectly; a fit must fit one worker's memory (W and one panel at a time).
``"threads"`` (default otherwise)
    each fit's driver loop runs in its own thread of this process against the active
    scheduler (a cluster or Dask's threads), so their per-iteration graphs overlap on the
    cluster: the way for a V so large that one fit needs the whole cluster.

Scores of a rank
----------------
error
    Mean over replicates of the relative reconstruction error
    ``sqrt(2 loss) / ||V_r||`` (over observed entries with missing values).
stability
    The k x replicates rows of H are normalized to unit length and clustered into k
    clusters with one component of every replicate in each (centroids start from the
    first replicate; each replicate's components are matched to the centroids by the
    Hungarian algorithm on cosine similarity, centroids are re-averaged, until the
    matching stops changing). The stability is the smallest per-cluster mean
    silhouette (cosine distance): 1 when every replicate finds the same k components,
    low when some component is not reproducible. Rank 1 has stability 1 by definition.

Recommended rank
----------------
``k* = the largest rank whose stability is >= threshold`` (:data:`STABILITY_THRESHOLD`
by default): past the true rank the extra components fit noise and differ between
replicates, which the stability sees at once. The error curve breaks ties: when no rank
reaches the threshold, ``k*`` is the elbow of the error curve (the rank farthest below
the chord from the first to the last rank's error) among the ranks whose stability is
within :data:`TIE_MARGIN` of the best. The report always carries the elbow too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import dask
import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from sklearn.exceptions import ConvergenceWarning

from .. import api
from ..engine.driver import active_client, persist
from ..engine.location import Location
from ..engine.process_setting import SharedSetting
from ..engine.scheduler import use_scheduler
from ..errors import ParameterError, ParameterTypeError
from ..io.storage import MatrixLike, as_panels
from ..params import DEFAULTS, validate_params

if TYPE_CHECKING:
    from distributed import Client
    from matplotlib.figure import Figure

__all__ = [
    "PERTURBATION",
    "STABILITY_THRESHOLD",
    "RankReport",
    "RankScore",
    "error_elbow",
    "match_components",
    "plot_rank_report",
    "recommend_rank",
    "select_rank",
    "stability",
    "unit_rows",
]

logger = logging.getLogger(__name__)

#: Stability at or above which a rank counts as reproducible.
STABILITY_THRESHOLD = 0.8
#: Ranks within this stability of the best are tied when none reaches the threshold.
TIE_MARGIN = 0.05
#: Default relative amplitude of the multiplicative noise of each replicate.
PERTURBATION = 0.03
#: Rounds of the matched clustering at most.
MATCH_ROUNDS = 50
#: Fits run at once by default (each is one thread submitting small graphs).
MAX_CONCURRENT_FITS = 16
#: Seeds of replicate r of rank k: ``random_state + SEED_STRIDE * k + r``.
SEED_STRIDE = 1000


@dataclass(frozen=True)
class RankScore:
    """The scores of one rank (see the module docstring)."""

    rank: int
    error: float  # mean relative reconstruction error over replicates
    error_std: float
    stability: float  # smallest per-cluster mean silhouette
    silhouette: float  # mean silhouette over all components
    n_iter: float  # mean iterations per replicate
    converged: int  # replicates that met tol


@dataclass(frozen=True)
class RankReport:
    """Outcome of :func:`select_rank`.

    Attributes
    ----------
    scores : tuple of RankScore
        One per rank, in increasing rank.
    recommended : int
    elbow : int
        The elbow of the error curve.
    threshold : float
    replicates : int
    perturbation : float
    seconds : float
        Wall time of all fits.
    rule : str
        How ``recommended`` was chosen.
    """

    scores: tuple[RankScore, ...]
    recommended: int
    elbow: int
    threshold: float
    replicates: int
    perturbation: float
    seconds: float
    rule: str

    @property
    def ranks(self) -> list[int]:
        """The ranks tried."""
        return [score.rank for score in self.scores]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = dataclasses.asdict(self)
        out["scores"] = [dataclasses.asdict(score) for score in self.scores]
        return out

    def to_json(self, path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> None:
        """Write :meth:`to_dict` to ``path`` (a path or URL), whole or not at all."""
        Location.of(path, storage_options).publish_text(json.dumps(self.to_dict(), indent=2) + "\n")


# ------------------------------------------------------------------------- stability


def unit_rows(H: ArrayLike) -> np.ndarray:
    """The rows of ``H`` scaled to unit L2 norm (float64; zero rows stay zero)."""
    H = np.asarray(H, dtype=np.float64)
    norms = np.linalg.norm(H, axis=1, keepdims=True)
    return H / np.where(norms > 0, norms, 1.0)


def match_components(Hs, max_rounds=MATCH_ROUNDS):
    """Cluster the rows of each replicate's H into k clusters, one row of each per cluster.

    Parameters
    ----------
    Hs : list of ndarray of shape (k, n)

    Returns
    -------
    labels : ndarray of shape (replicates, k)
        ``labels[r, t]`` is the cluster of row t of ``Hs[r]``.
    """
    from scipy.optimize import linear_sum_assignment

    X = [unit_rows(H) for H in Hs]
    k = X[0].shape[0]
    centroids = X[0].copy()
    labels = None
    for _ in range(max_rounds):
        new = np.empty((len(X), k), dtype=np.int64)
        for r, rows in enumerate(X):
            assigned, clusters = linear_sum_assignment(-(rows @ centroids.T))
            new[r, assigned] = clusters
        centroids = np.zeros_like(centroids)
        for r, rows in enumerate(X):
            centroids[new[r]] += rows
        centroids = unit_rows(centroids)
        if labels is not None and np.array_equal(new, labels):
            break
        labels = new
    return labels


def stability(Hs: Sequence[ArrayLike]) -> tuple[float, float]:
    """``(smallest per-cluster mean silhouette, mean silhouette)`` of the matched clusters
    of the replicates' components (cosine distance); ``(1, 1)`` for rank 1."""
    from sklearn.metrics import silhouette_samples

    k = np.shape(Hs[0])[0]
    if k == 1:
        return 1.0, 1.0
    labels = match_components(Hs).ravel()
    points = np.vstack([unit_rows(H) for H in Hs])
    values = silhouette_samples(points, labels, metric="cosine")
    per_cluster = [values[labels == c].mean() for c in range(k)]
    return float(min(per_cluster)), float(values.mean())


def error_elbow(ranks: ArrayLike, errors: ArrayLike) -> int | None:
    """The rank farthest below the chord joining the first and last ``(rank, error)``."""
    ranks, errors = np.asarray(ranks, dtype=np.float64), np.asarray(errors, dtype=np.float64)
    if ranks.size < 3:
        return int(ranks[np.argmin(errors)]) if ranks.size else None
    chord = errors[0] + (errors[-1] - errors[0]) * (ranks - ranks[0]) / (ranks[-1] - ranks[0])
    return int(ranks[np.argmax(chord - errors)])


def recommend_rank(scores, threshold=STABILITY_THRESHOLD):
    """``(rank, rule)`` by the rule of the module docstring."""
    stable = [s.rank for s in scores if s.stability >= threshold]
    if stable:
        return max(stable), f"largest rank with stability >= {threshold:g}"
    best = max(s.stability for s in scores)
    tied = [s for s in scores if s.stability >= best - TIE_MARGIN]
    return (
        error_elbow([s.rank for s in tied], [s.error for s in tied]),
        f"no rank reached stability {threshold:g}: error elbow among ranks within {TIE_MARGIN:g} of the best stability",
    )


# ----------------------------------------------------------------------- replicates


def _perturb(block, index, seed, amplitude):
    """``block * (1 + amplitude * U(-1, 1))`` drawn from ``(seed, index)`` (a new array;
    NaN stay NaN, a sparse block keeps its pattern)."""
    rng = np.random.default_rng([seed, index])
    if sp.issparse(block):
        block = sp.csr_matrix(block, copy=True)
        block.data *= (1 + amplitude * rng.uniform(-1, 1, block.data.size)).astype(block.dtype)
        return block
    block = np.asarray(block)
    return block * (1 + amplitude * rng.uniform(-1, 1, block.shape)).astype(block.dtype)


def _perturbed(panels, seed, amplitude):
    """Panels of V perturbed by :func:`_perturb`, drawn as each panel is read (never stored)."""
    return panels if amplitude == 0 else panels.map_panels(_perturb, seed, amplitude)


def _local_dask():
    """Make Dask's threaded scheduler, with as many threads as this worker has, the
    default of this process; returns the undo.

    Inside a worker, Dask's config names the cluster as the scheduler; a fit task sets it
    to "threads" so that its driver computes on the worker's threads instead of sending
    every iteration back to the scheduler. Dask's default thread count, one per core,
    would let each fit task use every core of the machine (2 single-threaded workers on
    2 cores ran 4 threads). Process-wide, hence held by :data:`_LOCAL_DASK`.
    """
    saved = {key: dask.config.get(key, None) for key in ("scheduler", "num_workers")}
    dask.config.set(scheduler="threads", num_workers=_worker_threads())
    return lambda: dask.config.set(saved)


_LOCAL_DASK = SharedSetting()


def _worker_threads():
    """Threads of the Dask worker running this task (None outside a worker)."""
    try:
        from distributed import get_worker

        return get_worker().state.nthreads
    except (ImportError, ValueError):
        return None


def _fit_task(source, params, rank, seed, amplitude):
    """One replicate as a worker task: the driver runs there, on the worker's threads."""
    with _LOCAL_DASK.held(_local_dask), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        panels = as_panels(source, panel_rows=params["panel_rows"])
        return _fit_one(panels, {**params, "client": None}, rank, seed, amplitude)


def _separate_processes(client):
    """Whether every worker of ``client`` runs in another process than this one."""
    return os.getpid() not in set(client.run(os.getpid).values())


def _run_as_tasks(client, X, jobs, p, random_state, perturbation, window, callback):
    """Submit the fits as tasks, at most ``window`` at a time; outcomes in job order."""
    from distributed import as_completed

    source = client.scatter(X, broadcast=True, hash=False) if isinstance(X, np.ndarray) or sp.issparse(X) else X
    params = {**p, "client": None}
    outcomes, queue = [None] * len(jobs), iter(enumerate(jobs))
    running = as_completed()
    index_of = {}

    def submit_next():
        item = next(queue, None)
        if item is None:
            return
        index, (k, r) = item
        seed = int(random_state) + SEED_STRIDE * k + r
        future = client.submit(
            _fit_task, source, params, k, seed, perturbation, pure=False, key=f"dnmf-rank-{k}-{r}-{os.urandom(4).hex()}"
        )
        index_of[future.key] = index
        running.add(future)

    for _ in range(window):
        submit_next()
    for future in running:
        index = index_of.pop(future.key)
        outcomes[index] = future.result()
        future.release()
        if callback is not None:
            callback(*jobs[index])
        submit_next()
    return outcomes


def _fit_one(panels, params, rank, seed, amplitude):
    result = api.run(_perturbed(panels, seed, amplitude), {**params, "n_components": rank, "random_state": seed})
    error = result.reconstruction_err / result.norm_V if result.norm_V > 0 else 0.0
    return np.asarray(result.H), float(error), int(result.n_iter), bool(result.converged)


def select_rank(
    X: MatrixLike,
    ranks: Iterable[int],
    *,
    replicates: int = 3,
    perturbation: float = PERTURBATION,
    threshold: float = STABILITY_THRESHOLD,
    random_state: int = 0,
    concurrency: int | None = None,
    client: Client | str | None = None,
    callback: Callable[[int, int], object] | None = None,
    mode: Literal["auto", "tasks", "threads"] = "auto",
    **params: Any,
) -> RankReport:
    """Fit every rank several times and recommend the most reproducible one (NMFk).

    Parameters
    ----------
    X : anything :func:`dnmf.as_panels` accepts
    ranks : iterable of int
    replicates : int, default=3
        Fits per rank (>= 2).
    perturbation : float, default=PERTURBATION
        Relative amplitude of the multiplicative uniform noise of each replicate's copy
        of V (0: only the seeds differ).
    threshold : float, default=STABILITY_THRESHOLD
        Stability a rank needs to be recommended.
    random_state : int, default=0
        Base seed of the replicates' inits and perturbations.
    concurrency : int, optional
        Fits running at once (default: all, up to MAX_CONCURRENT_FITS); 1 runs them one
        after another.
    client : distributed.Client, str or None
        Where to run (default: the active Client, else Dask's threads).
    callback : callable, optional
        Called with ``(rank, replicate)`` when a fit ends.
    mode : {"auto", "tasks", "threads"}
        How fits run at once (module docstring); "auto" picks "tasks" on a cluster whose
        workers are other processes, else "threads".
    **params
        Other parameters of :class:`dnmf.NMF` (solver, beta_loss, max_iter,
        tol, missing_values, init, ...). ``init`` defaults to "random" here, so that
        replicates start apart.

    Returns
    -------
    RankReport
    """
    ranks = sorted({int(k) for k in ranks})
    if not ranks or ranks[0] < 1:
        raise ParameterError(f"ranks must be positive integers, got {ranks!r}")
    if int(replicates) < 2:
        raise ParameterError(f"replicates must be >= 2 (stability compares replicates), got {replicates!r}")
    if not 0 <= perturbation < 1:
        raise ParameterError(f"perturbation must be in [0, 1), got {perturbation!r}")
    unknown = set(params) - set(DEFAULTS)
    if unknown or "n_components" in params or "random_state" in params:
        raise ParameterTypeError(
            f"unexpected parameter(s) {sorted(unknown | ({'n_components', 'random_state'} & set(params)))}"
        )
    p = {**DEFAULTS, "init": "random", **params}
    validate_params({**p, "n_components": ranks[-1], "random_state": int(random_state)})
    if mode not in ("auto", "tasks", "threads"):
        raise ParameterError(f"mode must be 'auto', 'tasks' or 'threads', got {mode!r}")
    jobs = [(k, r) for k in ranks for r in range(int(replicates))]
    workers = min(len(jobs), concurrency or MAX_CONCURRENT_FITS)
    with use_scheduler(client):
        active = active_client()
        if mode == "tasks" and active is None:
            raise ParameterError("mode='tasks' needs a distributed Client (client= or an active one)")
        if mode == "auto":
            mode = "tasks" if active is not None and _separate_processes(active) else "threads"
        p["client"] = active
        if mode == "tasks":
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                outcomes = _run_as_tasks(
                    active, X, jobs, p, random_state, perturbation, concurrency or len(jobs), callback
                )
            seconds = time.perf_counter() - started
            return _report(ranks, jobs, outcomes, threshold, replicates, perturbation, seconds)
        panels = as_panels(X, panel_rows=p["panel_rows"])
        if active is not None and panels.in_memory:
            panels = dataclasses.replace(
                panels, array=persist(panels.array)[0], in_memory=False
            )  # shipped once for all fits
        started = time.perf_counter()

        def run(job):
            k, r = job
            outcome = _fit_one(
                panels,  # noqa: F821 (bound until the del below)
                p,
                k,
                int(random_state) + SEED_STRIDE * k + r,
                perturbation,
            )
            if callback is not None:
                callback(k, r)
            return outcome

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            if workers == 1:
                outcomes = [run(job) for job in jobs]
            else:
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dnmf-rank") as pool:
                    outcomes = list(pool.map(run, jobs))
        seconds = time.perf_counter() - started
        del panels, run  # the persisted input goes with them
    return _report(ranks, jobs, outcomes, threshold, replicates, perturbation, seconds)


def _report(ranks, jobs, outcomes, threshold, replicates, perturbation, seconds):
    scores = []
    for k in ranks:
        mine = [outcome for (rank, _), outcome in zip(jobs, outcomes) if rank == k]
        errors = [o[1] for o in mine]
        worst, mean = stability([o[0] for o in mine])
        scores.append(
            RankScore(
                k,
                float(np.mean(errors)),
                float(np.std(errors)),
                worst,
                mean,
                float(np.mean([o[2] for o in mine])),
                int(sum(o[3] for o in mine)),
            )
        )
        logger.info("rank %d: error %.4g, stability %.3f", k, scores[-1].error, worst)
    recommended, rule = recommend_rank(scores, threshold)
    elbow = error_elbow(ranks, [s.error for s in scores])
    return RankReport(
        tuple(scores), recommended, elbow, float(threshold), int(replicates), float(perturbation), seconds, rule
    )


# ----------------------------------------------------------------------------- plot


def plot_rank_report(report: RankReport, out: str | os.PathLike[str] | None = None) -> Figure:
    """Error and stability against the rank (two axes), threshold and recommendation marked.

    Returns
    -------
    matplotlib.figure.Figure
        Drawn on the Agg canvas; written as PNG to ``out`` if given.
    """
    from matplotlib.ticker import MaxNLocator

    from .plots import new_figure, save_figure

    figure = new_figure((6.4, 4.0), margins=dict(left=0.12, right=0.88, bottom=0.13, top=0.9))
    axes = figure.add_subplot(1, 1, 1)
    ranks = report.ranks
    errors = [s.error for s in report.scores]
    spread = [s.error_std for s in report.scores]
    axes.errorbar(ranks, errors, yerr=spread, color="tab:blue", marker="o", label="relative error")
    axes.set_xlabel("rank k")
    axes.set_ylabel("relative reconstruction error", color="tab:blue")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    twin = axes.twinx()
    twin.plot(ranks, [s.stability for s in report.scores], color="tab:red", marker="s", label="stability")
    twin.axhline(report.threshold, color="tab:red", linestyle=":", linewidth=1)
    twin.set_ylabel("stability (min cluster silhouette)", color="tab:red")
    twin.set_ylim(min(-0.05, min(s.stability for s in report.scores) - 0.05), 1.05)
    axes.axvline(report.recommended, color="black", linestyle="--", linewidth=1)
    axes.set_title(f"rank selection: recommended k = {report.recommended} ({report.replicates} replicates)")
    return save_figure(figure, out)
