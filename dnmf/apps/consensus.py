"""Consensus NMF (cNMF: Kotliar et al., eLife 2019), with one read of V per iteration
for a whole ensemble of replicates.

For each rank k, ``replicates`` factorizations from differently seeded random starts;
then, per k, cNMF's consensus:

1. the ``replicates * k`` spectra (rows of H) are normalized to unit L2 norm;
2. *local density*: each spectrum's mean Euclidean distance to its
   ``int(neighbors * replicates)`` nearest other spectra; spectra whose density is
   ``>= density_threshold`` are outliers and dropped;
3. k-means (``n_init=10, random_state=1``, as cNMF) of the rest into k clusters; the
   element-wise median of each cluster, rescaled to sum 1, is a *consensus spectrum*;
4. the *usages* are refit with the consensus spectra fixed (a ``transform``), and each
   rank's components are numbered by their total share of the cells' usage, largest
   first (cNMF's order);
5. *stability*: the silhouette (Euclidean) of a k-means clustering of all the spectra,
   density filter not applied (cNMF's k-selection statistics); *error*: cNMF's
   prediction error ``||V - W_k H_k||²`` of the refit, and its relative form
   ``||V - W_k H_k|| / ||V||``.

cNMF leaves the choice of k to its user's reading of the k-selection plot; the report
recommends one (:func:`recommend_k`): the largest k whose stability is within
:data:`STABILITY_MARGIN` of the best, below which the extra components fit noise
(reproducible components cluster tightly; those past the true rank split differently
in every replicate).

One read of V serves an ensemble
--------------------------------
The replicates of a batch run as one factorization of rank ``K = sum of their k``
(:func:`dnmf.engine.driver.factorize` with ``members``): each panel task multiplies its
panel once by all the replicates' stacked factors and updates each replicate against
its own block of the Gram matrices, so the replicates are exactly independent NMFs
while an iteration of the whole batch costs one pass over V. The batch stops when the
stopping rule fires on the summed losses and violations (its slowest replicates). The
usages of every rank are refit in one more pass, the same way.

Memory model (:func:`ensemble_bytes`): the workers hold W of the batch,
``m * K`` values, twice while an iteration runs; each running panel task holds its
panel's ``rows * K`` products and a ``K * n`` partial of the H-step; the driver holds
``H`` (``K * n``, a few copies) and, at the start, one row block of the random initial
W at a time (on a cluster; on Dask's threads the driver is the workers). The
replicates are cut into consecutive batches (ranks in increasing order) whose estimate
fits :data:`MEMORY_SHARE` of the memory of the workers (of this machine on Dask's
threads); ``batch_bytes`` sets the budget.

Preprocessing: by default the input is factorized as given. ``preprocess="counts"``
does cNMF's preprocessing of a counts matrix out of core (:mod:`dnmf.apps.counts`: one
statistics pass, then the ``top_genes`` most over-dispersed genes, each scaled to unit
variance, made panel by panel as V is read); the spectra, the refit and its error are
then those of that matrix, as cNMF's are, and the report records the genes kept.

Results in TPM units (``preprocess="counts"``), as cNMF's ``consensus`` makes them,
from one more pass over V and, by default, a last refit:

- ``spectra_tpm``: for every gene, the non-negative least-squares spectra of the counts
  normalized to 1e6 per cell (TPM) for the usages normalized to sum 1 per cell;
- ``spectra_score``: every gene's z-scored TPM regressed on the usages (cNMF's
  ``gene_spectra_score``);
- with ``refit_usages="tpm"`` (cNMF's ``refit_usage=True``, the default) the usages
  returned are refit once more, against the kept genes' TPM scaled to unit variance with
  the TPM spectra (over those genes' standard deviations) fixed; ``"normalized"`` keeps
  the usages of step 4. Either way the k-selection error is step 4's, as cNMF's.

The solves of the first two are k-sized and run on the driver
(:mod:`dnmf.numerics.spectra`).

The beta loss: Frobenius by default (cNMF's command line's); any other ``beta_loss``
(``"kullback-leibler"``, ``"itakura-saito"``, a float) runs the replicates, the refits and
the TPM spectra with the multiplicative updates (``solver="mu"`` unless given, as cNMF
switches), the TPM spectra then one pass per update; the k-selection error stays cNMF's
Frobenius ``||V - W_k H_k||²`` (from one more pass).

Differences from cNMF, by design: the fits are dnmf's (its default solver and stopping
rule, ``init="random"``, ``max_iter`` :data:`MAX_ITER` as cNMF); the members of an
ensemble's refit stop together, on their summed measure.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import dask.array as da
import numpy as np

from .. import api
from ..engine.driver import active_client, factorize, normalized_usages, usage_products
from ..engine.scheduler import use_scheduler
from ..engine.state import FitResult, IterationInfo
from ..errors import ParameterError, ParameterTypeError
from ..io.storage import MatrixLike, as_panels
from ..numerics.losses import frobenius_losses, member_slices
from ..numerics.spectra import gene_scores, nonnegative_spectra
from ..params import DEFAULTS, beta_to_float, resolve, validate_params
from .consensus_checkpoint import ConsensusCheckpoint
from .counts import (
    PREPROCESSING,
    TOP_GENES,
    CountPreprocessing,
    as_dict,
    check_top_genes,
    prepare_counts,
    scaled_tpm_panels,
    tpm_panels,
    tpm_refit_spectra,
)
from .rank import SEED_STRIDE, unit_rows

if TYPE_CHECKING:
    from distributed import Client
    from matplotlib.figure import Figure

__all__ = [
    "DENSITY_THRESHOLD",
    "NEIGHBORS",
    "REPLICATES",
    "REFIT_USAGES",
    "RESULT_FORMATS",
    "Consensus",
    "ConsensusReport",
    "ConsensusScore",
    "check_options",
    "consensus",
    "consensus_of_rank",
    "draw_clustering",
    "draw_density",
    "draw_k_selection",
    "ensemble_bytes",
    "fit_params",
    "local_density",
    "plot_clustering",
    "plot_density",
    "plot_k_selection",
    "recommend_k",
    "write_consensus",
    "write_spectra_table",
]

logger = logging.getLogger(__name__)

#: cNMF's defaults: replicates per rank (its ``n_iter``), the local-density threshold and
#: the neighbourhood as a fraction of the replicates (``local_neighborhood_size``).
REPLICATES = 100
DENSITY_THRESHOLD = 0.5
NEIGHBORS = 0.30
#: cNMF's k-means: ``KMeans(n_clusters=k, n_init=10, random_state=1)``.
KMEANS_INITS = 10
KMEANS_SEED = 1
#: cNMF fits each replicate with ``max_iter=1000``.
MAX_ITER = 1000
#: Ranks whose stability is within this of the best are candidates; the largest wins.
STABILITY_MARGIN = 0.05
#: Share of the workers' memory an ensemble batch may take (see the module docstring).
MEMORY_SHARE = 0.5
#: What the usages of counts are refit against at the end (module docstring); the
#: first is cNMF's default.
REFIT_USAGES: Final = ("tpm", "normalized")


@dataclass(frozen=True)
class ConsensusScore:
    """The statistics of one rank (see the module docstring)."""

    rank: int
    stability: float  # silhouette of the k-means of all spectra (Euclidean, unit rows)
    error: float  # cNMF's prediction error ||V - W H||² of the refit usages
    relative_error: float  # ||V - W H|| / ||V||
    kept: int  # spectra kept by the density filter (of replicates * rank)


@dataclass(frozen=True)
class ConsensusReport:
    """The outcome of :func:`consensus` that a JSON file holds.

    Attributes
    ----------
    scores : tuple of ConsensusScore
        One per rank, in increasing rank.
    recommended : int
    rule : str
        How ``recommended`` was chosen.
    replicates : int
    density_threshold, neighbors : float
    batches : int
        Ensembles run (each one pass over V per iteration).
    passes : int
        Passes over V in all: the ensembles' iterations, their statistics passes, the
        refit, and with preprocessed counts their statistics pass, the pass of the
        results in TPM units and the last refit.
    seconds : float
    preprocessing : dict
        ``{"kind": "none"}``, or what ``preprocess="counts"`` did
        (the input columns kept and
        their scale).
    refit_usages : str
        What the usages were last refit against: ``"input"`` (V as factorized, no
        preprocessing), or one of :data:`REFIT_USAGES`.
    """

    scores: tuple[ConsensusScore, ...]
    recommended: int
    rule: str
    replicates: int
    density_threshold: float
    neighbors: float
    batches: int
    passes: int
    seconds: float
    preprocessing: dict[str, Any] = dataclasses.field(default_factory=lambda: {"kind": "none"})
    refit_usages: str = "input"

    @property
    def ranks(self) -> list[int]:
        """The ranks tried."""
        return [score.rank for score in self.scores]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = dataclasses.asdict(self)
        out["scores"] = [dataclasses.asdict(score) for score in self.scores]
        return out

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON text."""
        return json.dumps(self.to_dict(), indent=2) + "\n"


