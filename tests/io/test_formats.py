"""The formats of single-cell biology and text mining, each written by its own library
(AnnData's ``write_h5ad`` / ``write_zarr``, ``scipy.io.mmwrite``, h5py in the 10x layout):
a fit from the file gives the same numbers as a fit from the in-memory SciPy/NumPy matrix,
integer counts are computed in float32, conversions stream in bounded memory, and the
input file is never changed.
"""

from __future__ import annotations

import pickle
import tracemalloc

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import zarr

anndata = pytest.importorskip("anndata")
h5py = pytest.importorskip("h5py")
pd = pytest.importorskip("pandas")

from fitting import fit  # noqa: E402
from format_files import M, N, adata_of, counts, digest, gzip_file, names, write_10x_h5, write_mex  # noqa: E402

from dnmf import NMF, open_matrix  # noqa: E402
from dnmf.io import convert, mtx  # noqa: E402
from dnmf.io.formats import format_of, matrix_labels  # noqa: E402
from dnmf.io.hdf5 import Dataset  # noqa: E402

K = 4
PANEL_ROWS = 25


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Every format, written from the same counts by the format's own library."""
    where = tmp_path_factory.mktemp("formats")
    X = counts()
    adata = adata_of(X)
    adata.write_h5ad(where / "cells.h5ad")
    adata.write_zarr(where / "cells.zarr")
    write_10x_h5(where / "filtered_feature_bc_matrix.h5", X)
    write_mex(where / "mex", X)
    scipy.io.mmwrite(where / "counts.mtx", sp.coo_matrix(X))
    scipy.io.mmwrite(where / "tfidf.mtx", sp.coo_matrix(X * 0.25))
    gzip_file(where / "tfidf.mtx")
    pattern = X.copy()
    pattern.data[:] = 1
    scipy.io.mmwrite(where / "pattern.mtx", sp.coo_matrix(pattern), field="pattern")
    return where, X


SPARSE_SOURCES = [
    ("cells.h5ad", {}),
    ("cells.h5ad", {"layer": "csc"}),
    ("cells.zarr", {}),
    ("cells.zarr", {"layer": "csc"}),
    ("filtered_feature_bc_matrix.h5", {}),
    ("mex", {}),
    ("counts.mtx", {}),
]


def _same_fit(a, b):
    assert a.W.dtype == b.W.dtype and a.H.dtype == b.H.dtype
    np.testing.assert_array_equal(np.asarray(a.W), np.asarray(b.W))
    np.testing.assert_array_equal(np.asarray(a.H), np.asarray(b.H))
    assert a.loss_history == b.loss_history


@pytest.mark.parametrize("name, read", SPARSE_SOURCES, ids=[f"{n}-{r.get('layer', 'X')}" for n, r in SPARSE_SOURCES])
def test_a_fit_from_the_file_equals_the_fit_from_memory(files, name, read, tmp_path):
    where, X = files
    matrix = open_matrix(where / name, store=tmp_path / "converted.zarr", **read)
    assert matrix.shape == X.shape and matrix.dtype == np.float32  # int32 counts computed in float32
    options = dict(init="nndsvda", max_iter=15, tol=0, random_state=0, panel_rows=PANEL_ROWS)
    _same_fit(fit(matrix, K, **options), fit(X.astype(np.float32), K, **options))


@pytest.mark.parametrize("where_to", ["cells.h5ad", "cells.zarr"])
def test_dense_anndata_elements(files, where_to, tmp_path):
    """The same numbers as the same matrix in a dense Zarr array of the same chunking, and
    as the NumPy matrix to rounding (whose products use BLAS on every core)."""
    where, X = files
    matrix = open_matrix(where / where_to, layer="dense")
    dense = X.toarray().astype(np.float32)
    stored = zarr.create_array(tmp_path / "dense.zarr", data=dense, chunks=matrix.chunks)
    options = dict(init="random", max_iter=10, tol=0, random_state=0, panel_rows=PANEL_ROWS)
    _same_fit(fit(matrix, K, **options), fit(stored, K, **options))
    in_memory = fit(dense, K, **options)
    np.testing.assert_allclose(np.asarray(fit(matrix, K, **options).H), in_memory.H, rtol=1e-4, atol=1e-6)


