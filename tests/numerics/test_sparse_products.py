"""Products by a row panel's transpose: SciPy's own kernel, on the panel's own arrays."""

import dask
import numpy as np
import pytest
import scipy.sparse as sp

from dnmf.io.storage import as_panels
from dnmf.numerics import kernels
from dnmf.numerics.randomized_svd import panel_sketch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_products_by_a_panels_transpose_copy_none_of_it(dtype):
    """An in-memory V's row panels are views into its arrays. ``Wᵢᵀ Vᵢ`` and the SVD's
    ``Vᵢᵀ Yᵢ`` take the panel's transpose on those arrays (SciPy's ``Vᵢ.T`` copied them),
    with the same numbers as SciPy's products."""
    V = sp.random(600, 400, density=0.05, format="csr", dtype=dtype, random_state=0)
    panels = dask.compute(*as_panels(V, panel_rows=100).blocks())
    assert len(panels) == 6
    rng = np.random.default_rng(0)
    for panel in panels:
        assert np.shares_memory(panel.data, V.data)
        transposed = kernels.transposed(panel)
        assert np.shares_memory(transposed.data, panel.data) and np.shares_memory(transposed.indices, panel.indices)
        W = rng.random((panel.shape[0], 7)).astype(dtype)
        np.testing.assert_array_equal(kernels._dot(W.T, panel), W.T @ panel)
        Y, P = panel_sketch(panel, rng.random((400, 9)).astype(dtype))
        np.testing.assert_array_equal(P, panel.T @ Y)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wh_at_the_stored_entries_of_a_sparse_v(dtype, monkeypatch):
    """``W H`` at V's stored entries, a run of entries at a time: each value is the row of W
    times the column of H that it stands for, with rows of V left empty and a run cut
    inside a row."""
    monkeypatch.setattr(kernels, "WH_AT_RUN", 7)
    V = sp.random(40, 30, density=0.2, format="csr", dtype=dtype, random_state=1)
    V = sp.csr_matrix(V.multiply((np.arange(40) % 5 != 0)[:, None]))  # every fifth row empty
    rng = np.random.default_rng(1)
    W, H = rng.random((40, 4)).astype(dtype), rng.random((4, 30)).astype(dtype)
    WH = kernels._wh_at(V, W, H)
    assert WH.dtype == dtype and V.nnz > 7 and np.array_equal(WH.indptr, V.indptr)
    rows, columns = V.nonzero()
    expected = np.array([W[i] @ H[:, j] for i, j in zip(rows, columns)])
    np.testing.assert_allclose(WH[rows, columns].A1, expected, rtol=1e-6 if dtype == np.float32 else 1e-14)
