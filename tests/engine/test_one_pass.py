"""One pass over V per outer iteration, counted at the store.

V is written to Zarr on disk and opened through a store that wraps the real
``LocalStore`` and counts every read of a chunk key. After N iterations every chunk
must have been read exactly (or, for NNDSVD, at most) as many times as the driver
documents:

* 1 statistics pass, for every init;
* NNDSVD: the randomized SVD's passes (``q + 1`` for scikit-learn's ``q`` power iterations);
  custom and random: none;
* 1 pass per outer iteration;
* beta != 2 (without polish): 1 last pass that evaluates the final loss.

The per-iteration count is checked too: between two progress callbacks every chunk is
read exactly once. A CSR group's panels each read their own slice of ``indices`` and
``data``, so there a chunk that straddles a panel edge is read by both panels.
"""

from __future__ import annotations

import dask
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from counting_store import CountingStore, PassRecorder, chunk_keys, panel_chunk_reads
from dask.core import get_dependencies
from dask.utils import key_split
from fitting import fit
from zarr.storage import LocalStore

from dnmf import CSRMatrix, save_csr
from dnmf.api import non_negative_factorization
from dnmf.engine import solvers
from dnmf.engine.panels import PanelRead
from dnmf.io.storage import as_panels
from dnmf.numerics.kernels import StepSpec
from dnmf.numerics.randomized_svd import power_iterations

M, N, K = 40, 12, 3
ITERATIONS = 4
STATS_PASSES = 1
SVD_PASSES = power_iterations(K, (M, N)) + 1  # at most: one pass per power iteration, and the last


@pytest.fixture
def dense_store(tmp_path, make_matrix):
    """V (40 x 12) in a Zarr v3 array of 5 x 6 chunks (column-chunked too), opened
    read-only through a counting store."""
    X = make_matrix(M, N, seed=0)
    path = tmp_path / "v.zarr"
    written = zarr.create_array(str(path), data=X, chunks=(5, 6), zarr_format=3)
    keys = chunk_keys(written)
    assert len(keys) == 16
    store = CountingStore(LocalStore(str(path), read_only=True))
    V = zarr.open_array(store=store, mode="r")
    store.counts.clear()
    return X, V, store, keys


def _init_args(init, make_factors):
    if init == "custom":
        W0, H0 = make_factors(M, N, K, seed=1)
        return dict(init="custom", W=W0, H=H0)
    return dict(init=init, random_state=0)


EXACT = [
    # init, solver, beta, passes besides the statistics pass and the iterations
    ("custom", "cd", 2.0, 0),
    ("custom", "mu", 2.0, 0),
    ("random", "cd", 2.0, 0),
    ("custom", "mu", 1.0, 1),
    ("custom", "mu", 0.5, 1),
    ("random", "mu", 3.0, 1),
]


PANELLINGS = [
    # (init, solver, beta, final), panel_rows: 10 = 2 stored chunks per panel; 7 is rounded
    # down to whole stored chunks; None = the memory target (here one panel).
    *[(case, 10) for case in EXACT],
    (EXACT[0], 7),
    (EXACT[3], 7),
    (EXACT[0], None),
    (EXACT[3], None),
]


@pytest.mark.parametrize(
    "case, panel_rows", PANELLINGS, ids=[f"{i}-{s}-{b}-panel{p}" for (i, s, b, _), p in PANELLINGS]
)
def test_dense_zarr_chunks_read_once_per_iteration(dense_store, make_factors, case, panel_rows):
    init, solver, beta, final = case
    X, V, store, keys = dense_store
    recorder = PassRecorder(store)
    result = fit(
        V,
        K,
        solver=solver,
        beta_loss=beta,
        max_iter=ITERATIONS,
        tol=0,
        panel_rows=panel_rows,
        callback=recorder,
        **_init_args(init, make_factors),
    )
    assert result.n_iter == ITERATIONS
    expected = STATS_PASSES + ITERATIONS + final
    assert store.reads() == {key: expected for key in keys}
    # Iteration by iteration: the first report follows the statistics pass and one
    # iteration; each further one exactly one more pass.
    n_chunks = len(keys)
    assert recorder.totals == [(STATS_PASSES + t) * n_chunks for t in range(1, ITERATIONS + 1)]


