"""Extrapolated HALS (``extrapolate=True``): the iterates of a whole-matrix reference,
the loss it reports is the loss of what it returns, it gets further than plain HALS in
the same passes, and it resumes exactly (here and on a cluster in ``test_distributed``).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.decomposition import NMF as SkNMF
from sklearn.decomposition._cdnmf_fast import _update_cdnmf_fast
from sklearn.decomposition._nmf import _initialize_nmf

from dnmf import NMF
from dnmf.api import Checkpointing, run
from dnmf.engine.checkpoint import load_checkpoint
from dnmf.engine.driver import to_numpy
from dnmf.numerics.extrapolation import BETA_START, Schedule

K = 4


def _matrix(m=90, n=40, seed=0, sparse=False):
    rng = np.random.default_rng(seed)
    X = rng.random((m, K)) @ rng.random((K, n)) + 0.3 * rng.random((m, n))
    if sparse:
        X[rng.random(X.shape) < 0.7] = 0
        return sp.csr_matrix(X)
    return X


def _start(m, n, seed=1):
    rng = np.random.default_rng(seed)
    return rng.random((m, K)) + 0.1, rng.random((K, n)) + 0.1


def _hals(A, B, cross):
    """scikit-learn's HALS sweep of A (rows x k) against B (columns x k), ``cross`` = M B."""
    A = np.array(A, order="C")
    _update_cdnmf_fast(A, B.T @ B, np.ascontiguousarray(cross), np.arange(K))
    return A


def _loss(X, W, H):
    R = (X.toarray() if sp.issparse(X) else X) - W @ H
    return 0.5 * float(np.vdot(R, R))


def _reference(X, W, H, iterations):
    """Extrapolated HALS on the whole matrix, written out from the module docstring:
    the first pass is plain, the schedule starts with the second."""
    schedule, H_next, losses = Schedule(), H, [_loss(X, W, H)]
    for t in range(iterations):
        beta = schedule.beta if t else 0.0
        W_new = _hals(W, H_next.T, np.asarray(X @ H_next.T))
        W = np.maximum(W_new + beta * (W_new - W), 0)
        H_new = _hals(H_next.T, W, np.asarray(X.T @ W)).T
        losses.append(_loss(X, W, H_new))
        H_ahead = np.maximum(H_new + beta * (H_new - H_next), 0)
        H, H_next = H_new, H_ahead if t and schedule.accept(losses[-1], losses[-2]) else H_new
    return W, H, losses


def test_schedule_grows_after_progress_and_shrinks_with_a_restart_after_a_setback():
    schedule = Schedule()
    assert schedule.accept(1.0, 2.0)
    assert (schedule.beta, schedule.last_good) == (pytest.approx(1.05 * BETA_START), BETA_START)
    assert not schedule.accept(3.0, 1.0)  # worse: restart
    assert schedule.cap == BETA_START
    assert schedule.beta == pytest.approx(1.05 * BETA_START / 1.5)
    assert schedule.accept(0.5, 1.0)
    assert schedule.beta <= BETA_START  # capped by the last step that worked
    assert Schedule.from_list(schedule.as_list()) == schedule


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("panel_rows", [90, 25])
def test_iterates_are_those_of_a_whole_matrix_reference(sparse, panel_rows):
    X = _matrix(sparse=sparse)
    W0, H0 = _start(*X.shape)
    W_ref, H_ref, losses_ref = _reference(X, W0, H0, 25)
    params = dict(n_components=K, init="custom", tol=0.0, max_iter=25, extrapolate=True, panel_rows=panel_rows)
    result = run(X, params, W=W0, H=H0)
    np.testing.assert_allclose(result.loss_history, losses_ref, rtol=1e-9)
    np.testing.assert_allclose(to_numpy(result.W), W_ref, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(result.H, H_ref, rtol=1e-8, atol=1e-12)
    if sparse:  # this one goes through restarts (a pass that made the error worse)
        assert any(b > a for a, b in zip(losses_ref[1:], losses_ref[2:]))


def test_the_reported_error_is_that_of_the_returned_factors():
    X = _matrix(sparse=True)
    model = NMF(K, init="nndsvda", extrapolate=True, max_iter=25, tol=0, random_state=0)
    W = model.fit_transform(X)
    assert model.reconstruction_err_ == pytest.approx(np.linalg.norm(X.toarray() - W @ model.components_), rel=1e-9)
    plain = NMF(K, init="nndsvda", max_iter=25, tol=0, random_state=0).fit(X)
    fit_only = run(X, dict(n_components=K, init="nndsvda", extrapolate=True, max_iter=25, tol=0.0, random_state=0))
    assert fit_only.loss == pytest.approx(_loss(X, to_numpy(fit_only.W), fit_only.H), rel=1e-9)
    assert fit_only.loss_history[-1] < plain.loss_history_[-1]


def _tfidf_like(m, n, topics, words_per_doc, seed):
    """Documents drawing words from two Zipf-weighted topics each; log tf x idf, rows L2-normalized."""
    rng = np.random.default_rng(seed)
    zipf = np.cumsum(1.0 / np.arange(1, n + 1) ** 1.07)
    topic_words = np.stack([rng.permutation(n) for _ in range(topics)])
    doc_topics = rng.integers(0, topics, size=(m, 2))[np.arange(m)[:, None], rng.integers(0, 2, (m, words_per_doc))]
    ranks = np.minimum(np.searchsorted(zipf / zipf[-1], rng.random((m, words_per_doc))), n - 1)
    rows = np.repeat(np.arange(m), words_per_doc)
    X = sp.csr_matrix((np.ones(rows.size), (rows, topic_words[doc_topics, ranks].ravel())), shape=(m, n))
    X.sum_duplicates()
    X.data = 1 + np.log(X.data)
    X = X @ sp.diags(np.log((1 + m) / (1 + np.bincount(X.indices, minlength=n))) + 1)
    return sp.csr_matrix(sp.diags(1 / np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())) @ X)


