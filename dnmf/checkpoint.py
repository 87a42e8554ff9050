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

Corruption
----------
Every checkpoint directory holds a ``SHA256SUMS`` file (the format of ``sha256sum``, so
``cd ckpt-000012 && sha256sum -c SHA256SUMS`` checks it by hand) listing the SHA-256 of
every other file in it. :func:`load_checkpoint` verifies all of them before anything is
used: a truncated, altered, missing or unlisted file raises
:class:`CorruptCheckpointError` (a ``ValueError``) naming the file, and naming the
newest older checkpoint that verifies, if any. That one is never used silently: resume
from it explicitly with ``dnmf resume DIR --from NAME``, ``load_checkpoint(DIR,
name=NAME)`` or ``ZarrCheckpointer(..., resume_from=NAME)``; CURRENT is then pointed at
it, and the newer (corrupted) checkpoints are removed by the next save.

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
        violations          (iteration,) float64, each pass's HALS violation (empty for MU)
        H_next              (k, n), extrapolated HALS only: the H the next pass starts from
        attrs  format = "dnmf-checkpoint", version, iteration, finished, extrapolation
               (the schedule of an extrapolate=True fit, else null), created,
               fingerprint (of V), params (the result-changing ones), all_params,
               rng, run (caller's notes, e.g. the CLI's input and OUT), complete
        SHA256SUMS          checksums of every other file (written last)

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
workers that hold it), marks it ``complete``, writes its ``SHA256SUMS``, flushes every
file and directory to disk, writes ``CURRENT.tmp-<pid>`` with the new name, flushes it,
and ``os.replace``-s it over ``CURRENT``: that rename is the one step that makes the new
checkpoint current. A crash before it leaves ``CURRENT`` naming the previous checkpoint,
which is still whole (it is only pruned after the rename); a directory that ``CURRENT``
does not name is ignored and removed by the next save. Pruning keeps the :data:`KEEP`
newest complete checkpoints up to the current one (anything newer than CURRENT is debris
of a crashed save or of an abandoned, corrupted line); a pruned directory is first
renamed to a hidden ``.dnmf-*`` name, so a crash while deleting it never leaves a
half-deleted checkpoint under a checkpoint's name.

:meth:`ZarrCheckpointer.save` returns the saved state with W read back from the new
checkpoint's files: the driver continues from it on a Dask cluster, so the lineage that
Dask keeps (and replays when a worker dies with blocks of W) reaches back to the last
checkpoint only, not to the first iteration (see :func:`dnmf.driver.factorize`).

Before the first iteration the checkpointer probes its directory
(:func:`dnmf.results.check_writable`): no permission, a read-only or full file system,
or less free space than the checkpoints need fail at once.

Test hook: with the environment variable
``DNMF_TEST_PAUSE_IN_CHECKPOINT_WRITE=SECONDS`` (or ``SECONDS@ITERATION``, to pause only
in the save of that iteration), :meth:`ZarrCheckpointer.save` sleeps that long after W
is written and before the checkpoint is completed and made current, so that a test can
kill the process in the middle of a checkpoint write.
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import scipy.sparse as sp
import zarr

from .driver import LoopState
from .losses import beta_to_float
from .params import PARAMS, resolve_solver, validate_params
from .results import (
    TEMP_PREFIX,
    check_writable,
    factor_bytes,
    fsync_directory,
    fsync_tree,
    jsonable,
    pause_for_tests,
    write_factor,
)
from .storage import CSRMatrix, Panels, as_panels, open_matrix

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CURRENT",
    "DEFAULT_EVERY",
    "KEEP",
    "MANIFEST",
    "PAUSE_IN_CHECKPOINT_WRITE",
    "RESUMABLE_PARAMS",
    "SAMPLE_ROWS",
    "CorruptCheckpointError",
    "ZarrCheckpointer",
    "check_compatible",
    "has_checkpoint",
    "load_checkpoint",
    "matrix_fingerprint",
    "result_params",
    "verify_checkpoint",
]

logger = logging.getLogger(__name__)

#: ``attrs["format"]`` of a checkpoint group.
CHECKPOINT_FORMAT = "dnmf-checkpoint"
#: Layout version (2: with ``SHA256SUMS``; 3: with ``violations``).
CHECKPOINT_VERSION = 3
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
#: Checksum file of each checkpoint directory (``sha256sum`` format).
MANIFEST = "SHA256SUMS"
#: Bytes read at a time when hashing a file.
HASH_BLOCK_BYTES = 2**20
#: Environment variable of the test hook that pauses inside :meth:`ZarrCheckpointer.save`.
PAUSE_IN_CHECKPOINT_WRITE = "DNMF_TEST_PAUSE_IN_CHECKPOINT_WRITE"

