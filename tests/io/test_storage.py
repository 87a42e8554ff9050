"""The input boundary: stored matrices, their checks, and that inputs stay untouched.

Every backend passes one conformance class (same matrix in, same row panels out);
then the CSR group layout, paths, errors, read-only opening, and that a fit leaves
every input file byte for byte as it was.
"""

from __future__ import annotations

import hashlib
import os

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from fitting import fit

from dnmf import CSRMatrix, Panels, as_panels, open_matrix, save_csr
from dnmf.api import non_negative_factorization as nmf
from dnmf.engine.driver import to_numpy
from dnmf.engine.panels import PanelRead
from dnmf.io.storage import CSR_FORMAT

M, N = 23, 9


@pytest.fixture
def X(make_matrix):
    return make_matrix(M, N, seed=0, density=0.5)


# ------------------------------------------------------------ backend conformance

BACKENDS = [
    "numpy",
    "memmap",
    "scipy-csr",
    "scipy-coo",
    "npz",
    "dask",
    "dask-sparse",
    "zarr",
    "zarr-path",
    "csr-group",
    "csr-path",
]


def _backend(name, X, tmp_path):
    """``X`` given the way ``name`` says; every one must come out as the same panels."""
    if name == "numpy":
        return X
    if name == "memmap":
        np.save(tmp_path / "v.npy", X)
        return open_matrix(tmp_path / "v.npy")
    if name == "scipy-csr":
        return sp.csr_matrix(X)
    if name == "scipy-coo":
        return sp.coo_matrix(X)
    if name == "npz":
        sp.save_npz(tmp_path / "v.npz", sp.csr_matrix(X))
        return str(tmp_path / "v.npz")
    if name == "dask":
        return da.from_array(X, chunks=(4, 5))
    if name == "dask-sparse":
        return da.from_array(X, chunks=(6, 4)).map_blocks(sp.csr_matrix)
    if name in ("zarr", "zarr-path"):
        array = zarr.create_array(str(tmp_path / "v.zarr"), data=X, chunks=(4, 5))
        return array if name == "zarr" else tmp_path / "v.zarr"
    save_csr(X, tmp_path / "v-csr.zarr", chunk_entries=7)
    return open_matrix(tmp_path / "v-csr.zarr") if name == "csr-group" else str(tmp_path / "v-csr.zarr")


def read_blocks(panels):
    """Every panel as the panel tasks get it: read (a PanelRead) or computed (a Delayed)."""
    return [block() if isinstance(block, PanelRead) else block.compute() for block in panels.blocks()]


@pytest.mark.parametrize("backend", BACKENDS)
class TestBackendConformance:
    """What every input form must satisfy at the boundary."""

    @pytest.mark.parametrize("dtype", [np.float32, np.float64])
    def test_panels_hold_the_matrix(self, backend, dtype, X, tmp_path):
        X = X.astype(dtype)
        panels = as_panels(_backend(backend, X, tmp_path), panel_rows=5)
        assert isinstance(panels, Panels)
        assert panels.shape == (M, N)
        assert panels.dtype == dtype
        assert panels.array.numblocks[1] == 1  # one chunk spans all columns
        assert sum(panels.row_chunks) == M and panels.n_panels == len(panels.blocks())
        assert panels.sparse == (backend in ("scipy-csr", "scipy-coo", "npz", "dask-sparse", "csr-group", "csr-path"))
        blocks = read_blocks(panels)
        assert all(sp.isspmatrix_csr(b) if panels.sparse else isinstance(b, np.ndarray) for b in blocks)
        assert all(b.dtype == dtype for b in blocks)
        stacked = sp.vstack(blocks).toarray() if panels.sparse else np.vstack(blocks)
        assert np.array_equal(stacked, X)
        whole = panels.array.compute()  # what whole-array algorithms see: the same panels
        assert np.array_equal(whole.toarray() if panels.sparse else whole, X)

    def test_fit_equals_numpy_fit(self, backend, X, tmp_path, make_factors, relerr):
        W0, H0 = make_factors(M, N, 3, seed=1)
        expected = fit(X, 3, init="custom", W=W0, H=H0, max_iter=3, tol=0)
        result = fit(_backend(backend, X, tmp_path), 3, init="custom", W=W0, H=H0, max_iter=3, tol=0)
        assert relerr(to_numpy(result.W), to_numpy(expected.W)) < 1e-12
        assert relerr(result.H, expected.H) < 1e-12


