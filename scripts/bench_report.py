"""One command for the benchmarks: scikit-learn comparison, memory cap, growth.

Runs ``bench_sklearn``, ``run_capped`` and ``bench_growth`` (and, unless
``--skip-floor``, ``bench_floor.py`` as a subprocess, its own report kept as it writes
it) and writes ``WORKDIR/report.md`` and ``WORKDIR/report.json``: every ratio next
to its target, and every miss named with what was measured. Data, reports and caches
stay in WORKDIR (outside the repository).

    python scripts/bench_report.py --workdir /tmp/dnmf-bench [--quick] [--only sklearn,capped,growth]

``--quick`` shrinks the scikit-learn matrices (a quarter of the rows), the growth
matrices (m = 32768 x 1024) and the capped matrix stays >= 4 GiB (it is the point of
that benchmark) but runs 2 iterations. ``--corpus CSV`` (repeatable) adds real corpora
to the scikit-learn comparison.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_growth  # noqa: E402
import bench_sklearn  # noqa: E402
import run_capped  # noqa: E402
from _bench_common import machine_info  # noqa: E402

PARTS = ("sklearn", "capped", "growth", "floor")


def _fmt(value, digits=3):
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _sklearn_rows(results):
    rows, misses = [], []
    for r in results:
        rows.append(
            {
                "benchmark": f"vs scikit-learn, defaults, {r['matrix']}",
                "measure": f"dnmf {r['dnmf s']} s ({r['dnmf iterations']} it) / scikit-learn {r['scikit-learn s']} s "
                f"({r['scikit-learn iterations']} it); error ratio {r['error ratio']}; time ratio",
                "value": r["time ratio (to stop)"],
                "target": f"<= {bench_sklearn.TIME_TARGET}",
                "passed": r["met"],
            }
        )
        if not r["met"]:
            misses.append(
                f"vs scikit-learn {r['matrix']}: time ratio {r['time ratio (to stop)']}, error ratio {r['error ratio']}, "
                f"stopped by itself: {r['dnmf stopped by itself']}"
            )
    return rows, misses


def _capped_rows(result):
    gib = 2**30
    rows = [
        {
            "benchmark": f"memory cap {result['cap_bytes'] / gib:.2f} GiB, {result['shape'][0]} x {result['shape'][1]} "
            f"float32 ({result['matrix_bytes'] / gib:.2f} GiB)",
            "measure": f"exit {result['exit_code']}, OOM kills {result['oom_kills']}, cgroup peak "
            f"{(result['peak_bytes'] or 0) / gib:.2f} GiB (incl. page cache), peak anon "
            f"{result['peak_anon_bytes'] / gib:.2f} GiB; s/iteration",
            "value": result["seconds_per_iteration"],
            "target": "no OOM kill",
            "passed": result["passed"],
        }
    ]
    misses = (
        []
        if result["passed"]
        else [
            f"memory cap: exit code {result['exit_code']}, OOM kills {result['oom_kills']}; log tail: "
            + " / ".join(result["log_tail"][-5:])
        ]
    )
    return rows, misses


def _growth_rows(result):
    rows, misses = [], []
    for r in result["table"]:
        rows.append(
            {
                "benchmark": "growth",
                "measure": f"{r['case']}: {r['seconds_per_iteration']:.3f}s/iteration; ratio",
                "value": r["ratio"],
                "target": f"<= {r['target']}" if r["target"] else "—",
                "passed": r["passed"],
            }
        )
        if r["passed"] is False:
            misses.append(
                f"growth {r['case']}: ratio {r['ratio']:.2f} > {r['target']} "
                f"(all medians per repeat: {result['rows_times']})"
            )
    return rows, misses


def _markdown(payload):
    lines = [
        "# dnmf benchmarks",
        "",
        f"Command: `{payload['command']}`",
        "",
        "| benchmark | measure | value | target | passed |",
        "|---|---|---|---|---|",
    ]
    for r in payload["rows"]:
        lines.append(
            f"| {r['benchmark']} | {r['measure']} | {_fmt(r['value'])} | {r['target']} | "
            f"{'yes' if r['passed'] else ('—' if r['passed'] is None else '**no**')} |"
        )
    lines += ["", "## Missed targets", ""]
    lines += [f"- {m}" for m in payload["misses"]] or ["- none"]
    if payload["errors"]:
        lines += ["", "## Parts that failed to run", ""] + [
            f"- {k}: {v.splitlines()[-1]}" for k, v in payload["errors"].items()
        ]
    lines += ["", "Machine: " + ", ".join(f"{k}={v}" for k, v in payload["machine"].items()), ""]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="/tmp/dnmf-bench")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default="sklearn,capped,growth", help=f"comma-separated subset of {PARTS}")
    parser.add_argument(
        "--capped-result",
        default=None,
        help="use this run_capped.py JSON (WORKDIR/capped.json) instead of running it again",
    )
    parser.add_argument("--skip-floor", action="store_true", help="(floor runs only if listed in --only)")
    parser.add_argument(
        "--corpus",
        action="append",
        default=[],
        metavar="CSV",
        help="a CSV of documents for the scikit-learn comparison (repeatable)",
    )
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    parts = [p for p in args.only.split(",") if p]
    payload = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "quick": args.quick,
        "rows": [],
        "misses": [],
        "errors": {},
        "results": {},
        "machine": machine_info(),
        "started": time.time(),
    }

    def save():
        (workdir / "report.json").write_text(json.dumps(payload, indent=2, default=float) + "\n")
        (workdir / "report.md").write_text(_markdown(payload))

    for part in parts:
        print(f"== {part}", flush=True)
        try:
            if part == "sklearn":
                result = bench_sklearn.run(workdir, args.quick, args.corpus)
                rows, misses = _sklearn_rows(result)
            elif part == "capped":
                if args.capped_result:
                    result = json.loads(Path(args.capped_result).read_text())
                    rows, misses = _capped_rows(result)
                    payload["results"][part] = result
                    payload["rows"] += rows
                    payload["misses"] += misses
                    save()
                    continue
                options = list(run_capped.DEFAULT_FIT_OPTIONS) + (["--max-iter", "2"] if args.quick else [])
                result = run_capped.run(workdir, rows=1048576, cols=1024, cap=run_capped.GIB, fit_options=options)
                rows, misses = _capped_rows(result)
            elif part == "growth":
                result = bench_growth.run(workdir, args.quick)
                rows, misses = _growth_rows(result)
            elif part == "floor":
                command = [sys.executable, str(HERE / "bench_floor.py"), "--workdir", str(workdir)]
                result = {"command": command, "exit_code": subprocess.call(command)}
                rows, misses = [], []
            else:
                raise ValueError(f"unknown part {part!r}; choose from {PARTS}")
        except Exception:
            payload["errors"][part] = traceback.format_exc()
            payload["misses"].append(f"{part}: did not run to the end ({payload['errors'][part].splitlines()[-1]})")
            save()
            continue
        payload["results"][part] = result
        payload["rows"] += rows
        payload["misses"] += misses
        save()
    save()
    print(f"report: {workdir / 'report.md'} and {workdir / 'report.json'}")
    return 0 if not payload["misses"] else 1


if __name__ == "__main__":
    sys.exit(main())
