"""The ``dnmf`` command line: generate, info, fit, resume, transform, demo (and the
``plot``, ``topics`` and ``similar`` commands of :mod:`dnmf.cli_explore`).

Every fit parameter is an option generated from :data:`dnmf.params.PARAMS` (the long
name is :attr:`Param.option`; ``n_components`` is also ``--rank`` and ``random_state``
``--seed``), so the CLI, YAML configs, the estimator and the functional API accept the
same names and reject bad values with the same messages.

``dnmf fit --config FILE.yaml`` reads a mapping whose keys are the command's long option
names (without ``--``); options given on the command line override the file, and an
unknown key is an error listing the valid ones. ``--show-config`` prints the resolved
options as such a file and exits.

Jobs run on an embedded ``LocalCluster`` (``--workers``, ``--memory-limit``; its
dashboard link is logged) or, with ``--scheduler tcp://HOST:PORT``, on an existing Dask
cluster. A progress bar on stderr shows iteration / max_iter, the loss, its relative
change, seconds per iteration and the ETA; ``--quiet`` silences it, ``-v`` / ``-vv``
turn on logging.

Bad input (a missing file, a bad value, an existing OUT, an unreachable scheduler, a
checkpoint that does not match or fails its checksums) and an unusable destination (no
permission, a read-only or full file system: probed before the cluster starts) exit with
status 2 and one line on stderr starting with ``error:``; ``-v`` adds the traceback.
The embedded cluster's own log lines (e.g. a task's traceback) are shown from ``-v`` on.

After a corrupted checkpoint, ``dnmf resume DIR --from NAME`` resumes from the older,
intact checkpoint that the error names.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import yaml
from tqdm import tqdm

from . import checkpoint as ckpt
from .api import DEFAULTS, run
from .generate import DEFAULT_DTYPE, DEFAULT_NOISE, DEFAULT_RANK, DEFAULT_SEED, DEFAULT_SHAPE, DTYPES, generate
from .masked import normalize_missing
from .params import PARAMS, validate_params
from .results import (
    FIT_KIND,
    check_destination,
    check_writable,
    factor_bytes,
    read_result,
    stored_attrs,
    write_fit,
    write_transform,
)
from .scheduler import local_cluster, use_scheduler
from .storage import CSRMatrix, as_panels, open_matrix

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "LIBRARY_ERRORS", "cli", "describe", "main"]

logger = logging.getLogger(__name__)

#: Exit status for bad input (as click's usage errors).
EXIT_BAD_INPUT = 2
#: Exit status after Ctrl-C.
EXIT_INTERRUPTED = 130
#: Exceptions from the library that mean "bad input" (or an unusable destination: OSError):
#: one ``error:`` line, exit 2.
LIBRARY_ERRORS = (ValueError, TypeError, OSError)
#: Defaults of the command line that differ from the Python API's: a command gives the
#: same numbers every time it is run (scikit-learn's random_state=None draws a new start).
CLI_DEFAULTS = {"random_state": 0}
#: Extra option names of some parameters (listed first: they are the documented ones).
ALIASES = {"n_components": ("--rank",), "random_state": ("--seed",), "missing_values": ("--missing",)}
#: Parameters that are not plain options: ``client`` is ``--scheduler``, ``verbose`` is ``-v``.
NOT_OPTIONS = ("client", "verbose")
#: Metavars of the generated options.
METAVARS = {
    "n_components": "K",
    "init": "NAME",
    "solver": "cd|mu",
    "beta_loss": "NAME|FLOAT",
    "tol": "T",
    "max_iter": "N",
    "random_state": "S",
    "alpha_W": "A",
    "alpha_H": "A|same",
    "l1_ratio": "R",
    "inner_sweeps": "N",
    "extrapolate": "true|false",
    "panel_rows": "ROWS",
    "missing_values": "nan|absent",
}
#: Options that are not config keys.
NOT_CONFIG_KEYS = ("config", "show_config", "help")
#: Shape, rank and iterations of ``dnmf demo``.
DEMO_SHAPE = (20000, 1000)
DEMO_RANK = 10
DEMO_MAX_ITER = 50
#: Names of the demo's files in its work directory.
DEMO_INPUT = "demo-input.zarr"
DEMO_OUTPUT = "demo-result.zarr"
#: Log line format for ``-v``.
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"

_PARAM_NAMES = tuple(p.name for p in PARAMS if p.name not in NOT_OPTIONS)


@dataclass
class _Session:
    """What the error handler must know about the running command."""

    verbose: int = 0
    quiet: bool = False


_SESSION = _Session()


# ------------------------------------------------------------------- option helpers


class _Scalar(click.ParamType):
    """A YAML-like scalar: ``none`` → None, ``true``/``false`` → bool, then int, then float,
    else the string."""

    name = "value"

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value
        text = value.strip()
        if text.lower() in ("none", "null", "~"):
            return None
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
        return text


_SCALAR = _Scalar()


def _param_options(command):
    """Add one option per row of the parameter table."""
    for spec in reversed([p for p in PARAMS if p.name not in NOT_OPTIONS]):
        names = [*ALIASES.get(spec.name, ()), f"--{spec.option}", spec.name]
        help_text = f"{spec.doc} [default: {CLI_DEFAULTS.get(spec.name, spec.default)}]"
        command = click.option(*names, type=_SCALAR, default=None, metavar=METAVARS.get(spec.name, "VALUE"), help=help_text)(
            command
        )
    return command


def _scheduler_options(command):
    command = click.option(
        "--threads",
        is_flag=True,
        default=False,
        help="Run the embedded cluster's workers as threads of this process (starts at once; for small jobs).",
    )(command)
    command = click.option(
        "--memory-limit", metavar="SIZE", default=None, help="Memory limit per embedded worker, e.g. 2GiB. [default: auto]"
    )(command)
    command = click.option(
        "--workers", type=click.IntRange(min=1), metavar="N", default=None, help="Workers of the embedded LocalCluster."
    )(command)
    command = click.option(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help="Run on the Dask scheduler at ADDRESS (tcp://HOST:PORT) instead of an embedded LocalCluster.",
    )(command)
    return command


def _output_options(command):
    command = click.option("-v", "--verbose", count=True, help="Log progress (-vv: debug, and Dask's logs).")(command)
    command = click.option("-q", "--quiet", is_flag=True, default=False, help="No progress bar, no summary.")(command)
    return command


def _config_keys(command):
    """``{config key: parameter name}`` for the long options of ``command``."""
    keys = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.name not in NOT_CONFIG_KEYS:
            for opt in param.opts:
                if opt.startswith("--"):
                    keys[opt[2:]] = param.name
    return keys


def _load_config(ctx, param, value):
    """Eager callback of ``--config``: the file becomes the defaults the flags override."""
    if value is None:
        return None
    try:
        data = yaml.safe_load(Path(value).read_text())
    except FileNotFoundError:
        raise click.BadParameter(f"config file not found: {value}") from None
    except yaml.YAMLError as error:
        raise click.BadParameter(f"{value} is not valid YAML ({' '.join(str(error).split())})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise click.BadParameter(f"{value} must hold a mapping of option: value, got {type(data).__name__}")
    keys = _config_keys(ctx.command)
    unknown = sorted(str(key) for key in data if str(key) not in keys)
    if unknown:
        raise click.BadParameter(
            f"unknown key(s) {', '.join(unknown)} in {value}; valid keys: {', '.join(sorted(keys))}"
        )
    names = [keys[str(key)] for key in data]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise click.BadParameter(f"{value} sets {', '.join(repeated)} twice (under two names)")
    ctx.default_map = {**(ctx.default_map or {}), **{keys[str(key)]: item for key, item in data.items()}}
    return value


def _config_option(command):
    return click.option(
        "--config",
        type=click.Path(dir_okay=False),
        metavar="FILE.yaml",
        callback=_load_config,
        is_eager=True,
        expose_value=False,
        help="YAML file of option: value (long option names); flags override it.",
    )(command)


def _start(verbose, quiet):
    """Record the output settings and set up logging for this command."""
    _SESSION.verbose, _SESSION.quiet = verbose, quiet
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT if verbose else "%(levelname)s: %(message)s"))
    package = logging.getLogger("dnmf")
    package.handlers[:] = [handler]
    package.propagate = False
    level = logging.ERROR if quiet else logging.WARNING
    package.setLevel({0: level, 1: logging.INFO}.get(verbose, logging.DEBUG))
    if verbose >= 2:
        logging.getLogger("distributed").setLevel(logging.INFO)


def _absolute(path):
    return None if path is None else str(Path(path).expanduser().absolute())


def flag(name):
    """The option a user types for parameter ``name``: ``max_iter`` → ``--max-iter``,
    ``n_components`` → ``--rank`` (the documented spelling)."""
    return ALIASES.get(name, (f"--{name.replace('_', '-').lower()}",))[0]


def _fit_params(values):
    """The table's parameters from the command's values (None: the table default), validated
    with messages that name the flags."""
    given = {name: values[name] for name in _PARAM_NAMES if values.get(name) is not None}
    params = {**DEFAULTS, **CLI_DEFAULTS, **given}
    validate_params(params, spell=flag)
    params["missing_values"] = normalize_missing(params["missing_values"])  # "nan" (a float NaN after parsing)
    if params["init"] == "custom":
        raise ValueError("--init custom needs initial W and H, which the command line cannot pass; use the Python API")
    return params


# ------------------------------------------------------------------ running a job


@contextlib.contextmanager
def _scheduler(address=None, workers=None, memory_limit=None, threads=False, quiet=False):
    """An embedded LocalCluster, or a connection to ``address``; current for the block."""
    if address:
        if workers is not None or memory_limit is not None or threads:
            logger.warning("--workers, --memory-limit and --threads apply to the embedded cluster; ignored with --scheduler")
        with use_scheduler(address) as client:
            logger.info("running on the Dask scheduler at %s (dashboard: %s)", address, client.dashboard_link)
            try:
                yield client
            finally:
                client.close()
        return
    silence = logging.CRITICAL if _SESSION.verbose == 0 else logging.WARNING if _SESSION.verbose == 1 else logging.INFO
    with local_cluster(
        n_workers=workers, memory_limit=memory_limit or "auto", processes=not threads, silence_logs=silence
    ) as client:
        if not quiet:
            click.echo(f"Dask dashboard: {client.dashboard_link}", err=True)
        yield client


class _Bar:
    """A tqdm bar on stderr, drawn from its first update on (an error before that prints only
    the error line)."""

    def __init__(self, total, desc, unit, quiet, initial=0, bar_format=None):
        self._options = dict(
            total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, bar_format=bar_format
        )
        self._quiet = quiet
        self.bar = None

    def _open(self):
        if self.bar is None and not self._quiet:
            self.bar = tqdm(**{key: value for key, value in self._options.items() if value is not None})
        return self.bar

    def update(self, count):
        """Advance by ``count``."""
        if self._open() is not None:
            self.bar.update(count)

    def close(self):
        """Finish the bar (if it was drawn)."""
        if self.bar is not None:
            self.bar.close()


class _Progress(_Bar):
    """The driver's callback: iteration / max_iter, loss, relative change, s/iteration, ETA.

    ``iteration`` is the last one reported (what a Ctrl-C message names)."""

    def __init__(self, max_iter, first, quiet):
        super().__init__(
            max_iter, "fit", "iter", quiet, initial=first,
            bar_format="{desc} |{bar}| {n_fmt}/{total_fmt}{postfix} [{elapsed}<{remaining}]",
        )
        self.iteration = first

    def __call__(self, info):
        self.iteration = info.iteration
        if self._open() is None:
            return
        self.bar.set_postfix_str(
            f"loss {info.loss:.5g}, change {info.relative_change:.2e}, {info.seconds:.2f} s/iter", refresh=False
        )
        self.bar.update(info.iteration - self.bar.n)


def _check_paths(input_path, out, checkpoint=None):
    """Refuse to write over (or inside) the input."""
    source = Path(input_path)
    for name, target in (("--out", out), ("--checkpoint", checkpoint)):
        if target is None:
            continue
        target = Path(target)
        if target == source or source in target.parents:
            raise ValueError(f"{name} {target} would write over the input {source}")


def _components(params, source):
    k = params["n_components"]
    return source.shape[1] if k in (None, "auto") else k


def _fit_job(
    input_path, params, *, out, overwrite, checkpoint=None, every=None, seconds=None, scheduler=None, quiet=False,
    resume_from=None,
):
    """Fit ``input_path`` (checkpointing and resuming if asked) and write OUT.

    Returns
    -------
    result : dnmf.driver.FitResult
    attrs : dict
        The attributes written to OUT.
    seconds : float
        Wall time of the fit (without cluster start-up and writing OUT).
    """
    input_path, out, checkpoint = _absolute(input_path), _absolute(out), _absolute(checkpoint)
    _check_paths(input_path, out, checkpoint)
    check_destination(out, overwrite)
    source = open_matrix(input_path)
    panels = as_panels(source, panel_rows=params["panel_rows"])  # the input's checks, before anything starts
    validate_params(params, shape=panels.shape, spell=flag)
    check_writable(out, factor_bytes(panels.shape, _components(params, source), panels.dtype), "OUT")
    start = checkpointer = None
    if checkpoint is not None:  # probed, verified and matched before the cluster starts too
        run_info = {"input": input_path, "out": out, "every": every, "seconds": seconds}
        checkpointer = ckpt.ZarrCheckpointer(
            checkpoint, source, params, every=every, seconds=seconds, run_info=run_info, resume_from=resume_from
        )
        panels, start = checkpointer.panels, checkpointer.resume_state()
        if start is not None and not quiet:
            click.echo(f"resuming {checkpoint} from iteration {start.iteration}", err=True)
    with _scheduler(**(scheduler or {}), quiet=quiet):
        progress = _Progress(params["max_iter"], 0 if start is None else start.iteration, quiet)
        started = time.perf_counter()
        try:
            result = run(panels, params, callback=progress, start=start, checkpointer=checkpointer)
        except KeyboardInterrupt:
            _quiet_shutdown()  # before the cluster is torn down below
            raise Interrupted(_interrupted_at(progress.iteration, checkpoint)) from None
        finally:
            progress.close()
        elapsed = time.perf_counter() - started
        attrs = write_fit(out, result, params, input_path=input_path, overwrite=overwrite)
    return result, attrs, elapsed


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a fit, with what the user can do next (the one line ``main`` prints)."""


