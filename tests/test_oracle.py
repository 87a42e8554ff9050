"""scikit-learn is the oracle: same data, same start, same solver → same numbers.

From the same custom ``W0``/``H0``, ``max_iter`` iterations with ``tol=0`` of our
functions equal scikit-learn's ``non_negative_factorization``: HALS against ``cd``, MU
against ``mu`` for every beta, with and without L1/L2 penalties, dense and sparse,
float64 and float32. V is cut in many row panels (more than the fan-in of the tree
reduction) so that the partial sums really are added over a tree.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from fitting import fit
from sklearn.decomposition import NMF
from sklearn.decomposition import non_negative_factorization as sk_nmf
from sklearn.decomposition._nmf import _beta_divergence, _initialize_nmf
from sklearn.utils.extmath import randomized_svd

from dnmf.api import non_negative_factorization as nmf
from dnmf.engine.driver import to_numpy
from dnmf.engine.initialization import nndsvd_from_svd
from dnmf.engine.solvers import TREE_FAN_IN
from dnmf.params import beta_to_float, compute_penalties

M, N, K = 29, 13, 5
#: 10 panels of 3 rows: more than TREE_FAN_IN, so the reduction tree has two levels.
PANEL_ROWS = 3
#: Fewer than 10 iterations: scikit-learn's ``mu`` checks ``tol`` every 10th iteration.
ITERATIONS = 5
RTOL = {np.float64: 1e-6, np.float32: 1e-4}

SOLVER_LOSSES = [
    ("cd", "frobenius"),
    ("mu", "frobenius"),
    ("mu", "kullback-leibler"),
    ("mu", "itakura-saito"),
    ("mu", 0.5),
    ("mu", 3.0),
]
PENALTIES = {
    "none": dict(),
    "l2": dict(alpha_W=0.1, alpha_H="same", l1_ratio=0.0),
    "l1-l2": dict(alpha_W=0.05, alpha_H=0.2, l1_ratio=0.6),
}


def test_panels_exercise_the_reduction_tree():
    assert -(-M // PANEL_ROWS) > TREE_FAN_IN


def _data(make_matrix, beta_loss, sparse, dtype):
    """Sparse data has zeros, except for Itakura-Saito (which needs X > 0): there the
    sparse variant stores every entry."""
    if beta_loss == "itakura-saito":
        X = make_matrix(M, N, seed=1, positive=True, dtype=dtype)
    else:
        X = make_matrix(M, N, seed=1, density=0.6, dtype=dtype)
    return sp.csr_matrix(X) if sparse else X


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("penalty", list(PENALTIES), ids=list(PENALTIES))
@pytest.mark.parametrize("solver, beta_loss", SOLVER_LOSSES, ids=[f"{s}-{b}" for s, b in SOLVER_LOSSES])
def test_iterates_equal_sklearn(solver, beta_loss, penalty, sparse, dtype, make_matrix, make_factors, relerr):
    X = _data(make_matrix, beta_loss, sparse, dtype)
    W0, H0 = make_factors(M, N, K, seed=2, dtype=dtype)
    kwargs = dict(
        n_components=K,
        init="custom",
        solver=solver,
        beta_loss=beta_loss,
        tol=0,
        max_iter=ITERATIONS,
        **PENALTIES[penalty],
    )
    W_sk, H_sk, n_sk = sk_nmf(X, W0.copy(), H0.copy(), **kwargs)
    W, H, n_iter = nmf(X, W0.copy(), H0.copy(), panel_rows=PANEL_ROWS, **kwargs)

    assert n_iter == n_sk == ITERATIONS
    assert isinstance(W, np.ndarray) and isinstance(H, np.ndarray)
    assert W.dtype == W_sk.dtype == dtype and H.dtype == H_sk.dtype == dtype
    assert relerr(W, W_sk) <= RTOL[dtype]
    assert relerr(H, H_sk) <= RTOL[dtype]


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("solver, beta_loss", SOLVER_LOSSES, ids=[f"{s}-{b}" for s, b in SOLVER_LOSSES])
def test_loss_history_is_sklearn_beta_divergence_of_each_iterate(solver, beta_loss, sparse, make_matrix, make_factors):
    """``loss_history[t]`` is the data-fit loss of iterate t (penalties excluded)."""
    X = _data(make_matrix, beta_loss, sparse, np.float64)
    W0, H0 = make_factors(M, N, K, seed=3)
    beta = beta_to_float(beta_loss)
    result = fit(
        X,
        K,
        solver=solver,
        beta_loss=beta,
        init="custom",
        W=W0,
        H=H0,
        max_iter=ITERATIONS,
        tol=0,
        alpha_W=0.02,
        l1_ratio=0.5,
        panel_rows=PANEL_ROWS,
    )
    assert result.n_iter == ITERATIONS
    assert len(result.loss_history) == ITERATIONS + 1

    expected = [_beta_divergence(X, W0, H0, beta)]
    for t in range(1, ITERATIONS + 1):
        W_t, H_t, _ = sk_nmf(
            X,
            W0.copy(),
            H0.copy(),
            n_components=K,
            init="custom",
            solver=solver,
            beta_loss=beta_loss,
            tol=0,
            max_iter=t,
            alpha_W=0.02,
            l1_ratio=0.5,
        )
        expected.append(_beta_divergence(X, W_t, H_t, beta))
    np.testing.assert_allclose(result.loss_history, expected, rtol=1e-8)
    np.testing.assert_allclose(result.loss, expected[-1], rtol=1e-8)
    np.testing.assert_allclose(
        result.reconstruction_err, _beta_divergence(X, W_t, H_t, beta, square_root=True), rtol=1e-8
    )
    np.testing.assert_allclose(to_numpy(result.W), W_t, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("variant", ["nndsvd", "nndsvda", "nndsvdar"])
def test_nndsvd_from_sklearns_svd_is_sklearns_init(variant, make_matrix):
    """Given scikit-learn's own randomized SVD, the NNDSVD arithmetic gives scikit-learn's
    factors (nndsvdar: the same non-zero entries; its small noise is drawn per panel, not
    as scikit-learn draws it, and only fills the zeros)."""
    X = make_matrix(M, N, seed=6, density=0.8)
    U, S, Vt = randomized_svd(X, K, random_state=0)
    W_sk, H_sk = _initialize_nmf(X, K, init=variant, random_state=0)
    W, H = nndsvd_from_svd(U, S, Vt, variant, X.mean(), random_state=0)
    if variant == "nndsvdar":
        W_plain, H_plain = nndsvd_from_svd(U, S, Vt, "nndsvd", X.mean())
        for A, plain in ((W, W_plain), (H, H_plain)):
            np.testing.assert_allclose(A[plain > 0], plain[plain > 0], rtol=1e-12)
            assert np.all((A[plain == 0] >= 0) & (A[plain == 0] <= X.mean()))
        W, H, W_sk, H_sk = W_plain, H_plain, *_initialize_nmf(X, K, init="nndsvd", random_state=0)
    np.testing.assert_allclose(W, W_sk, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(H, H_sk, rtol=1e-10, atol=1e-12)


def test_random_init_of_float32_input_is_float32():
    """Both factors are drawn in V's dtype (a float64 scale must not promote them)."""
    from dnmf.engine.initialization import random_init

    W, H = random_init((7, 5), 3, np.dtype(np.float32), np.float64(2.0), 0, (4, 3))
    assert W.dtype == np.float32 and H.dtype == np.float32


