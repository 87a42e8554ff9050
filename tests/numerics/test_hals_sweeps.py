"""The HALS sweep: the column-blocked kernel against scikit-learn's own ``_update_cdnmf_fast``."""

import numpy as np
import pytest
from sklearn.decomposition._cdnmf_fast import _update_cdnmf_fast

from dnmf.numerics import kernels
from dnmf.numerics.kernels import BLOCKED_SWEEP_MIN_RANK, BLOCKED_SWEEP_MIN_WORK, BLOCKED_SWEEP_ROWS, hals_sweeps

RTOL = {np.float32: 2e-5, np.float64: 1e-12}


def _problem(rows, k, dtype, seed):
    rng = np.random.default_rng(seed)
    H = rng.random((k, 300))
    H[k // 3] = 0  # a dead component: a zero on gram's diagonal, left as it is
    gram = (H @ H.T).astype(dtype)
    W = rng.random((rows, k))
    W[W < 0.3] = 0  # zeros, where the projected gradient keeps only its negative part
    cross = (W @ gram * rng.uniform(0.2, 1.8, (rows, k))).astype(dtype)
    return np.ascontiguousarray(W, dtype=dtype), gram, cross


def _sklearn(W, gram, cross, n_sweeps):
    W = W.copy()
    violations = [
        float(_update_cdnmf_fast(W, gram, cross, np.arange(W.shape[1], dtype=np.intp))) for _ in range(n_sweeps)
    ]
    return W, violations[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "rows, k",
    [
        (BLOCKED_SWEEP_ROWS + 1234, BLOCKED_SWEEP_MIN_RANK),
        (BLOCKED_SWEEP_ROWS + 1234, 21),
        (BLOCKED_SWEEP_ROWS + 1234, 48),
    ]
    + [(BLOCKED_SWEEP_MIN_WORK // 48**2 + 1, 48)],  # few rows, many columns (an image set at k = 48)
)
@pytest.mark.parametrize("n_sweeps", [1, 3])
def test_blocked_sweep_is_sklearns_sweep(dtype, rows, k, n_sweeps):
    """On factors large enough to take it (and a row count that leaves a partial last block),
    the column-blocked sweep gives scikit-learn's kernel's W and violation, to rounding."""
    W, gram, cross = _problem(rows, k, dtype, seed=k)
    expected, expected_violation = _sklearn(W, gram, cross, n_sweeps)
    violation = hals_sweeps(W, gram, cross, n_sweeps)
    assert W.dtype == dtype
    assert np.linalg.norm(W - expected) <= RTOL[dtype] * np.linalg.norm(expected)
    # scikit-learn sums the violation in W's dtype; ours is summed in float64
    assert violation == pytest.approx(expected_violation, rel={np.float32: 1e-3, np.float64: 1e-10}[dtype])
    assert np.all(W[:, k // 3] == expected[:, k // 3])  # the dead component is untouched


def test_small_factors_take_sklearns_kernel(monkeypatch):
    """Below the thresholds the sweep is scikit-learn's own, bit for bit; at them, the blocked one."""
    for rows, k in [(BLOCKED_SWEEP_MIN_WORK // 48**2, 48), (3 * BLOCKED_SWEEP_ROWS, BLOCKED_SWEEP_MIN_RANK - 1)]:
        W, gram, cross = _problem(rows, k, np.float64, seed=rows)
        expected, _ = _sklearn(W, gram, cross, 2)
        hals_sweeps(W, gram, cross, 2)
        np.testing.assert_array_equal(W, expected)
    calls, blocked = [], kernels._blocked_sweeps
    monkeypatch.setattr(kernels, "_blocked_sweeps", lambda *args: calls.append(args[3]) or blocked(*args))
    hals_sweeps(
        *_problem(BLOCKED_SWEEP_MIN_WORK // BLOCKED_SWEEP_MIN_RANK**2, BLOCKED_SWEEP_MIN_RANK, np.float64, 0), 2
    )
    assert calls == [2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "rows, k, members",
    [
        (BLOCKED_SWEEP_ROWS + 1234, BLOCKED_SWEEP_MIN_RANK, ()),  # the blocked sweep, on H as it is stored
        (BLOCKED_SWEEP_ROWS + 1234, 21, (16, 5)),  # an ensemble: one blocked member, one small
        (400, 48, ()),  # too few columns of H: scikit-learn's kernel on a transposed copy
    ],
)
def test_the_h_step_sweeps_h_as_stored_with_the_sweep_of_its_transpose(dtype, rows, k, members):
    """``hals_sweeps_transposed(Ht, ...)`` is ``hals_sweeps`` of ``Ht.T``, bit for bit: the same
    sweep, without the two transposed copies of a k x n factor."""
    W, gram, cross = _problem(rows, k, dtype, seed=rows + k)
    expected = W.copy()
    expected_violation = hals_sweeps(expected, gram, cross, 2, members)
    Wt = np.ascontiguousarray(W.T)
    violation = kernels.hals_sweeps_transposed(Wt, gram, np.ascontiguousarray(cross.T), 2, members)
    np.testing.assert_array_equal(Wt.T, expected)
    assert violation == expected_violation


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_only_the_first_blocked_sweep_measures_its_violation(dtype):
    """The later sweeps of a pass skip the violation (the stopping rule reads the first one's):
    the same W, bit for bit, as sweeps that all measure it."""
    W, gram, cross = _problem(BLOCKED_SWEEP_ROWS // 2, 21, dtype, seed=3)
    inverse_diagonal = kernels._inverse_diagonal(gram)
    measured, Wt = [], np.ascontiguousarray(W.T)
    for _ in range(3):
        measured.append(kernels._column_blocked_sweep(Wt, gram, np.ascontiguousarray(cross.T), inverse_diagonal))
    skipped = np.ascontiguousarray(W.T)
    violation = kernels._column_blocked_sweeps(skipped, gram, np.ascontiguousarray(cross.T), inverse_diagonal, 3)
    np.testing.assert_array_equal(skipped, Wt)
    assert violation == measured[0] and measured[1] > 0
    assert kernels._column_blocked_sweep(skipped, gram, cross.T, inverse_diagonal, measure=False) == 0.0
