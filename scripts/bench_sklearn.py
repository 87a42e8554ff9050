"""dnmf against scikit-learn, defaults and the same seed on both sides, same data, same process.

For each matrix, scikit-learn's ``NMF(n_components=k, random_state=seed)`` and dnmf's
``NMF(n_components=k, random_state=seed)`` (through :func:`dnmf.api.run`, the estimator's own
call, so that a progress callback can time each iteration) run alternately ``--repeats``
times; nothing else is set on either side. Reported per matrix: both wall times (the fastest
of the repeats: this machine is shared and noisy), both final errors and iteration counts,
whether each stopped by itself (no ``ConvergenceWarning``), dnmf's time to its first iterate
and to first reach scikit-learn's final error (within 0.1%), its time to stop, and how far its
error at the time target (0.25x scikit-learn's time) still was above its final error, in
units of ``tol`` (more than 1: the stopping rule, which stops once what the fit can still
gain is below ``tol``, could not have stopped by the time target). Also
timed, apart from its fit: scikit-learn's initialization (its private ``_initialize_nmf`` with
the default init, NNDSVDa from a randomized SVD, which dnmf's default init also is; the fastest
of its timings, as a share of the fastest fit). Where it takes more than a quarter of
scikit-learn's fit, an init that costs as much leaves no time for the target. Timings of a
few tens of milliseconds vary 2-4x from run to run here. The targets:

- dnmf's error <= 1.001 x scikit-learn's,
- dnmf's time to stop <= 0.25 x scikit-learn's,
- dnmf stops by itself.

Matrices:

- real public data: the tf-idf matrix of the 7,130 paragraphs of the State of the Union
  addresses 1913-2026, the log-normalized counts of PBMC 3k (2,638 cells) and the ratings of
  MovieLens ml-latest-small (610 users x 9,724 movies), all three vendored in
  ``docs/examples/data``; scikit-learn's digits; the 200 Labeled-Faces-in-the-Wild images of
  scikit-image's ``lfw_subset`` at k = 49 (a small dense matrix with a large rank; skipped
  without scikit-image); 20,000 random 8 x 8 colour patches of scikit-learn's sample
  photograph ``china.jpg`` at k = 20 (image parts); scanpy's ``pbmc68k_reduced`` (its
  log-normalized ``raw``; skipped without scanpy); and, given ``--graph FILE`` (SNAP edge lists: a first line with the number
  of nodes, then ``source target weight`` lines, as in GitHub
  ``MC-io/dataset-triangle-counting``'s ``facebook_combined.txt`` and ``oregon1_010331.txt``),
  each graph's adjacency matrix;
- for each ``--corpus CSV`` (a column ``body`` or ``text`` of documents) its tf-idf matrix
  (``make_corpora.py`` writes 20 Newsgroups and Reuters-21578 from the public raw files);
- planted ones: three dense matrices (W H + noise, gamma-distributed factors) and a sparse
  one with power-law row and column degrees.

    python scripts/bench_sklearn.py --workdir /tmp/dnmf-bench [--graph facebook_combined.txt ...]
        [--corpus 20newsgroups.csv ...] [--only NAME ...] [--quick] [--seed 0 1 2 ...] [--float32]
        [--beta-loss kullback-leibler]

``--seed`` with several seeds compares each matrix at each of them in turn (a row per seed);
``--float32`` gives both tools every matrix in float32; ``--beta-loss NAME`` gives both
``solver="mu", beta_loss=NAME`` (the multiplicative updates; the targets are the defaults').
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import machine_info, write_report  # noqa: E402

#: Targets (see the module docstring).
TIME_TARGET, ERROR_TARGET = 0.25, 1.001
#: dnmf's default ``tol`` (relative).
DNMF_TOL = 1e-4
#: Interleaved runs of each tool per matrix; the fastest counts.
REPEATS = 2
#: The seed both tools get.
SEED = 0
#: The vendored real data of the documentation's gallery.
DATA = Path(__file__).resolve().parents[1] / "docs" / "examples" / "data"


def dense_planted(m, n, k, seed, noise=0.1):
    """``W H + noise * mean * U(0, 1)`` with Gamma(0.5) factors (skewed, many small entries)."""
    rng = np.random.default_rng(seed)
    V = rng.gamma(0.5, 1.0, (m, k)) @ rng.gamma(0.5, 1.0, (k, n))
    V += noise * V.mean() * rng.random((m, n))
    return V


def sparse_power_law(m, n, k, per_row, seed, exponent=1.2):
    """Rows with Pareto-distributed degrees (mean ``per_row``), columns drawn with Zipf-like
    popularity, values from planted Gamma(0.3) factors plus a little noise (CSR)."""
    rng = np.random.default_rng(seed)
    degrees = np.minimum(n, np.maximum(1, (rng.pareto(exponent, m) + 1) * per_row / 3)).astype(int)
    popularity = np.arange(1, n + 1, dtype=float) ** -0.8
    popularity = popularity[rng.permutation(n)] / popularity.sum()
    W, H = rng.gamma(0.3, 1.0, (m, k)), rng.gamma(0.3, 1.0, (k, n))
    rows = np.repeat(np.arange(m), degrees)
    columns = rng.choice(n, size=rows.size, p=popularity)
    values = np.einsum("ij,ji->i", W[rows], H[:, columns]) + 0.01 * rng.random(rows.size)
    X = sp.csr_matrix((values, (rows, columns)), shape=(m, n))
    X.sum_duplicates()
    return X


def corpus_tfidf(path):
    """The tf-idf matrix of the documents in a CSV file's ``body`` (or ``text``) column."""
    import pandas as pd
    from sklearn.feature_extraction.text import TfidfVectorizer

    frame = pd.read_csv(path, keep_default_na=False)
    column = "body" if "body" in frame else "text"
    documents = [text for text in frame[column] if text.strip()]
    return TfidfVectorizer(stop_words="english", min_df=2, max_df=0.95).fit_transform(documents).tocsr()


