"""The stopping rule's arithmetic: how much further passes can still lower the error.

A fit stops when the passes it has left would change its error by less than ``tol``
(relative). That amount is read from how the recent errors converge, not from a fixed window:
with ``d_i = e_{i-1} - e_i`` the decreases of the last :data:`RATE_PASSES` passes and ``ρ`` the
larger of their successive ratios ``d_i / d_{i-1}``, the error converges about geometrically at
rate ``ρ``, and what is left to gain is the tail ``d_j ρ / (1 - ρ)``. No more than ``d_j``
per pass can be gained for as many passes as ``max_iter`` leaves either (a rate of 1 or more
makes that the bound). While the rate cannot be read (a decrease that is not positive: an
extrapolated step taken back, rounding) the rule waits; when the error has not fallen at all
over the last :data:`RATE_PASSES` passes, and did not rise on the last one, there is nothing
left to gain.

So the rule fires after a few passes on flat problems (tf-idf matrices, log counts), whose
error is final long before the gradient vanishes, and never while the error still falls at a
rate whose tail exceeds ``tol``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["RATE_PASSES", "remaining_decrease", "settled"]

#: Passes whose decreases of the error estimate the rate of convergence (two ratios).
RATE_PASSES = 3


def remaining_decrease(errors: Sequence[float], passes_left: int) -> float:
    """Estimate of how much the newest error ``errors[-1]`` can still fall.

    Parameters
    ----------
    errors : sequence of float
        ``e_0 … e_j``, the errors of the iterates so far.
    passes_left : int
        Passes the fit may still make (``max_iter - j``).

    Returns
    -------
    float
        ``min(d_j ρ / (1 - ρ), d_j · passes_left)``; ``inf`` while the rate cannot be read
        and after a pass that raised the error; 0 when the error did not fall over the last
        :data:`RATE_PASSES` passes.
    """
    if len(errors) <= RATE_PASSES:
        return math.inf
    recent = [float(e) for e in errors[-RATE_PASSES - 1 :]]
    decreases = [before - after for before, after in zip(recent, recent[1:])]
    if decreases[-1] < 0:  # the last pass raised the error (an extrapolated step taken back): wait
        return math.inf
    if recent[-1] >= recent[0]:
        return 0.0
    if min(decreases) <= 0:
        return math.inf
    rate = max(after / before for before, after in zip(decreases, decreases[1:]))
    last = decreases[-1]
    linear = last * max(passes_left, 0)
    return min(last * rate / (1.0 - rate), linear) if rate < 1 else linear


def settled(errors: Sequence[float], tol: float, passes_left: int) -> bool:
    """Whether the passes left would change the newest error by less than ``tol`` (relative)."""
    if tol <= 0 or not errors:
        return False
    return remaining_decrease(errors, passes_left) <= tol * float(errors[-1])
