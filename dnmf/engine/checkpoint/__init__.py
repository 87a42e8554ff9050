"""Crash-safe checkpoints of a running fit, and exact resume.

Public API
----------
:class:`ZarrCheckpointer` implements the driver's ``Checkpointer`` protocol
(``due(iteration)``, ``save(state)``) and knows how to resume::

    from dnmf.api import Checkpointing, run

    result = run(X, params, checkpointing=Checkpointing("run.ckpt", every=5))

:func:`dnmf.api.prepare` makes the checkpointer from the fit's panels (V wrapped once)
and asks it for the state to resume from: None when the directory holds no checkpoint
(a fresh fit), the saved :class:`~dnmf.engine.state.LoopState` when it holds one written
for the same matrix and the same result-changing parameters; a
:class:`~dnmf.errors.CheckpointMismatch` naming every difference otherwise. That is the
estimator's rule too: ``NMF(checkpoint=DIR, checkpoint_every=N).fit(X)`` resumes
automatically when ``DIR`` holds a matching checkpoint, starts afresh when it holds
none, and refuses when it does not match.

Modules: :mod:`.fingerprint` (what is recorded of V and the parameters),
:mod:`.manifest` (the checksums), :mod:`.store` (the directory protocol and
:class:`~dnmf.engine.checkpoint.store.ZarrCheckpointer`).

:func:`load_checkpoint` reads the current checkpoint of a directory as
``(LoopState, metadata)``; :func:`has_checkpoint` tells whether there is one.

Corruption
----------
Every checkpoint directory holds a ``SHA256SUMS`` file (the format of ``sha256sum``, so
``cd ckpt-000012 && sha256sum -c SHA256SUMS`` checks it by hand) listing the SHA-256 of
every other file in it. :func:`load_checkpoint` verifies all of them before anything is
used: a truncated, altered, missing or unlisted file raises
:class:`~dnmf.errors.CorruptCheckpointError` (a ``ValueError``) naming the file, and naming the
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
               rng, run (caller's notes, e.g. the CLI's input and OUT), members (of an
               ensemble: [rank, seed] pairs; a resume must fit the same), complete
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

On an object store (a URL directory, see :mod:`dnmf.engine.location`) the protocol is
the same without renames: the checkpoint is written under its new prefix, its
``SHA256SUMS`` last, and ``CURRENT`` is replaced by one PUT, the step that makes it
current (a PUT is atomic: readers see the old object or the new one). A pruned
checkpoint loses its manifest and root metadata first, so a crash while deleting it
leaves nothing that verifies. The files are hashed by tasks on the workers, which read
them where they are (:mod:`.manifest`). On S3, ``CURRENT`` is written conditionally
(``If-Match`` the version the checkpointer last saw, ``If-None-Match`` for the first
one): a second fit writing the same checkpoint URL raises
:class:`~dnmf.errors.ConcurrentWriteError` rather than interleaving its checkpoints.

:meth:`ZarrCheckpointer.save` returns the saved state with W read back from the new
checkpoint's files: the driver continues from it on a Dask cluster, so the lineage that
Dask keeps (and replays when a worker dies with blocks of W) reaches back to the last
checkpoint only, not to the first iteration (see :func:`dnmf.engine.driver.factorize`).

Before the first iteration the checkpointer probes its directory
(:func:`dnmf.engine.durable.check_writable`): no permission, a read-only or full file system,
or less free space than the checkpoints need fail at once.

Test hook: with the environment variable
``DNMF_TEST_PAUSE_IN_CHECKPOINT_WRITE=SECONDS`` (or ``SECONDS@ITERATION``, to pause only
in the save of that iteration), :meth:`ZarrCheckpointer.save` sleeps that long after W
is written and before the checkpoint is completed and made current, so that a test can
kill the process in the middle of a checkpoint write.
"""

from __future__ import annotations

from ...errors import CorruptCheckpointError
from .fingerprint import RESUMABLE_PARAMS, SAMPLE_ROWS, check_compatible, matrix_fingerprint, result_params
from .manifest import MANIFEST
from .store import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    CURRENT,
    DEFAULT_EVERY,
    KEEP,
    PAUSE_IN_CHECKPOINT_WRITE,
    ZarrCheckpointer,
    has_checkpoint,
    load_checkpoint,
    verify_checkpoint,
)

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
