"""``dnmf.NMF``: a scikit-learn estimator that is a drop-in for ``sklearn.decomposition.NMF``.

The estimator validates in-memory input as scikit-learn does and hands the rest to
:mod:`dnmf.api` (the CLI's way too); it keeps NumPy results only (fitted models pickle
and never hold a cluster's futures).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Literal

import dask.array as da
import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from . import api
from .errors import InputError, ParameterError
from .io.adata import is_anndata
from .io.formats import open_anndata
from .io.storage import MatrixLike, stays_lazy, value_dtype
from .numerics.losses import loss_to_error
from .params import DEFAULTS, beta_to_float, normalize_missing

if TYPE_CHECKING:
    from distributed import Client
    from typing_extensions import Self

__all__ = ["NMF"]


class NMF(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Non-negative matrix factorization, out of core on Dask.

    Finds non-negative ``W`` (n_samples x n_components) and ``H`` (n_components x
    n_features) minimizing, as scikit-learn's ``NMF``::

        D(X, WH) + alpha_W * l1_ratio * n_features * ||W||_1
                 + alpha_H * l1_ratio * n_samples * ||H||_1
                 + 0.5 * alpha_W * (1 - l1_ratio) * n_features * ||W||_F^2
                 + 0.5 * alpha_H * (1 - l1_ratio) * n_samples * ||H||_F^2

    where ``D`` is ½ the squared Frobenius norm or a beta-divergence. ``X`` may be a
    NumPy array, a SciPy sparse matrix, a pandas DataFrame, a Dask array, a Zarr array,
    a :class:`dnmf.CSRMatrix` or a path to one; it is read in row panels, once per
    iteration, and never held whole in memory.

    Parameters
    ----------
    n_components : int, "auto" or None, default="auto"
        Rank. "auto" (or None): ``n_features``, or ``H.shape[0]`` with custom H.
    init : {"random", "nndsvd", "nndsvda", "nndsvdar", "custom"} or None, default=None
        None picks "nndsvda" if ``n_components <= min(n_samples, n_features)``, else
        "random" (as scikit-learn).
    solver : {"cd", "hals", "mu"}, default="cd"
        "cd" (also "hals"): hierarchical alternating least squares, scikit-learn's
        coordinate descent; "mu": multiplicative updates (any beta-divergence).
    beta_loss : float or {"frobenius", "kullback-leibler", "itakura-saito"}, default="frobenius"
        Beta-divergence to minimize; other than "frobenius" needs ``solver="mu"``.
    tol : float, default=1e-4
        Tolerance of the stopping rule, for every solver: stop when the passes left would
        change the error by less than ``tol`` (relative), as read from the rate at which
        the last errors converge; for "cd" also scikit-learn's test, a projected-gradient
        violation at most ``tol`` times the first pass's (see :ref:`stopping`).
    max_iter : int, default=200
        Maximum number of iterations (passes over X).
    random_state : int, RandomState instance or None, default=None
        Seed of the "random" and "nndsvd*" initializations.
    alpha_W : float, default=0.0
        Weight of the penalties on W.
    alpha_H : float or "same", default="same"
        Weight of the penalties on H; "same" uses ``alpha_W``.
    l1_ratio : float, default=0.0
        Share of L1 in the penalties, in [0, 1].
    verbose : int, default=0
        Log every iteration (``logging``, logger ``dnmf``) when > 0.
    inner_sweeps : int or "auto", default="auto"
        HALS sweeps (MU updates) of each factor per pass over X. "auto": for "cd"
        without missing values on a matrix whose pass costs at least 100,000 stored entries
        (its entries plus ``(m + n) k / 2`` for the sweeps), as many
        as their cost against the pass's products allows (at most 10); else 1 (see
        :ref:`stopping`).
    extrapolate : bool or "auto", default="auto"
        Extrapolated HALS (``solver="cd"``, no ``missing_values``): from the second pass
        on, W and H move on along their last update by an adaptive step (Ang & Gillis,
        2019; see :ref:`stopping`). "auto": on where "auto" sweeps are.
        ``inner_sweeps=1, extrapolate=False`` gives scikit-learn's iterates to rounding
        (as "auto" does on smaller matrices).
    panel_rows : int or None, default=None
        Rows of X per task (default: about 64 MiB; Zarr/Dask inputs: whole stored chunks).
    client : distributed.Client, str or None, default=None
        Where to run: a Client, a scheduler address, or None for the active Client
        (else Dask's threaded scheduler).
    missing_values : {None, np.nan, "absent"}, default=None
        Entries left out of the loss and of the updates (masked NMF: weighted MU for
        ``solver="mu"``, HALS with per-row Grams for ``solver="cd"``):
        np.nan (or "nan") marks NaN entries of a dense X as missing; "absent" makes every
        absent entry of a sparse X missing (ratings; stored zeros are observed). The loss
        and ``reconstruction_err_`` are over observed entries only, and ``W @ H``
        predicts the missing ones (see :ref:`missing-values`).
    checkpoint : str, path-like or None, default=None
        Directory of crash-safe checkpoints (see :ref:`checkpoints`). ``fit``
        resumes automatically when it holds a checkpoint of the same matrix and the same
        result-changing parameters (``max_iter`` may differ), starts afresh when it holds
        none, and raises :class:`~dnmf.errors.CheckpointMismatch` (a ``ValueError``)
        naming the differences otherwise.
    checkpoint_every : int, default=10
        Save a checkpoint after every ``checkpoint_every`` iterations (and at the end).
    storage_options : dict or None, default=None
        Options of the fsspec filesystem when X or ``checkpoint`` is a URL (``s3://…``,
        ``gs://…``, ``abfs://…``): credentials, ``endpoint_url``, and so on. By default
        the filesystem finds them the standard ways (for S3: the ``AWS_*`` environment
        variables, including ``AWS_ENDPOINT_URL``, profiles, instance roles). They are
        never logged, nor written into checkpoints or results.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        H, the dictionary.
    n_components_ : int
        The rank used (``_n_components`` too, as scikit-learn names it).
    reconstruction_err_ : float
        ``sqrt(2 * D(X, WH))`` for the returned W and H: the Frobenius norm of
        ``X - WH`` for the Frobenius loss.
    n_iter_ : int
        Iterations run.
    loss_history_ : list of float
        ``D(X, W_t H_t)`` for t = 0 (the initialization) … ``n_iter_``; the last entry is
        the loss of the returned factors.
    n_features_in_ : int
        Number of columns of X.
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Column names, when X is a DataFrame with string column names.

    Notes
    -----
    As scikit-learn's, ``fit_transform(X)`` returns the last iterate's W, and
    ``fit(X).transform(X)`` solves W again with H fixed: the two are close, not equal.
    """

    def __init__(
        self,
        n_components: int | Literal["auto"] | None = "auto",
        *,
        init: Literal["random", "nndsvd", "nndsvda", "nndsvdar", "custom"] | None = None,
        solver: Literal["cd", "hals", "mu"] = "cd",
        beta_loss: float | Literal["frobenius", "kullback-leibler", "itakura-saito"] = "frobenius",
        tol: float = 1e-4,
        max_iter: int = 200,
        random_state: int | np.random.RandomState | None = None,
        alpha_W: float = 0.0,
        alpha_H: float | Literal["same"] = "same",
        l1_ratio: float = 0.0,
        verbose: int = 0,
        inner_sweeps: int | Literal["auto"] = "auto",
        extrapolate: bool | Literal["auto"] = "auto",
        panel_rows: int | None = None,
        client: Client | str | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 10,
        missing_values: float | Literal["nan", "absent"] | None = None,
        storage_options: dict[str, Any] | None = None,
    ) -> None:
        self.n_components = n_components
        self.init = init
        self.solver = solver
        self.beta_loss = beta_loss
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.alpha_W = alpha_W
        self.alpha_H = alpha_H
        self.l1_ratio = l1_ratio
        self.verbose = verbose
        self.inner_sweeps = inner_sweeps
        self.extrapolate = extrapolate
        self.panel_rows = panel_rows
        self.client = client
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.missing_values = missing_values
        self.storage_options = storage_options

    # ------------------------------------------------------------------ boundary

    def _params(self):
        return {name: getattr(self, name) for name in DEFAULTS}

    def _check_input(self, X, reset):
        """In-memory input through scikit-learn's checks; out-of-core input as is (an
        AnnData: its matrix, see :func:`dnmf.io.formats.open_anndata`)."""
        if is_anndata(X):
            X = open_anndata(X)
        if stays_lazy(X):
            if reset:
                self.n_features_in_ = int(X.shape[1]) if hasattr(X, "shape") else None
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
            return X
        dtype = getattr(X, "dtype", None)
        if dtype is not None and np.dtype(dtype).kind in "bcUS":
            value_dtype(dtype, "X")  # boolean, complex, text: an error naming the dtype; scikit-learn checks the rest
        return validate_data(
            self,
            X,
            accept_sparse=("csr", "csc", "coo"),
            dtype=[np.float64, np.float32],
            reset=reset,
            ensure_all_finite="allow-nan" if self._nan_missing() else True,
        )

    def _nan_missing(self):
        try:
            return normalize_missing(self.missing_values) == "nan"
        except ParameterError:
            return False  # reported by the parameter checks

    # ----------------------------------------------------------------------- API

    def fit_transform(
        self, X: MatrixLike, y: Any = None, W: ArrayLike | None = None, H: ArrayLike | None = None
    ) -> np.ndarray | da.Array:
        """Learn the factorization of X and return W.

        Parameters
        ----------
        X : array-like, sparse matrix, Dask array, Zarr array or path, shape (n_samples, n_features)
        y : Ignored
        W : array-like of shape (n_samples, n_components), optional
            Initial W when ``init="custom"``.
        H : array-like of shape (n_components, n_features), optional
            Initial H when ``init="custom"``.

        Returns
        -------
        W : ndarray of shape (n_samples, n_components)
            A Dask array for Dask, Zarr or path input.
        """
        X = self._check_input(X, reset=True)
        checkpointing = (
            None if self.checkpoint is None else api.Checkpointing(self.checkpoint, every=self.checkpoint_every)
        )
        result = api.run(X, self._params(), W=W, H=H, checkpointing=checkpointing, as_numpy=not stays_lazy(X))
        if self.n_features_in_ is None:
            self.n_features_in_ = int(result.H.shape[1])
        self.components_ = result.H
        self.n_components_ = self._n_components = int(result.H.shape[0])
        self.n_iter_ = int(result.n_iter)
        self.loss_history_ = [float(v) for v in result.loss_history]
        self.reconstruction_err_ = loss_to_error(result.loss)
        self._beta = beta_to_float(self.beta_loss)
        return result.W

    def fit(self, X: MatrixLike, y: Any = None, **params: ArrayLike | None) -> Self:
        """Learn the factorization of X.

        Parameters
        ----------
        X : array-like, sparse matrix, Dask array, Zarr array or path, shape (n_samples, n_features)
        y : Ignored
        **params
            ``W`` and ``H`` for ``init="custom"``.

        Returns
        -------
        self : NMF
        """
        self.fit_transform(X, **params)
        return self

    def transform(self, X: MatrixLike) -> np.ndarray | da.Array:
        """W for new rows X with the learned H fixed (one pass over X).

        Parameters
        ----------
        X : array-like, sparse matrix, Dask array, Zarr array or path, shape (n_samples, n_features)

        Returns
        -------
        W : ndarray of shape (n_samples, n_components)
            A Dask array for Dask, Zarr or path input.
        """
        check_is_fitted(self)
        X = self._check_input(X, reset=False)
        if X.shape[1] != self.components_.shape[1]:
            raise InputError(
                f"X has {X.shape[1]} features, but NMF is expecting {self.components_.shape[1]} features as input"
            )
        params = {**self._params(), "n_components": self.n_components_}
        H = self.components_.astype(_transform_dtype(X), copy=False)
        return api.run(X, params, H=H, update_H=False, as_numpy=not stays_lazy(X)).W

    def inverse_transform(self, X: ArrayLike | sp.spmatrix | sp.sparray | da.Array) -> np.ndarray | da.Array:
        """Map W back to the data space: ``X @ components_``.

        Parameters
        ----------
        X : ndarray, sparse matrix or Dask array of shape (n_samples, n_components)

        Returns
        -------
        X_original : ndarray (or Dask array) of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        return X @ self.components_

    @property
    def _n_features_out(self):
        """Number of transformed output features (for ``get_feature_names_out``)."""
        return self.components_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        tags.input_tags.sparse = True
        tags.input_tags.allow_nan = self._nan_missing()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _transform_dtype(X):
    dtype = np.dtype(getattr(X, "dtype", np.float64))
    return dtype if dtype in (np.dtype(np.float32), np.dtype(np.float64)) else np.dtype(np.float64)
