"""Result groups, written whole or not at all.

``dnmf fit`` writes a fit result and ``dnmf transform`` a projection; both are Zarr
groups, and both (like everything else the package writes) appear on disk by one
atomic rename: the group is written into a hidden sibling directory, every file is
``fsync``-ed, then the directory is renamed to its final name. A crash leaves either no
OUT or a complete one, never half of one.

Fit result (``kind = "dnmf-fit"``)::

    OUT/                   Zarr group
      W                    (m, k) float32 or float64, row-chunked
      H                    (k, n)
      attrs  kind, version, n_iter, converged, reconstruction_err,
             relative_err (= reconstruction_err / ||V||_F), loss_history,
             params (every entry of :data:`dnmf.params.PARAMS` but ``client``), input

Transform result (``kind = "dnmf-transform"``): the same with ``W`` only, plus the
``model`` it used.

A fit written to a path ending in ``.h5ad`` is an AnnData file instead (same atomic
rename): the input's ``obs``/``var`` names, ``obsm["X_nmf"]`` = W (written row panel by
row panel), ``varm["NMF_components"]`` = Hᵀ and these attributes in ``uns["nmf"]``;
:func:`read_result` reads both kinds.

Factors held on a Dask cluster are written by the workers themselves
(:func:`dnmf.engine.durable.write_factor`): to a local path that the client and the
workers share, or to a URL (``s3://…``) that each worker writes itself. On an object
store, which has no rename, the group's root metadata is written last
(:func:`dnmf.engine.durable.new_group`): readers find no result until it is whole. The
writes and the probe of the destination before a fit are :mod:`dnmf.engine.durable`'s.

Test hook: with the environment variable ``DNMF_TEST_PAUSE_IN_RESULT_WRITE=SECONDS``,
:func:`write_fit` and :func:`write_transform` sleep that long after W is written into
the hidden directory and before the group is completed and renamed, so that a test can
kill the process in the middle of writing OUT. Unset (always, outside tests) it costs
nothing.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numpy as np
import zarr

from ..engine.durable import new_group, pause_for_tests, publish_directory, write_factor
from ..engine.location import Location
from ..errors import InputError, ParameterError
from ..params import recorded
from .adata import COMPONENTS_KEY, UNS_KEY, USAGE_KEY, read_h5ad_fit, write_h5ad
from .hdf5 import is_hdf5

__all__ = [
    "FIT_KIND",
    "H5AD_SUFFIX",
    "PAUSE_IN_RESULT_WRITE",
    "RESULT_VERSION",
    "TRANSFORM_KIND",
    "Result",
    "check_h5ad_destination",
    "open_kind",
    "read_result",
    "stored_attrs",
    "write_fit",
    "write_transform",
]

logger = logging.getLogger(__name__)

#: ``attrs["kind"]`` of a fit result.
FIT_KIND = "dnmf-fit"
#: ``attrs["kind"]`` of a transform result.
TRANSFORM_KIND = "dnmf-transform"
#: Layout version written in ``attrs["version"]``.
RESULT_VERSION = 1
#: A fit written to a path with this ending is an AnnData file.
H5AD_SUFFIX = ".h5ad"
#: Environment variable of the test hook that pauses inside :func:`write_fit`/:func:`write_transform`.
PAUSE_IN_RESULT_WRITE = "DNMF_TEST_PAUSE_IN_RESULT_WRITE"


def _relative(error, norm):
    if not (norm > 0) or not math.isfinite(norm):
        return 0.0 if error == 0 else float("inf")
    return float(error / norm)


def _fit_attrs(result, params, input_path):
    error = float(result.reconstruction_err)
    return {
        "kind": FIT_KIND,
        "version": RESULT_VERSION,
        "n_iter": int(result.n_iter),
        "converged": bool(result.converged),
        "reconstruction_err": error,
        "relative_err": _relative(error, result.norm_V),
        "loss_history": [float(loss) for loss in result.loss_history],
        "params": recorded(params),
        "input": None if input_path is None else str(input_path),
    }


def write_fit(path, result, params, *, input_path=None, overwrite=False, labels=(None, None), storage_options=None):
    """Write a fit result (layout in the module docstring); a path ending in ``.h5ad``
    gets an AnnData file instead (:func:`dnmf.io.adata.write_h5ad`).

    Parameters
    ----------
    path : str, path-like or URL
    result : dnmf.engine.state.FitResult
    params : dict
        The parameters of the fit (names of :data:`dnmf.params.PARAMS`).
    input_path : str, optional
        Recorded in ``attrs["input"]``.
    overwrite : bool
        Replace an existing ``path``; otherwise ``FileExistsError``.
    labels : tuple
        ``(row labels, column labels)`` for an ``.h5ad`` file (each None: ``"0"``, ``"1"``, ...).
    storage_options : dict, optional
        For a URL: its filesystem's options.

    Returns
    -------
    dict
        The attributes written.
    """
    attrs = _fit_attrs(result, params, input_path)
    location = Location.of(path, storage_options)
    if location.url.endswith(H5AD_SUFFIX):
        check_h5ad_destination(location)
        with publish_directory(location.path, overwrite) as temp:
            m, n = result.W.shape[0], result.H.shape[1]
            rows, columns = (
                names if names is not None else [str(i) for i in range(size)] for names, size in zip(labels, (m, n))
            )
            write_h5ad(
                temp, result.W, np.asarray(result.H), obs_names=rows, var_names=columns, uns=_without_none(attrs)
            )
            pause_for_tests(PAUSE_IN_RESULT_WRITE)
    else:
        with new_group(location, overwrite) as group:
            write_factor(group, "W", result.W)
            pause_for_tests(PAUSE_IN_RESULT_WRITE)
            write_factor(group, "H", result.H)
            group.attrs.update(attrs)
    logger.info("wrote %s (n_iter=%d, relative error %.4g)", path, attrs["n_iter"], attrs["relative_err"])
    return attrs


def _without_none(value):
    """A JSON-like value with the None entries of its mappings left out (AnnData writes no None)."""
    if isinstance(value, dict):
        return {key: _without_none(item) for key, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_without_none(item) for item in value if item is not None]
    return value


def check_h5ad_destination(location):
    """:class:`ParameterError` for an ``.h5ad`` OUT at a URL (HDF5 files are written on a disk)."""
    if not location.local:
        raise ParameterError(
            f"{location}: .h5ad results are written to a local disk only; write a Zarr result to the URL "
            "(e.g. --out s3://bucket/result.zarr), or the .h5ad file locally"
        )


def write_transform(path, result, *, model=None, input_path=None, overwrite=False, storage_options=None):
    """Write a transform result group: ``W`` and its errors (see the module docstring)."""
    error = float(result.reconstruction_err)
    attrs = {
        "kind": TRANSFORM_KIND,
        "version": RESULT_VERSION,
        "n_iter": int(result.n_iter),
        "reconstruction_err": error,
        "relative_err": _relative(error, result.norm_V),
        "model": None if model is None else str(model),
        "input": None if input_path is None else str(input_path),
    }
    with new_group(path, overwrite, storage_options) as group:
        write_factor(group, "W", result.W)
        pause_for_tests(PAUSE_IN_RESULT_WRITE)
        group.attrs.update(attrs)
    logger.info("wrote %s (relative error %.4g)", path, attrs["relative_err"])
    return attrs


# ----------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Result:
    """A result group opened read-only.

    Attributes
    ----------
    path : str
    kind : str
        :data:`FIT_KIND` or :data:`TRANSFORM_KIND`.
    W : zarr.Array, or dask.array.Array (an ``.h5ad`` fit)
    H : ndarray or None
        None for a transform result.
    attrs : dict
    """

    path: str
    kind: str
    W: zarr.Array | da.Array
    H: np.ndarray | None
    attrs: dict[str, Any]


def open_kind(path, noun, kinds, storage_options=None):
    """The Zarr group at ``path`` (a path or URL, which exists; read-only) and its
    attributes, if ``attrs['kind']`` is one of ``kinds``; ``noun`` names what was
    expected in the errors.

    Raises
    ------
    InputError
        ``path`` is not a Zarr group, or a group of another kind.
    """
    location = Location.of(path, storage_options)
    path = location.url
    try:
        group = zarr.open_group(store=location.zarr_store(), mode="r")
    except Exception as error:  # zarr raises several types for "not a group"
        raise InputError(f"{path} is not a {noun} (not a Zarr group: {error})") from None
    attrs = dict(group.attrs)
    if attrs.get("kind") not in kinds:
        raise InputError(f"{path} is not a {noun}: attrs['kind'] is {attrs.get('kind')!r}")
    return group, attrs


def read_result(path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Result:
    """Open a result read-only: a result group (at a path or URL), or a fit written as
    an ``.h5ad`` file.

    Raises
    ------
    NotFoundError
        Nothing at ``path``.
    InputError
        ``path`` is not a dnmf result.
    """
    location = Location.of(path, storage_options).checked("result")
    url: str = location.url
    if url.endswith(H5AD_SUFFIX) and location.local:
        return _read_h5ad_result(url)
    group, attrs = open_kind(location, "dnmf result", (FIT_KIND, TRANSFORM_KIND))
    kind = attrs["kind"]
    if "W" not in group or (kind == FIT_KIND and "H" not in group):
        raise InputError(f"{url} is an incomplete dnmf result: missing W or H")
    H = np.asarray(group["H"][...]) if kind == FIT_KIND else None
    return Result(url, kind, group["W"], H, attrs)


def _read_h5ad_result(path):
    fit = read_h5ad_fit(path) if is_hdf5(path) else None
    if fit is None:
        raise InputError(
            f"{path} is not a dnmf result: it has no obsm['{USAGE_KEY}'], varm['{COMPONENTS_KEY}'] and "
            f"uns['{UNS_KEY}'] (what dnmf fit --out FILE.h5ad writes)"
        )
    W, H, attrs = fit
    if attrs.get("kind") != FIT_KIND:
        raise InputError(f"{path} is not a dnmf result: uns['{UNS_KEY}']['kind'] is {attrs.get('kind')!r}")
    return Result(path, FIT_KIND, W, H, {"input": None, **attrs})


def stored_attrs(path, storage_options=None):
    """The attributes of the Zarr array or group at ``path`` (opened read-only), or ``{}``."""
    try:
        return dict(zarr.open(store=Location.of(path, storage_options).zarr_store(), mode="r").attrs)
    except Exception:  # not Zarr: no attributes to show
        return {}
