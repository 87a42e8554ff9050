"""dnmf consensus against cNMF itself, side by side, on the same counts.

Counts with planted programs (Poisson noise, each program a block of genes over a flat
background, cells mixing a few programs) are written as an AnnData ``.h5ad`` by
AnnData's own writer; or, with ``--counts FILE.h5ad``, real counts (cells x genes in X);
``--counts pbmc3k`` writes the vendored PBMC 3k counts of the gallery (2,638 cells x 3,004
genes, 10x Genomics, ``docs/examples/data``) as such a file first. cNMF (installed in its own environment: pass its Python with
``--cnmf-python``; it is not a dependency of dnmf) runs its documented pipeline --
``prepare`` (``--numgenes`` = ``--top-genes``, by default all genes), ``factorize`` with
two workers at once (one per core), ``combine``, ``k_selection_plot``, ``consensus`` for
every k -- and dnmf runs ``dnmf consensus --preprocess counts --top-genes N`` (or, with
``--via tl``, ``dnmf.tl.consensus(adata, ranks, preprocess="counts", top_genes=N)`` on the
AnnData read from the file, in a Python process of its own) with its defaults otherwise on
the same counts file, with the same ranks and replicates: both select the over-dispersed
genes and scale them to unit variance themselves. Both are timed from the outside, with the
peak of the summed RSS of each tool's process tree sampled every 0.2 s.

Printed: wall time, peak memory, the recommended k (cNMF recommends none: the k of its
highest stability is shown), and the cosine similarity, after matching, of each tool's
consensus spectra at the compared k (the planted one; with real counts or ``--via tl``,
the k dnmf chose) with the planted programs (taken to the normalized genes' scale) and
with each other's; then, at that k, of the results in TPM units (both tools' defaults:
usages refit against TPM): the spectra in TPM units against the planted programs (every
gene) and against each other, the gene scores and the usages against each other (the
components matched by their consensus spectra).

    python scripts/bench_consensus.py --cnmf-python /path/to/cnmf-env/bin/python \\
        [--cells 20000 --genes 2000 --programs 7 --ranks 5:9 --replicates 10 --top-genes N] [--workdir DIR]
    python scripts/bench_consensus.py --cnmf-python ... --counts pbmc3k --via tl --ranks 6:10 --replicates 20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment

#: Sampling period of the memory of a tool's process tree.
SAMPLE_SECONDS = 0.2
#: cNMF run name and local-density threshold (its default).
NAME = "bench"
DENSITY_THRESHOLD = 0.5


def planted_counts(cells, genes, programs, seed=0):
    """``(counts CSR float32, planted spectra)``: cells mixing programs (Dirichlet 0.3,
    log-normal library sizes around 1500), Poisson noise."""
    rng = np.random.default_rng(seed)
    spectra = np.full((programs, genes), 0.05)
    block = genes // programs
    for p in range(programs):
        spectra[p, p * block : (p + 1) * block] += rng.gamma(2.0, 1.0, block)
    spectra /= spectra.sum(axis=1, keepdims=True)
    usages = rng.dirichlet(np.full(programs, 0.3), cells) * rng.lognormal(np.log(1500), 0.3, (cells, 1))
    rows = []
    for start in range(0, cells, 4096):  # in row blocks: the dense rates are never whole
        rows.append(sp.csr_matrix(rng.poisson(usages[start : start + 4096] @ spectra).astype(np.float32)))
    return sp.vstack(rows).tocsr(), spectra


#: The gallery's vendored PBMC 3k counts.
PBMC3K = Path(__file__).resolve().parents[1] / "docs" / "examples" / "data" / "pbmc3k_hvg_counts.npz"


def write_pbmc3k(path):
    """The vendored PBMC 3k counts as an ``.h5ad`` (cells x genes, gene symbols as var names)."""
    import anndata
    import pandas as pd

    with np.load(PBMC3K, allow_pickle=False) as z:
        counts = sp.csr_matrix((z["data"].astype(np.float32), z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        obs = pd.DataFrame({"cell_type": z["cell_type"].astype(str)}, index=z["barcodes"].astype(str))
        var = pd.DataFrame(index=z["genes"].astype(str))
    anndata.AnnData(counts, obs=obs, var=var).write_h5ad(path)


def run_measured(command, env=None, cwd=None):
    """Run ``command``; ``(seconds, peak bytes of the summed RSS of its process tree)``."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0]

    def sample():
        root = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                tree = [root, *root.children(recursive=True)]
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    output, _ = process.communicate()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} exited {process.returncode}:\n{output[-4000:]}")
    return time.perf_counter() - started, peak[0]


