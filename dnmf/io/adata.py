"""AnnData: ``.h5ad`` files, AnnData Zarr stores and ``anndata.AnnData`` objects.

Rows are ``obs`` (cells), columns ``var`` (genes). The matrix is ``X`` or one of
``layers`` (``layer="counts"``), read from the file element by element as AnnData's
on-disk format lays it out: a dense array, or a group with ``encoding-type``
``csr_matrix`` (read as it is, row panels straight from ``data``/``indices``/``indptr``)
or ``csc_matrix`` (transposed once, out of core, into a CSR group; see
:mod:`dnmf.io.convert`). An ``AnnData`` opened with ``backed="r"`` is read from its file;
an in-memory one is used as the NumPy/SciPy matrix it holds.

:func:`write_h5ad` writes a fit as an AnnData file: the input's ``obs``/``var`` names,
``obsm["X_nmf"]`` = W (streamed in row panels), ``varm["NMF_components"]`` = Hᵀ, and the
fit's parameters and errors in ``uns["nmf"]``; no ``X``. :func:`read_h5ad_fit` reads it back.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import dask.array as da
import numpy as np
import zarr

from ..engine.driver import to_numpy
from ..errors import InputError, MissingDependencyError
from .csr import CSRMatrix
from .hdf5 import Dataset, is_hdf5, opened

__all__ = [
    "ANNDATA_ENCODING",
    "COMPONENTS_KEY",
    "USAGE_KEY",
    "UNS_KEY",
    "anndata_element",
    "anndata_labels",
    "anndata_summary",
    "is_anndata",
    "is_anndata_zarr",
    "read_h5ad_fit",
    "row_panels",
    "write_h5ad",
]

#: ``attrs["encoding-type"]`` of an AnnData file's root.
ANNDATA_ENCODING = "anndata"
#: Where :func:`write_h5ad` puts W, Hᵀ and the fit's record.
USAGE_KEY, COMPONENTS_KEY, UNS_KEY = "X_nmf", "NMF_components", "nmf"


def _anndata():
    try:
        import anndata
    except ImportError:
        raise MissingDependencyError('AnnData files need anndata: pip install "dnmf[anndata]"') from None
    return anndata


def is_anndata(X):
    """Whether ``X`` is an ``anndata.AnnData`` (checked without importing anndata)."""
    return any(cls.__name__ == "AnnData" and cls.__module__.startswith("anndata") for cls in type(X).__mro__)


def is_anndata_zarr(path):
    """Whether ``path`` is a Zarr group written by AnnData."""
    try:
        return zarr.open_group(store=os.fspath(path), mode="r").attrs.get("encoding-type") == ANNDATA_ENCODING
    except Exception:  # not a Zarr group
        return False


@contextlib.contextmanager
def _root(path):
    """The root group of an AnnData file (h5py, closed after the block) or store (Zarr), checked."""
    path = os.fspath(path)
    if os.path.isdir(path):
        files = contextlib.nullcontext(zarr.open_group(store=path, mode="r"))
    elif is_hdf5(path):
        files = opened(path)
    else:
        raise InputError(f"{path} is not an AnnData file (neither HDF5 nor a Zarr store)")
    with files as root:
        if root.attrs.get("encoding-type") != ANNDATA_ENCODING:
            encoding = root.attrs.get("encoding-type")
            raise InputError(f"{path} is not an AnnData file (its root's encoding-type is {encoding!r})")
        yield root


def _layers(root):
    """Names of an AnnData file's layers."""
    return sorted(root["layers"].keys()) if "layers" in root else []


def _text(value):
    return value.decode() if isinstance(value, bytes) else str(value)