def _interrupted_at(iteration, checkpoint):
    where = f"interrupted after iteration {iteration}" if iteration else "interrupted before the first iteration"
    if checkpoint is None:
        return f"{where}; nothing was saved (--checkpoint DIR keeps the progress of a fit)"
    try:
        current = (Path(checkpoint) / ckpt.CURRENT).read_text().strip()
    except OSError:
        return f"{where}; no checkpoint was complete yet in {checkpoint}"
    return f"{where}; the last complete checkpoint is {Path(checkpoint) / current}: resume with `dnmf resume {checkpoint}`"


def _summary(out, attrs, elapsed):
    return (
        f"wrote {out}: n_iter={attrs['n_iter']}, reconstruction_err={attrs['reconstruction_err']:.6g}, "
        f"relative_err={attrs['relative_err']:.4g} ({elapsed:.1f} s)"
    )


# ------------------------------------------------------------------------ commands


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="dnmf", prog_name="dnmf")
def cli():
    """Out-of-core non-negative matrix factorization (V ≈ W·H) on Dask and Zarr."""


@cli.command()
@click.argument("out", metavar="OUT.zarr")
@click.option("--shape", nargs=2, type=click.IntRange(min=1), default=DEFAULT_SHAPE, metavar="M N", show_default=True)
@click.option("--rank", type=click.IntRange(min=1), default=DEFAULT_RANK, metavar="K", show_default=True)
@click.option(
    "--noise", type=float, default=DEFAULT_NOISE, metavar="F", show_default=True,
    help="Amplitude of the uniform [0, F) noise added.",
)
@click.option(
    "--density", type=float, default=None, metavar="D",
    help="Keep each entry with probability D and write a CSR group.",
)
@click.option(
    "--chunks", "chunk_rows", type=click.IntRange(min=1), default=None, metavar="ROWS",
    help="Rows per stored chunk.",
)
@click.option("--dtype", type=click.Choice(DTYPES), default=DEFAULT_DTYPE, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=DEFAULT_SEED, metavar="S", show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
@_output_options
def generate_command(out, shape, rank, noise, density, chunk_rows, dtype, seed, overwrite, quiet, verbose):
    """Write a synthetic non-negative low-rank + noise matrix (dense Zarr, or CSR with --density)."""
    _start(verbose, quiet)
    out = _absolute(out)
    bar = _Bar(shape[0], "generate", "rows", quiet)
    try:
        info = generate(
            out, shape, rank, noise=noise, density=density, chunk_rows=chunk_rows, dtype=dtype, seed=seed,
            overwrite=overwrite, progress=bar.update,
        )
    finally:
        bar.close()
    if not quiet:
        kind = "dense" if density is None else f"CSR, nnz={info['nnz']}"
        click.echo(f"wrote {out}: {shape[0]} x {shape[1]} {dtype} ({kind}), rank {rank} + uniform noise {noise}")


cli.add_command(generate_command, "generate")


def _disk_bytes(path):
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _describe_matrix(path):
    matrix = open_matrix(path)
    info = {"path": path, "shape": list(matrix.shape), "dtype": str(matrix.dtype)}
    if isinstance(matrix, CSRMatrix):
        m, n = matrix.shape
        info.update(
            kind="CSR group (Zarr)",
            chunks=f"{matrix.data.chunks[0]} entries per chunk of indices/data",
            nnz=matrix.nnz,
            density=matrix.nnz / (m * n),
            bytes=int(matrix.nnz * (matrix.dtype.itemsize + matrix.indices.dtype.itemsize) + (m + 1) * 8),
        )
    elif hasattr(matrix, "format") and not isinstance(matrix, np.ndarray):  # scipy.sparse from .npz
        info.update(kind="SciPy sparse (.npz)", chunks=None, nnz=int(matrix.nnz), density=matrix.nnz / np.prod(matrix.shape))
        info["bytes"] = int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes)
    elif isinstance(matrix, np.ndarray):
        info.update(kind="NumPy array (.npy, memory-mapped)", chunks=None, nnz="not counted (dense)", bytes=int(matrix.nbytes))
    else:
        info.update(
            kind="dense Zarr array",
            chunks=list(matrix.chunks),
            nnz="not counted (dense)",
            bytes=int(np.prod(matrix.shape) * matrix.dtype.itemsize),
        )
    info["stored_bytes"] = _disk_bytes(path)
    generator = stored_attrs(path).get("generator")
    if generator:
        info["generator"] = generator
    return info