@pytest.mark.parametrize("init, solver, beta", [("nndsvd", "cd", 2.0), ("nndsvda", "mu", 1.0), ("nndsvdar", "cd", 2.0)])
def test_dense_zarr_nndsvd_adds_only_the_svd_passes(dense_store, init, solver, beta):
    X, V, store, keys = dense_store
    recorder = PassRecorder(store)
    fit(
        V,
        K,
        solver=solver,
        beta_loss=beta,
        init=init,
        random_state=0,
        max_iter=ITERATIONS,
        tol=0,
        panel_rows=10,
        callback=recorder,
    )
    final = 0 if beta == 2 else 1
    reads = store.reads()
    assert set(reads) == keys
    assert max(reads.values()) <= STATS_PASSES + SVD_PASSES + ITERATIONS + final
    n_chunks = len(keys)
    assert np.all(np.diff(recorder.totals) == n_chunks)
    assert reads == {key: reads[next(iter(keys))] for key in keys}  # every chunk equally often


def test_nndsvd_streams_v_through_the_documented_svd_passes(dense_store):
    """The randomized SVD reads each chunk once per pass: at most once per power iteration
    plus once, fewer when the subspace converges first; every chunk as often as the others."""
    X, V, store, keys = dense_store
    fit(V, K, init="nndsvda", random_state=0, max_iter=1, tol=0, panel_rows=10)
    reads = store.reads()
    assert set(reads) == keys
    passes = set(reads.values())
    assert len(passes) == 1
    assert STATS_PASSES + 2 + 1 <= passes.pop() <= STATS_PASSES + SVD_PASSES + 1


def test_functional_api_reads_each_chunk_once_per_iteration(dense_store, make_factors):
    X, V, store, keys = dense_store
    W0, H0 = make_factors(M, N, K, seed=1)
    W, H, n_iter = non_negative_factorization(
        V,
        W0,
        H0,
        n_components=K,
        init="custom",
        solver="mu",
        beta_loss="kullback-leibler",
        tol=0,
        max_iter=ITERATIONS,
        panel_rows=10,
    )
    assert n_iter == ITERATIONS
    W.compute()  # the result is persisted: gathering it reads nothing
    assert store.reads() == {key: STATS_PASSES + ITERATIONS + 1 for key in keys}


@pytest.fixture
def csr_store(tmp_path, make_matrix):
    """V as a CSR group whose 1-D chunks (13 entries) straddle the panel edges."""
    X = sp.csr_matrix(make_matrix(M, N, seed=2, density=0.4))
    path = tmp_path / "v-csr.zarr"
    save_csr(X, path, chunk_entries=13)
    store = CountingStore(LocalStore(str(path), read_only=True))
    group = zarr.open_group(store=store, mode="r")
    V = CSRMatrix.from_group(group)
    keys = {name: chunk_keys(group[name], name + "/") for name in ("indptr", "indices", "data")}
    assert len(keys["data"]) > 5
    store.counts.clear()
    return X, V, store, keys


@pytest.mark.parametrize("init, solver, beta, final", EXACT, ids=[f"{i}-{s}-{b}" for i, s, b, _ in EXACT])
def test_csr_group_chunks_read_once_per_iteration(csr_store, make_factors, init, solver, beta, final):
    """Every pass reads each panel once: each stored chunk once per panel that holds
    entries of it (chunks straddling a panel edge by both panels), and nothing else."""
    X, V, store, keys = csr_store
    panel_rows = 6  # panel edges fall inside chunks of indices/data
    assert any(int(X.indptr[r]) % 13 for r in range(panel_rows, M, panel_rows))
    recorder = PassRecorder(store, "data/")
    result = fit(
        V,
        K,
        solver=solver,
        beta_loss=beta,
        max_iter=ITERATIONS,
        tol=0,
        panel_rows=panel_rows,
        callback=recorder,
        **_init_args(init, make_factors),
    )
    assert result.n_iter == ITERATIONS
    passes = STATS_PASSES + ITERATIONS + final
    per_pass = panel_chunk_reads(X.indptr, np.cumsum([0, *as_panels(V, panel_rows=panel_rows).row_chunks]), 13)
    assert max(per_pass.values()) == 2  # some chunks do straddle an edge
    for name in ("data", "indices"):
        assert store.reads(name + "/") == {f"{name}/c/{j}": passes * count for j, count in per_pass.items()}
    assert set(store.reads("indptr/")) == keys["indptr"]
    n_reads = sum(per_pass.values())
    assert recorder.totals == [(STATS_PASSES + t) * n_reads for t in range(1, ITERATIONS + 1)]


