"""``dnmf rank`` and ``dnmf recommend``: choose k, and predict missing entries.

They follow the conventions of every ``dnmf`` command (:mod:`dnmf.cli.main`): bad input
exits with status 2 and one ``error:`` line; ``-v`` logs; ``-q`` is quiet;
``--scheduler`` or an embedded cluster.

``dnmf rank INPUT --ranks 2:20`` fits every rank several times, concurrently, and prints
one line per rank (error, stability) and the recommended k (see :mod:`dnmf.apps.rank`);
``--out`` writes the report as JSON and ``--plot`` the two curves as PNG. The fit options
are those of ``dnmf fit`` (from the same parameter table) but the rank and the seed.

``dnmf recommend OUT.zarr --row R --top N`` lists the N unobserved columns of row R with
the highest predicted value ``(W H)[R, j]``; the observed ones are read from ``--input``
(default: the input recorded in OUT), in the fit's ``missing_values`` mode.
"""

from __future__ import annotations

import json
import logging

import click
import numpy as np
import scipy.sparse as sp

from ..apps.recommend import observed_columns, recommend
from ..errors import InputError
from ..io.results import FIT_KIND, read_result
from ..io.storage import CSRMatrix, open_matrix
from ..params import normalize_missing, validate_params
from .options import (
    Bar,
    absolute,
    fit_values,
    flag,
    input_options,
    open_input,
    output_options,
    param_options,
    running_on,
    scheduler_options,
)

__all__ = ["COMMANDS", "parse_ranks", "rank_command", "recommend_command"]

logger = logging.getLogger(__name__)

#: Parameters of the table that `dnmf rank` does not take as options (it sweeps the rank
#: and derives each replicate's seed from --seed).
NOT_RANK_OPTIONS = ("n_components", "random_state", "client", "verbose")
#: Default of `dnmf recommend --top`.
RECOMMEND_TOP = 10


