"""Single-cell benchmark: dnmf fitting an ``.h5ad`` file directly, against reading it.

A synthetic 10x-like counts matrix (cells x genes, int32 counts, per-cell library sizes
log-normal, gene popularity power-law, planted programs) is written with AnnData's own
writer, a row block at a time (``write_h5ad`` for the first block, then AnnData's
``sparse_dataset(...).append``), so that the benchmark itself never holds it whole.

Then, in one run:

* the floor: a plain parallel read of the file's ``X`` (every row panel's ``indptr``,
  ``indices`` and ``data``, one process per core, as dnmf's workers read them), and the
  same read with the iteration's two sparse-dense products done in memory;
* ``dnmf`` with defaults (``n_components`` only) on an embedded ``LocalCluster``, from the
  ``.h5ad`` path, ``--iters`` outer iterations (``tol=0``), each timed by the driver;
* the peak resident memory of the whole run (this process and every worker process),
  against the size of X in memory (what scanpy's ``read_h5ad`` or scikit-learn's NMF load).

Usage::

    python scripts/bench_h5ad.py --workdir /tmp/dnmf-bench            # 1,000,000 x 20,000, 5%
    python scripts/bench_h5ad.py --workdir /tmp/dnmf-bench --cells 200000
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import PeakMemory, machine_info, write_report  # noqa: E402

#: Rows generated and appended at a time.
BLOCK_CELLS = 2000
#: Programs planted in the counts.
PROGRAMS = 20


def _block(seed, cells, genes, density, programs):
    """One block of counts: Poisson draws at a planted low-rank rate, on a support drawn
    from the genes' popularity (about ``density`` of the genes per cell)."""
    rng = np.random.default_rng(seed)
    per_cell = max(1, int(genes * density))
    usage = rng.dirichlet(np.full(programs.shape[0], 0.3), size=cells) * rng.lognormal(0.0, 0.5, size=(cells, 1))
    popularity = programs.sum(axis=0) / programs.sum()
    drawn = rng.choice(genes, size=(cells, per_cell), p=popularity)
    keys = np.unique(np.arange(cells)[:, None].astype(np.int64) * genes + drawn)
    rows, columns = keys // genes, keys % genes
    rate = (usage @ programs)[rows, columns] * genes / per_cell
    counts = 1 + rng.poisson(rate)
    return sp.csr_matrix((counts.astype(np.int32), (rows, columns)), shape=(cells, genes))


