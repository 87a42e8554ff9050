"""The value types of a fit: its input statistics, the state a checkpoint saves, the
result, and the protocol a checkpoint writer follows. The driver makes them; checkpoints,
results, plots and the estimator read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import dask.array as da
import numpy as np
from numpy.typing import ArrayLike

from ..numerics.losses import loss_to_error

__all__ = ["Checkpointer", "FitResult", "InputStats", "IterationInfo", "LoopState"]


class InputStats(NamedTuple):
    """What the statistics pass learns of V (over observed entries with missing values).

    The kernels return it as a plain vector (:func:`dnmf.numerics.kernels.panel_stats`,
    :func:`dnmf.numerics.masked.panel_stats`); :meth:`of` names its entries.
    """

    minimum: float
    n_nonfinite: int
    total: float
    squared_norm: float
    n_zero: int
    size: int  # entries (observed ones, with missing values)
    n_nan: int = 0  # NaN entries (missing, with missing_values=nan)

    @classmethod
    def of(cls, vector: ArrayLike) -> InputStats:
        """The statistics of a :func:`~dnmf.numerics.kernels.panel_stats` vector."""
        values = [float(x) for x in np.asarray(vector)]
        return cls(
            values[0],
            int(values[1]),
            values[2],
            values[3],
            int(values[4]),
            int(values[5]),
            int(values[6]) if len(values) > 6 else 0,
        )

    @property
    def mean(self) -> float:
        """Mean of the (observed) entries."""
        return self.total / self.size

    @property
    def norm(self) -> float:
        """``||V||_F`` (over observed entries)."""
        return float(np.sqrt(self.squared_norm))


@dataclass(frozen=True)
class IterationInfo:
    """What the driver reports after each outer iteration (for progress bars)."""

    iteration: int
    max_iter: int
    loss: float  # newest known loss
    error: float  # sqrt(2 * loss)
    relative_change: float  # relative decrease of the error over the last iteration known
    seconds: float  # wall time of this iteration


@dataclass(frozen=True)
class LoopState:
    """Everything needed to continue a fit exactly where it stopped.

    Attributes
    ----------
    iteration : int
        Outer iterations done.
    W : dask.array.Array of shape (m, k)
        Row-chunked like V (persisted).
    H : ndarray of shape (k, n)
    loss_history : tuple of float
        Known losses of iterates 0..j (see the stopping rule).
    finished : bool
        The stopping rule fired: a resume runs no further iteration.
    extrapolation : list of float or None
        The extrapolation schedule (:meth:`dnmf.numerics.extrapolation.Schedule.as_list`) of an
        ``extrapolate=True`` fit, else None.
    H_next : ndarray of shape (k, n) or None
        The H the next pass starts from when it is not ``H`` (extrapolated HALS).
    violations : tuple of float
        The HALS violation of passes 1..iteration (empty for MU).
    """

    iteration: int
    W: da.Array
    H: np.ndarray
    loss_history: tuple[float, ...]
    finished: bool = False
    extrapolation: list[float] | None = None
    H_next: np.ndarray | None = None
    violations: tuple[float, ...] = ()


class Checkpointer(Protocol):
    """What :func:`dnmf.engine.driver.factorize` asks of a checkpoint writer (see
    :mod:`dnmf.engine.checkpoint`)."""

    def due(self, iteration: int) -> bool:
        """Whether to save after this iteration."""

    def save(self, state: LoopState) -> LoopState | None:
        """Persist ``state`` durably; may return it with W read back from the durable copy,
        which the driver then continues from on a cluster (see "Lost workers")."""


@dataclass
class FitResult:
    """Outcome of a fit: what :func:`dnmf.non_negative_factorization` and the applications get back.

    Attributes
    ----------
    W : dask.array.Array of shape (m, k)
        Row-chunked like V, persisted (an ndarray once gathered, as
        ``dnmf.api.run_job(..., as_numpy=True)`` returns it).
    H : ndarray of shape (k, n)
    n_iter : int
        Outer iterations run (for a frozen-H solve: the most updates any panel made).
    loss_history : list of float
        ``loss_history[t]`` is the loss of iterate t (index 0: the initial factors).
    converged : bool
        The stopping rule fired.
    norm_V : float
        ``||V||_F`` (from the statistics pass), for relative errors.
    violations : list of float
        HALS: the violation of passes 1..n_iter (see the stopping rule); MU: empty.
    member_losses : list of float
        Of a frozen-H solve: the loss of each member of the ensemble (one for a single
        factorization); empty otherwise.
    """

    W: da.Array | np.ndarray
    H: np.ndarray
    n_iter: int
    loss_history: list[float] = field(default_factory=list)
    converged: bool = False
    norm_V: float = float("nan")
    violations: list[float] = field(default_factory=list)
    member_losses: list[float] = field(default_factory=list)

    @property
    def loss(self) -> float:
        """Loss of the returned factors."""
        return self.loss_history[-1]

    @property
    def reconstruction_err(self) -> float:
        """``sqrt(2 * loss)``: the Frobenius norm of V - WH for the Frobenius loss."""
        return loss_to_error(self.loss)
