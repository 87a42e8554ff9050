"""Shared pieces of the benchmarks in ``scripts/``: test matrices, timers, floors, reports.

Not part of the package: the benchmarks import this module from their own directory.

Test matrices are written chunk by chunk (never whole in memory) with a fast codec
(Blosc LZ4 + byte shuffle) and tagged in their attributes with what made them, so a
rerun with the same shape and seed reuses the file instead of writing it again.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle

__all__ = [
    "BENCH_CODEC",
    "Timings",
    "blas_threads",
    "CSRFloor",
    "DenseFloor",
    "machine_info",
    "make_csr_zarr",
    "make_dense_zarr",
    "write_report",
]

#: Codec of every matrix the benchmarks write (measured here: ~1.6x zstd's read speed).
BENCH_CODEC = {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"}
#: Rank and noise level of the generated dense matrices: V = W H + NOISE * U(0, 1).
GEN_RANK = 20
GEN_NOISE = 0.5
#: Rows generated (and written) per task when making a matrix.
GEN_BLOCK_ROWS = 8192
#: Entries per chunk of the 1-D arrays of a CSR group.
CSR_CHUNK_ENTRIES = 2**22


def _codec():
    return BloscCodec(
        cname=BENCH_CODEC["cname"], clevel=BENCH_CODEC["clevel"], shuffle=BloscShuffle[BENCH_CODEC["shuffle"]]
    )


def _n_threads():
    return os.cpu_count() or 1


# ------------------------------------------------------------------------ test matrices


def _recipe_matches(path, recipe):
    """Whether ``path`` holds a complete matrix made from ``recipe``."""
    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception:  # not there, or not Zarr
        return False
    return dict(node.attrs.get("bench_recipe", {})) == recipe and node.attrs.get("bench_complete", False)


def _fresh(path):
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _dense_factors(n, rank, seed):
    """The H of the generator (small, shared by every block)."""
    return np.random.default_rng([seed, 0]).random((rank, n), dtype=np.float32)


def _dense_block(seed, block, rows, H, noise):
    rng = np.random.default_rng([seed, 1, block])
    W = rng.random((rows, H.shape[0]), dtype=np.float32)
    V = W @ H
    V += noise * rng.random(V.shape, dtype=np.float32)
    return V


def make_dense_zarr(path, rows, cols, *, chunk_rows, seed=0, rank=GEN_RANK, noise=GEN_NOISE, log=print):
    """A dense float32 non-negative matrix ``W H + noise`` in Zarr (reused if it exists).

    Generated ``GEN_BLOCK_ROWS`` rows at a time in parallel, each block from its own
    seeded stream, so the values do not depend on the order of writing.

    Returns
    -------
    zarr.Array (read-only), bool
        The matrix, and whether it was written by this call.
    """
    recipe = {
        "kind": "dense",
        "rows": rows,
        "cols": cols,
        "chunk_rows": chunk_rows,
        "seed": seed,
        "rank": rank,
        "noise": noise,
        "dtype": "float32",
        "codec": BENCH_CODEC,
    }
    if _recipe_matches(path, recipe):
        return zarr.open_array(store=str(path), mode="r"), False
    path = _fresh(path)
    log(f"writing dense matrix {rows} x {cols} float32 ({rows * cols * 4 / 1e9:.2f} GB) to {path}")
    started = time.perf_counter()
    array = zarr.create_array(
        store=str(path), shape=(rows, cols), chunks=(chunk_rows, cols), dtype="float32", compressors=_codec()
    )
    H = _dense_factors(cols, rank, seed)
    block_rows = max(chunk_rows, GEN_BLOCK_ROWS // chunk_rows * chunk_rows)  # whole chunks per block

    def write(block):
        start = block * block_rows
        stop = min(rows, start + block_rows)
        array[start:stop] = _dense_block(seed, block, stop - start, H, noise)

    n_blocks = -(-rows // block_rows)
    with ThreadPoolExecutor(_n_threads()) as pool:
        list(pool.map(write, range(n_blocks)))
    array.attrs.update({"bench_recipe": recipe, "bench_complete": True})
    log(f"  written in {time.perf_counter() - started:.1f}s")
    return zarr.open_array(store=str(path), mode="r"), True


def _csr_block(seed, block, rows, cols, density):
    """Rows of a random CSR matrix: about ``density * cols`` distinct sorted columns per
    row (drawn with replacement, repeats dropped), values in (0, 1]."""
    rng = np.random.default_rng([seed, 2, block])
    counts = rng.binomial(cols, density, size=rows)
    row_of = np.repeat(np.arange(rows, dtype=np.int64), counts)
    columns = rng.integers(0, cols, size=row_of.size, dtype=np.int64)
    keys = np.sort(row_of * cols + columns)  # by row, then column
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]  # repeats gone (np.unique is far slower here)
    row_of, columns = keys // cols, keys % cols
    indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(row_of, minlength=rows), out=indptr[1:])
    data = (1.0 - rng.random(keys.size, dtype=np.float32)).astype(np.float32)
    return indptr, columns.astype(np.int32), data


def make_csr_zarr(path, rows, cols, density, *, seed=0, log=print):
    """A random CSR matrix in the dnmf CSR-group layout (reused if it exists).

    Generated block by block; only the block being written is in memory.

    Returns
    -------
    dnmf.io.storage.CSRMatrix, bool
    """
    from dnmf.io.storage import CSR_FORMAT, open_matrix

    recipe = {
        "kind": "csr",
        "rows": rows,
        "cols": cols,
        "density": density,
        "seed": seed,
        "dtype": "float32",
        "codec": BENCH_CODEC,
        "chunk_entries": CSR_CHUNK_ENTRIES,
    }
    if _recipe_matches(path, recipe):
        return open_matrix(path), False
    path = _fresh(path)
    expected = rows * cols * density
    log(f"writing CSR matrix {rows} x {cols} at density {density} (~{expected / 1e6:.0f}M entries) to {path}")
    started = time.perf_counter()
    group = zarr.open_group(str(path), mode="w")
    block_rows = max(1, int(CSR_CHUNK_ENTRIES / max(1.0, cols * density)))
    n_blocks = -(-rows // block_rows)
    with ThreadPoolExecutor(_n_threads()) as pool:
        blocks = pool.map(
            lambda b: _csr_block(seed, b, min(rows, (b + 1) * block_rows) - b * block_rows, cols, density),
            range(n_blocks),
        )
        # Appending needs the running offset, so the writes are sequential; the draws are not.
        indptr_parts, nnz = [np.zeros(1, dtype=np.int64)], 0
        indices = data = None
        for indptr, idx, values in blocks:
            if indices is None:
                chunk = (CSR_CHUNK_ENTRIES,)
                indices = group.create_array("indices", shape=(0,), chunks=chunk, dtype="int32", compressors=_codec())
                data = group.create_array("data", shape=(0,), chunks=chunk, dtype="float32", compressors=_codec())
            indices.append(idx)
            data.append(values)
            indptr_parts.append(indptr[1:] + nnz)
            nnz += idx.size
    indptr = np.concatenate(indptr_parts)
    group.create_array("indptr", data=indptr, chunks=(min(indptr.size, CSR_CHUNK_ENTRIES),), compressors=_codec())
    group.attrs.update({"format": CSR_FORMAT, "shape": [rows, cols], "bench_recipe": recipe, "bench_complete": True})
    log(f"  written in {time.perf_counter() - started:.1f}s ({nnz / 1e6:.1f}M entries)")
    return open_matrix(path), True


# ----------------------------------------------------------------------------- timing


class Timings(list):
    """Repeated wall times of one measurement (seconds)."""

    @property
    def median(self):
        return statistics.median(self)

    @property
    def best(self):
        return min(self)

    def summary(self):
        return {"median": self.median, "best": self.best, "all": list(self)}


class PeakMemory:
    """Peak resident memory of this process (the driver), of its largest child process
    (a worker) and of all of them together (``peak``), sampled in a thread; in bytes."""

    def __init__(self, every=0.2):
        self.driver = self.worker = self.peak = 0
        self._every, self._stop = every, threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self):
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            sizes = []
            for process in [me, *me.children(recursive=True)]:
                try:
                    sizes.append(process.memory_info().rss)
                except psutil.Error:  # it ended while being read
                    sizes.append(0)
            self.driver = max(self.driver, sizes[0])
            self.worker = max(self.worker, max(sizes[1:], default=0))
            self.peak = max(self.peak, sum(sizes))
            self._stop.wait(self._every)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@contextmanager
def blas_threads(n):
    """All BLAS pools limited to ``n`` threads for the block (None: leave alone)."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n, user_api="blas"):
        yield