def test_csr_group_result_matches_in_memory_input(csr_store, make_factors, relerr):
    X, V, store, keys = csr_store
    W0, H0 = make_factors(M, N, K, seed=1)
    stored = fit(V, K, init="custom", W=W0, H=H0, max_iter=3, tol=0, panel_rows=6)
    memory = fit(X, K, init="custom", W=W0, H=H0, max_iter=3, tol=0, panel_rows=6)
    assert relerr(stored.W, memory.W) < 1e-12
    assert relerr(stored.H, memory.H) < 1e-12


@pytest.mark.parametrize("stored", ["csr", "dense"])
def test_a_pass_reads_each_stored_panel_inside_the_task_that_uses_it(stored, tmp_path, make_matrix):
    """The panel tasks of a pass over a stored V depend on W_i and H only: no task of
    the graph just reads a panel (its result could wait in a worker's memory for its
    consumer, and the whole of V with it)."""
    X = make_matrix(M, N, seed=2, density=0.4)
    if stored == "csr":
        source = save_csr(sp.csr_matrix(X), tmp_path / "v.zarr", chunk_entries=13)
    else:
        source = zarr.create_array(str(tmp_path / "v.zarr"), data=X, chunks=(5, N))
    panels = as_panels(source, panel_rows=10)
    blocks = panels.blocks()
    assert len(blocks) == 4 and all(isinstance(block, PanelRead) for block in blocks)
    W_blocks = [dask.delayed(np.ones((rows, K)), pure=True) for rows in panels.row_chunks]
    W_out, _, report = solvers.iteration(blocks, W_blocks, np.ones((K, N)), StepSpec("cd", 2.0), panels.shape)
    graph = dict(report.__dask_graph__())
    steps = [key for key in graph if key_split(key) == "panel_step"]
    assert len(steps) == 4
    W_keys = {w.key for w in W_blocks}
    for key in steps:
        dependencies = get_dependencies(graph, key)
        assert len(dependencies) == 2 and len(dependencies & W_keys) == 1
    rows = dask.compute(*[dask.delayed(block)() for block in blocks], scheduler="sync")
    whole = np.vstack([r.toarray() if sp.issparse(r) else r for r in rows])
    np.testing.assert_array_equal(whole, X)


