"""What a pass sends between workers: about two factors (k x n) per worker, whatever the panels.

A stored CSR matrix is fitted on a ``LocalCluster`` of worker processes with 8 panels per
worker. After each iteration every worker's own counter of bytes sent to other workers
(``transfer_outgoing_bytes_total``) is read; once the first pass has moved each W_i to its
worker, the workers send at most 2.5 factors each a pass, on average over the passes: the
reduce-scatter of the partials WᵢᵀVᵢ (summed on each worker first) and the all-gather of the
new H, by column blocks (see :func:`dnmf.engine.solvers.spread_iteration`). Before, each
panel's partial crossed between workers on its own: 5 to 8 factors per worker.
"""

from __future__ import annotations

import numpy as np
import pytest
from dask.distributed import Client, LocalCluster
from fitting import fit

from dnmf.engine import solvers
from dnmf.io.generate import generate

SHAPE, NNZ, K = (24_000, 40_000), 240_000, 8
#: One factor: k x n float32.
FACTOR = K * SHAPE[1] * 4
PANELS_PER_WORKER = 8
BOUND = 2.5


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    path = tmp_path_factory.mktemp("traffic") / "graph.zarr"
    generate(path, SHAPE, K, nnz=NNZ, seed=3, dtype="float32")
    return path


def _sent(client):
    return client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total)


@pytest.mark.parametrize("n_workers", [2, 4])
def test_a_pass_sends_at_most_two_and_a_half_factors_per_worker(graph, n_workers):
    panel_rows = -(-SHAPE[0] // (PANELS_PER_WORKER * n_workers))
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        counts = []
        result = fit(
            str(graph),
            K,
            random_state=0,
            tol=0,
            max_iter=6,
            panel_rows=panel_rows,
            callback=lambda _: counts.append(_sent(client)),
        )
    assert result.n_iter == 6
    per_pass = [
        {address: after[address] - before[address] for address in after}
        for before, after in zip(counts[1:], counts[2:])
    ]
    # Factors sent per worker in a pass: what the workers sent together, over their number (the
    # measure of the table). One worker may send more in a pass than its share: under
    # load Dask's work stealing moves a block's tasks, and a block fetched from a worker that
    # fetched it before counts against that worker.
    per_worker = np.mean([sum(sent.values()) / len(sent) for sent in per_pass]) / FACTOR
    most = max(max(sent.values()) for sent in per_pass) / FACTOR
    assert per_worker <= BOUND, f"{per_worker:.2f} factors sent per worker a pass (most of one worker: {most:.2f})"


def test_the_layout_gives_each_worker_a_run_of_panels_and_of_columns():
    layout = solvers.Layout.of({"tcp://b": 2, "tcp://a": 1}, n_panels=5, n_columns=5000)
    assert layout.workers == ("tcp://a", "tcp://b")
    assert layout.panels == ((0, 1), (2, 3, 4))
    assert layout.columns == ((0, 2500), (2500, 3750), (3750, 5000))
    assert [layout.owner_of(b) for b in range(3)] == ["tcp://a", "tcp://b", "tcp://b"]
    assert layout.worker_of(2) == "tcp://b"
    single = solvers.Layout.of({"tcp://a": 4, "tcp://b": 4}, n_panels=1, n_columns=100)
    assert single.workers == ("tcp://a",) and single.columns == ((0, 100),)
