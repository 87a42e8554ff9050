"""V as the engine sees it: a row-panel Dask array (the formats of :mod:`dnmf.io.storage`
produce it)."""

from __future__ import annotations

from dataclasses import dataclass

import dask.array as da

__all__ = ["Panels"]


@dataclass(frozen=True)
class Panels:
    """V as row panels: the one form every solver sees.

    Attributes
    ----------
    array : dask.array.Array
        Row-chunked, one chunk across all columns; blocks are ndarrays or CSR matrices.
    sparse : bool
        Whether blocks are SciPy CSR matrices.
    in_memory : bool
        The data lives in this process (NumPy/SciPy input): a distributed run ships it
        to the cluster once instead of with every iteration's graph.
    reads : tuple of Delayed, optional
        For stored inputs, the task reading each panel. Iteration graphs use these
        directly; ``array`` wraps the same tasks for whole-array algorithms (the SVD).
        Keeping the two apart stops a cluster from seeing one key with two definitions
        (``array``'s optimized graph renames what it fuses).
    nnz : int or None
        Stored entries, when the source knows them without a pass (SciPy matrices, CSR
        groups).
    from_dask : bool
        The source is a user's Dask array (which may need its own scheduler to sample).
    """

    array: da.Array
    sparse: bool
    in_memory: bool
    reads: tuple | None = None
    nnz: int | None = None
    from_dask: bool = False

    @property
    def shape(self):
        """``(m, n)``."""
        return self.array.shape

    @property
    def dtype(self):
        """float32 or float64."""
        return self.array.dtype

    @property
    def row_chunks(self):
        """Rows in each panel."""
        return self.array.chunks[0]

    @property
    def n_panels(self):
        """Number of row panels."""
        return len(self.array.chunks[0])

    def blocks(self):
        """One Delayed per panel, in row order."""
        if self.reads is not None:
            return list(self.reads)
        return list(self.array.to_delayed().ravel())
