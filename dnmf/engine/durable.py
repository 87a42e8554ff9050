"""Writes that appear whole or not at all, and the probes that fail before a fit starts.

A directory (a result group, a checkpoint) is written under a hidden sibling name, every
file ``fsync``-ed, then renamed into place (:func:`publish_directory`); a crash leaves
either nothing or the whole directory. An object store has no rename: there
:func:`new_store` writes a Zarr node's arrays and chunks first and its root
``zarr.json`` (with the attributes that make it a result) last, in one PUT; before
that, readers find nothing. :func:`check_writable` probes a destination (a
small write, and the space the factors need) so that a fit that could not be saved
fails before its first iteration. :func:`write_factor` stores a factor, a Dask one by the
workers that hold its blocks (through :func:`dnmf.engine.driver.store`).

Test hooks: :func:`pause_for_tests` sleeps where an environment variable asks, so that
a test can kill a process in the middle of a write.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

import dask.array as da
import numpy as np
import zarr
import zarr.core.sync

from ..errors import (
    DestinationError,
    DestinationExistsError,
    DestinationNotADirectoryError,
    DestinationPermissionError,
)
from .driver import store
from .location import Location, RetryingStore, fsync_directory, fsync_path, store_error

__all__ = [
    "PROBE_BYTES",
    "TEMP_PREFIX",
    "check_destination",
    "check_writable",
    "factor_bytes",
    "new_group",
    "new_store",
    "fsync_directory",
    "fsync_tree",
    "pause_for_tests",
    "publish_directory",
    "remove",
    "write_factor",
]

logger = logging.getLogger(__name__)

#: Prefix of the hidden sibling directories that groups are written into.
TEMP_PREFIX = ".dnmf-tmp-"
#: Bytes written by the probe of :func:`check_writable`.
PROBE_BYTES = 4096


def fsync_tree(path):
    """Flush every file and directory under ``path`` (a file: it alone), and ``path``'s
    parent, to disk."""
    path = Path(path)
    if path.is_file():
        fsync_path(path)
    for root, _, files in os.walk(path, topdown=False):
        for name in files:
            fsync_path(os.path.join(root, name))
        fsync_path(root, directory=True)
    fsync_path(path.parent, directory=True)


def check_destination(path, overwrite=False, storage_options=None):
    """``FileExistsError`` if ``path`` (a path or URL) exists and ``overwrite`` is False."""
    location = Location.of(path, storage_options)
    if not overwrite and location.exists():
        raise DestinationExistsError(f"{location} already exists; pass --overwrite (overwrite=True) to replace it")


def pause_for_tests(variable, iteration=None):
    """Sleep as the test hook ``variable`` asks: its value is ``SECONDS`` or ``SECONDS@ITERATION``
    (pause only when writing that iteration). Unset or empty: no pause."""
    value = os.environ.get(variable, "").strip()
    if not value:
        return
    seconds, _, when = value.partition("@")
    if when and (iteration is None or int(when) != int(iteration)):
        return
    logger.warning("test hook %s: pausing %s s", variable, seconds)
    time.sleep(float(seconds))


def factor_bytes(shape, n_components, dtype):
    """Uncompressed bytes of W (m x k) and H (k x n) for a V of ``shape`` and ``dtype``
    (values other than float32 are stored as float64, as :mod:`dnmf.io.storage` converts them)."""
    m, n = (int(s) for s in shape)
    k = int(n_components)
    itemsize = 4 if np.dtype(dtype) == np.dtype(np.float32) else 8
    return (m * k + k * n) * itemsize


def _mib(nbytes):
    return f"{nbytes / 2**20:.1f} MiB"


def check_writable(path, nbytes=0, what="output", into=False, storage_options=None):
    """Fail now, not after the fit, if ``path`` cannot be written or cannot hold ``nbytes``.

    At a URL, the probe is a small object written beside ``path`` (or, ``into=True``,
    in it) and removed (:meth:`~dnmf.engine.location.Location.probe_write`); free space
    is not known there.

    The probe goes to the nearest existing parent of ``path`` (where ``path``, or the
    hidden directory it is written into before the rename, will be created), or with
    ``into=True`` into ``path`` itself when it is an existing directory (a checkpoint
    directory): a :data:`PROBE_BYTES` file is created, flushed to disk and removed; then
    ``nbytes`` is compared with the free space there.

    Parameters
    ----------
    path : str or path-like
    nbytes : int
        Bytes the output will need (uncompressed; see :func:`factor_bytes`).
    what : str
        Named in the messages ("OUT", "checkpoint directory").
    into : bool
        ``path`` is a directory that files are written into (never an existing OUT,
        which is only replaced by a rename).

    Raises
    ------
    PermissionError
        No permission to create files there.
    NotADirectoryError
        A parent of ``path`` is a file.
    OSError
        A read-only or full file system, or less free space than ``nbytes``.
    """
    location = Location.of(path, storage_options)
    if not location.local:
        location.probe_write(what, into=into)
        return
    path = Path(location.path)
    base = path if into and path.is_dir() else path.parent
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise DestinationNotADirectoryError(f"cannot write {what} {path}: {base} is not a directory")
    probe = base / f"{TEMP_PREFIX}probe-{uuid.uuid4().hex[:12]}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        reason = error.strerror or str(error)
        kind = DestinationPermissionError if error.errno in (errno.EACCES, errno.EPERM) else DestinationError
        raise kind(f"cannot write {what} {path}: {reason} (probe of {base})") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    free = shutil.disk_usage(base).free
    if nbytes > free:
        raise DestinationError(
            f"not enough space for {what} {path}: it needs about {_mib(nbytes)} (uncompressed factors), "
            f"{_mib(free)} free in {base}"
        )


@contextlib.contextmanager
def publish_directory(path, overwrite=False):
    """Write a directory (or a single file) elsewhere, then move it to ``path`` in one rename.

    Yields the temporary path (a hidden sibling of ``path``, so the final rename
    stays on one file system). On success its content is flushed to disk and it becomes
    ``path``; an existing ``path`` is replaced only when ``overwrite`` is True (it is
    renamed aside first and deleted after). On error the temporary path is removed.
    """
    path = Path(path).absolute()
    check_destination(path, overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.parent / f"{TEMP_PREFIX}{path.name}-{uuid.uuid4().hex[:12]}"
    try:
        yield temp
        fsync_tree(temp)
        check_destination(path, overwrite)
        old = None
        if path.exists():
            old = path.parent / f"{TEMP_PREFIX}{path.name}-old-{uuid.uuid4().hex[:12]}"
            os.rename(path, old)
        os.rename(temp, path)
        fsync_path(path.parent, directory=True)
        if old is not None:
            remove(old)
    except BaseException:
        remove(temp)
        raise


@contextlib.contextmanager
def new_store(path, overwrite=False, storage_options=None):
    """A new Zarr node (group or array) at ``path`` (a path or URL) that appears whole or
    not at all: yields the store to create it in (``zarr.open_group(store, mode="w")``,
    ``zarr.create_array(store, ...)``).

    On a disk it is written by :func:`publish_directory`. On an object store its root
    metadata is held back (:class:`_HeldRoot`) and written last, in one PUT: readers find
    either nothing or the complete node. An existing node is replaced only with
    ``overwrite`` (its root metadata is deleted first, so that it stops being one at
    once). On error, what was written is removed; a store that keeps failing is one
    :class:`~dnmf.errors.DestinationError` naming the URL.
    """
    location = Location.of(path, storage_options)
    if location.local:
        with publish_directory(location.path, overwrite) as temp:
            yield str(temp)
        return
    check_destination(location, overwrite)
    location.remove(first=(_HeldRoot.ROOT,))
    held = _HeldRoot(location.zarr_store(read_only=False))
    try:
        yield held
        held.commit()
    except BaseException as error:
        location.remove(first=(_HeldRoot.ROOT,))
        problem = store_error(error, location.url, "writing", writing=True) if isinstance(error, OSError) else None
        if problem is None:
            raise
        raise problem from error


@contextlib.contextmanager
def new_group(path, overwrite=False, storage_options=None):
    """:func:`new_store` with a new group in it: yields the writable group."""
    with new_store(path, overwrite, storage_options) as store:
        yield zarr.open_group(store, mode="w")


class _HeldRoot(RetryingStore):
    """A store that keeps its root ``zarr.json`` in memory until :meth:`commit` (what
    :func:`new_group` writes last). Pickled (for the workers that write W's chunks), it
    is the store it wraps."""

    ROOT = "zarr.json"

    def __init__(self, store):
        super().__init__(store._store, store.url)
        self._root = None

    def __reduce__(self):
        return (RetryingStore, (self._store, self.url))

    async def get(self, key, prototype, byte_range=None):
        if key == self.ROOT and self._root is not None and byte_range is None:
            return self._root
        return await super().get(key, prototype, byte_range)

    async def exists(self, key):
        return (key == self.ROOT and self._root is not None) or await super().exists(key)

    async def set(self, key, value):
        if key == self.ROOT:
            self._root = value
            return
        await super().set(key, value)

    def commit(self):
        """Write the held root metadata."""
        if self._root is not None:
            zarr.core.sync.sync(RetryingStore.set(self, self.ROOT, self._root))


def remove(path):
    """Remove a file or directory tree (what is missing is left alone)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_factor(group, name, X):
    """Write a factor into a new array ``name`` of a writable Zarr ``group``.

    Parameters
    ----------
    group : zarr.Group
    name : str
    X : ndarray or dask.array.Array of shape (rows, k)
        A Dask array is written by the tasks that hold its blocks (no gather), after a
        rechunk to the regular row chunks of the Zarr array.
    """
    if isinstance(X, da.Array):
        rows = max(1, max(X.chunks[0]) if X.chunks[0] else 1)
        target = group.create_array(name, shape=X.shape, dtype=X.dtype, chunks=(rows,) + X.shape[1:])
        store(X.rechunk((rows,) + X.shape[1:]), target)
        return target
    X = np.asarray(X)
    target = group.create_array(name, shape=X.shape, dtype=X.dtype, chunks=tuple(max(1, s) for s in X.shape) or None)
    if X.size:
        target[...] = X
    return target
