"""The files big non-negative matrices live in, opened as the stored matrices of
:mod:`dnmf.io.storage`: never whole, read row panel by row panel.

==========================  =================================================  ===========================
input                       how it is read                                      labels (rows, columns)
==========================  =================================================  ===========================
AnnData ``.h5ad``, Zarr     ``X`` or ``layers/<layer>``: dense and CSR as       ``obs_names``, ``var_names``
                            stored, CSC converted once (:mod:`.adata`)
10x Genomics ``.h5``        ``matrix``: CSC of features x barcodes = CSR of     barcodes, feature names
                            cells x features, as stored (:mod:`.tenx`)
10x MEX directory           ``matrix.mtx(.gz)`` converted once, transposed      barcodes, feature names
MatrixMarket ``.mtx(.gz)``  converted once (:mod:`.mtx`)                        none
==========================  =================================================  ===========================

A conversion writes a Zarr CSR group (the ``store``; by default beside the input, named
``<input>.csr.zarr``, or ``<input>.<layer>.csr.zarr``), streaming, in bounded memory, and
is reused while the input is unchanged (:mod:`dnmf.io.convert`).

Integer values (counts, as 10x and AnnData store them) are read as float32 unless
``dtype="float64"`` is asked for; float32 and float64 values keep their dtype. The input
is only ever opened read-only.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError, ParameterError
from .adata import anndata_element, anndata_labels, is_anndata, is_anndata_zarr
from .convert import converted, entries_to_csr, source_record
from .hdf5 import is_hdf5, opened
from .mtx import convert_mtx, is_mtx, read_header
from .tenx import is_mex, mex_files, mex_labels, open_10x_h5, open_mex, tenx_h5_labels

__all__ = ["FORMAT_NAMES", "default_store", "format_of", "matrix_labels", "open_anndata", "open_format", "read_as"]

#: What :func:`format_of` names each format.
FORMAT_NAMES = ("h5ad", "anndata-zarr", "10x-h5", "10x-mex", "mtx")
#: Dtypes a user may ask values to be read as.
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def read_as(stored, requested=None):
    """The dtype values are computed in: ``requested`` (float32 or float64) if given;
    else float32/float64 as stored and float32 for integer counts."""
    if requested is not None:
        try:
            requested = np.dtype(requested)
        except TypeError:
            requested = None
        if requested not in DTYPES:
            raise ParameterError(f"dtype must be float32 or float64, got {requested!r}")
        return requested
    stored = np.dtype(stored)
    if stored in DTYPES:
        return stored
    if stored.kind in "iub":
        return np.dtype(np.float32)
    raise InputError(f"values of dtype {stored} are not counts or real numbers")


def format_of(path):
    """The name (of :data:`FORMAT_NAMES`) of the file at ``path``, or None for the others."""
    path = os.fspath(path)
    if is_mtx(path):
        return "mtx"
    if os.path.isdir(path):
        return "10x-mex" if is_mex(path) else ("anndata-zarr" if is_anndata_zarr(path) else None)
    if path.endswith(".h5ad"):
        return "h5ad"
    if path.endswith((".h5", ".hdf5")) or is_hdf5(path):
        with opened(path) as handle:
            return "h5ad" if "encoding-type" in handle.attrs else "10x-h5"
    return None


def default_store(path, layer=None):
    """Where the conversion of ``path`` goes unless a store is named."""
    path = Path(path).absolute()
    return path.parent / f"{path.name}{'' if layer is None else '.' + layer}.csr.zarr"


def open_format(path, *, layer=None, dtype=None, store=None, progress=None):
    """Open ``path`` if it is one of the formats of this module, else return None.

    Parameters
    ----------
    path : path
    layer : str, optional
        An AnnData layer instead of ``X``.
    dtype : {"float32", "float64"}, optional
        Read values as this dtype (see the module docstring).
    store : path, optional
        Where a conversion goes (see the module docstring).
    progress : callable, optional
        Called with the entries read as a conversion goes.

    Returns
    -------
    CSRMatrix, zarr.Array, Dataset or None
    """
    path = os.fspath(path)
    kind = format_of(path)
    if kind is None:
        return None
    if layer is not None and kind not in ("h5ad", "anndata-zarr"):
        raise ParameterError(f"layer={layer!r}: {path} is a {kind} file, which has no layers (AnnData files do)")
    store = default_store(path, layer) if store is None else Path(store).absolute()

    def values_of(stored):
        return read_as(stored, dtype)

    def reuse_or_write(values, write):
        """The conversion in ``store``: reused while current, else ``write(record, overwrite)``."""
        record = source_record(path, layer=layer, dtype=str(values))
        return converted(store, record, lambda overwrite: write(record, overwrite))

    def convert(entries, shape, values):
        return reuse_or_write(
            values,
            lambda record, overwrite: entries_to_csr(
                entries,
                shape,
                store,
                values,
                source=record,
                what=path,
                progress=progress,
                overwrite=overwrite,
            ),
        )

    if kind == "10x-h5":
        return open_10x_h5(path, values_of)
    if kind in ("10x-mex", "mtx"):
        matrix_file = mex_files(path)["matrix"] if kind == "10x-mex" else path
        values = values_of(np.float64 if read_header(matrix_file)[3] == "real" else np.int64)
        read = open_mex if kind == "10x-mex" else convert_mtx
        return reuse_or_write(
            values,
            lambda record, overwrite: read(
                path,
                store,
                values,
                source=record,
                progress=progress,
                overwrite=overwrite,
            ),
        )
    return anndata_element(path, layer, values_of, convert)


def matrix_labels(path):
    """``(row labels, column labels)`` of a file of these formats, or ``(None, None)``."""
    kind = format_of(path)
    if kind in ("h5ad", "anndata-zarr"):
        return anndata_labels(path)
    if kind == "10x-h5":
        return tenx_h5_labels(path)
    if kind == "10x-mex":
        return mex_labels(path)
    return None, None


def open_anndata(adata, *, layer=None, dtype=None, store=None):
    """The matrix of an ``anndata.AnnData``: from its file when opened with ``backed="r"``
    (a view of such an object is refused: its file's matrix is not the view's),
    else the NumPy/SciPy matrix it holds (integer counts as float32: a copy; the
    AnnData is not changed)."""
    if not is_anndata(adata):
        raise InputError(f"expected an AnnData, got {type(adata).__name__}")
    if adata.isbacked:
        if adata.is_view:
            raise InputError(
                "a view of a backed AnnData: dnmf reads a backed object's matrix from its file, whole; "
                "pass the backed object itself, or the view in memory (view.to_memory())"
            )
        return open_format(adata.filename, layer=layer, dtype=dtype, store=store)
    if layer is not None and layer not in adata.layers:
        raise InputError(f"the AnnData has no layer {layer!r}; its layers are {sorted(adata.layers) or 'none'}")
    X = adata.X if layer is None else adata.layers[layer]
    if X is None:
        raise InputError(f"the AnnData has no X; name one of its layers ({sorted(adata.layers) or 'none'})")
    values = read_as(X.dtype, dtype)
    return X if X.dtype == values else X.astype(values)
