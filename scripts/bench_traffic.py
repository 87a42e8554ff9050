"""Bytes a pass sends between workers, from the workers' own counters, for 2, 4 and 8 workers.

A 400,000 x 500,000 CSR graph of 2,000,000 entries (``dnmf generate --nnz``), k = 16: one
factor (k x n float32) is 32 MB. For each number of worker processes (a ``LocalCluster``,
one thread each) the stored graph is fitted with 8 panels per worker, ``tol=0`` and a fixed
number of iterations; after each iteration every worker's ``transfer_outgoing_bytes_total``
is read. Printed per cluster: the factors sent per pass in all and per worker (the mean over
the passes after the first, which also moves each W_i to its worker), the largest a worker
sent in a pass, and the seconds per pass. The target is at most 2.5 factors per worker.

    python scripts/bench_traffic.py --workdir /tmp/dnmf-traffic [--workers 2 4 8] [--iterations 6]

It measures whichever dnmf is imported: run it from a checkout of an older commit (with
``PYTHONPATH`` at that checkout) for the figures before a change.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

SHAPE, NNZ, K = (400_000, 500_000), 2_000_000, 16
PANELS_PER_WORKER = 8
TARGET = 2.5


def graph(workdir):
    from dnmf.io.generate import generate

    path = Path(workdir) / "graph.zarr"
    if not path.exists():
        generate(path, SHAPE, K, nnz=NNZ, seed=0, dtype="float32")
    return path


def measure(path, n_workers, iterations):
    from dask.distributed import Client, LocalCluster

    from dnmf.api import run

    factor = K * SHAPE[1] * 4
    panel_rows = -(-SHAPE[0] // (PANELS_PER_WORKER * n_workers))
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):

        def sent():
            return client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total)

        counts, times = [], []

        def callback(info):
            counts.append(sent())
            times.append(info.seconds)

        params = {"n_components": K, "random_state": 0, "tol": 0, "max_iter": iterations, "panel_rows": panel_rows}
        run(str(path), {**params, "client": client}, callback=callback)
    passes = [
        np.array([after[a] - before[a] for a in after], dtype=float) / factor
        for before, after in zip(counts[1:], counts[2:])
    ]
    return {
        "workers": n_workers,
        "panels": PANELS_PER_WORKER * n_workers,
        "total": float(np.mean([p.sum() for p in passes])),
        "per worker": float(np.mean([p.mean() for p in passes])),
        "largest": float(max(p.max() for p in passes)),
        "seconds": float(np.median(times[1:])),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", default="/tmp/dnmf-traffic")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--iterations", type=int, default=6)
    args = parser.parse_args(argv)
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    path = graph(args.workdir)
    import dnmf

    print(f"dnmf from {Path(dnmf.__file__).parent}; {SHAPE[0]:,} x {SHAPE[1]:,}, {NNZ:,} entries, k = {K}")
    print("| workers | panels | factors sent per pass | per worker | largest of a worker | s per pass |")
    print("| --- | --- | --- | --- | --- | --- |")
    for n in args.workers:
        started = time.perf_counter()
        row = measure(path, n, args.iterations)
        print(
            f"| {row['workers']} | {row['panels']} | {row['total']:.1f} | {row['per worker']:.2f} | "
            f"{row['largest']:.2f} | {row['seconds']:.2f} |",
            flush=True,
        )
        print(f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
    print(f"target: at most {TARGET} factors per worker")


if __name__ == "__main__":
    main()