def _describe_checkpoint(path):
    state, metadata = ckpt.load_checkpoint(path)
    fingerprint = metadata["fingerprint"]
    history = state.loss_history
    return {
        "path": path,
        "kind": "dnmf checkpoint directory",
        "current": Path(metadata["path"]).name,
        "checkpoints": metadata["checkpoints"],
        "iteration": state.iteration,
        "finished": state.finished,
        "loss": history[-1] if history else None,
        "shape": fingerprint["shape"],
        "dtype": fingerprint["dtype"],
        "sparse": fingerprint["sparse"],
        "W": list(state.W.shape),
        "H": list(state.H.shape),
        "input": metadata["run"].get("input"),
        "out": metadata["run"].get("out"),
        "params": metadata["all_params"],
        "created": metadata["created"],
        "stored_bytes": _disk_bytes(path),
    }


def _describe_result(result):
    attrs = result.attrs
    info = {
        "path": result.path,
        "kind": "dnmf fit result" if result.kind == FIT_KIND else "dnmf transform result",
        "W": list(result.W.shape),
        "dtype": str(result.W.dtype),
        "n_iter": attrs.get("n_iter"),
        "reconstruction_err": attrs.get("reconstruction_err"),
        "relative_err": attrs.get("relative_err"),
    }
    if result.kind == FIT_KIND:
        history = attrs.get("loss_history") or []
        info.update(
            H=list(result.H.shape),
            loss=history[-1] if history else None,
            converged=attrs.get("converged"),
            params=attrs.get("params"),
        )
    else:
        info["model"] = attrs.get("model")
    info["input"] = attrs.get("input")
    info["stored_bytes"] = _disk_bytes(result.path)
    return info


