"""The stopping rule's arithmetic (:mod:`dnmf.numerics.convergence`) on error sequences."""

import math

import numpy as np
import pytest

from dnmf.numerics.convergence import remaining_decrease, settled


def geometric(limit, first_gap, rate, passes):
    """Errors converging to ``limit`` at ``rate``: e_t = limit + first_gap * rate**t."""
    return [limit + first_gap * rate**t for t in range(passes + 1)]


def test_the_tail_of_a_geometric_sequence_is_what_is_left():
    errors = geometric(10.0, 1.0, 0.5, 8)
    assert remaining_decrease(errors, 1000) == pytest.approx(errors[-1] - 10.0)


@pytest.mark.parametrize("rate", [0.3, 0.7, 0.95])
def test_stops_exactly_when_what_is_left_is_below_tol(rate):
    tol, errors = 1e-4, geometric(1.0, 0.5, rate, 400)
    first = next(t for t in range(4, len(errors)) if settled(errors[: t + 1], tol, 1000))
    assert errors[first] - 1.0 <= tol * errors[first] < errors[first - 1] - 1.0


def test_never_stops_while_the_error_falls_slowly_and_steadily():
    """0.1% per pass at a steady rate: far more than tol is still to come."""
    errors = list(100.0 * 0.999 ** np.arange(50))
    assert not any(settled(errors[: t + 1], 1e-4, 200 - t) for t in range(len(errors)))


def test_a_linear_decline_stops_when_the_passes_left_cannot_add_up_to_tol():
    errors = [1.0 - 1e-7 * t for t in range(20)]
    assert settled(errors, 1e-4, 100)  # 100 passes of 1e-7: 1e-5 < 1e-4
    assert not settled(errors, 1e-4, 10_000)


def test_waits_after_a_rise_and_while_the_rate_cannot_be_read():
    assert remaining_decrease([3.0, 2.0, 1.5], 100) == math.inf  # three errors: two decreases
    assert remaining_decrease([3.0, 2.0, 1.0, 1.2], 100) == math.inf  # the last pass rose
    assert remaining_decrease([3.0, 2.0, 2.0, 1.0], 100) == math.inf  # a pass that did not move


def test_nothing_is_left_when_the_error_stopped_falling():
    assert remaining_decrease([1.0, 1.0 + 1e-12, 1.0, 1.0], 100) == 0.0
    assert settled([0.0, 0.0, 0.0, 0.0], 1e-4, 100)  # an exact fit, however its zero is summed


def test_tol_zero_never_stops():
    assert not settled([1.0, 1.0, 1.0, 1.0], 0.0, 100)