def test_gets_further_than_scikit_learn_cd_in_a_third_of_the_passes():
    """On a flat problem (a sparse tf-idf-like matrix) 30 extrapolated passes get further
    than 30, and than 90, of scikit-learn's cd (plain HALS) from the same start."""
    X = _tfidf_like(1000, 500, 20, 12, seed=0)
    W0, H0 = _initialize_nmf(X, 8, init="nndsvda", random_state=0)
    common = dict(n_components=8, init="custom", tol=0)
    ours = NMF(extrapolate=True, max_iter=30, **common).fit(X, W=W0.copy(), H=H0.copy())
    for passes in (30, 90):
        sk = SkNMF(solver="cd", max_iter=passes, **common).fit(X, W=W0.copy(), H=H0.copy())
        assert ours.reconstruction_err_ < sk.reconstruction_err_


def test_resume_equals_an_uninterrupted_run_from_a_checkpoint_with_the_extrapolated_h(tmp_path):
    X = _matrix()
    params = dict(n_components=K, init="random", random_state=0, tol=0.0, panel_rows=40, extrapolate=True)
    straight = run(X, {**params, "max_iter": 12})
    directory = tmp_path / "run.ckpt"
    run(X, {**params, "max_iter": 6}, checkpointing=Checkpointing(directory, every=100))
    state, _ = load_checkpoint(directory)
    assert state.extrapolation is not None and state.H_next is not None  # what a resume needs besides W, H
    resumed = run(X, {**params, "max_iter": 12}, checkpointing=Checkpointing(directory, every=100))
    np.testing.assert_allclose(resumed.loss_history, straight.loss_history, rtol=1e-12)
    np.testing.assert_allclose(to_numpy(resumed.W), to_numpy(straight.W), rtol=1e-12)
    np.testing.assert_allclose(resumed.H, straight.H, rtol=1e-12)


def test_a_plain_checkpoint_does_not_resume_as_extrapolated(tmp_path):
    X = _matrix()
    params = dict(n_components=K, init="random", random_state=0, tol=0.0, max_iter=3, extrapolate=False)
    run(X, params, checkpointing=Checkpointing(tmp_path / "c"))
    with pytest.raises(ValueError, match="extrapolate: checkpoint False, now True"):
        run(X, {**params, "extrapolate": True}, checkpointing=Checkpointing(tmp_path / "c"))


@pytest.mark.parametrize(
    "params, error, match",
    [
        (dict(extrapolate=True, solver="mu"), ValueError, "extrapolate=True needs solver='cd'"),
        (dict(extrapolate=True, missing_values="nan"), ValueError, "extrapolate=True does not handle missing_values"),
        (dict(extrapolate="yes"), TypeError, "extrapolate must be True, False or 'auto', got 'yes'"),
    ],
)
def test_bad_combinations_are_refused_naming_them(params, error, match):
    with pytest.raises(error, match=match):
        NMF(K, **params).fit(_matrix())


def test_a_numpy_bool_is_accepted_and_recorded_as_a_plain_bool(tmp_path):
    X = _matrix()
    params = dict(n_components=K, init="random", random_state=0, tol=0.0, max_iter=2, extrapolate=np.bool_(True))
    run(X, params, checkpointing=Checkpointing(tmp_path / "c"))
    _, metadata = load_checkpoint(tmp_path / "c")
    assert metadata["params"]["extrapolate"] is True and metadata["all_params"]["extrapolate"] is True


