"""HDF5 datasets as the panel readers need them: opened by name in the process that reads.

An ``h5py.Dataset`` holds an open file handle, which neither pickles nor crosses to a
worker process. :class:`Dataset` is the file's path and the dataset's name: each process
opens the file once (read-only, cached in :data:`_OPEN`) on its first read, so the
reading tasks of :mod:`dnmf.io.storage` run on any worker that sees the file.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from ..errors import InputError, MissingDependencyError

__all__ = ["Dataset", "is_hdf5", "open_file"]

#: The first bytes of every HDF5 file.
SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: Entries a contiguous (unchunked) 1-D dataset counts as one chunk (for sharing reads).
CONTIGUOUS_CHUNK_ENTRIES = 2**20

#: ``{path: h5py.File}`` opened by this process.
_OPEN = {}
_LOCK = threading.Lock()


def _h5py():
    try:
        import h5py
    except ImportError:
        raise MissingDependencyError(
            "reading HDF5 files (.h5ad, 10x .h5) needs h5py: pip install \"dnmf[anndata]\""
        ) from None
    return h5py


def is_hdf5(path):
    """Whether the file at ``path`` starts with HDF5's signature."""
    try:
        with open(path, "rb") as handle:
            return handle.read(len(SIGNATURE)) == SIGNATURE
    except OSError:
        return False


def open_file(path):
    """The read-only ``h5py.File`` of ``path`` in this process (opened once)."""
    path = os.fspath(path)
    with _LOCK:
        handle = _OPEN.get(path)
        if handle is None or not handle.id.valid:
            try:
                handle = _OPEN[path] = _h5py().File(path, "r")
            except OSError as error:
                raise InputError(f"{path} is not a readable HDF5 file ({error})") from None
        return handle


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
        stored = open_file(self.path)[name]
        self.shape, self.ndim = tuple(stored.shape), stored.ndim
        self.stored_dtype = stored.dtype
        self.dtype = np.dtype(dtype) if dtype is not None else stored.dtype
        self.chunks = stored.chunks or (CONTIGUOUS_CHUNK_ENTRIES if self.ndim == 1 else 1, *self.shape[1:])

    def __reduce__(self):
        return (Dataset, (self.path, self.name, self.dtype))

    def __repr__(self):
        return f"Dataset({self.path!r}, {self.name!r}, shape={self.shape}, dtype={self.dtype})"

    def _stored(self):
        return open_file(self.path)[self.name]

    def __getitem__(self, key):
        return np.asarray(self._stored()[key]).astype(self.dtype, copy=False)

    def __len__(self):
        return self.shape[0]

    def get_coordinate_selection(self, positions):
        """The entries at ``positions`` (a 1-D dataset; any order)."""
        positions = np.asarray(positions, dtype=np.int64)
        unique, inverse = np.unique(positions, return_inverse=True)
        return self[unique.tolist()][inverse] if unique.size else np.empty(0, self.dtype)