@dataclass
class Consensus:
    """What :func:`consensus` returns.

    Attributes
    ----------
    report : ConsensusReport
    spectra : dict of int to ndarray of shape (k, n)
        The consensus spectra of each rank (rows sum to 1), by decreasing share of usage.
    usages : dict of int to dask.array.Array of shape (m, k)
        The refit usages (``report.refit_usages`` says against what), row-chunked like
        V (persisted on the scheduler).
    density : dict of int to ndarray of shape (replicates * k,)
        Each spectrum's local density.
    labels : dict of int to ndarray of shape (replicates * k,)
        Each spectrum's cluster: the consensus spectrum it made (-1: dropped by the
        density filter).
    unit_spectra : dict of int to ndarray of shape (replicates * k, n)
        The replicates' spectra, unit L2 rows (replicate-major).
    refit : FitResult
        The refit of step 4 of every rank's usages (W of all ranks side by side, in the
        order of the clusters), whose losses are the ranks' errors.
    preprocessing : CountPreprocessing or None
        What ``preprocess="counts"`` did (see :ref:`consensus-counts`).
    spectra_tpm, spectra_score : dict of int to ndarray of shape (k, n_input_columns), or None
        With ``preprocess="counts"``: cNMF's spectra in TPM units and gene scores, every
        input gene (module docstring).
    """

    report: ConsensusReport
    spectra: dict[int, np.ndarray]
    usages: dict[int, da.Array]
    density: dict[int, np.ndarray]
    labels: dict[int, np.ndarray]
    unit_spectra: dict[int, np.ndarray]
    refit: FitResult
    preprocessing: CountPreprocessing | None = None
    spectra_tpm: dict[int, np.ndarray] | None = None
    spectra_score: dict[int, np.ndarray] | None = None


