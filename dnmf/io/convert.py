"""Entries in any order (MatrixMarket, CSC columns, 10x MEX) into a CSR group, out of core.

:func:`entries_to_csr` makes two passes over a stream of ``(rows, columns, values)``
blocks: the first counts the entries of each row (``indptr``), the second scatters each
block into disk-backed scratch arrays at its rows' places; each row's entries are then
sorted by column, block by block, and copied into the Zarr arrays. Memory holds one
block, ``indptr`` (8 bytes a row) and a write buffer: never the matrix.

The group records the file it came from (path, size, modification time, and what was
read of it), so that a later open of the same file reuses it (:func:`converted`), a
changed file is converted again, and a store holding anything else is refused rather
than replaced.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import zarr

from ..engine.durable import TEMP_PREFIX, publish_directory
from ..errors import DestinationExistsError, InputError
from .csr import CSR_CHUNK_ENTRIES, CSR_FORMAT, CSRMatrix

__all__ = ["SORT_BLOCK_ENTRIES", "converted", "entries_to_csr", "source_record"]

logger = logging.getLogger(__name__)

#: Entries sorted (and copied into Zarr) at a time.
SORT_BLOCK_ENTRIES = 2**22


def source_record(path, **read):
    """What identifies a converted file: its path, size and modification time, and
    ``read`` (the layer, the dtype, ...)."""
    status = os.stat(path)
    return {"path": os.fspath(Path(path).absolute()), "size": status.st_size, "mtime_ns": status.st_mtime_ns, **read}


def converted(store, record, write):
    """The conversion of ``record``'s file at ``store``: reused while it is current,
    written by ``write(overwrite)`` when absent or made from an older version of the same
    file; :class:`DestinationExistsError` if ``store`` holds anything else."""
    store = Path(store)
    if not store.exists():
        return write(False)
    try:
        group = zarr.open_group(str(store), mode="r")
        recorded = group.attrs.get("source")
    except Exception:  # not a Zarr group: not ours to replace
        recorded = None
    if recorded == record:
        return CSRMatrix.from_group(group, str(store))
    if isinstance(recorded, dict) and recorded.get("path") == record["path"]:
        logger.info("%s changed since %s was converted from it: converting again", record["path"], store)
        return write(True)
    raise DestinationExistsError(
        f"{store} exists and is not a conversion of {record['path']} (remove it, or choose another store)"
    )


def _checked(block, shape, what):
    rows, columns, values = (np.asarray(part) for part in block)
    if rows.size:
        if rows.min() < 0 or rows.max() >= shape[0] or columns.min() < 0 or columns.max() >= shape[1]:
            bad = np.flatnonzero((rows < 0) | (rows >= shape[0]) | (columns < 0) | (columns >= shape[1]))[0]
            raise InputError(
                f"{what}: entry ({rows[bad]}, {columns[bad]}) (0-based) lies outside the shape {tuple(shape)}"
            )
        if values.min() < 0:
            bad = int(np.argmin(values))
            raise InputError(
                f"{what}: negative value {values[bad].item()!r} at ({rows[bad]}, {columns[bad]}) (0-based)"
            )
    return rows.astype(np.int64, copy=False), columns, values


def _groups(rows):
    """Sort order of ``rows`` and, for each entry in that order, its place among its row's."""
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    unique, first, counts = np.unique(ordered, return_index=True, return_counts=True)
    return order, ordered, unique, counts, np.arange(ordered.size) - np.repeat(first, counts)


def entries_to_csr(passes, shape, store, dtype, *, source, what, progress=None, overwrite=False):
    """Write the matrix whose entries ``passes()`` yields as a CSR group at ``store``.

    Parameters
    ----------
    passes : callable
        Each call returns a fresh iterator of ``(rows, columns, values)`` blocks
        (0-based indices; entries may come in any order; repeats are summed by SciPy).
    shape : tuple of int
    store : path
        The group to write (published whole, in one rename).
    dtype : numpy dtype
        Value dtype of the group.
    source : dict
        :func:`source_record` of the converted file, kept in ``attrs["source"]``.
    what : str
        Names the input in errors.
    progress : callable, optional
        Called with the number of entries of each block read (twice per entry: two passes).
    overwrite : bool
        Replace ``store`` if it exists.

    Returns
    -------
    CSRMatrix
    """
    m, n = (int(s) for s in shape)
    counts = np.zeros(m + 1, np.int64)
    for block in passes():
        rows, _, _ = _checked(block, (m, n), what)
        _, _, unique, per_row, _ = _groups(rows)
        counts[unique + 1] += per_row
        if progress is not None:
            progress(rows.size)
    indptr = np.cumsum(counts)
    nnz = int(indptr[-1])
    index_dtype = np.int32 if n <= np.iinfo(np.int32).max else np.int64
    store = Path(store).absolute()
    store.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{store.name}-scratch-", dir=store.parent))
    try:
        indices, data = _scratch(scratch / "indices.npy", index_dtype, nnz), _scratch(scratch / "data.npy", dtype, nnz)
        cursor = indptr[:-1].copy()
        for block in passes():
            rows, columns, values = _checked(block, (m, n), what)
            order, ordered, unique, per_row, rank = _groups(rows)
            places = cursor[ordered] + rank
            indices[places] = columns[order]
            data[places] = values[order]
            cursor[unique] += per_row
            if progress is not None:
                progress(rows.size)
        if not np.array_equal(cursor, indptr[1:]):
            raise InputError(f"{what}: the second read gave other entries than the first (did the file change?)")
        _sort_rows(indptr, indices, data)
        with publish_directory(store, overwrite) as temp:
            group = zarr.open_group(str(temp), mode="w")
            size = max(1, min(CSR_CHUNK_ENTRIES, nnz))
            group.create_array("indptr", data=indptr, chunks=(max(1, min(CSR_CHUNK_ENTRIES, m + 1)),))
            for name, scratch_array in (("indices", indices), ("data", data)):
                target = group.create_array(name, shape=(nnz,), dtype=scratch_array.dtype, chunks=(size,))
                step = size * max(1, SORT_BLOCK_ENTRIES // size)
                for start in range(0, nnz, step):
                    target[start : start + step] = scratch_array[start : start + step]
            group.attrs.update({"format": CSR_FORMAT, "shape": [m, n], "source": source})
        del indices, data
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return CSRMatrix.from_group(zarr.open_group(str(store), mode="r"), str(store))


def _scratch(path, dtype, size):
    """A disk-backed array of ``size`` entries (in memory when empty: nothing to map)."""
    if size == 0:
        return np.empty(0, dtype)
    return np.lib.format.open_memmap(path, "w+", np.dtype(dtype), (size,))


def _sort_rows(indptr, indices, data):
    """Sort every row's entries by column, in place, about :data:`SORT_BLOCK_ENTRIES` at a time."""
    m = indptr.size - 1
    row = 0
    while row < m:
        stop = max(row + 1, int(np.searchsorted(indptr, indptr[row] + SORT_BLOCK_ENTRIES, side="right")) - 1)
        stop = min(stop, m)
        lo, hi = int(indptr[row]), int(indptr[stop])
        if hi > lo:
            owner = np.repeat(np.arange(stop - row), np.diff(indptr[row : stop + 1]))
            order = np.lexsort((indices[lo:hi], owner))
            indices[lo:hi] = indices[lo:hi][order]
            data[lo:hi] = data[lo:hi][order]
        row = stop
