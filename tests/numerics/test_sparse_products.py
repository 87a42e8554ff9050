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