# --------------------------------------------------------------------- the consensus


def _distances(X):
    """Euclidean distances between the rows of ``X`` (clipped at 0 against rounding)."""
    squares = np.einsum("ij,ij->i", X, X)
    return np.sqrt(np.maximum(squares[:, None] + squares[None, :] - 2.0 * (X @ X.T), 0.0))


def local_density(unit, n_neighbors):
    """Each row's mean distance to its ``n_neighbors`` nearest other rows (cNMF's local
    density; the row itself, at distance 0, is not counted)."""
    distances = _distances(unit)
    n_neighbors = min(max(1, int(n_neighbors)), distances.shape[0] - 1)
    nearest = np.partition(distances, n_neighbors, axis=1)[:, : n_neighbors + 1]
    return nearest.sum(axis=1) / n_neighbors


def _kmeans(X, k):
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=KMEANS_INITS, random_state=KMEANS_SEED).fit(X).labels_


def _silhouette(X, labels):
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(X, labels, metric="euclidean")) if len(set(labels)) > 1 else 1.0


def consensus_of_rank(spectra, k, replicates, density_threshold=DENSITY_THRESHOLD, neighbors=NEIGHBORS):
    """cNMF's consensus of one rank's replicate spectra.

    Parameters
    ----------
    spectra : ndarray of shape (replicates * k, n)
        Every replicate's rows of H.
    k, replicates : int
    density_threshold, neighbors : float

    Returns
    -------
    consensus : ndarray of shape (k, n)
        Median spectra of the clusters, rows summing to 1.
    labels : ndarray of shape (replicates * k,)
        Cluster of each spectrum, -1 for those the density filter dropped.
    density : ndarray of shape (replicates * k,)
    stability : float
    unit : ndarray of shape (replicates * k, n)
    """
    unit = unit_rows(spectra)
    density = local_density(unit, neighbors * replicates) if len(unit) > 1 else np.zeros(len(unit))
    kept = density < density_threshold
    if kept.sum() < k:
        raise ParameterError(
            f"rank {k}: the density filter (density-threshold {density_threshold:g}) kept {int(kept.sum())} of "
            f"{len(unit)} spectra, fewer than k; raise the threshold"
        )
    labels = np.full(len(unit), -1, dtype=np.int64)
    labels[kept] = _kmeans(unit[kept], k) if k > 1 else 0
    medians = np.stack([np.median(unit[labels == c], axis=0) for c in range(k)])
    sums = medians.sum(axis=1, keepdims=True)
    consensus = medians / np.where(sums > 0, sums, 1.0)
    stability = _silhouette(unit, _kmeans(unit, k)) if k > 1 else 1.0
    return consensus, labels, density, stability, unit


def recommend_k(scores):
    """``(rank, rule)``: the largest rank whose stability is within
    :data:`STABILITY_MARGIN` of the best."""
    best = max(score.stability for score in scores)
    candidates = [score.rank for score in scores if score.stability >= best - STABILITY_MARGIN]
    return max(candidates), f"largest rank with stability within {STABILITY_MARGIN:g} of the best ({best:.3f})"


# -------------------------------------------------------------------- the ensembles


def ensemble_bytes(shape, K, itemsize, panel_rows, tasks):
    """Estimated peak bytes of an ensemble of total rank ``K`` (module docstring)."""
    m, n = shape
    return int(itemsize * (2 * m * K + tasks * (panel_rows * K + K * n) + 4 * K * n))


def _memory_budget():
    """:data:`MEMORY_SHARE` of the workers' memory (of this machine on Dask's threads)."""
    client = active_client()
    if client is not None:
        limits = [worker.get("memory_limit") or 0 for worker in client.scheduler_info()["workers"].values()]
        if all(limits):
            return int(MEMORY_SHARE * sum(limits))
    import psutil

    return int(MEMORY_SHARE * psutil.virtual_memory().available)