def write_h5ad(path, cells, genes, density, seed, log=print):
    """The counts matrix as ``path``, written by AnnData block by block; ``(seconds, bytes)``."""
    import anndata
    import h5py
    import pandas as pd
    from anndata.io import sparse_dataset, write_elem

    rng = np.random.default_rng(seed)
    programs = rng.gamma(0.3, 1.0, size=(PROGRAMS, genes)) * (rng.uniform(size=genes) ** 2)[None, :]
    started = time.perf_counter()
    first = min(BLOCK_CELLS, cells)
    var = pd.DataFrame(index=[f"gene{i}" for i in range(genes)])
    anndata.AnnData(_block(seed, first, genes, density, programs), var=var).write_h5ad(path)
    with h5py.File(path, "a") as handle:
        X = sparse_dataset(handle["X"])
        for start in range(first, cells, BLOCK_CELLS):
            X.append(_block(seed + 1 + start // BLOCK_CELLS, min(BLOCK_CELLS, cells - start), genes, density, programs))
            log(f"  wrote {min(cells, start + BLOCK_CELLS)} / {cells} cells ({time.perf_counter() - started:.0f} s)")
        del handle["obs"]
        write_elem(handle, "obs", pd.DataFrame(index=[f"cell{i}" for i in range(cells)]))
    return time.perf_counter() - started, Path(path).stat().st_size


def _read_span(path, start, stop, rank=0):
    """Rows ``start:stop`` of the file's X read as a float32 CSR panel (and, with ``rank``,
    the iteration's two products with random factors: ``V Hᵀ`` and ``Wᵀ V``)."""
    import h5py

    with h5py.File(path, "r") as handle:
        X = handle["X"]
        pointers = np.asarray(X["indptr"][start : stop + 1], dtype=np.int64)
        lo, hi = int(pointers[0]), int(pointers[-1])
        n = int(X.attrs["shape"][1])
        panel = sp.csr_matrix(
            (X["data"][lo:hi].astype(np.float32), X["indices"][lo:hi], pointers - lo), shape=(stop - start, n)
        )
    if rank:
        rng = np.random.default_rng(start)
        H = rng.random((rank, n), dtype=np.float32)
        W = rng.random((stop - start, rank), dtype=np.float32)
        panel @ H.T, (panel.T @ W).T
    return panel.nnz


def floor(path, bounds, workers, rank=0):
    """Seconds of one parallel pass over every row panel of X (one process per core):
    the read alone, or with ``rank`` the read and the iteration's two products."""
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_read_span, [path] * 2, [0, 0], [1, 1]))  # start the processes first
        started = time.perf_counter()
        list(
            pool.map(
                _read_span, [path] * len(bounds), [a for a, _ in bounds], [b for _, b in bounds], [rank] * len(bounds)
            )
        )
        return time.perf_counter() - started


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--rank", type=int, default=20)
    parser.add_argument("--iters", type=int, default=5, help="Timed outer iterations.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--memory-limit",
        default="auto",
        help="Per worker, as dnmf fit --memory-limit (a limit also trims freed memory). [default: auto]",
    )
    args = parser.parse_args(argv)

    from dnmf import api
    from dnmf.engine.scheduler import local_cluster
    from dnmf.io.storage import as_panels, open_matrix

    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / f"counts-{args.cells}x{args.genes}-{args.density:g}.h5ad"
    if path.exists():
        written, size = None, path.stat().st_size
        print(f"reusing {path} ({size / 2**30:.2f} GiB)")
    else:
        print(f"writing {path} with AnnData ...")
        written, size = write_h5ad(path, args.cells, args.genes, args.density, args.seed)
        print(f"  {size / 2**30:.2f} GiB in {written:.0f} s")
    matrix = open_matrix(path)
    panels = as_panels(matrix)
    edges = np.concatenate([[0], np.cumsum(panels.row_chunks)]).astype(int)
    bounds = list(zip(edges[:-1], edges[1:]))
    in_memory = matrix.nnz * (4 + 4) + (matrix.shape[0] + 1) * 8  # float32 CSR, int32 indices
    workers = psutil.cpu_count() or 2
    floors = [floor(str(path), bounds, workers) for _ in range(3)]
    print(f"floor: parallel read of X {statistics.median(floors):.2f} s (runs {', '.join(f'{f:.2f}' for f in floors)})")
    with_products = [floor(str(path), bounds, workers, args.rank) for _ in range(3)]
    print(f"floor: read + the two products {statistics.median(with_products):.2f} s")

    seconds = []
    with (
        PeakMemory() as memory,
        local_cluster(
            memory_limit=args.memory_limit,
            silence_logs=logging.CRITICAL,  # the workers' heartbeats at teardown
        ) as client,
    ):
        started = time.perf_counter()
        result = api.run(
            str(path),
            {
                "n_components": args.rank,
                "max_iter": args.iters,
                "tol": 0.0,
                "random_state": args.seed,
                "client": client,
            },
            callback=lambda info: seconds.append(info.seconds),
        )
        total = time.perf_counter() - started
    iteration = statistics.median(seconds)
    read, compute = statistics.median(floors), statistics.median(with_products)
    rows = [
        [
            "matrix",
            f"{matrix.shape[0]} x {matrix.shape[1]}, nnz {matrix.nnz} ({matrix.nnz / np.prod(matrix.shape):.1%})",
        ],
        [
            ".h5ad on disk",
            f"{size / 2**30:.2f} GiB" + ("" if written is None else f", written by AnnData in {written:.0f} s"),
        ],
        ["X in memory (float32 CSR)", f"{in_memory / 2**30:.2f} GiB"],
        ["floor: parallel read of X", f"{read:.2f} s"],
        ["floor: read + the iteration's two products", f"{compute:.2f} s"],
        [f"dnmf iteration (k={args.rank}, defaults, median of {len(seconds)})", f"{iteration:.2f} s"],
        ["ratio iteration / read", f"{iteration / read:.2f}"],
        ["ratio iteration / (read + products)", f"{iteration / compute:.2f}"],
        ["whole fit incl. init and cluster", f"{total:.1f} s"],
        [
            f"peak resident memory (driver + workers; memory limit {args.memory_limit})",
            f"{memory.peak / 2**30:.2f} GiB",
        ],
        ["relative error", f"{result.reconstruction_err / result.norm_V:.4f}"],
    ]
    payload = {
        "machine": machine_info(),
        "shape": list(matrix.shape),
        "nnz": matrix.nnz,
        "file_bytes": size,
        "write_seconds": written,
        "x_in_memory_bytes": in_memory,
        "read_seconds": floors,
        "read_and_products_seconds": with_products,
        "iteration_seconds": seconds,
        "ratio_to_read": iteration / read,
        "ratio_to_read_and_products": iteration / compute,
        "memory_limit": args.memory_limit,
        "fit_seconds": total,
        "peak_rss_bytes": memory.peak,
        "rank": args.rank,
        "command": " ".join(["python", "scripts/bench_h5ad.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    write_report(
        args.workdir / "report-h5ad",
        payload,
        title="dnmf on an .h5ad file",
        table_rows=[{"measure": name, "value": value} for name, value in rows],
        notes=[
            "scanpy / scikit-learn users load X whole first (the 'X in memory' row; scikit-learn's NMF then "
            "makes a float64 copy)."
        ],
    )
    for name, value in rows:
        print(f"{name:<48} {value}")


if __name__ == "__main__":
    main()
