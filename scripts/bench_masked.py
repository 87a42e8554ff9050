"""Benchmark: the cost of missing values and the speed-up of a concurrent rank sweep.

1. Masked vs unmasked iteration (targets: <= 1.5x). Same matrix, same solver (MU), same
   scheduler; the masked run has a share of its entries set to NaN (dense) or, for the
   sparse case, the same CSR matrix with ``missing_values="absent"``. The per-iteration
   wall time is the median over the iterations after the first (progress callback).
   Rows: in-memory NumPy and Zarr on disk (the out-of-core case: each iteration reads
   V), Frobenius and KL, 1% and 30% NaN.
2. Rank sweep: :func:`dnmf.select_rank` with every fit at once vs ``concurrency=1``
   (the same fits one after another) on a LocalCluster of 2 worker processes (target
   <= 0.6x), in both modes: "tasks" (the default there: each fit's driver inside a worker
   task) and "threads" (each fit's driver in a thread of this process; fewer iterations,
   it is slow: every iteration is a round trip to the scheduler).

Every ratio printed comes from this one run; the load average is printed too, as other
work on the machine skews ratios of wall times. Usage::

    python scripts/bench_masked.py [--quick]

3. Masked HALS (``solver="cd"``, :mod:`dnmf.numerics.masked_hals`) against weighted MU on the same
   matrix: seconds per iteration, and the observed-entry error each reaches after the
   same number of iterations (HALS's per-row Grams cost more per pass at larger k, and
   buy far more per pass).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import zarr

from dnmf.api import run
from dnmf.apps.rank import select_rank

#: Dense benchmark matrix: rows, columns, rank of the planted part.
DENSE_SHAPE, RANK = (20000, 1000), 10
#: Sparse benchmark matrix: shape and density.
SPARSE_SHAPE, DENSITY = (50000, 5000), 0.01
#: Iterations timed per run (the first is dropped).
ITERATIONS = 6
#: Iterations of the masked HALS / weighted MU comparison.
HALS_ITERATIONS = 30
#: Rank sweep: matrix, ranks, replicates, iterations per fit.
SWEEP_SHAPE, SWEEP_RANKS, SWEEP_REPLICATES, SWEEP_MAX_ITER = (3000, 400), range(2, 8), 3, 40


def _planted(shape, rank, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    V = rng.uniform(size=(shape[0], rank)) @ rng.uniform(size=(rank, shape[1]))
    return (V + 0.1 * rng.uniform(size=shape)).astype(dtype)


def _with_nan(V, share, seed=1):
    V = V.copy()
    V[np.random.default_rng(seed).uniform(size=V.shape) < share] = np.nan
    return V


def _seconds_per_iteration(V, missing, beta, iterations):
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = dict(
            n_components=RANK,
            solver="mu",
            beta_loss=beta,
            init="random",
            random_state=0,
            max_iter=iterations,
            tol=0,
            missing_values=missing,
        )
        run(V, params, callback=lambda info: times.append(info.seconds))
    return statistics.median(times[1:])


def masked_rows(workdir, iterations):
    dense = _planted(DENSE_SHAPE, RANK)
    rows = []
    stored = {}
    for share in (0.01, 0.3):
        data = _with_nan(dense, share)
        path = Path(workdir) / f"v-{share}.zarr"
        zarr.create_array(str(path), data=data, chunks=(2000, DENSE_SHAPE[1]))
        stored[share] = zarr.open_array(str(path), mode="r")
    plain_path = Path(workdir) / "v.zarr"
    zarr.create_array(str(plain_path), data=dense, chunks=(2000, DENSE_SHAPE[1]))
    plain_stored = zarr.open_array(str(plain_path), mode="r")
    for where in ("numpy", "zarr"):
        for beta, name in ((2.0, "frobenius"), (1.0, "kullback-leibler")):
            base = _seconds_per_iteration(dense if where == "numpy" else plain_stored, None, beta, iterations)
            for share in (0.01, 0.3):
                data = _with_nan(dense, share) if where == "numpy" else stored[share]
                masked = _seconds_per_iteration(data, "nan", beta, iterations)
                rows.append(
                    (f"dense {where} {DENSE_SHAPE[0]}x{DENSE_SHAPE[1]} f32, {name}, {share:.0%} NaN", base, masked)
                )
    rng = np.random.default_rng(2)
    S = sp.random(*SPARSE_SHAPE, density=DENSITY, format="csr", random_state=rng, dtype=np.float32)
    S.data = (S.data + 0.1).astype(np.float32)
    base = _seconds_per_iteration(S, None, 2.0, iterations)
    masked = _seconds_per_iteration(S, "absent", 2.0, iterations)
    rows.append((f"sparse {SPARSE_SHAPE[0]}x{SPARSE_SHAPE[1]} density {DENSITY}, frobenius, absent", base, masked))
    return rows


def _fit_trace(V, solver, missing, k, iterations):
    """(median seconds per iteration after the first, last observed-entry relative error)."""
    times = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = dict(
            n_components=k,
            solver=solver,
            init="random",
            random_state=0,
            max_iter=iterations,
            tol=0,
            missing_values=missing,
        )
        result = run(V, params, callback=lambda info: times.append(info.seconds))
    observed = V[~np.isnan(V)].astype(np.float64)
    return statistics.median(times[1:]), result.reconstruction_err / float(np.sqrt(observed @ observed))


def hals_rows(iterations):
    """Masked HALS vs weighted MU vs unmasked HALS on the dense in-memory matrix."""
    rows = []
    for k in (10, 20):
        dense = _planted(DENSE_SHAPE, RANK)
        plain, _ = _fit_trace(dense, "cd", None, k, iterations)
        for share in (0.01, 0.3):
            data = _with_nan(dense, share)
            cd, cd_error = _fit_trace(data, "cd", "nan", k, iterations)
            mu, mu_error = _fit_trace(data, "mu", "nan", k, iterations)
            rows.append((k, share, plain, cd, cd_error, mu, mu_error))
    return rows


def sweep_ratio(max_iter, mode):
    from distributed import Client, LocalCluster

    V = _planted(SWEEP_SHAPE, 5)
    common = dict(replicates=SWEEP_REPLICATES, max_iter=max_iter, tol=0, solver="mu", mode=mode)
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as client:
        select_rank(V, [2], replicates=2, max_iter=2, client=client, mode=mode)  # warm up the workers
        started = time.perf_counter()
        concurrent = select_rank(V, SWEEP_RANKS, client=client, **common)
        concurrent_seconds = time.perf_counter() - started
        started = time.perf_counter()
        sequential = select_rank(V, SWEEP_RANKS, client=client, concurrency=1, **common)
        sequential_seconds = time.perf_counter() - started
    assert [s.error for s in concurrent.scores] == [s.error for s in sequential.scores]  # same fits
    return concurrent_seconds, sequential_seconds, len(SWEEP_RANKS) * SWEEP_REPLICATES


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (noisier)")
    args = parser.parse_args(argv)
    iterations = 4 if args.quick else ITERATIONS
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"# dnmf bench_masked on {os.cpu_count()} cores (load average {load}), Python {sys.version.split()[0]}")
    print("\n## 1. masked / unmasked seconds per iteration (MU, k = 10; target <= 1.5x)")
    with tempfile.TemporaryDirectory(prefix="dnmf-bench-masked-") as workdir:
        for label, base, masked in masked_rows(workdir, iterations):
            print(f"{label:<62} unmasked {base:7.3f} s  masked {masked:7.3f} s  ratio {masked / base:5.2f}x")
    print("\n## 2. rank sweep, 2 workers: concurrent / one after another (target <= 0.6x)")
    for mode, iterations in (("tasks", SWEEP_MAX_ITER), ("threads", SWEEP_MAX_ITER // 4)):
        concurrent, sequential, fits = sweep_ratio(iterations // (2 if args.quick else 1), mode)
        print(
            f"mode={mode:<7} {fits} fits of {SWEEP_SHAPE[0]}x{SWEEP_SHAPE[1]} (ranks {SWEEP_RANKS.start}.."
            f"{SWEEP_RANKS.stop - 1}, {iterations} iterations): concurrent {concurrent:.1f} s, "
            f"sequential {sequential:.1f} s, ratio {concurrent / sequential:.2f}x"
        )
    print(
        f"\n## 3. masked HALS (solver='cd') vs weighted MU, dense {DENSE_SHAPE[0]}x{DENSE_SHAPE[1]} f32 in memory, "
        f"{HALS_ITERATIONS} iterations from the same random start"
    )
    for k, share, plain, cd, cd_error, mu, mu_error in hals_rows(HALS_ITERATIONS // (2 if args.quick else 1)):
        print(
            f"k={k:<3} {share:4.0%} NaN: masked HALS {cd:6.3f} s/it ({cd / plain:4.2f}x unmasked HALS), rel. error "
            f"{cd_error:.5f} | weighted MU {mu:6.3f} s/it, rel. error {mu_error:.5f}"
        )


if __name__ == "__main__":
    main()
