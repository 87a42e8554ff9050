"""Run ``dnmf fit`` inside a Linux memory cgroup with a hard cap, with the defaults.

Creates a child memory cgroup (v2 if /sys/fs/cgroup is a writable cgroup2 hierarchy with
the memory controller, else v1 under /sys/fs/cgroup/memory, nested inside this process's
own cgroup), sets the cap for all its processes (v2: ``memory.max`` and
``memory.swap.max=0``; v1: ``memory.limit_in_bytes`` and, if present,
``memory.memsw.limit_in_bytes`` = the same, so no swap), starts ``dnmf fit`` in it (the
child moves itself in before exec, so every process it starts is inside), samples the
usage while it runs, and reports: exit code, OOM kills, peak usage (v2 ``memory.peak``
/ v1 ``memory.max_usage_in_bytes``, which count page cache, and the peak of sampled
anonymous memory ``rss``/``anon``, which does not), and per-iteration seconds (from
``dnmf fit -v``'s log lines). Needs root.

    python scripts/run_capped.py --workdir /tmp/dnmf-bench [--cap 1GiB] [--rows 1048576 --cols 1024] \
        [-- extra dnmf fit options]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _bench_common import make_dense_zarr, write_report  # noqa: E402

GIB = 2**30
#: How often the cgroup's usage is sampled.
SAMPLE_SECONDS = 0.2
#: What a user types: nothing but the rank, one worker and its memory limit (no --init,
#: no --threads, no environment variables: what the embedded cluster needs under a cap it
#: sets itself).
DEFAULT_FIT_OPTIONS = ["--rank", "10", "--workers", "1", "--memory-limit", "900MiB"]
#: The progress bar's line after each iteration: "i/N, loss L, change C, S s/iter".
ITERATION_LINE = re.compile(r"(\d+)/\d+, loss ([0-9.e+-]+), change [^,]+, ([0-9.]+) s/iter")


def _parse_size(text):
    units = {"k": 2**10, "m": 2**20, "g": 2**30}
    match = re.fullmatch(r"\s*([0-9.]+)\s*([kmg]?)i?b?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"bad size {text!r}")
    return int(float(match.group(1)) * units.get(match.group(2), 1))


class Cgroup:
    """A fresh memory cgroup capped at ``cap`` bytes (removed by :meth:`remove`)."""

    def __init__(self, name, cap):
        self.cap = cap
        unified = Path("/sys/fs/cgroup")
        if (unified / "cgroup.controllers").exists() and "memory" in (unified / "cgroup.controllers").read_text():
            self.version = 2
            self.path = unified / name
            self.path.mkdir()
            (self.path / "memory.max").write_text(str(cap))
            if (self.path / "memory.swap.max").exists():
                (self.path / "memory.swap.max").write_text("0")
        else:
            self.version = 1
            own = next(
                line.split(":", 2)[2].strip()
                for line in Path("/proc/self/cgroup").read_text().splitlines()
                if line.split(":", 2)[1] == "memory"
            )
            self.path = Path("/sys/fs/cgroup/memory") / own.lstrip("/") / name
            self.path.mkdir()
            (self.path / "memory.limit_in_bytes").write_text(str(cap))
            memsw = self.path / "memory.memsw.limit_in_bytes"
            if memsw.exists():
                memsw.write_text(str(cap))
            (self.path / "memory.swappiness").write_text("0")

    def procs_file(self):
        return str(self.path / "cgroup.procs")

    def _read(self, name):
        try:
            return (self.path / name).read_text()
        except OSError:
            return ""

    def stat(self):
        return dict((k, int(v)) for k, v in (line.split() for line in self._read("memory.stat").splitlines()))

    def current(self):
        return int(self._read("memory.current" if self.version == 2 else "memory.usage_in_bytes") or 0)

    def anon(self):
        stat = self.stat()
        return stat.get("anon", 0) if self.version == 2 else stat.get("total_rss", stat.get("rss", 0))

    def peak(self):
        text = self._read("memory.peak" if self.version == 2 else "memory.max_usage_in_bytes")
        return int(text) if text.strip() else None

    def oom_kills(self):
        if self.version == 2:
            events = dict(line.split() for line in self._read("memory.events").splitlines())
            return int(events.get("oom_kill", 0))
        control = dict(line.split() for line in self._read("memory.oom_control").splitlines())
        if "oom_kill" in control:
            return int(control["oom_kill"])
        return None  # old v1 kernels do not count kills; the exit signal tells

    def failcnt(self):
        return int(self._read("memory.failcnt") or 0) if self.version == 1 else None

    def remove(self):
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


def _last_per_iteration(matches):
    """One match per iteration (the bar repeats its last line)."""
    seen = {}
    for m in matches:
        if m:
            seen[int(m.group(1))] = m
    return [seen[i] for i in sorted(seen)]


def run_capped(command, cap, *, name=None, log=print):
    """Run ``command`` in a fresh cgroup capped at ``cap`` bytes; returns a dict of measurements."""
    group = Cgroup(name or f"dnmf-capped-{os.getpid()}", cap)
    procs = group.procs_file()

    def enter():
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    samples = {"current": 0, "anon": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            samples["current"] = max(samples["current"], group.current())
            samples["anon"] = max(samples["anon"], group.anon())
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    log(f"running in cgroup v{group.version} {group.path} (cap {cap / GIB:.2f} GiB): {' '.join(command)}")
    started = time.perf_counter()
    proc = subprocess.Popen(command, preexec_fn=enter, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        log("  | " + lines[-1])
    code = proc.wait()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    result = {
        "command": command,
        "cgroup_version": group.version,
        "cap_bytes": cap,
        "exit_code": code,
        "wall_seconds": wall,
        "oom_kills": group.oom_kills(),
        "failcnt": group.failcnt(),
        "peak_bytes": group.peak(),
        "peak_sampled_bytes": samples["current"],
        "peak_anon_bytes": samples["anon"],
        "iterations": [
            {"iteration": int(m.group(1)), "loss": float(m.group(2)), "seconds": float(m.group(3))}
            for m in _last_per_iteration(map(ITERATION_LINE.search, lines))
        ],
        "log_tail": lines[-15:],
    }
    group.remove()
    return result


def run(workdir, *, rows, cols, cap, fit_options, log=print):
    workdir = Path(workdir)
    path = workdir / f"capped_{rows}x{cols}.zarr"
    make_dense_zarr(path, rows, cols, chunk_rows=8192, log=log)
    out = workdir / "capped_out.zarr"
    command = [sys.executable, "-m", "dnmf.cli", "fit", str(path), "-o", str(out), "--overwrite", "-v", *fit_options]
    result = run_capped(command, cap, log=log)
    result.update({"matrix": str(path), "matrix_bytes": rows * cols * 4, "shape": [rows, cols]})
    seconds = [it["seconds"] for it in result["iterations"]]
    result["seconds_per_iteration"] = sum(seconds) / len(seconds) if seconds else None
    result["passed"] = bool(result["exit_code"] == 0 and not result["oom_kills"] and seconds)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/dnmf-bench")
    parser.add_argument("--cap", type=_parse_size, default=GIB)
    parser.add_argument("--rows", type=int, default=1048576)
    parser.add_argument("--cols", type=int, default=1024)
    parser.add_argument(
        "fit_options", nargs="*", help="dnmf fit options (after --); default: " + " ".join(DEFAULT_FIT_OPTIONS)
    )
    args = parser.parse_args(argv)
    result = run(
        args.workdir, rows=args.rows, cols=args.cols, cap=args.cap, fit_options=args.fit_options or DEFAULT_FIT_OPTIONS
    )
    out = Path(args.workdir) / "capped"
    row = {k: result[k] for k in ("exit_code", "oom_kills", "peak_bytes", "peak_anon_bytes", "seconds_per_iteration")}
    write_report(out, {"command": " ".join(sys.argv), **result}, title="dnmf fit under a memory cap", table_rows=[row])
    print(json.dumps(row))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
