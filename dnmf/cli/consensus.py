"""``dnmf consensus``: consensus NMF (cNMF) over a range of ranks.

``dnmf consensus INPUT --ranks 5:15 --replicates 100 --out DIR`` fits every rank
``--replicates`` times, the replicates sharing each read of INPUT (see
:mod:`dnmf.apps.consensus`), prints one line per rank (stability, error) and the
recommended k, and writes DIR whole (or not at all):

``consensus.json``
    The report: per rank the stability, cNMF's prediction error, the relative error
    and the spectra kept by the density filter; the recommendation and its rule.
``k<K>.zarr``
    Per rank a result as ``dnmf fit`` writes one: ``H`` the consensus spectra (rows
    sum to 1), ``W`` the refit usages; ``dnmf info``, ``similar`` and ``plot`` read it.
``k_selection.png``, ``k<K>.density.png``, ``k<K>.clustering.png``
    Stability and error against k; each rank's local-density histogram and its
    clustered spectra's distance heatmap (as cNMF draws them).
"""

from __future__ import annotations

import click

from ..params import validate_params
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
from .rank import parse_ranks

__all__ = ["COMMANDS", "consensus_command"]

#: Parameters of the table that `dnmf consensus` does not take as options: it sweeps the
#: rank, derives the seeds from --seed, starts every replicate at random, and runs the
#: Frobenius loss on complete data.
NOT_CONSENSUS_OPTIONS = ("n_components", "random_state", "client", "verbose", "init", "beta_loss", "missing_values")


@click.command("consensus")
@click.argument("input_path", metavar="INPUT")
@input_options
@click.option("--ranks", required=True, metavar="FIRST:LAST[:STEP]", help="Ranks to try, e.g. 5:15 or 3,5,8.")
@click.option("--replicates", type=int, default=None, metavar="R",
              help="Fits per rank, >= 2 (cNMF's --n-iter). [default: 100]")
@click.option("--density-threshold", type=float, default=None, metavar="D",
              help="Drop spectra whose mean distance to their neighbours is at least D, in (0, 2]. [default: 0.5]")
@click.option("--neighbors", type=float, default=None, metavar="F",
              help="The neighbourhood of the local density, a fraction of the replicates in (0, 1]. [default: 0.3]")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, metavar="S",
              help="Base seed of the replicates.")
@click.option("--out", "-o", metavar="DIR", required=True, help="Directory to write (see `dnmf consensus --help`).")
@click.option("--overwrite", is_flag=True, help="Replace an existing DIR.")
@param_options(without=NOT_CONSENSUS_OPTIONS)
@scheduler_options
@output_options
def consensus_command(
    input_path, layer, dtype, store, ranks, replicates, density_threshold, neighbors, seed, out, overwrite, scheduler,
    workers, memory_limit, threads, quiet, verbose, **values
):
    """Consensus NMF (cNMF) of each rank of --ranks; recommends k and writes DIR."""
    from ..apps import consensus as cnmf
    from ..engine.durable import check_destination

    ranks = parse_ranks(ranks)
    params = fit_values(values, without=NOT_CONSENSUS_OPTIONS)
    validate_params({**params, "n_components": ranks[-1]}, spell=lambda name: "--ranks" if name == "n_components" else flag(name))
    options = {
        "replicates": cnmf.REPLICATES if replicates is None else replicates,
        "density_threshold": cnmf.DENSITY_THRESHOLD if density_threshold is None else density_threshold,
        "neighbors": cnmf.NEIGHBORS if neighbors is None else neighbors,
    }
    cnmf.check_options(**options, spell={"replicates": "--replicates", "density_threshold": "--density-threshold",
                                         "neighbors": "--neighbors"})
    out = absolute(out)
    check_destination(out, overwrite)
    source = open_input(absolute(input_path), layer=layer, dtype=dtype, store=store, out=out, quiet=quiet)
    with running_on(scheduler, workers, memory_limit, threads, quiet=quiet):
        bar = Bar(None, "consensus", "iteration", quiet)

        def progress(info):
            if info is not None:
                bar.update(1)

        try:
            result = cnmf.consensus(source, ranks, random_state=seed, callback=progress, **options, **params)
        finally:
            bar.close()
        cnmf.write_consensus(out, result, {**params, "random_state": seed}, input_path=input_path, overwrite=overwrite)
    if not quiet:
        report = result.report
        click.echo(f"{'rank':>4}  {'stability':>9}  {'rel. error':>10}  {'kept':>9}")
        for score in report.scores:
            mark = "  <- recommended" if score.rank == report.recommended else ""
            kept = f"{score.kept}/{score.rank * report.replicates}"
            click.echo(f"{score.rank:>4}  {score.stability:>9.3f}  {score.relative_error:>10.5g}  {kept:>9}{mark}")
        click.echo(
            f"recommended k = {report.recommended} ({report.rule}); {len(ranks) * report.replicates} fits in "
            f"{report.batches} ensemble(s), {report.passes} passes over INPUT, {report.seconds:.1f} s; wrote {out}"
        )


#: The commands of this module, registered on the ``dnmf`` group by :mod:`dnmf.cli.main`.
COMMANDS = (consensus_command,)
