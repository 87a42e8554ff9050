"""Web-scale benchmark: user-item graphs of Flickr's and Delicious's shapes, fitted with defaults.

    python scripts/bench_webscale.py --workdir /tmp/dnmf-web                 # flickr, then delicious
    python scripts/bench_webscale.py --workdir /tmp/dnmf-web --graphs flickr --max-iter 30
    python scripts/bench_webscale.py --workdir /tmp/dnmf-web --graphs flickr --in-memory-scale 0 --power-iterations 7

For each graph (``dnmf generate --like NAME``: its shape, entries and rank; written once
under ``--workdir`` and reused, the generation's time and size kept beside it):

* a fit with nothing but ``n_components`` (the rank of the published experiment) and
  ``random_state`` (``--seed``, 0 by default: the init's random start), from
  the stored CSR group, on the embedded LocalCluster that ``dnmf fit`` starts: time to
  the first iteration (statistics pass and the default NNDSVDA init), each iteration's
  time, the iterations to the default stopping rule (or ``--max-iter``), the final
  relative error, and the peak resident memory of the driver, of the largest worker and
  of all of them together (sampled every 0.2 s);
* this machine's floor for one iteration, measured in the same run after the fit: one
  parallel read of the CSR group plus the iteration's two sparse-dense products on
  in-memory panels with all cores (:class:`_bench_common.CSRFloor`); the ratio is the
  median iteration over the floor (target 1.15);
* the per-iteration times of PLANC / MPI-FAUN on the real graphs at these shapes, as
  published by Kaya, Kannan and Ballard, "Partitioning and Communication Strategies
  for Sparse Non-negative Matrix Factorization", ICPP 2018 (Inria research report
  RR-9198): Flickr at k = 16, 291.8 s for 30 iterations on 16 cores and 4.1 s on 3,072;
  Delicious at k = 48, 842 s on 16 cores. These are quoted, not re-run here, and were
  measured on the real graphs, not on these synthetic ones of the same shape.

``--in-memory-scale F`` (default 0.1) adds the out-of-core cost: a Flickr-like graph with
F times the rows, columns and entries, fitted with defaults (Python API, threaded
scheduler) once from its Zarr store and once from a SciPy CSR matrix in memory; both
fits must give the same factors, and the ratio of their times is printed (target 1.3).

Run it alone: it measures wall time on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench_common as common  # noqa: E402

#: Target: per-iteration time / floor.
TARGET_RATIO = 1.15
#: Target: out-of-core fit time / in-memory fit time.
TARGET_IN_MEMORY = 1.3
#: PLANC's published figures: (iterations, seconds on 16 cores, seconds on 3,072 cores or None).
PLANC = {"flickr": (30, 291.8, 4.1), "delicious": (30, 842.0, None)}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workdir", type=Path, required=True, help="Where the graphs are written (and reused).")
    parser.add_argument("--graphs", nargs="+", default=["flickr", "delicious"], choices=sorted(PLANC))
    parser.add_argument("--max-iter", type=int, default=None, help="Cut the fits here (default: dnmf's own, 200).")
    parser.add_argument("--seed", type=int, default=0, help="random_state of the fits (the init's random start).")
    parser.add_argument("--floor-repeats", type=int, default=3)
    parser.add_argument("--in-memory-scale", type=float, default=0.1, help="0 skips the in-memory comparison.")
    parser.add_argument("--report", type=Path, default=None)
    parser.add_argument(
        "--power-iterations",
        type=int,
        default=None,
        help="Power iterations of the NNDSVD init's SVD instead of the default's (to compare inits by time to solution).",
    )
    return parser.parse_args(argv)


def set_power_iterations(count):
    """Make every randomized SVD of this process (the driver's) run ``count`` power iterations."""
    from dnmf.numerics import randomized_svd

    randomized_svd.power_iterations = lambda n_components, shape, entries=None: count


def _log(message):
    print(message, flush=True)


def make_graph(workdir, name, scale=1.0):
    """The graph ``name`` (scaled), generated once; ``(path, info)``, info with the
    generation's seconds and bytes on disk."""
    from dnmf.io.generate import SHAPES, generate

    (m, n), nnz, rank = SHAPES[name]
    shape = (max(1, int(m * scale)), max(1, int(n * scale)))
    nnz = max(1, int(nnz * scale))
    path = workdir / (f"{name}.zarr" if scale == 1.0 else f"{name}-x{scale:g}.zarr")
    sidecar = path.with_suffix(".json")
    if path.exists() and sidecar.exists():
        return path, json.loads(sidecar.read_text())
    _log(f"generating {path} ({shape[0]:,} x {shape[1]:,}, {nnz:,} draws, rank {rank})")
    started = time.perf_counter()
    info = generate(path, shape, rank, nnz=nnz, overwrite=True)
    info["seconds"] = time.perf_counter() - started
    info["bytes_on_disk"] = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    sidecar.write_text(json.dumps(info, default=float))
    _log(f"  {info['seconds']:.0f} s, {info['nnz']:,} entries, {info['bytes_on_disk'] / 2**20:.0f} MiB on disk")
    return path, info


class Clock:
    """The fit's progress callback: when each iteration ended, and how long it took."""

    def __init__(self):
        self.started = time.perf_counter()
        self.first = None
        self.seconds = []

    def __call__(self, info):
        if self.first is None:
            self.first = time.perf_counter() - self.started
        self.seconds.append(info.seconds)
        if info.iteration % 10 == 0 or info.iteration == 1:
            _log(f"    iteration {info.iteration}: {info.seconds:.2f} s, relative change {info.relative_change:.2e}")


def fit_stored(path, rank, max_iter, seed):
    """A fit with defaults and ``random_state=seed`` on the LocalCluster ``dnmf fit`` starts."""
    import logging

    from dnmf import api
    from dnmf.engine.scheduler import local_cluster

    params = {"n_components": rank, "random_state": seed}
    if max_iter:
        params["max_iter"] = max_iter
    with common.PeakMemory() as memory, local_cluster(silence_logs=logging.CRITICAL) as client:
        clock = Clock()
        result = api.run(str(path), {**params, "client": client}, callback=clock)
        total = time.perf_counter() - clock.started
    return result, clock, total, {name: getattr(memory, name) / 2**30 for name in ("driver", "worker", "peak")}


def floor_of(path, matrix, rank, repeats):
    from dnmf.io.storage import as_panels

    panels = as_panels(str(path))
    floor = common.CSRFloor(path, matrix, rank, panel_nnz=matrix.nnz / panels.n_panels)
    try:
        reads = common.Timings(floor.read()[0] for _ in range(repeats))
        products = common.Timings(floor.gemm()[0] for _ in range(repeats))
    finally:
        floor.close()
    return reads.median, products.median, panels.n_panels


def bench_graph(workdir, name, args):
    from dnmf.io.storage import open_matrix

    path, made = make_graph(workdir, name)
    matrix = open_matrix(str(path))
    rank = made["rank"]
    _log(f"{name}: fit with n_components={rank} (defaults otherwise)")
    result, clock, total, memory = fit_stored(path, rank, args.max_iter, args.seed)
    iteration = float(np.median(clock.seconds[1:] or clock.seconds))
    _log(f"  {result.n_iter} iterations, median {iteration:.2f} s; first iteration after {clock.first:.0f} s")
    read, products, n_panels = floor_of(path, matrix, rank, args.floor_repeats)
    floor = read + products
    planc_iterations, planc_16, planc_3072 = PLANC[name]
    row = {
        "graph": name,
        "shape": f"{matrix.shape[0]:,} x {matrix.shape[1]:,}",
        "nnz": matrix.nnz,
        "k": rank,
        "generate_s": made["seconds"],
        "on_disk_mib": made["bytes_on_disk"] / 2**20,
        "panels": n_panels,
        "to_first_iteration_s": clock.first,
        "iteration_s": iteration,
        "floor_read_s": read,
        "floor_products_s": products,
        "floor_s": floor,
        "ratio": iteration / floor,
        "planc_16_cores_s": planc_16 / planc_iterations,
        "planc_3072_cores_s": None if planc_3072 is None else planc_3072 / planc_iterations,
        "n_iter": int(result.n_iter),
        "converged": bool(result.converged),
        "fit_s": total,
        "relative_err": float(result.reconstruction_err / result.norm_V),
        "peak_driver_gib": memory["driver"],
        "peak_worker_gib": memory["worker"],
        "peak_total_gib": memory["peak"],
        "dense_v_gib": matrix.shape[0] * matrix.shape[1] * 4 / 2**30,
        "iteration_all_s": clock.seconds,
    }
    _log(
        "  "
        + ", ".join(
            f"{key} {value:.3g}" if isinstance(value, float) else f"{key} {value}"
            for key, value in row.items()
            if key != "iteration_all_s"
        )
    )
    return row


def in_memory_comparison(workdir, scale):
    """A scaled Flickr-like graph fitted from Zarr and from memory, defaults, threads.

    Both fits get ``random_state=0``: with the default None each randomized SVD starts
    from its own random basis, and the factors could not be compared bit for bit."""
    from dnmf import api
    from dnmf.io.storage import open_matrix

    path, made = make_graph(workdir, "flickr", scale)
    rank = made["rank"]
    stored = open_matrix(str(path))
    X = stored.read_rows(0, stored.shape[0])
    runs = {}
    for source_name, source in (("in_memory", X), ("zarr", str(path)), ("in_memory_again", X)):
        clock = Clock()
        result = api.run(source, {"n_components": rank, "random_state": 0}, callback=clock, as_numpy=True)
        runs[source_name] = (time.perf_counter() - clock.started, result)
        _log(f"  {source_name}: {runs[source_name][0]:.1f} s, {result.n_iter} iterations")
    memory_s = min(runs["in_memory"][0], runs["in_memory_again"][0])
    same = all(
        np.array_equal(np.asarray(getattr(runs["zarr"][1], f)), np.asarray(getattr(runs["in_memory"][1], f)))
        for f in ("W", "H")
    )
    return {
        "shape": f"{X.shape[0]:,} x {X.shape[1]:,}",
        "nnz": int(X.nnz),
        "k": rank,
        "n_iter": int(runs["zarr"][1].n_iter),
        "zarr_s": runs["zarr"][0],
        "in_memory_s": memory_s,
        "ratio": runs["zarr"][0] / memory_s,
        "same_factors": same,
    }


def main(argv=None):
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.power_iterations is not None:
        set_power_iterations(args.power_iterations)
    rows = [bench_graph(args.workdir, name, args) for name in args.graphs]
    comparison = in_memory_comparison(args.workdir, args.in_memory_scale) if args.in_memory_scale else None
    print()
    print(
        "| graph | shape, nnz, k | generate | to 1st iteration | iteration | floor (read + products) "
        f"| ratio (target {TARGET_RATIO}) "
        "| PLANC 16 cores | PLANC 3,072 cores | iterations | rel. error | peak driver / worker / all |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        planc_3072 = "—" if r["planc_3072_cores_s"] is None else f"{r['planc_3072_cores_s']:.3f} s"
        stop = "converged" if r["converged"] else "cut"
        print(
            f"| {r['graph']} | {r['shape']}, {r['nnz']:,}, {r['k']} | {r['generate_s']:.0f} s, "
            f"{r['on_disk_mib']:.0f} MiB | {r['to_first_iteration_s']:.0f} s | {r['iteration_s']:.2f} s | "
            f"{r['floor_s']:.2f} s ({r['floor_read_s']:.2f} + {r['floor_products_s']:.2f}) | {r['ratio']:.2f} | "
            f"{r['planc_16_cores_s']:.2f} s | {planc_3072} | {r['n_iter']} ({stop}) | {r['relative_err']:.4f} | "
            f"{r['peak_driver_gib']:.1f} / {r['peak_worker_gib']:.1f} / {r['peak_total_gib']:.1f} GiB |"
        )
    if comparison:
        c = comparison
        print(
            f"\nout of core / in memory ({c['shape']}, {c['nnz']:,} entries, k {c['k']}, {c['n_iter']} iterations): "
            f"{c['zarr_s']:.1f} s / {c['in_memory_s']:.1f} s = {c['ratio']:.2f} (target {TARGET_IN_MEMORY}); "
            f"same factors: {c['same_factors']}"
        )
    payload = {
        "command": " ".join(shlex.quote(a) for a in sys.argv),
        "date": time.strftime("%Y-%m-%d"),
        "machine": common.machine_info(),
        "graphs": rows,
        "in_memory": comparison,
    }
    report = args.report or args.workdir / "report-webscale.json"
    common.write_report(
        report,
        payload,
        title="Web-scale graphs, defaults",
        table_rows=[{k: v for k, v in r.items() if k != "iteration_all_s"} for r in rows],
    )
    print(f"\nreport: {report}")


if __name__ == "__main__":
    main()
