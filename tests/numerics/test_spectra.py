"""cNMF's results in TPM units from one pass's products.

References: scikit-learn's own coordinate descent with the usages fixed (as cNMF's
``refit_spectra`` calls it) and cNMF 1.7's ``efficient_ols_all_cols``, transcribed here;
the products summed panel by panel must give what the whole matrix gives.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.decomposition import non_negative_factorization
from sklearn.preprocessing import StandardScaler

from dnmf.numerics.counts import normalized_rows
from dnmf.numerics.spectra import (
    add_usage_products,
    gene_scores,
    nonnegative_spectra,
    panel_usage_products,
    usage_rows,
)


def cnmf_ols(X, Y, batch_size=64):
    """cNMF 1.7's ``efficient_ols_all_cols(X, Y, normalize_y=True)``."""
    scaler = StandardScaler(with_mean=False).fit(Y)
    meanY, varY = scaler.mean_, scaler.var_.copy()
    varY[varY < 1e-12] = 1e-12
    stdY = np.sqrt(varY)
    XtX = np.zeros((X.shape[1], X.shape[1]))
    XtY = np.zeros((X.shape[1], Y.shape[1]))
    for start in range(0, X.shape[0], batch_size):
        X_batch = X[start : start + batch_size]
        Y_batch = Y[start : start + batch_size]
        Y_batch = Y_batch.toarray() if sp.issparse(Y_batch) else Y_batch
        Y_batch = (Y_batch - meanY) / stdY
        XtX += X_batch.T @ X_batch
        XtY += X_batch.T @ Y_batch
    return np.linalg.lstsq(XtX, XtY, rcond=None)[0]


def _tpm_and_usages(cells=300, genes=80, k=4, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rng.gamma(0.5, 2.0, (cells, genes))).astype(np.float64)
    counts[:, :3] = 0  # genes never seen
    totals = counts.sum(axis=1, keepdims=True)
    tpm = counts / np.where(totals > 0, totals, 1) * 1e6
    usages = rng.gamma(0.7, 1.0, (cells, k))
    usages[7] = 0  # a cell no program uses
    return tpm, usages


@pytest.mark.parametrize("seed", [0, 1])
def test_tpm_spectra_are_scikit_learns_refit_with_the_usages_fixed(seed):
    tpm, usages = _tpm_and_usages(seed=seed)
    N = usage_rows(usages)
    expected_t, _, n_iter = non_negative_factorization(
        np.ascontiguousarray(tpm.T),
        H=np.ascontiguousarray(N.T),
        update_H=False,
        n_components=N.shape[1],
        solver="cd",
        tol=1e-4,
        max_iter=1000,
        beta_loss="frobenius",
    )
    H, done = nonnegative_spectra(N.T @ N, N.T @ tpm, tol=1e-4, max_iter=1000)
    assert done == n_iter
    np.testing.assert_allclose(H, expected_t.T, rtol=1e-9, atol=1e-9 * np.abs(H).max())
    assert np.all(H >= 0)


def test_gene_scores_are_cnmfs_least_squares_on_z_scored_tpm():
    tpm, usages = _tpm_and_usages()
    expected = cnmf_ols(usages, sp.csr_matrix(tpm))
    mean, var = tpm.mean(axis=0), tpm.var(axis=0)
    scores = gene_scores(usages.T @ usages, usages.T @ tpm, usages.sum(axis=0), mean, var)
    np.testing.assert_allclose(scores, expected, rtol=1e-8, atol=1e-10)
    assert np.all(scores[:, :3] == 0)  # genes never seen score 0, as in cNMF


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_products_summed_over_panels_are_the_whole_matrixs(sparse):
    tpm, usages = _tpm_and_usages(cells=301)
    members = (1, 3)
    V = tpm.astype(np.float32)
    V = sp.csr_matrix(V) if sparse else V
    parts = [panel_usage_products(V[a : a + 64], usages[a : a + 64], members) for a in range(0, 301, 64)]
    total = add_usage_products(*parts)
    S = np.hstack([usage_rows(usages, members), usages])
    dense = np.asarray(V.todense() if sparse else V, dtype=np.float64)
    np.testing.assert_allclose(total.cross, S.T @ dense, rtol=1e-10)
    np.testing.assert_allclose(total.gram, S.T @ S, rtol=1e-10)
    np.testing.assert_allclose(total.totals, S.sum(axis=0), rtol=1e-12)
    only = add_usage_products(*(panel_usage_products(None, usages[a : a + 64], members) for a in range(0, 301, 64)))
    assert only.cross is None and np.allclose(only.totals, total.totals)


def test_usage_rows_sum_to_one_per_member_and_leave_empty_rows_empty():
    _, usages = _tpm_and_usages()
    N = usage_rows(usages, (1, 3))
    np.testing.assert_allclose(N[np.arange(len(N)) != 7, 1:].sum(axis=1), 1.0)
    np.testing.assert_allclose(N[usages[:, 0] > 0, 0], 1.0)
    assert np.all(N[7] == 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_normalized_rows_is_normalize_total_and_leaves_its_input(dtype, sparse):
    rng = np.random.default_rng(4)
    counts = rng.poisson(1.0, (40, 12)).astype(dtype)
    counts[3] = 0
    V = sp.csr_matrix(counts) if sparse else counts
    before = V.copy()
    out = normalized_rows(V, 1e6)
    dense = out.toarray() if sparse else out
    assert out.dtype == dtype and sp.issparse(out) == sparse
    totals = counts.astype(np.float64).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(
        dense, counts / np.where(totals > 0, totals, 1) * 1e6, rtol=1e-6 if dtype == np.float32 else 1e-12
    )
    assert np.all(dense[3] == 0)
    assert (abs(V - before)).max() == 0
