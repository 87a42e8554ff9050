"""The functional API: validated parameters in, a factorization out.

:func:`run` is what the estimator and the CLI call; :func:`non_negative_factorization`
is scikit-learn's function of the same name, returning ``(W, H, n_iter)``.
"""

from __future__ import annotations

import logging
import warnings

import dask.array as da
import numpy as np

from . import driver
from . import init as initialization
from .losses import beta_to_float
from .masked import normalize_missing
from .params import AUTO, PARAMS, compute_penalties, resolve_solver, validate_params
from .scheduler import use_scheduler
from .storage import as_panels

__all__ = ["DEFAULTS", "non_negative_factorization", "run"]

logger = logging.getLogger(__name__)

#: Default value of every parameter of the table.
DEFAULTS = {p.name: p.default for p in PARAMS}


def _log_progress(info):
    logger.info(
        "iteration %d/%d: error %.6g (relative change %.3g, %.3fs)",
        info.iteration,
        info.max_iter,
        info.error,
        info.relative_change,
        info.seconds,
    )


def run(
    X,
    params,
    *,
    W=None,
    H=None,
    update_H=True,
    callback=None,
    start=None,
    checkpointer=None,
    as_numpy=False,
):
    """Validate ``params`` (names of :data:`dnmf.params.PARAMS`) and factorize ``X``.

    Parameters
    ----------
    X : anything :func:`dnmf.storage.as_panels` accepts
    params : dict
        Missing names take their defaults.
    W, H : array-like, optional
        Custom init (``init="custom"``), or the fixed H when ``update_H=False``; checked
        as scikit-learn checks them (shape, dtype, finite, non-negative, not all zeros).
    update_H, callback, start, checkpointer
        See :func:`dnmf.driver.factorize`.
    as_numpy : bool
        Gather W into a NumPy array (on the scheduler that computed it).

    Returns
    -------
    FitResult
    """
    unknown = set(params) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown parameter(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    p = {**DEFAULTS, **params}
    validate_params(p)
    panels = as_panels(X, panel_rows=p["panel_rows"])
    validate_params(p, shape=panels.shape)
    k = p["n_components"]
    custom = update_H and p["init"] == "custom"
    if custom or not update_H:
        if not update_H and W is not None:
            warnings.warn("When update_H=False, the provided initial W is not used.", RuntimeWarning)
            W = None
        k = initialization.check_custom(W, H, panels.shape, k, panels.dtype, update_H)
    elif W is not None or H is not None:
        warnings.warn(
            "When init!='custom', provided W or H are ignored. Set init='custom' to use them as initialization.",
            RuntimeWarning,
        )
        W = H = None
    if k is None or k == AUTO:
        k = panels.shape[1]
    penalty_W, penalty_H = compute_penalties(p["alpha_W"], p["alpha_H"], p["l1_ratio"], panels.shape)
    if callback is None and p["verbose"]:
        callback = _log_progress
    solver = resolve_solver(p["solver"])
    if solver == "mu" and p["init"] == "nndsvd" and update_H:
        warnings.warn(
            "The multiplicative update ('mu') solver cannot update zeros present in the initialization, and so "
            "leads to poorer results when used jointly with init='nndsvd'. You may try init='nndsvda' or "
            "init='nndsvdar' instead.",
            UserWarning,
        )
    missing = normalize_missing(p["missing_values"])
    with use_scheduler(p["client"]):
        result = driver.factorize(
            panels,
            k,
            solver=solver,
            beta=beta_to_float(p["beta_loss"]),
            init=p["init"],
            W=W,
            H=H,
            update_H=update_H,
            max_iter=p["max_iter"],
            tol=p["tol"],
            penalty_W=penalty_W,
            penalty_H=penalty_H,
            sweeps=p["inner_sweeps"],
            extrapolate=p["extrapolate"],
            random_state=p["random_state"],
            callback=callback,
            start=start,
            checkpointer=checkpointer,
            missing=missing,
        )
        if as_numpy:
            result.W = driver.to_numpy(result.W)
    return result


def _returns_dask(X):
    import zarr

    from .storage import CSRMatrix

    return isinstance(X, (da.Array, zarr.Array, CSRMatrix, str)) or hasattr(X, "__fspath__")


def non_negative_factorization(
    X,
    W=None,
    H=None,
    n_components="auto",
    *,
    init=None,
    update_H=True,
    solver="cd",
    beta_loss="frobenius",
    tol=1e-4,
    max_iter=200,
    alpha_W=0.0,
    alpha_H="same",
    l1_ratio=0.0,
    random_state=None,
    verbose=0,
    inner_sweeps="auto",
    extrapolate="auto",
    panel_rows=None,
    client=None,
    missing_values=None,
):
    """Compute a non-negative factorization X ≈ W H, as scikit-learn's function.

    Minimizes ``D(X, WH) + penalties`` (see :class:`dnmf.NMF`) with the iterates of
    scikit-learn's solvers, out of core. With ``update_H=False``, H is fixed and W is
    solved in one pass over X.

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
    inner_sweeps, extrapolate, panel_rows, client, missing_values
        As :class:`dnmf.NMF`.

    Returns
    -------
    W : ndarray of shape (n_samples, n_components)
        A Dask array when X is a Dask array, a Zarr array or a path.
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
    )
    result = run(X, params, W=W, H=H, update_H=update_H, as_numpy=not _returns_dask(X))
    return result.W, result.H, result.n_iter
