"""MatrixMarket ``.mtx`` / ``.mtx.gz`` (coordinate; real, integer or pattern; general).

The header is read by SciPy (:func:`scipy.io.mminfo`); the entries are streamed, a block
of lines at a time, into a CSR group (:func:`dnmf.io.convert.entries_to_csr`), which is
then what every pass reads. ``transpose`` turns a features x cells file (10x MEX) into
cells x features as it streams.
"""

from __future__ import annotations

import gzip
import os
import warnings

import numpy as np
import scipy.io

from ..errors import InputError
from .convert import entries_to_csr

__all__ = ["BLOCK_BYTES", "convert_mtx", "is_mtx", "read_header"]

#: Bytes of text parsed at a time (the parse holds a few times as much).
BLOCK_BYTES = 8 * 2**20
#: Fields of MatrixMarket that dnmf reads.
FIELDS = ("real", "integer", "pattern")


def is_mtx(path):
    """Whether ``path`` is named as a MatrixMarket file."""
    return os.fspath(path).endswith((".mtx", ".mtx.gz"))


def _open(path):
    path = os.fspath(path)
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def read_header(path):
    """``(rows, columns, entries, field)`` of a MatrixMarket file we can read.

    Raises
    ------
    InputError
        Not MatrixMarket, or a kind dnmf does not read (dense ``array`` format, complex
        values, a symmetric matrix).
    """
    path = os.fspath(path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as handle:
                rows, columns, entries, layout, field, symmetry = scipy.io.mminfo(handle)
        else:  # SciPy's reader aborts the process on some plain file objects: give it the name
            rows, columns, entries, layout, field, symmetry = scipy.io.mminfo(path)
    except (ValueError, OSError, EOFError, RuntimeError) as error:
        raise InputError(f"{path}: not a MatrixMarket file we can read ({' '.join(str(error).split())})") from None
    if layout != "coordinate":
        raise InputError(f"{path}: MatrixMarket {layout!r} format; dnmf reads 'coordinate' (sparse) files")
    if field not in FIELDS:
        raise InputError(f"{path}: MatrixMarket field {field!r}; dnmf reads {', '.join(FIELDS)} values")
    if symmetry != "general":
        raise InputError(f"{path}: a {symmetry} MatrixMarket matrix; dnmf reads 'general' ones")
    return int(rows), int(columns), int(entries), field


def _blocks(path, field, entries, transpose):
    """``(rows, columns, values)`` blocks of the file's entries (0-based)."""
    width = 2 if field == "pattern" else 3
    seen = 0
    with _open(path) as handle:
        line = handle.readline()
        while line.startswith(b"%") or not line.strip():  # the banner, comments, blank lines
            line = handle.readline()
        rest = b""  # the size line is ``line``; entries follow
        while True:
            chunk = handle.read(BLOCK_BYTES)
            text = rest + chunk
            if chunk:
                cut = text.rfind(b"\n") + 1
                text, rest = text[:cut], text[cut:]
            if text.strip():
                table = _parse(text, width, path, seen)
                seen += table.shape[0]
                first, second = table[:, 0].astype(np.int64) - 1, table[:, 1].astype(np.int64) - 1
                values = np.ones(table.shape[0]) if field == "pattern" else table[:, 2]
                yield (second, first, values) if transpose else (first, second, values)
            if not chunk:
                break
    if seen != entries:
        raise InputError(f"{path}: the header declares {entries} entries but the file holds {seen}")


def _parse(text, width, path, seen):
    """The entries of whole lines of text as an ``(entries, width)`` float64 array (NumPy's
    C parser: a few bytes of memory per byte of text). A line with too few or too many
    numbers shows in the count (here, or against the header's at the end)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)  # NumPy's word for "stopped at a bad token"
        try:
            numbers = np.fromstring(text.decode("ascii"), dtype=np.float64, sep=" ")
        except (ValueError, DeprecationWarning, UnicodeDecodeError):
            numbers = None
    if numbers is None or numbers.size % width:
        raise InputError(f"{path}: unreadable entries after entry {seen} (expected {width} numbers a line)")
    return numbers.reshape(-1, width)


def convert_mtx(path, store, dtype, *, source, transpose=False, progress=None, overwrite=False):
    """Stream a MatrixMarket file into the CSR group ``store`` (see :mod:`dnmf.io.convert`).

    Parameters
    ----------
    path : path
    store : path
    dtype : numpy dtype
        Value dtype of the group.
    source : dict
        Recorded in the group (:func:`dnmf.io.convert.source_record`).
    transpose : bool
        Store the transpose (cells x features from a features x cells file).
    progress : callable, optional
        Called with the entries of each block read.
    overwrite : bool

    Returns
    -------
    CSRMatrix
    """
    rows, columns, entries, field = read_header(path)
    shape = (columns, rows) if transpose else (rows, columns)
    return entries_to_csr(
        lambda: _blocks(path, field, entries, transpose),
        shape,
        store,
        dtype,
        source=source,
        what=os.fspath(path),
        progress=progress,
        overwrite=overwrite,
    )
