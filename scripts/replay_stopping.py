"""Replay stopping rules on the error traces that ``bench_sklearn.py`` recorded.

    python scripts/replay_stopping.py /tmp/dnmf-bench/bench_sklearn.json

For each matrix of the benchmark, the fastest dnmf run's trace (seconds and error after every
iteration) is read again by two rules at the default ``tol``:

* dnmf's rule (:func:`dnmf.numerics.convergence.settled`): the pace of the last three passes,
  continued for as many passes as the fit has made (the tail of sublinear convergence);
* a geometric one, for comparison: the same, or the decrease of the last three passes times
  ``r / (1 - r)``, with ``r`` the ratio of that decrease to the one of the three passes before
  (the tail of a linear convergence), whichever is smaller. On a sublinear tail
  (``e_t = e* + C / t``) that estimate tends to half of what is left, so this rule may stop
  with up to about ``2 tol`` still to come.

Printed per matrix and rule: the iteration it stops at, its time and its error as ratios to
scikit-learn's (``-`` where the rule does not fire within the trace: the fit stopped by
scikit-learn's gradient test, or at ``max_iter``). The replay needs no fit; it shows what a
more eager rule would buy on real traces and what error it would stop at.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from dnmf.numerics.convergence import RATE_PASSES, remaining_decrease, rose_lately, settled
from dnmf.params import DEFAULTS


def geometric_remaining(errors, passes_left):
    """``min(dnmf's estimate, D r / (1 - r))`` over two windows of :data:`RATE_PASSES` passes."""
    sublinear = remaining_decrease(errors, passes_left)
    t = len(errors) - 1
    if t < 2 * RATE_PASSES or math.isinf(sublinear):
        return sublinear
    before = errors[-2 * RATE_PASSES - 1] - errors[-RATE_PASSES - 1]
    last = errors[-RATE_PASSES - 1] - errors[-1]
    if before <= 0 or last >= before:
        return sublinear
    ratio = max(last, 0.0) / before
    return min(sublinear, last * ratio / (1 - ratio))


def geometric_settled(errors, tol, passes_left):
    """:func:`dnmf.numerics.convergence.settled` with :func:`geometric_remaining` for its estimate."""
    if rose_lately(errors, tol):
        return False
    return geometric_remaining(errors, passes_left) <= tol * errors[-1]


RULES = {"dnmf": settled, "geometric": geometric_settled}


def stop_of(trace, rule, tol, max_iter):
    """The first iteration (0-based) at which ``rule`` fires on ``trace``, or None."""
    errors = [error for _, error in trace]
    for t in range(len(errors)):
        if rule(errors[: t + 1], tol, max_iter - t):
            return t
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="bench_sklearn.json")
    args = parser.parse_args(argv)
    report = json.loads(Path(args.report).read_text())
    tol, max_iter = DEFAULTS["tol"], DEFAULTS["max_iter"]
    print("| matrix | " + " | ".join(f"{name}: iteration, time ratio, error ratio" for name in RULES) + " |")
    print("| --- |" + " --- |" * len(RULES))
    for matrix, runs in report["runs"].items():
        reference_seconds = min(run["seconds"] for run in runs["scikit-learn"])
        reference_error = runs["scikit-learn"][0]["error"]
        trace = min(runs["dnmf"], key=lambda run: run["seconds"])["trace"]
        cells = []
        for rule in RULES.values():
            t = stop_of(trace, rule, tol, max_iter)
            if t is None:
                cells.append("-")
            else:
                seconds, error = trace[t]
                cells.append(f"{t + 1}, {seconds / reference_seconds:.3f}, {error / reference_error:.5f}")
        print(f"| {matrix} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
