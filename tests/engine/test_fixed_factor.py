"""Solving H for a fixed W (``factorize(update_W=False)``): scikit-learn's multiplicative
updates of its W with H fixed, on the transposed problem, one pass per update."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.decomposition import non_negative_factorization

from dnmf.engine.driver import factorize
from dnmf.errors import ParameterError
from dnmf.io.storage import as_panels
from dnmf.params import resolve


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    W = rng.gamma(0.8, 1.0, (240, 4))
    V = rng.poisson(W @ rng.gamma(0.8, 3.0, (4, 50))).astype(np.float64)
    return V, W


@pytest.mark.parametrize("beta_loss", ["kullback-leibler", 1.5])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_h_for_a_fixed_w_is_scikit_learns_solve_of_the_transpose(beta_loss, sparse):
    V, W = _problem()
    k = W.shape[1]
    expected_t, _, n_iter = non_negative_factorization(
        np.ascontiguousarray(V.T),
        H=np.ascontiguousarray(W.T),
        update_H=False,
        n_components=k,
        solver="mu",
        beta_loss=beta_loss,
        tol=1e-4,
        max_iter=1000,
    )
    start = np.full((k, V.shape[1]), np.sqrt(V.mean() / k))  # scikit-learn's start of a fixed-H solve
    panels = as_panels(sp.csr_matrix(V) if sparse else V, panel_rows=64)
    config = resolve(
        dict(n_components=k, init="custom", solver="mu", beta_loss=beta_loss, tol=1e-4, max_iter=1000), shape=V.shape
    )
    result = factorize(panels, config, W=W, H=start, update_W=False)
    assert result.n_iter == n_iter
    np.testing.assert_allclose(result.H, expected_t.T, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(result.W.compute(), W)  # W as given


def test_a_fixed_w_needs_the_multiplicative_updates():
    V, W = _problem()
    config = resolve(dict(n_components=4, init="custom"), shape=V.shape)
    with pytest.raises(ParameterError, match="solver='mu'"):
        factorize(as_panels(V), config, W=W, H=np.ones((4, V.shape[1])), update_W=False)
