"""The stopping rule's arithmetic (:mod:`dnmf.numerics.convergence`) on error sequences."""

import math

import numpy as np
import pytest

from dnmf.numerics.convergence import remaining_decrease, rose_lately, settled

TOL = 1e-4


def first_stop(errors, tol=TOL, max_iter=10**9):
    return next((t for t in range(len(errors)) if settled(errors[: t + 1], tol, max_iter - t)), None)


def test_on_a_sublinear_tail_what_is_left_is_below_tol_when_it_stops():
    """e_t = 1 + 1/t: the pace times the passes made bounds what is left (1/t)."""
    errors = [2.0] + [1.0 + 1.0 / t for t in range(1, 30_000)]
    t = first_stop(errors)
    assert t is not None and errors[t] - 1.0 <= TOL * errors[t]
    assert errors[t - 1] - 1.0 > 0.5 * TOL * errors[t - 1]  # and not much later than that


@pytest.mark.parametrize("rate", [0.3, 0.7, 0.95])
def test_on_a_geometric_tail_too(rate):
    errors = [1.0 + 0.5 * rate**t for t in range(2000)]
    t = first_stop(errors)
    assert t is not None and errors[t] - 1.0 <= TOL * errors[t]


def test_never_stops_while_the_error_falls_slowly_and_steadily():
    """0.1% per pass: far more than tol is still to come."""
    errors = list(100.0 * 0.999 ** np.arange(50))
    assert first_stop(errors, max_iter=200) is None


def test_the_passes_left_bound_what_is_left():
    errors = [1.0 - 1e-6 * t for t in range(200)]
    assert settled(errors, TOL, 10)  # 10 more passes of 1e-6: 1e-5 < 1e-4
    assert not settled(errors, TOL, 1000)


def test_waits_for_three_passes_and_after_a_rise():
    assert remaining_decrease([3.0, 2.0, 1.5], 100) == math.inf
    assert remaining_decrease([3.0, 2.0, 1.0, 1.2], 100) == math.inf


def test_after_a_step_taken_back_waits_three_passes():
    """An extrapolated HALS fit of a dense 8000 x 4000 matrix at k = 25 (its errors at passes 7-13):
    a step taken back raised the error 14%, and the pass after lowered it again. The mean pace of
    the last three passes is then negative, yet the error is 10% above where it had been."""
    errors = [2656.72, 2367.08, 1985.45, 1602.26, 1595.52, 1819.45, 1748.10]
    assert rose_lately(errors, TOL) and not settled(errors, TOL, 100)
    assert not settled([*errors, 1595.5, 1595.49], TOL, 100)  # the rise is still in the window
    recovered = [*errors, 1595.5, 1595.49, 1595.49]
    assert not rose_lately(recovered, TOL) and not settled(recovered, TOL, 100)  # its pace counts the recovery
    assert settled([*recovered, 1595.49], TOL, 100)


def test_rises_within_ten_tol_do_not_hold_it_back():
    """A Flickr-shaped graph at k = 16 (28M x 1.6M, 108M entries; seed 1, passes 5-9): the
    error settled, then steps taken back nudged it up by about tol. A rule that waited for the
    error to come back to its lowest was still waiting at pass 15, the error 3.7e-4 above it."""
    errors = [10188.27, 10176.96, 10174.30, 10175.70, 10176.61, 10175.36]
    assert not rose_lately(errors, TOL) and settled(errors, TOL, 191)


def test_nothing_is_left_when_the_error_stopped_falling():
    assert remaining_decrease([1.0, 1.0 + 1e-12, 1.0, 1.0], 100) == 0.0
    assert settled([0.0, 0.0, 0.0, 0.0], TOL, 100)  # an exact fit, however its zero is summed


def test_tol_zero_never_stops():
    assert not settled([1.0, 1.0, 1.0, 1.0], 0.0, 100)
