"""The synthetic data writer: values, layout, chunk independence, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dnmf.io.generate import (
    DEFAULT_NOISE,
    DEFAULT_RANK,
    DEFAULT_SHAPE,
    SHAPES,
    block_rows,
    generate,
    noise_floor,
)
from dnmf.io.graph import Columns
from dnmf.io.results import stored_attrs
from dnmf.io.storage import CSRMatrix, as_panels, open_matrix


def test_defaults_make_the_readme_matrix():
    assert DEFAULT_SHAPE == (20000, 2000)
    assert DEFAULT_RANK == 20
    assert DEFAULT_NOISE == 0.5


def test_dense_layout_values_and_attrs(tmp_path):
    info = generate(tmp_path / "v.zarr", (300, 40), 3, noise=0.25, chunk_rows=64, dtype="float32", seed=5)
    V = open_matrix(tmp_path / "v.zarr")
    assert V.shape == (300, 40) and V.dtype == np.float32 and V.chunks == (64, 40)
    values = V[:]
    assert values.min() >= 0
    assert info["nnz"] == 300 * 40 and info["density"] is None
    np.testing.assert_allclose(info["squared_norm"], np.sum(values.astype(np.float64) ** 2), rtol=1e-12)
    assert stored_attrs(tmp_path / "v.zarr")["generator"]["seed"] == 5
    assert 0 < info["noise_floor"] < 1


def test_low_rank_plus_uniform_noise(tmp_path):
    shape, rank = (200, 30), 4
    generate(tmp_path / "clean.zarr", shape, rank, noise=0.0, dtype="float64", seed=2)
    generate(tmp_path / "noisy.zarr", shape, rank, noise=0.5, dtype="float64", seed=2)
    clean = open_matrix(tmp_path / "clean.zarr")[:]
    noise = open_matrix(tmp_path / "noisy.zarr")[:] - clean
    assert np.linalg.matrix_rank(clean) == rank
    assert noise.min() >= -1e-12 and noise.max() < 0.5
    assert abs(noise.mean() - 0.25) < 0.01  # uniform [0, 0.5)


@pytest.mark.parametrize("chunks", [1, 7, 64, 500])
def test_values_do_not_depend_on_chunking(tmp_path, chunks):
    shape = (250, 9000)  # several generator blocks (block_rows = 116)
    assert block_rows(shape) < shape[0]
    generate(tmp_path / "a.zarr", shape, 3, chunk_rows=chunks, dtype="float64", seed=1)
    generate(tmp_path / "b.zarr", shape, 3, chunk_rows=250, dtype="float64", seed=1)
    np.testing.assert_array_equal(open_matrix(tmp_path / "a.zarr")[:], open_matrix(tmp_path / "b.zarr")[:])


def test_written_chunk_by_chunk(tmp_path):
    calls = []
    generate(tmp_path / "v.zarr", (1000, 50), 2, chunk_rows=128, progress=calls.append)
    assert calls == [128] * 7 + [104]


def test_sparse_csr_group(tmp_path):
    info = generate(tmp_path / "s.zarr", (400, 300), 5, density=0.05, dtype="float64", seed=3, chunk_rows=50)
    X = open_matrix(tmp_path / "s.zarr")
    assert isinstance(X, CSRMatrix) and X.shape == (400, 300) and X.nnz == info["nnz"]
    assert abs(X.nnz / (400 * 300) - 0.05) < 0.005
    full = X.read_rows(0, 400)
    assert full.has_sorted_indices and full.data.min() > 0
    assert info["noise_floor"] is None
    np.testing.assert_allclose(info["squared_norm"], np.sum(full.data**2), rtol=1e-12)
    panels = as_panels(tmp_path / "s.zarr", panel_rows=64)
    assert sp.issparse(panels.array.blocks[1].compute())
    assert stored_attrs(tmp_path / "s.zarr")["format"] == "csr"


def test_existing_output_is_refused_unless_overwrite(tmp_path):
    generate(tmp_path / "v.zarr", (10, 5), 2, seed=0)
    before = open_matrix(tmp_path / "v.zarr")[:]
    with pytest.raises(FileExistsError, match="already exists"):
        generate(tmp_path / "v.zarr", (10, 5), 2, seed=1)
    np.testing.assert_array_equal(open_matrix(tmp_path / "v.zarr")[:], before)
    generate(tmp_path / "v.zarr", (10, 5), 2, seed=1, overwrite=True)
    assert not np.array_equal(open_matrix(tmp_path / "v.zarr")[:], before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.zarr"]  # no temporary left behind


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(shape=(0, 5)), "shape must be two positive integers"),
        (dict(rank=0), "rank must be a positive integer, got 0"),
        (dict(noise=-1.0), "noise must be a finite number >= 0, got -1.0"),
        (dict(density=0.0), r"density must be in \(0, 1\], got 0.0"),
        (dict(dtype="int32"), r"dtype must be one of \['float32', 'float64'\], got 'int32'"),
        (dict(seed=-1), "seed must be an integer >= 0, got -1"),
        (dict(nnz=0), "nnz must be a positive integer, got 0"),
        (dict(nnz=10, density=0.5), "give density or nnz, not both"),
        (dict(nnz=10, noise=0.1), r"noise does not apply to a graph \(nnz\)"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    arguments = dict(shape=(10, 5), rank=2)
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        generate(tmp_path / "v.zarr", **arguments)
    assert not (tmp_path / "v.zarr").exists()


def test_noise_floor():
    assert noise_floor((10, 10), 0.5, 0.0) == 0.0
    np.testing.assert_allclose(noise_floor((100, 100), 1.0, 10000 / 12), 1.0)


# ------------------------------------------------------------------ graphs


def _graph(tmp_path, name="g.zarr", shape=(3000, 2000), nnz=60000, rank=6, **kwargs):
    info = generate(tmp_path / name, shape, rank, nnz=nnz, seed=4, **kwargs)
    return info, open_matrix(tmp_path / name).read_rows(0, shape[0])


def test_a_graph_is_a_csr_of_counts_of_about_nnz_draws(tmp_path):
    info, X = _graph(tmp_path)
    assert X.shape == (3000, 2000) and X.dtype == np.float32 and X.nnz == info["nnz"]
    assert X.has_sorted_indices and X.nnz == X.copy().tocoo().tocsr().nnz  # sorted, no repeated entry
    assert np.all(X.data >= 1) and np.all(X.data == np.round(X.data))
    assert info["draws"] == 60000 and info["noise"] is None and info["noise_floor"] is None
    assert 0.75 * 60000 < X.nnz <= X.data.sum() and abs(X.data.sum() / 60000 - 1) < 0.1  # repeats add up
    np.testing.assert_allclose(info["squared_norm"], np.sum(X.data.astype(np.float64) ** 2), rtol=1e-12)


def test_a_graph_depends_on_its_seed_not_on_its_chunks(tmp_path):
    _, a = _graph(tmp_path, "a.zarr", chunk_rows=7)
    _, b = _graph(tmp_path, "b.zarr")
    assert (a != b).nnz == 0
    c = generate(tmp_path / "c.zarr", (3000, 2000), 6, nnz=60000, seed=5)
    assert c["nnz"] != a.nnz or (open_matrix(tmp_path / "c.zarr").read_rows(0, 3000) != a).nnz


def test_a_graph_has_power_law_degrees(tmp_path):
    _, X = _graph(tmp_path, shape=(20000, 5000), nnz=200000)
    for degrees in (np.diff(X.indptr), np.bincount(X.indices, minlength=X.shape[1])):
        ordered = np.sort(degrees)
        assert ordered[-1] > 30 * np.median(ordered)  # a heavy tail, not a binomial's
        assert ordered[-len(ordered) // 100 :].sum() > 0.08 * ordered.sum()  # the top 1% hold many entries


def test_a_graph_has_its_planted_communities(tmp_path):
    """Rows draw mostly from one community's columns: the top community's share of a
    row's entries is far above what columns drawn regardless of community would give."""
    rank = 8
    _, X = _graph(tmp_path, shape=(4000, 3000), nnz=120000, rank=rank)
    columns = Columns(3000, rank, 4)
    home = np.empty(3000, np.int64)
    home[columns.order] = np.repeat(np.arange(rank), np.diff(columns.starts))
    busy = np.flatnonzero(np.diff(X.indptr) >= 30)
    shares = [
        np.bincount(home[X.indices[X.indptr[i] : X.indptr[i + 1]]], minlength=rank).max()
        / (X.indptr[i + 1] - X.indptr[i])
        for i in busy
    ]
    assert len(busy) > 100 and np.mean(shares) > 0.6  # about 1/4 if rows ignored the communities