def test_real_and_pattern_matrix_market(files, tmp_path):
    where, X = files
    real = open_matrix(where / "tfidf.mtx.gz", store=tmp_path / "real.zarr")
    assert real.dtype == np.float64  # real values keep float64, as scikit-learn
    np.testing.assert_array_equal(real.read_rows(0, M).toarray(), (X * 0.25).toarray())
    pattern = open_matrix(where / "pattern.mtx", store=tmp_path / "pattern.zarr")
    assert pattern.dtype == np.float32
    np.testing.assert_array_equal(pattern.read_rows(0, M).toarray(), (X > 0).toarray())


def test_float64_on_request_and_defaults_with_nothing_but_n_components(files, tmp_path):
    where, X = files
    matrix = open_matrix(where / "cells.h5ad", dtype="float64")
    assert matrix.dtype == np.float64
    model = NMF(K, random_state=0).fit(matrix)
    reference = NMF(K, random_state=0).fit(X.astype(np.float64))
    np.testing.assert_allclose(model.reconstruction_err_, reference.reconstruction_err_, rtol=1e-10)
    assert model.components_.dtype == np.float64


def test_the_estimator_takes_anndata_in_memory_backed_and_as_a_path(files):
    where, X = files
    reference = NMF(K, random_state=0, max_iter=30).fit(X.astype(np.float32))
    in_memory = anndata.read_h5ad(where / "cells.h5ad")
    before = in_memory.X.copy()
    backed = anndata.read_h5ad(where / "cells.h5ad", backed="r")
    for source in (in_memory, backed, str(where / "cells.h5ad")):
        model = NMF(K, random_state=0, max_iter=30).fit(source)
        np.testing.assert_allclose(model.components_, reference.components_, rtol=1e-5, atol=1e-6)
        assert model.components_.dtype == np.float32
    assert in_memory.X.dtype == np.int32 and (in_memory.X != before).nnz == 0  # the AnnData is not changed


def test_labels_are_obs_and_varnames(files):
    where, _ = files
    cells, genes = names("cell", M), names("gene", N)
    for name in ("cells.h5ad", "cells.zarr", "filtered_feature_bc_matrix.h5", "mex"):
        assert matrix_labels(where / name) == (cells, genes), name
    assert matrix_labels(where / "counts.mtx") == (None, None)
    assert [
        format_of(where / name)
        for name in ("cells.h5ad", "cells.zarr", "filtered_feature_bc_matrix.h5", "mex", "counts.mtx")
    ] == ["h5ad", "anndata-zarr", "10x-h5", "10x-mex", "mtx"]


def test_reading_changes_no_input_and_reuses_a_conversion(files, tmp_path):
    where, X = files
    before = {name: digest(where / name) for name in ("cells.h5ad", "cells.zarr", "mex", "counts.mtx")}
    store = tmp_path / "counts.zarr"
    first = open_matrix(where / "counts.mtx", store=store)
    stamp = (store / "zarr.json").stat().st_mtime_ns
    again = open_matrix(where / "counts.mtx", store=store)
    assert (store / "zarr.json").stat().st_mtime_ns == stamp  # reused, not converted again
    np.testing.assert_array_equal(first.read_rows(0, M).toarray(), again.read_rows(0, M).toarray())
    open_matrix(where / "cells.h5ad", layer="csc", store=tmp_path / "csc.zarr")
    assert {name: digest(where / name) for name in before} == before