def test_auto_accelerates_large_hals_fits_only():
    """``"auto"``: sweeps by cost and extrapolation for HALS whose pass costs at least
    AUTO_MIN_ENTRIES stored entries; scikit-learn's plain iteration below, for MU and with
    missing values."""
    from dnmf.engine.driver import AUTO_MIN_ENTRIES, MAX_AUTO_SWEEPS, acceleration, auto_sweeps, pass_entries

    large = (20000, 500)
    entries = large[0] * large[1]
    assert acceleration("cd", None, large, 10, entries, False) == (*auto_sweeps(large, 10, entries, False), True)
    assert auto_sweeps(large, 10, entries, False) == (MAX_AUTO_SWEEPS, MAX_AUTO_SWEEPS)
    # 10 entries a row, 67 a column: one sweep of W, four of H (sparse), where a dense V's
    # products are too fast for more than one of either
    assert auto_sweeps((200000, 30000), 20, 2_000_000, True) == (1, 4)
    assert auto_sweeps((200000, 30000), 20, 2_000_000, False) == (1, 1)
    # the threshold is on a pass's cost: the products, and one sweep of each factor as (m + n) k / 2 entries
    below = AUTO_MIN_ENTRIES - 1 - (300 + 300) * 10 // 2
    assert acceleration("cd", None, (300, 300), 10, below, True) == (1, 1, False)
    assert acceleration("cd", None, (300, 300), 10, below + 1, True)[2] is True
    # Oregon's graph (44,004 stored entries, 10,670 nodes) at k = 16: its sweeps make its pass
    assert pass_entries((10670, 10670), 16, 44_004) == 44_004 + 10670 * 16
    assert acceleration("cd", None, (10670, 10670), 16, 44_004, True)[2] is True
    assert acceleration("mu", None, large, 10, entries, False) == (1, 1, False)
    assert acceleration("cd", "nan", large, 10, entries, False) == (1, 1, False)
    assert acceleration("cd", None, large, 10, entries, False, sweeps=2, extrapolate=False) == (2, 2, False)


@pytest.mark.parametrize(
    "new_dtype, old_dtype", [(np.float32, np.float32), (np.float64, np.float64), (np.float32, np.float64)]
)
@pytest.mark.parametrize("shape", [(16, 200_003), (200_003, 16), (3, 5)])
def test_the_extrapolated_factor_is_the_formula_bit_for_bit(shape, new_dtype, old_dtype):
    """``max(0, new + beta (new - old))`` made a run at a time is the whole-array formula,
    for wide and tall factors, in either dtype, from a view, and with an ``old`` of a wider
    dtype (the difference then taken in it)."""
    from dnmf.numerics.kernels import extrapolate

    rng = np.random.default_rng(sum(shape))
    new, old = rng.random(shape).astype(new_dtype), rng.random(shape).astype(old_dtype)
    for beta in (0.5, np.float64(0.3713)):
        expected = np.maximum(new + np.asarray(beta * (new - old), dtype=new_dtype), 0)
        moved = extrapolate(new, old, beta)
        assert moved.dtype == new_dtype
        np.testing.assert_array_equal(moved, expected)
        np.testing.assert_array_equal(extrapolate(new.T, old.T, beta), expected.T)  # views


def test_an_ensemble_weighs_its_sweeps_as_for_a_dense_matrix():
    """A sparse V gets a sweep weighed at a sparse product's speed; an ensemble (consensus NMF)
    on the same V keeps the dense weight (see ``SWEEP_TO_PRODUCT_SPEED``)."""
    import scipy.sparse as sp

    from dnmf.engine.driver import _step, acceleration
    from dnmf.engine.state import InputStats
    from dnmf.io.storage import as_panels
    from dnmf.params import resolve

    X = sp.random(20000, 500, density=0.02, format="csr", random_state=0, dtype=np.float64)
    size = X.shape[0] * X.shape[1]
    stats = InputStats(0.0, 0, float(X.sum()), float(X.multiply(X).sum()), size - X.nnz, size)
    config = resolve({"n_components": 8}, shape=X.shape).with_rank(8)
    single, _ = _step(config, as_panels(X), stats, 8, True)
    ensemble, _ = _step(config, as_panels(X), stats, 8, True, members=(4, 4))
    assert (single.sweeps_W, single.sweeps_H) == acceleration("cd", None, X.shape, 8, X.nnz, True)[:2] == (2, 10)
    assert (ensemble.sweeps_W, ensemble.sweeps_H) == acceleration("cd", None, X.shape, 4, X.nnz, False)[:2] == (1, 10)
