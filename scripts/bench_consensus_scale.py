"""Consensus NMF at the size cNMF cannot do: what one run costs here, measured.

Writes (once, into ``--workdir``) the synthetic counts ``.h5ad`` of
``scripts/bench_h5ad.py`` -- by default 1,000,000 cells x 20,000 genes at 5% density,
written by AnnData's own writer a block at a time -- and runs ``dnmf.consensus`` on it
with cNMF's preprocessing (``--top-genes`` genes kept), the ranks and replicates given,
on an embedded ``LocalCluster`` as ``dnmf consensus`` starts one, for ``--iters``
iterations per ensemble batch (``tol=0``: every batch makes exactly that many; the
density filter off, ``density_threshold=2``, since spectra that far from converged are
all outliers).

Printed: the batches the memory budget cut (their total rank), the seconds of each
timed iteration, the wall time of the whole truncated run, the peak resident memory of
this process and its workers, and what a whole run would take at 100, 200 and 1000
(cNMF's ``max_iter``) iterations per batch from the median iteration (an extrapolation,
labelled so). For cNMF, the size of the dense cells x kept-genes float64 matrix that its
``consensus`` step makes of its normalized counts for every k (``norm_counts.X.todense()``
for the prediction error).

    python scripts/bench_consensus_scale.py --workdir /tmp/dnmf-scale
    python scripts/bench_consensus_scale.py --workdir /tmp/dnmf-scale --cells 200000 --iters 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import machine_info  # noqa: E402
from bench_h5ad import PeakMemory, write_h5ad  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--genes", type=int, default=20_000)
    parser.add_argument("--density", type=float, default=0.05)
    parser.add_argument("--ranks", default="10:14")
    parser.add_argument("--replicates", type=int, default=20)
    parser.add_argument("--top-genes", type=int, default=2000)
    parser.add_argument("--iters", type=int, default=2, help="Iterations of each ensemble batch.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from dnmf.apps.consensus import consensus
    from dnmf.cli.options import running_on
    from dnmf.io.formats import open_format

    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / f"counts-{args.cells}x{args.genes}-{args.density:g}.h5ad"
    if not path.exists():
        print(f"writing {path} ...", flush=True)
        seconds, size = write_h5ad(path, args.cells, args.genes, args.density, args.seed, log=lambda line: None)
        print(f"  written by AnnData in {seconds:.0f} s, {size / 2**30:.2f} GiB", flush=True)
    first, last = (int(part) for part in args.ranks.split(":"))
    ranks = list(range(first, last + 1))
    print(machine_info(), flush=True)
    print(
        f"consensus of {path.name}: ranks {ranks}, {args.replicates} replicates each, {args.top_genes} genes "
        f"kept, {args.iters} iterations per batch",
        flush=True,
    )

    timings, batch = {}, [1]

    def record(info):
        if info is None:
            batch[0] += 1
        else:
            timings.setdefault(batch[0], []).append(info.seconds)
            print(f"  batch {batch[0]}, iteration {info.iteration}: {info.seconds:.1f} s", flush=True)

    started = time.perf_counter()
    with PeakMemory() as memory, running_on(quiet=True):
        result = consensus(
            open_format(str(path)),
            ranks,
            replicates=args.replicates,
            preprocess="counts",
            top_genes=args.top_genes,
            random_state=args.seed,
            max_iter=args.iters,
            tol=0,
            density_threshold=2.0,
            callback=record,
        )
    wall = time.perf_counter() - started
    report = result.report
    iteration = statistics.median(s for seconds in timings.values() for s in seconds)
    batches = report.batches
    print()
    print(f"| {'':50} | {'':>14} |")
    print(f"| {'-' * 50} | {'-' * 14} |")
    rows = [
        ("batches (one pass over V per iteration each)", f"{batches}"),
        ("total rank of all fits", f"{sum(ranks) * args.replicates}"),
        ("median seconds per batch iteration", f"{iteration:.1f}"),
        (f"wall time of this run ({args.iters} iterations per batch)", f"{wall:.0f} s"),
        ("peak memory, this process + workers", f"{memory.peak / 2**30:.2f} GiB"),
        ("passes over V in this run", f"{report.passes}"),
    ]
    for n in (100, 200, 1000):
        rows.append((f"extrapolated: {n} iterations per batch", f"{batches * n * iteration / 3600:.1f} h"))
    dense = args.cells * min(args.top_genes, args.genes) * 8
    rows.append(("cNMF consensus: dense cells x kept genes, float64", f"{dense / 2**30:.1f} GiB per k"))
    for name, value in rows:
        print(f"| {name:50} | {value:>14} |")


if __name__ == "__main__":
    main()
