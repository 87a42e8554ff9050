"""``dnmf fit``, ``dnmf resume``, ``dnmf transform`` and ``dnmf demo``: run factorizations.

Each one checks everything it can before the cluster starts (:func:`dnmf.api.prepare`:
the options, the input, the checkpoint directory; then OUT's destination and free
space), runs on an embedded ``LocalCluster`` or ``--scheduler``, shows a progress bar
and writes its result atomically (:mod:`dnmf.io.results`).

``dnmf fit --config FILE.yaml`` reads a mapping whose keys are the command's long option
names (without ``--``); options given on the command line override the file, and an
unknown key is an error listing the valid ones. ``--show-config`` prints the resolved
options as such a file and exits.

After a corrupted checkpoint, ``dnmf resume DIR --from NAME`` resumes from the older,
intact checkpoint that the error names.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

import click
import yaml

from .. import api
from ..apps.consensus_checkpoint import is_consensus_checkpoint
from ..engine.checkpoint import CURRENT, load_checkpoint
from ..engine.durable import check_destination, check_writable, factor_bytes
from ..engine.location import Location, is_url, shown
from ..errors import InputError, ParameterError
from ..io.formats import matrix_labels
from ..io.generate import DEFAULT_DTYPE, DEFAULT_NOISE, DEFAULT_SEED, generate
from ..io.results import FIT_KIND, H5AD_SUFFIX, check_h5ad_destination, read_result, write_fit, write_transform
from ..io.storage import value_dtype
from ..params import DEFAULTS
from .interrupt import Interrupted, quiet_shutdown
from .options import (
    CLI_DEFAULTS,
    Bar,
    Progress,
    absolute,
    check_paths,
    config_option,
    fit_values,
    flag,
    input_bytes,
    input_options,
    open_input,
    output_options,
    param_options,
    resolved_config,
    running_on,
    scheduler_options,
    storage_option,
)

__all__ = ["COMMANDS", "demo", "fit", "resume", "transform"]

logger = logging.getLogger(__name__)

#: Shape, rank and iterations of ``dnmf demo``.
DEMO_SHAPE = (20000, 1000)
DEMO_RANK = 10
DEMO_MAX_ITER = 50
#: Names of the demo's files in its work directory.
DEMO_INPUT = "demo-input.zarr"
DEMO_OUTPUT = "demo-result.zarr"


def _interrupted_at(iteration, checkpoint, storage_options=None):
    where = f"interrupted after iteration {iteration}" if iteration else "interrupted before the first iteration"
    if checkpoint is None:
        return f"{where}; nothing was saved (--checkpoint DIR keeps the progress of a fit)"
    directory = Location.of(checkpoint, storage_options)
    try:
        current = directory.join(CURRENT).read_text().strip()
    except OSError:
        return f"{where}; no checkpoint was complete yet in {directory}"
    return f"{where}; the last complete checkpoint is {directory.join(current)}: resume with `dnmf resume {directory}`"


def _fit_job(
    input_path,
    params,
    *,
    out,
    overwrite,
    read=None,
    checkpoint=None,
    every=None,
    seconds=None,
    resume_from=None,
    scheduler=None,
    quiet=False,
):
    """Fit ``input_path`` (read as ``read`` says: :data:`~dnmf.cli.options.READ_OPTIONS`;
    checkpointing and resuming if asked) and write OUT.

    Returns
    -------
    attrs : dict
        The attributes written to OUT.
    seconds : float
        Wall time of the fit (without cluster start-up and writing OUT).
    """
    input_path, out, checkpoint = absolute(input_path), absolute(out), absolute(checkpoint)
    options = params.get("storage_options")
    check_paths(input_path, out, checkpoint)
    if out.endswith(H5AD_SUFFIX):
        check_h5ad_destination(Location.of(out, options))
    check_destination(out, overwrite, options)  # before a conversion of INPUT, which may take minutes
    read = {name: value for name, value in (read or {}).items() if value is not None}
    source = open_input(input_path, **read, out=out, quiet=quiet, storage_options=options)
    checkpointing = None
    if checkpoint is not None:
        run_info = {"input": shown(input_path), "read": read, "out": shown(out), "every": every, "seconds": seconds}
        checkpointing = api.Checkpointing(checkpoint, every, seconds, run_info, resume_from)
    job = api.prepare(source, params, checkpointing=checkpointing, spell=flag)
    nbytes = factor_bytes(job.panels.shape, job.config.n_components, job.panels.dtype)
    check_writable(out, nbytes, "OUT", storage_options=options)
    if job.start is not None and not quiet:
        click.echo(f"resuming {checkpoint} from iteration {job.start.iteration}", err=True)
    with running_on(**(scheduler or {}), quiet=quiet, work_bytes=input_bytes(job.panels)):
        progress = Progress(job.config.max_iter, 0 if job.start is None else job.start.iteration, quiet)
        started = time.perf_counter()
        try:
            result = api.run_job(job, callback=progress)
        except InputError as error:  # found by the statistics pass: name the file
            raise InputError(f"{input_path}: {error}") from None
        except KeyboardInterrupt:
            quiet_shutdown()  # before the cluster is torn down below
            raise Interrupted(_interrupted_at(progress.iteration, checkpoint, options)) from None
        finally:
            progress.close()
        elapsed = time.perf_counter() - started
        labels = matrix_labels(input_path) if out.endswith(H5AD_SUFFIX) and not is_url(input_path) else (None, None)
        attrs = write_fit(
            out,
            result,
            job.config.params,
            input_path=shown(input_path),
            overwrite=overwrite,
            labels=labels,
            storage_options=options,
        )
    return attrs, elapsed


def _summary(out, attrs, elapsed):
    return (
        f"wrote {out}: n_iter={attrs['n_iter']}, reconstruction_err={attrs['reconstruction_err']:.6g}, "
        f"relative_err={attrs['relative_err']:.4g} ({elapsed:.1f} s)"
    )


@click.command()
@click.argument("input_path", metavar="INPUT")
@input_options
@param_options
@click.option(
    "--out",
    "-o",
    metavar="OUT.zarr",
    default=None,
    help="Result to write (required): a Zarr group, or an AnnData file if it ends in .h5ad.",
)
@click.option(
    "--checkpoint",
    metavar="DIR",
    default=None,
    help="Checkpoint directory; a matching checkpoint there is resumed.",
)
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    metavar="N",
    default=None,
    help="Checkpoint every N iterations.",
)
@click.option(
    "--checkpoint-seconds",
    type=click.FloatRange(min=0, min_open=True),
    metavar="S",
    default=None,
    help="Also checkpoint every S seconds.",
)
@scheduler_options
@storage_option
@click.option("--overwrite", is_flag=True, default=False, help="Replace an existing OUT.")
@config_option
@click.option("--show-config", is_flag=True, help="Print the resolved options as YAML and exit.")
@output_options
def fit(
    input_path,
    layer,
    dtype,
    store,
    out,
    checkpoint,
    checkpoint_every,
    checkpoint_seconds,
    scheduler,
    workers,
    memory_limit,
    threads,
    storage_options,
    overwrite,
    show_config,
    quiet,
    verbose,
    **values,
):
    """Factorize INPUT and write OUT.zarr (or OUT.h5ad).

    INPUT: a Zarr array or CSR group, .npy, .npz, an AnnData file (.h5ad or Zarr; X or
    --layer), a 10x Genomics .h5 file or MEX directory, or MatrixMarket (.mtx, .mtx.gz).
    INPUT, OUT and --checkpoint may be URLs (s3://bucket/V.zarr, gs://, abfs://, any
    fsspec URL): Zarr arrays and CSR groups (and .npy/.npz, read whole) as INPUT, Zarr
    results and checkpoints as OUT and DIR.

    OUT is a Zarr group with arrays W and H and attrs n_iter, reconstruction_err,
    relative_err, loss_history and params; an OUT ending in .h5ad is an AnnData file with
    INPUT's obs/var names, obsm["X_nmf"] = W, varm["NMF_components"] = H transposed and
    the same record in uns["nmf"].
    """
    if show_config:
        click.echo(yaml.safe_dump(resolved_config(click.get_current_context()), sort_keys=False), nl=False)
        return
    if out is None:
        raise click.UsageError("missing option '--out' (the result group to write)")
    params = {
        **CLI_DEFAULTS,
        **fit_values(values),
        **({} if storage_options is None else {"storage_options": storage_options}),
    }
    if "n_components" not in params:
        raise click.UsageError("missing option '--rank' (the number of components)")
    if params.get("init") == "custom":
        raise ParameterError(
            "--init custom needs initial W and H, which the command line cannot pass; use the Python API"
        )
    if checkpoint is None and (checkpoint_every is not None or checkpoint_seconds is not None):
        logger.info("no --checkpoint DIR: --checkpoint-every/--checkpoint-seconds ignored")
    attrs, elapsed = _fit_job(
        input_path,
        params,
        out=out,
        overwrite=overwrite,
        read=dict(layer=layer, dtype=dtype, store=store),
        checkpoint=checkpoint,
        every=checkpoint_every,
        seconds=checkpoint_seconds,
        scheduler=dict(address=scheduler, workers=workers, memory_limit=memory_limit, threads=threads or None),
        quiet=quiet,
    )
    if not quiet:
        click.echo(_summary(absolute(out), attrs, elapsed))


@click.command()
@click.argument("directory", metavar="DIR")
@click.option(
    "--max-iter",
    type=click.IntRange(min=1),
    metavar="N",
    default=None,
    help="New iteration limit (counts all iterations).",
)
@click.option(
    "--out", "-o", metavar="OUT.zarr", default=None, help="Write here instead of the OUT of the original fit."
)
@click.option(
    "--from",
    "from_name",
    metavar="NAME",
    default=None,
    help="Resume from this checkpoint of DIR (e.g. ckpt-000010), such as the intact one a checksum error names.",
)
@scheduler_options
@storage_option
@click.option("--overwrite", is_flag=True, default=False, help="Replace an existing OUT.")
@output_options
def resume(
    directory,
    max_iter,
    out,
    from_name,
    scheduler,
    workers,
    memory_limit,
    threads,
    storage_options,
    overwrite,
    quiet,
    verbose,
):
    """Finish the checkpointed `dnmf fit` in DIR (a path or URL) and write its OUT, or
    the `dnmf consensus` whose --checkpoint is DIR and write its DIR.

    Storage options are never recorded: pass --storage-options again when the fit had them.
    """
    directory = absolute(directory)
    if not is_url(directory) and is_consensus_checkpoint(directory):
        from .consensus import resume_consensus

        if max_iter is not None or from_name is not None or storage_options is not None:
            raise click.UsageError("--max-iter, --from and --storage-options do not apply to a consensus")
        resume_consensus(
            directory,
            out=out,
            overwrite=overwrite,
            quiet=quiet,
            scheduler=dict(address=scheduler, workers=workers, memory_limit=memory_limit, threads=threads or None),
        )
        return
    _, metadata = load_checkpoint(directory, name=from_name, storage_options=storage_options)
    run_info = metadata["run"]
    if not run_info.get("input"):
        raise InputError(f"{directory} was not written by `dnmf fit` (it records no input); resume it from Python")
    out = out or run_info.get("out")
    params = {
        **DEFAULTS,
        **metadata["all_params"],
        **({} if max_iter is None else {"max_iter": max_iter}),
        "storage_options": storage_options,
    }
    attrs, elapsed = _fit_job(
        run_info["input"],
        params,
        out=out,
        overwrite=overwrite,
        read=run_info.get("read"),
        checkpoint=directory,
        every=run_info.get("every"),
        seconds=run_info.get("seconds"),
        resume_from=from_name,
        scheduler=dict(address=scheduler, workers=workers, memory_limit=memory_limit, threads=threads or None),
        quiet=quiet,
    )
    if not quiet:
        click.echo(_summary(absolute(out), attrs, elapsed))


@click.command()
@click.argument("input_path", metavar="INPUT")
@input_options
@click.option("--model", required=True, metavar="OUT.zarr", help="A result of `dnmf fit` (its H is used).")
@click.option("--out", "-o", required=True, metavar="W.zarr", help="Group to write (array W and errors).")
@click.option(
    "--max-iter",
    type=click.IntRange(min=1),
    metavar="N",
    default=None,
    help="Updates per panel. [default: the model's max_iter]",
)
@scheduler_options
@storage_option
@click.option("--overwrite", is_flag=True, default=False, help="Replace an existing OUT.")
@output_options
def transform(
    input_path,
    layer,
    dtype,
    store,
    model,
    out,
    max_iter,
    scheduler,
    workers,
    memory_limit,
    threads,
    storage_options,
    overwrite,
    quiet,
    verbose,
):
    """Project the rows of INPUT on a fitted H: solve W >= 0 with H fixed, write W.zarr.

    INPUT, --model and --out may be URLs (see `dnmf fit --help`)."""
    input_path, model, out = absolute(input_path), absolute(model), absolute(out)
    check_paths(input_path, out)
    fitted = read_result(model, storage_options)
    if fitted.kind != FIT_KIND:
        raise InputError(f"{model} is a transform result; --model needs the OUT of `dnmf fit`")
    params = {
        **DEFAULTS,
        **fitted.attrs["params"],
        "n_components": int(fitted.H.shape[0]),
        "storage_options": storage_options,
    }
    if max_iter is not None:
        params["max_iter"] = max_iter
    check_destination(out, overwrite, storage_options)  # before a conversion of INPUT
    source = open_input(
        input_path, layer=layer, dtype=dtype, store=store, out=out, quiet=quiet, storage_options=storage_options
    )
    H = fitted.H.astype(value_dtype(source.dtype, input_path), copy=False)  # as the estimator: H in X's dtype
    job = api.prepare(source, params, H=H, update_H=False, spell=flag)
    check_writable(
        out,
        factor_bytes((job.panels.shape[0], 0), job.config.n_components, job.panels.dtype),
        "OUT",
        storage_options=storage_options,
    )
    with running_on(scheduler, workers, memory_limit, threads or None, quiet=quiet):
        started = time.perf_counter()
        result = api.run_job(job)
        elapsed = time.perf_counter() - started
        attrs = write_transform(
            out,
            result,
            model=shown(model),
            input_path=shown(input_path),
            overwrite=overwrite,
            storage_options=storage_options,
        )
    if not quiet:
        rows, k = result.W.shape
        click.echo(f"wrote {out}: W {rows} x {k}, relative_err={attrs['relative_err']:.4g} ({elapsed:.1f} s)")


@click.command()
@click.option(
    "--workdir",
    metavar="DIR",
    default=None,
    help=f"Keep {DEMO_INPUT} and {DEMO_OUTPUT} here (replaced if present). [default: a temporary directory, removed]",
)
@click.option("--shape", nargs=2, type=click.IntRange(min=1), default=DEMO_SHAPE, metavar="M N", show_default=True)
@click.option("--rank", type=click.IntRange(min=1), default=DEMO_RANK, metavar="K", show_default=True)
@click.option("--max-iter", type=click.IntRange(min=1), default=DEMO_MAX_ITER, metavar="N", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=DEFAULT_SEED, metavar="S", show_default=True)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    default=None,
    help="Workers of the embedded LocalCluster.",
)
@click.option("--memory-limit", metavar="SIZE", default=None, help="Memory limit per worker. [default: auto]")
@click.option(
    "--processes", is_flag=True, default=False, help="Workers in their own processes (as `dnmf fit`), not threads."
)
@output_options
def demo(workdir, shape, rank, max_iter, seed, workers, memory_limit, processes, quiet, verbose):
    """Generate a low-rank + noise matrix in Zarr and factorize it on an embedded cluster.

    The cluster's workers are threads of this process by default: they start at once,
    which suits a job this size.
    """
    temporary = workdir is None
    where = Path(tempfile.mkdtemp(prefix="dnmf-demo-") if temporary else absolute(workdir))
    where.mkdir(parents=True, exist_ok=True)
    data, out = where / DEMO_INPUT, where / DEMO_OUTPUT
    try:
        started = time.perf_counter()
        bar = Bar(shape[0], "generate", "rows", quiet)
        try:
            generated = generate(data, shape, rank, noise=DEFAULT_NOISE, seed=seed, overwrite=True, progress=bar.update)
        finally:
            bar.close()
        generated_in = time.perf_counter() - started
        params = {"n_components": rank, "max_iter": max_iter, "tol": 0.0, "random_state": seed}
        attrs, elapsed = _fit_job(
            data,
            params,
            out=out,
            overwrite=True,
            scheduler=dict(workers=workers, memory_limit=memory_limit, threads=not processes),
            quiet=quiet,
        )
        lines = [
            f"dnmf demo: V is {shape[0]} x {shape[1]} {DEFAULT_DTYPE}, rank {rank} + uniform noise "
            f"[0, {DEFAULT_NOISE}) (generated in {generated_in:.1f} s)",
            f"fit: {attrs['n_iter']} iterations in {elapsed:.1f} s ({elapsed / max(1, attrs['n_iter']):.3f} s/iteration)",
            f"relative error {attrs['relative_err']:.4f} (noise floor ~{generated['noise_floor']:.4f})",
            f"files: {data}, {out}" if not temporary else "files: removed (use --workdir DIR to keep them)",
        ]
        if not quiet:
            click.echo("\n".join(lines))
    finally:
        if temporary:
            shutil.rmtree(where, ignore_errors=True)


#: The commands of this module, registered on the ``dnmf`` group by :mod:`dnmf.cli.main`.
COMMANDS = (fit, resume, transform, demo)