def sotu_tfidf():
    return corpus_tfidf(DATA / "sotu_paragraphs.csv.gz")


def log_counts(counts):
    """Counts per cell scaled to 10,000, then log1p (scanpy's normalize_total and log1p)."""
    per_cell = np.asarray(counts.sum(axis=1)).ravel()
    X = sp.csr_matrix(counts.multiply(1e4 / np.maximum(per_cell, 1)[:, None]))
    X.data = np.log1p(X.data)
    return X


def pbmc3k():
    z = np.load(DATA / "pbmc3k_hvg_counts.npz")
    return log_counts(sp.csr_matrix((z["data"].astype(np.float64), z["indices"], z["indptr"]), shape=tuple(z["shape"])))


def movielens():
    import pandas as pd

    ratings = pd.read_csv(DATA / "movielens_small_ratings.csv.gz")
    _, users = np.unique(ratings["userId"], return_inverse=True)
    _, movies = np.unique(ratings["movieId"], return_inverse=True)
    return sp.csr_matrix((ratings["rating"].to_numpy(np.float64), (users, movies)))


def digits():
    from sklearn.datasets import load_digits

    return load_digits().data


def lfw_faces():
    from skimage.data import lfw_subset

    return lfw_subset().reshape(200, -1)


def image_patches():
    """20,000 random 8 x 8 colour patches of scikit-learn's sample photograph ``china.jpg``, in [0, 1]."""
    from sklearn.datasets import load_sample_image
    from sklearn.feature_extraction.image import extract_patches_2d

    patches = extract_patches_2d(load_sample_image("china.jpg") / 255.0, (8, 8), max_patches=20000, random_state=0)
    return patches.reshape(len(patches), -1)


def pbmc68k_reduced():
    import scanpy as sc

    return sp.csr_matrix(sc.datasets.pbmc68k_reduced().raw.X).astype(np.float64)


def graph(path):
    """The symmetric adjacency matrix of an edge list (first line: the number of nodes)."""
    with open(path) as handle:
        n = int(handle.readline())
        edges = np.array([line.split()[:2] for line in handle if len(line.split()) >= 2], dtype=np.int64)
    rows, columns = edges[:, 0], edges[:, 1]
    A = sp.csr_matrix((np.ones(rows.size), (rows, columns)), shape=(n, n))
    A = ((A + A.T) > 0).astype(np.float64)
    return A.tocsr()


