"""A wide sparse matrix: dnmf's iteration against the two SciPy products it cannot avoid.

    python scripts/bench_wide.py [--workdir DIR] [--shape 2000000 1000000] [--density 5e-6]
                                 [--rank 16] [--iterations 12]

Makes (once; a rerun reuses it) ``dnmf generate DIR/wide.zarr --shape M N --rank K --density
D`` (float32 CSR), reads it into memory as a SciPy CSR matrix and prints, from one process:

* the floor: the median time of the two sparse-dense products of an iteration, ``V Hᵀ``
  (W's side) and ``Wᵀ V`` (H's side), by SciPy on factors of the fit's shape and dtype;
  and the same products of V's two row halves, each on its own thread at once, as the
  fit's two panels run them;
* the median time of dnmf's iterations (after the first) with defaults, from memory and
  from the Zarr store, on Dask's threads (``n_components`` and ``random_state`` only; the
  fit is cut at ``--iterations``);
* their ratios. Targets: in memory within 1.5x the floor; from the store within 1.2x of
  in memory.

The three are measured in turn, ``--rounds`` times, and each figure is the median of its
rounds: on a shared machine the speed drifts between one fit and the next.

Run it alone: it measures wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
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
    parser.add_argument("--rounds", type=int, default=3)
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


def halves_at_once(V, rank, repeats):
    """Median seconds of both products of the two row halves of V, each half on its own
    thread at once (the fit's two panels on two cores): what the cores give the products."""
    rng = np.random.default_rng(0)
    H = rng.random((rank, V.shape[1]), dtype=np.float32)
    middle = V.shape[0] // 2
    halves = [(V[:middle], rng.random((middle, rank), dtype=np.float32))]
    halves.append((V[middle:], rng.random((V.shape[0] - middle, rank), dtype=np.float32)))
    seconds = []
    with ThreadPoolExecutor(2) as pool:
        for _ in range(repeats):
            started = time.perf_counter()
            list(pool.map(lambda half: (half[0] @ H.T, half[1].T @ half[0]), halves))
            seconds.append(time.perf_counter() - started)
    return statistics.median(seconds)


def iteration_seconds(source, rank, iterations):
    """Median seconds of a fit's iterations after the first."""
    import dask

    from dnmf import api

    seconds = []
    with dask.config.set(scheduler="threads"):
        api.run(
            source,
            {"n_components": rank, "random_state": 0, "max_iter": iterations},
            callback=lambda info: seconds.append(info.seconds),
        )
    return statistics.median(seconds[1:])


def main(argv=None):
    args = parse_args(argv)
    from dnmf.io.storage import open_matrix

    path = matrix(args)
    stored = open_matrix(str(path))
    V = stored.read_rows(0, stored.shape[0])
    print(f"V: {V.shape[0]:,} x {V.shape[1]:,}, {V.nnz:,} entries, {V.dtype}, k = {args.rank}")
    rounds = {"V Hᵀ": [], "Wᵀ V": [], "floor": [], "at once": [], "memory": [], "store": []}
    for number in range(1, args.rounds + 1):
        products = floor(V, args.rank, args.repeats)
        for name, seconds in products.items():
            rounds[name].append(seconds)
        rounds["floor"].append(sum(products.values()))
        rounds["at once"].append(halves_at_once(V, args.rank, args.repeats))
        rounds["memory"].append(iteration_seconds(V, args.rank, args.iterations))
        rounds["store"].append(iteration_seconds(str(path), args.rank, args.iterations))
        print(
            f"round {number}: floor {rounds['floor'][-1]:.3f} s, in memory {rounds['memory'][-1]:.3f} s, "
            f"from the store {rounds['store'][-1]:.3f} s an iteration",
            flush=True,
        )
    median = {name: statistics.median(values) for name, values in rounds.items()}
    print(f"floor: V Hᵀ {median['V Hᵀ']:.3f} s + Wᵀ V {median['Wᵀ V']:.3f} s = {median['floor']:.3f} s")
    print(f"the same products, two row halves on two threads at once: {median['at once']:.3f} s")
    print(f"dnmf in memory: {median['memory']:.3f} s an iteration")
    print(f"dnmf from the store: {median['store']:.3f} s an iteration")
    print(f"in memory / floor: {median['memory'] / median['floor']:.2f}x (target {MEMORY_TARGET}x)")
    print(f"store / in memory: {median['store'] / median['memory']:.2f}x (target {STORE_TARGET}x)")


if __name__ == "__main__":
    main()
