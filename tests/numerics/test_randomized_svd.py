"""The randomized SVD behind the NNDSVD inits, against the exact SVD and scikit-learn's.

scikit-learn's ``randomized_svd`` normalizes between power iterations; so does dnmf's,
one pass over V per power iteration. Checked: singular values and the rank-k subspace
against LAPACK's SVD on planted matrices (dense and sparse, float32 and float64, tall and
wide), NNDSVD reproducing a matrix of non-negative rank-one blocks to rounding, no
overflow in float32 however large the entries, and independence of the chunking and
(on a clear spectrum) of the seed.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from sklearn.utils.extmath import randomized_svd as sk_randomized_svd

from dnmf.api import truncated_svd
from dnmf.engine.initialization import nndsvd_from_svd
from dnmf.numerics import randomized_svd

#: Relative accuracy asked of the singular values, per dtype, where scikit-learn's own
#: error is smaller (the rounding of the dtype).
ACCURACY = {np.float32: 1e-5, np.float64: 1e-12}
#: dnmf's error may be this multiple of scikit-learn's (same oversampling and power iterations).
AS_ACCURATE = 10


def planted(m, n, rank, seed=0, noise=0.0, dtype=np.float64, density=1.0):
    """``W H (+ noise)``, of rank ``rank``; with ``density < 1`` from sparse factors (a
    sparse matrix of the same exact rank)."""
    rng = np.random.default_rng(seed)
    if density < 1:
        W = sp.random(m, rank, density=density, random_state=seed, format="csr")
        H = sp.random(rank, n, density=density, random_state=seed + 1, format="csr")
        return sp.csr_matrix(W @ H, dtype=dtype)
    V = rng.random((m, rank)) @ rng.random((rank, n)) + noise * rng.random((m, n))
    return V.astype(dtype)


def blocks(dtype, seed=0):
    """Six non-negative rank-one blocks on the diagonal, of distinct scales: exactly rank 6,
    with non-negative singular vectors, so that NNDSVD reproduces it."""
    rng = np.random.default_rng(seed)
    rows, columns = [50, 40, 30, 60, 20, 45], [10, 8, 12, 6, 9, 7]
    V = np.zeros((sum(rows), sum(columns)))
    r = c = 0
    for j, (a, b) in enumerate(zip(rows, columns)):
        V[r : r + a, c : c + b] = np.outer(rng.random(a) + 0.5, rng.random(b) + 0.5) * (j + 1)
        r, c = r + a, c + b
    return V.astype(dtype)


def dense(V):
    return V.toarray() if sp.issparse(V) else np.asarray(V)


def svd(V, k, **kwargs):
    U, S, Vt = truncated_svd(V, k, **kwargs)
    return np.asarray(U.compute()), S, Vt


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape, rank, noise, density",
    [((300, 50), 4, 0.1, 1.0), ((3000, 500), 20, 0.0, 1.0), ((80, 900), 6, 0.05, 1.0), ((2000, 400), 8, 0.0, 0.3)],
    ids=["planted-noisy", "rank20", "wide", "sparse"],
)
def test_singular_values_are_lapacks(dtype, shape, rank, noise, density):
    """The issue's cases: a plain power iteration gave 140.8, 4.8, 2.4, 2.0 for 140.8, 12.4,
    9.7, 7.8, and a 20th singular value of 14.6 for 81.9."""
    V = planted(*shape, rank, seed=1, noise=noise, dtype=dtype, density=density)
    exact = np.linalg.svd(dense(V).astype(np.float64), compute_uv=False)[:rank]
    U, S, Vt = svd(V, rank, random_state=0)
    reference = sk_randomized_svd(V, rank, random_state=0)[1]
    scikit_learns = np.max(np.abs(reference - exact) / exact)
    assert np.max(np.abs(S - exact) / exact) <= max(AS_ACCURATE * scikit_learns, ACCURACY[dtype])
    # U, S, Vt is the best rank-k approximation: its error is the exact tail's
    V64 = dense(V).astype(np.float64)
    error = np.linalg.norm(V64 - (U * S) @ Vt)
    best = np.sqrt(max(np.sum(np.linalg.svd(V64, compute_uv=False)[rank:] ** 2), 0.0))
    assert error <= best + 10 * ACCURACY[dtype] * np.linalg.norm(V64)


@pytest.mark.parametrize("dtype, tolerance", [(np.float32, 1e-6), (np.float64, 1e-14)])
@pytest.mark.parametrize("kind", ["dense", "sparse", "zarr"])
@pytest.mark.parametrize("panel_rows", [None, 37, 100])
def test_nndsvd_reproduces_non_negative_blocks(dtype, tolerance, kind, panel_rows, tmp_path):
    """On a matrix whose exact NNDSVD is exact, the init reproduces it to rounding (the
    broken SVD left 8e-2 in float32 and 1e-2 in float64)."""

    V = blocks(dtype)
    X = sp.csr_matrix(V) if kind == "sparse" else V
    if kind == "zarr":
        X = zarr.create_array(str(tmp_path / "v.zarr"), data=V, chunks=(25, V.shape[1]))
    U, S, Vt = svd(X, 6, random_state=0, panel_rows=panel_rows)
    W, H = nndsvd_from_svd(U, S, Vt, "nndsvd", V.mean(), dtype)
    assert np.linalg.norm(V - W @ H) <= tolerance * np.linalg.norm(V)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_overflow_in_float32_for_huge_entries(dtype):
    """Each product is taken with the basis scaled by 1 / ||V||: entries of 1e30 (whose
    squares overflow float32) give the right singular values."""
    V = planted(400, 60, 3, seed=2, noise=0.01, dtype=np.float64) * 1e30
    exact = np.linalg.svd(V, compute_uv=False)[:3]
    with np.errstate(over="raise", invalid="raise"):
        _, S, _ = svd(V.astype(dtype), 3, random_state=0)
    np.testing.assert_allclose(S, exact, rtol=ACCURACY[dtype])


def test_result_does_not_depend_on_the_chunking(tmp_path):
    """Given a seed, the same SVD from any row chunking (to rounding; singular vectors up to sign)."""
    V = planted(500, 70, 6, seed=3, noise=0.05)
    U0, S0, Vt0 = svd(V, 6, random_state=0)
    path = tmp_path / "v.zarr"
    zarr.create_array(str(path), data=V, chunks=(33, 70))
    for X, rows in [(V, 7), (V, 123), (str(path), None), (sp.csr_matrix(V), 50)]:
        U, S, Vt = svd(X, 6, random_state=0, panel_rows=rows)
        np.testing.assert_allclose(S, S0, rtol=1e-12)
        signs = np.sign(np.sum(Vt * Vt0, axis=1))
        np.testing.assert_allclose(Vt * signs[:, None], Vt0, atol=1e-10)
        np.testing.assert_allclose(U * signs, U0, atol=1e-10)


def test_clear_spectrum_does_not_depend_on_the_seed():
    V = planted(2000, 300, 8, seed=4, noise=0.01)
    W_a, H_a = nndsvd_from_svd(*svd(V, 8, random_state=1), "nndsvda", V.mean())
    W_b, H_b = nndsvd_from_svd(*svd(V, 8, random_state=2), "nndsvda", V.mean())
    np.testing.assert_allclose(W_a, W_b, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(H_a, H_b, rtol=1e-8, atol=1e-10)


def test_rank_deficient_input_gives_zero_triples():
    """Fewer informative directions than k: the missing singular triples are zero (and the
    NNDSVD columns they give are zero, filled by nndsvda)."""
    V = planted(60, 30, 2, seed=5)
    U, S, Vt = svd(V, 5, random_state=0)
    assert np.all(S[:2] > 0) and np.all(S[2:] < 1e-10 * S[0])
    assert np.all(np.isfinite(U)) and np.all(np.isfinite(Vt))


def test_passes_follow_scikit_learns_power_iterations():
    assert randomized_svd.power_iterations(5, (1000, 100)) == 7
    assert randomized_svd.power_iterations(10, (1000, 100)) == 4
    assert randomized_svd.power_iterations(5, (1000, 100), entries=100_000) == 7


def test_a_matrix_of_ten_million_entries_gets_one_power_iteration():
    """At scale a pass over V costs more than further power iterations save the fit."""
    large = randomized_svd.LARGE_ENTRIES
    assert randomized_svd.power_iterations(16, (28_000_000, 1_600_000), entries=large) == 1
    assert randomized_svd.power_iterations(16, (28_000_000, 1_600_000), entries=large - 1) == 7
    assert randomized_svd.sketch_width(5, (1000, 8)) == 8