# ------------------------------------------------------------------------------ floors


def _seconds(function):
    """``(wall, cpu)`` seconds of ``function()``; CPU time of all threads of this process."""
    started, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - started, time.process_time() - cpu


class DenseFloor:
    """The floor of one iteration on a dense Zarr matrix, measurable again and again.

    ``read()``: one full read with all cores, ``dask.array.from_zarr(path).sum()`` on
    Dask's threaded scheduler, chunked as stored. ``gemm()``: the iteration's two
    GEMMs ``V Hᵀ`` and ``Wᵀ V`` on NumPy, panel by panel over V's rows (one in-memory
    panel of ``panel_rows`` rows reused, so the memory needed is one panel, not V),
    done two ways: each product with all BLAS threads, and panels shared out over one
    thread per core with one BLAS thread each. ``gemm()`` returns the faster (the
    floor must not be inflated by a threading pathology: on a busy shared machine
    multi-threaded BLAS can be several times slower than the same work one thread
    per core); ``last_gemm`` keeps both. Both return ``(wall, cpu)`` seconds; the first
    call of each is made here.
    """

    def __init__(self, path, k, *, panel_rows, seed=0):
        self.path = str(path)
        array = zarr.open_array(store=self.path, mode="r")
        rows, cols = array.shape
        rng = np.random.default_rng(seed)
        self.n_threads = _n_threads()
        panel_rows = min(panel_rows, rows)
        # one panel for the all-BLAS-threads way, one per thread for the other (rows split evenly)
        self.panel = rng.random((panel_rows, cols), dtype=np.float32).astype(array.dtype, copy=False)
        self.H = rng.random((k, cols), dtype=np.float32).astype(array.dtype, copy=False)
        self.W = rng.random((panel_rows, k), dtype=np.float32).astype(array.dtype, copy=False)
        self.bounds = [(a, min(rows, a + panel_rows)) for a in range(0, rows, panel_rows)]
        small = max(1, panel_rows // self.n_threads)
        self.small_bounds = [(a, min(rows, a + small)) for a in range(0, rows, small)]
        self.small_panels = [self.panel[i * small : (i + 1) * small] for i in range(self.n_threads)]
        self.small_panels = [p if p.shape[0] else self.panel[:small] for p in self.small_panels]
        self.pool = ThreadPoolExecutor(self.n_threads)
        self.last_gemm = {}
        self.read()
        self.gemm()

    def _read(self, scheduler="threads"):
        import dask.array as da

        da.from_zarr(self.path).sum().compute(scheduler=scheduler)

    def read_on(self, client):
        """``(wall, cpu)`` of the same read run on ``client`` (a distributed cluster)."""
        return _seconds(lambda: self._read(client))

    def _gemm_blas_threads(self):
        for a, b in self.bounds:
            V_i = self.panel[: b - a]
            V_i @ self.H.T
            self.W[: b - a].T @ V_i

    def _one_small(self, i):
        a, b = self.small_bounds[i]
        V_i = self.small_panels[i % self.n_threads][: b - a]
        V_i @ self.H.T
        self.W[: b - a].T @ V_i

    def _gemm_thread_per_core(self):
        with blas_threads(1):
            list(self.pool.map(self._one_small, range(len(self.small_bounds))))

    def read(self):
        return _seconds(self._read)

    def gemm(self):
        self.last_gemm = {
            "all_blas_threads": _seconds(self._gemm_blas_threads),
            "thread_per_core": _seconds(self._gemm_thread_per_core),
        }
        return min(self.last_gemm.values())  # the faster way, by wall time


# State of a worker process of CSRFloor's process pool (set by _csr_worker_init).
_CSR_WORKER = {}


def _csr_products(panels, Ws, H, indices):
    for i in indices:
        V_i, W_i = panels[i % len(panels)], Ws[i % len(panels)]
        _ = V_i @ H.T
        _ = np.asarray(V_i.T @ W_i).T  # Wᵀ V as SciPy computes it fastest


def _csr_worker_init(path, bounds, k, seed):
    """Load this worker's panels once (spawned process of :class:`CSRFloor`)."""
    from threadpoolctl import threadpool_limits

    from dnmf.io.storage import open_matrix

    threadpool_limits(1)
    matrix = open_matrix(path)
    rng = np.random.default_rng(seed)
    _CSR_WORKER["H"] = rng.random((k, matrix.shape[1]), dtype=np.float32).astype(matrix.dtype, copy=False)
    _CSR_WORKER["panels"] = [matrix.read_rows(a, b) for a, b in bounds]
    _CSR_WORKER["Ws"] = [rng.random((b - a, k), dtype=np.float32).astype(matrix.dtype, copy=False) for a, b in bounds]


def _csr_worker_run(indices):
    """This worker's share of one pass; returns its CPU seconds."""
    cpu = time.process_time()
    _csr_products(_CSR_WORKER["panels"], _CSR_WORKER["Ws"], _CSR_WORKER["H"], indices)
    return time.process_time() - cpu


class CSRFloor:
    """The floor of one iteration on a CSR group, as :class:`DenseFloor`.

    ``read()``: one full read of ``indptr``, ``indices`` and ``data`` with all cores.
    ``gemm()``: the two sparse-dense products ``V Hᵀ`` and ``Wᵀ V`` (as SciPy computes
    it fastest, ``(Vᵀ W)ᵀ``) over in-memory CSR panels of about ``panel_nnz`` entries,
    with all cores, done two ways: panels shared out over one thread per core, and over
    one process per core. SciPy's sparse products hold the GIL, so threads get about one
    core's worth; processes get all of them. ``gemm()`` returns the faster way
    (``last_gemm`` keeps both). Only ``2`` panels per thread or process are loaded; the
    pass reuses them for the rest of V's rows. Both return ``(wall, cpu)`` seconds (the
    process way's CPU is its workers').
    """

    def __init__(self, path, matrix, k, *, panel_nnz, seed=0):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.path = str(path)
        rows, cols = matrix.shape
        rng = np.random.default_rng(seed)
        self.H = rng.random((k, cols), dtype=np.float32).astype(matrix.dtype, copy=False)
        per_row = max(1.0, matrix.nnz / rows)
        panel_rows = max(1, int(panel_nnz / per_row))
        self.n_panels = -(-rows // panel_rows)
        self.n_threads = _n_threads()
        bounds = [(a, min(rows, a + panel_rows)) for a in range(0, rows, panel_rows)][: 2 * self.n_threads]
        self.loaded = [matrix.read_rows(a, b) for a, b in bounds]
        self.Ws = [rng.random((p.shape[0], k), dtype=np.float32).astype(matrix.dtype, copy=False) for p in self.loaded]
        self.pool = ThreadPoolExecutor(self.n_threads)
        self.processes = [
            ProcessPoolExecutor(
                1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_csr_worker_init,
                initargs=(self.path, bounds[2 * w : 2 * w + 2] or bounds[:2], k, seed + 1 + w),
            )
            for w in range(self.n_threads)
        ]
        self.last_gemm = {}
        self.read()
        self.gemm()

    def close(self):
        """Stop the worker processes."""
        for pool in self.processes:
            pool.shutdown()
        self.pool.shutdown()

    def _read(self, scheduler="threads"):
        import dask
        import dask.array as da

        parts = [da.from_zarr(self.path, component=name).sum() for name in ("indptr", "indices", "data")]
        dask.compute(*parts, scheduler=scheduler)

    def read_on(self, client):
        """``(wall, cpu)`` of the same read run on ``client`` (a distributed cluster)."""
        return _seconds(lambda: self._read(client))

    def read(self):
        return _seconds(self._read)

    def _shares(self):
        return [list(range(w, self.n_panels, self.n_threads)) for w in range(self.n_threads)]

    def _gemm_threads(self):
        with blas_threads(1):
            list(self.pool.map(lambda share: _csr_products(self.loaded, self.Ws, self.H, share), self._shares()))

    def _gemm_processes(self):
        started = time.perf_counter()
        futures = [pool.submit(_csr_worker_run, share) for pool, share in zip(self.processes, self._shares())]
        cpu = sum(f.result() for f in futures)
        return time.perf_counter() - started, cpu

    def gemm(self):
        self.last_gemm = {"thread_per_core": _seconds(self._gemm_threads), "process_per_core": self._gemm_processes()}
        return min(self.last_gemm.values())  # the faster way, by wall time


# ----------------------------------------------------------------------------- reports


def machine_info():
    """What the numbers were measured on."""
    import dask
    import numcodecs
    from threadpoolctl import threadpool_info

    try:
        with open("/proc/meminfo") as f:
            memory = f.readline().split()[1]
        memory_gib = int(memory) / 2**20
    except OSError:
        memory_gib = None
    blas = [
        {key: item.get(key) for key in ("internal_api", "version", "num_threads", "architecture")}
        for item in threadpool_info()
        if item.get("user_api") == "blas"
    ]
    return {
        "cpus": os.cpu_count(),
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "dask": dask.__version__,
        "zarr": zarr.__version__,
        "numcodecs": numcodecs.__version__,
        "blas": blas[:1],
        "platform": platform.platform(),
    }


def _markdown_table(rows):
    if not rows:
        return ""
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(row.get(h, "")) for h in header) + " |")
    return "\n".join(lines)


def write_report(path, payload, *, title, table_rows, notes=()):
    """Write ``payload`` as JSON at ``path`` (``.json``) and a Markdown summary next to it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    json_path = path.with_suffix(".json")
    md_path = path.with_suffix(".md")
    json_path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    parts = [f"# {title}", "", f"Command: `{payload.get('command', '')}`", "", _markdown_table(table_rows), ""]
    parts += [f"- {note}" for note in notes]
    machine = payload.get("machine", {})
    if machine:
        parts += ["", "Machine: " + ", ".join(f"{k}={v}" for k, v in machine.items())]
    md_path.write_text("\n".join(parts) + "\n")
    return json_path, md_path
