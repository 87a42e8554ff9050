"""Sparse matrices in row-compressed form, stored: the "CSR group" layout and its reader.

A Zarr group with three 1-D arrays and two attributes::

    indptr   int64,   m + 1 entries, non-decreasing, indptr[0] == 0, indptr[m] == nnz
    indices  int32 (or int64 if n > 2**31 - 1), nnz entries, column of each value
    data     float32 or float64, nnz entries
    attrs    {"format": "csr", "shape": [m, n]}

:class:`CSRMatrix` reads rows of any three such 1-D arrays (Zarr arrays, or the lazy
HDF5 datasets of :mod:`dnmf.io.hdf5` for AnnData and 10x files). Opening one checks its
layout, including every entry of ``indptr`` (read once, in blocks of
:data:`INDPTR_CHECK_ENTRIES`), so that an inconsistent matrix is refused at the boundary,
naming the row, before any pass.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import zarr
from numpy.typing import ArrayLike, DTypeLike

from ..errors import DestinationExistsError, InputError
from .hdf5 import Dataset

__all__ = ["CSR_CHUNK_ENTRIES", "CSR_FORMAT", "INDPTR_CHECK_ENTRIES", "CSRMatrix", "save_csr", "write_csr"]

#: ``attrs["format"]`` of a CSR group.
CSR_FORMAT = "csr"
#: Chunk length (entries) of the 1-D arrays of a CSR group written by :func:`save_csr`.
CSR_CHUNK_ENTRIES = 2**20
#: Entries of ``indptr`` read at a time when a :class:`CSRMatrix` is checked.
INDPTR_CHECK_ENTRIES = 2**22


@dataclass(frozen=True)
class CSRMatrix:
    """A read-only stored CSR matrix (see the module docstring).

    Attributes
    ----------
    indptr, indices, data : zarr.Array or dnmf.io.hdf5.Dataset
        The three 1-D arrays.
    shape : tuple of int
    path : str, optional
        Where it is stored (named in errors).
    values : numpy.dtype, optional
        The dtype its values are read as (integer counts as float32); by default that of
        ``data``.
    """

    indptr: zarr.Array | Dataset
    indices: zarr.Array | Dataset
    data: zarr.Array | Dataset
    shape: tuple[int, int]
    path: str | None = None
    values: np.dtype | None = None

    @property
    def dtype(self) -> np.dtype:
        """Value dtype (as read)."""
        return self.data.dtype if self.values is None else self.values

    @property
    def nnz(self) -> int:
        """Number of stored entries."""
        return int(self.data.shape[0])

    @property
    def ndim(self) -> int:
        """Always 2."""
        return 2

    def read_rows(self, start: int, stop: int, dtype: DTypeLike | None = None) -> sp.csr_matrix:
        """Rows ``start:stop`` as a SciPy CSR matrix with values as ``dtype`` (by default
        :attr:`dtype`): one slice of each array, nothing else read or copied."""
        pointers = np.asarray(self.indptr[start : stop + 1], dtype=np.int64)
        if np.any(np.diff(pointers) < 0):
            raise InputError(f"{self.path or 'CSR input'}: inconsistent indptr: decreasing within rows {start}:{stop}")
        first, last = int(pointers[0]), int(pointers[-1])
        data = np.asarray(self.data[first:last]).astype(dtype or self.dtype, copy=False)
        indices = np.asarray(self.indices[first:last])
        return sp.csr_matrix((data, indices, pointers - first), shape=(stop - start, self.shape[1]))

    @classmethod
    def from_group(cls, group: zarr.Group, path: str | None = None) -> CSRMatrix:
        """Check a Zarr CSR group's layout and wrap it; :class:`InputError` naming what is wrong."""
        where = path or "the Zarr group"
        if group.attrs.get("format") != CSR_FORMAT:
            raise InputError(
                f"{where} is not a CSR matrix: attrs['format'] is "
                f"{group.attrs.get('format')!r}, expected {CSR_FORMAT!r}"
            )
        missing = [name for name in ("indptr", "indices", "data") if name not in group]
        if missing:
            raise InputError(f"{where} is not a CSR matrix: missing array(s) {missing}")
        shape = group.attrs.get("shape")
        if not (isinstance(shape, (list, tuple)) and len(shape) == 2):
            raise InputError(f"{where}: attrs['shape'] must be [rows, columns], got {shape!r}")
        return cls.checked(group["indptr"], group["indices"], group["data"], shape, where, path=path)

    @classmethod
    def checked(
        cls,
        indptr: Any,
        indices: Any,
        data: Any,
        shape: Sequence[Any],
        where: str,
        *,
        path: str | None = None,
        values: DTypeLike | None = None,
    ) -> CSRMatrix:
        """Wrap three 1-D arrays after checking that they are a CSR matrix of ``shape``
        (``where`` names them in the errors; ``path`` and ``values`` as the attributes)."""
        m, n = (int(s) for s in shape)
        if indptr.shape != (m + 1,):
            raise InputError(f"{where}: indptr has shape {indptr.shape}, expected ({m + 1},) for {m} rows")
        if indices.shape != data.shape:
            raise InputError(f"{where}: indices has {indices.shape[0]} entries but data has {data.shape[0]}")
        ends = [indptr[0], indptr[m]] if m else indptr[:]
        if int(ends[0]) != 0 or int(ends[-1]) != data.shape[0]:
            raise InputError(
                f"{where}: inconsistent indptr: starts at {int(ends[0])} and ends at "
                f"{int(ends[-1])}, expected 0 and nnz={data.shape[0]}"
            )
        _check_indptr_order(indptr, where)
        return cls(indptr, indices, data, (m, n), path, None if values is None else np.dtype(values))


