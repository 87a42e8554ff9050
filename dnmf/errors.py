"""The errors dnmf raises for what a user can mend: one tree under :class:`DnmfError`.

Each class also derives from the built-in exception scikit-learn (or Python) would raise
for the same fault, so ``except ValueError`` and ``pytest.raises(TypeError)`` keep working.
The command line prints one ``error:`` line and exits with status 2 for a
:class:`DnmfError`; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os

__all__ = [
    "CheckpointError",
    "CheckpointMismatch",
    "ClusterError",
    "ConcurrentWriteError",
    "CorruptCheckpointError",
    "DestinationError",
    "DestinationExistsError",
    "DestinationNotADirectoryError",
    "DestinationPermissionError",
    "DnmfError",
    "InputError",
    "InputTypeError",
    "MissingDependencyError",
    "NotFoundError",
    "ParameterError",
    "ParameterTypeError",
    "StoreError",
    "StorePermissionError",
    "StoreUnreachableError",
]


class DnmfError(Exception):
    """Base of every error about the user's input, parameters, files or cluster."""


class InputError(DnmfError, ValueError):
    """The matrix: its values, shape or format (negative entries, NaN, not a CSR group, ...)."""


class InputTypeError(DnmfError, TypeError):
    """The matrix has a dtype NMF cannot use (boolean, text, objects)."""


class ParameterError(DnmfError, ValueError):
    """A parameter's value, or a combination of parameters, is refused."""


class ParameterTypeError(DnmfError, TypeError):
    """A parameter has the wrong type (an integer was expected, and so on)."""


class NotFoundError(DnmfError, FileNotFoundError):
    """An input, result or checkpoint directory is not where it was said to be."""


class MissingDependencyError(DnmfError, ImportError):
    """An optional package that this input or output needs is not installed (the message
    says which extra to install)."""


class DestinationError(DnmfError, OSError):
    """A result or checkpoint cannot be written there (permission, read-only, no room)."""


class DestinationPermissionError(DestinationError, PermissionError):
    """No permission to write there."""


class DestinationNotADirectoryError(DestinationError, NotADirectoryError):
    """A parent of the destination is a file."""


class DestinationExistsError(DnmfError, FileExistsError):
    """The destination exists and replacing it was not asked for."""


class ClusterError(DnmfError, ConnectionError):
    """The Dask scheduler cannot be reached."""


class StoreError(DnmfError, OSError):
    """An object store (or other fsspec filesystem) failed a request, after the retries."""


class StorePermissionError(DnmfError, PermissionError):
    """The store refused the credentials, or the access to a bucket or key."""


class StoreUnreachableError(DnmfError, ConnectionError):
    """The store's endpoint cannot be reached."""


class CheckpointError(DnmfError, ValueError):
    """A checkpoint directory cannot be used (damaged, incomplete, of another layout)."""


class ConcurrentWriteError(CheckpointError):
    """Another process replaced a file (a checkpoint's ``CURRENT``) that this one was
    writing: two fits share one checkpoint directory."""


class CheckpointMismatch(CheckpointError):
    """The checkpoint was written for another matrix or other result-changing parameters."""


class CorruptCheckpointError(CheckpointError):
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

    def __init__(
        self, message: str, path: str | os.PathLike[str], file: str | os.PathLike[str], previous: str | None = None
    ) -> None:
        super().__init__(message)
        self.path, self.file, self.previous = str(path), str(file), previous
