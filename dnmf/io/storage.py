"""Every input becomes the same thing here: a row-panel Dask array.

The boundary of the package. NumPy arrays, SciPy sparse matrices, pandas frames,
Dask arrays (dense or with SciPy sparse chunks), dense Zarr arrays and CSR matrices
stored in Zarr all come out of :func:`as_panels` as a :class:`Panels`: a Dask array
chunked in row panels only (one chunk spans all columns), whose blocks are ndarrays
or SciPy CSR matrices, with float32 or float64 values. Nothing downstream branches
on where the data came from.

Sparse matrices in Zarr use the "CSR group" layout of :mod:`dnmf.io.csr` (write one with
:func:`save_csr`). The files of single-cell biology and text mining (AnnData ``.h5ad``
and Zarr stores, 10x Genomics HDF5 and MEX, MatrixMarket) are read by :mod:`dnmf.io.formats`.
Open any input with :func:`open_matrix`; inputs are always opened read-only.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
from collections.abc import Callable
from typing import Any, TypeAlias

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
import zarr
from dask.system import CPU_COUNT
from numpy.typing import ArrayLike, DTypeLike

from ..engine.location import Location, is_url, store_error
from ..engine.panels import PanelRead, Panels, stacked
from ..errors import InputError, InputTypeError, NotFoundError, ParameterError, StoreError
from .adata import CastArray, is_anndata
from .csr import CSR_FORMAT, CSRMatrix, save_csr
from .formats import open_anndata, open_format, read_as
from .hdf5 import Dataset

__all__ = [
    "CSR_FORMAT",
    "DEFAULT_PANEL_BYTES",
    "CSRMatrix",
    "MatrixLike",
    "as_panels",
    "open_matrix",
    "save_csr",
    "stays_lazy",
    "value_dtype",
]

#: Target size of one row panel of V in memory (dense bytes, or data+indices for CSR).
DEFAULT_PANEL_BYTES = 64 * 2**20
#: In-memory input and stored CSR are split into at least one panel per core when each holds this much.
MIN_PARALLEL_PANEL_BYTES = 4 * 2**20
#: Value dtypes kept as they are; everything else numeric becomes float64 (as scikit-learn).
KEPT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: What :func:`as_panels` takes as V (and so ``dnmf.NMF`` and the applications): NumPy
#: arrays and other array-likes (pandas frames), SciPy sparse matrices, Dask and Zarr
#: arrays, stored CSR matrices, ``Panels``, and paths or URLs of stored matrices.
MatrixLike: TypeAlias = (
    ArrayLike | sp.spmatrix | sp.sparray | da.Array | zarr.Array | CSRMatrix | Panels | str | os.PathLike[str]
)


def open_matrix(
    path: str | os.PathLike[str],
    *,
    layer: str | None = None,
    dtype: DTypeLike | None = None,
    store: str | os.PathLike[str] | None = None,
    progress: Callable[[int], object] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> zarr.Array | CSRMatrix | Dataset | CastArray | np.ndarray | sp.csr_matrix:
    """Open a stored matrix read-only.

    Parameters
    ----------
    path : str or path-like
        A dense 2-D Zarr array, a Zarr CSR group, a ``.npy`` file (memory-mapped), a
        ``.npz`` file written by ``scipy.sparse.save_npz``, or a file of
        :ref:`inputs`: AnnData (``.h5ad`` or Zarr), 10x Genomics (``.h5`` or a
        MEX directory), MatrixMarket (``.mtx``, ``.mtx.gz``). Or the URL of a Zarr
        array, CSR group, ``.npy`` or ``.npz`` file in an object store (``s3://…``,
        any fsspec URL; see :ref:`object-storage`): Zarr chunks are read by the
        tasks that use them, a ``.npy``/``.npz`` file is read whole into memory.
    layer : str, optional
        For AnnData files: read ``layers[layer]`` instead of ``X``.
    dtype : {"float32", "float64"}, optional
        Read values as this dtype. By default float32 and float64 are kept, the integer
        counts of AnnData, 10x and MatrixMarket files are read as float32, and other
        integers as float64 (as scikit-learn).
    store : path, optional
        Where a MatrixMarket, MEX or CSC AnnData input is converted to a CSR group, once
        (default: beside the input, see :ref:`inputs`).
    progress : callable, optional
        Called with the number of entries read as a conversion goes.
    storage_options : dict, optional
        For a URL: the options of its fsspec filesystem (credentials, ``endpoint_url``);
        by default the standard ways (for S3: the ``AWS_*`` environment variables,
        including ``AWS_ENDPOINT_URL``, profiles, instance roles).

    Returns
    -------
    zarr.Array, CSRMatrix, Dataset, numpy.memmap or scipy.sparse.csr_matrix

    Raises
    ------
    NotFoundError
        Nothing at ``path``.
    InputError
        ``path`` holds something else.
    """
    if is_url(path) or isinstance(path, Location):
        location = Location.of(path, storage_options)
        if location.local:
            return open_matrix(location.path, layer=layer, dtype=dtype, store=store, progress=progress)
        opened = _open_remote(location.checked("input"), layer)
    else:
        path = os.fspath(path)
        if not os.path.exists(path):
            raise NotFoundError(f"input not found: {path}")
        opened = open_format(path, layer=layer, dtype=dtype, store=store, progress=progress)
        if opened is not None:
            return opened
        if layer is not None:
            raise ParameterError(f"layer={layer!r}: {path} is not an AnnData file (only those have layers)")
        opened = _open_plain(path)
    if dtype is None:
        return opened
    values = read_as(opened.dtype, dtype)
    if isinstance(opened, CSRMatrix):
        return dataclasses.replace(opened, values=values)
    if isinstance(opened, zarr.Array):
        return CastArray(opened, values)
    return opened.astype(values)


def _open_plain(path):
    """A Zarr array or CSR group, ``.npy`` or ``.npz`` file."""
    if path.endswith(".npy"):
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, EOFError) as error:
            raise InputError(f"{path} is not a NumPy .npy file of numbers ({' '.join(str(error).split())})") from None
    if path.endswith(".npz"):
        try:
            return sp.load_npz(path).tocsr()
        except (ValueError, OSError, KeyError) as error:
            raise InputError(f"{path} is not a SciPy sparse .npz file ({error})") from None
    try:
        node = zarr.open(store=path, mode="r")
    except Exception as error:  # zarr raises several types for "not zarr"
        raise InputError(f"{path} is not a Zarr array or CSR group ({' '.join(str(error).split())})") from None
    return _zarr_matrix(node, path)


def _zarr_matrix(node, where):
    """A Zarr group as a :class:`CSRMatrix`, or a 2-D Zarr array as it is."""
    if isinstance(node, zarr.Group):
        return CSRMatrix.from_group(node, where)
    if node.ndim != 2:
        raise InputError(f"{where} holds a {node.ndim}-D array; expected a 2-D matrix")
    return node


def _open_remote(location, layer):
    """A Zarr array or CSR group, ``.npy`` or ``.npz`` file at a URL."""
    url = location.url
    if layer is not None or url.endswith((".h5ad", ".h5", ".hdf5", ".mtx", ".mtx.gz")):
        raise InputError(
            f"{url}: only Zarr arrays, CSR groups, .npy and .npz files are read from URLs; copy this file to a "
            "local disk and give its path (AnnData, 10x and MatrixMarket files are read there)"
        )
    if url.endswith((".npy", ".npz")):
        try:
            content = io.BytesIO(location.read_bytes())
            return np.load(content) if url.endswith(".npy") else sp.load_npz(content).tocsr()
        except (ValueError, EOFError, OSError, KeyError) as error:
            problem = store_error(error, url, "input")
            if isinstance(problem, StoreError) or problem is None:
                raise InputError(
                    f"{url} is not a {url[-4:]} file of numbers ({' '.join(str(error).split())})"
                ) from None
            raise problem from None
    try:
        node = location.open_zarr("r", "input")
    except (FileNotFoundError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{url} is not a Zarr array or CSR group ({' '.join(str(error).split())})") from None
    return _zarr_matrix(node, url)


# ----------------------------------------------------------------------- row panels


def value_dtype(dtype: DTypeLike, what: str) -> np.dtype:
    """float32/float64 kept; other real numbers → float64; complex → :class:`InputError`;
    others → :class:`InputTypeError` (naming ``what`` and the dtype)."""
    dtype = np.dtype(dtype)
    if dtype in KEPT_DTYPES:
        return dtype
    if dtype.kind in "iuf":
        return np.dtype(np.float64)
    if dtype.kind == "c":
        raise InputError(f"Complex data not supported: {what} has dtype {dtype}")
    kind = {"b": "boolean", "O": "object", "U": "string", "S": "bytes"}
    raise InputTypeError(
        f"{what} has {kind.get(dtype.kind, 'non-numeric')} dtype {dtype}; "
        "NMF needs real numbers (float32, float64 or integers)"
    )


def _check_shape(shape, what):
    if len(shape) != 2:
        raise InputError(f"{what} must be 2-D (rows x columns), got {len(shape)}-D shape {tuple(shape)}")
    if shape[0] == 0 or shape[1] == 0:
        raise InputError(f"{what} is empty: shape {tuple(shape)}; need at least 1 row and 1 column")


def _even_bounds(m, rows_per_panel):
    """Row chunks of at most ``rows_per_panel`` rows, as even as possible."""
    n_panels = max(1, math.ceil(m / max(1, rows_per_panel)))
    base, extra = divmod(m, n_panels)
    return tuple(base + (i < extra) for i in range(n_panels))


def _dense_rows(n, itemsize, panel_bytes):
    return max(1, panel_bytes // max(1, n * itemsize))


def _sparse_rows(m, nnz, itemsize, panel_bytes):
    per_row = max(1.0, nnz / max(1, m)) * (itemsize + 4)
    return max(1, int(panel_bytes // per_row))


def _panel_bounds(m, default_rows, panel_rows, nbytes):
    """Panels of about ``panel_bytes`` each, but at least one per core while each keeps
    :data:`MIN_PARALLEL_PANEL_BYTES` (the cores share the work of a pass).

    In-memory input and stored CSR take this one rule, so a matrix fitted from memory
    and from its CSR group is cut into the same panels and gives the same factors."""
    if panel_rows is None:
        per_core = max(1, math.ceil(m / CPU_COUNT))
        if nbytes / CPU_COUNT >= MIN_PARALLEL_PANEL_BYTES:
            default_rows = min(default_rows, per_core)
    return _even_bounds(m, panel_rows or default_rows)


def _sparse_bounds(m, nnz, itemsize, panel_rows, panel_bytes):
    """:func:`_panel_bounds` of a CSR matrix with ``nnz`` entries (values and int32 indices)."""
    default_rows = _sparse_rows(m, nnz, itemsize, panel_bytes)
    return _panel_bounds(m, default_rows, panel_rows, nnz * (itemsize + 4))


def _view_panels(X, bounds, view, meta):
    """In-memory input as panels that are views of it: panel ``i`` is ``view(X, start_i, stop_i)``.

    Views, not ``da.from_array``, which copies the whole input first (0.6 s and twice
    the memory for a 320 MB matrix), nor slices made in the tasks, which copy a sparse
    panel at every pass (a fifth of a pass over a 100000 x 20000 tf-idf matrix). Nothing
    in dnmf writes into a panel.
    """
    starts = np.concatenate([[0], np.cumsum(bounds)]).astype(int)
    pieces = [
        da.from_delayed(
            dask.delayed(view(X, int(a), int(b)), traverse=False),
            shape=(int(b - a), X.shape[1]),
            dtype=X.dtype,
            meta=meta,
        )
        for a, b in zip(starts[:-1], starts[1:])
    ]
    return pieces[0] if len(pieces) == 1 else da.concatenate(pieces, axis=0)


def _rows_of(X, start, stop):
    return X[start:stop]


def _as_dtype(block, dtype):
    return block.astype(dtype, copy=False)


def stays_lazy(X: Any) -> bool:
    """Whether results for ``X`` stay Dask arrays: Dask, Zarr, CSR-group and path inputs
    (which may not fit in memory); NumPy, SciPy and pandas inputs give NumPy results."""
    if is_anndata(X):
        return bool(X.isbacked)
    return isinstance(X, (da.Array, zarr.Array, Dataset, CastArray, CSRMatrix, Panels, str, os.PathLike, Location))


def as_panels(
    X: MatrixLike,
    panel_rows: int | None = None,
    panel_bytes: int = DEFAULT_PANEL_BYTES,
    storage_options: dict[str, Any] | None = None,
) -> Panels:
    """Wrap any supported input as row panels (no values are read or copied here; only
    the ``indptr`` entries at the panel edges of a CSR group).

    Parameters
    ----------
    X : array-like, scipy.sparse matrix, dask.array.Array, zarr.Array, CSRMatrix, str or path
        The matrix V (m x n). A path is opened with :func:`open_matrix`.
    panel_rows : int, optional
        Rows per panel. By default panels hold about ``panel_bytes``; for Zarr and Dask
        inputs panels are whole multiples of the stored row chunks, so each stored chunk
        belongs to exactly one panel and is read once per pass (a CSR group's chunks of
        entries cannot follow row edges: one straddling two panels is read by both).
    panel_bytes : int
        Memory target of one panel.
    storage_options : dict, optional
        For a URL ``X``: its filesystem's options (see :func:`open_matrix`).

    Returns
    -------
    Panels
    """
    if panel_rows is not None and (not isinstance(panel_rows, (int, np.integer)) or panel_rows < 1):
        raise ParameterError(f"panel_rows must be a positive integer, got {panel_rows!r}")
    if isinstance(X, (str, os.PathLike, Location)):
        X = open_matrix(X, storage_options=storage_options)
    if is_anndata(X):
        X = open_anndata(X)
    if isinstance(X, Panels):
        return X
    if isinstance(X, CSRMatrix):
        return _csr_group_panels(X, panel_rows, panel_bytes)
    if isinstance(X, (zarr.Array, Dataset, CastArray)):
        return _stored_dense_panels(X, panel_rows, panel_bytes)
    if isinstance(X, da.Array):
        return _dask_panels(X, panel_rows, panel_bytes)
    if sp.issparse(X):
        return _scipy_panels(X, panel_rows, panel_bytes)
    return _numpy_panels(X, panel_rows, panel_bytes)


def _numpy_panels(X, panel_rows, panel_bytes):
    X = np.asarray(X)
    if X.dtype.kind == "O":
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as error:
            raise InputTypeError(f"input has object dtype that is not numeric ({error})") from None
    _check_shape(X.shape, "input")
    dtype = value_dtype(X.dtype, "input")
    X = X.astype(dtype, copy=False)
    bounds = _panel_bounds(X.shape[0], _dense_rows(X.shape[1], dtype.itemsize, panel_bytes), panel_rows, X.nbytes)
    return Panels(_view_panels(X, bounds, _rows_of, X[:0]), sparse=False, in_memory=True)


def _csr_rows_view(X, start, stop):
    """Rows ``start:stop`` of a CSR matrix sharing its ``data`` and ``indices``.

    Slicing copies them, and so does the constructor given views of a much larger array
    (SciPy "prunes" them), so the arrays are set on an empty matrix of the right shape.
    """
    lo, hi = X.indptr[start], X.indptr[stop]
    view = sp.csr_matrix((stop - start, X.shape[1]), dtype=X.dtype)
    view.data, view.indices, view.indptr = X.data[lo:hi], X.indices[lo:hi], X.indptr[start : stop + 1] - lo
    return view


def _scipy_panels(X, panel_rows, panel_bytes):
    _check_shape(X.shape, "input")
    dtype = value_dtype(X.dtype, "input")
    X = sp.csr_matrix(X, dtype=dtype)
    bounds = _sparse_bounds(X.shape[0], X.nnz, dtype.itemsize, panel_rows, panel_bytes)
    array = _view_panels(X, bounds, _csr_rows_view, sp.csr_matrix((0, 0), dtype=dtype))
    return Panels(array, sparse=True, in_memory=True, nnz=int(X.nnz))


def _stored_multiple(chunk_rows, m, default_rows, panel_rows):
    """Panels made of whole stored chunks (the last one may be short)."""
    wanted = panel_rows or default_rows
    per_panel = max(1, wanted // chunk_rows) * chunk_rows
    starts = list(range(0, m, per_panel))
    return tuple(min(per_panel, m - s) for s in starts)


def _stored_dense_panels(X, panel_rows, panel_bytes):
    """Panels of a dense stored array (Zarr, HDF5) in whole stored row chunks."""
    _check_shape(X.shape, "stored input")
    dtype = value_dtype(X.dtype, "stored input")
    m, n = X.shape
    bounds = _stored_multiple(X.chunks[0], m, _dense_rows(n, dtype.itemsize, panel_bytes), panel_rows)
    edges = np.concatenate([[0], np.cumsum(bounds)]).astype(int)
    reads = tuple(PanelRead(_read_dense_rows, X, int(a), int(b), dtype) for a, b in zip(edges[:-1], edges[1:]))
    return Panels(stacked(reads, bounds, n, dtype, np.empty((0, 0), dtype)), sparse=False, in_memory=False, reads=reads)


def _read_dense_rows(X, start, stop, dtype):
    """Rows ``start:stop`` of a dense stored array, as ``dtype``."""
    return np.asarray(X[start:stop]).astype(dtype, copy=False)


def _csr_group_panels(X, panel_rows, panel_bytes):
    """Panels of a stored CSR matrix (a Zarr CSR group, AnnData, 10x).

    Each panel's read (:class:`~dnmf.engine.panels.PanelRead`) takes its slices of
    ``indptr``, ``indices`` and ``data`` and assembles them, inside the task that uses
    the panel. A stored chunk that straddles a panel edge is read by both panels.
    """
    _check_shape(X.shape, "CSR input")
    dtype = value_dtype(X.dtype, "CSR input")
    m, n = X.shape
    bounds = _sparse_bounds(m, X.nnz, dtype.itemsize, panel_rows, panel_bytes)
    edges = np.concatenate([[0], np.cumsum(bounds)]).astype(np.int64).tolist()
    reads = tuple(PanelRead(CSRMatrix.read_rows, X, start, stop, dtype) for start, stop in zip(edges[:-1], edges[1:]))
    array = stacked(reads, bounds, n, dtype, sp.csr_matrix((0, 0), dtype=dtype))
    return Panels(array, sparse=True, in_memory=False, reads=reads, nnz=X.nnz)


def _to_csr(block):
    return sp.csr_matrix(block)


def _dask_panels(X, panel_rows, panel_bytes):
    _check_shape(X.shape, "Dask input")
    if any(math.isnan(c) for c in X.shape):
        raise InputError("Dask input has unknown chunk sizes; call compute_chunk_sizes() first")
    dtype = value_dtype(X.dtype, "Dask input")
    sparse = sp.issparse(X._meta)
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})
    if panel_rows is not None:
        X = X.rechunk({0: panel_rows})
    if X.dtype != dtype:
        meta = sp.csr_matrix((0, 0), dtype=dtype) if sparse else np.empty((0, 0), dtype)
        X = X.map_blocks(_as_dtype, dtype, dtype=dtype, meta=meta)
    if sparse:
        X = X.map_blocks(_to_csr, dtype=dtype, meta=sp.csr_matrix((0, 0), dtype=dtype))
    return Panels(X, sparse=sparse, in_memory=False, from_dask=True)
