"""``dnmf consensus``: consensus NMF (cNMF) over a range of ranks.

``dnmf consensus INPUT --ranks 5:15 --replicates 100 --out DIR`` fits every rank
``--replicates`` times, the replicates sharing each read of INPUT (see
:mod:`dnmf.apps.consensus`), prints one line per rank (stability, error) and the
recommended k, and writes DIR whole (or not at all):

``consensus.json``
    The report: per rank the stability, cNMF's prediction error, the relative error
    and the spectra kept by the density filter; the recommendation and its rule; with
    ``--preprocess counts``, the input columns (genes) kept and their scale.
``k<K>.zarr`` (``k<K>.h5ad`` with ``--format h5ad``)
    Per rank a result as ``dnmf fit`` writes one: ``H`` the consensus spectra (rows
    sum to 1), ``W`` the refit usages (with ``--preprocess counts``, refit as
    ``--refit-usages`` says), components by decreasing share of usage; ``dnmf info``, ``similar`` and ``plot`` read it.
    An ``.h5ad`` file carries INPUT's cell and gene names (of the genes kept, with
    ``--preprocess counts``), ``obsm["X_nmf"]`` the usages, ``varm["NMF_components"]``
    the spectra.
``k<K>.spectra_tpm.tsv``, ``k<K>.spectra_score.tsv`` (with ``--preprocess counts``)
    cNMF's spectra in TPM units and its gene scores, every gene of INPUT, as cNMF writes
    its ``gene_spectra_tpm`` and ``gene_spectra_score`` tables (tab-separated, gene names
    in the header, programs numbered from 1).
``k_selection.png``, ``k<K>.density.png``, ``k<K>.clustering.png``
    Stability and error against k; each rank's local-density histogram and its
    clustered spectra's distance heatmap (as cNMF draws them).
"""

from __future__ import annotations

import click
from dask.utils import parse_bytes

from ..api import Checkpointing
from ..apps import consensus as cnmf
from ..apps.consensus_checkpoint import SETTINGS, read_run
from ..apps.counts import TOP_GENES
from ..engine.durable import check_destination
from ..engine.location import is_url, shown
from ..errors import InputError
from ..io.formats import matrix_labels
from ..params import recorded, validate_params
from .interrupt import Interrupted, quiet_shutdown
from .options import (
    Bar,
    absolute,
    check_paths,
    fit_values,
    flag,
    input_options,
    open_input,
    output_options,
    param_options,
    running_on,
    scheduler_options,
)
from .rank import parse_ranks

__all__ = ["COMMANDS", "consensus_command", "resume_consensus"]

#: Parameters of the table that `dnmf consensus` does not take as options: it sweeps the
#: rank, derives the seeds from --seed, starts every replicate at random, and runs on
#: complete data.
NOT_CONSENSUS_OPTIONS = ("n_components", "random_state", "client", "verbose", "init", "missing_values")