def _unit(A):
    A = np.asarray(A, np.float64)
    return A / np.linalg.norm(A, axis=1, keepdims=True)


def _cosines(found, reference):
    similarity = _unit(reference) @ _unit(found).T
    rows, columns = linear_sum_assignment(-similarity)
    return similarity[rows, columns]


def run_cnmf(python, counts_path, work, ranks, replicates, genes, cells, all_genes):
    """cNMF's pipeline; ``(seconds, peak bytes, {k: spectra}, {k: stability}, norm_counts path)``."""
    cnmf = [str(Path(python).parent / "cnmf")]  # its command-line entry point, beside its Python
    common = ["--output-dir", str(work), "--name", NAME, "--total-workers", "2"]
    steps = [
        [
            *cnmf,
            "prepare",
            *common,
            "-c",
            str(counts_path),
            "-k",
            *map(str, ranks),
            "--n-iter",
            str(replicates),
            "--seed",
            "14",
            "--numgenes",
            str(genes),
        ],
    ]
    seconds = peak = 0.0
    for command in steps:
        s, p = run_measured(command)
        seconds, peak = seconds + s, max(peak, p)
    # factorize: two workers at once, one per core (cNMF's documented way to parallelize)
    factorize = [[*cnmf, "factorize", *common, "--worker-index", str(i)] for i in range(2)]
    s, p = _run_parallel(factorize)
    seconds, peak = seconds + s, max(peak, p)
    for command in ([*cnmf, "combine", *common], [*cnmf, "k_selection_plot", *common]):
        s, p = run_measured(command)
        seconds, peak = seconds + s, max(peak, p)
    for k in ranks:
        s, p = run_measured(
            [*cnmf, "consensus", *common, "--components", str(k), "--local-density-threshold", str(DENSITY_THRESHOLD)]
        )
        seconds, peak = seconds + s, max(peak, p)
    threshold = str(DENSITY_THRESHOLD).replace(".", "_")
    spectra = {}
    for k in ranks:
        spectra[k] = {
            name: _table(
                work / NAME / f"{NAME}.{name}.k_{k}.dt_{threshold}{suffix}",
                index=cells if name == "usages" else None,
                columns=all_genes if name.startswith("gene_") else None,
            )
            for name, suffix in CNMF_TABLES.items()
        }
    stats = np.load(work / NAME / f"{NAME}.k_selection_stats.df.npz", allow_pickle=True)
    columns = list(stats["columns"])
    table = stats["data"]
    column = columns.index("silhouette" if "silhouette" in columns else "stability")  # named so since cNMF 1.5
    stability = {int(row[columns.index("k")]): float(row[column]) for row in table}
    norm = work / NAME / "cnmf_tmp" / f"{NAME}.norm_counts.h5ad"
    return seconds, peak, spectra, stability, norm


#: cNMF's result tables read, by name and file suffix.
CNMF_TABLES = {
    "spectra": ".consensus.txt",
    "usages": ".consensus.txt",
    "gene_spectra_tpm": ".txt",
    "gene_spectra_score": ".txt",
}
#: The same results in dnmf's consensus directory (``None``: the usages, from the result).
DNMF_TABLES = {"gene_spectra_tpm": "spectra_tpm", "gene_spectra_score": "spectra_score"}

