"""``dnmf generate`` and ``dnmf info``: make a test matrix, describe what is on disk."""

from __future__ import annotations

import json

import click

from ..io.describe import describe
from ..io.generate import (
    DEFAULT_DTYPE,
    DEFAULT_NOISE,
    DEFAULT_RANK,
    DEFAULT_SEED,
    DEFAULT_SHAPE,
    DTYPES,
    SHAPES,
    generate,
)
from .options import Bar, absolute, output_options, storage_option

__all__ = ["COMMANDS", "generate_command", "info"]


@click.command("generate")
@click.argument("out", metavar="OUT.zarr")
@click.option(
    "--shape",
    nargs=2,
    type=click.IntRange(min=1),
    default=None,
    metavar="M N",
    help=f"[default: {DEFAULT_SHAPE[0]} {DEFAULT_SHAPE[1]}, or the --like graph's]",
)
@click.option(
    "--rank",
    type=click.IntRange(min=1),
    default=None,
    metavar="K",
    help=f"Planted rank (a graph's communities). [default: {DEFAULT_RANK}, or the --like graph's]",
)
@click.option(
    "--noise",
    type=float,
    default=None,
    metavar="F",
    help=f"Amplitude of the uniform [0, F) noise added. [default: {DEFAULT_NOISE}; a graph has none]",
)
@click.option(
    "--density",
    type=float,
    default=None,
    metavar="D",
    help="Keep each entry with probability D and write a CSR group.",
)
@click.option(
    "--nnz",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Draw a user-item graph of about N entries (power-law degrees, planted communities) as a CSR group.",
)
@click.option(
    "--like",
    type=click.Choice(sorted(SHAPES)),
    default=None,
    help="A graph of the shape, entries and rank of a published benchmark: "
    + "; ".join(
        f"{name} {s[0][0]:,} x {s[0][1]:,}, {s[1]:,} entries, rank {s[2]}" for name, s in sorted(SHAPES.items())
    )
    + ".",
)
@click.option(
    "--chunks", "chunk_rows", type=click.IntRange(min=1), default=None, metavar="ROWS", help="Rows per stored chunk."
)
@click.option("--dtype", type=click.Choice(DTYPES), default=DEFAULT_DTYPE, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=DEFAULT_SEED, metavar="S", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
@storage_option
@output_options
def generate_command(
    out, shape, rank, noise, density, nnz, like, chunk_rows, dtype, seed, overwrite, storage_options, quiet, verbose
):
    """Write a synthetic non-negative matrix of planted rank to OUT (a path or URL): low rank + noise (dense Zarr,
    or CSR with --density), or a user-item graph (CSR, with --nnz or --like)."""
    if like is not None:
        if density is not None:
            raise click.UsageError("--like draws a graph; --density keeps entries of a low-rank matrix: give one")
        like_shape, like_nnz, like_rank = SHAPES[like]
        shape, nnz, rank = shape or like_shape, nnz or like_nnz, rank or like_rank
    shape, rank = tuple(shape or DEFAULT_SHAPE), rank or DEFAULT_RANK
    if nnz is not None and noise is not None:
        raise click.UsageError("--noise does not apply to a graph (--nnz, --like): its entries are counts of draws")
    if nnz is not None and density is not None:
        raise click.UsageError("give --density or --nnz, not both")
    out = absolute(out)
    bar = Bar(shape[0], "generate", "rows", quiet)
    try:
        info = generate(
            out,
            shape,
            rank,
            noise=noise,
            density=density,
            nnz=nnz,
            chunk_rows=chunk_rows,
            dtype=dtype,
            seed=seed,
            overwrite=overwrite,
            progress=bar.update,
            storage_options=storage_options,
        )
    finally:
        bar.close()
    if not quiet:
        size = f"{shape[0]} x {shape[1]} {dtype}"
        if nnz is not None:
            click.echo(f"wrote {out}: {size} (CSR, nnz={info['nnz']}), a graph of {rank} planted communities")
        else:
            kind = "dense" if density is None else f"CSR, nnz={info['nnz']}"
            click.echo(f"wrote {out}: {size} ({kind}), rank {rank} + uniform noise {info['noise']}")


def _format_value(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{key}={_format_value(item)}" for key, item in value.items())
    if isinstance(value, list) and value and all(isinstance(item, int) for item in value):
        return " x ".join(str(item) for item in value) if len(value) <= 3 else f"{len(value)} values"
    return str(value)


@click.command()
@click.argument("path", metavar="PATH")
@click.option("--layer", metavar="NAME", default=None, help="Describe this layer of an AnnData file instead of X.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@storage_option
@output_options
def info(path, layer, as_json, storage_options, quiet, verbose):
    """Describe an input matrix, a fit/transform result or a checkpoint directory (a path or URL)."""
    described = describe(path, layer=layer, storage_options=storage_options)
    if as_json:
        click.echo(json.dumps(described, indent=2, default=str))
        return
    width = max(len(key) for key in described)
    for key, value in described.items():
        if key in ("bytes", "stored_bytes"):
            value = f"{value} ({value / 2**20:.1f} MiB)"
        click.echo(f"{key:<{width}}  {_format_value(value)}")


#: The commands of this module, registered on the ``dnmf`` group by :mod:`dnmf.cli.main`.
COMMANDS = (generate_command, info)
