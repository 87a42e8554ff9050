"""Chunking does not change the answer.

The same matrix given as NumPy (any panel size), as Dask arrays with row and column
chunkings (column-chunked ones are rechunked at the boundary), as a dense Zarr array,
as SciPy sparse, as a Dask array of sparse chunks and as a CSR group in Zarr gives the
same factors and losses, to rounding (the panel partials are added in a different
order). Hypothesis draws the shapes, the rank and every chunking.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from fitting import fit
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dnmf import save_csr
from dnmf.engine.driver import to_numpy

ITERATIONS = 3
RTOL = 1e-8
#: At most this many panels per fit (each panel is a task per iteration; keeps it fast).
MAX_PANELS = 8
SOLVER_BETAS = [("cd", 2.0), ("mu", 2.0), ("mu", 1.0), ("mu", 0.5)]
SETTINGS = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _rows(draw, m):
    """A row chunk / panel size giving at most MAX_PANELS pieces."""
    return draw(st.integers(-(-m // MAX_PANELS), m))


@st.composite
def problems(draw):
    m = draw(st.integers(3, 40))
    n = draw(st.integers(3, 30))
    return dict(
        m=m,
        n=n,
        k=draw(st.integers(1, min(m, n, 6))),
        seed=draw(st.integers(0, 2**16)),
        density=draw(st.sampled_from([1.0, 0.6, 0.3])),
        solver_beta=draw(st.sampled_from(SOLVER_BETAS)),
        init=draw(st.sampled_from(["custom", "random"])),
        panel_rows=_rows(draw, m),
        row_chunk=_rows(draw, m),
        col_chunk=draw(st.integers(1, n)),
        zarr_chunks=(_rows(draw, m), draw(st.integers(1, n))),
        csr_entries=draw(st.integers(1, 60)),
    )


def _fit(V, p, make_factors, **kwargs):
    solver, beta = p["solver_beta"]
    if p["init"] == "custom":
        W0, H0 = make_factors(p["m"], p["n"], p["k"], seed=p["seed"])
        start = dict(init="custom", W=W0, H=H0)
    else:
        start = dict(init="random", random_state=p["seed"])
    result = fit(V, p["k"], solver=solver, beta_loss=beta, max_iter=ITERATIONS, tol=0, **start, **kwargs)
    return to_numpy(result.W), result.H, np.asarray(result.loss_history)


def _assert_same(name, got, reference, relerr):
    W, H, losses = got
    W_ref, H_ref, losses_ref = reference
    assert W.dtype == W_ref.dtype and H.dtype == H_ref.dtype, name
    assert relerr(W, W_ref) <= RTOL, name
    assert relerr(H, H_ref) <= RTOL, name
    np.testing.assert_allclose(losses, losses_ref, rtol=RTOL, atol=RTOL * losses_ref[0], err_msg=name)


def _matrix(p, make_matrix):
    return make_matrix(p["m"], p["n"], seed=p["seed"], density=p["density"])


@SETTINGS
@given(p=problems())
def test_dense_inputs_and_chunkings_agree(p, make_matrix, make_factors, relerr, tmp_path_factory):
    X = _matrix(p, make_matrix)
    reference = _fit(X, p, make_factors)  # NumPy, one panel
    r, c = p["row_chunk"], p["col_chunk"]
    path = tmp_path_factory.mktemp("dense") / "v.zarr"
    zarr.create_array(str(path), data=X, chunks=p["zarr_chunks"])
    stored = zarr.open_array(str(path), mode="r")
    variants = {
        "numpy, panel_rows": (X, dict(panel_rows=p["panel_rows"])),
        "dask, row chunks": (da.from_array(X, chunks=(r, -1)), {}),
        "dask, row and column chunks": (da.from_array(X, chunks=(r, c)), {}),
        "dask, column chunks, panel_rows": (da.from_array(X, chunks=(r, c)), dict(panel_rows=p["panel_rows"])),
        "zarr, stored chunking": (stored, {}),
        "zarr path, panel_rows": (str(path), dict(panel_rows=p["panel_rows"])),
    }
    for name, (V, kwargs) in variants.items():
        _assert_same(name, _fit(V, p, make_factors, **kwargs), reference, relerr)


#: An exact fit: one chunking's loss rounds to 0.0, another's to 2e-16.
EXACT_FIT = dict(
    m=7,
    n=3,
    k=3,
    seed=34799,
    density=0.3,
    solver_beta=("cd", 2.0),
    init="custom",
    panel_rows=1,
    row_chunk=1,
    col_chunk=1,
    zarr_chunks=(1, 1),
    csr_entries=1,
)


@SETTINGS
@given(p=problems())
@example(p=EXACT_FIT)
def test_sparse_inputs_and_chunkings_agree(p, make_matrix, make_factors, relerr, tmp_path_factory):
    X = _matrix(p, make_matrix)
    reference = _fit(X, p, make_factors)
    r, c = p["row_chunk"], p["col_chunk"]
    path = tmp_path_factory.mktemp("csr") / "v.zarr"
    save_csr(sp.csr_matrix(X), path, chunk_entries=p["csr_entries"])
    variants = {
        "scipy csr, panel_rows": (sp.csr_matrix(X), dict(panel_rows=p["panel_rows"])),
        "scipy csc": (sp.csc_matrix(X), {}),
        "dask of sparse chunks": (da.from_array(X, chunks=(r, c)).map_blocks(sp.csr_matrix), {}),
        "csr group, panel_rows": (str(path), dict(panel_rows=p["panel_rows"])),
    }
    for name, (V, kwargs) in variants.items():
        _assert_same(name, _fit(V, p, make_factors, **kwargs), reference, relerr)


@pytest.mark.parametrize("init", ["nndsvd", "nndsvda", "nndsvdar"])
def test_nndsvd_init_does_not_depend_on_chunking(init, make_matrix, relerr, tmp_path):
    """The default init (NNDSVDA) comes from a randomized SVD computed on the panels;
    its numbers agree across chunkings to rounding."""
    X = make_matrix(37, 14, seed=3, density=0.8)
    path = tmp_path / "v.zarr"
    zarr.create_array(str(path), data=X, chunks=(4, 5))

    def factors(V, **kwargs):
        result = fit(V, 4, init=init, random_state=0, max_iter=2, tol=0, **kwargs)
        return to_numpy(result.W), result.H

    W_ref, H_ref = factors(X)
    for V, kwargs in [(X, dict(panel_rows=5)), (da.from_array(X, chunks=(7, 3)), {}), (str(path), {})]:
        W, H = factors(V, **kwargs)
        assert relerr(W, W_ref) < 1e-6
        assert relerr(H, H_ref) < 1e-6