# --------------------------------------------------------------------- CSR groups


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "make_input",
    [sp.csr_matrix, sp.csc_matrix, sp.coo_matrix, lambda X: X],
    ids=["csr", "csc", "coo", "dense"],
)
@pytest.mark.parametrize("chunk_entries", [1, 7, 2**20])
def test_save_csr_round_trip(make_input, dtype, chunk_entries, make_matrix, tmp_path):
    X = make_matrix(M, N, seed=2, density=0.4, dtype=dtype)
    X[5] = 0  # an empty row
    written = save_csr(make_input(X), tmp_path / "m.zarr", chunk_entries=chunk_entries)
    opened = open_matrix(tmp_path / "m.zarr")
    for matrix in (written, opened):
        assert isinstance(matrix, CSRMatrix)
        assert matrix.shape == (M, N) and matrix.dtype == dtype and matrix.nnz == np.count_nonzero(X)
        whole = matrix.read_rows(0, M)
        assert sp.isspmatrix_csr(whole) and whole.dtype == dtype
        assert np.array_equal(whole.toarray(), X)
        for start, stop in [(0, 1), (3, 11), (5, 6), (M - 1, M), (7, 7)]:
            assert np.array_equal(matrix.read_rows(start, stop).toarray(), X[start:stop])
    group = zarr.open_group(str(tmp_path / "m.zarr"), mode="r")
    assert group.attrs["format"] == CSR_FORMAT and list(group.attrs["shape"]) == [M, N]
    assert group["indptr"].dtype == np.int64 and group["indices"].dtype == np.int32
    assert group["data"].dtype == dtype


@pytest.mark.parametrize("chunk_entries", [1, 3, 8, 64])
def test_csr_group_panels_for_any_panel_size(chunk_entries, make_matrix, tmp_path):
    """Panel edges anywhere relative to the stored chunks (inside, on, or several per
    chunk; empty rows at the edges) give the same rows."""
    X = make_matrix(M, N, seed=3, density=0.3)
    X[[0, 6, 7, 8, M - 1]] = 0
    matrix = save_csr(X, tmp_path / "m.zarr", chunk_entries=chunk_entries)
    for panel_rows in (1, 2, 3, 4, 6, 7, 11, M):
        panels = as_panels(matrix, panel_rows=panel_rows)
        blocks = read_blocks(panels)
        assert [b.shape[0] for b in blocks] == list(panels.row_chunks)
        assert np.array_equal(sp.vstack(blocks).toarray(), X), panel_rows


def test_save_csr_of_an_empty_matrix(tmp_path):
    matrix = save_csr(sp.csr_matrix((4, 3)), tmp_path / "zeros.zarr")
    assert matrix.nnz == 0 and matrix.shape == (4, 3)
    panels = as_panels(matrix, panel_rows=2)
    assert np.array_equal(panels.array.compute().toarray(), np.zeros((4, 3)))


def test_save_csr_refuses_to_overwrite_unless_asked(X, tmp_path):
    path = tmp_path / "m.zarr"
    save_csr(X, path)
    with pytest.raises(FileExistsError, match="m.zarr"):
        save_csr(X, path)
    replaced = save_csr(2 * X[:4], path, overwrite=True)
    assert replaced.shape == (4, N)
    assert np.array_equal(open_matrix(path).read_rows(0, 4).toarray(), 2 * X[:4])


def _write_group(path, indptr, indices, data, shape, fmt=CSR_FORMAT):
    group = zarr.open_group(str(path), mode="w")
    group.create_array("indptr", data=np.asarray(indptr, dtype=np.int64), chunks=(3,))
    group.create_array("indices", data=np.asarray(indices, dtype=np.int32), chunks=(3,))
    group.create_array("data", data=np.asarray(data, dtype=np.float64), chunks=(3,))
    group.attrs.update({"format": fmt, "shape": list(shape)})
    return path