#: ``--via tl``: dnmf.tl.consensus on the AnnData of argv[1], results to the .h5ad argv[5].
TL_RUN = """
import sys, anndata, dnmf
adata = anndata.read_h5ad(sys.argv[1])
first, last = (int(part) for part in sys.argv[2].split(":"))
dnmf.tl.consensus(adata, range(first, last + 1), replicates=int(sys.argv[3]), preprocess="counts",
                  top_genes=int(sys.argv[4]))
adata.write_h5ad(sys.argv[5])
"""


def run_dnmf_cli(counts_path, out, ranks, spec, replicates, top_genes):
    """``dnmf consensus``; ``(seconds, peak, results)`` with every rank's results."""
    seconds, peak = run_measured(
        [
            sys.executable,
            "-m",
            "dnmf.cli",
            "consensus",
            str(counts_path),
            "--ranks",
            spec,
            "--replicates",
            str(replicates),
            "--preprocess",
            "counts",
            "--top-genes",
            str(top_genes),
            "--out",
            str(out),
            "-q",
        ]
    )
    from dnmf.io.results import read_result

    report = json.loads((out / "consensus.json").read_text())
    fits = {k: read_result(out / f"k{k}.zarr") for k in ranks}
    results = {
        "recommended": report["recommended"],
        "stability": {s["rank"]: s["stability"] for s in report["scores"]},
        "columns": np.asarray(report["preprocessing"]["columns"]),
        "scale": np.asarray(report["preprocessing"]["scale"]),
        "spectra": {k: np.asarray(fits[k].H) for k in ranks},
        "usages": {k: np.asarray(fits[k].W).T for k in ranks},
        **{name: {k: _table(out / f"k{k}.{file}.tsv") for k in ranks} for name, file in DNMF_TABLES.items()},
    }
    return seconds, peak, results


def run_dnmf_tl(counts_path, out, spec, replicates, top_genes):
    """``dnmf.tl.consensus`` in a process of its own; ``(seconds, peak, results)`` of the
    chosen rank (the one it writes into the AnnData)."""
    import anndata

    seconds, peak = run_measured(
        [sys.executable, "-c", TL_RUN, str(counts_path), spec, str(replicates), str(top_genes), str(out)]
    )
    adata = anndata.read_h5ad(out)
    record = adata.uns["cnmf"]
    k, columns = int(record["k"]), np.asarray(record["genes_used"])
    results = {
        "recommended": int(record["recommended"]),
        "stability": dict(zip((int(r) for r in record["ranks"]), (float(v) for v in record["stability"]))),
        "columns": columns,
        "scale": np.asarray(record["gene_scale"]),
        "spectra": {k: np.asarray(adata.varm["cnmf_spectra"])[columns].T},
        "usages": {k: np.asarray(adata.obsm["X_cnmf"]).T},
        "gene_spectra_tpm": {k: np.asarray(adata.varm["cnmf_spectra_tpm"]).T},
        "gene_spectra_score": {k: np.asarray(adata.varm["cnmf_gene_scores"]).T},
    }
    return seconds, peak, results


def _table(path, index=None, columns=None):
    """A table cNMF or dnmf wrote (tab-separated, a header row and an index column) as an
    array, its rows and columns put in the order of ``index`` / ``columns`` (names) if given."""
    import pandas as pd

    frame = pd.read_csv(path, sep="\t", index_col=0)
    frame.index, frame.columns = frame.index.astype(str), frame.columns.astype(str)
    if index is not None:
        frame = frame.reindex(index=index)
    if columns is not None:
        frame = frame.reindex(columns=columns)
    return frame.to_numpy(dtype=np.float64)


def _matched_cosines(found, reference, order):
    """Cosine similarity of each row of ``reference`` with row ``order[i]`` of ``found``."""
    return np.sum(_unit(reference) * _unit(np.asarray(found)[order]), axis=1)