def _batches(jobs, shape, itemsize, panel_rows, tasks, budget):
    """Consecutive runs of ``jobs`` (``(k, replicate)``) whose ensembles fit ``budget``."""
    batches, current = [], []
    for job in jobs:
        K = sum(k for k, _ in current) + job[0]
        if current and ensemble_bytes(shape, K, itemsize, panel_rows, tasks) > budget:
            batches.append(current)
            current = []
        current.append(job)
    return batches + [current] if current else batches


def check_options(
    replicates, density_threshold, neighbors, preprocess="none", top_genes=TOP_GENES, spell=None, refit_usages=None
):
    """Check the consensus options; ``spell`` maps a name to what the user typed."""
    name = (spell or {}).get
    if preprocess not in PREPROCESSING:
        raise ParameterError(
            f"{name('preprocess', 'preprocess')} must be one of {', '.join(PREPROCESSING)}, got {preprocess!r}"
        )
    check_top_genes(top_genes, name("top_genes", "top_genes"))
    if refit_usages is not None:
        if preprocess != "counts":
            raise ParameterError(
                f"{name('refit_usages', 'refit_usages')} applies with "
                f"{name('preprocess', 'preprocess')} counts (there is no TPM otherwise)"
            )
        if refit_usages not in REFIT_USAGES:
            raise ParameterError(
                f"{name('refit_usages', 'refit_usages')} must be one of {', '.join(REFIT_USAGES)}, got {refit_usages!r}"
            )
    if isinstance(replicates, bool) or int(replicates) != replicates or replicates < 2:
        raise ParameterError(
            f"{name('replicates', 'replicates')} must be an integer >= 2 (the consensus compares "
            f"replicates), got {replicates!r}"
        )
    if not 0 < density_threshold <= 2:
        raise ParameterError(
            f"{name('density_threshold', 'density_threshold')} must be in (0, 2] (distances between "
            f"unit vectors), got {density_threshold!r}"
        )
    if not 0 < neighbors <= 1:
        raise ParameterError(
            f"{name('neighbors', 'neighbors')} must be in (0, 1] (a fraction of the replicates), got {neighbors!r}"
        )


def _check(ranks, shape, params, features="n_features"):
    """The ranks, sorted, once they and ``params`` are checked against V's ``shape``."""
    ranks = sorted({int(k) for k in ranks})
    if not ranks or ranks[0] < 1 or ranks[-1] > min(shape):
        raise ParameterError(f"ranks must be within 1..{min(shape)} (min(n_samples, {features})), got {ranks!r}")
    unknown = set(params) - set(DEFAULTS)
    taken = {"n_components", "random_state", "init", "client"} & set(params)
    if unknown or taken:
        raise ParameterTypeError(f"unexpected parameter(s) {sorted(unknown | taken)}")
    if params.get("missing_values") is not None:
        raise ParameterError("consensus does not take missing_values")
    return ranks


