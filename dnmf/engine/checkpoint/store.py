"""The checkpoint directory: its atomic protocol, loading, and the checkpointer a fit
writes with (see :mod:`dnmf.engine.checkpoint`)."""

from __future__ import annotations

import datetime
import logging
import os
import re
import shutil
import time
import uuid

import dask.array as da
import numpy as np
import zarr

from ...errors import (
    CheckpointError,
    CheckpointMismatch,
    ConcurrentWriteError,
    CorruptCheckpointError,
    NotFoundError,
    ParameterError,
)
from ...params import DEFAULTS, jsonable, recorded, validate_params
from ..durable import TEMP_PREFIX, check_writable, factor_bytes, fsync_tree, pause_for_tests, write_factor
from ..location import Location
from ..state import LoopState
from .fingerprint import check_compatible, matrix_fingerprint, result_params
from .manifest import MANIFEST, check_manifest, write_manifest

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "CURRENT",
    "DEFAULT_EVERY",
    "KEEP",
    "PAUSE_IN_CHECKPOINT_WRITE",
    "ZarrCheckpointer",
    "has_checkpoint",
    "load_checkpoint",
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
#: Environment variable of the test hook that pauses inside :meth:`ZarrCheckpointer.save`.
PAUSE_IN_CHECKPOINT_WRITE = "DNMF_TEST_PAUSE_IN_CHECKPOINT_WRITE"

_NAME = re.compile(r"^ckpt-(\d+)(?:-(\d+))?$")


def _key(name):
    match = _NAME.match(name)
    return int(match.group(1)), int(match.group(2) or 0)


def _entries(directory):
    """``[(iteration, suffix, name)]`` of the checkpoints of a directory (a Location), oldest first."""
    found = []
    for name in directory.names():
        match = _NAME.match(name)
        if match and (not directory.local or directory.join(name).is_dir()):  # on a store: only prefixes match
            found.append((int(match.group(1)), int(match.group(2) or 0), name))
    return sorted(found)


def _current_name(directory):
    pointer = directory.join(CURRENT)
    try:
        name = pointer.read_text().strip()
    except FileNotFoundError:
        return None
    if not _NAME.match(name):
        raise CheckpointError(f"{pointer} is damaged: it names {name!r}, not a checkpoint")
    return name


def has_checkpoint(directory, storage_options=None):
    """Whether ``directory`` (a path or URL) has a current checkpoint (a ``CURRENT`` pointer)."""
    return Location.of(directory, storage_options).join(CURRENT).is_file()


def _check_directory(directory):
    """``ValueError`` unless ``directory`` is absent, empty or a checkpoint directory."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise CheckpointError(f"checkpoint path {directory} exists and is not a directory")
    foreign = [
        name
        for name in directory.names()
        if not (
            name == CURRENT
            or name.startswith(CURRENT + ".tmp-")
            or name.startswith(TEMP_PREFIX)  # a probe, or a pruned checkpoint being deleted
            or _NAME.match(name)
        )
    ]
    if foreign:
        raise CheckpointError(
            f"{directory} is not a dnmf checkpoint directory (it holds {sorted(foreign)[:5]}); "
            "choose an empty or new directory"
        )


def _open_checkpoint(path):
    """The group and attrs of a complete checkpoint at a Location (cheap: no checksums;
    see :func:`verify_checkpoint`)."""
    try:
        group = zarr.open_group(store=path.zarr_store(), mode="r")
    except Exception as error:  # zarr raises several types for "not a group"
        raise CheckpointError(f"checkpoint {path} is damaged: {' '.join(str(error).split())}") from None
    attrs = dict(group.attrs)
    if attrs.get("format") != CHECKPOINT_FORMAT or not attrs.get("complete"):
        raise CheckpointError(f"checkpoint {path} is damaged or incomplete")
    if attrs.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has layout version {attrs['version']}; this dnmf reads up to {CHECKPOINT_VERSION}"
        )
    if attrs.get("version", 0) < CHECKPOINT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has layout version {attrs.get('version')}, written by an older dnmf; "
            f"this dnmf needs version {CHECKPOINT_VERSION}"
        )
    if not path.join(MANIFEST).is_file():
        raise CheckpointError(f"checkpoint {path} is damaged or incomplete: {MANIFEST} is missing")
    return group, attrs


def _intact(path):
    """Whether the checkpoint at ``path`` is complete and verifies."""
    try:
        _open_checkpoint(path)
    except ValueError:
        return False
    return check_manifest(path)[0] is None


def _previous_intact(directory, name):
    """The newest checkpoint of ``directory`` older than ``name`` that verifies, or None."""
    limit = _key(name)
    for iteration, suffix, other in reversed(_entries(directory)):
        if (iteration, suffix) < limit and _intact(directory.join(other)):
            return other
    return None


def verify_checkpoint(path, storage_options=None):
    """Check every file of the checkpoint at ``path`` (a path or URL) against its ``SHA256SUMS``.

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
    path = Location.of(path, storage_options)
    _open_checkpoint(path)
    problem, detail = check_manifest(path)
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