def describe(path):
    """What ``dnmf info`` shows about ``path``: an input matrix, a result or a checkpoint directory."""
    path = _absolute(path)
    target = Path(path)
    if not target.exists():
        raise FileNotFoundError(f"not found: {path}")
    if target.is_dir() and ((target / ckpt.CURRENT).exists() or any(target.glob("ckpt-*"))):
        return _describe_checkpoint(path)
    if target.suffix not in (".npy", ".npz"):
        try:
            return _describe_result(read_result(path))
        except ValueError:
            pass
    return _describe_matrix(path)


def _format_value(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{key}={_format_value(item)}" for key, item in value.items())
    if isinstance(value, list) and value and all(isinstance(item, int) for item in value):
        return " x ".join(str(item) for item in value) if len(value) <= 3 else f"{len(value)} values"
    return str(value)


@cli.command()
@click.argument("path", metavar="PATH")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_output_options
def info(path, as_json, quiet, verbose):
    """Describe an input matrix, a fit/transform result or a checkpoint directory."""
    _start(verbose, quiet)
    described = describe(path)
    if as_json:
        click.echo(json.dumps(described, indent=2, default=str))
        return
    width = max(len(key) for key in described)
    for key, value in described.items():
        if key == "bytes" or key == "stored_bytes":
            value = f"{value} ({value / 2**20:.1f} MiB)"
        click.echo(f"{key:<{width}}  {_format_value(value)}")


@cli.command()
@click.argument("input_path", metavar="INPUT")
@_param_options
@click.option("--out", "-o", metavar="OUT.zarr", default=None, help="Result group to write (required).")
@click.option(
    "--checkpoint", metavar="DIR", default=None,
    help="Checkpoint directory; a matching checkpoint there is resumed.",
)
@click.option(
    "--checkpoint-every", type=click.IntRange(min=1), metavar="N", default=None,
    help="Checkpoint every N iterations.",
)
@click.option(
    "--checkpoint-seconds", type=click.FloatRange(min=0, min_open=True), metavar="S", default=None,
    help="Also checkpoint every S seconds.",
)
@_scheduler_options
@click.option("--overwrite", is_flag=True, default=False, help="Replace an existing OUT.")
@_config_option
@click.option("--show-config", is_flag=True, help="Print the resolved options as YAML and exit.")
@_output_options
def fit(
    input_path, out, checkpoint, checkpoint_every, checkpoint_seconds, scheduler, workers, memory_limit, threads,
    overwrite, show_config, quiet, verbose, **values
):
    """Factorize INPUT (Zarr array, Zarr CSR group, .npy or .npz) and write OUT.zarr.

    OUT is a Zarr group with arrays W and H and attrs n_iter, reconstruction_err,
    relative_err, loss_history and params.
    """
    _start(verbose, quiet)
    ctx = click.get_current_context()
    if show_config:
        keys = _config_keys(ctx.command)
        primary = {}
        for key, name in keys.items():
            primary.setdefault(name, key)
        resolved = {
            primary[name]: {**DEFAULTS, **CLI_DEFAULTS}[name] if name in _PARAM_NAMES and ctx.params[name] is None
            else ctx.params[name]
            for name in primary
        }
        click.echo(yaml.safe_dump(resolved, sort_keys=False), nl=False)
        return
    if out is None:
        raise click.UsageError("missing option '--out' (the result group to write)")
    params = _fit_params(values)
    if values.get("n_components") is None:
        raise click.UsageError("missing option '--rank' (the number of components)")
    if checkpoint is None and (checkpoint_every is not None or checkpoint_seconds is not None):
        logger.info("no --checkpoint DIR: --checkpoint-every/--checkpoint-seconds ignored")
    result, attrs, elapsed = _fit_job(
        input_path, params, out=out, overwrite=overwrite, checkpoint=checkpoint, every=checkpoint_every,
        seconds=checkpoint_seconds,
        scheduler=dict(address=scheduler, workers=workers, memory_limit=memory_limit, threads=threads), quiet=quiet,
    )
    if not quiet:
        click.echo(_summary(_absolute(out), attrs, elapsed))


@cli.command()
@click.argument("directory", metavar="DIR")
@click.option(
    "--max-iter", type=click.IntRange(min=1), metavar="N", default=None,
    help="New iteration limit (counts all iterations).",
)
@click.option(
    "--out", "-o", metavar="OUT.zarr", default=None, help="Write here instead of the OUT of the original fit.",
)
@click.option(
    "--from", "from_name", metavar="NAME", default=None,
    help="Resume from this checkpoint of DIR (e.g. ckpt-000010), such as the intact one a checksum error names.",
)
@_scheduler_options
@click.option("--overwrite", is_flag=True, default=False, help="Replace an existing OUT.")
@_output_options
def resume(directory, max_iter, out, from_name, scheduler, workers, memory_limit, threads, overwrite, quiet, verbose):
    """Finish the checkpointed `dnmf fit` in DIR and write its OUT."""
    _start(verbose, quiet)
    directory = _absolute(directory)
    _, metadata = ckpt.load_checkpoint(directory, name=from_name)
    run_info = metadata["run"]
    if not run_info.get("input"):
        raise ValueError(f"{directory} was not written by `dnmf fit` (it records no input); resume it from Python")
    out = out or run_info.get("out")
    params = dict(metadata["all_params"])
    if max_iter is not None:
        params["max_iter"] = max_iter
    validate_params({**DEFAULTS, **params}, spell=flag)
    result, attrs, elapsed = _fit_job(
        run_info["input"], {**DEFAULTS, **params}, out=out, overwrite=overwrite, checkpoint=directory,
        every=run_info.get("every"), seconds=run_info.get("seconds"),
        scheduler=dict(address=scheduler, workers=workers, memory_limit=memory_limit, threads=threads), quiet=quiet,
        resume_from=from_name,
    )
    if not quiet:
        click.echo(_summary(_absolute(out), attrs, elapsed))


@cli.command()
@click.argument("input_path", metavar="INPUT")
@click.option("--model", required=True, metavar="OUT.zarr", help="A result of `dnmf fit` (its H is used).")
@click.option("--out", "-o", required=True, metavar="W.zarr", help="Group to write (array W and errors).")
@click.option(
    "--max-iter", type=click.IntRange(min=1), metavar="N", default=None,
    help="Updates per panel. [default: the model's max_iter]",
)
@_scheduler_options
@click.option("--overwrite", is_flag=True, default=False, help="Replace an existing OUT.")
@_output_options
def transform(input_path, model, out, max_iter, scheduler, workers, memory_limit, threads, overwrite, quiet, verbose):
    """Project the rows of INPUT on a fitted H: solve W >= 0 with H fixed, write W.zarr."""
    _start(verbose, quiet)
    input_path, model, out = _absolute(input_path), _absolute(model), _absolute(out)
    _check_paths(input_path, out)
    check_destination(out, overwrite)
    fitted = read_result(model)
    if fitted.kind != FIT_KIND:
        raise ValueError(f"{model} is a transform result; --model needs the OUT of `dnmf fit`")
    params = {**DEFAULTS, **fitted.attrs["params"], "n_components": int(fitted.H.shape[0])}
    if max_iter is not None:
        params["max_iter"] = max_iter
    panels = as_panels(open_matrix(input_path), panel_rows=params["panel_rows"])
    check_writable(out, factor_bytes((panels.shape[0], 0), fitted.H.shape[0], panels.dtype), "OUT")
    with _scheduler(scheduler, workers, memory_limit, threads, quiet=quiet):
        started = time.perf_counter()
        result = run(panels, params, H=fitted.H, update_H=False)
        elapsed = time.perf_counter() - started
        attrs = write_transform(out, result, model=model, input_path=input_path, overwrite=overwrite)
    if not quiet:
        rows, k = result.W.shape
        click.echo(f"wrote {out}: W {rows} x {k}, relative_err={attrs['relative_err']:.4g} ({elapsed:.1f} s)")


@cli.command()
@click.option(
    "--workdir", metavar="DIR", default=None,
    help=f"Keep {DEMO_INPUT} and {DEMO_OUTPUT} here (replaced if present). [default: a temporary directory, removed]",
)
@click.option("--shape", nargs=2, type=click.IntRange(min=1), default=DEMO_SHAPE, metavar="M N", show_default=True)
@click.option("--rank", type=click.IntRange(min=1), default=DEMO_RANK, metavar="K", show_default=True)
@click.option("--max-iter", type=click.IntRange(min=1), default=DEMO_MAX_ITER, metavar="N", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=DEFAULT_SEED, metavar="S", show_default=True)
@click.option(
    "--workers", type=click.IntRange(min=1), metavar="N", default=None, help="Workers of the embedded LocalCluster.",
)
@click.option("--memory-limit", metavar="SIZE", default=None, help="Memory limit per worker. [default: auto]")
@click.option(
    "--processes", is_flag=True, default=False, help="Workers in their own processes (as `dnmf fit`), not threads."
)
@_output_options
def demo(workdir, shape, rank, max_iter, seed, workers, memory_limit, processes, quiet, verbose):
    """Generate a low-rank + noise matrix in Zarr and factorize it on an embedded cluster.

    The cluster's workers are threads of this process by default: they start at once,
    which suits a job this size.
    """
    _start(verbose, quiet)
    temporary = workdir is None
    where = Path(tempfile.mkdtemp(prefix="dnmf-demo-") if temporary else _absolute(workdir))
    where.mkdir(parents=True, exist_ok=True)
    data, out = where / DEMO_INPUT, where / DEMO_OUTPUT
    try:
        started = time.perf_counter()
        bar = _Bar(shape[0], "generate", "rows", quiet)
        try:
            generated = generate(data, shape, rank, noise=DEFAULT_NOISE, seed=seed, overwrite=True, progress=bar.update)
        finally:
            bar.close()
        generated_in = time.perf_counter() - started
        params = {**DEFAULTS, "n_components": rank, "max_iter": max_iter, "tol": 0.0, "random_state": seed}
        _, attrs, elapsed = _fit_job(
            data, params, out=out, overwrite=True,
            scheduler=dict(workers=workers, memory_limit=memory_limit, threads=not processes), quiet=quiet,
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


# -------------------------------------------------------------------- entry point


def _one_line(text):
    return " ".join(str(text).split())


@contextlib.contextmanager
def _warnings_as_lines():
    """Warnings become one ``warning:`` line on stderr (none with --quiet)."""

    def show(message, category, filename, lineno, file=None, line=None):
        if not _SESSION.quiet:
            click.echo(f"warning: {_one_line(message)}", err=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _quiet_shutdown():
    """After Ctrl-C the cluster's client is torn down mid-request: its event loop would log
    the cancelled requests' tracebacks ("Task exception was never retrieved"). The
    command's one ``error:`` line says what happened instead."""
    for name in ("asyncio", "distributed", "tornado"):
        logging.getLogger(name).disabled = True


def main(argv=None):
    """Run the ``dnmf`` command line; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).
    """
    _SESSION.verbose, _SESSION.quiet = 0, False
    with _warnings_as_lines():
        try:
            status = cli.main(args=argv, prog_name="dnmf", standalone_mode=False)
        except (KeyboardInterrupt, click.exceptions.Abort) as interrupt:
            _quiet_shutdown()
            cause = interrupt if isinstance(interrupt, Interrupted) else interrupt.__cause__  # click wraps it in Abort
            click.echo(f"error: {cause}" if isinstance(cause, Interrupted) else "error: interrupted", err=True)
            return EXIT_INTERRUPTED
        except click.ClickException as error:
            hint = ""
            if isinstance(error, click.UsageError) and error.ctx is not None:
                hint = f" (see '{error.ctx.command_path} --help')"
            click.echo(f"error: {_one_line(error.format_message())}{hint}", err=True)
            return EXIT_BAD_INPUT
        except LIBRARY_ERRORS as error:
            if _SESSION.verbose:
                traceback.print_exc()
            click.echo(f"error: {_one_line(error)}", err=True)
            return EXIT_BAD_INPUT
    return status if isinstance(status, int) else 0


def _register_extensions():
    """Add the commands of :mod:`dnmf.cli_explore` (plot, topics, similar) and
    :mod:`dnmf.cli_rank` (rank, recommend) to the group."""
    from .cli_explore import register
    from .cli_rank import register as register_rank

    register(cli)
    register_rank(cli)


_register_extensions()

if __name__ == "__main__":
    sys.exit(main())