def consensus(
    X: MatrixLike,
    ranks: Iterable[int],
    *,
    replicates: int = REPLICATES,
    density_threshold: float = DENSITY_THRESHOLD,
    neighbors: float = NEIGHBORS,
    preprocess: Literal["none", "counts"] = "none",
    top_genes: int = TOP_GENES,
    refit_usages: Literal["tpm", "normalized"] | None = None,
    random_state: int = 0,
    batch_bytes: int | None = None,
    checkpoint: str | os.PathLike[str] | api.Checkpointing | None = None,
    client: Client | str | None = None,
    callback: Callable[[IterationInfo | None], object] | None = None,
    **params: Any,
) -> Consensus:
    """Consensus NMF of ``X`` for each rank (the module docstring has the method).

    Parameters
    ----------
    X : anything :func:`dnmf.as_panels` accepts
    ranks : iterable of int
        Each within ``1..min(m, n)``.
    replicates : int, default=REPLICATES
        Fits per rank (>= 2).
    density_threshold : float, default=DENSITY_THRESHOLD
        In (0, 2]: spectra whose local density is at least this are dropped (2 keeps all).
    neighbors : float, default=NEIGHBORS
        In (0, 1]: the local density's neighbourhood, as a fraction of ``replicates``.
    preprocess : {"none", "counts"}, default="none"
        ``"counts"``: cNMF's preprocessing of a counts matrix (cells as rows), out of core
        (see :ref:`consensus-counts`); the spectra then have one entry per gene kept
        (``report.preprocessing["columns"]``), and the result has cNMF's spectra in TPM
        units.
    top_genes : int, default=TOP_GENES
        With ``preprocess="counts"``: the over-dispersed genes kept (cNMF's ``--numgenes``).
    refit_usages : {"tpm", "normalized"}, optional
        With ``preprocess="counts"``: what the usages returned are refit against at the
        end (module docstring); default ``"tpm"``, as cNMF.
    random_state : int, default=0
        Replicate r of rank k starts from seed ``random_state + 1000 k + r``.
    batch_bytes : int, optional
        Memory budget of an ensemble batch (default: :data:`MEMORY_SHARE` of the
        workers' memory).
    checkpoint : path-like or dnmf.api.Checkpointing, optional
        A local directory where the run keeps its progress
        (see :ref:`consensus-resume`): finished batches and the running
        batch's checkpoints. A run given the directory of an interrupted one of the same
        input, parameters and settings resumes it (the result is the uninterrupted
        run's); one of another consensus is refused.
    client : distributed.Client, str or None
        Where to run (default: the active Client, else Dask's threads).
    callback : callable, optional
        Called with an ``IterationInfo`` (iteration, loss, seconds) after each iteration of
        each ensemble, and with ``None`` when an ensemble ends.
    **params
        Other parameters of :class:`dnmf.NMF` for every fit (solver, tol,
        max_iter, inner_sweeps, extrapolate, panel_rows, ...); ``max_iter`` defaults to
        :data:`MAX_ITER`.

    Returns
    -------
    Consensus
    """
    started = time.perf_counter()
    params = fit_params(params)
    check_options(replicates, density_threshold, neighbors, preprocess, top_genes, refit_usages=refit_usages)
    if preprocess == "counts" and refit_usages is None:
        refit_usages = REFIT_USAGES[0]
    p = {**DEFAULTS, "max_iter": MAX_ITER, **params, "init": "random"}
    validate_params({**p, "n_components": 1, "random_state": int(random_state)})
    panels = as_panels(X, panel_rows=p["panel_rows"], storage_options=p["storage_options"])
    if preprocess == "counts":  # prepare_counts keeps min(n, top_genes) columns
        ranks = _check(ranks, (panels.shape[0], min(panels.shape[1], top_genes)), params, "the genes kept")
    else:
        ranks = _check(ranks, panels.shape, params)
    passes, preprocessing, counts = 0, None, panels
    with use_scheduler(client):
        p["client"] = active_client()
        if preprocess == "counts":
            panels, preprocessing = prepare_counts(counts, top_genes)
            passes += 1
            logger.info("counts preprocessed: %d of %d genes kept", panels.shape[1], preprocessing.fano_ratio.size)
        jobs = [(k, r) for k in ranks for r in range(int(replicates))]
        spectra: dict[int, list[np.ndarray]] = {k: [] for k in ranks}
        budget = batch_bytes or _memory_budget()
        tasks = max(1, sum(p["client"].nthreads().values()) if p["client"] is not None else _threads())
        batches = [
            [(k, int(random_state) + SEED_STRIDE * k + r) for k, r in batch]
            for batch in _batches(jobs, panels.shape, panels.dtype.itemsize, max(panels.row_chunks), tasks, budget)
        ]
        store = None
        if checkpoint is not None:
            c = checkpoint if isinstance(checkpoint, api.Checkpointing) else api.Checkpointing(checkpoint)
            settings = dict(
                ranks=ranks,
                replicates=int(replicates),
                random_state=int(random_state),
                preprocess=preprocess,
                top_genes=int(top_genes) if preprocess == "counts" else None,
            )
            store = ConsensusCheckpoint(
                c.directory, panels, p, settings, every=c.every, seconds=c.seconds, run_info=c.run_info
            )
            batches = store.plan(batches)
        for number, members in enumerate(batches, 1):
            K = sum(k for k, _ in members)
            done = None if store is None else store.finished(number)
            if done is None:
                logger.info("ensemble %d of %d: %d fits, total rank %d", number, len(batches), len(members), K)
                job = api.prepare(
                    panels,
                    {**p, "n_components": K},
                    members=members,
                    checkpointing=None if store is None else store.checkpointing(number),
                )
                if job.start is not None:
                    logger.info("ensemble %d: resuming from iteration %d", number, job.start.iteration)
                result = api.run_job(job, callback=callback)
                H, n_iter = result.H, result.n_iter
                if store is not None:
                    store.finish(number, members, H, n_iter)
            else:
                H, n_iter = done
                logger.info("ensemble %d of %d: finished in an earlier run", number, len(batches))
            passes += n_iter + 1
            for (k, _), spectrum in zip(members, _split_rows(H, [k for k, _ in members])):
                spectra[k].append(spectrum)
            if callback is not None:
                callback(None)
        outcomes = {
            k: consensus_of_rank(np.vstack(spectra[k]), k, replicates, density_threshold, neighbors) for k in ranks
        }
        H_all = np.vstack([outcomes[k][0] for k in ranks]).astype(panels.dtype)
        refit = _refit(panels, H_all, ranks, p)
        passes += 2
        losses, products = refit.member_losses, None
        if beta_to_float(p["beta_loss"]) != 2:  # cNMF's error is the Frobenius one whatever the loss
            products = usage_products(refit.W, panels, ranks)
            losses = _frobenius_losses(products, H_all, refit.norm_V, ranks)
            passes += 1
        if preprocessing is None:
            orders = _orders((products or usage_products(refit.W, None, ranks)).totals, ranks)
            usages = _usages(refit.W, ranks, orders)
            spectra_tpm = spectra_score = None
        else:
            orders, spectra_tpm, spectra_score, tpm_passes = _tpm_spectra(counts, preprocessing, refit, ranks, p)
            passes += tpm_passes
            if refit_usages == "tpm":
                H_tpm = np.vstack([tpm_refit_spectra(spectra_tpm[k], preprocessing) for k in ranks])
                final = _refit(scaled_tpm_panels(counts, preprocessing), H_tpm.astype(panels.dtype), ranks, p)
                usages = _usages(final.W, ranks)  # refit with the spectra already in order
                passes += 2
            else:
                usages = _usages(refit.W, ranks, orders)
    squared_norm = refit.norm_V**2
    scores = []
    for k, loss in zip(ranks, losses):
        error = 2.0 * float(loss)
        relative = float(np.sqrt(error / squared_norm)) if squared_norm > 0 else 0.0
        scores.append(ConsensusScore(k, outcomes[k][3], error, relative, int((outcomes[k][1] >= 0).sum())))
        logger.info("rank %d: stability %.3f, relative error %.4g", k, scores[-1].stability, relative)
    recommended, rule = recommend_k(scores)
    report = ConsensusReport(
        tuple(scores),
        recommended,
        rule,
        int(replicates),
        float(density_threshold),
        float(neighbors),
        len(batches),
        passes,
        time.perf_counter() - started,
        as_dict(preprocessing),
        refit_usages or "input",
    )
    return Consensus(
        report,
        spectra={k: outcomes[k][0][orders[k]] for k in ranks},
        usages=usages,
        density={k: outcomes[k][2] for k in ranks},
        labels={k: _relabelled(outcomes[k][1], orders[k]) for k in ranks},
        unit_spectra={k: outcomes[k][4] for k in ranks},
        refit=refit,
        preprocessing=preprocessing,
        spectra_tpm=spectra_tpm,
        spectra_score=spectra_score,
    )