@pytest.mark.parametrize("random_state", [0, 7, "instance"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
def test_random_init_draws_sklearn_numbers(random_state, dtype, make_matrix):
    """``init="random"`` draws exactly ``_initialize_nmf(X, k, "random", random_state)``,
    whatever the panels: the loss of iterate 0 is the loss of scikit-learn's init, and
    the iterates from it are scikit-learn's."""
    X = make_matrix(M, N, seed=4, density=0.7, dtype=dtype)

    def seed():
        return np.random.RandomState(42) if random_state == "instance" else random_state

    W_init, H_init = _initialize_nmf(X, K, init="random", random_state=seed())
    result = fit(X, K, init="random", random_state=seed(), max_iter=1, tol=0, panel_rows=PANEL_ROWS)
    np.testing.assert_allclose(
        result.loss_history[0], _beta_divergence(X, W_init, H_init, 2), rtol=1e-10 if dtype == np.float64 else 1e-5
    )

    for solver, beta_loss in [("cd", "frobenius"), ("mu", "kullback-leibler")]:
        kwargs = dict(n_components=K, init="random", solver=solver, beta_loss=beta_loss, tol=0, max_iter=4)
        W_sk, H_sk, _ = sk_nmf(X, random_state=seed(), **kwargs)
        W, H, _ = nmf(X, random_state=seed(), panel_rows=PANEL_ROWS, **kwargs)
        rtol = RTOL[dtype]
        assert np.max(np.abs(W - W_sk)) <= rtol * np.max(np.abs(W_sk))
        assert np.max(np.abs(H - H_sk)) <= rtol * np.max(np.abs(H_sk))


def test_hals_one_sweep_is_sklearn_cd_and_more_sweeps_lower_the_loss(make_matrix, make_factors):
    """``inner_sweeps=1`` is scikit-learn's ``cd``; extra sweeps (free of I/O) only help."""
    X = make_matrix(M, N, seed=5)
    W0, H0 = make_factors(M, N, K, seed=5)
    losses = {}
    for sweeps in (1, 3):
        result = fit(X, K, init="custom", W=W0, H=H0, max_iter=3, tol=0, inner_sweeps=sweeps, panel_rows=PANEL_ROWS)
        losses[sweeps] = result.loss
    W_sk, H_sk, _ = sk_nmf(X, W0.copy(), H0.copy(), n_components=K, init="custom", solver="cd", tol=0, max_iter=3)
    np.testing.assert_allclose(losses[1], _beta_divergence(X, W_sk, H_sk, 2), rtol=1e-10)
    assert losses[3] < losses[1]


@pytest.mark.parametrize("alpha_W, alpha_H, l1_ratio", [(0.3, 0.1, 0.25), (0.3, "same", 1.0), (0.0, 0.2, 0.0)])
def test_penalties_scale_as_sklearn(alpha_W, alpha_H, l1_ratio):
    """The scaled penalties handed to the solvers are scikit-learn's ``_compute_regularization``."""
    l1_W, l1_H, l2_W, l2_H = NMF(alpha_W=alpha_W, alpha_H=alpha_H, l1_ratio=l1_ratio)._compute_regularization(
        np.ones((M, N))
    )
    penalty_W, penalty_H = compute_penalties(alpha_W, alpha_H, l1_ratio, (M, N))
    np.testing.assert_allclose([penalty_W.l1, penalty_W.l2, penalty_H.l1, penalty_H.l2], [l1_W, l2_W, l1_H, l2_H])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_nndsvd_from_csr_is_as_accurate_as_from_dense(dtype, kind):
    """On six rank-one blocks (exactly rank 6, so NNDSVD of an accurate SVD reproduces V),
    the factors after the NNDSVD init and one multiplicative update are within rounding of V
    from CSR input as from dense input, as scikit-learn's init is. Measured directly: the
    ``reconstruction_err_`` of a one-pass fit comes from ``||V||² - 2<WᵀV, H> + <WᵀW, HHᵀ>``,
    whose cancellation leaves about ``sqrt(eps) ||V||`` (2.7e-4 relative in float32), as
    scikit-learn's own ``reconstruction_err_`` of sparse input does."""
    from numerics.test_randomized_svd import blocks

    V = blocks(dtype)
    X = sp.csr_matrix(V) if kind == "csr" else V
    W, H, _ = nmf(X, n_components=6, init="nndsvd", solver="mu", max_iter=1, tol=0, random_state=0)
    W0, H0 = _initialize_nmf(V, 6, init="nndsvd", random_state=0)
    V64 = V.astype(np.float64)
    ours = np.linalg.norm(V64 - np.asarray(W, dtype=np.float64) @ H.astype(np.float64))
    scikit_learns = np.linalg.norm(V64 - W0.astype(np.float64) @ H0.astype(np.float64))
    rounding = 10 * np.finfo(dtype).eps * np.linalg.norm(V64)
    assert ours <= max(10 * scikit_learns, rounding)