_NAME = re.compile(r"^ckpt-(\d+)(?:-(\d+))?$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
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
    # a parameter a checkpoint does not record came after it was written: it ran the default
    saved, now = {**result_params({}), **metadata["params"]}, result_params(params)
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


def _key(name):
    match = _NAME.match(name)
    return int(match.group(1)), int(match.group(2) or 0)


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
        if not (
            entry.name == CURRENT
            or entry.name.startswith(CURRENT + ".tmp-")
            or entry.name.startswith(TEMP_PREFIX)  # a probe, or a pruned checkpoint being deleted
            or _NAME.match(entry.name)
        )
    ]
    if foreign:
        raise ValueError(
            f"{directory} is not a dnmf checkpoint directory (it holds {sorted(foreign)[:5]}); "
            "choose an empty or new directory"
        )


def _open_checkpoint(path):
    """The group and attrs of a complete checkpoint (cheap: no checksums; see :func:`verify_checkpoint`)."""
    try:
        group = zarr.open_group(store=str(path), mode="r")
    except Exception as error:  # zarr raises several types for "not a group"
        raise ValueError(f"checkpoint {path} is damaged: {' '.join(str(error).split())}") from None
    attrs = dict(group.attrs)
    if attrs.get("format") != CHECKPOINT_FORMAT or not attrs.get("complete"):
        raise ValueError(f"checkpoint {path} is damaged or incomplete")
    if attrs.get("version", 0) > CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path} has layout version {attrs['version']}; this dnmf reads up to {CHECKPOINT_VERSION}"
        )
    if attrs.get("version", 0) < CHECKPOINT_VERSION:
        raise ValueError(
            f"checkpoint {path} has layout version {attrs.get('version')}, written by an older dnmf; "
            f"this dnmf needs version {CHECKPOINT_VERSION}"
        )
    if not (Path(path) / MANIFEST).is_file():
        raise ValueError(f"checkpoint {path} is damaged or incomplete: {MANIFEST} is missing")
    return group, attrs


# --------------------------------------------------------------------- checksums


class CorruptCheckpointError(ValueError):
    """A checkpoint file does not match its recorded checksum.

    Attributes
    ----------
    path : str
        The checkpoint directory (``DIR/ckpt-…``).
    file : str
        The offending file (or ``SHA256SUMS`` itself).
    previous : str or None
        Name of the newest older checkpoint of the same directory that verifies.
    """

    def __init__(self, message, path, file, previous=None):
        super().__init__(message)
        self.path, self.file, self.previous = str(path), str(file), previous


def _file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(path):
    """Every file under ``path`` but the manifest, as sorted relative POSIX paths."""
    path = Path(path)
    found = []
    for root, _, names in os.walk(path):
        for name in names:
            relative = Path(root, name).relative_to(path).as_posix()
            if relative != MANIFEST:
                found.append(relative)
    return sorted(found)


def _write_manifest(path):
    """Write ``path/SHA256SUMS``; returns the SHA-256 of its text (names the content)."""
    text = "".join(f"{_file_sha256(Path(path, relative))}  {relative}\n" for relative in _files(path))
    with open(Path(path, MANIFEST), "w") as handle:
        handle.write(text)
    return hashlib.sha256(text.encode()).hexdigest()


def _check_manifest(path):
    """``(problem, file)`` of the first mismatch between ``path`` and its manifest, or
    ``(None, digest of the manifest)``."""
    path = Path(path)
    manifest = path / MANIFEST
    try:
        text = manifest.read_text()
    except (OSError, UnicodeDecodeError) as error:
        return f"{manifest} cannot be read ({error.__class__.__name__})", manifest
    recorded = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, separator, relative = line.partition("  ")
        if not separator or not _DIGEST.match(digest) or not relative:
            return f"{manifest} is damaged at line {number}", manifest
        recorded[relative] = digest
    if not text.endswith("\n"):
        return f"{manifest} is truncated", manifest
    for relative in _files(path):
        if relative not in recorded:
            return f"{path / relative} is not listed in {MANIFEST}", path / relative
    for relative, digest in recorded.items():
        file = path / relative
        if not file.is_file():
            return f"{file} is missing", file
        actual = _file_sha256(file)
        if actual != digest:
            return (
                f"{file} fails its checksum (sha256 {actual[:16]}…, {MANIFEST} records {digest[:16]}…; "
                f"{file.stat().st_size} bytes)"
            ), file
    return None, hashlib.sha256(text.encode()).hexdigest()


