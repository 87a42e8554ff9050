"""The synthetic data writer: values, layout, chunk independence, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dnmf.io.generate import (
    DEFAULT_NOISE,
    DEFAULT_RANK,
    DEFAULT_SHAPE,
    block_rows,
    generate,
    noise_floor,
)
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
