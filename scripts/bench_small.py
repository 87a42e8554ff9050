"""The cost of one pass on small in-memory matrices, against a scikit-learn iteration.

For each matrix and rank, scikit-learn's ``NMF(k, init="nndsvda", tol=0, max_iter=N)`` and
dnmf's ``NMF(k, tol=0, max_iter=N)`` run N iterations (the fastest of ``--repeats`` runs,
alternately, in one process), and the same fit with ``max_iter=1`` is subtracted, so that
what is left is N - 1 iterations without the initialization. Printed per matrix: seconds per
iteration of scikit-learn, of dnmf with its defaults (``inner_sweeps="auto"``: on a matrix of
100,000 entries or more, several sweeps of each factor per pass, and extrapolation), and of
dnmf with ``inner_sweeps=1, extrapolate=False`` (scikit-learn's iteration, one sweep of
each factor), and their ratios to scikit-learn's. Target: within 1.3x.

Matrices: scikit-learn's digits (1,797 x 64, real) and a uniform random matrix of the
seeds' image-parts shape (2,429 x 361, the CBCL faces' shape), float32 and float64.

    python scripts/bench_small.py [--iterations 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

TARGET = 1.3


def matrices():
    from sklearn.datasets import load_digits

    digits = load_digits().data
    rng = np.random.default_rng(0)
    faces_shaped = rng.random((2429, 361))
    for k in (10, 30):
        yield f"digits 1797 x 64 float64, k={k}", digits, k
    for dtype in (np.float32, np.float64):
        for k in (10, 25, 49):
            yield f"random 2429 x 361 {np.dtype(dtype).name}, k={k}", faces_shaped.astype(dtype), k


def seconds(make, X, repeats):
    best = np.inf
    for _ in range(repeats):
        model = make()
        started = time.perf_counter()
        model.fit(X)
        best = min(best, time.perf_counter() - started)
    return best


def per_iteration(make, X, iterations, repeats):
    return (seconds(lambda: make(iterations), X, repeats) - seconds(lambda: make(1), X, repeats)) / (iterations - 1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    from sklearn.decomposition import NMF as SklearnNMF

    from dnmf import NMF

    warnings.simplefilter("ignore")
    print("| matrix | scikit-learn ms/it | dnmf defaults ms/pass (ratio) | dnmf one sweep ms/pass (ratio) |")
    print("| --- | --- | --- | --- |")
    for name, X, k in matrices():
        sk = per_iteration(
            lambda n, k=k: SklearnNMF(k, init="nndsvda", tol=0, max_iter=n), X, args.iterations, args.repeats
        )
        ours = per_iteration(lambda n, k=k: NMF(k, tol=0, max_iter=n), X, args.iterations, args.repeats)
        plain = per_iteration(
            lambda n, k=k: NMF(k, tol=0, max_iter=n, inner_sweeps=1, extrapolate=False),
            X,
            args.iterations,
            args.repeats,
        )
        print(
            f"| {name} | {sk * 1e3:.2f} | {ours * 1e3:.2f} ({ours / sk:.2f}) | {plain * 1e3:.2f} ({plain / sk:.2f}) |",
            flush=True,
        )
    print(f"target: one pass within {TARGET}x a scikit-learn iteration")


if __name__ == "__main__":
    main()