def _check_indptr_order(indptr, where):
    """``ValueError`` naming the first row where ``indptr`` decreases (read in blocks)."""
    size = indptr.shape[0]
    for start in range(0, max(size - 1, 0), INDPTR_CHECK_ENTRIES):
        block = np.asarray(indptr[start : min(start + INDPTR_CHECK_ENTRIES + 1, size)], dtype=np.int64)
        steps = np.diff(block)
        if steps.size and steps.min() < 0:
            row = start + int(np.argmax(steps < 0))
            raise InputError(
                f"{where}: inconsistent indptr: it decreases at row {row} "
                f"(indptr[{row}] = {int(block[row - start])} > indptr[{row + 1}] = {int(block[row - start + 1])})"
            )


def save_csr(
    X: ArrayLike | sp.spmatrix | sp.sparray,
    path: str | os.PathLike[str],
    *,
    chunk_entries: int = CSR_CHUNK_ENTRIES,
    overwrite: bool = False,
) -> CSRMatrix:
    """Write a sparse (or dense) matrix to ``path`` as a Zarr CSR group.

    Parameters
    ----------
    X : scipy.sparse matrix or array-like of shape (m, n)
    path : str or path-like
    chunk_entries : int
        Chunk length of the ``indices``/``data`` arrays.
    overwrite : bool
        Replace an existing group at ``path``; otherwise ``FileExistsError``.

    Returns
    -------
    CSRMatrix
        The written matrix, opened read-only.
    """
    if Path(path).exists() and not overwrite:
        raise DestinationExistsError(f"{path} exists; pass overwrite=True to replace it")
    write_csr(zarr.open_group(str(path), mode="w"), X, chunk_entries=chunk_entries)
    return CSRMatrix.from_group(zarr.open_group(str(path), mode="r"), str(path))


def write_csr(group, X, *, chunk_entries=CSR_CHUNK_ENTRIES):
    """Write a sparse (or dense) matrix into an empty writable Zarr ``group`` (the CSR
    group layout of the module docstring)."""
    X = sp.csr_matrix(X)
    X.sort_indices()
    m, n = X.shape
    index_dtype = np.int32 if n <= np.iinfo(np.int32).max else np.int64
    size = max(1, min(chunk_entries, X.nnz))
    group.create_array("indptr", data=X.indptr.astype(np.int64), chunks=(max(1, min(chunk_entries, m + 1)),))
    group.create_array("indices", data=X.indices.astype(index_dtype), chunks=(size,))
    group.create_array("data", data=X.data, chunks=(size,))
    group.attrs.update({"format": CSR_FORMAT, "shape": [m, n]})