@pytest.mark.parametrize(
    "indptr, match",
    [
        ([0, 2, 4, 5, 6], "inconsistent indptr"),  # ends at 6, nnz is 5
        ([1, 2, 3, 4, 5], "inconsistent indptr"),  # does not start at 0
        ([0, 2, 4, 5], "indptr has shape"),  # m + 1 entries expected
    ],
    ids=["end-not-nnz", "start-not-zero", "wrong-length"],
)
def test_inconsistent_csr_group_is_refused_on_open(indptr, match, tmp_path):
    path = _write_group(tmp_path / "bad.zarr", indptr, [0, 1, 0, 2, 1], [1.0, 2, 3, 4, 5], (4, 3))
    with pytest.raises(ValueError, match=match):
        open_matrix(path)


@pytest.mark.parametrize("panel_rows", [1, 2, 4], ids=["at-panel-edges", "inside-a-panel", "one-panel"])
def test_decreasing_indptr_is_refused_when_read(panel_rows, tmp_path):
    """indptr decreasing in the middle: open_matrix refuses it naming the row; a
    CSRMatrix built around the check is still refused when its panels are read."""
    path = _write_group(tmp_path / "bad.zarr", [0, 3, 1, 4, 5], [0, 1, 0, 2, 1], [1.0, 2, 3, 4, 5], (4, 3))
    with pytest.raises(
        ValueError, match=r"inconsistent indptr: it decreases at row 1 \(indptr\[1\] = 3 > indptr\[2\] = 1\)"
    ):
        open_matrix(path)
    group = zarr.open_group(str(path), mode="r")
    matrix = CSRMatrix(group["indptr"], group["indices"], group["data"], (4, 3), str(path))
    with pytest.raises(ValueError, match="inconsistent indptr"):
        nmf(matrix, n_components=2, init="random", max_iter=2, tol=0, panel_rows=panel_rows)


def test_group_that_is_not_csr_is_refused(tmp_path):
    path = _write_group(tmp_path / "coo.zarr", [0, 1, 2, 3, 4], [0, 1, 0, 2], [1.0, 2, 3, 4], (4, 3), fmt="coo")
    with pytest.raises(ValueError, match="not a CSR matrix"):
        open_matrix(path)
    group = zarr.open_group(str(tmp_path / "partial.zarr"), mode="w")
    group.create_array("indptr", data=np.zeros(5, dtype=np.int64))
    group.attrs.update({"format": CSR_FORMAT, "shape": [4, 3]})
    with pytest.raises(ValueError, match="missing array"):
        open_matrix(tmp_path / "partial.zarr")


# ------------------------------------------------------------------ paths and errors


def test_missing_path_raises_file_not_found_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "v.zarr"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        open_matrix(missing)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        nmf(str(missing), n_components=2)