def _available(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None


def matrices(corpora, quick, graphs=()):
    scale = 4 if quick else 1
    yield "tf-idf State of the Union paragraphs 7130 x 15733, k=20", 20, sotu_tfidf
    yield "log counts PBMC 3k 2638 x 3004, k=10", 10, pbmc3k
    yield "ratings MovieLens 610 x 9724, k=20", 20, movielens
    yield "digits 1797 x 64, k=10", 10, digits
    if _available("skimage"):
        yield "faces LFW subset 200 x 625, k=49", 49, lfw_faces
    yield "image patches china.jpg 20000 x 192, k=20", 20, image_patches
    if _available("scanpy"):
        yield "log counts pbmc68k_reduced 700 x 765, k=10", 10, pbmc68k_reduced
    for path in graphs:
        yield f"graph {Path(path).stem}, k=16", 16, lambda path=path: graph(path)
    yield "dense 30000 x 1500, k=15 (seed 1)", 15, lambda: dense_planted(30000 // scale, 1500, 15, 1)
    yield "dense 8000 x 4000, k=25 (seed 7)", 25, lambda: dense_planted(8000 // scale, 4000, 25, 7)
    yield "dense 100000 x 300, k=10 (seed 3)", 10, lambda: dense_planted(100000 // scale, 300, 10, 3)
    yield "power-law CSR 200000 x 30000, k=20", 20, lambda: sparse_power_law(200000 // scale, 30000, 20, 60, 5)
    for path in corpora:
        yield f"tf-idf of {Path(path).stem}, k=20", 20, lambda path=path: corpus_tfidf(path)


def _norm(X):
    return float(np.sqrt(X.multiply(X).sum())) if sp.issparse(X) else float(np.linalg.norm(X))


def run_sklearn(X, k, seed, params=None):
    from sklearn.decomposition import NMF
    from sklearn.decomposition._nmf import _initialize_nmf
    from sklearn.exceptions import ConvergenceWarning

    started = time.perf_counter()
    _initialize_nmf(X, k, init=None, random_state=seed)
    init_seconds = time.perf_counter() - started
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        model = NMF(n_components=k, random_state=seed, **(params or {})).fit(X)
        seconds = time.perf_counter() - started
    warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return {
        "seconds": seconds,
        "init_seconds": init_seconds,
        "error": float(model.reconstruction_err_),
        "n_iter": int(model.n_iter_),
        "warned": warned,
    }


def run_dnmf(X, k, seed, params=None):
    from sklearn.exceptions import ConvergenceWarning

    from dnmf.api import run

    trace = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        started = time.perf_counter()
        result = run(
            X,
            {"n_components": k, "random_state": seed, **(params or {})},
            callback=lambda info: trace.append((time.perf_counter(), info.error)),
            as_numpy=True,
        )
        seconds = time.perf_counter() - started
    warned = any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return {
        "seconds": seconds,
        "error": float(result.reconstruction_err),
        "n_iter": int(result.n_iter),
        "warned": warned,
        "trace": [(t - started, e) for t, e in trace],
    }


def compare(name, k, X, repeats, log, seed=SEED, params=None):
    sklearn_runs, dnmf_runs = [], []
    for _ in range(repeats):
        sklearn_runs.append(run_sklearn(X, k, seed, params))
        dnmf_runs.append(run_dnmf(X, k, seed, params))
        log(
            f"  scikit-learn {sklearn_runs[-1]['seconds']:.2f} s ({sklearn_runs[-1]['n_iter']} it), "
            f"dnmf {dnmf_runs[-1]['seconds']:.2f} s ({dnmf_runs[-1]['n_iter']} it)"
        )
    sk = min(sklearn_runs, key=lambda r: r["seconds"])
    ours = min(dnmf_runs, key=lambda r: r["seconds"])
    target = ERROR_TARGET * sk["error"]  # scikit-learn's final error, within 0.1%
    reached = next((t for t, e in ours["trace"] if e <= target), None)
    # What the fit still gained after the time target: in tol (dnmf's default, 1e-4) of its final error.
    # More than 1, a rule that stops only when what is left is below tol could not have stopped by then.
    by_target = [e for t, e in ours["trace"] if t <= TIME_TARGET * sk["seconds"]]
    left = (by_target[-1] - ours["error"]) / ours["error"] / DNMF_TOL if by_target else None
    norm = _norm(X)
    row = {
        "matrix": name,
        "scikit-learn s": round(sk["seconds"], 2),
        "scikit-learn iterations": sk["n_iter"],
        "scikit-learn stopped by itself": not sk["warned"],
        "scikit-learn's init, share of its time": round(
            min(r["init_seconds"] for r in sklearn_runs) / sk["seconds"], 3
        ),
        "dnmf s": round(ours["seconds"], 2),
        "dnmf iterations": ours["n_iter"],
        "dnmf stopped by itself": not ours["warned"],
        "dnmf s to 1st iterate": round(ours["trace"][0][0], 3) if ours["trace"] else None,
        "dnmf s to scikit-learn's error": None if reached is None else round(reached, 3),
        "ratio to scikit-learn's error": None if reached is None else round(reached / sk["seconds"], 3),
        "time ratio (to stop)": round(ours["seconds"] / sk["seconds"], 3),
        "dnmf's error at the time target over its final, in tol": None if left is None else round(left, 1),
        "error ratio": round(ours["error"] / sk["error"], 5),
        "relative errors": f"{ours['error'] / norm:.5f} / {sk['error'] / norm:.5f}",
    }
    row["met"] = bool(
        row["time ratio (to stop)"] <= TIME_TARGET
        and row["error ratio"] <= ERROR_TARGET
        and row["dnmf stopped by itself"]
    )
    return row, {"scikit-learn": sklearn_runs, "dnmf": [{**r, "trace": r["trace"]} for r in dnmf_runs]}


def run(
    workdir,
    quick=False,
    corpora=(),
    repeats=REPEATS,
    only=None,
    log=print,
    graphs=(),
    seeds=(SEED,),
    float32=False,
    params=None,
):
    """Every comparison (each matrix at each seed, both tools given ``params`` too); writes
    ``WORKDIR/bench_sklearn.{json,md}`` and returns the rows."""
    rows, runs = [], {}
    for name, k, make in matrices(corpora, quick, graphs):
        if only and not any(part in name for part in only):
            continue
        log(f"{name}: building")
        X = make()
        if float32:
            X, name = X.astype(np.float32), f"{name}, float32"
        if params:
            name += "".join(f", {key}={value}" for key, value in params.items())
        for seed in seeds:
            label = name if tuple(seeds) == (SEED,) else f"{name}, random_state={seed}"
            row, detail = compare(label, k, X, repeats, log, seed, params)
            log("  " + ", ".join(f"{key}={value}" for key, value in row.items()))
            rows.append(row)
            runs[label] = detail
    payload = {"command": " ".join(sys.argv), "machine": machine_info(), "rows": rows, "runs": runs}
    notes = [
        f"targets: error ratio <= {ERROR_TARGET}, time ratio (to stop) <= {TIME_TARGET}, dnmf stops by itself",
        f"fastest of {repeats} interleaved runs of each tool, random_state={', '.join(map(str, seeds))} on both sides"
        + (", float32" if float32 else "")
        + "".join(f", {key}={value}" for key, value in (params or {}).items()),
    ]
    write_report(
        Path(workdir) / "bench_sklearn", payload, title="dnmf vs scikit-learn, defaults", table_rows=rows, notes=notes
    )
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/dnmf-bench", help="Where the report is written.")
    parser.add_argument("--corpus", action="append", default=[], metavar="CSV", help="A CSV of documents (repeatable).")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--quick", action="store_true", help="A quarter of the rows of the synthetic matrices.")
    parser.add_argument("--only", nargs="+", help="Run the matrices whose name contains one of these.")
    parser.add_argument("--graph", action="append", default=[], metavar="FILE", help="A SNAP edge list (repeatable).")
    parser.add_argument(
        "--seed", type=int, nargs="+", default=[SEED], help="random_state of both tools (each in turn)."
    )
    parser.add_argument("--float32", action="store_true", help="Every matrix in float32 (both tools).")
    parser.add_argument(
        "--beta-loss",
        choices=["frobenius", "kullback-leibler", "itakura-saito"],
        help="Both tools get solver='mu' and this beta_loss (not the defaults).",
    )
    args = parser.parse_args(argv)
    run(
        args.workdir,
        args.quick,
        args.corpus,
        args.repeats,
        args.only,
        log=lambda text: print(text, flush=True),
        graphs=args.graph,
        seeds=args.seed,
        float32=args.float32,
        params={"solver": "mu", "beta_loss": args.beta_loss} if args.beta_loss else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
