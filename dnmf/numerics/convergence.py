"""The stopping rule's arithmetic: how much further passes can still lower the error.

A fit stops when the passes it has left would change its error by less than ``tol``
(relative). That amount is read from how the recent errors fall, not from a fixed window.
Alternating updates of NMF converge sublinearly: late in a fit the error approaches its limit
about as ``e_t ≈ e* + C / t``, so that its decrease per pass is ``d_t ≈ C / t²`` and what is
left to gain is ``e_t - e* ≈ t · d_t``: as much again as the fit would gain if it kept its
current pace for as many passes as it has made. The rule takes ``d_t`` as the mean decrease of
the last :data:`RATE_PASSES` passes (extrapolated steps make single decreases irregular), and
never counts more passes than ``max_iter`` leaves. A faster, geometric convergence only makes
that estimate safe.

So the rule fires after a few passes on flat problems (tf-idf matrices, log counts), whose
error is final long before the gradient vanishes; it never fires while the error still falls
at a pace that the passes made so far say would add up to more than ``tol``. It waits after a
pass that raised the error (an extrapolated step taken back), and while the last
:data:`RATE_PASSES` passes hold a rise of more than :data:`SETTLED_TOLS` ``tol``: the mean pace of a
window with such a rise says nothing about what is left. When the error has not fallen over the
last :data:`RATE_PASSES` passes otherwise, there is nothing left to gain.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["RATE_PASSES", "SETTLED_TOLS", "remaining_decrease", "rose_lately", "settled"]

#: Passes whose mean decrease of the error is the current pace.
RATE_PASSES = 3
#: A pass that moved the error by more than this many ``tol`` (relative) has not settled: a
#: rise that large is a step taken back, and with extrapolation the gradient test waits for a
#: smaller move (:mod:`dnmf.engine.driver`).
SETTLED_TOLS = 10


def remaining_decrease(errors: Sequence[float], passes_left: int) -> float:
    """Estimate of how much the newest error ``errors[-1]`` can still fall.

    Parameters
    ----------
    errors : sequence of float
        ``e_0 … e_t``, the errors of the iterates so far.
    passes_left : int
        Passes the fit may still make (``max_iter - t``).

    Returns
    -------
    float
        ``(e_{t-3} - e_t) / 3 · min(t, passes_left)``, at least 0; ``inf`` before three
        passes and after a pass that raised the error.
    """
    t = len(errors) - 1
    if t < RATE_PASSES or errors[-1] > errors[-2]:
        return math.inf
    pace = (float(errors[-RATE_PASSES - 1]) - float(errors[-1])) / RATE_PASSES
    return max(pace, 0.0) * max(min(t, passes_left), 0)


def rose_lately(errors: Sequence[float], tol: float) -> bool:
    """Whether one of the last :data:`RATE_PASSES` passes raised the error by more than
    :data:`SETTLED_TOLS` ``tol`` (relative)."""
    recent = [float(e) for e in errors[-RATE_PASSES - 1 :]]
    return any(after - before > SETTLED_TOLS * tol * after for before, after in zip(recent, recent[1:]))


def settled(errors: Sequence[float], tol: float, passes_left: int) -> bool:
    """Whether the passes left would change the newest error by less than ``tol`` (relative)."""
    if tol <= 0 or not errors or rose_lately(errors, tol):
        return False
    return remaining_decrease(errors, passes_left) <= tol * float(errors[-1])