def test_a_store_that_is_not_a_conversion_is_not_replaced(files, tmp_path):
    where, _ = files
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not a conversion of"):
        open_matrix(where / "counts.mtx", store=other)
    assert (other / "keep.txt").read_text() == "mine"


def test_conversion_in_small_blocks_streams_and_sorts(monkeypatch, tmp_path):
    """A CSC element and a MatrixMarket file with entries in random order, converted with
    blocks far smaller than the matrix: the CSR group equals SciPy's, and the conversion's
    peak of Python-tracked memory stays below a fraction of the matrix."""
    X = counts(seed=3, m=4000, n=300, density=0.1)
    rows, columns = X.nonzero()
    order = np.random.default_rng(0).permutation(rows.size)
    shuffled = sp.coo_matrix((np.asarray(X[rows, columns]).ravel()[order], (rows[order], columns[order])), X.shape)
    scipy.io.mmwrite(tmp_path / "shuffled.mtx", shuffled)
    monkeypatch.setattr(mtx, "BLOCK_BYTES", 16 * 2**10)
    monkeypatch.setattr(convert, "SORT_BLOCK_ENTRIES", 5000)
    monkeypatch.setattr(convert, "CSR_CHUNK_ENTRIES", 10000)
    tracemalloc.start()
    try:
        matrix = open_matrix(tmp_path / "shuffled.mtx", store=tmp_path / "shuffled.zarr")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expected = X.astype(np.float32)
    expected.sort_indices()
    got = matrix.read_rows(0, X.shape[0])
    np.testing.assert_array_equal(got.indptr, expected.indptr)
    np.testing.assert_array_equal(got.indices, expected.indices)
    np.testing.assert_array_equal(got.data, expected.data)
    assert peak < 0.25 * X.nnz * (4 + 4 + 8), f"peak {peak} bytes for {X.nnz} entries"


def test_hdf5_datasets_pickle_by_name(files):
    where, _ = files
    dataset = Dataset(where / "cells.h5ad", "X/data")
    copy = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(copy[:10], dataset[:10])
    assert copy.path == dataset.path and copy.name == "X/data"


def test_a_replaced_file_is_read_anew(tmp_path):
    """The per-process cache of open HDF5 files never serves a file that was replaced."""
    path = tmp_path / "cells.h5ad"
    adata_of(counts(seed=1)).write_h5ad(path)
    first = open_matrix(path).read_rows(0, M).toarray()
    adata_of(counts(seed=2)).write_h5ad(path)
    np.testing.assert_array_equal(open_matrix(path).read_rows(0, M).toarray(), counts(seed=2).toarray())
    assert not np.array_equal(first, counts(seed=2).toarray())


def test_fit_written_as_h5ad(files, tmp_path):
    """``--out result.h5ad``'s writer: obs/var names, W, Hᵀ and the fit's record."""
    from dnmf.io.results import write_fit

    where, X = files
    matrix = open_matrix(where / "cells.h5ad")
    result = fit(matrix, K, max_iter=20, random_state=0)
    params = {"n_components": K, "max_iter": 20, "random_state": 0, "init": None}
    attrs = write_fit(
        tmp_path / "result.h5ad",
        result,
        params,
        input_path=str(where / "cells.h5ad"),
        labels=matrix_labels(where / "cells.h5ad"),
    )
    written = anndata.read_h5ad(tmp_path / "result.h5ad")
    assert written.shape == X.shape and written.X is None
    assert list(written.obs_names) == names("cell", M) and list(written.var_names) == names("gene", N)
    np.testing.assert_array_equal(written.obsm["X_nmf"], np.asarray(result.W))
    np.testing.assert_array_equal(written.varm["NMF_components"], np.asarray(result.H).T)
    assert written.uns["nmf"]["n_iter"] == attrs["n_iter"]
    assert written.uns["nmf"]["relative_err"] == pytest.approx(attrs["relative_err"])
    assert "init" not in written.uns["nmf"]["params"]  # None is not written (AnnData has no None)
