"""The directory of a checkpointed consensus: a killed run resumes where it stopped.

A consensus is a sequence of ensemble batches (:mod:`dnmf.apps.consensus`), each one
fit whose spectra are all that the consensus needs of it. With ``checkpoint=DIR``::

    DIR/
      consensus-run.json   the run: its batches (members: rank, seed), what they were
                           fitted on (V's fingerprint, the result-changing parameters,
                           ranks, replicates, seed, preprocessing) and the caller's notes
      batch-0001/          a finished batch: H.npy (its members' spectra), batch.json
      batch-0002.ckpt/     the running batch's checkpoints (:mod:`dnmf.engine.checkpoint`,
                           members recorded)

``consensus-run.json`` is written first and then only read: a resume runs the batches it
records (not those the memory of the day would cut). A finished batch appears whole or
not at all (:func:`dnmf.engine.durable.publish_directory`), and its checkpoints are
removed after it. A resume skips the finished batches and continues the running one
from its last checkpoint, bit for bit, so its spectra, and with them the consensus, are
an uninterrupted run's. The consensus options that do not change a fit
(``density_threshold``, ``neighbors``) are not recorded: a rerun with other values
reuses the fits. Local directories only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..api import Checkpointing
from ..engine.checkpoint import check_compatible, matrix_fingerprint, result_params
from ..engine.durable import publish_directory, remove
from ..engine.location import fsync_path
from ..errors import CheckpointError, CheckpointMismatch
from ..params import jsonable

__all__ = ["RUN_FILE", "RUN_FORMAT", "SETTINGS", "ConsensusCheckpoint", "is_consensus_checkpoint", "read_run"]

#: The run's description in DIR, and its format tag.
RUN_FILE = "consensus-run.json"
RUN_FORMAT = "dnmf-consensus-checkpoint"
RUN_VERSION = 1
#: The parts of the description a resume must match (besides V and the parameters).
SETTINGS = ("ranks", "replicates", "random_state", "preprocess", "top_genes")


def is_consensus_checkpoint(directory):
    """Whether ``directory`` (a local path) is the directory of a checkpointed consensus."""
    return (Path(directory) / RUN_FILE).is_file()


def read_run(directory):
    """The description ``consensus-run.json`` of ``directory`` holds.

    Raises
    ------
    CheckpointError
        It is not there, or not one.
    """
    path = Path(directory) / RUN_FILE
    try:
        run = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{directory} is not the checkpoint directory of a consensus (no {RUN_FILE})") from None
    except (OSError, ValueError) as error:
        raise CheckpointError(f"{path} cannot be read: {error}") from None
    if not isinstance(run, dict) or run.get("format") != RUN_FORMAT:
        raise CheckpointError(f"{path} is not a consensus run description")
    return run


def _write_file(path, text):
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temp, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temp, path)
    fsync_path(path.parent, directory=True)


class ConsensusCheckpoint:
    """The checkpoint directory of one consensus (module docstring).

    Parameters
    ----------
    directory : path-like
        Absent, empty, or the directory of the same consensus.
    panels : dnmf.engine.panels.Panels
        V as the ensembles fit it (after any preprocessing).
    params : dict
        The fits' parameters.
    settings : dict
        :data:`SETTINGS`' values.
    every, seconds : optional
        How often the running batch saves its state (:class:`dnmf.api.Checkpointing`).
    run_info : dict, optional
        JSON-ready notes kept in the description (the CLI's input, options and DIR).
    """

    def __init__(self, directory, panels, params, settings, *, every=None, seconds=None, run_info=None):
        self.directory = Path(directory).absolute()
        if self.directory.exists() and not self.directory.is_dir():
            raise CheckpointError(f"checkpoint directory {self.directory} is a file")
        visible = self.directory.is_dir() and any(not p.name.startswith(".") for p in self.directory.iterdir())
        if visible and not is_consensus_checkpoint(self.directory):  # hidden names: debris of a crashed write
            raise CheckpointError(
                f"checkpoint directory {self.directory} holds other files and no {RUN_FILE}; use an empty directory"
            )
        self.panels, self.params, self.every, self.seconds = panels, params, every, seconds
        self.settings = jsonable({name: settings[name] for name in SETTINGS})
        self.run_info = jsonable(dict(run_info or {}))

    def plan(self, batches):
        """The batches to run: those the directory records (a resume), else ``batches``,
        recorded now.

        Raises
        ------
        CheckpointMismatch
            The directory holds a consensus of another matrix, parameters or settings.
        """
        fingerprint = matrix_fingerprint(self.panels)
        if not is_consensus_checkpoint(self.directory):
            self.directory.mkdir(parents=True, exist_ok=True)
            run = {
                "format": RUN_FORMAT,
                "version": RUN_VERSION,
                **self.settings,
                "fingerprint": fingerprint,
                "params": result_params(self.params),
                "batches": [[[int(k), int(seed)] for k, seed in batch] for batch in batches],
                "run": self.run_info,
            }
            _write_file(self.directory / RUN_FILE, json.dumps(run, indent=1) + "\n")
            return [list(batch) for batch in batches]
        run = read_run(self.directory)
        where = str(self.directory / RUN_FILE)
        changed = [
            f"{name}: checkpoint {run.get(name)!r}, now {self.settings[name]!r}"
            for name in SETTINGS
            if run.get(name) != self.settings[name]
        ]
        if changed:
            raise CheckpointMismatch(f"cannot resume from {where}: the consensus differs ({'; '.join(changed)})")
        check_compatible({"path": where, **run}, fingerprint, self.params)
        return [[(int(k), int(seed)) for k, seed in batch] for batch in run["batches"]]

    def _finished_path(self, number):
        return self.directory / f"batch-{number:04d}"

    def finished(self, number):
        """``(H, n_iter)`` of batch ``number`` if it finished, else None."""
        path = self._finished_path(number)
        if not path.is_dir():
            return None
        try:
            H = np.load(path / "H.npy")
            n_iter = int(json.loads((path / "batch.json").read_text())["n_iter"])
        except (OSError, ValueError, KeyError) as error:
            raise CheckpointError(f"finished batch {path} cannot be read: {error}") from None
        return H, n_iter

    def checkpointing(self, number):
        """The :class:`~dnmf.api.Checkpointing` of batch ``number`` while it runs."""
        return Checkpointing(self.directory / f"batch-{number:04d}.ckpt", self.every, self.seconds)

    def finish(self, number, members, H, n_iter):
        """Record batch ``number`` as finished (whole or not at all), then drop its checkpoints."""
        with publish_directory(self._finished_path(number), overwrite=True) as temp:
            temp.mkdir()
            np.save(temp / "H.npy", np.asarray(H))
            (temp / "batch.json").write_text(
                json.dumps({"n_iter": int(n_iter), "members": [[int(k), int(seed)] for k, seed in members]}) + "\n"
            )
        running = Path(self.checkpointing(number).directory)
        if running.exists():
            remove(running)
