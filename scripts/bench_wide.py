"""A wide sparse matrix: dnmf's iteration against the two SciPy products it cannot avoid.

    python scripts/bench_wide.py [--workdir DIR] [--shape 2000000 1000000] [--density 5e-6]
                                 [--rank 16] [--iterations 12]

Makes (once; a rerun reuses it) ``dnmf generate DIR/wide.zarr --shape M N --rank K --density
D`` (float32 CSR), reads it into memory as a SciPy CSR matrix and prints, from one process:

* the floor: the median time of the two sparse-dense products of an iteration, ``V Hᵀ``
  (W's side) and ``Wᵀ V`` (H's side), by SciPy on factors of the fit's shape and dtype;
* the median time of dnmf's iterations (after the first) with defaults, from memory and
  from the Zarr store, on Dask's threads (``n_components`` and ``random_state`` only; the
  fit is cut at ``--iterations``);
* their ratios. Targets: in memory within 1.5x the floor; from the store within 1.2x of
  in memory.

Run it alone: it measures wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

MEMORY_TARGET, STORE_TARGET = 1.5, 1.2


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("bench-data"))
    parser.add_argument("--shape", type=int, nargs=2, default=[2_000_000, 1_000_000])
    parser.add_argument("--density", type=float, default=5e-6)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=5)
    return parser.parse_args(argv)


def matrix(args):
    from dnmf.io.generate import generate

    path = args.workdir / f"wide-{args.shape[0]}x{args.shape[1]}-{args.density:g}-k{args.rank}.zarr"
    if not path.exists():
        args.workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        generate(path, tuple(args.shape), args.rank, density=args.density, dtype="float32", seed=0)
        print(f"generated {path} in {time.perf_counter() - started:.1f} s")
    return path


def floor(V, rank, repeats):
    """Median seconds of ``V Hᵀ`` and of ``Wᵀ V`` (factors in V's dtype)."""
    rng = np.random.default_rng(0)
    W = rng.random((V.shape[0], rank), dtype=np.float32)
    H = rng.random((rank, V.shape[1]), dtype=np.float32)
    times = {"V Hᵀ": [], "Wᵀ V": []}
    for _ in range(repeats):
        started = time.perf_counter()
        V @ H.T
        times["V Hᵀ"].append(time.perf_counter() - started)
        started = time.perf_counter()
        W.T @ V
        times["Wᵀ V"].append(time.perf_counter() - started)
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def iteration_seconds(source, rank, iterations):
    """Median seconds of the iterations after the first, and the whole fit's seconds."""
    import dask

    from dnmf import api

    seconds = []
    started = time.perf_counter()
    with dask.config.set(scheduler="threads"):
        api.run(
            source,
            {"n_components": rank, "random_state": 0, "max_iter": iterations},
            callback=lambda info: seconds.append(info.seconds),
        )
    return statistics.median(seconds[1:]), time.perf_counter() - started


def main(argv=None):
    args = parse_args(argv)
    from dnmf.io.storage import open_matrix

    path = matrix(args)
    stored = open_matrix(str(path))
    V = stored.read_rows(0, stored.shape[0])
    print(f"V: {V.shape[0]:,} x {V.shape[1]:,}, {V.nnz:,} entries, {V.dtype}, k = {args.rank}")
    products = floor(V, args.rank, args.repeats)
    total = sum(products.values())
    print(
        "floor: " + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in products.items()) + f", sum {total:.3f} s"
    )
    memory, memory_fit = iteration_seconds(V, args.rank, args.iterations)
    print(f"dnmf in memory: {memory:.3f} s an iteration ({memory_fit:.1f} s for {args.iterations} iterations)")
    store, store_fit = iteration_seconds(str(path), args.rank, args.iterations)
    print(f"dnmf from the store: {store:.3f} s an iteration ({store_fit:.1f} s for {args.iterations} iterations)")
    print(f"in memory / floor: {memory / total:.2f}x (target {MEMORY_TARGET}x)")
    print(f"store / in memory: {store / memory:.2f}x (target {STORE_TARGET}x)")


if __name__ == "__main__":
    main()
