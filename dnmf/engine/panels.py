"""V as the engine sees it: a row-panel Dask array (the formats of :mod:`dnmf.io.storage`
produce it)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.delayed import Delayed

__all__ = ["PanelRead", "Panels", "stacked"]


class PanelRead:
    """One panel of a stored V, read inside the task that uses it: ``function(*args)``
    (arguments that are themselves PanelReads are read first).

    Graph builders pass it to a panel task as a plain argument, not as a task of its own,
    and :class:`dnmf.engine.solvers.Task` calls it where the task runs. A panel is read
    where, and only when, it is worked on, and is freed with its task: no read panel
    waits in a worker's memory for its consumer, and none moves between workers. (Reads
    as tasks of their own let a scheduler run them ahead of their consumers and hold the
    whole of V in memory.)
    """

    __slots__ = ("function", "args")

    def __init__(self, function: Callable[..., Any], *args: Any) -> None:
        self.function, self.args = function, args

    def __call__(self) -> Any:
        return self.function(*(arg() if isinstance(arg, PanelRead) else arg for arg in self.args))

    def __reduce__(self):
        return (PanelRead, (self.function, *self.args))

    def __dask_tokenize__(self):
        return dask.base.tokenize(self.function, *self.args)

    def __repr__(self):
        return f"PanelRead({getattr(self.function, '__name__', self.function)}, ...)"


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
    reads : tuple of PanelRead (or Delayed), optional
        For stored inputs, how to read each panel; graphs pass these to the panel tasks
        (:class:`PanelRead`). ``array`` wraps the same reads for whole-array algorithms.
        (Delayed panels, as :meth:`map_panels` makes of in-memory ones, stay apart from
        ``array`` too: a cluster must not see one key with two definitions, and
        ``array``'s optimized graph renames what it fuses.)
    nnz : int or None
        Stored entries, when the source knows them without a pass (SciPy matrices, CSR
        groups).
    from_dask : bool
        The source is a user's Dask array (which may need its own scheduler to sample).
    """

    array: da.Array
    sparse: bool
    in_memory: bool
    reads: tuple[PanelRead | Delayed, ...] | None = None
    nnz: int | None = None
    from_dask: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)``."""
        return self.array.shape

    @property
    def dtype(self) -> np.dtype:
        """float32 or float64."""
        return self.array.dtype

    @property
    def row_chunks(self) -> tuple[int, ...]:
        """Rows in each panel."""
        return self.array.chunks[0]

    @property
    def n_panels(self) -> int:
        """Number of row panels."""
        return len(self.array.chunks[0])

    def blocks(self) -> list[PanelRead | Delayed]:
        """One per panel, in row order: a :class:`PanelRead` for stored inputs, else a
        Delayed; what the engine's graph builders take as panels."""
        if self.reads is not None:
            return list(self.reads)
        return list(self.array.to_delayed().ravel())

    def map_panels(self, function: Callable[..., Any], *args: Any, n_columns: int | None = None) -> Panels:
        """V with panel ``i`` replaced by ``function(panel_i, i, *args)``, made each time the
        panel is read (nothing is stored); ``n_columns``: the new panels' width, if it changes."""
        reads = tuple(
            PanelRead(function, block, i, *args)
            if isinstance(block, PanelRead)
            else dask.delayed(function, pure=True)(block, i, *args)
            for i, block in enumerate(self.blocks())
        )
        n_columns = self.shape[1] if n_columns is None else int(n_columns)
        array = stacked(reads, self.row_chunks, n_columns, self.dtype, self.array._meta)
        return replace(
            self, array=array, reads=reads, in_memory=False, nnz=None if n_columns != self.shape[1] else self.nnz
        )


def stacked(
    reads: Sequence[PanelRead | Delayed], row_chunks: Sequence[int], n_columns: int, dtype: np.dtype, meta: Any
) -> da.Array:
    """A row-panel Dask array whose panel ``i`` is ``reads[i]`` (a :class:`PanelRead` or a
    Delayed), for whole-array algorithms."""
    pieces = [
        da.from_delayed(
            dask.delayed(read, pure=True)() if isinstance(read, PanelRead) else read,
            shape=(int(rows), n_columns),
            dtype=dtype,
            meta=meta,
        )
        for read, rows in zip(reads, row_chunks)
    ]
    return pieces[0] if len(pieces) == 1 else da.concatenate(pieces, axis=0)
