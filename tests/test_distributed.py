"""On a real cluster: a ``LocalCluster`` of 2 worker processes with a small memory limit.

A fit there gives the factors of a fit on the default threaded scheduler, and leaves
nothing on the cluster but what the returned result holds (nothing once the result
is gone). ``client=`` takes a ``Client`` or a scheduler address.

The client is never the process-wide default (``set_as_default=False``): every test
says where it runs, and the other test modules keep the threaded scheduler.
"""

from __future__ import annotations

import gc
import time
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from distributed import Client, LocalCluster, futures_of
from fitting import fit

from dnmf import save_csr
from dnmf.api import non_negative_factorization as nmf
from dnmf.engine.driver import to_numpy
from dnmf.engine.scheduler import connect

M, N, K = 60, 14, 4
PANEL_ROWS = 9


@pytest.fixture(scope="module")
def cluster():
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, memory_limit="400MiB", dashboard_address=":0"
    ) as cluster:
        yield cluster
        connect(cluster.scheduler_address).close()  # the connection client="tcp://..." opened


@pytest.fixture(scope="module")
def client(cluster):
    with Client(cluster, set_as_default=False) as client:
        yield client


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, cluster):
    """The same matrix in every form; files on disk that the workers read themselves."""
    rng = np.random.RandomState(0)
    X = np.abs(rng.standard_normal((M, N)))
    X[rng.uniform(size=X.shape) < 0.4] = 0
    root = tmp_path_factory.mktemp("distributed")
    zarr.create_array(str(root / "dense.zarr"), data=X, chunks=(6, 7))
    save_csr(X, root / "csr.zarr", chunk_entries=40)
    W0 = np.abs(rng.standard_normal((M, K))) + 0.1
    H0 = np.abs(rng.standard_normal((K, N))) + 0.1
    sources = {
        "numpy": X,
        "scipy": sp.csr_matrix(X),
        "zarr": str(root / "dense.zarr"),
        "csr-group": str(root / "csr.zarr"),
    }
    return X, W0, H0, sources