def _intact(path):
    """Whether the checkpoint at ``path`` is complete and verifies."""
    try:
        _open_checkpoint(path)
    except ValueError:
        return False
    return _check_manifest(path)[0] is None


def _previous_intact(directory, name):
    """The newest checkpoint of ``directory`` older than ``name`` that verifies, or None."""
    limit = _key(name)
    for iteration, suffix, other in reversed(_entries(directory)):
        if (iteration, suffix) < limit and _intact(Path(directory) / other):
            return other
    return None


def verify_checkpoint(path):
    """Check every file of the checkpoint at ``path`` against its ``SHA256SUMS``.

    Returns
    -------
    str
        SHA-256 of the manifest (it identifies the checkpoint's content).

    Raises
    ------
    CorruptCheckpointError
        Naming the first file that is truncated, altered, missing or unlisted, and the
        previous checkpoint of the same directory that verifies (to resume from
        explicitly), if any.
    ValueError
        The checkpoint is incomplete or not a checkpoint.
    """
    path = Path(path)
    _open_checkpoint(path)
    problem, detail = _check_manifest(path)
    if problem is None:
        return detail
    directory = path.parent
    previous = _previous_intact(directory, path.name)
    if previous is None:
        offer = f"no older intact checkpoint is left in {directory}; remove it to start afresh"
    else:
        offer = (
            f"the previous checkpoint {previous} is intact: resume from it with "
            f"`dnmf resume {directory} --from {previous}` (Python: ZarrCheckpointer(..., resume_from={previous!r}))"
        )
    raise CorruptCheckpointError(f"checkpoint {path} is corrupted: {problem}; {offer}", path, detail, previous)


def _state_of(path, digest):
    """``(LoopState, attrs)`` of a verified checkpoint; W stays lazy, named by the content digest."""
    group, attrs = _open_checkpoint(path)
    W = da.from_zarr(group["W"], name=f"checkpoint-W-{digest[:32]}")
    H = np.asarray(group["H"][...])
    history = tuple(float(value) for value in np.asarray(group["loss_history"][...]))
    violations = tuple(float(value) for value in np.asarray(group["violations"][...]))
    H_next = np.asarray(group["H_next"][...]) if "H_next" in group else None
    state = LoopState(
        int(attrs["iteration"]), W, H, history, bool(attrs["finished"]), attrs.get("extrapolation"), H_next, violations
    )
    return state, attrs