def _refit(panels, H, ranks, p):
    """The usages of every rank's spectra ``H`` (stacked) against ``panels``, H fixed."""
    return api.run_job(
        api.prepare(
            panels,
            {**p, "n_components": H.shape[0], "init": None},
            H=H,
            update_H=False,
            members=[(k, None) for k in ranks],
        )
    )


def _orders(shares, ranks):
    """Each rank's components by decreasing ``shares`` (their columns' sums of the usages
    normalized per cell: cNMF's order)."""
    return {k: np.argsort(-shares[a:b], kind="stable") for k, (a, b) in zip(ranks, member_slices(ranks))}


def _relabelled(labels, order):
    """Cluster labels renumbered so that label ``j`` is consensus spectrum ``j`` in ``order``."""
    new = np.empty_like(order)
    new[order] = np.arange(order.size)
    return np.where(labels >= 0, new[np.maximum(labels, 0)], -1)


def _frobenius_losses(products, H, norm_V, ranks):
    """``½||V - U_k S_k||²`` of each rank from the products of the usages with V (their
    second half: the usages as they are) and the stacked spectra ``H``."""
    K = sum(ranks)
    crosses = [float(np.vdot(products.cross[K + a : K + b], H[a:b])) for a, b in member_slices(ranks)]
    return frobenius_losses([norm_V**2, *crosses], products.gram[K:, K:], H.astype(np.float64) @ H.T, ranks)


def _tpm_spectra(counts, preprocessing, refit, ranks, p):
    """cNMF's results in TPM units, from one pass over the counts with the usages of
    ``refit`` (module docstring), and for a beta loss other than Frobenius one pass per
    multiplicative update of the spectra: ``(orders, spectra_tpm, spectra_score, passes)``,
    the middle two dicts of rank to (k, n_input_columns) arrays in the rank's order."""
    tpm = tpm_panels(counts, preprocessing)
    products = usage_products(refit.W, tpm, ranks)
    K, passes, frobenius = sum(ranks), 1, beta_to_float(p["beta_loss"]) == 2
    orders = _orders(products.totals[:K], ranks)
    if not frobenius:  # cNMF's refit_spectra with its loss: MU with the usages fixed
        start = np.vstack([np.full((k, tpm.shape[1]), np.sqrt(preprocessing.tpm_mean.mean() / k)) for k in ranks])
        config = resolve({**p, "n_components": K, "init": "custom"}, shape=tpm.shape)
        solved = factorize(
            tpm,
            config,
            W=normalized_usages(refit.W, ranks),
            H=start.astype(tpm.dtype),
            update_W=False,
            members=[(k, None) for k in ranks],
        )
        passes += solved.n_iter + 1
        logger.info("spectra in TPM units: %d multiplicative updates", solved.n_iter)
    spectra_tpm, spectra_score = {}, {}
    for k, (a, b) in zip(ranks, member_slices(ranks)):
        order = orders[k]
        normalized, raw = np.arange(a, b)[order], np.arange(K + a, K + b)[order]
        if frobenius:
            spectra_tpm[k], n_iter = nonnegative_spectra(
                products.gram[np.ix_(normalized, normalized)], products.cross[normalized], p["tol"], p["max_iter"]
            )
            logger.info("rank %d: spectra in TPM units solved in %d iterations", k, n_iter)
        else:
            spectra_tpm[k] = np.asarray(solved.H[a:b][order], dtype=np.float64)
        spectra_score[k] = gene_scores(
            products.gram[np.ix_(raw, raw)],
            products.cross[raw],
            products.totals[raw],
            preprocessing.tpm_mean,
            preprocessing.tpm_var,
        )
    return orders, spectra_tpm, spectra_score, passes