def _run_parallel(commands):
    """Run ``commands`` at once; ``(seconds, peak of their summed RSS)``."""
    results, started = [None] * len(commands), time.perf_counter()
    threads = [
        threading.Thread(target=lambda i=i, c=c: results.__setitem__(i, run_measured(c)))
        for i, c in enumerate(commands)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, sum(peak for _, peak in results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cnmf-python", required=True, help="Python of an environment with cnmf installed.")
    parser.add_argument("--cells", type=int, default=20000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--programs", type=int, default=7)
    parser.add_argument("--ranks", default="5:9")
    parser.add_argument("--replicates", type=int, default=10)
    parser.add_argument("--top-genes", type=int, default=None, help="Genes both tools keep (default: all).")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--counts", default=None, help="Real counts: an .h5ad with cells x genes in X.")
    parser.add_argument("--via", choices=("cli", "tl"), default="cli", help="dnmf consensus, or dnmf.tl.consensus.")
    args = parser.parse_args()
    import anndata
    import pandas as pd

    first, last = (int(part) for part in args.ranks.split(":"))
    ranks = list(range(first, last + 1))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="dnmf-bench-consensus-"))
    shutil.rmtree(work / NAME, ignore_errors=True)
    shutil.rmtree(work / "dnmf-out", ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    if args.counts == "pbmc3k":
        args.counts = str(work / "pbmc3k.h5ad")
        write_pbmc3k(args.counts)
    if args.counts:
        counts_path = Path(args.counts)
        source = anndata.read_h5ad(counts_path)
        counts, planted, gene_index = sp.csr_matrix(source.X), None, source.var_names.astype(str)
        cell_index = source.obs_names.astype(str)
        print(f"counts: {counts_path}, {counts.shape[0]} cells x {counts.shape[1]} genes, {counts.nnz} non-zeros")
    else:
        counts, planted = planted_counts(args.cells, args.genes, args.programs)
        counts_path = work / "counts.h5ad"
        anndata.AnnData(counts).write_h5ad(counts_path)
        # AnnData names the rows and columns "0", "1", ...
        gene_index, cell_index = (pd.Index([str(i) for i in range(n)]) for n in (args.genes, args.cells))
        print(
            f"counts: {args.cells} cells x {args.genes} genes, {counts.nnz} non-zeros, {args.programs} planted "
            f"programs",
            flush=True,
        )
    print(f"ranks {ranks}, {args.replicates} replicates, dnmf via {args.via}", flush=True)

    top_genes = args.top_genes or counts.shape[1]
    cnmf_seconds, cnmf_peak, cnmf_spectra, cnmf_stability, norm_path = run_cnmf(
        args.cnmf_python, counts_path, work, ranks, args.replicates, top_genes, cell_index, gene_index
    )
    print(f"cNMF: {cnmf_seconds:.1f} s, peak {cnmf_peak / 2**20:.0f} MiB", flush=True)

    if args.via == "tl":
        out = work / "dnmf-tl.h5ad"
        dnmf_seconds, dnmf_peak, dnmf = run_dnmf_tl(counts_path, out, args.ranks, args.replicates, top_genes)
    else:
        out = work / "dnmf-out"
        dnmf_seconds, dnmf_peak, dnmf = run_dnmf_cli(counts_path, out, ranks, args.ranks, args.replicates, top_genes)
    print(f"dnmf: {dnmf_seconds:.1f} s, peak {dnmf_peak / 2**20:.0f} MiB", flush=True)
    dnmf_spectra = dnmf["spectra"]

    norm = anndata.read_h5ad(norm_path)
    cnmf_genes = gene_index.get_indexer(norm.var_names.astype(str))
    same_genes = np.array_equal(cnmf_genes, dnmf["columns"])
    print(
        f"genes kept: cNMF {cnmf_genes.size}, dnmf {len(dnmf['columns'])}, "
        f"{'the same' if same_genes else 'not the same'}",
        flush=True,
    )
    if planted is not None:  # the planted programs on each tool's genes, at their scale
        scale = np.asarray(norm.X.sum(axis=0)).ravel() / np.maximum(
            np.asarray(counts[:, cnmf_genes].sum(axis=0)).ravel(), 1e-30
        )
        planted_cnmf = planted[:, cnmf_genes] * scale
        planted_dnmf = planted[:, dnmf["columns"]] * dnmf["scale"]
    k = args.programs if planted is not None and args.via == "cli" else dnmf["recommended"]
    rows = [
        ("wall time (s)", f"{cnmf_seconds:.1f}", f"{dnmf_seconds:.1f}", f"{dnmf_seconds / cnmf_seconds:.2f}x"),
        ("peak memory (MiB)", f"{cnmf_peak / 2**20:.0f}", f"{dnmf_peak / 2**20:.0f}", f"{dnmf_peak / cnmf_peak:.2f}x"),
        (
            "recommended k",
            f"{max(cnmf_stability, key=cnmf_stability.get)} (highest stability; cNMF picks none)",
            str(dnmf["recommended"]),
            "",
        ),
    ]
    if k in ranks:
        if planted is not None:
            rows.append(
                (
                    f"min cosine to planted (k={k})",
                    f"{_cosines(cnmf_spectra[k]['spectra'], planted_cnmf).min():.4f}",
                    f"{_cosines(dnmf_spectra[k], planted_dnmf).min():.4f}",
                    "",
                )
            )
        cnmf_k = cnmf_spectra[k]
        if same_genes:
            matched = np.sort(_cosines(dnmf_spectra[k], cnmf_k["spectra"]))
            rows.append((f"min cosine dnmf vs cNMF (k={k})", "", f"{matched.min():.4f}", ""))
            print(f"matched spectra at k={k}, cosine of each pair: {', '.join(f'{c:.4f}' for c in matched)}")
        dnmf_k = {name: dnmf[name][k] for name in ("gene_spectra_tpm", "gene_spectra_score", "usages")}
        cnmf_k = {**cnmf_k, "usages": cnmf_k["usages"].T}
        if planted is not None:
            rows.append(
                (
                    "min cosine TPM spectra to planted",
                    f"{_cosines(cnmf_k['gene_spectra_tpm'], planted).min():.4f}",
                    f"{_cosines(dnmf_k['gene_spectra_tpm'], planted).min():.4f}",
                    "",
                )
            )
        similarity = _unit(cnmf_k["spectra"]) @ _unit(dnmf_spectra[k]).T
        order = linear_sum_assignment(-similarity)[1]  # dnmf's component matched to each of cNMF's
        for name, label in (
            ("gene_spectra_tpm", "TPM spectra"),
            ("gene_spectra_score", "gene scores"),
            ("usages", "usages"),
        ):
            rows.append(
                (
                    f"min cosine {label} dnmf vs cNMF",
                    "",
                    f"{_matched_cosines(dnmf_k[name], cnmf_k[name], order).min():.4f}",
                    "",
                )
            )
    for rank in ranks:  # every rank dnmf's results have
        if same_genes and rank in dnmf_spectra and rank != k:
            matched = np.sort(_cosines(dnmf_spectra[rank], cnmf_spectra[rank]["spectra"]))
            print(f"matched spectra at k={rank}, cosine of each pair: {', '.join(f'{c:.4f}' for c in matched)}")
    print()
    print(f"| {'':36} | {'cNMF':>24} | {'dnmf':>10} | dnmf/cNMF |")
    print(f"| {'-' * 36} | {'-' * 24} | {'-' * 10} | --------- |")
    for name, a, b, ratio in rows:
        print(f"| {name:36} | {a:>24} | {b:>10} | {ratio:>9} |")
    print()
    print(
        "stability by k:  "
        + "  ".join(
            f"k={rank}: cNMF {cnmf_stability.get(rank, float('nan')):.3f} / dnmf {value:.3f}"
            for rank, value in dnmf["stability"].items()
        )
    )
    print(f"workdir: {work} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