def load_checkpoint(directory, name=None):
    """The current checkpoint of ``directory`` (or the one called ``name``), verified.

    Parameters
    ----------
    directory : str or path-like
    name : str, optional
        A checkpoint of the directory (``ckpt-000010``) to read instead of the current
        one, e.g. the intact predecessor that a :class:`CorruptCheckpointError` names.

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
        ``directory`` holds no current checkpoint, or none called ``name``.
    CorruptCheckpointError
        A file of the checkpoint fails its checksum (see :func:`verify_checkpoint`).
    ValueError
        The checkpoint is otherwise unreadable.
    """
    directory = Path(directory)
    if not directory.exists():
        raise FileNotFoundError(f"checkpoint directory not found: {directory}")
    if name is None:
        name = _current_name(directory)
        if name is None:
            raise FileNotFoundError(f"{directory} holds no completed checkpoint (no {CURRENT} pointer)")
    elif not _NAME.match(str(name)) or not (directory / name).is_dir():
        present = [entry[2] for entry in _entries(directory)]
        raise FileNotFoundError(f"{directory} holds no checkpoint {name!r} (it holds {present})")
    path = directory / name
    digest = verify_checkpoint(path)
    state, attrs = _state_of(path, digest)
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
    resume_from : str, optional
        Resume from this checkpoint of the directory (e.g. ``"ckpt-000010"``) instead of
        the current one: the way back after a :class:`CorruptCheckpointError`.
        :meth:`resume_state` then points CURRENT at it; newer checkpoints are removed by
        the next save.

    Raises
    ------
    PermissionError, OSError
        The directory cannot be written, or has less free space than the checkpoints
        need (see :func:`dnmf.results.check_writable`): before any iteration.

    Attributes
    ----------
    panels : dnmf.storage.Panels
        V as the fit must see it; pass these to :func:`dnmf.api.run`.
    """

    def __init__(
        self, directory, X, params, *, every=None, seconds=None, keep=KEEP, run_info=None, resume_from=None
    ):
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
        self.resume_from = resume_from
        self._fingerprint = None
        self._anchor = None  # the checkpoint the driver continues from (never pruned)
        self._last_save = time.monotonic()
        check_writable(self.directory, self.required_bytes(), "checkpoint directory", into=True)

    def required_bytes(self):
        """Uncompressed bytes the next saves need: one checkpoint per missing one of ``keep + 1``."""
        k = self.params["n_components"]
        k = self.panels.shape[1] if k in (None, "auto") else k
        one = factor_bytes(self.panels.shape, k, self.panels.dtype)
        present = len(_entries(self.directory)) if self.directory.is_dir() else 0
        return one * max(1, self.keep + 1 - present)

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
        if self.resume_from is None and not has_checkpoint(self.directory):
            return None
        state, metadata = load_checkpoint(self.directory, name=self.resume_from)
        check_compatible(metadata, self.fingerprint, self.params)
        if self.resume_from is not None and self.resume_from != _current_name(self.directory):
            logger.warning(
                "resuming from %s as asked; %s now names it, and newer checkpoints will be removed by the next save",
                metadata["path"], CURRENT,
            )
            self._point_to(self.resume_from)
        self._anchor = Path(metadata["path"]).name
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
        """Write ``state`` as a new checkpoint and make it current (atomic; see the module docstring).

        Returns
        -------
        LoopState
            The saved state, W read lazily from the new checkpoint's files (see the
            module docstring: the driver continues from it on a cluster).
        """
        started = time.perf_counter()
        self.directory.mkdir(parents=True, exist_ok=True)
        name = self._new_name(state.iteration)
        path = self.directory / name
        if path.exists():  # a leftover of a crashed save: never current, safe to replace
            self._remove(name)
        group = zarr.open_group(str(path), mode="w")
        write_factor(group, "W", state.W)
        pause_for_tests(PAUSE_IN_CHECKPOINT_WRITE, state.iteration)
        write_factor(group, "H", np.asarray(state.H))
        write_factor(group, "loss_history", np.asarray(state.loss_history, dtype=np.float64))
        write_factor(group, "violations", np.asarray(state.violations, dtype=np.float64))
        if state.H_next is not None:
            write_factor(group, "H_next", np.asarray(state.H_next))
        group.attrs.update(
            {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "iteration": int(state.iteration),
                "finished": bool(state.finished),
                "extrapolation": state.extrapolation,
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "fingerprint": self.fingerprint,
                "params": result_params(self.params),
                "all_params": {key: jsonable(value) for key, value in self.params.items() if key != "client"},
                "rng": {"random_state": jsonable(self.params["random_state"]), "used_by": "initialization only"},
                "run": self.run_info,
            }
        )
        group.attrs["complete"] = True
        digest = _write_manifest(path)
        fsync_tree(path)
        self._point_to(name)
        self._prune()
        self._anchor = name
        self._last_save = time.monotonic()
        logger.info("checkpoint %s written (%.2fs)", path, time.perf_counter() - started)
        return _state_of(path, digest)[0]

    def _point_to(self, name):
        temporary = self.directory / f"{CURRENT}.tmp-{os.getpid()}"
        with open(temporary, "w") as handle:
            handle.write(name + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.directory / CURRENT)
        fsync_directory(self.directory)

    def _remove(self, name):
        """Delete checkpoint ``name``: renamed to a hidden name first (one atomic step), then removed."""
        doomed = self.directory / f"{TEMP_PREFIX}deleting-{name}-{uuid.uuid4().hex[:8]}"
        os.rename(self.directory / name, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def _prune(self):
        """Keep the ``keep`` newest complete checkpoints up to CURRENT (and the driver's anchor)."""
        current = _current_name(self.directory)
        limit = _key(current)
        complete = []
        for iteration, suffix, name in _entries(self.directory):
            if (iteration, suffix) > limit:
                continue  # newer than CURRENT: debris, never valid
            try:
                _open_checkpoint(self.directory / name)
            except ValueError:
                continue
            complete.append(name)
        kept = set(complete[-self.keep :]) | {current, self._anchor}
        for _, _, name in _entries(self.directory):
            if name not in kept:
                self._remove(name)
        for entry in os.scandir(self.directory):
            if entry.name.startswith(CURRENT + ".tmp-"):
                os.unlink(entry.path)
            elif entry.name.startswith(f"{TEMP_PREFIX}deleting-"):
                shutil.rmtree(entry.path, ignore_errors=True)