def fit_params(params):
    """``params`` for the consensus's fits: with a beta loss other than Frobenius and no
    solver given, ``solver="mu"`` (as cNMF: coordinate descent only for Frobenius)."""
    if "solver" not in params and params.get("beta_loss", "frobenius") not in ("frobenius", 2, 2.0):
        return {**params, "solver": "mu"}
    return dict(params)


def _threads():
    from dask.system import CPU_COUNT

    return CPU_COUNT


def _split_rows(H, sizes):
    return [np.asarray(H[a:b]) for a, b in member_slices(sizes)]


def _usages(W, ranks, orders=None):
    """Each rank's block of columns of ``W`` (the usages of all ranks side by side), its
    columns in ``orders[k]`` when given."""
    blocks = {k: W[:, a:b] for k, (a, b) in zip(ranks, member_slices(ranks))}
    return blocks if orders is None else {k: blocks[k][:, orders[k]] for k in ranks}


# ----------------------------------------------------------------------------- output


#: Formats of the per-rank results :func:`write_consensus` writes.
RESULT_FORMATS = ("zarr", "h5ad")


def write_consensus(
    path: str | os.PathLike[str],
    result: Consensus,
    params: Mapping[str, Any],
    *,
    input_path: str | None = None,
    overwrite: bool = False,
    result_format: Literal["zarr", "h5ad"] = "zarr",
    labels: tuple[Sequence[str] | None, Sequence[str] | None] = (None, None),
) -> None:
    """Write a :class:`Consensus` as the directory ``path`` (a local path), whole or not
    at all: ``consensus.json``, one fit result per rank (H the consensus spectra, W the
    usages) -- ``k<K>.zarr``, or with ``result_format="h5ad"`` an AnnData file
    ``k<K>.h5ad`` whose obs/var names are ``labels``
    (the input's row and column names; the columns kept when the counts were
    preprocessed) -- with preprocessed counts also cNMF's ``k<K>.spectra_tpm.tsv`` and
    ``k<K>.spectra_score.tsv`` (every input gene, :func:`write_spectra_table`), and the
    plots (see :ref:`consensus`)."""
    from ..engine.durable import publish_directory
    from ..engine.state import FitResult
    from ..io.results import write_fit

    if result_format not in RESULT_FORMATS:
        raise ParameterError(f"result_format must be one of {', '.join(RESULT_FORMATS)}, got {result_format!r}")
    rows, genes = labels
    columns = genes
    if genes is not None and result.preprocessing is not None:
        columns = [genes[j] for j in result.preprocessing.columns]
    report, refit = result.report, result.refit
    with publish_directory(path, overwrite) as temp:
        temp.mkdir()
        (temp / "consensus.json").write_text(report.to_json())
        for score, loss in zip(report.scores, refit.member_losses):
            k = score.rank
            fitted = FitResult(
                result.usages[k],
                result.spectra[k].astype(refit.H.dtype),
                refit.n_iter,
                [loss],
                refit.converged,
                refit.norm_V,
            )
            write_fit(
                temp / f"k{k}.{result_format}",
                fitted,
                {**DEFAULTS, **params, "n_components": k, "init": "custom"},
                input_path=input_path,
                labels=(rows, columns),
            )
            if result.spectra_tpm is not None:
                write_spectra_table(temp / f"k{k}.spectra_tpm.tsv", result.spectra_tpm[k], genes)
                write_spectra_table(temp / f"k{k}.spectra_score.tsv", result.spectra_score[k], genes)  # type: ignore[index]  # made with spectra_tpm
            plot_density(result, k, temp / f"k{k}.density.png")
            plot_clustering(result, k, temp / f"k{k}.clustering.png")
        plot_k_selection(report, temp / "k_selection.png")


def write_spectra_table(
    path: str | os.PathLike[str], spectra: np.ndarray, columns: Sequence[str] | None = None
) -> None:
    """Write ``spectra`` (k x n) as cNMF writes its ``gene_spectra_*.txt``: tab-separated,
    a header of the column (gene) names (``"0"``, ``"1"``, ... when None), one row per
    component numbered from 1 (``pandas.read_csv(path, sep="\\t", index_col=0)`` reads it)."""
    names = [str(j) for j in range(spectra.shape[1])] if columns is None else [str(name) for name in columns]
    with open(path, "w", encoding="utf-8") as out:
        out.write("\t".join(["", *names]) + "\n")
        for number, row in enumerate(np.asarray(spectra, dtype=np.float64), 1):
            out.write("\t".join([str(number), *(repr(float(x)) for x in row)]) + "\n")