@pytest.mark.parametrize(
    "step",
    [
        StepSpec("cd", 2.0, sweeps_W=3, sweeps_H=2),
        StepSpec("cd", 2.0, extrapolation=0.5),
        StepSpec("mu", 1.0),
        StepSpec("mu", 2.0, missing="nan"),
    ],
    ids=["hals-sweeps", "hals-extrapolated", "mu-kl", "mu-missing"],
)
@pytest.mark.parametrize("update_H", [True, False])
def test_a_pass_run_at_once_equals_its_graph_on_the_synchronous_scheduler(step, update_H, make_matrix):
    """``now=True`` (in-memory panels, one task at a time) calls the graph's own tasks in
    this thread: the same W, H and report, bit for bit, as computing the graph."""
    from dataclasses import replace

    from dnmf.numerics import masked

    rng = np.random.default_rng(5)
    X = make_matrix(M, N, seed=4, density=0.5).astype(np.float32)
    if step.missing:
        X[rng.random(X.shape) < 0.1] = np.nan
    step = replace(step, update_H=update_H)
    V_blocks = [X[start : start + 10] for start in range(0, M, 10)]
    if step.missing:
        V_blocks = [masked.prepare_panel(v, step.missing) for v in V_blocks]
    W_blocks = [rng.random((len(v) if not step.missing else 10, K)).astype(np.float32) for v in V_blocks]
    H = rng.random((K, N)).astype(np.float32)

    def run(now):
        W_in = [w.copy() for w in W_blocks]  # the kernels update W in place
        if update_H:
            W, (H_new, H_ahead), report = solvers.iteration(V_blocks, W_in, H.copy(), step, X.shape, now=now)
            out = (W, H_new, H_ahead, report)
        else:
            W, report = solvers.final_pass(V_blocks, W_in, H.copy(), step, X.shape, 5, 0.0, now=now)
            out = (W, report)
        return out if now else dask.compute(out, scheduler="sync")[0]

    eager, graph = run(True), run(False)
    for a, b in zip(eager, graph):
        for x, y in zip(*(item if isinstance(item, list) else [item] for item in (a, b))):
            if x is None:
                assert y is None
            else:
                np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kind", ["dense", "sparse", "dense with NaN"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_fit_run_at_once_equals_its_graphs(kind, dtype, make_matrix, monkeypatch):
    """In memory on the synchronous scheduler, the statistics pass, the SVD's passes, NNDSVD
    and the fit's passes are called here at once: the same factors and losses, bit for bit,
    as computing each pass's graph."""
    from dnmf.engine import driver

    X = make_matrix(M, N, seed=6, density=0.5).astype(dtype)
    params = {"random_state": 0, "max_iter": 6, "tol": 0.0, "panel_rows": 15}
    if kind == "sparse":  # in one panel: Dask's threads run several sparse panels at once
        X, params["panel_rows"] = sp.csr_matrix(X), None
    elif kind == "dense with NaN":
        X[np.random.default_rng(2).random(X.shape) < 0.1] = np.nan
        params["missing_values"] = "nan"
    runs_here, answers = driver._runs_here, []
    monkeypatch.setattr(driver, "_runs_here", lambda client, V: answers.append(runs_here(client, V)) or answers[-1])
    eager = fit(X, K, **params)
    assert answers == [True]
    monkeypatch.setattr(driver, "_runs_here", lambda client, V: False)
    graph = fit(X, K, **params)
    np.testing.assert_array_equal(np.asarray(eager.W), np.asarray(graph.W))
    np.testing.assert_array_equal(eager.H, graph.H)
    assert eager.loss_history == graph.loss_history


def test_a_fit_run_at_once_computes_no_pass_graph(make_matrix, monkeypatch):
    """In memory on the synchronous scheduler, neither the statistics pass, nor the SVD's, nor
    NNDSVD's, nor the fit's build a graph for the driver to compute: their tasks are called here."""
    from dnmf.engine import driver

    computed, compute = [], driver.compute

    def recording(*graphs, **options):
        for graph in graphs:
            if dask.is_dask_collection(graph):
                computed.extend(key_split(key) for key in dict(graph.__dask_graph__()))
        return compute(*graphs, **options)

    monkeypatch.setattr(driver, "compute", recording)
    fit(make_matrix(M, N, seed=6, density=0.5), K, random_state=0, max_iter=4, tol=0.0, panel_rows=15)
    kernels_computed = {"panel_stats", "add_stats", "panel_sketch", "add_sketches", "panel_triangle", "add_triangles"}
    kernels_computed |= {"u_part_norms", "w_block_of_sketch"}
    assert not kernels_computed & set(computed) and "panel_step" not in computed


def test_the_svd_takes_the_triangle_of_its_last_pass_only(make_matrix, monkeypatch):
    """The randomized SVD makes several passes over V, but factorizes ``Y = QR`` once, from the
    last pass's ``Y_i``: one QR per panel in all."""
    from dnmf.numerics import randomized_svd

    sketches, triangles = [], []
    panel_sketch, panel_triangle = randomized_svd.panel_sketch, randomized_svd.panel_triangle
    monkeypatch.setattr(randomized_svd, "panel_sketch", lambda V, Z: sketches.append(V.shape) or panel_sketch(V, Z))
    monkeypatch.setattr(randomized_svd, "panel_triangle", lambda Y: triangles.append(Y.shape) or panel_triangle(Y))
    fit(make_matrix(M, N, seed=6, density=0.5), K, random_state=0, max_iter=2, tol=0.0, panel_rows=15)
    panel_rows = [rows for rows, _ in sketches[:3]]
    assert sum(panel_rows) == M and len(sketches) > 3  # several passes over three panels
    assert [rows for rows, _ in triangles if rows in panel_rows] == panel_rows  # and the TSQR tree's node
