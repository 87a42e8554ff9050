"""HDF5 datasets as the panel readers need them: opened by name in the process that reads.

An ``h5py.Dataset`` holds an open file handle, which neither pickles nor crosses to a
worker process. :class:`Dataset` is the file's path and the dataset's name: every read
opens the file (read-only), reads its slice and closes it, so the panel reads of
:mod:`dnmf.io.storage` run on any worker that sees the file, and no process keeps the
file open between reads (HDF5 refuses to rewrite a file that a process holds open). An
open costs well under a millisecond; a panel read, tens of milliseconds.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np

from ..errors import InputError, MissingDependencyError

__all__ = ["Dataset", "is_hdf5", "opened"]

#: The first bytes of every HDF5 file.
SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Entries a contiguous (unchunked) 1-D dataset counts as one chunk (for readers that go by chunks).
CONTIGUOUS_CHUNK_ENTRIES = 2**20


def _h5py():
    try:
        import h5py
    except ImportError:
        raise MissingDependencyError(
            'reading HDF5 files (.h5ad, 10x .h5) needs h5py: pip install "dnmf[anndata]"'
        ) from None
    return h5py


def is_hdf5(path):
    """Whether the file at ``path`` starts with HDF5's signature."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SIGNATURE)) == SIGNATURE
    except OSError:
        return False


@contextlib.contextmanager
def opened(path):
    """The read-only ``h5py.File`` of ``path`` for the block (closed after: a file that
    dnmf reads stays free to be replaced by its owner)."""
    path = os.fspath(path)
    try:
        handle = _h5py().File(path, "r")
    except OSError as error:
        raise InputError(f"{path} is not a readable HDF5 file ({' '.join(str(error).split())})") from None
    with handle:
        yield handle


class Dataset:
    """A dataset of an HDF5 file, read by slices (``dataset[a:b]``) as NumPy arrays.

    Parameters
    ----------
    path : str
        The file.
    name : str
        The dataset's path inside it (``"X/data"``).
    dtype : numpy dtype, optional
        Read values as this dtype (the stored one by default).
    """

    def __init__(self, path, name, dtype=None):
        self.path, self.name = os.fspath(path), name
        with opened(self.path) as handle:
            stored = handle[name]
            self.shape, self.ndim = tuple(stored.shape), stored.ndim
            stored_dtype, chunks = stored.dtype, stored.chunks
        self.dtype = np.dtype(dtype) if dtype is not None else stored_dtype
        self.chunks = chunks or (CONTIGUOUS_CHUNK_ENTRIES if self.ndim == 1 else 1, *self.shape[1:])

    def __reduce__(self):
        return (Dataset, (self.path, self.name, self.dtype))

    def __repr__(self):
        return f"Dataset({self.path!r}, {self.name!r}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, key):
        with opened(self.path) as handle:
            return np.asarray(handle[self.name][key]).astype(self.dtype, copy=False)

    def get_coordinate_selection(self, positions):
        """The entries at ``positions`` (a 1-D dataset; any order)."""
        positions = np.asarray(positions, dtype=np.int64)
        unique, inverse = np.unique(positions, return_inverse=True)
        return self[unique.tolist()][inverse] if unique.size else np.empty(0, self.dtype)
