"""Projected seconds per iteration of the Flickr- and Delicious-shaped fits on P workers.

The model, per iteration, for P workers of one core each, each holding one panel (a
contiguous run of rows) and owning n / P columns of H (see ``docs/scaling.md``)::

    T(P) = C / P                        the panels' work (products, sweeps, reads) and the H-step, spread
         + ops * F / M                  memory passes over k x n arrays on every worker, whatever P:
                                        the panel's dense partial, the local sum, the join of H, the
                                        pieces sent and received
         + 2 (P - 1) / P * F / B        the reduce-scatter of the partials and the all-gather of H
         + 2 (P - 1) * latency          one message per other worker, each way

with F = k n x 4 bytes (one factor), C the core-seconds of one iteration measured on this
machine (``--flickr-seconds`` / ``--delicious-seconds`` on ``--cores`` cores: the medians of
``scripts/bench_webscale.py``), M this machine's rate of one pass over a k x n float32 array
(measured here: ``a + b`` of two such arrays), and B and latency a stated network (10 Gb/s
and 50 us by default). The traffic term is the measured bound of ``scripts/bench_traffic.py``
(a worker sends ``2 (P - 1) / P`` factors a pass). PLANC's published per-iteration times on
the real graphs (Kaya, Kannan and Ballard, ICPP 2018) are printed beside it.

    python scripts/scaling_model.py [--flickr-seconds 12.05 --delicious-seconds 31.97 --cores 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

#: (rows, columns, k) of the graphs.
SHAPES = {"flickr": (28_000_000, 1_600_000, 16), "delicious": (17_000_000, 2_500_000, 48)}
#: PLANC's published seconds per iteration: {cores: seconds} (30 iterations in 291.8 s on 16 cores and
#: 4.1 s on 3,072 for Flickr, k = 16; 842 s on 16 cores for Delicious, k = 48).
PLANC = {"flickr": {16: 291.8 / 30, 3072: 4.1 / 30}, "delicious": {16: 842.0 / 30}}
#: Passes over a k x n array per worker per iteration (module docstring).
MEMORY_PASSES = 5
WORKERS = (16, 64, 256, 1024)


def memory_pass_seconds(k, n, repeats=5):
    a = np.random.default_rng(0).random((k, n), dtype=np.float32)
    b = a.copy()
    best = np.inf
    for _ in range(repeats):
        started = time.perf_counter()
        np.add(a, b, out=b)
        best = min(best, time.perf_counter() - started)
    return best


def project(core_seconds, k, n, workers, bandwidth, latency, memory_pass):
    factor = k * n * 4
    compute = core_seconds / workers
    memory = MEMORY_PASSES * memory_pass
    network = 2 * (workers - 1) / workers * factor / bandwidth
    messages = 2 * (workers - 1) * latency
    return compute, memory, network, messages


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flickr-seconds", type=float, default=12.05, help="Seconds per iteration measured here.")
    parser.add_argument("--delicious-seconds", type=float, default=31.97, help="Seconds per iteration measured here.")
    parser.add_argument("--cores", type=int, default=2, help="Cores those were measured on.")
    parser.add_argument("--bandwidth", type=float, default=10e9 / 8, help="Bytes per second per worker.")
    parser.add_argument("--latency", type=float, default=50e-6, help="Seconds per message.")
    args = parser.parse_args(argv)
    print(f"network {args.bandwidth * 8 / 1e9:g} Gb/s, {args.latency * 1e6:g} us a message")
    for name, seconds in (("flickr", args.flickr_seconds), ("delicious", args.delicious_seconds)):
        _, n, k = SHAPES[name]
        memory_pass = memory_pass_seconds(k, n)
        core_seconds = seconds * args.cores
        print(
            f"\n{name}: k = {k}, one factor {k * n * 4 / 1e6:.0f} MB, {core_seconds:.1f} core-s an iteration, "
            f"a pass over k x n {memory_pass * 1e3:.0f} ms here"
        )
        print("| workers | compute | k x n memory | network | messages | total | PLANC (quoted, cores) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for p in WORKERS:
            parts = project(core_seconds, k, n, p, args.bandwidth, args.latency, memory_pass)
            planc = PLANC[name].get(p)
            quoted = f"{planc:.2f}" if planc else ""
            print(f"| {p} | " + " | ".join(f"{x:.3f}" for x in parts) + f" | {sum(parts):.2f} | {quoted} |")
        if 3072 in PLANC[name]:
            print(f"PLANC on 3,072 cores: {PLANC[name][3072]:.3f} s")


if __name__ == "__main__":
    main()
