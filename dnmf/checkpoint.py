"""Crash-safe checkpoints of a running fit, and exact resume.

Public API
----------
:class:`ZarrCheckpointer` implements the driver's ``Checkpointer`` protocol
(``due(iteration)``, ``save(state)``) and knows how to resume::

    from dnmf.api import run
    from dnmf.checkpoint import ZarrCheckpointer

    checkpointer = ZarrCheckpointer("run.ckpt", X, params, every=5)
    result = run(checkpointer.panels, params,
                 start=checkpointer.resume_state(), checkpointer=checkpointer)

``params`` are names of :data:`dnmf.params.PARAMS` (missing ones take their defaults).
:meth:`ZarrCheckpointer.resume_state` returns None when the directory holds no
checkpoint (a fresh fit), the saved :class:`~dnmf.driver.LoopState` when it holds one
written for the same matrix and the same result-changing parameters, and raises
``ValueError`` naming every difference otherwise. That is the estimator's rule too:
``NMF(checkpoint=DIR, checkpoint_every=N).fit(X)`` resumes automatically when ``DIR``
holds a matching checkpoint, starts afresh when it holds none, and refuses when it
does not match. Pass :attr:`ZarrCheckpointer.panels` (not ``X``) to ``run`` so that the
fit uses the chunking the fingerprint describes.

:func:`load_checkpoint` reads the current checkpoint of a directory as
``(LoopState, metadata)``; :func:`has_checkpoint` tells whether there is one.

Layout
------
::

    DIR/
      CURRENT               one line: the name of the current checkpoint
      ckpt-000010/          the previous one (kept)
      ckpt-000012/          Zarr group
        W                   (m, k), as the fit holds it (same dtype: resume is exact)
        H                   (k, n)
        loss_history        (j + 1,) float64, the driver's known losses
        attrs  format = "dnmf-checkpoint", version, iteration, finished, created,
               fingerprint (of V), params (the result-changing ones), all_params,
               rng, run (caller's notes, e.g. the CLI's input and OUT), complete

What is fingerprinted
---------------------
Of V: shape, dtype (after conversion), dense or sparse, the row chunking of the panels,
the number of stored entries (when the source knows it: CSR groups, SciPy matrices)
and a SHA-256 of :data:`SAMPLE_ROWS` evenly spaced rows. Of the parameters: every
:class:`~dnmf.params.Param` with ``changes_result=True`` except ``max_iter``, which only
decides where the run stops (a resume may extend it; ``n_iter`` counts all iterations).
The driver draws random numbers only while initializing, so the seed
(``random_state``, compared with the parameters) is all the RNG state a resume needs;
it is recorded under ``attrs["rng"]``.

Atomic protocol
---------------
:meth:`ZarrCheckpointer.save` writes ``ckpt-<iteration>/`` from scratch (W by the
workers that hold it), marks it ``complete``, flushes every file and directory to disk,
writes ``CURRENT.tmp-<pid>`` with the new name, flushes it, and ``os.replace``-s it over
``CURRENT``: that rename is the one step that makes the new checkpoint current. A crash
before it leaves ``CURRENT`` naming the previous checkpoint, which is still whole (it is
only pruned after the rename); a directory that ``CURRENT`` does not name is ignored
and removed by the next save. Pruning keeps the :data:`KEEP` newest complete checkpoints.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import re
import shutil
import time
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
import zarr

from .driver import LoopState
from .losses import beta_to_float
from .params import PARAMS, resolve_solver, validate_params
from .results import fsync_directory, fsync_tree, jsonable, write_factor
from .storage import CSRMatrix, Panels, as_panels, open_matrix

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CURRENT",
    "DEFAULT_EVERY",
    "KEEP",
    "RESUMABLE_PARAMS",
    "SAMPLE_ROWS",
    "ZarrCheckpointer",
    "check_compatible",
    "has_checkpoint",
    "load_checkpoint",
    "matrix_fingerprint",
    "result_params",
]

logger = logging.getLogger(__name__)

#: ``attrs["format"]`` of a checkpoint group.
CHECKPOINT_FORMAT = "dnmf-checkpoint"
#: Layout version.
CHECKPOINT_VERSION = 1
#: Name of the pointer file naming the current checkpoint.
CURRENT = "CURRENT"
#: Checkpoint every this many iterations when neither ``every`` nor ``seconds`` is given.
DEFAULT_EVERY = 10
#: Complete checkpoints kept after each save (the current one and its predecessor).
KEEP = 2
#: Rows of V hashed into the fingerprint (evenly spaced, first and last included).
SAMPLE_ROWS = 8
#: Result-changing parameters a resume may change: they only decide where the run stops.
RESUMABLE_PARAMS = ("max_iter",)

_NAME = re.compile(r"^ckpt-(\d+)(?:-(\d+))?$")
_DEFAULTS = {p.name: p.default for p in PARAMS}


# ------------------------------------------------------------------ fingerprints


def _source_nnz(X):
    if isinstance(X, (str, os.PathLike)):
        X = open_matrix(X)
    if isinstance(X, CSRMatrix):
        return X.nnz
    if sp.issparse(X):
        return int(X.nnz)
    return None


def _sample_rows(m):
    return sorted({int(round(r)) for r in np.linspace(0, m - 1, min(SAMPLE_ROWS, m))})


def _row_bytes(row, dtype):
    if sp.issparse(row):
        row = sp.csr_matrix(row)
        row.sum_duplicates()
        row.sort_indices()
        return b"".join(
            [
                np.asarray(row.indices, np.int64).tobytes(),
                np.asarray(row.data, dtype).tobytes(),
            ]
        )
    return np.ascontiguousarray(np.asarray(row), dtype).tobytes()


def matrix_fingerprint(X, panels):
    """What identifies V cheaply: shape, dtype, sparsity, chunking, nnz and a sample hash.

    Parameters
    ----------
    X : the source the panels came from (for ``nnz``; may be the Panels themselves)
    panels : dnmf.storage.Panels

    Returns
    -------
    dict
        JSON-ready: ``shape``, ``dtype``, ``sparse``, ``panel_rows`` (list), ``nnz``
        (None when unknown without a pass), ``sample_rows`` and ``sample_sha256``.
    """
    m = panels.shape[0]
    rows = _sample_rows(m)
    pieces = [panels.array[r : r + 1] for r in rows]
    # Data that lives here (NumPy, SciPy, Zarr, files) is sampled by this process; only a
    # user's Dask array may need its own scheduler.
    local = not isinstance(X, da.Array)
    values = dask.compute(*pieces, scheduler="sync") if local else dask.compute(*pieces)
    digest = hashlib.sha256()
    for row in values:
        digest.update(_row_bytes(row, panels.dtype))
    return {
        "shape": [int(s) for s in panels.shape],
        "dtype": str(panels.dtype),
        "sparse": bool(panels.sparse),
        "panel_rows": [int(r) for r in panels.row_chunks],
        "nnz": None if isinstance(X, Panels) else _source_nnz(X),
        "sample_rows": rows,
        "sample_sha256": digest.hexdigest(),
    }


def result_params(params):
    """The compared parameters: result-changing ones but :data:`RESUMABLE_PARAMS`, normalized.

    ``solver="hals"`` counts as ``"cd"``, ``beta_loss`` names as their beta and
    ``alpha_H="same"`` as ``alpha_W``, so spellings of one fit compare equal.
    """
    p = {**_DEFAULTS, **params}
    out = {}
    for spec in PARAMS:
        if not spec.changes_result or spec.name in RESUMABLE_PARAMS:
            continue
        value = p[spec.name]
        if spec.name == "solver":
            value = resolve_solver(value)
        elif spec.name == "beta_loss":
            value = beta_to_float(value)
        elif spec.name == "alpha_H" and value == "same":
            value = p["alpha_W"]
        out[spec.name] = jsonable(value)
    return out


def _describe_chunks(rows):
    return f"{len(rows)} panels of up to {max(rows)} rows" if rows else "no panels"


def _fingerprint_differences(saved, now):
    differences = []
    for key in ("shape", "dtype", "sparse", "nnz"):
        if saved.get(key) != now.get(key) and not (key == "nnz" and None in (saved.get(key), now.get(key))):
            differences.append(f"{key}: checkpoint {saved.get(key)!r}, now {now.get(key)!r}")
    if saved.get("shape") == now.get("shape") and saved.get("panel_rows") != now.get("panel_rows"):
        differences.append(
            f"row chunking: checkpoint {_describe_chunks(saved.get('panel_rows') or [])}, "
            f"now {_describe_chunks(now.get('panel_rows') or [])} (pass the same panel_rows)"
        )
    if not differences and saved.get("sample_sha256") != now.get("sample_sha256"):
        differences.append(
            f"content: sampled rows {saved.get('sample_rows')} differ "
            f"(sha256 {saved.get('sample_sha256', '')[:12]}… vs {now.get('sample_sha256', '')[:12]}…)"
        )
    return differences


def check_compatible(metadata, fingerprint, params):
    """Refuse to resume ``metadata``'s checkpoint on another matrix or other parameters.

    Parameters
    ----------
    metadata : dict
        As returned by :func:`load_checkpoint`.
    fingerprint : dict
        :func:`matrix_fingerprint` of the matrix to fit now.
    params : dict
        The parameters of the fit now.

    Raises
    ------
    ValueError
        Listing every difference, e.g. ``alpha_W: checkpoint 0.0, now 0.1``.
    """
    where = metadata.get("path", "the checkpoint")
    matrix = _fingerprint_differences(metadata["fingerprint"], fingerprint)
    saved, now = metadata["params"], result_params(params)
    changed = [
        f"{name}: checkpoint {saved.get(name)!r}, now {now.get(name)!r}"
        for name in sorted(set(saved) | set(now))
        if saved.get(name) != now.get(name)
    ]
    parts = []
    if matrix:
        parts.append("it was written for another matrix (" + "; ".join(matrix) + ")")
    if changed:
        parts.append("result-changing parameters differ (" + "; ".join(changed) + ")")
    if parts:
        raise ValueError(f"cannot resume from {where}: " + " and ".join(parts))


# ----------------------------------------------------------------- the directory


def _entries(directory):
    """``[(iteration, suffix, name)]`` of the checkpoint directories, oldest first."""
    found = []
    for entry in os.scandir(directory):
        match = _NAME.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), int(match.group(2) or 0), entry.name))
    return sorted(found)


def _current_name(directory):
    pointer = Path(directory) / CURRENT
    try:
        name = pointer.read_text().strip()
    except FileNotFoundError:
        return None
    if not _NAME.match(name):
        raise ValueError(f"{pointer} is damaged: it names {name!r}, not a checkpoint")
    return name


def has_checkpoint(directory):
    """Whether ``directory`` has a current checkpoint (a ``CURRENT`` pointer)."""
    return (Path(directory) / CURRENT).is_file()


def _check_directory(directory):
    """``ValueError`` unless ``directory`` is absent, empty or a checkpoint directory."""
    directory = Path(directory)
    if not directory.exists():
        return
    if not directory.is_dir():
        raise ValueError(f"checkpoint path {directory} exists and is not a directory")
    foreign = [
        entry.name
        for entry in os.scandir(directory)
        if not (entry.name == CURRENT or entry.name.startswith(CURRENT + ".tmp-") or _NAME.match(entry.name))
    ]
    if foreign:
        raise ValueError(
            f"{directory} is not a dnmf checkpoint directory (it holds {sorted(foreign)[:5]}); "
            "choose an empty or new directory"
        )


def _open_checkpoint(path):
    try:
        group = zarr.open_group(store=str(path), mode="r")
    except Exception as error:  # zarr raises several types for "not a group"
        raise ValueError(f"checkpoint {path} is damaged: {error}") from None
    attrs = dict(group.attrs)
    if attrs.get("format") != CHECKPOINT_FORMAT or not attrs.get("complete"):
        raise ValueError(f"checkpoint {path} is damaged or incomplete")
    if attrs.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path} has layout version {attrs['version']}; this dnmf reads up to {CHECKPOINT_VERSION}"
        )
    return group, attrs


def load_checkpoint(directory):
    """The current checkpoint of ``directory``.

    Returns
    -------
    state : dnmf.driver.LoopState
        W is a lazy Dask array on the checkpoint's Zarr array (read when the fit
        persists it); H and the loss history are in memory.
    metadata : dict
        ``path``, ``iteration``, ``finished``, ``created``, ``fingerprint``, ``params``
        (compared ones), ``all_params``, ``rng``, ``run`` and ``checkpoints`` (the names
        present, oldest first).

    Raises
    ------
    FileNotFoundError
        ``directory`` holds no current checkpoint.
    ValueError
        The current checkpoint is unreadable.
    """
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    name = _current_name(directory)
    if name is None:
        raise FileNotFoundError(f"{directory} holds no completed checkpoint (no {CURRENT} pointer)")
    path = directory / name
    group, attrs = _open_checkpoint(path)
    W = da.from_zarr(group["W"])
    H = np.asarray(group["H"][...])
    history = tuple(float(value) for value in np.asarray(group["loss_history"][...]))
    state = LoopState(int(attrs["iteration"]), W, H, history, bool(attrs["finished"]))
    metadata = {
        "path": str(path),
        "iteration": int(attrs["iteration"]),
        "finished": bool(attrs["finished"]),
        "created": attrs.get("created"),
        "fingerprint": attrs["fingerprint"],
        "params": attrs["params"],
        "all_params": attrs.get("all_params", {}),
        "rng": attrs.get("rng", {}),
        "run": attrs.get("run", {}),
        "checkpoints": [entry[2] for entry in _entries(directory)],
    }
    return state, metadata


class ZarrCheckpointer:
    """Checkpoints of one fit in a directory (see the module docstring).

    Parameters
    ----------
    directory : str or path-like
        Created on the first save. Must be absent, empty, or a checkpoint directory.
    X : anything :func:`dnmf.storage.as_panels` accepts
        The matrix being fitted.
    params : dict
        The fit's parameters (names of :data:`dnmf.params.PARAMS`; missing ones take
        their defaults). Validated here.
    every : int, optional
        Save after every ``every``-th iteration (iteration numbers count from the start
        of the fit, across resumes).
    seconds : float, optional
        Also save when this much time passed since the last save. When neither is given,
        ``every = DEFAULT_EVERY``.
    keep : int
        Complete checkpoints kept.
    run_info : dict, optional
        JSON-ready notes stored with each checkpoint (the CLI stores its input and OUT).

    Attributes
    ----------
    panels : dnmf.storage.Panels
        V as the fit must see it; pass these to :func:`dnmf.api.run`.
    """

    def __init__(self, directory, X, params, *, every=None, seconds=None, keep=KEEP, run_info=None):
        if every is not None and (isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1):
            raise ValueError(f"checkpoint_every must be a positive integer, got {every!r}")
        if seconds is not None and not (isinstance(seconds, (int, float)) and seconds > 0):
            raise ValueError(f"checkpoint seconds must be a positive number, got {seconds!r}")
        if not isinstance(keep, (int, np.integer)) or keep < 1:
            raise ValueError(f"keep must be a positive integer, got {keep!r}")
        self.directory = Path(directory).absolute()
        _check_directory(self.directory)
        self.params = validate_params({**_DEFAULTS, **params})
        self.every = DEFAULT_EVERY if every is None and seconds is None else every
        self.seconds = seconds
        self.keep = int(keep)
        self.run_info = jsonable(dict(run_info or {}))
        self._source = X
        self.panels = as_panels(X, panel_rows=self.params["panel_rows"])
        self._fingerprint = None
        self._last_save = time.monotonic()

    @property
    def fingerprint(self):
        """:func:`matrix_fingerprint` of the matrix (computed once, on first use)."""
        if self._fingerprint is None:
            self._fingerprint = matrix_fingerprint(self._source, self.panels)
        return self._fingerprint

    def resume_state(self):
        """The state to resume from, or None when there is no checkpoint yet.

        Raises
        ------
        ValueError
            The checkpoint was written for another matrix or other parameters.
        """
        if not has_checkpoint(self.directory):
            return None
        state, metadata = load_checkpoint(self.directory)
        check_compatible(metadata, self.fingerprint, self.params)
        logger.info("resuming from %s (iteration %d)", metadata["path"], state.iteration)
        return state

    def due(self, iteration):
        """Whether to save after ``iteration``."""
        if self.every and iteration % self.every == 0:
            return True
        return bool(self.seconds) and time.monotonic() - self._last_save >= self.seconds

    def _new_name(self, iteration):
        current = _current_name(self.directory)
        name, suffix = f"ckpt-{iteration:06d}", 0
        while name == current:
            suffix += 1
            name = f"ckpt-{iteration:06d}-{suffix}"
        return name

    def save(self, state):
        """Write ``state`` as a new checkpoint and make it current (atomic; see the module docstring)."""
        started = time.perf_counter()
        self.directory.mkdir(parents=True, exist_ok=True)
        name = self._new_name(state.iteration)
        path = self.directory / name
        if path.exists():  # a leftover of a crashed save: never current, safe to replace
            shutil.rmtree(path)
        group = zarr.open_group(str(path), mode="w")
        write_factor(group, "W", state.W)
        write_factor(group, "H", np.asarray(state.H))
        write_factor(group, "loss_history", np.asarray(state.loss_history, dtype=np.float64))
        group.attrs.update(
            {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "iteration": int(state.iteration),
                "finished": bool(state.finished),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "fingerprint": self.fingerprint,
                "params": result_params(self.params),
                "all_params": {key: jsonable(value) for key, value in self.params.items() if key != "client"},
                "rng": {"random_state": jsonable(self.params["random_state"]), "used_by": "initialization only"},
                "run": self.run_info,
            }
        )
        group.attrs["complete"] = True
        fsync_tree(path)
        self._point_to(name)
        self._prune()
        self._last_save = time.monotonic()
        logger.info("checkpoint %s written (%.2fs)", path, time.perf_counter() - started)

    def _point_to(self, name):
        temporary = self.directory / f"{CURRENT}.tmp-{os.getpid()}"
        with open(temporary, "w") as handle:
            handle.write(name + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.directory / CURRENT)
        fsync_directory(self.directory)

    def _prune(self):
        current = _current_name(self.directory)
        complete = []
        for _, _, name in _entries(self.directory):
            try:
                _open_checkpoint(self.directory / name)
            except ValueError:
                continue
            complete.append(name)
        kept = set(complete[-self.keep :]) | {current}
        for _, _, name in _entries(self.directory):
            if name not in kept:
                shutil.rmtree(self.directory / name, ignore_errors=True)
        for entry in os.scandir(self.directory):
            if entry.name.startswith(CURRENT + ".tmp-"):
                os.unlink(entry.path)