def anndata_summary(path, layer=None):
    """What an AnnData file holds, read from its metadata (nothing converted): the
    element's encoding, shape, stored dtype and entries, and the layers."""
    with _root(path) as root:
        name = "X" if layer is None else f"layers/{layer}"
        summary = {"element": name, "layers": _layers(root)}
        if name in root:
            element = root[name]
            encoding = element.attrs.get("encoding-type", "array")
            sparse = encoding in ("csr_matrix", "csc_matrix") and "data" in element
            summary.update(
                encoding=encoding,
                shape=[int(s) for s in (element.attrs["shape"] if sparse else element.shape)],
                stored_dtype=str(element["data"].dtype if sparse else element.dtype),
                nnz=int(element["data"].shape[0]) if sparse else "not counted (dense)",
            )
        return summary


def anndata_element(path, layer, values_of, convert):
    """The matrix ``X`` (or ``layers/<layer>``) of an AnnData file or store.

    Parameters
    ----------
    path : path
    layer : str or None
    values_of : callable
        ``values_of(stored_dtype)``: the dtype values are read as.
    convert : callable
        ``convert(entries, shape, dtype)`` for a CSC element: writes the CSR group and
        returns it (``entries()`` yields ``(rows, columns, values)`` blocks).

    Returns
    -------
    CSRMatrix, zarr.Array or Dataset
    """
    path = os.fspath(path)
    with _root(path) as root:
        name = "X" if layer is None else f"layers/{layer}"
        if layer is not None and layer not in _layers(root):
            raise InputError(f"{path} has no layer {layer!r}; its layers are {_layers(root) or 'none'}")
        if name not in root:
            raise InputError(f"{path} has no X; name one of its layers ({_layers(root) or 'none'})")
        element = root[name]
        encoding = element.attrs.get("encoding-type", "array")
        where = f"{path}:{name}"
        if encoding in ("csr_matrix", "csc_matrix"):
            missing = [part for part in ("data", "indices", "indptr") if part not in element]
            if missing:
                raise InputError(f"{where} is a {encoding} missing {missing}")
            shape = tuple(int(s) for s in element.attrs["shape"])
            values = values_of(element["data"].dtype)
            if encoding == "csc_matrix":
                return convert(lambda: _csc_entries(element), shape, values)
            parts = [_part(path, element, f"{name}/{part}") for part in ("indptr", "indices", "data")]
            return CSRMatrix.checked(*parts, shape, where, path=path, values=values)
        if encoding != "array" or getattr(element, "ndim", 0) != 2:
            raise InputError(f"{where} is a {encoding!r} element; dnmf reads dense arrays, csr_matrix and csc_matrix")
        values = values_of(element.dtype)
        if isinstance(element, zarr.Array):
            return element if element.dtype == values else CastArray(element, values)
        return Dataset(path, name, values)


def _part(path, element, name):
    return element[name.rsplit("/", 1)[1]] if isinstance(element, zarr.Group) else Dataset(path, name)


#: Columns of a CSC element read at a time when transposing it.
CSC_BLOCK_ENTRIES = 2**22


def _csc_entries(element):
    """``(rows, columns, values)`` blocks of a stored CSC element, column block by block."""
    indptr = np.asarray(element["indptr"][:], dtype=np.int64)
    column = 0
    n = indptr.size - 1
    while column < n:
        stop = min(
            n, max(column + 1, int(np.searchsorted(indptr, indptr[column] + CSC_BLOCK_ENTRIES, side="right")) - 1)
        )
        lo, hi = int(indptr[column]), int(indptr[stop])
        rows = np.asarray(element["indices"][lo:hi], dtype=np.int64)
        columns = np.repeat(np.arange(column, stop), np.diff(indptr[column : stop + 1]))
        yield rows, columns, np.asarray(element["data"][lo:hi])
        column = stop


class CastArray:
    """A dense stored array read as another dtype (integer counts as float32)."""

    def __init__(self, array, dtype):
        self.array, self.dtype = array, np.dtype(dtype)
        self.shape, self.ndim, self.chunks = array.shape, array.ndim, array.chunks

    def __getitem__(self, key):
        return np.asarray(self.array[key]).astype(self.dtype, copy=False)