@click.command("consensus")
@click.argument("input_path", metavar="INPUT")
@input_options
@click.option("--ranks", required=True, metavar="FIRST:LAST[:STEP]", help="Ranks to try, e.g. 5:15 or 3,5,8.")
@click.option(
    "--replicates", type=int, default=None, metavar="R", help="Fits per rank, >= 2 (cNMF's --n-iter). [default: 100]"
)
@click.option(
    "--density-threshold",
    type=float,
    default=None,
    metavar="D",
    help="Drop spectra whose mean distance to their neighbours is at least D, in (0, 2]. [default: 0.5]",
)
@click.option(
    "--neighbors",
    type=float,
    default=None,
    metavar="F",
    help="The neighbourhood of the local density, a fraction of the replicates in (0, 1]. [default: 0.3]",
)
@click.option(
    "--preprocess",
    type=click.Choice(["none", "counts"]),
    default="none",
    show_default=True,
    help="counts: cNMF's preprocessing of a counts matrix (cells as rows): the --top-genes most "
    "over-dispersed genes after normalizing each cell to 1e6, each scaled to unit variance.",
)
@click.option(
    "--top-genes",
    type=int,
    default=None,
    metavar="N",
    help="With --preprocess counts: genes kept (cNMF's --numgenes). [default: 2000]",
)
@click.option(
    "--refit-usages",
    type=click.Choice(list(cnmf.REFIT_USAGES)),
    default=None,
    help="With --preprocess counts: refit the usages written against the kept genes' TPM scaled to "
    "unit variance (cNMF's default) or against the normalized counts factorized. [default: tpm]",
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="S", help="Base seed of the replicates."
)
@click.option("--out", "-o", metavar="DIR", required=True, help="Directory to write (see `dnmf consensus --help`).")
@click.option("--overwrite", is_flag=True, help="Replace an existing DIR.")
@click.option(
    "--format",
    "result_format",
    type=click.Choice(list(cnmf.RESULT_FORMATS)),
    default="zarr",
    show_default=True,
    help="Per-rank results as Zarr groups, or AnnData files with INPUT's names.",
)
@click.option(
    "--checkpoint",
    metavar="CKPT",
    default=None,
    help="Local directory for the run's progress; the run of an interrupted consensus there is resumed.",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    metavar="N",
    default=None,
    help="Checkpoint the running batch every N iterations.",
)
@click.option(
    "--checkpoint-seconds",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    default=None,
    help="Also checkpoint every S seconds.",
)
@click.option(
    "--batch-memory",
    metavar="SIZE",
    default=None,
    help="Memory budget of a batch of replicates fitted together, e.g. 4GiB. [default: half the workers']",
)
@param_options(without=NOT_CONSENSUS_OPTIONS, defaults={"max_iter": cnmf.MAX_ITER})
@scheduler_options
@output_options
def consensus_command(
    input_path,
    layer,
    dtype,
    store,
    ranks,
    replicates,
    density_threshold,
    neighbors,
    preprocess,
    top_genes,
    refit_usages,
    seed,
    out,
    overwrite,
    result_format,
    checkpoint,
    checkpoint_every,
    checkpoint_seconds,
    batch_memory,
    scheduler,
    workers,
    memory_limit,
    threads,
    quiet,
    verbose,
    **values,
):
    """Consensus NMF (cNMF) of each rank of --ranks; recommends k and writes DIR.

    With --checkpoint CKPT a killed run resumes with `dnmf resume CKPT` (or the same
    command): finished batches are kept, the running one continues from its last checkpoint.
    A --beta-loss other than frobenius runs --solver mu unless given (as cNMF does).
    """
    ranks = parse_ranks(ranks)
    params = cnmf.fit_params(fit_values(values, without=NOT_CONSENSUS_OPTIONS))
    validate_params(
        {**params, "n_components": ranks[-1]}, spell=lambda name: "--ranks" if name == "n_components" else flag(name)
    )
    for value, name in ((top_genes, "--top-genes"), (refit_usages, "--refit-usages")):
        if value is not None and preprocess != "counts":
            raise click.UsageError(f"{name} applies with --preprocess counts")
    settings = {
        "ranks": ranks,
        "replicates": cnmf.REPLICATES if replicates is None else replicates,
        "random_state": seed,
        "preprocess": preprocess,
        "top_genes": TOP_GENES if top_genes is None else top_genes,
    }
    options = {
        "density_threshold": cnmf.DENSITY_THRESHOLD if density_threshold is None else density_threshold,
        "neighbors": cnmf.NEIGHBORS if neighbors is None else neighbors,
        "refit_usages": refit_usages,
    }
    if checkpoint is None and (checkpoint_every is not None or checkpoint_seconds is not None):
        raise click.UsageError("--checkpoint-every and --checkpoint-seconds apply with --checkpoint CKPT")
    _consensus_job(
        input_path,
        settings,
        options,
        params,
        out=out,
        overwrite=overwrite,
        result_format=result_format,
        read=dict(layer=layer, dtype=dtype, store=store),
        batch_memory=batch_memory,
        checkpoint=checkpoint,
        every=checkpoint_every,
        seconds=checkpoint_seconds,
        scheduler=dict(address=scheduler, workers=workers, memory_limit=memory_limit, threads=threads or None),
        quiet=quiet,
    )


def _batch_bytes(batch_memory):
    if batch_memory is None:
        return None
    try:
        value = parse_bytes(batch_memory)
    except ValueError:
        value = 0
    if value <= 0:
        raise click.BadParameter(f"{batch_memory!r} is not a size such as 4GiB", param_hint="'--batch-memory'")
    return value


