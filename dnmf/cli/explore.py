"""``dnmf plot``, ``dnmf topics`` and ``dnmf similar``: look at a factorization.

They follow the conventions of every ``dnmf`` command (:mod:`dnmf.cli.main`): bad input
exits with status 2 and one ``error:`` line, ``-v`` logs, ``-q`` is quiet. Heavy imports
(matplotlib, scikit-learn's text features) happen when a command runs, not when ``dnmf``
starts.

Labels and vocabulary come along by themselves when the fit's input is the tf-idf matrix
of a corpus stored by ``dnmf topics --store CORPUS.zarr`` (``dnmf fit
CORPUS.zarr/tfidf ...``): ``similar`` then knows the documents' labels and ``plot
--kind components`` the terms.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ..apps.plots import PLOT_KINDS, SAMPLE_COLUMNS, SAMPLE_ROWS
from ..apps.topics import DEFAULT_TOP
from ..engine.location import Location, is_url
from ..errors import InputError, NotFoundError, ParameterError
from ..io.formats import matrix_labels
from .options import absolute, output_options, storage_option

__all__ = ["COMMANDS", "plot_command", "similar_command", "topics_command"]

logger = logging.getLogger(__name__)

#: Defaults of `dnmf topics`.
TOPICS_MAX_ITER, TOPICS_SEED = 200, 0
#: Default of `dnmf similar --top`.
SIMILAR_TOP = 5


def _corpus_of_result(result):
    from ..apps.topics import corpus_of

    return corpus_of(result.attrs.get("input"))


def _row_labels_of_result(result):
    """The documents of a `dnmf topics` corpus, or the row labels of a labelled input
    (AnnData obs names, 10x barcodes), if OUT is its fit."""
    corpus = _corpus_of_result(result)
    if corpus is not None:
        return corpus.documents
    source = result.attrs.get("input")
    return matrix_labels(source)[0] if source and not is_url(source) and Path(source).exists() else None


# ---------------------------------------------------------------------------- plot


@click.command("plot")
@click.argument("result_path", metavar="OUT.zarr")
@click.option("--kind", required=True, type=click.Choice(PLOT_KINDS), help="What to draw.")
@click.option("--out", "-o", required=True, metavar="FILE.png", help="PNG file to write.")
@click.option(
    "--image-shape",
    nargs=2,
    type=click.IntRange(min=1),
    default=None,
    metavar="H W",
    help="components: show each component as an H x W image (H * W = columns of V).",
)
@click.option(
    "--input",
    "input_path",
    metavar="V",
    default=None,
    help="reconstruction: the factorized matrix. [default: the input recorded in OUT]",
)
@click.option(
    "--rows",
    "max_rows",
    type=click.IntRange(min=1),
    default=SAMPLE_ROWS,
    show_default=True,
    metavar="N",
    help="Heatmaps show at most N rows (evenly spaced sample, first and last included).",
)
@click.option(
    "--columns",
    "max_columns",
    type=click.IntRange(min=1),
    default=SAMPLE_COLUMNS,
    show_default=True,
    metavar="N",
    help="Heatmaps show at most N columns (evenly spaced sample).",
)
@click.option("--overwrite", is_flag=True, default=False, help="Replace an existing FILE.png.")
@storage_option
@output_options
def plot_command(
    result_path, kind, out, image_shape, input_path, max_rows, max_columns, overwrite, storage_options, quiet, verbose
):
    """Draw a fit result (OUT of `dnmf fit`) as a PNG.

    \b
    reconstruction  V, W·H and V − W·H side by side (heatmaps)
    factors         W and H heatmaps (values written in small ones)
    convergence     the loss after each iteration
    components      each row of H as an image (--image-shape) or its top features
    """
    from ..apps.plots import plot
    from ..engine.durable import check_destination
    from ..io.results import read_result

    out = absolute(out)
    check_destination(out, overwrite)
    result = read_result(absolute(result_path), storage_options)
    V = absolute(input_path)
    if kind == "reconstruction" and V is None:
        recorded = result.attrs.get("input")
        if recorded is None:
            raise InputError(f"{result.path} records no input; pass --input V")
        if not Location.of(recorded, storage_options).exists():
            raise NotFoundError(f"the input recorded in {result.path} is gone: {recorded}; pass --input V")
    if image_shape is not None and kind != "components":
        logger.warning("--image-shape applies to --kind components; ignored")
    corpus = _corpus_of_result(result)
    figure = plot(
        result,
        kind,
        out,
        V=V,
        image_shape=image_shape if kind == "components" else None,
        feature_names=None if corpus is None else corpus.vocabulary,
        row_labels=None if corpus is None else corpus.documents,
        max_rows=max_rows,
        max_columns=max_columns,
    )
    if not quiet:
        width, height = (figure.get_size_inches() * figure.dpi).round().astype(int)
        click.echo(f"wrote {out} ({kind}, {width} x {height} px)")


# -------------------------------------------------------------------------- topics


@click.command("topics")
@click.argument("docs", metavar="DOCS")
@click.option("--rank", "-k", "rank", required=True, type=click.IntRange(min=1), metavar="K", help="Number of topics.")
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=DEFAULT_TOP,
    show_default=True,
    metavar="N",
    help="Terms shown per topic.",
)
@click.option(
    "--column", metavar="NAME", default=None, help="CSV column holding the text. [default: 'text' or the only column]"
)
@click.option(
    "--label-column", metavar="NAME", default=None, help="CSV column holding document labels. [default: 'row N']"
)
@click.option(
    "--store",
    metavar="CORPUS.zarr",
    default=None,
    help="Keep the tf-idf corpus (CSR matrix + vocabulary + labels) here. [default: temporary]",
)
@click.option("--max-iter", type=click.IntRange(min=1), default=TOPICS_MAX_ITER, show_default=True, metavar="N")
@click.option("--seed", type=click.IntRange(min=0), default=TOPICS_SEED, show_default=True, metavar="S")
@click.option(
    "--max-docs",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Show the mix of the first N documents only.",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    default=None,
    help="Fit on the Dask scheduler at ADDRESS. [default: in this process]",
)
@click.option("--overwrite", is_flag=True, default=False, help="Replace an existing --store.")
@output_options
def topics_command(
    docs, rank, top, column, label_column, store, max_iter, seed, max_docs, scheduler, overwrite, quiet, verbose
):
    """Topics of DOCS: a folder of .txt files, a CSV file (--column) or a stored corpus.

    Builds tf-idf (scikit-learn's TfidfVectorizer, English stop words out), stores it as
    a Zarr CSR matrix with its vocabulary, fits NMF of rank K, and prints the top terms
    of each topic and the topic mix (shares summing to 1) of each document.
    """
    from ..apps.topics import find_topics

    found = find_topics(
        absolute(docs),
        rank,
        top=top,
        column=column,
        label_column=label_column,
        store=absolute(store),
        overwrite=overwrite,
        max_iter=max_iter,
        random_state=seed,
        client=scheduler,
    )
    if not quiet:
        click.echo(found.format(max_documents=max_docs))
        if found.corpus is not None and store is not None:
            click.echo(f"\ncorpus stored in {found.corpus} (fit it again with `dnmf fit {found.corpus}/tfidf`)")


# ------------------------------------------------------------------------- similar


@click.command("similar")
@click.argument("result_path", metavar="OUT.zarr")
@click.option("--row", type=click.IntRange(min=0), default=None, metavar="I", help="Query: row I of V (of W).")
@click.option("--label", default=None, metavar="TEXT", help="Query: the row labelled TEXT.")
@click.option(
    "--labels",
    "labels_path",
    metavar="FILE",
    default=None,
    help="Labels of the rows, one a line. [default: the documents of a `dnmf topics` corpus, or the obs "
    "names / barcodes of an AnnData or 10x input, if OUT is its fit]",
)
@click.option("--top", type=click.IntRange(min=1), default=SIMILAR_TOP, show_default=True, metavar="N")
@storage_option
@output_options
def similar_command(result_path, row, label, labels_path, top, storage_options, quiet, verbose):
    """The rows most similar to one row: cosine similarity of their rows of W (out of core)."""
    from ..apps.similar import similar
    from ..io.results import read_result

    if (row is None) == (label is None):
        raise click.UsageError("give exactly one query: --row I or --label TEXT")
    result = read_result(absolute(result_path), storage_options)
    labels = absolute(labels_path)
    if labels is None:
        labels = _row_labels_of_result(result)
    if label is not None and labels is None:
        raise ParameterError(f"--label {label!r} needs labels: pass --labels FILE (one label per row of V)")
    query = row if row is not None else label
    matches = similar(result, query, top=top, labels=labels)
    if quiet:
        return
    if row is not None and labels is not None:
        from ..apps.similar import read_labels

        named = read_labels(labels)[row]
        click.echo(f"most similar to row {row} ({named}):")
    else:
        click.echo(f"most similar to {f'row {row}' if row is not None else repr(label)}:")
    width = max([len(str(m.index)) for m in matches] + [3])
    click.echo(f"{'rank':>4}  {'row':>{width}}  {'score':>6}" + ("  label" if labels is not None else ""))
    for rank, match in enumerate(matches, 1):
        text = f"  {match.label}" if match.label is not None else ""
        click.echo(f"{rank:>4}  {match.index:>{width}}  {match.score:6.4f}{text}")


#: The commands of this module, registered on the ``dnmf`` group by :mod:`dnmf.cli.main`.
COMMANDS = (plot_command, topics_command, similar_command)
