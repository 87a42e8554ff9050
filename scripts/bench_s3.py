"""Object-storage benchmark: dnmf reading V from an S3 server against the same V on disk.

Starts a moto S3 server on loopback (as the tests do), writes a sparse tf-idf-like
matrix once as a Zarr CSR group on local disk (``dnmf.io.generate``), uploads the same
files to a bucket, and measures, in one run on one embedded ``LocalCluster`` (defaults):

* **the store library**: a whole read of the group's ``data`` and ``indices`` arrays
  through Zarr's ``FsspecStore`` over ``s3fs`` (what dnmf uses) and through Zarr's
  ``ObjectStore`` over ``obstore`` (if installed), each the median of three runs;
* **the floor**: a plain parallel read of every row panel of V from the server (the
  same panel reads dnmf's tasks do, nothing computed), and the same from disk;
* **dnmf with defaults** (``n_components`` only; ``tol=0`` so that every run makes
  ``--iters`` passes) from the ``s3://`` URL and from the local path: the median
  seconds per iteration, as timed by the driver.

It prints the ratios: iteration from S3 / iteration from disk, and iteration from S3 /
the S3 read floor (the target: at most 1.15x), and what the cores did meanwhile: the CPU
seconds of the S3 server and of the workers in a floor pass and in an iteration, and
the share of the machine's cores they kept busy (on this 2-core machine the server shares
the cores with the workers, so reads and products cannot overlap).

Usage::

    python scripts/bench_s3.py --workdir /tmp/dnmf-bench-s3
    python scripts/bench_s3.py --workdir /tmp/dnmf-bench-s3 --rows 400000 --iters 8
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import zarr

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT.parent / "tests"))
from _bench_common import machine_info  # noqa: E402
from s3_server import CREDENTIALS, start_server  # noqa: E402


def _median_time(function, runs=3):
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


class CpuMeter:
    """CPU seconds (user + system) used by processes ``pids`` (each alone: the workers and
    the server are the driver's children) while the block runs, summed per name:
    ``meter.seconds["server"]``."""

    def __init__(self, **pids):
        import psutil

        self.processes = {name: [psutil.Process(pid) for pid in ids] for name, ids in pids.items()}
        self.seconds = {}

    def now(self):
        """``{name: CPU seconds so far}``."""
        total = {}
        for name, processes in self.processes.items():
            total[name] = sum(sum(p.cpu_times()[:2]) for p in processes)
        return total

    def __enter__(self):
        self._start = self.now()
        return self

    def __exit__(self, *exc):
        end = self.now()
        self.seconds = {name: end[name] - self._start[name] for name in end}


def store_libraries(bucket, key, endpoint, nbytes):
    """``{library: MB/s}`` of a whole read of ``data`` and ``indices`` of the CSR group."""
    from zarr.storage import FsspecStore

    stores = {"FsspecStore + s3fs": FsspecStore.from_url(f"s3://{bucket}/{key}", read_only=True)}
    try:
        from obstore.store import S3Store
        from zarr.storage import ObjectStore

        s3 = S3Store(
            bucket,
            prefix=key,
            endpoint=endpoint,
            access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region="us-east-1",
            client_options={"allow_http": True},
        )
        stores["ObjectStore + obstore"] = ObjectStore(s3, read_only=True)
    except ImportError:
        print("obstore is not installed: only FsspecStore measured (pip install obstore)")
    speeds = {}
    for name, store in stores.items():
        group = zarr.open_group(store, mode="r")
        seconds = _median_time(lambda group=group: (group["data"][...], group["indices"][...]))
        speeds[name] = nbytes / seconds / 1e6
    return speeds


def _nnz(read):
    return read().nnz


def read_floor(client, panels, meter):
    """Seconds of one parallel read of every panel (the median of three passes), the
    three metered by ``meter`` (a function returning a CpuMeter)."""
    reads = panels.blocks()

    def one_pass():
        client.gather(client.map(_nnz, reads, pure=False))

    one_pass()  # warm the workers' filesystems
    with meter() as cpu:
        seconds = _median_time(one_pass)
    return seconds, {name: value / 3 for name, value in cpu.seconds.items()}


def fit_seconds(client, source, rank, iters, seed, meter):
    """Median seconds per iteration of a default fit of ``source`` (the first not
    counted), and the CPU seconds of the timed iterations, per iteration."""
    from dnmf import api

    seconds, snapshots, cpu = [], [], meter()

    def record(info):
        seconds.append(info.seconds)
        snapshots.append(cpu.now())

    api.run(
        source,
        {"n_components": rank, "max_iter": iters, "tol": 0.0, "random_state": seed, "client": client},
        callback=record,
    )
    used = {name: (snapshots[-1][name] - snapshots[0][name]) / max(1, len(snapshots) - 1) for name in snapshots[0]}
    return statistics.median(seconds[1:] or seconds), used


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--columns", type=int, default=20_000)
    parser.add_argument("--density", type=float, default=0.004)
    parser.add_argument("--rank", type=int, default=20)
    parser.add_argument("--iters", type=int, default=6, help="Outer iterations per fit (the first is not counted).")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    process, endpoint = start_server()
    os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL": endpoint})
    try:
        import s3fs

        from dnmf.engine.scheduler import local_cluster
        from dnmf.io.generate import generate
        from dnmf.io.storage import as_panels, open_matrix

        args.workdir.mkdir(parents=True, exist_ok=True)
        local = args.workdir / f"tfidf-{args.rows}x{args.columns}-{args.density:g}.zarr"
        if not local.exists():
            print(f"writing {local} ...")
            generate(local, (args.rows, args.columns), 20, density=args.density, seed=args.seed)
        fs = s3fs.S3FileSystem()
        fs.mkdir("bench")
        started = time.perf_counter()
        fs.put(str(local), "bench/v.zarr", recursive=True)
        url = "s3://bench/v.zarr"
        matrix = open_matrix(local)
        nbytes = matrix.nnz * (matrix.dtype.itemsize + matrix.indices.dtype.itemsize)
        print(f"uploaded {nbytes / 2**20:.0f} MiB of data + indices to {url} in {time.perf_counter() - started:.1f} s")

        speeds = store_libraries("bench", "v.zarr", endpoint, nbytes)
        with local_cluster(silence_logs=logging.CRITICAL) as client:
            workers = list(client.run(os.getpid).values())
            meter = lambda: CpuMeter(server=[process.pid], workers=workers, driver=[os.getpid()])  # noqa: E731
            sources = (("s3", url), ("disk", str(local)))
            floors, floor_cpu = zip(*(read_floor(client, as_panels(source), meter) for _, source in sources))
            iterations, fit_cpu = zip(
                *(fit_seconds(client, source, args.rank, args.iters, args.seed, meter) for _, source in sources)
            )
            floors, iterations = dict(zip(("s3", "disk"), floors)), dict(zip(("s3", "disk"), iterations))
        cores = os.cpu_count()

        def busy(cpu, wall):
            return (
                f"server {cpu['server']:.2f} s, workers {cpu['workers']:.2f} s, driver {cpu['driver']:.2f} s: "
                f"{sum(cpu.values()) / (wall * cores):.0%} of {cores} cores"
            )

        rows = [
            ("matrix", f"{matrix.shape[0]} x {matrix.shape[1]} CSR, nnz {matrix.nnz}, {nbytes / 2**20:.0f} MiB"),
            ("machine", machine_info()),
            *((f"whole read, {name}", f"{speed:.0f} MB/s") for name, speed in speeds.items()),
            ("floor: parallel read of V, S3", f"{floors['s3']:.3f} s"),
            ("floor: parallel read of V, disk", f"{floors['disk']:.3f} s"),
            ("dnmf iteration (defaults), S3", f"{iterations['s3']:.3f} s"),
            ("dnmf iteration (defaults), disk", f"{iterations['disk']:.3f} s"),
            ("ratio: iteration S3 / iteration disk", f"{iterations['s3'] / iterations['disk']:.2f}x"),
            ("ratio: iteration S3 / S3 read floor", f"{iterations['s3'] / floors['s3']:.2f}x (target <= 1.15x)"),
            ("ratio: S3 read floor / disk read floor", f"{floors['s3'] / floors['disk']:.2f}x"),
            ("CPU per S3 floor pass", busy(floor_cpu[0], floors["s3"])),
            ("CPU per S3 iteration", busy(fit_cpu[0], iterations["s3"])),
            ("CPU per disk iteration", busy(fit_cpu[1], iterations["disk"])),
        ]
        width = max(len(name) for name, _ in rows)
        for name, value in rows:
            print(f"{name:<{width}}  {value}")
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    main()
