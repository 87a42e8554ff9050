"""The HALS sweep: dnmf's kernels against scikit-learn's ``_update_cdnmf_fast``, same data, one process.

    python scripts/bench_sweep.py                 # 400,000 rows, k = 8, 16, 24, 48, float32 and float64
    python scripts/bench_sweep.py --rows 2000000 --ranks 16 48
    python scripts/bench_sweep.py --rows 300 600 1000 2500 --ranks 16 25 32 49   # small factors

For each dtype, rank and row count: one sweep of a random non-negative W (a fifth of it zero)
against a Gram matrix and cross term of that rank, by scikit-learn's compiled kernel on the
whole of W, by the same kernel a cache-sized block of rows at a time (dnmf's
``_sklearn_sweeps``) and by the column-blocked sweep (``_blocked_sweeps``, its flops in
BLAS); the best of ``--repeats`` for each (more for small factors, whose sweeps take
microseconds), the column-blocked sweep's time over the row-blocked kernel's, the kernel
:func:`dnmf.numerics.kernels.hals_sweeps` takes for that shape, and the relative difference
of the column-blocked result from scikit-learn's. Run it alone: it measures wall time on a
shared machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.decomposition._cdnmf_fast import _update_cdnmf_fast

from dnmf.numerics import kernels


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[400_000])
    parser.add_argument("--ranks", type=int, nargs="+", default=[8, 16, 24, 48])
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def best_time(sweep, W0, repeats):
    best, result = np.inf, None
    for _ in range(repeats):
        W = W0.copy()
        started = time.perf_counter()
        sweep(W)
        best = min(best, time.perf_counter() - started)
        result = W
    return best, result


def main(argv=None):
    args = parse_args(argv)
    rng = np.random.default_rng(0)
    print(
        f"{'dtype':8} {'k':>3} {'rows':>8} {'scikit-learn':>13} {'row-blocked':>12} {'column-blocked':>15} "
        f"{'ratio':>6} {'fit takes':>15} {'difference':>11}"
    )
    for dtype in (np.float32, np.float64):
        for k in args.ranks:
            for rows in args.rows:
                H = rng.random((k, 2000))
                gram = (H @ H.T).astype(dtype)
                W0 = rng.random((rows, k)).astype(dtype)
                W0[W0 < 0.2] = 0
                cross = (W0 @ gram * rng.uniform(0.5, 1.5, (rows, k))).astype(dtype)
                order = np.arange(k, dtype=np.intp)
                repeats = max(args.repeats, min(200, 2**24 // (rows * k * k)))
                sk_seconds, sk_W = best_time(
                    lambda W, g=gram, c=cross, o=order: _update_cdnmf_fast(W, g, c, o), W0, repeats
                )
                row_seconds, _ = best_time(lambda W, g=gram, c=cross: kernels._sklearn_sweeps(W, g, c, 1), W0, repeats)
                column_seconds, column_W = best_time(
                    lambda W, g=gram, c=cross: kernels._blocked_sweeps(W, g, c, 1), W0, repeats
                )
                taken = "column-blocked" if kernels._blocked_sweep_pays(rows, k) else "row-blocked"
                difference = np.linalg.norm(column_W - sk_W) / np.linalg.norm(sk_W)
                print(
                    f"{dtype.__name__:8} {k:3d} {rows:8d} {sk_seconds * 1e3:10.3f} ms {row_seconds * 1e3:9.3f} ms "
                    f"{column_seconds * 1e3:12.3f} ms {column_seconds / row_seconds:5.2f}x {taken:>15} "
                    f"{difference:11.1e}"
                )


if __name__ == "__main__":
    main()
