"""Floor-ratio benchmark: dnmf's time per iteration against the cost of reading V once.

    python scripts/bench_floor.py --workdir /tmp/dnmf-bench --rows 100000 --cols 4000 --rank 20

On a dense float32 Zarr matrix (default 100000 x 4000 = 1.6 GB, Blosc LZ4 + shuffle)
it measures, in the same run and on the same store:

* the floor: the time to read V once with all cores (``dask.array.from_zarr(path).sum()``
  on the threaded scheduler) plus the time of the iteration's two GEMMs ``V Hᵀ`` and
  ``Wᵀ V`` on in-memory NumPy panels of V's size with all cores: each product with all
  BLAS threads, and also panels shared out over one single-BLAS-thread worker per
  core; the faster of the two counts (so a BLAS threading pathology of a busy machine
  cannot inflate the floor);
* dnmf's wall time per outer iteration (HALS / ``cd``, ``tol=0``) on the default Dask
  threaded scheduler and, unless ``--no-cluster``, on an embedded ``LocalCluster``.

The machines these run on are shared and noisy, so the floor is measured between
dnmf's iterations (in the progress callback, outside the iteration's timing): every
iteration has a floor measured next to it. The ratio reported is
``median(iteration) / (median(read) + median(GEMMs))``; the best-of ratio and the
median of the paired ratios are printed too, and the same ratio in CPU seconds of this
process (steadier under load). Target: ratio <= 1.15. The LocalCluster row also times
the same read on the cluster, whose worker processes read Zarr much slower here.

``--sparse`` (or ``--kind both``) runs the same on a CSR matrix stored in Zarr
(``--density``, default 0.01); its floor is one parallel read of the three arrays plus
the two sparse-dense products on all cores (the faster of one thread and one process
per core: SciPy's sparse products hold the GIL).

The matrices are written once under ``--workdir`` and reused by later runs with the
same shape, chunking and seed. The report (JSON and Markdown) goes to ``--report``,
by default ``<workdir>/report-floor-<kind>.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench_common as common  # noqa: E402

#: Target: per-iteration time / floor (one parallel read of V plus the two products in memory).
TARGET_RATIO = 1.15
#: Default shapes: dense 1.6 GB float32; sparse 100M entries (0.8 GB of data + indices) at 1% density.
DENSE_SHAPE = (100_000, 4_000)
SPARSE_SHAPE = (500_000, 20_000)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", default="/tmp/dnmf-bench", help="where matrices (and by default reports) go")
    parser.add_argument(
        "--rows", type=int, default=None, help=f"rows of V (dense {DENSE_SHAPE[0]}, sparse {SPARSE_SHAPE[0]})"
    )
    parser.add_argument(
        "--cols", type=int, default=None, help=f"columns of V (dense {DENSE_SHAPE[1]}, sparse {SPARSE_SHAPE[1]})"
    )
    parser.add_argument("--rank", type=int, default=20, help="n_components k")
    parser.add_argument("--kind", choices=("dense", "sparse", "both"), default="dense")
    parser.add_argument("--sparse", action="store_const", const="sparse", dest="kind", help="same as --kind sparse")
    parser.add_argument("--density", type=float, default=0.01, help="fraction of stored entries of the sparse matrix")
    parser.add_argument("--chunk-rows", type=int, default=1024, help="rows per Zarr chunk of the dense matrix")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--iters", type=int, default=5, help="timed iterations (each paired with a floor measurement)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--solver", default="cd", choices=("cd", "mu"))
    parser.add_argument("--panel-rows", type=int, default=None, help="dnmf panel_rows (default: dnmf's own choice)")
    parser.add_argument(
        "--gemm-panel-rows", type=int, default=16384, help="rows per in-memory panel of the floor's GEMMs"
    )
    parser.add_argument("--no-cluster", action="store_true", help="skip the LocalCluster row")
    parser.add_argument("--report", default=None, help="report path (.json; a .md is written next to it)")
    return parser.parse_args(argv)


def _log(message):
    print(message, flush=True)


# ------------------------------------------------------------------------- measuring


class FloorProbe:
    """Measures the floor once per call; used as dnmf's progress callback so every
    timed iteration has a floor measured right after it.

    Besides wall times it keeps CPU times (``time.process_time``, all threads of this
    process): on a shared machine the wall time of both sides swings with the load of
    other tenants, while the CPU seconds each side needs are far steadier.
    """

    def __init__(self, floor, warmup, client=None):
        self.floor = floor
        self.warmup = warmup
        self.client = client
        self.gemm_ways = []
        self.client_read = common.Timings()
        self.iterations = common.Timings()
        self.read = common.Timings()
        self.gemm = common.Timings()
        self.iterations_cpu = common.Timings()
        self.read_cpu = common.Timings()
        self.gemm_cpu = common.Timings()
        self.losses = []
        self._cpu_mark = time.process_time()

    def __call__(self, info):
        cpu = time.process_time() - self._cpu_mark
        self.losses.append(info.loss)
        if info.iteration > self.warmup:
            self.iterations.append(info.seconds)
            self.iterations_cpu.append(cpu)
            line = f"    iteration {info.iteration}: {info.seconds:.3f}s ({cpu:.2f} CPU-s)"
            if self.floor is not None:
                (read, read_cpu), (gemm, gemm_cpu) = self.floor.read(), self.floor.gemm()
                self.gemm_ways.append(dict(getattr(self.floor, "last_gemm", {})))
                self.read.append(read)
                self.gemm.append(gemm)
                self.read_cpu.append(read_cpu)
                self.gemm_cpu.append(gemm_cpu)
                ways = "/".join(f"{name} {wall:.2f}s" for name, (wall, _) in self.gemm_ways[-1].items())
                line += (
                    f" | floor read {read:.3f}s ({read_cpu:.2f} CPU-s) + GEMMs {gemm:.3f}s ({gemm_cpu:.2f} CPU-s;"
                    f" {ways})"
                )
                if self.client is not None:
                    self.client_read.append(self.floor.read_on(self.client)[0])
                    line += f" | same read on the cluster {self.client_read[-1]:.3f}s"
            _log(line)
        self._cpu_mark = time.process_time()


def run_dnmf(source, args, probe, client=None):
    """A fit of ``warmup + iters`` iterations with ``probe`` as callback; total wall time."""
    from dnmf import api

    params = {
        "n_components": args.rank,
        "solver": args.solver,
        "init": "random",
        "random_state": args.seed,
        "tol": 0.0,
        "max_iter": args.warmup + args.iters,
        "panel_rows": args.panel_rows,
        "client": client,
    }
    started = time.perf_counter()
    api.run(source, params, callback=probe)
    return time.perf_counter() - started


def _row(name, probe, data_gb, flops):
    """One result row: medians, best-of and paired ratios, wall and CPU."""
    it, read, gemm = probe.iterations, probe.read, probe.gemm
    floor = read.median + gemm.median
    paired = [i / (r + g) for i, r, g in zip(it, read, gemm)]
    cpu_floor = probe.read_cpu.median + probe.gemm_cpu.median
    return {
        "scheduler": name,
        "iteration_s": it.summary(),
        "floor_read_s": read.summary(),
        "floor_gemm_s": gemm.summary(),
        "floor_s": floor,
        "ratio": it.median / floor,
        "ratio_best": it.best / (read.best + gemm.best),
        "ratio_paired_median": float(np.median(paired)),
        "iteration_cpu_s": probe.iterations_cpu.summary(),
        "floor_read_cpu_s": probe.read_cpu.summary(),
        "floor_gemm_cpu_s": probe.gemm_cpu.summary(),
        "ratio_cpu": probe.iterations_cpu.median / cpu_floor,
        "v_gb_per_s": data_gb / it.median,
        "gflop_per_s": flops / it.median / 1e9,
        "floor_read_gb_per_s": data_gb / read.median,
        "floor_gemm_gflop_per_s": flops / gemm.median / 1e9,
        "floor_gemm_ways_s": probe.gemm_ways,
        "losses": probe.losses,
        "meets_target": it.median / floor <= TARGET_RATIO,
    }


def bench(kind, args):
    """Make (or reuse) the matrix, measure, return the report section for ``kind``."""
    from dnmf.io.storage import as_panels

    workdir = Path(args.workdir)
    default = DENSE_SHAPE if kind == "dense" else SPARSE_SHAPE
    rows, cols = args.rows or default[0], args.cols or default[1]
    k = args.rank
    if kind == "dense":
        path = workdir / f"dense-{rows}x{cols}-c{args.chunk_rows}-s{args.seed}.zarr"
        matrix, _ = common.make_dense_zarr(path, rows, cols, chunk_rows=args.chunk_rows, seed=args.seed, log=_log)
        nnz = rows * cols
        data_bytes = nnz * matrix.dtype.itemsize
        floor = common.DenseFloor(path, k, panel_rows=args.gemm_panel_rows, seed=args.seed)
    else:
        path = workdir / f"csr-{rows}x{cols}-d{args.density:g}-s{args.seed}.zarr"
        matrix, _ = common.make_csr_zarr(path, rows, cols, args.density, seed=args.seed, log=_log)
        nnz = matrix.nnz
        data_bytes = nnz * (matrix.dtype.itemsize + matrix.indices.dtype.itemsize) + (rows + 1) * 8
        panel_nnz = max(1, as_panels(matrix).array.chunks[0][0] * nnz // rows)
        floor = common.CSRFloor(path, matrix, k, panel_nnz=panel_nnz, seed=args.seed)

    data_gb = data_bytes / 1e9
    flops = 4.0 * nnz * k  # V Hᵀ and Wᵀ V, 2 nnz k each
    panels = as_panels(matrix, panel_rows=args.panel_rows)
    _log(
        f"{kind}: V {rows} x {cols}, {nnz / 1e6:.1f}M entries, {data_gb:.2f} GB, k={k}, "
        f"{panels.n_panels} panels of <= {max(panels.row_chunks)} rows, {os.cpu_count()} cores"
    )

    rows_out = []
    _log("  dnmf on the threaded scheduler (floor measured after every timed iteration):")
    probe = FloorProbe(floor, args.warmup)
    total = run_dnmf(str(path), args, probe)
    threads_row = _row("threads", probe, data_gb, flops)
    threads_row["fit_wall_s"] = total
    rows_out.append(threads_row)
    _print_row(threads_row)

    if not args.no_cluster:
        from dnmf.engine.scheduler import local_cluster

        _log("  dnmf on an embedded LocalCluster (default workers, as the CLI starts it):")
        logging.getLogger("distributed").setLevel(logging.ERROR)
        with local_cluster() as client:
            workers = client.scheduler_info()["workers"]
            layout = f"{len(workers)} workers x {sum(w['nthreads'] for w in workers.values()) // max(1, len(workers))} threads"
            probe_c = FloorProbe(floor, args.warmup, client=client)
            total = run_dnmf(str(path), args, probe_c, client=client)
        cluster_row = _row(f"LocalCluster ({layout})", probe_c, data_gb, flops)
        cluster_row["fit_wall_s"] = total
        cluster_row["note"] = "CPU ratio not meaningful: the work runs in the worker processes"
        cluster_row["cluster_read_s"] = probe_c.client_read.summary()
        cluster_row["ratio_to_cluster_read_floor"] = probe_c.iterations.median / (
            probe_c.client_read.median + probe_c.gemm.median
        )
        rows_out.append(cluster_row)
        _print_row(cluster_row)

    if hasattr(floor, "close"):
        floor.close()
    return {
        "kind": kind,
        "path": str(path),
        "shape": [rows, cols],
        "nnz": nnz,
        "density": nnz / (rows * cols),
        "dtype": str(matrix.dtype),
        "data_gb": data_gb,
        "k": k,
        "flops_per_iteration": flops,
        "codec": common.BENCH_CODEC,
        "chunk_rows": args.chunk_rows if kind == "dense" else None,
        "n_panels": panels.n_panels,
        "panel_rows": max(panels.row_chunks),
        "solver": args.solver,
        "warmup": args.warmup,
        "iters": args.iters,
        "target_ratio": TARGET_RATIO,
        "rows": rows_out,
    }


def _print_row(row):
    it, read, gemm = row["iteration_s"], row["floor_read_s"], row["floor_gemm_s"]
    verdict = "meets" if row["meets_target"] else "MISSES"
    _log(
        f"  == {row['scheduler']}: iteration {it['median']:.3f}s (best {it['best']:.3f}s) | floor "
        f"{row['floor_s']:.3f}s = read {read['median']:.3f}s ({row['floor_read_gb_per_s']:.2f} GB/s) + "
        f"GEMMs {gemm['median']:.3f}s ({row['floor_gemm_gflop_per_s']:.1f} GFLOP/s)"
    )
    cpu = "" if "note" in row else f", CPU-time ratio {row['ratio_cpu']:.3f}"
    if "cluster_read_s" in row:
        cpu = (
            f", the same read on this cluster takes {row['cluster_read_s']['median']:.3f}s: "
            f"ratio to that floor {row['ratio_to_cluster_read_floor']:.3f}"
        )
    _log(
        f"  == ratio {row['ratio']:.3f} ({verdict} target <= {TARGET_RATIO}; best-of {row['ratio_best']:.3f}, "
        f"paired median {row['ratio_paired_median']:.3f}{cpu}) | {row['v_gb_per_s']:.2f} GB/s of V, "
        f"{row['gflop_per_s']:.1f} GFLOP/s"
    )


def _table(sections):
    table = []
    for section in sections:
        for row in section["rows"]:
            table.append(
                {
                    "matrix": f"{section['kind']} {section['shape'][0]}x{section['shape'][1]} ({section['data_gb']:.2f} GB)",
                    "scheduler": row["scheduler"],
                    "iteration (s)": f"{row['iteration_s']['median']:.3f}",
                    "read (s)": f"{row['floor_read_s']['median']:.3f}",
                    "GEMMs (s)": f"{row['floor_gemm_s']['median']:.3f}",
                    "floor (s)": f"{row['floor_s']:.3f}",
                    "ratio": f"{row['ratio']:.3f}",
                    "target": f"<= {TARGET_RATIO}",
                    "best-of ratio": f"{row['ratio_best']:.3f}",
                    "GB/s of V": f"{row['v_gb_per_s']:.2f}",
                    "GFLOP/s": f"{row['gflop_per_s']:.1f}",
                    "CPU-time ratio": "" if "note" in row else f"{row['ratio_cpu']:.3f}",
                    "ratio to this cluster's read": (
                        f"{row['ratio_to_cluster_read_floor']:.3f} (read {row['cluster_read_s']['median']:.3f} s)"
                        if "cluster_read_s" in row
                        else ""
                    ),
                }
            )
    return table


def main(argv=None):
    args = parse_args(argv)
    # init="random" ships W inside the first graph; harmless here, noisy in the output
    warnings.filterwarnings("ignore", message="Sending large graph")
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(sys.argv[1:] if argv is None else argv)])
    kinds = ("dense", "sparse") if args.kind == "both" else (args.kind,)
    load_start = os.getloadavg()
    _log(f"load average {load_start[0]:.2f} (1 min) on {os.cpu_count()} cores: other tenants make wall times noisy")
    started = time.perf_counter()
    sections = [bench(kind, args) for kind in kinds]
    report = Path(args.report) if args.report else Path(args.workdir) / f"report-floor-{args.kind}.json"
    payload = {
        "benchmark": "floor ratio",
        "command": command,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "wall_s": time.perf_counter() - started,
        "load_average_1min": {"start": load_start[0], "end": os.getloadavg()[0]},
        "machine": common.machine_info(),
        "sections": sections,
    }
    notes = [
        f"load average (1 min) {payload['load_average_1min']['start']:.2f} at the start, "
        f"{payload['load_average_1min']['end']:.2f} at the end, on {os.cpu_count()} cores.",
        "ratio = median per-iteration wall time / (median read time + median GEMM time); floor measured "
        "after each timed iteration, in the same process, on the same store.",
        "read: dask.array.from_zarr(path).sum() on the threaded scheduler (CSR: the three arrays); GEMMs: "
        "V Hᵀ and Wᵀ V, the faster of all BLAS threads per product and one single-threaded worker per core "
        "(CSR: the two sparse-dense products, the faster of one thread and one process per core; SciPy's "
        "sparse products hold the GIL).",
        "CPU-time ratio: the same ratio in CPU seconds of this process (steadier than wall time when other "
        "tenants load the machine); threaded scheduler only.",
    ]
    json_path, md_path = common.write_report(
        report, payload, title="dnmf floor-ratio benchmark", table_rows=_table(sections), notes=notes
    )
    _log(f"report: {json_path} and {md_path} ({payload['wall_s']:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