def test_path_that_is_not_a_matrix_raises_value_error(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not a matrix")
    directory = tmp_path / "plain-directory"
    directory.mkdir()
    (directory / "file.bin").write_bytes(b"\x00\x01")
    dense_npz = tmp_path / "dense.npz"
    np.savez(dense_npz, a=np.ones(3))
    for path in (text, directory, dense_npz):
        with pytest.raises(ValueError):
            open_matrix(path)
        with pytest.raises(ValueError):
            nmf(str(path), n_components=2)


def test_zarr_array_that_is_not_2d_raises_value_error(tmp_path):
    zarr.create_array(str(tmp_path / "cube.zarr"), data=np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="3-D"):
        open_matrix(tmp_path / "cube.zarr")


def test_npy_is_memory_mapped_read_only(X, tmp_path):
    np.save(tmp_path / "v.npy", X)
    opened = open_matrix(tmp_path / "v.npy")
    assert isinstance(opened, np.memmap) and not opened.flags.writeable
    assert np.array_equal(opened, X)


def test_npz_opens_as_csr(X, tmp_path):
    sp.save_npz(tmp_path / "v.npz", sp.coo_matrix(X))
    opened = open_matrix(str(tmp_path / "v.npz"))
    assert sp.isspmatrix_csr(opened) and np.array_equal(opened.toarray(), X)


def test_stored_inputs_open_read_only(X, tmp_path):
    zarr.create_array(str(tmp_path / "v.zarr"), data=X, chunks=(5, N))
    save_csr(X, tmp_path / "v-csr.zarr")
    dense = open_matrix(tmp_path / "v.zarr")
    csr = open_matrix(tmp_path / "v-csr.zarr")
    assert dense.read_only and csr.data.read_only and csr.indptr.read_only and csr.indices.read_only
    with pytest.raises(Exception, match="read.only"):
        dense[0, 0] = 1.0
    with pytest.raises(Exception, match="read.only"):
        csr.data[0] = 1.0
    assert np.array_equal(dense[:], X)


def test_zarr_panels_are_whole_stored_chunks(X, tmp_path):
    """Each stored chunk belongs to exactly one panel (so it is read once per pass)."""
    stored = zarr.create_array(str(tmp_path / "v.zarr"), data=X, chunks=(4, 5))
    assert as_panels(stored, panel_rows=10).row_chunks == (8, 8, 7)
    assert as_panels(stored, panel_rows=3).row_chunks == (4, 4, 4, 4, 4, 3)
    assert as_panels(stored).row_chunks == (M,)


# ------------------------------------------------------------------ inputs untouched


def _digest(path):
    """Hash of every file name and byte under ``path`` (a file or a directory tree)."""
    digest = hashlib.sha256()
    paths = (
        [path]
        if os.path.isfile(path)
        else sorted(os.path.join(root, name) for root, _, names in os.walk(path) for name in names)
    )
    for file in paths:
        digest.update(os.path.relpath(file, path).encode())
        with open(file, "rb") as handle:
            digest.update(handle.read())
    return digest.hexdigest()


def test_fits_leave_input_files_unchanged(X, tmp_path, make_factors):
    W0, H0 = make_factors(M, N, 3, seed=3)
    zarr.create_array(str(tmp_path / "dense.zarr"), data=X, chunks=(5, 4))
    save_csr(X, tmp_path / "csr.zarr", chunk_entries=6)
    np.save(tmp_path / "v.npy", X)
    sp.save_npz(tmp_path / "v.npz", sp.csr_matrix(X))
    paths = [tmp_path / name for name in ("dense.zarr", "csr.zarr", "v.npy", "v.npz")]
    before = {path: _digest(path) for path in paths}
    listing = sorted(os.listdir(tmp_path))
    for path in paths:
        nmf(
            str(path),
            n_components=3,
            init="nndsvda",
            solver="mu",
            beta_loss="kullback-leibler",
            max_iter=2,
            tol=0,
            panel_rows=5,
        )
        nmf(open_matrix(path), W0, H0, n_components=3, init="custom", max_iter=2, tol=0)
    assert {path: _digest(path) for path in paths} == before
    assert sorted(os.listdir(tmp_path)) == listing


def test_scipy_panels_are_views_of_the_input_and_fits_leave_it_unchanged():
    """In-memory CSR input is cut into panels sharing its data and indices (slicing copies
    them at every pass); no fit writes into them."""
    rng = np.random.default_rng(0)
    X = sp.random(30, 8, density=0.4, random_state=1, format="csr")
    X.indices = X.indices[::-1].copy()  # not in canonical order: nothing may sort it in place
    before = (X.data.copy(), X.indices.copy(), X.indptr.copy())
    blocks = dask.compute(*as_panels(X, panel_rows=7).blocks())
    assert [b.shape[0] for b in blocks] == [6, 6, 6, 6, 6]
    assert all(np.shares_memory(b.data, X.data) and np.shares_memory(b.indices, X.indices) for b in blocks)
    assert (sp.vstack(blocks) != X).nnz == 0
    W0, H0 = rng.random((30, 3)) + 0.1, rng.random((3, 8)) + 0.1
    for kwargs in (dict(solver="cd"), dict(solver="mu", beta_loss=1), dict(solver="mu", missing_values="absent")):
        nmf(X, W0, H0, n_components=3, init="custom", max_iter=3, tol=0, panel_rows=7, **kwargs)
    for array, was in zip((X.data, X.indices, X.indptr), before):
        np.testing.assert_array_equal(array, was)


def test_numpy_panels_are_views_of_the_input():
    """In-memory NumPy input is cut into views, never copied whole (da.from_array copies)."""
    X = np.arange(60.0).reshape(12, 5)
    panels = as_panels(X, panel_rows=5)
    blocks = dask.compute(*panels.blocks())
    assert [b.shape[0] for b in blocks] == [4, 4, 4]
    assert all(np.shares_memory(block, X) for block in blocks)
