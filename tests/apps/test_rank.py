"""Rank selection: stability of replicated fits, NMFk style."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

import dnmf
from dnmf.apps.rank import RankScore, error_elbow, match_components, recommend_rank, select_rank, stability


def planted(m=200, n=120, k=6, noise=0.05, seed=0):
    """Sparse non-negative rank-k factors (identifiable) times each other, plus noise."""
    rng = np.random.RandomState(seed)
    W, H = rng.gamma(1.0, 1.0, (m, k)), rng.gamma(1.0, 1.0, (k, n))
    W[rng.uniform(size=W.shape) < 0.5] = 0
    H[rng.uniform(size=H.shape) < 0.5] = 0
    L = W @ H
    return np.maximum(L + noise * L.mean() * rng.standard_normal((m, n)), 0)


def test_planted_rank_six_is_recommended(tmp_path):
    report = select_rank(planted(), range(2, 10), replicates=3, max_iter=80, tol=1e-3)
    assert report.recommended == 6, [(s.rank, round(s.stability, 3)) for s in report.scores]
    assert report.ranks == list(range(2, 10))
    by_rank = {s.rank: s for s in report.scores}
    assert by_rank[6].stability >= report.threshold > max(by_rank[k].stability for k in (7, 8, 9))
    assert by_rank[6].error < 0.5 * by_rank[5].error  # the planted rank explains the data
    figure = dnmf.plot_rank_report(report, tmp_path / "rank.png")
    assert figure is not None and (tmp_path / "rank.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report.to_json(tmp_path / "report.json")
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["recommended"] == 6 and len(saved["scores"]) == 8


def test_matching_undoes_permutations():
    rng = np.random.RandomState(1)
    H = rng.uniform(size=(4, 30))
    replicas = [H, H[[2, 0, 3, 1]] * 3.0, H[[3, 2, 1, 0]] + 1e-3 * rng.uniform(size=(4, 30))]
    labels = match_components(replicas)
    assert labels[0].tolist() == [0, 1, 2, 3]
    assert labels[1].tolist() == [2, 0, 3, 1]
    assert labels[2].tolist() == [3, 2, 1, 0]
    worst, mean = stability(replicas)
    assert worst > 0.99 and mean > 0.99
    assert stability([H[:1], H[1:2]]) == (1.0, 1.0)  # rank 1


def test_rule_ties_go_to_the_error_elbow():
    errors = [0.5, 0.3, 0.1, 0.09, 0.085]

    def scores(stabilities):
        return [RankScore(k, e, 0.0, s, s, 10, 3) for k, e, s in zip(range(2, 7), errors, stabilities)]

    assert recommend_rank(scores([0.9, 0.95, 0.85, 0.3, 0.1]))[0] == 4
    rank, rule = recommend_rank(scores([0.5, 0.52, 0.5, 0.49, 0.2]))
    assert rank == 4 and "elbow" in rule
    assert error_elbow(range(2, 7), errors) == 4


def test_sweep_on_a_cluster_with_missing_values():
    """Concurrent fits on a real (threaded) LocalCluster, with NaN entries, leave nothing behind."""
    distributed = pytest.importorskip("distributed")
    X = planted(60, 40, 3, seed=2)
    X[np.random.RandomState(3).uniform(size=X.shape) < 0.1] = np.nan
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
    ) as cluster:
        with distributed.Client(cluster) as client:
            report = select_rank(
                X, [2, 3, 4], replicates=2, solver="mu", missing_values=np.nan, max_iter=15, client=client
            )
            assert [s.rank for s in report.scores] == [2, 3, 4]
            assert all(np.isfinite(s.error) for s in report.scores)
            deadline = time.monotonic() + 10
            while client.who_has() and time.monotonic() < deadline:  # releases are asynchronous
                time.sleep(0.05)
            assert not client.who_has()  # no futures left


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(ranks=[2], replicates=1), ValueError, "replicates must be >= 2"),
        (dict(ranks=[0, 2]), ValueError, "ranks must be positive"),
        (dict(ranks=[2], n_components=3), TypeError, "n_components"),
        (dict(ranks=[2], solver="cd", beta_loss="kullback-leibler"), ValueError, "solver='mu'"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        select_rank(np.ones((5, 4)), **kwargs)


def test_cli_rank(tmp_path, capsys):
    from dnmf.cli import main

    np.save(tmp_path / "v.npy", planted(40, 30, 2, seed=4))
    argv = [
        "rank",
        str(tmp_path / "v.npy"),
        "--ranks",
        "1:3",
        "--replicates",
        "2",
        "--max-iter",
        "30",
        "--out",
        str(tmp_path / "r.json"),
        "--plot",
        str(tmp_path / "r.png"),
        "--threads",
        "--workers",
        "1",
        "-q",
    ]
    assert main(argv) == 0
    saved = json.loads((tmp_path / "r.json").read_text())
    assert [s["rank"] for s in saved["scores"]] == [1, 2, 3]
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["rank", str(tmp_path / "v.npy"), "--ranks", "3:x"]) == 2
    assert "FIRST:LAST" in capsys.readouterr().err


def test_fits_as_worker_tasks_equal_driver_threads():
    """On worker processes each fit runs inside one task (mode "tasks", the default there)
    and gives the numbers of the same fits driven from this process."""
    distributed = pytest.importorskip("distributed")
    X = planted(50, 30, 2, seed=5)
    common = dict(ranks=[2, 3], replicates=2, max_iter=10, tol=0)
    local = select_rank(X, **common, mode="threads")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, dashboard_address=":0") as cluster:
        with distributed.Client(cluster) as client:
            setting = client.run(lambda: __import__("dask").config.get("scheduler", None))

            def threads_inside_a_fit_task():
                import dask

                from dnmf.apps import rank

                with rank._LOCAL_DASK.held(rank._local_dask):
                    return dask.config.get("scheduler"), dask.config.get("num_workers")

            assert client.submit(threads_inside_a_fit_task, pure=False).result() == ("threads", 2)  # the worker's
            remote = select_rank(X, **common, client=client)
            assert client.run(lambda: __import__("dask").config.get("scheduler", None)) == setting  # restored
    assert [s.error for s in remote.scores] == pytest.approx([s.error for s in local.scores], rel=1e-12)
    assert [s.stability for s in remote.scores] == pytest.approx([s.stability for s in local.scores], rel=1e-9)
