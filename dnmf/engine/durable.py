"""Writes that appear whole or not at all, and the probes that fail before a fit starts.

A directory (a result group, a checkpoint) is written under a hidden sibling name, every
file ``fsync``-ed, then renamed into place (:func:`publish_directory`); a crash leaves
either nothing or the whole directory. :func:`check_writable` probes a destination (a
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

from ..errors import (
    DestinationError,
    DestinationExistsError,
    DestinationNotADirectoryError,
    DestinationPermissionError,
)
from .driver import store

__all__ = [
    "PROBE_BYTES",
    "TEMP_PREFIX",
    "check_destination",
    "check_writable",
    "factor_bytes",
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


def _fsync_path(path, directory=False):
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:  # some file systems refuse to open directories; nothing to flush then
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def fsync_directory(path):
    """Flush a directory's entries (renames, creations) to disk."""
    _fsync_path(path, directory=True)


def fsync_tree(path):
    """Flush every file and directory under ``path`` (a file: it alone), and ``path``'s
    parent, to disk."""
    path = Path(path)
    if path.is_file():
        _fsync_path(path)
    for root, _, files in os.walk(path, topdown=False):
        for name in files:
            _fsync_path(os.path.join(root, name))
        _fsync_path(root, directory=True)
    _fsync_path(path.parent, directory=True)


def check_destination(path, overwrite=False):
    """``FileExistsError`` if ``path`` exists and ``overwrite`` is False."""
    if Path(path).exists() and not overwrite:
        raise DestinationExistsError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it")


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


def check_writable(path, nbytes=0, what="output", into=False):
    """Fail now, not after the fit, if ``path`` cannot be written or cannot hold ``nbytes``.

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
    path = Path(path).absolute()
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
        _fsync_path(path.parent, directory=True)
        if old is not None:
            remove(old)
    except BaseException:
        remove(temp)
        raise


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