def load_checkpoint(directory, name=None, storage_options=None):
    """The current checkpoint of ``directory`` (or the one called ``name``), verified.

    Parameters
    ----------
    directory : str, path-like or URL
    name : str, optional
        A checkpoint of the directory (``ckpt-000010``) to read instead of the current
        one, e.g. the intact predecessor that a :class:`CorruptCheckpointError` names.
    storage_options : dict, optional
        For a URL: its filesystem's options (see :mod:`dnmf.engine.location`).

    Returns
    -------
    state : dnmf.engine.state.LoopState
        W is a lazy Dask array on the checkpoint's Zarr array (read when the fit
        persists it); H and the loss history are in memory.
    metadata : dict
        ``path``, ``name`` (of the checkpoint), ``iteration``, ``finished``, ``created``, ``fingerprint``, ``params``
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
    directory = Location.of(directory, storage_options)
    if not directory.exists():
        raise NotFoundError(f"checkpoint directory not found: {directory}")
    if name is None:
        name = _current_name(directory)
        if name is None:
            raise NotFoundError(f"{directory} holds no completed checkpoint (no {CURRENT} pointer)")
    elif not _NAME.match(str(name)) or not directory.join(name).is_dir():
        present = [entry[2] for entry in _entries(directory)]
        raise NotFoundError(f"{directory} holds no checkpoint {name!r} (it holds {present})")
    path = directory.join(name)
    digest = verify_checkpoint(path)
    state, attrs = _state_of(path, digest)
    metadata = {
        "path": str(path),
        "name": name,
        "iteration": int(attrs["iteration"]),
        "finished": bool(attrs["finished"]),
        "created": attrs.get("created"),
        "fingerprint": attrs["fingerprint"],
        "params": attrs["params"],
        "all_params": attrs.get("all_params", {}),
        "rng": attrs.get("rng", {}),
        "run": attrs.get("run", {}),
        "members": attrs.get("members", []),
        "checkpoints": [entry[2] for entry in _entries(directory)],
    }
    return state, metadata


class ZarrCheckpointer:
    """Checkpoints of one fit in a directory (see :mod:`dnmf.engine.checkpoint`).

    Parameters
    ----------
    directory : str, path-like or URL
        Created on the first save. Must be absent, empty, or a checkpoint directory. On
        an object store the same layout is written under the URL's prefix; ``CURRENT``
        is then one object, replaced by one PUT (see the module docstring).
    panels : dnmf.engine.panels.Panels
        The matrix being fitted, as the fit sees it.
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
    storage_options : dict, optional
        For a URL: its filesystem's options (never written into a checkpoint).
    members : sequence of (int, seed), optional
        The fit is an ensemble of these members (:func:`dnmf.engine.driver.factorize`):
        recorded, and a resume must fit the same ones.

    Raises
    ------
    DestinationError
        The directory cannot be written, or has less free space than the checkpoints
        need (see :func:`dnmf.engine.durable.check_writable`): before any iteration.

    Attributes
    ----------
    panels : dnmf.engine.panels.Panels
        V as the fit sees it (the fingerprint describes its chunking).
    """

    def __init__(
        self,
        directory,
        panels,
        params,
        *,
        every=None,
        seconds=None,
        keep=KEEP,
        run_info=None,
        resume_from=None,
        storage_options=None,
        members=(),
    ):
        if every is not None and (isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1):
            raise ParameterError(f"checkpoint_every must be a positive integer, got {every!r}")
        if seconds is not None and not (isinstance(seconds, (int, float)) and seconds > 0):
            raise ParameterError(f"checkpoint seconds must be a positive number, got {seconds!r}")
        if not isinstance(keep, (int, np.integer)) or keep < 1:
            raise ParameterError(f"keep must be a positive integer, got {keep!r}")
        self.directory = Location.of(directory, storage_options)
        _check_directory(self.directory)
        self.params = validate_params({**DEFAULTS, **params})
        self.every = DEFAULT_EVERY if every is None and seconds is None else every
        self.seconds = seconds
        self.keep = int(keep)
        self.run_info = jsonable(dict(run_info or {}))
        self.panels = panels
        self.resume_from = resume_from
        self.members = [[int(k), jsonable(seed)] for k, seed in members]
        self._fingerprint = None
        self._anchor = None  # the checkpoint the driver continues from (never pruned)
        self._pointer = self.directory.join(CURRENT).version()  # what the next save replaces
        self._last_save = time.monotonic()
        check_writable(self.directory, self.required_bytes(), "checkpoint directory", into=True)

    def required_bytes(self):
        """Uncompressed bytes the next saves need: one checkpoint per missing one of ``keep + 1``."""
        k = self.params["n_components"]
        k = self.panels.shape[1] if k in (None, "auto") else k
        one = factor_bytes(self.panels.shape, k, self.panels.dtype)
        present = len(_entries(self.directory)) if self.directory.exists() else 0
        return one * max(1, self.keep + 1 - present)

    @property
    def fingerprint(self):
        """:func:`matrix_fingerprint` of the matrix (computed once, on first use)."""
        if self._fingerprint is None:
            self._fingerprint = matrix_fingerprint(self.panels)
        return self._fingerprint

    def resume_state(self):
        """The state to resume from, or None when there is no checkpoint yet.

        Raises
        ------
        CheckpointMismatch
            The checkpoint was written for another matrix or other parameters.
        """
        if self.resume_from is None and not has_checkpoint(self.directory):
            return None
        state, metadata = load_checkpoint(self.directory, name=self.resume_from)
        check_compatible(metadata, self.fingerprint, self.params)
        if metadata.get("members", []) != self.members:
            raise CheckpointMismatch(
                f"cannot resume from {metadata['path']}: it was written for another ensemble (members (rank, seed): "
                f"checkpoint {metadata.get('members', [])!r}, now {self.members!r})"
            )
        if self.resume_from is not None and self.resume_from != _current_name(self.directory):
            logger.warning(
                "resuming from %s as asked; %s now names it, and newer checkpoints will be removed by the next save",
                metadata["path"],
                CURRENT,
            )
            self._point_to(self.resume_from)
        self._anchor = metadata["name"]
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
        self.directory.makedirs()
        name = self._new_name(state.iteration)
        path = self.directory.join(name)
        if path.exists():  # a leftover of a crashed save: never current, safe to replace
            self._remove(name)
        group = zarr.open_group(path.zarr_store(read_only=False), mode="w")
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
                "all_params": recorded(self.params),
                "rng": {"random_state": jsonable(self.params["random_state"]), "used_by": "initialization only"},
                "run": self.run_info,
                "members": self.members,
            }
        )
        group.attrs["complete"] = True
        digest = write_manifest(path)
        if path.local:
            fsync_tree(path.path)
        self._point_to(name)
        self._prune()
        self._anchor = name
        self._last_save = time.monotonic()
        logger.info("checkpoint %s written (%.2fs)", path, time.perf_counter() - started)
        return _state_of(path, digest)[0]

    def _point_to(self, name):
        """Make ``name`` current; on an object store that takes it, only if ``CURRENT`` is
        still what this checkpointer last saw (two fits on one directory are refused)."""
        try:
            self._pointer = self.directory.join(CURRENT).publish_text(name + "\n", replacing=self._pointer)
        except ConcurrentWriteError:
            raise ConcurrentWriteError(
                f"{self.directory}/{CURRENT} was replaced by another process since this fit read it: two fits "
                "are writing this checkpoint directory; give each its own --checkpoint"
            ) from None

    def _remove(self, name):
        """Delete checkpoint ``name`` so that no half of it ever passes for a checkpoint: on
        a disk renamed to a hidden name first (one atomic step), then removed; on an
        object store its manifest and root metadata go first."""
        path = self.directory.join(name)
        if not path.local:
            path.remove(first=(MANIFEST, "zarr.json"))
            return
        doomed = self.directory.join(f"{TEMP_PREFIX}deleting-{name}-{uuid.uuid4().hex[:8]}")
        os.rename(path.path, doomed.path)
        shutil.rmtree(doomed.path, ignore_errors=True)

    def _prune(self):
        """Keep the ``keep`` newest complete checkpoints up to CURRENT (and the driver's anchor)."""
        current = _current_name(self.directory)
        limit = _key(current)
        complete = []
        for iteration, suffix, name in _entries(self.directory):
            if (iteration, suffix) > limit:
                continue  # newer than CURRENT: debris, never valid
            try:
                _open_checkpoint(self.directory.join(name))
            except ValueError:
                continue
            complete.append(name)
        kept = set(complete[-self.keep :]) | {current, self._anchor}
        for _, _, name in _entries(self.directory):
            if name not in kept:
                self._remove(name)
        if not self.directory.local:
            return
        for entry in os.scandir(self.directory.path):
            if entry.name.startswith(CURRENT + ".tmp-"):
                os.unlink(entry.path)
            elif entry.name.startswith(f"{TEMP_PREFIX}deleting-"):
                shutil.rmtree(entry.path, ignore_errors=True)
