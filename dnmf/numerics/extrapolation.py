"""Extrapolated HALS: the step-size schedule of ``extrapolate=True``.

Plain HALS (scikit-learn's ``cd``) moves each factor to the minimizer of its
subproblem. On flat problems (sparse tf-idf matrices, where the error creeps in its
fourth decimal for hundreds of iterations) it needs many passes over V to get
anywhere. Extrapolation (Ang & Gillis, "Accelerating nonnegative matrix factorization
algorithms using extrapolation", Neural Computation 31, 2019) moves further along the
direction the update took: after the HALS sweeps of a pass, ::

    W ← max(0, W_new + β (W_new − W))        (in the panel task, before its partials)
    H_new = HALS(H; from those partials)
    H ← max(0, H_new + β (H_new − H))        (unless the pass made the error worse)

with one step ``β`` for both factors, adapted from pass to pass. It keeps the one pass
over V per iteration and needs no second copy of W: the extrapolated W is the iterate.
The loss that comes for free from the partials is that of ``(W, H_new)``, and that pair
is the iterate the history records and the fit returns; the extrapolated H only starts
the next pass.

:class:`Schedule` is the adaptation: start at ``β = 0.5``; after a pass whose error did
not increase, ``β ← min(β̄, γ β)`` and ``β̄ ← min(1, γ̄ β̄)``; after one whose error
increased, the next pass starts from the plain ``H_new`` (a restart), ``β̄`` drops to the
last ``β`` that worked and ``β ← β / η``. The constants are Ang & Gillis's defaults.

On flat problems (tf-idf matrices) this reaches a given error in several times fewer
passes than plain HALS (``scripts/bench_sklearn.py`` measures it); the price: the
iterates are no longer scikit-learn's.

A checkpoint saves the schedule and the extrapolated H with the iterate, so a resumed
fit continues exactly as the uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BETA_START", "Schedule"]

#: First step of the schedule.
BETA_START = 0.5
#: Growth of β after a pass that did not increase the error.
GROWTH = 1.05
#: Growth of the cap β̄ after such a pass (the cap never exceeds 1).
CAP_GROWTH = 1.01
#: Division of β after a pass that increased the error.
SHRINK = 1.5


@dataclass
class Schedule:
    """Ang & Gillis's adaptive extrapolation step (see the module docstring).

    Attributes
    ----------
    beta : float
        Step of the next pass.
    cap : float
        Upper bound β̄ on ``beta``.
    last_good : float
        The step of the last pass that did not increase the error.
    """

    beta: float = BETA_START
    cap: float = 1.0
    last_good: float = BETA_START

    def accept(self, loss, previous):
        """Adapt to a pass whose new iterate has ``loss`` (the one before: ``previous``).

        Returns whether the pass's extrapolated H may start the next pass (False: restart
        from the plain H).
        """
        if loss > previous:
            self.cap = self.last_good
            self.beta = self.beta / SHRINK
            return False
        self.last_good = self.beta
        self.beta = min(self.cap, GROWTH * self.beta)
        self.cap = min(1.0, CAP_GROWTH * self.cap)
        return True

    def as_list(self):
        """``[beta, cap, last_good]`` (what a checkpoint records)."""
        return [float(self.beta), float(self.cap), float(self.last_good)]

    @classmethod
    def from_list(cls, values):
        """The schedule :meth:`as_list` recorded."""
        beta, cap, last_good = (float(value) for value in values)
        return cls(beta, cap, last_good)
