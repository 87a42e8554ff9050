"""A web-shaped graph at a size CI affords: 300,000 x 250,000 with 2.8 million entries.

Every row panel's partial WᵢᵀVᵢ and H are k x n blocks here, n is more than ten times
any other test's, and V as a dense float32 array would take 279 GiB. The fit with
defaults (``random_state`` fixed) is run from the stored CSR group and must

* read each stored chunk once per pass (counted at the store), with the same number of
  chunk reads between any two iterations;
* stay in bounded memory (traced allocations, with two panels at work at once);
* stop by itself, and give the bits of the fit of the same matrix held in memory as a
  SciPy CSR matrix, on Dask's threads and on a LocalCluster of two processes.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import zarr
from counting_store import CountingStore, PassRecorder, panel_chunk_reads
from dask.distributed import Client, LocalCluster
from fitting import fit
from zarr.storage import LocalStore

from dnmf import CSRMatrix
from dnmf.io.generate import generate
from dnmf.io.storage import as_panels

SHAPE, NNZ, K = (300_000, 250_000), 3_000_000, 8
#: Traced allocations of the fit: measured 240 MiB, mostly the randomized SVD's float64
#: n x l and m x l blocks of two panels at once. V's CSR is 22 MiB; dense V 279 GiB and
#: an n x n Gram matrix 233 GiB.
PEAK_BOUND = 320 * 2**20


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    """The graph's CSR group (1 Mi entries per stored chunk) and its in-memory copy."""
    path = tmp_path_factory.mktemp("wide") / "graph.zarr"
    generate(path, SHAPE, K, nnz=NNZ, seed=5, dtype="float32")
    X = CSRMatrix.from_group(zarr.open_group(str(path), mode="r")).read_rows(0, SHAPE[0])
    assert X.nnz > 2_500_000
    return path, X


@pytest.fixture(scope="module")
def in_memory(graph):
    """The fit of the in-memory copy: (W, H, n_iter)."""
    result = fit(graph[1], K, random_state=0)
    assert result.converged
    return np.asarray(result.W), np.asarray(result.H), result.n_iter


def test_a_wide_graph_is_read_once_per_iteration_in_bounded_memory(graph, in_memory):
    path, X = graph
    store = CountingStore(LocalStore(str(path), read_only=True))
    V = CSRMatrix.from_group(zarr.open_group(store=store, mode="r"))
    panels = as_panels(V)
    assert panels.row_chunks == as_panels(X).row_chunks and panels.n_panels == 2
    store.counts.clear()
    recorder = PassRecorder(store, "data/")
    tracemalloc.start()
    try:
        result = fit(V, K, random_state=0, callback=recorder)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert result.converged and result.n_iter == in_memory[2]
    assert peak < PEAK_BOUND, f"peak of traced allocations {peak / 2**20:.0f} MiB"
    per_pass = panel_chunk_reads(X.indptr, np.cumsum([0, *panels.row_chunks]), V.data.chunks[0])
    reads_per_pass = sum(per_pass.values())
    assert max(per_pass.values()) == 2  # a stored chunk straddles the panel edge: both panels read it
    assert np.all(np.diff(recorder.totals) == reads_per_pass)
    before, rest = divmod(recorder.totals[0], reads_per_pass)  # the statistics and SVD passes, and iteration 1
    assert rest == 0 and before >= 3
    passes = before - 1 + result.n_iter
    for name in ("data", "indices"):
        assert store.reads(name + "/") == {f"{name}/c/{j}": passes * count for j, count in per_pass.items()}
    assert np.array_equal(np.asarray(result.W), in_memory[0])
    assert np.array_equal(np.asarray(result.H), in_memory[1])


def test_a_wide_graph_fitted_on_a_local_cluster_equals_the_in_memory_fit(graph, in_memory):
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        with Client(cluster):
            result = fit(str(graph[0]), K, random_state=0)
            W, H = np.asarray(result.W), np.asarray(result.H)
    assert result.n_iter == in_memory[2]
    assert np.array_equal(W, in_memory[0]) and np.array_equal(H, in_memory[1])