def _wait_until(condition, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        gc.collect()
        time.sleep(0.05)
    return True


def _idle(client):
    return all(not tasks for tasks in client.processing().values())


def _held_keys(client):
    return {key for key, workers in client.who_has().items() if workers}


CASES = [("numpy", "cd", 2.0), ("scipy", "mu", 1.0), ("zarr", "mu", 1.0), ("csr-group", "cd", 2.0)]


@pytest.mark.parametrize("source, solver, beta", CASES, ids=[f"{source}-{solver}" for source, solver, _ in CASES])
def test_cluster_fit_equals_threaded_fit_and_leaves_nothing_behind(client, inputs, source, solver, beta, relerr):
    X, W0, H0, sources = inputs
    kwargs = dict(solver=solver, beta_loss=beta, init="custom", W=W0, H=H0, max_iter=4, tol=0, panel_rows=PANEL_ROWS)
    threaded = fit(sources[source], K, **kwargs)
    assert not futures_of(threaded.W)  # the reference really ran off the cluster

    with client.as_current():
        result = fit(sources[source], K, **kwargs)
        W = to_numpy(result.W)
    futures = futures_of(result.W)
    assert futures and all(future.client is client for future in futures)  # it ran on the cluster
    assert relerr(W, to_numpy(threaded.W)) <= 1e-8
    assert relerr(result.H, threaded.H) <= 1e-8
    np.testing.assert_allclose(result.loss_history, threaded.loss_history, rtol=1e-8)

    # While the result lives, the cluster holds W's blocks and nothing else of ours.
    keys = {f.key for f in futures}
    assert _wait_until(lambda: _idle(client) and _held_keys(client) <= keys)
    del result, futures
    assert _wait_until(lambda: not _held_keys(client)), f"left on the cluster: {sorted(map(str, _held_keys(client)))}"
    assert _idle(client)


def _cluster_fit_as_threaded(client, relerr, path, params, **options):
    """The fit of ``path`` on the cluster, where any "large graph" warning is an error,
    after checking that it equals the fit on the threaded scheduler."""
    from dnmf.api import run

    threaded = run(path, params, **{key: value for key, value in options.items() if key != "checkpointing"})
    with client.as_current(), warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*large graph.*")
        result = run(path, params, **options)
        W = to_numpy(result.W)
    assert relerr(W, to_numpy(threaded.W)) <= 1e-6 and relerr(result.H, threaded.H) <= 1e-6
    return result


@pytest.mark.parametrize("checkpointed", [False, True], ids=["plain", "checkpointed"])
def test_a_wide_matrix_sends_its_h_and_svd_basis_to_the_workers_once(client, tmp_path, relerr, checkpointed):
    """n = 150,000: the first H, the SVD's basis and an H read back from a checkpoint
    (12, 18 and 12 MB) are scattered to the workers, not sent inside a graph (Dask warns
    of graphs over 10 MB); the fit equals the threaded one and leaves nothing on the
    cluster."""
    from dnmf.api import Checkpointing

    X = sp.random(300, 150_000, density=4e-4, random_state=1, format="csr", dtype=np.float32)
    X.data += 0.1
    path = save_csr(X, tmp_path / "wide.zarr")
    checkpointing = Checkpointing(tmp_path / "run.ckpt", every=1) if checkpointed else None
    result = _cluster_fit_as_threaded(
        client, relerr, path, dict(n_components=20, max_iter=3, tol=0, random_state=0), checkpointing=checkpointing
    )
    futures = futures_of(result.W)
    keys = {f.key for f in futures}
    assert _wait_until(lambda: _idle(client) and _held_keys(client) <= keys), sorted(
        map(str, _held_keys(client) - keys)
    )
    del result, futures
    assert _wait_until(lambda: not _held_keys(client)), f"left on the cluster: {sorted(map(str, _held_keys(client)))}"


@pytest.mark.parametrize("init", ["random", "custom"])
def test_a_tall_matrix_sends_a_w_made_here_to_the_workers_in_row_blocks(client, tmp_path, relerr, init):
    """m = 150,000: a W made in this process (random init, or a custom NumPy W; 12 MB) is
    scattered in row blocks, not sent inside a graph; the fit equals the threaded one."""
    X = sp.random(150_000, 60, density=0.05, random_state=2, format="csr", dtype=np.float32)
    X.data += 0.1
    path = save_csr(X, tmp_path / "tall.zarr")
    params = dict(n_components=20, max_iter=3, tol=0, random_state=0, init=init)
    factors = {}
    if init == "custom":
        rng = np.random.default_rng(0)
        factors = dict(W=rng.random((150_000, 20), dtype=np.float32), H=rng.random((20, 60), dtype=np.float32))
    result = _cluster_fit_as_threaded(client, relerr, path, params, **factors)
    del result
    assert _wait_until(lambda: not _held_keys(client)), f"left on the cluster: {sorted(map(str, _held_keys(client)))}"


def test_an_ensembles_random_w_goes_to_the_workers_a_row_block_at_a_time(client, tmp_path, relerr):
    """m = 150,000, 8 members (total rank 40; 24 MB): the ensemble's random W, drawn a
    row block at a time and each block scattered before the next is drawn, is never sent
    inside a graph; the ensemble equals the threaded one and leaves nothing on the
    cluster. (That the driver's memory stays at a block is measured by
    scripts/bench_consensus_scale.py.)"""
    from dnmf.api import prepare, run_job

    X = sp.random(150_000, 60, density=0.05, random_state=3, format="csr", dtype=np.float32)
    X.data += 0.1
    path = save_csr(X, tmp_path / "tall.zarr")
    members = [(k, seed) for seed, k in enumerate([4, 5, 6, 5, 4, 6, 5, 5])]
    params = dict(n_components=40, init="random", max_iter=3, tol=0)
    threaded = run_job(prepare(path, params, members=members))
    with client.as_current(), warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*large graph.*")
        result = run_job(prepare(path, params, members=members))
        W = to_numpy(result.W)
    assert relerr(W, to_numpy(threaded.W)) <= 1e-6 and relerr(result.H, threaded.H) <= 1e-6
    del result
    assert _wait_until(lambda: not _held_keys(client)), f"left on the cluster: {sorted(map(str, _held_keys(client)))}"


def test_cluster_holds_the_same_after_few_and_many_iterations(client, inputs):
    """What the cluster keeps after a fit does not grow with the number of iterations."""
    X, W0, H0, _ = inputs
    held = []
    for iterations in (2, 6):
        with client.as_current():
            result = fit(X, K, init="custom", W=W0, H=H0, max_iter=iterations, tol=0, panel_rows=PANEL_ROWS)
        n_blocks = len(futures_of(result.W))
        assert _wait_until(lambda n_blocks=n_blocks: _idle(client) and len(_held_keys(client)) <= n_blocks)
        held.append(len(_held_keys(client)))
        del result
        assert _wait_until(lambda: not _held_keys(client))
    assert held[0] == held[1] == -(-M // PANEL_ROWS)


def test_extrapolated_fit_checkpointed_on_the_cluster_equals_the_threaded_fit(client, inputs, relerr, tmp_path):
    """Extrapolated HALS on the cluster, continuing after each save from the saved W, H
    and extrapolated H (see ``driver._save``), gives the threaded fit's factors."""
    from dnmf.api import Checkpointing, run

    X, _, _, sources = inputs
    params = dict(
        n_components=K, init="random", random_state=0, tol=0.0, max_iter=8, extrapolate=True, panel_rows=PANEL_ROWS
    )
    threaded = run(sources["scipy"], params)
    with client.as_current():
        result = run(sources["scipy"], params, checkpointing=Checkpointing(tmp_path / "c", every=3))
        W = to_numpy(result.W)
    assert futures_of(result.W)  # it ran on the cluster
    assert relerr(W, to_numpy(threaded.W)) <= 1e-8
    assert relerr(result.H, threaded.H) <= 1e-8
    np.testing.assert_allclose(result.loss_history, threaded.loss_history, rtol=1e-8)


def test_resuming_a_finished_fit_on_the_cluster_returns_its_w(client, inputs, tmp_path):
    """A fit resumed from its final checkpoint runs no pass: its W is the checkpoint's,
    persisted on the cluster, and must outlive the driver's own reference to it (it was
    released: "lost dependencies" when OUT was written)."""
    from dnmf.api import Checkpointing, run

    _, _, _, sources = inputs
    params = dict(n_components=K, init="random", random_state=0, tol=0.0, max_iter=6, panel_rows=PANEL_ROWS)
    with client.as_current():
        finished = to_numpy(run(sources["csr-group"], params, checkpointing=Checkpointing(tmp_path / "c")).W)
        resumed = run(sources["csr-group"], params, checkpointing=Checkpointing(tmp_path / "c"))
        gc.collect()
        np.testing.assert_array_equal(to_numpy(resumed.W), finished)
    assert resumed.n_iter == 6


def test_non_negative_factorization_with_client_object_as_current(client, inputs, relerr):
    X, W0, H0, _ = inputs
    expected, _, _ = nmf(X, W0, H0, n_components=K, init="custom", max_iter=3, tol=0, panel_rows=PANEL_ROWS)
    with client.as_current():
        W, H, n_iter = nmf(
            X, W0, H0, n_components=K, init="custom", max_iter=3, tol=0, panel_rows=PANEL_ROWS, client=client
        )
    assert isinstance(W, np.ndarray) and n_iter == 3
    assert relerr(W, expected) <= 1e-8


def test_non_negative_factorization_with_client_object(client, inputs, relerr):
    X, W0, H0, _ = inputs
    expected, _, _ = nmf(X, W0, H0, n_components=K, init="custom", max_iter=3, tol=0, panel_rows=PANEL_ROWS)
    W, H, _ = nmf(X, W0, H0, n_components=K, init="custom", max_iter=3, tol=0, panel_rows=PANEL_ROWS, client=client)
    assert relerr(W, expected) <= 1e-8


def test_non_negative_factorization_with_scheduler_address(cluster, inputs, relerr):
    X, W0, H0, _ = inputs
    expected, _, _ = nmf(X, W0, H0, n_components=K, init="custom", max_iter=3, tol=0, panel_rows=PANEL_ROWS)
    W, H, _ = nmf(
        X,
        W0,
        H0,
        n_components=K,
        init="custom",
        max_iter=3,
        tol=0,
        panel_rows=PANEL_ROWS,
        client=cluster.scheduler_address,
    )
    assert relerr(W, expected) <= 1e-8


def test_scheduler_address_with_stored_input_returns_dask_result_on_the_cluster(cluster, inputs, relerr):
    """Zarr in → a Dask W persisted on the cluster; the connection to that address stays
    open, and computing W on it gives the threaded scheduler's factors."""
    X, W0, H0, sources = inputs
    expected, expected_H, _ = nmf(
        sources["zarr"], W0, H0, n_components=K, init="custom", max_iter=3, tol=0, panel_rows=PANEL_ROWS
    )
    W, H, n_iter = nmf(
        sources["zarr"],
        W0,
        H0,
        n_components=K,
        init="custom",
        max_iter=3,
        tol=0,
        panel_rows=PANEL_ROWS,
        client=cluster.scheduler_address,
    )
    connection = connect(cluster.scheduler_address)
    assert futures_of(W) and all(future.client is connection for future in futures_of(W))
    with connection.as_current():
        assert relerr(W.compute(), expected.compute()) <= 1e-8
    assert relerr(H, expected_H) <= 1e-8
    del W
    assert _wait_until(lambda: not {k for k, w in connection.who_has().items() if w})


def test_embedded_cluster_workers_start_without_malloc_trim_threshold(monkeypatch):
    """The CLI's embedded cluster does not give its workers Dask's MALLOC_TRIM_THRESHOLD_
    (it halved their Zarr reads); a value in this process's environment still reaches them."""
    from dnmf.engine.scheduler import local_cluster

    def threshold():
        import os

        return os.environ.get("MALLOC_TRIM_THRESHOLD_")

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with local_cluster(n_workers=1, threads_per_worker=1) as client:
        assert set(client.run(threshold).values()) == {None}
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    with local_cluster(n_workers=1, threads_per_worker=1) as client:
        assert set(client.run(threshold).values()) == {"131072"}
