"""The HALS sweep: dnmf's kernel against scikit-learn's ``_update_cdnmf_fast``, same data, one process.

    python scripts/bench_sweep.py                 # 400,000 rows, k = 8, 16, 24, 48, float32 and float64
    python scripts/bench_sweep.py --rows 2000000 --ranks 16 48

For each dtype and rank: one sweep of a random non-negative W (a fifth of it zero) against a
Gram matrix and cross term of that rank, by :func:`dnmf.numerics.kernels.hals_sweeps` (the
kernel the fit uses for that shape) and by scikit-learn's compiled kernel on the whole of W;
best of ``--repeats`` for each, their ratio, and the relative difference of the two results.
Run it alone: it measures wall time on a shared machine.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.decomposition._cdnmf_fast import _update_cdnmf_fast

from dnmf.numerics.kernels import hals_sweeps


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=400_000)
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
    print(f"{'dtype':8} {'k':>3} {'scikit-learn':>13} {'dnmf':>9} {'ratio':>6} {'difference':>11}")
    for dtype in (np.float32, np.float64):
        for k in args.ranks:
            H = rng.random((k, 2000))
            gram = (H @ H.T).astype(dtype)
            W0 = rng.random((args.rows, k)).astype(dtype)
            W0[W0 < 0.2] = 0
            cross = (W0 @ gram * rng.uniform(0.5, 1.5, (args.rows, k))).astype(dtype)
            order = np.arange(k, dtype=np.intp)
            sk_seconds, sk_W = best_time(
                lambda W, g=gram, c=cross, o=order: _update_cdnmf_fast(W, g, c, o), W0, args.repeats
            )
            ours_seconds, ours_W = best_time(lambda W, g=gram, c=cross: hals_sweeps(W, g, c, 1), W0, args.repeats)
            difference = np.linalg.norm(ours_W - sk_W) / np.linalg.norm(sk_W)
            print(
                f"{dtype.__name__:8} {k:3d} {sk_seconds:12.3f}s {ours_seconds:8.3f}s {ours_seconds / sk_seconds:5.2f}x "
                f"{difference:11.1e}"
            )


if __name__ == "__main__":
    main()