def _consensus_job(
    input_path,
    settings,
    options,
    params,
    *,
    out,
    overwrite,
    read,
    result_format="zarr",
    batch_memory=None,
    checkpoint=None,
    every=None,
    seconds=None,
    scheduler=None,
    quiet=False,
):
    """Check everything, run the consensus of ``input_path`` (checkpointed in
    ``checkpoint`` if given) and write ``out``; print the table."""
    cnmf.check_options(
        settings["replicates"],
        options["density_threshold"],
        options["neighbors"],
        settings["preprocess"],
        settings["top_genes"],
        refit_usages=options.get("refit_usages"),
        spell={
            "replicates": "--replicates",
            "density_threshold": "--density-threshold",
            "neighbors": "--neighbors",
            "top_genes": "--top-genes",
            "refit_usages": "--refit-usages",
            "preprocess": "--preprocess",
        },
    )
    batch_bytes = _batch_bytes(batch_memory)
    input_path, out, checkpoint = absolute(input_path), absolute(out), absolute(checkpoint)
    if checkpoint is not None and is_url(checkpoint):
        raise InputError(f"--checkpoint {checkpoint}: a consensus checkpoints to a local directory only")
    check_paths(input_path, out, checkpoint)
    check_destination(out, overwrite)
    read = {name: value for name, value in read.items() if value is not None}
    source = open_input(input_path, **read, out=out, quiet=quiet)
    checkpointing = None
    if checkpoint is not None:
        run_info = {
            "command": "consensus",
            "input": shown(input_path),
            "read": read,
            "out": out,
            "format": result_format,
            "options": options,
            "params": recorded(params),
            "every": every,
            "seconds": seconds,
            "batch_memory": batch_memory,
        }
        checkpointing = Checkpointing(checkpoint, every, seconds, run_info)
    with running_on(**scheduler, quiet=quiet):
        bar = Bar(None, "consensus", "iteration", quiet)

        def progress(info):
            if info is not None:
                bar.update(1)

        try:
            result = cnmf.consensus(
                source,
                settings["ranks"],
                replicates=settings["replicates"],
                random_state=settings["random_state"],
                preprocess=settings["preprocess"],
                top_genes=settings["top_genes"],
                batch_bytes=batch_bytes,
                checkpoint=checkpointing,
                callback=progress,
                **options,
                **params,
            )
        except KeyboardInterrupt:
            quiet_shutdown()  # before the cluster is torn down
            if checkpoint is not None:
                raise Interrupted(
                    f"interrupted; the progress is in {checkpoint}: resume with `dnmf resume {checkpoint}`"
                ) from None
            raise
        finally:
            bar.close()
        labels = (None, None) if is_url(input_path) else matrix_labels(input_path)
        cnmf.write_consensus(
            out,
            result,
            {**params, "random_state": settings["random_state"]},
            input_path=shown(input_path),
            overwrite=overwrite,
            result_format=result_format,
            labels=labels,
        )
    if not quiet:
        report = result.report
        click.echo(f"{'rank':>4}  {'stability':>9}  {'rel. error':>10}  {'kept':>9}")
        for score in report.scores:
            mark = "  <- recommended" if score.rank == report.recommended else ""
            kept = f"{score.kept}/{score.rank * report.replicates}"
            click.echo(f"{score.rank:>4}  {score.stability:>9.3f}  {score.relative_error:>10.5g}  {kept:>9}{mark}")
        click.echo(
            f"recommended k = {report.recommended} ({report.rule}); {len(settings['ranks']) * report.replicates} fits "
            f"in {report.batches} ensemble(s), {report.passes} passes over INPUT, {report.seconds:.1f} s; wrote {out}"
        )


def resume_consensus(directory, *, out=None, overwrite=False, scheduler=None, quiet=False):
    """Finish the checkpointed ``dnmf consensus`` whose CKPT is ``directory`` (``dnmf resume``)."""
    run = read_run(directory)
    info = run.get("run", {})
    if info.get("command") != "consensus" or not info.get("input"):
        raise InputError(
            f"{directory} was not written by `dnmf consensus` (it records no input); resume it from Python"
        )
    settings = {name: run[name] for name in SETTINGS}
    settings["top_genes"] = settings["top_genes"] or TOP_GENES  # recorded as None without preprocessing
    _consensus_job(
        info["input"],
        settings,
        info["options"],
        info["params"],
        out=out or info["out"],
        overwrite=overwrite,
        result_format=info.get("format", "zarr"),
        read=info.get("read", {}),
        batch_memory=info.get("batch_memory"),
        checkpoint=directory,
        every=info.get("every"),
        seconds=info.get("seconds"),
        scheduler=scheduler,
        quiet=quiet,
    )


#: The commands of this module, registered on the ``dnmf`` group by :mod:`dnmf.cli.main`.
COMMANDS = (consensus_command,)