# ------------------------------------------------------------------------------ plots


def plot_k_selection(report: ConsensusReport, out: str | os.PathLike[str] | None = None) -> Figure:
    """Stability and error against k (cNMF's k-selection plot), the recommendation marked.

    Parameters
    ----------
    report : ConsensusReport
        ``consensus(...).report``.
    out : str or path, optional
        PNG to write.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from .plots import new_figure, save_figure

    figure = new_figure((6.4, 4.0), margins=dict(left=0.12, right=0.86, bottom=0.13, top=0.9))
    draw_k_selection(
        figure.add_subplot(1, 1, 1),
        report.ranks,
        [s.stability for s in report.scores],
        [s.relative_error for s in report.scores],
        report.recommended,
        report.replicates,
    )
    return save_figure(figure, out)


def draw_k_selection(axes, ranks, stability, relative_error, recommended, replicates):
    """:func:`plot_k_selection`'s picture on ``axes`` (its twin axes, of the error, returned)."""
    from matplotlib.ticker import MaxNLocator

    axes.plot(ranks, stability, color="tab:blue", marker="o")
    axes.set_xlabel("number of components k")
    axes.set_ylabel("stability (silhouette)", color="tab:blue")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    twin = axes.twinx()
    twin.plot(ranks, relative_error, color="tab:red", marker="s")
    twin.set_ylabel("relative error of the refit", color="tab:red")
    axes.axvline(recommended, color="black", linestyle="--", linewidth=1)
    axes.set_title(f"consensus: recommended k = {recommended} ({replicates} replicates)")
    return twin


def plot_density(result: Consensus, k: int, out: str | os.PathLike[str] | None = None) -> Figure:
    """The histogram of rank ``k``'s local densities, the threshold marked (as cNMF's).

    Parameters
    ----------
    result : Consensus
        What :func:`consensus` returned.
    k : int
        One of its ranks.
    out : str or path, optional
        PNG to write.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from .plots import new_figure, save_figure

    report = result.report
    figure = new_figure((6.4, 3.6), margins=dict(left=0.1, right=0.97, bottom=0.16, top=0.88))
    draw_density(
        figure.add_subplot(1, 1, 1),
        result.density[k],
        result.labels[k],
        k,
        report.density_threshold,
        max(1, int(report.neighbors * report.replicates)),
    )
    return save_figure(figure, out)


def draw_density(axes, density, labels, k, threshold, n_neighbors):
    """:func:`plot_density`'s picture on ``axes``."""
    dropped = int((np.asarray(labels) < 0).sum())
    axes.hist(density, bins=np.linspace(0, max(1.0, float(density.max()) if density.size else 1.0), 50))
    axes.axvline(threshold, color="black", linestyle="--", linewidth=1)
    axes.set_xlabel(f"mean distance to the {n_neighbors} nearest spectra")
    axes.set_ylabel("spectra")
    axes.set_title(f"k = {k}: local density; {dropped} of {density.size} spectra above the threshold dropped")


def plot_clustering(result: Consensus, k: int, out: str | os.PathLike[str] | None = None) -> Figure:
    """The distances between rank ``k``'s kept spectra, ordered by cluster (and within a
    cluster by average linkage), with the clusters marked: cNMF's clustergram.

    Parameters
    ----------
    result : Consensus
        What :func:`consensus` returned.
    k : int
        One of its ranks.
    out : str or path, optional
        PNG to write.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from .plots import new_figure, save_figure

    figure = new_figure((5.6, 5.0), margins=dict(left=0.08, right=0.86, bottom=0.06, top=0.92))
    axes = figure.add_subplot(1, 1, 1)
    image = draw_clustering(axes, result.labels[k], result.unit_spectra[k], k)
    figure.colorbar(image, ax=axes, fraction=0.05, label="Euclidean distance")
    return save_figure(figure, out)


def draw_clustering(axes, labels, unit, k):
    """:func:`plot_clustering`'s picture on ``axes``; returns its image (for a colorbar)."""
    from scipy.cluster.hierarchy import leaves_list, linkage

    ordered: list[int] = []
    for cluster in range(k):
        members = np.flatnonzero(labels == cluster)
        if members.size > 2:
            members = members[leaves_list(linkage(unit[members], "average"))]
        ordered.extend(members.tolist())
    order = np.asarray(ordered, dtype=np.int64)
    distances = _distances(unit[order])
    image = axes.imshow(distances, cmap="viridis", interpolation="nearest", aspect="auto")
    for edge in np.flatnonzero(np.diff(labels[order])) + 0.5:
        axes.axhline(edge, color="white", linewidth=0.6)
        axes.axvline(edge, color="white", linewidth=0.6)
    axes.set_xticks([])
    axes.set_yticks([])
    axes.set_title(f"k = {k}: distances between the {order.size} kept spectra, by cluster")
    return image
