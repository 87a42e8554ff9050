"""Result groups, written whole or not at all.

``dnmf fit`` writes a fit result and ``dnmf transform`` a projection; both are Zarr
groups, and both (like everything else the package writes) appear on disk by one
atomic rename: the group is written into a hidden sibling directory, every file is
``fsync``-ed, then the directory is renamed to its final name. A crash leaves either no
OUT or a complete one, never half of one.

Fit result (``kind = "dnmf-fit"``)::

    OUT/                   Zarr group
      W                    (m, k) float32 or float64, row-chunked
      H                    (k, n)
      attrs  kind, version, n_iter, converged, reconstruction_err,
             relative_err (= reconstruction_err / ||V||_F), loss_history,
             params (every entry of :data:`dnmf.params.PARAMS` but ``client``), input

Transform result (``kind = "dnmf-transform"``): the same with ``W`` only, plus the
``model`` it used.

Factors held on a Dask cluster are written by the workers themselves
(:func:`write_factor`); the paths are then expected to be shared by the client and the
workers, as the inputs already are.

Before any work, :func:`check_writable` probes where a result (or checkpoints) will go:
it writes, flushes and removes a small file there (no permission, a read-only or a full
file system fail at once) and compares the uncompressed size of the factors with the
free space, so that a fit that cannot be saved stops before its first iteration.

Test hook: with the environment variable ``DNMF_TEST_PAUSE_IN_RESULT_WRITE=SECONDS``,
:func:`write_fit` and :func:`write_transform` sleep that long after W is written into
the hidden directory and before the group is completed and renamed, so that a test can
kill the process in the middle of writing OUT. Unset (always, outside tests) it costs
nothing.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import numbers
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import dask.array as da
import numpy as np
import zarr

__all__ = [
    "FIT_KIND",
    "RESULT_VERSION",
    "TRANSFORM_KIND",
    "Result",
    "check_destination",
    "check_writable",
    "factor_bytes",
    "fsync_directory",
    "fsync_tree",
    "jsonable",
    "pause_for_tests",
    "publish_directory",
    "read_result",
    "stored_attrs",
    "write_factor",
    "write_fit",
    "write_transform",
]

logger = logging.getLogger(__name__)

#: ``attrs["kind"]`` of a fit result.
FIT_KIND = "dnmf-fit"
#: ``attrs["kind"]`` of a transform result.
TRANSFORM_KIND = "dnmf-transform"
#: Layout version written in ``attrs["version"]``.
RESULT_VERSION = 1
#: Prefix of the hidden sibling directories that groups are written into.
TEMP_PREFIX = ".dnmf-tmp-"
#: Bytes written by the probe of :func:`check_writable`.
PROBE_BYTES = 4096
#: Environment variable of the test hook that pauses inside :func:`write_fit`/:func:`write_transform`.
PAUSE_IN_RESULT_WRITE = "DNMF_TEST_PAUSE_IN_RESULT_WRITE"


# ----------------------------------------------------------------- durable directories


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
    """Flush every file and directory under ``path`` (and ``path``'s parent) to disk."""
    path = Path(path)
    for root, _, files in os.walk(path, topdown=False):
        for name in files:
            _fsync_path(os.path.join(root, name))
        _fsync_path(root, directory=True)
    _fsync_path(path.parent, directory=True)


def check_destination(path, overwrite=False):
    """``FileExistsError`` if ``path`` exists and ``overwrite`` is False."""
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it")


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
    (values other than float32 are stored as float64, as :mod:`dnmf.storage` converts them)."""
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
        raise NotADirectoryError(f"cannot write {what} {path}: {base} is not a directory")
    probe = base / f"{TEMP_PREFIX}probe-{uuid.uuid4().hex[:12]}"
    try:
        with open(probe, "wb") as handle:
            handle.write(b"\0" * PROBE_BYTES)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        reason = error.strerror or str(error)
        kind = PermissionError if error.errno in (errno.EACCES, errno.EPERM) else OSError
        raise kind(f"cannot write {what} {path}: {reason} (probe of {base})") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    free = shutil.disk_usage(base).free
    if nbytes > free:
        raise OSError(
            f"not enough space for {what} {path}: it needs about {_mib(nbytes)} (uncompressed factors), "
            f"{_mib(free)} free in {base}"
        )


@contextlib.contextmanager
def publish_directory(path, overwrite=False):
    """Write a directory elsewhere, then move it to ``path`` in one rename.

    Yields the temporary directory (a hidden sibling of ``path``, so the final rename
    stays on one file system). On success its content is flushed to disk and it becomes
    ``path``; an existing ``path`` is replaced only when ``overwrite`` is True (it is
    renamed aside first and deleted after). On error the temporary directory is removed.
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
            _remove(old)
    except BaseException:
        _remove(temp)
        raise


def _remove(path):
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


# ----------------------------------------------------------------------- writing


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
        da.store(X.rechunk((rows,) + X.shape[1:]), target, lock=False)
        return target
    X = np.asarray(X)
    target = group.create_array(name, shape=X.shape, dtype=X.dtype, chunks=tuple(max(1, s) for s in X.shape) or None)
    if X.size:
        target[...] = X
    return target


def jsonable(value):
    """A JSON-ready copy of a parameter value (NumPy scalars → Python; objects → their type name)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    return type(value).__name__


def _relative(error, norm):
    if not (norm > 0) or not math.isfinite(norm):
        return 0.0 if error == 0 else float("inf")
    return float(error / norm)


def write_fit(path, result, params, *, input_path=None, overwrite=False):
    """Write a fit result group (layout in the module docstring).

    Parameters
    ----------
    path : str or path-like
    result : dnmf.driver.FitResult
    params : dict
        The parameters of the fit (names of :data:`dnmf.params.PARAMS`).
    input_path : str, optional
        Recorded in ``attrs["input"]``.
    overwrite : bool
        Replace an existing ``path``; otherwise ``FileExistsError``.
    """
    error = float(result.reconstruction_err)
    attrs = {
        "kind": FIT_KIND,
        "version": RESULT_VERSION,
        "n_iter": int(result.n_iter),
        "converged": bool(result.converged),
        "reconstruction_err": error,
        "relative_err": _relative(error, result.norm_V),
        "loss_history": [float(loss) for loss in result.loss_history],
        "params": {name: jsonable(value) for name, value in params.items() if name != "client"},
        "input": None if input_path is None else str(input_path),
    }
    with publish_directory(path, overwrite) as temp:
        group = zarr.open_group(str(temp), mode="w")
        write_factor(group, "W", result.W)
        pause_for_tests(PAUSE_IN_RESULT_WRITE)
        write_factor(group, "H", result.H)
        group.attrs.update(attrs)
    logger.info("wrote %s (n_iter=%d, relative error %.4g)", path, attrs["n_iter"], attrs["relative_err"])
    return attrs


def write_transform(path, result, *, model=None, input_path=None, overwrite=False):
    """Write a transform result group: ``W`` and its errors (see the module docstring)."""
    error = float(result.reconstruction_err)
    attrs = {
        "kind": TRANSFORM_KIND,
        "version": RESULT_VERSION,
        "n_iter": int(result.n_iter),
        "reconstruction_err": error,
        "relative_err": _relative(error, result.norm_V),
        "model": None if model is None else str(model),
        "input": None if input_path is None else str(input_path),
    }
    with publish_directory(path, overwrite) as temp:
        group = zarr.open_group(str(temp), mode="w")
        write_factor(group, "W", result.W)
        pause_for_tests(PAUSE_IN_RESULT_WRITE)
        group.attrs.update(attrs)
    logger.info("wrote %s (relative error %.4g)", path, attrs["relative_err"])
    return attrs


# ----------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Result:
    """A result group opened read-only.

    Attributes
    ----------
    path : str
    kind : str
        :data:`FIT_KIND` or :data:`TRANSFORM_KIND`.
    W : zarr.Array
    H : ndarray or None
        None for a transform result.
    attrs : dict
    """

    path: str
    kind: str
    W: zarr.Array
    H: np.ndarray | None
    attrs: dict


def read_result(path):
    """Open a result group read-only.

    Raises
    ------
    FileNotFoundError
        Nothing at ``path``.
    ValueError
        ``path`` is not a dnmf result.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"result not found: {path}")
    try:
        group = zarr.open_group(store=path, mode="r")
    except Exception as error:  # zarr raises several types for "not a group"
        raise ValueError(f"{path} is not a dnmf result (not a Zarr group: {error})") from None
    attrs = dict(group.attrs)
    kind = attrs.get("kind")
    if kind not in (FIT_KIND, TRANSFORM_KIND):
        raise ValueError(f"{path} is not a dnmf result: attrs['kind'] is {kind!r}")
    if "W" not in group or (kind == FIT_KIND and "H" not in group):
        raise ValueError(f"{path} is an incomplete dnmf result: missing W or H")
    H = np.asarray(group["H"][...]) if kind == FIT_KIND else None
    return Result(path, kind, group["W"], H, attrs)


def stored_attrs(path):
    """The attributes of the Zarr array or group at ``path`` (opened read-only), or ``{}``."""
    try:
        return dict(zarr.open(store=os.fspath(path), mode="r").attrs)
    except Exception:  # not Zarr: no attributes to show
        return {}
