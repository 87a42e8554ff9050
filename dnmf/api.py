"""The functional API: one way from a user's input and parameters to a factorization.

:func:`prepare` does everything that can fail on bad input, before any pass over V:
it validates the parameters (:func:`dnmf.params.resolve`), wraps the input once as
row panels (:func:`dnmf.io.storage.as_panels`), checks custom factors as scikit-learn
does, decides the rank, and, when asked to checkpoint, probes the checkpoint directory
and finds the state to resume from. :func:`run_job` runs the result on the chosen
scheduler. The estimator and the command line both go this way; :func:`run` is the two
in one call, and :func:`non_negative_factorization` is scikit-learn's function of the
same name, returning ``(W, H, n_iter)``.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import dask.array as da
import numpy as np
from numpy.typing import ArrayLike

from .engine import driver
from .engine.checkpoint import ZarrCheckpointer
from .engine.initialization import check_custom
from .engine.panels import Panels
from .engine.scheduler import use_scheduler
from .engine.state import FitResult, IterationInfo, LoopState
from .errors import ParameterError
from .io.storage import MatrixLike, as_panels, stays_lazy
from .params import AUTO, DEFAULTS, FitConfig, resolve

if TYPE_CHECKING:
    from distributed import Client

__all__ = [
    "DEFAULTS",
    "Checkpointing",
    "Job",
    "non_negative_factorization",
    "prepare",
    "run",
    "run_job",
    "truncated_svd",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Checkpointing:
    """Where and how often a fit saves its state (see :mod:`dnmf.engine.checkpoint`).

    Attributes
    ----------
    directory : str or path-like
        Absent, empty, or holding checkpoints of the same matrix and result-changing
        parameters (the fit then resumes from the newest).
    every : int, optional
        Save after every ``every``-th iteration.
    seconds : float, optional
        Also save when this much time passed since the last save (neither given: every
        :data:`~dnmf.engine.checkpoint.DEFAULT_EVERY` iterations).
    run_info : dict, optional
        JSON-ready notes kept with each checkpoint (the CLI keeps its input and OUT).
    resume_from : str, optional
        Resume from this checkpoint of the directory rather than the current one.
    """

    directory: str | os.PathLike[str]
    every: int | None = None
    seconds: float | None = None
    run_info: dict[str, Any] | None = None
    resume_from: str | None = None


@dataclass(frozen=True)
class Job:
    """A checked fit, ready to run (made by :func:`prepare`).

    Attributes
    ----------
    panels : Panels
        V, wrapped once.
    config : FitConfig
        The parameters, normalized, with the rank decided.
    W, H : array-like or None
        Custom initial factors, or (``update_H=False``) the fixed H.
    update_H : bool
    checkpointer : ZarrCheckpointer or None
    start : LoopState or None
        The checkpointed state the fit resumes from.
    members : tuple of (int, seed)
        An ensemble's members (see :func:`dnmf.engine.driver.factorize`); () for one fit.
    """

    panels: Panels
    config: FitConfig
    W: Any = None
    H: Any = None
    update_H: bool = True
    checkpointer: ZarrCheckpointer | None = None
    start: LoopState | None = None
    members: tuple[tuple[int, int | None], ...] = ()


def prepare(
    X: MatrixLike,
    params: Mapping[str, Any],
    *,
    W: ArrayLike | None = None,
    H: ArrayLike | None = None,
    update_H: bool = True,
    checkpointing: Checkpointing | None = None,
    spell: Callable[[str], str] | None = None,
    members: Iterable[tuple[int, int | None]] | None = None,
) -> Job:
    """Check everything about a fit of ``X`` that can be checked before it runs.

    Parameters
    ----------
    X : anything :func:`dnmf.io.storage.as_panels` accepts
    params : dict
        Names of :data:`dnmf.params.PARAMS`; missing ones take their defaults.
    W, H : array-like, optional
        Custom init (``init="custom"``), or the fixed H when ``update_H=False``; checked
        as scikit-learn checks them (shape, dtype, finite, non-negative, not all zeros).
    update_H : bool
        False solves W for a fixed H (``transform``).
    checkpointing : Checkpointing, optional
    spell : callable, optional
        ``name -> what the user typed``, for the messages (see
        :func:`dnmf.params.validate_params`).
    members : sequence of (int, seed), optional
        Fit an ensemble of independent factorizations of these ranks and seeds, which
        share each pass over V (:func:`dnmf.engine.driver.factorize`); ``n_components``
        is their sum. A checkpoint records them (a resume must fit the same members).

    Returns
    -------
    Job

    Raises
    ------
    dnmf.errors.DnmfError
        A bad parameter, input, custom factor or checkpoint directory.
    """
    config = resolve(params, spell=spell)  # the values alone, before the input is opened
    panels = as_panels(X, panel_rows=config.panel_rows, storage_options=config.storage_options)
    config = resolve(params, shape=panels.shape, spell=spell)
    k = config.n_components
    if not update_H or config.init == "custom":
        if not update_H and W is not None:
            warnings.warn("When update_H=False, the provided initial W is not used.", RuntimeWarning, stacklevel=2)
            W = None
        k = check_custom(W, H, panels.shape, k, panels.dtype, update_H)
    elif W is not None or H is not None:
        warnings.warn(
            "When init!='custom', provided W or H are ignored. Set init='custom' to use them as initialization.",
            RuntimeWarning,
            stacklevel=2,
        )
        W = H = None
    config = config.with_rank(panels.shape[1] if k == AUTO else k)
    if update_H and config.solver == "mu" and config.init == "nndsvd":
        warnings.warn(
            "The multiplicative update ('mu') solver cannot update zeros present in the initialization, and so "
            "leads to poorer results when used jointly with init='nndsvd'. You may try init='nndsvda' or "
            "init='nndsvdar' instead.",
            UserWarning,
            stacklevel=2,
        )
    members = tuple((int(k), seed) for k, seed in members) if members else ()
    if members and sum(k for k, _ in members) != config.n_components:
        raise ParameterError("an ensemble's ranks must sum to n_components")
    checkpointer = start = None
    if checkpointing is not None and update_H:
        c = checkpointing
        checkpointer = ZarrCheckpointer(
            c.directory,
            panels,
            config.params,
            every=c.every,
            seconds=c.seconds,
            run_info=c.run_info,
            resume_from=c.resume_from,
            storage_options=config.storage_options,
            members=members,
        )
        start = checkpointer.resume_state()
    return Job(panels, config, W, H, update_H, checkpointer, start, members)


def _log_progress(info):
    logger.info(
        "iteration %d/%d: error %.6g (relative change %.3g, %.3fs)",
        info.iteration,
        info.max_iter,
        info.error,
        info.relative_change,
        info.seconds,
    )


def run_job(
    job: Job, *, callback: Callable[[IterationInfo], object] | None = None, as_numpy: bool = False
) -> FitResult:
    """Run a :func:`prepare`-d fit on its scheduler (``client``, else the active one).

    Parameters
    ----------
    job : Job
    callback : callable, optional
        Called with an :class:`~dnmf.engine.state.IterationInfo` after each iteration
        (default with ``verbose``: a log line per iteration).
    as_numpy : bool
        Gather W into a NumPy array (on the scheduler that computed it).

    Returns
    -------
    FitResult
    """
    if callback is None and job.config.verbose:
        callback = _log_progress
    with use_scheduler(job.config.client):
        result = driver.factorize(
            job.panels,
            job.config,
            W=job.W,
            H=job.H,
            update_H=job.update_H,
            callback=callback,
            start=job.start,
            checkpointer=job.checkpointer,
            members=job.members,
        )
        if as_numpy:
            result.W = driver.to_numpy(result.W)
    return result


def run(
    X: MatrixLike,
    params: Mapping[str, Any],
    *,
    W: ArrayLike | None = None,
    H: ArrayLike | None = None,
    update_H: bool = True,
    callback: Callable[[IterationInfo], object] | None = None,
    checkpointing: Checkpointing | None = None,
    as_numpy: bool = False,
) -> FitResult:
    """:func:`prepare` and :func:`run_job` in one call.

    Returns
    -------
    FitResult
    """
    job = prepare(X, params, W=W, H=H, update_H=update_H, checkpointing=checkpointing)
    return run_job(job, callback=callback, as_numpy=as_numpy)


def truncated_svd(
    X: MatrixLike,
    n_components: int,
    *,
    random_state: int | np.random.RandomState | None = None,
    panel_rows: int | None = None,
    client: Client | str | None = None,
) -> tuple[da.Array, np.ndarray, np.ndarray]:
    """The truncated SVD ``X ≈ U diag(S) Vt`` that NNDSVD starts from, out of core.

    scikit-learn's ``randomized_svd`` (its oversampling and number of power
    iterations), one pass over X per power iteration (see
    :mod:`dnmf.numerics.randomized_svd`).

    Returns
    -------
    U : dask.array.Array of shape (m, k), row-chunked like the panels
    S : ndarray of shape (k,)
    Vt : ndarray of shape (k, n)
    """
    panels = as_panels(X, panel_rows=panel_rows)
    with use_scheduler(client):
        return driver.truncated_svd(panels, n_components, random_state)


def non_negative_factorization(
    X: MatrixLike,
    W: ArrayLike | None = None,
    H: ArrayLike | None = None,
    n_components: int | Literal["auto"] | None = "auto",
    *,
    init: Literal["random", "nndsvd", "nndsvda", "nndsvdar", "custom"] | None = None,
    update_H: bool = True,
    solver: Literal["cd", "hals", "mu"] = "cd",
    beta_loss: float | Literal["frobenius", "kullback-leibler", "itakura-saito"] = "frobenius",
    tol: float = 1e-4,
    max_iter: int = 200,
    alpha_W: float = 0.0,
    alpha_H: float | Literal["same"] = "same",
    l1_ratio: float = 0.0,
    random_state: int | np.random.RandomState | None = None,
    verbose: int = 0,
    inner_sweeps: int | Literal["auto"] = "auto",
    extrapolate: bool | Literal["auto"] = "auto",
    panel_rows: int | None = None,
    client: Client | str | None = None,
    missing_values: float | Literal["nan", "absent"] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> tuple[np.ndarray | da.Array, np.ndarray, int]:
    """Compute a non-negative factorization X ≈ W H, as scikit-learn's function.

    Minimizes ``D(X, WH) + penalties`` (see :class:`dnmf.NMF`) out of core. With
    ``update_H=False``, H is fixed and W is solved in one pass over X.

    Parameters
    ----------
    X : array-like, sparse matrix, Dask array, Zarr array, CSR group or path, shape (n_samples, n_features)
    W : array-like of shape (n_samples, n_components), optional
        Initial W for ``init="custom"``.
    H : array-like of shape (n_components, n_features), optional
        Initial H for ``init="custom"``; the fixed H when ``update_H=False``.
    n_components : int, "auto" or None
        Rank; "auto" (or None) takes ``H.shape[0]`` if H is used, else ``n_features``.
    init, solver, beta_loss, tol, max_iter, alpha_W, alpha_H, l1_ratio, random_state, verbose
        As :class:`dnmf.NMF`.
    update_H : bool
        Whether to update H (fit) or keep it fixed (transform).
    inner_sweeps, extrapolate, panel_rows, client, missing_values, storage_options
        As :class:`dnmf.NMF`.

    Returns
    -------
    W : ndarray of shape (n_samples, n_components)
        A Dask array when X is a Dask array, a Zarr array, a CSR group or a path.
    H : ndarray of shape (n_components, n_features)
    n_iter : int
        Iterations run.
    """
    params = dict(
        n_components=n_components,
        init=init,
        solver=solver,
        beta_loss=beta_loss,
        tol=tol,
        max_iter=max_iter,
        alpha_W=alpha_W,
        alpha_H=alpha_H,
        l1_ratio=l1_ratio,
        random_state=random_state,
        verbose=verbose,
        inner_sweeps=inner_sweeps,
        extrapolate=extrapolate,
        panel_rows=panel_rows,
        client=client,
        missing_values=missing_values,
        storage_options=storage_options,
    )
    result = run(X, params, W=W, H=H, update_H=update_H, as_numpy=not stays_lazy(X))
    return result.W, result.H, result.n_iter