def parse_ranks(text):
    """``"2:20"`` (inclusive), ``"2:20:2"`` or ``"3,5,8"`` → sorted list of ranks."""
    try:
        if ":" in text:
            parts = [int(part) for part in text.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
            start, stop, stride = (*parts, 1) if len(parts) == 2 else parts
            ranks = list(range(start, stop + 1, stride))
        else:
            ranks = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected FIRST:LAST[:STEP] or a comma list of ranks, got {text!r}") from None
    if not ranks or min(ranks) < 1:
        raise click.BadParameter(f"ranks must be positive integers, got {text!r}")
    return sorted(set(ranks))


@click.command("rank")
@click.argument("input_path", metavar="INPUT")
@input_options
@click.option("--ranks", required=True, metavar="FIRST:LAST[:STEP]", help="Ranks to try, e.g. 2:20 or 3,5,8.")
@click.option(
    "--replicates", type=click.IntRange(min=2), default=3, show_default=True, metavar="R", help="Fits per rank."
)
@click.option(
    "--perturbation",
    type=click.FloatRange(0, 1, max_open=True),
    default=None,
    metavar="F",
    help="Relative noise of each replicate's copy of INPUT. [default: 0.03]",
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    metavar="S",
    help="Stability a rank needs to be recommended. [default: 0.8]",
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="S", help="Base seed of the replicates."
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Fits at once (1: one after another). [default: all, up to 16]",
)
@click.option("--out", "-o", metavar="REPORT.json", default=None, help="Write the report as JSON.")
@click.option("--plot", "plot_path", metavar="FILE.png", default=None, help="Plot error and stability against k.")
@param_options(without=NOT_RANK_OPTIONS)
@scheduler_options
@output_options
def rank_command(
    input_path,
    layer,
    dtype,
    store,
    ranks,
    replicates,
    perturbation,
    threshold,
    seed,
    concurrency,
    out,
    plot_path,
    scheduler,
    workers,
    memory_limit,
    threads,
    quiet,
    verbose,
    **values,
):
    """Fit each rank of --ranks several times and recommend k by stability (NMFk)."""
    from ..apps import rank as rank_selection

    ranks = parse_ranks(ranks)
    params = fit_values(values, without=NOT_RANK_OPTIONS)
    validate_params(
        {**params, "n_components": ranks[-1]}, spell=lambda name: "--ranks" if name == "n_components" else flag(name)
    )
    options = dict(replicates=replicates, random_state=seed, concurrency=concurrency)
    if perturbation is not None:
        options["perturbation"] = perturbation
    if threshold is not None:
        options["threshold"] = threshold
    source = open_input(absolute(input_path), layer=layer, dtype=dtype, store=store, out=out, quiet=quiet)
    with running_on(scheduler, workers, memory_limit, threads or None, quiet=quiet):
        bar = Bar(len(ranks) * replicates, "rank", "fit", quiet)
        try:
            report = rank_selection.select_rank(source, ranks, callback=lambda k, r: bar.update(1), **options, **params)
        finally:
            bar.close()
    if out is not None:
        report.to_json(absolute(out))
    if plot_path is not None:
        rank_selection.plot_rank_report(report, absolute(plot_path))
    if not quiet:
        click.echo(f"{'rank':>4}  {'error':>10}  {'stability':>9}  {'silhouette':>10}")
        for score in report.scores:
            mark = "  <- recommended" if score.rank == report.recommended else ""
            click.echo(
                f"{score.rank:>4}  {score.error:>10.5g}  {score.stability:>9.3f}  {score.silhouette:>10.3f}{mark}"
            )
        click.echo(
            f"recommended k = {report.recommended} ({report.rule}); error elbow at k = {report.elbow}; "
            f"{len(ranks) * replicates} fits in {report.seconds:.1f} s"
        )


@click.command("recommend")
@click.argument("model", metavar="OUT.zarr")
@click.option("--row", type=click.IntRange(min=0), required=True, metavar="R", help="Row of V (0-based).")
@click.option("--top", type=click.IntRange(min=1), default=RECOMMEND_TOP, show_default=True, metavar="N")
@click.option(
    "--input",
    "input_path",
    metavar="V",
    default=None,
    help="The fitted matrix, to know the observed entries. [default: the input recorded in OUT]",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@output_options
def recommend_command(model, row, top, input_path, as_json, quiet, verbose):
    """Predict the unobserved entries of row R from W·H and list the N highest."""
    fitted = read_result(absolute(model))
    if fitted.kind != FIT_KIND:
        raise InputError(f"{model} is a transform result; recommend needs the OUT of `dnmf fit`")
    m = fitted.W.shape[0]
    if row >= m:
        raise InputError(f"--row {row} is out of range: {model} has {m} rows")
    input_path = absolute(input_path) or fitted.attrs.get("input")
    if not input_path:
        raise InputError(f"{model} records no input; pass --input V (the fitted matrix) to know the observed entries")
    source = open_matrix(input_path)
    if tuple(source.shape) != (m, fitted.H.shape[1]):
        raise InputError(
            f"--input {input_path} has shape {tuple(source.shape)}, but {model} fits {(m, fitted.H.shape[1])}"
        )
    missing = normalize_missing((fitted.attrs.get("params") or {}).get("missing_values"))
    observed = observed_columns(_read_row(source, row), missing)
    picks = recommend(np.asarray(fitted.W[row]), fitted.H, observed, top)
    if quiet:
        return
    if as_json:
        click.echo(
            json.dumps(
                {
                    "row": row,
                    "observed": int(observed.size),
                    "top": [{"column": column, "score": score} for column, score in picks],
                },
                indent=2,
            )
        )
        return
    click.echo(f"row {row}: {observed.size} observed of {fitted.H.shape[1]}; top {len(picks)} predictions")
    for column, score in picks:
        click.echo(f"{column:>8}  {score:.6g}")


def _read_row(source, row):
    """Row ``row`` of an opened input (reads that row only)."""
    if isinstance(source, CSRMatrix):
        return source.read_rows(row, row + 1)
    if sp.issparse(source):
        return source[row : row + 1]
    return np.asarray(source[row : row + 1])


#: The commands of this module, registered on the ``dnmf`` group by :mod:`dnmf.cli.main`.
COMMANDS = (rank_command, recommend_command)