def anndata_labels(path):
    """``(obs_names, var_names)`` of an AnnData file or store."""
    with _root(path) as root:
        return tuple(_index(root, axis) for axis in ("obs", "var"))


def _index(root, axis):
    frame = root[axis]
    column = frame[frame.attrs.get("_index", "_index")]
    values = column.asstr()[()] if hasattr(column, "asstr") else column[...]
    return [_text(value) for value in np.asarray(values).ravel()]


#: Rows of an in-memory W written at a time by :func:`write_h5ad`.
WRITE_ROWS = 2**16


def row_panels(W):
    """W's row panels as NumPy arrays, one at a time: the blocks of a Dask W (never
    gathered whole), slices of an array, or the panels of an iterable as they come."""
    if isinstance(W, da.Array):
        for i in range(W.numblocks[0]):
            yield to_numpy(W.blocks[i])
    elif hasattr(W, "shape"):
        for start in range(0, W.shape[0], WRITE_ROWS):
            yield np.asarray(W[start : start + WRITE_ROWS])
    else:
        yield from W


def write_h5ad(path, W, H, *, obs_names, var_names, uns):
    """Write a fit as an ``.h5ad`` file at ``path`` (a new file).

    Parameters
    ----------
    path : path
    W : ndarray, dask.array.Array or iterable of ndarray
        W, or its row panels in order (see :func:`row_panels`: written as they come, W
        is never whole here).
    H : ndarray of shape (k, n)
    obs_names, var_names : sequence of str
    uns : dict
        The fit's record (JSON-like), stored as ``uns["nmf"]``.
    """
    anndata = _anndata()
    import h5py
    import pandas as pd

    obs_names, var_names = [str(name) for name in obs_names], [str(name) for name in var_names]
    k = H.shape[0]
    skeleton = anndata.AnnData(
        obs=pd.DataFrame(index=pd.Index(obs_names)),
        var=pd.DataFrame(index=pd.Index(var_names)),
        varm={COMPONENTS_KEY: np.ascontiguousarray(H.T)},
        uns={UNS_KEY: uns},
    )
    skeleton.write_h5ad(Path(path))
    with h5py.File(path, "r+") as handle:
        usage = handle["obsm"].create_dataset(
            USAGE_KEY,
            shape=(len(obs_names), k),
            dtype=H.dtype,
            chunks=(max(1, min(len(obs_names), 2**16)), k),
        )
        usage.attrs["encoding-type"], usage.attrs["encoding-version"] = "array", "0.2.0"
        row = 0
        for panel in row_panels(W):
            usage[row : row + panel.shape[0]] = panel
            row += panel.shape[0]
        if row != len(obs_names):
            raise InputError(f"W has {row} rows but there are {len(obs_names)} obs names")


def _plain(value):
    """What AnnData reads back from ``uns`` as plain Python (NumPy scalars and arrays
    become numbers, strings, booleans and lists): the JSON-like record that was written."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_h5ad_fit(path):
    """The fit :func:`write_h5ad` wrote at ``path``: ``(W, H, record)``, or None if the
    file holds no such fit.

    W is lazy (a Dask array over ``obsm["X_nmf"]``, read by row chunks, never whole here);
    H is ``varm["NMF_components"]ᵀ``; the record is ``uns["nmf"]`` as plain Python.
    """
    _anndata()
    from anndata.io import read_elem

    usage, components, record = f"obsm/{USAGE_KEY}", f"varm/{COMPONENTS_KEY}", f"uns/{UNS_KEY}"
    with opened(path) as handle:
        if not all(name in handle for name in (usage, components, record)):
            return None
        H = np.ascontiguousarray(np.asarray(handle[components][...]).T)
        uns = _plain(read_elem(handle[record]))
    W = Dataset(path, usage)
    return da.from_array(W, chunks=(W.chunks[0], W.shape[1]), name=False), H, uns