def test_a_wide_graph_is_written_in_bounded_memory(tmp_path):
    """Two million columns (dense float32: 40 GB) hold only length-n vectors and a block."""
    import tracemalloc

    tracemalloc.start()
    try:
        info = generate(tmp_path / "w.zarr", (5000, 2_000_000), 4, nnz=100000, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert info["nnz"] > 90000 and peak < 400 * 2**20


def test_published_graph_shapes():
    assert SHAPES["flickr"] == ((28_000_000, 1_600_000), 112_000_000, 16)
    assert SHAPES["delicious"] == ((17_000_000, 2_500_000), 72_000_000, 48)


def test_wide_sparse_matrix_is_generated_in_blocks_of_stored_entries(tmp_path):
    """A sparse matrix's blocks hold about BLOCK_ENTRIES stored entries, not dense ones: at
    1,000,000 columns a dense-sized block is one row (2,000,000 x 1,000,000 at 10M entries
    was written row by row, and did not finish in 5 minutes)."""
    shape, density = (2_000_000, 1_000_000), 5e-6
    assert block_rows(shape) == 1
    assert block_rows(shape, density) == (1 << 20) // 5  # 209,715 rows of ~5 entries
    calls = []
    info = generate(tmp_path / "wide.zarr", (40_000, 1_000_000), 4, density=density, seed=1, progress=calls.append)
    assert len(calls) == 1 and sum(calls) == 40_000  # one block, not 40,000
    X = open_matrix(tmp_path / "wide.zarr")
    assert X.nnz == info["nnz"] and abs(X.nnz - 200_000) < 2_000
    assert X.read_rows(0, 40_000).has_sorted_indices
