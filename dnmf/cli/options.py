"""What every ``dnmf`` command shares: options, logging, the scheduler, progress bars.

The fit options are generated from :data:`dnmf.params.PARAMS` (the long name is
:attr:`~dnmf.params.Param.option`; ``n_components`` is also ``--rank``, ``random_state``
``--seed`` and ``missing_values`` ``--missing``), so the CLI, YAML configs, the estimator
and the functional API accept the same names and reject bad values with the same
messages, naming the flag (:func:`flag`).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import yaml
from tqdm import tqdm

from ..engine.location import Location, is_url, parse_storage_options, retry_logger
from ..engine.scheduler import local_cluster, use_scheduler
from ..errors import InputError
from ..io.formats import default_store
from ..io.storage import open_matrix
from ..params import DEFAULTS, PARAMS
from .interrupt import family_of, raise_if_interrupted

__all__ = [
    "ALIASES",
    "CLI_DEFAULTS",
    "READ_OPTIONS",
    "SCALAR",
    "SESSION",
    "Bar",
    "Progress",
    "absolute",
    "check_paths",
    "config_keys",
    "config_option",
    "resolved_config",
    "fit_values",
    "flag",
    "input_options",
    "open_input",
    "output_options",
    "param_options",
    "THREADS_BELOW_BYTES",
    "input_bytes",
    "running_on",
    "scheduler_options",
    "start",
]

logger = logging.getLogger(__name__)

#: Defaults of the command line that differ from the Python API's: a command gives the
#: same numbers every time it is run (scikit-learn's random_state=None draws a new start).
CLI_DEFAULTS = {"random_state": 0}
#: Extra option names of some parameters (listed first: they are the documented ones).
ALIASES = {"n_components": ("--rank",), "random_state": ("--seed",), "missing_values": ("--missing",)}
#: Parameters that are not plain options: ``client`` is ``--scheduler``, ``verbose`` is ``-v``,
#: ``storage_options`` is ``--storage-options`` (a JSON/YAML mapping).
NOT_OPTIONS = ("client", "verbose", "storage_options")
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
#: Log line format for ``-v``.
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


@dataclass
class Session:
    """What the error handler must know about the running command."""

    verbose: int = 0
    quiet: bool = False


#: The running command's output settings (set by :func:`start`).
SESSION = Session()


class Scalar(click.ParamType):
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


SCALAR = Scalar()


def flag(name):
    """The option a user types for parameter ``name``: ``max_iter`` → ``--max-iter``,
    ``n_components`` → ``--rank`` (the documented spelling)."""
    return ALIASES.get(name, (f"--{name.replace('_', '-').lower()}",))[0]


def param_options(command=None, *, without=(), defaults=None):
    """Add one option per row of the parameter table (but ``without`` and
    :data:`NOT_OPTIONS`), each defaulting to None (the table's default, or the command's
    own in ``defaults``, which the help shows)."""
    shown_defaults = {**CLI_DEFAULTS, **(defaults or {})}

    def add(command):
        for spec in reversed([p for p in PARAMS if p.name not in NOT_OPTIONS + tuple(without)]):
            names = [*ALIASES.get(spec.name, ()), f"--{spec.option}", spec.name]
            help_text = f"{spec.doc} [default: {shown_defaults.get(spec.name, spec.default)}]"
            command = click.option(
                *names, type=SCALAR, default=None, metavar=METAVARS.get(spec.name, "VALUE"), help=help_text
            )(command)
        return command

    return add if command is None else add(command)


def fit_values(values, without=()):
    """The table's parameters the user gave (None: not given), by parameter name."""
    names = [p.name for p in PARAMS if p.name not in NOT_OPTIONS + tuple(without)]
    return {name: values[name] for name in names if values.get(name) is not None}


def scheduler_options(command):
    """``--scheduler``, or the embedded cluster's ``--workers``, ``--memory-limit``, ``--threads``."""
    command = click.option(
        "--threads",
        is_flag=True,
        default=False,
        help="Run the embedded cluster's workers as threads of this process. [default: `dnmf fit` runs an "
        f"input under {THREADS_BELOW_BYTES // 2**20} MiB on this process's threads, a larger one on a LocalCluster of "
        "processes]",
    )(command)
    command = click.option(
        "--memory-limit",
        metavar="SIZE",
        default=None,
        help="Memory limit per embedded worker, e.g. 2GiB. [default: auto]",
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


#: What ``--layer``, ``--dtype`` and ``--store`` are, by option name (kept by ``dnmf resume``).
READ_OPTIONS = ("layer", "dtype", "store")


def input_options(command):
    """``--layer``, ``--dtype`` and ``--store``: how INPUT is read (:func:`open_input`)."""
    command = click.option(
        "--store",
        metavar="DIR",
        default=None,
        help="Where a MatrixMarket, 10x MEX or CSC AnnData INPUT is converted (once) to a Zarr CSR group. "
        "[default: INPUT's name + .csr.zarr, beside OUT]",
    )(command)
    command = click.option(
        "--dtype",
        type=click.Choice(["float32", "float64"]),
        default=None,
        help="Compute in this dtype. [default: INPUT's float dtype; float32 for integer counts of AnnData, "
        "10x and MatrixMarket files]",
    )(command)
    return click.option(
        "--layer",
        metavar="NAME",
        default=None,
        help="Factorize this layer of an AnnData INPUT instead of X.",
    )(command)


def storage_option(command):
    """``--storage-options``: the fsspec options of the command's URLs (a mapping)."""
    return click.option(
        "--storage-options",
        "storage_options",
        metavar="JSON|YAML|@FILE",
        default=None,
        callback=lambda ctx, param, value: parse_storage_options(value),
        help="Options of the filesystem of s3://, gs://, abfs://... paths (credentials, endpoint_url), as a "
        "JSON or YAML mapping or @FILE. [default: the standard ways, e.g. the AWS_* environment variables]",
    )(command)


def open_input(input_path, *, layer=None, dtype=None, store=None, out=None, quiet=False, storage_options=None):
    """INPUT opened read-only (:func:`dnmf.io.storage.open_matrix`). A conversion goes to
    ``store``, by default beside ``out`` (the command's OUT, when local; else beside
    INPUT), and shows a progress bar of the entries read (two passes)."""
    if is_url(input_path):
        return open_matrix(input_path, layer=layer, dtype=dtype, storage_options=storage_options)
    if store is None and out is not None and not is_url(out):
        store = Path(out).absolute().parent / default_store(input_path, layer).name
    bar = Bar(None, "convert", "entries", quiet)
    try:
        return open_matrix(input_path, layer=layer, dtype=dtype, store=absolute(store), progress=bar.update)
    finally:
        bar.close()


def output_options(command):
    """``-q/--quiet`` and ``-v/--verbose`` (counted), applied (:func:`start`) before the
    command runs."""

    @functools.wraps(command)
    def started(*args, quiet, verbose, **kwargs):
        start(verbose, quiet)
        return command(*args, quiet=quiet, verbose=verbose, **kwargs)

    started = click.option("-v", "--verbose", count=True, help="Log progress (-vv: debug, and Dask's logs).")(started)
    return click.option("-q", "--quiet", is_flag=True, default=False, help="No progress bar, no summary.")(started)


def config_keys(command):
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
    keys = config_keys(ctx.command)
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


def config_option(command):
    """``--config FILE.yaml``: option values from a file (flags override them)."""
    return click.option(
        "--config",
        type=click.Path(dir_okay=False),
        metavar="FILE.yaml",
        callback=_load_config,
        is_eager=True,
        expose_value=False,
        help="YAML file of option: value (long option names); flags override it.",
    )(command)


def resolved_config(ctx):
    """The ``--show-config`` mapping: every config key of the command with its value
    (given, from the file, or the default)."""
    primary = {}
    for key, name in config_keys(ctx.command).items():
        primary.setdefault(name, key)
    table = {p.name for p in PARAMS}
    defaults = {**DEFAULTS, **CLI_DEFAULTS}
    resolved = {
        key: defaults[name] if name in table and ctx.params[name] is None else ctx.params[name]
        for name, key in primary.items()
    }
    if resolved.get("storage-options"):  # credentials are never printed
        resolved["storage-options"] = {key: "<hidden>" for key in resolved["storage-options"]}
    return resolved


#: The loggers a command configures (``start``, ``quiet_shutdown``); ``main`` puts them back as it found them.
CONFIGURED_LOGGERS = ("dnmf", "dnmf.retries", "distributed", "asyncio", "tornado")


@contextlib.contextmanager
def logging_restored():
    """The command's logging set-up undone when it ends, so ``main`` can be called in a running program."""
    loggers = [logging.getLogger(name) for name in CONFIGURED_LOGGERS]
    saved = [(logger.handlers[:], logger.propagate, logger.level) for logger in loggers]
    disabled = {logger.name: logger.disabled for logger in family_of(CONFIGURED_LOGGERS)}
    try:
        yield
    finally:
        for logger, (handlers, propagate, level) in zip(loggers, saved):
            logger.handlers[:] = handlers
            logger.propagate = propagate
            logger.setLevel(level)
        for logger in family_of(CONFIGURED_LOGGERS):
            logger.disabled = disabled.get(logger.name, False)


def start(verbose, quiet):
    """Record the output settings and set up logging for this command."""
    SESSION.verbose, SESSION.quiet = verbose, quiet
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT if verbose else "%(levelname)s: %(message)s"))
    package = logging.getLogger("dnmf")
    package.handlers[:] = [handler]
    package.propagate = False
    level = logging.ERROR if quiet else logging.WARNING
    package.setLevel({0: level, 1: logging.INFO}.get(verbose, logging.DEBUG))
    if verbose >= 2:
        logging.getLogger("distributed").setLevel(logging.INFO)


def absolute(path):
    """``path`` made absolute (``~`` expanded; ``file://`` URLs too), a URL as it is, or None."""
    if path is None:
        return None
    location = Location.of(path)
    return location.path if location.local else str(path)


def check_paths(input_path, out, checkpoint=None):
    """Refuse to write over (or inside) the input."""
    source = str(input_path).rstrip("/")
    for name, target in (("--out", out), ("--checkpoint", checkpoint)):
        if target is None:
            continue
        target = str(target).rstrip("/")
        if target == source or target.startswith(source + "/"):
            raise InputError(f"{name} {target} would write over the input {source}")


#: Input (bytes of its stored values and indices) below which ``dnmf`` runs on Dask's threads
#: in this process instead of starting a LocalCluster: a cluster's start (2 to 6 s here) costs
#: more than its processes save on so little work (see :func:`running_on`).
THREADS_BELOW_BYTES = 256 * 2**20


def input_bytes(panels):
    """Bytes of V's values (and, when sparse, column indices) that each pass reads."""
    if panels.sparse:
        entries = panels.nnz if panels.nnz is not None else panels.shape[0] * panels.shape[1]
        return entries * (panels.dtype.itemsize + 4)
    return panels.shape[0] * panels.shape[1] * panels.dtype.itemsize


@contextlib.contextmanager
def running_on(address=None, workers=None, memory_limit=None, threads=None, quiet=False, work_bytes=None):
    """An embedded LocalCluster, or a connection to ``address``; current for the block.

    ``threads=True`` makes the embedded cluster's workers threads of this process,
    ``threads=False`` worker processes. With ``threads=None`` (``--threads`` not given) and
    neither ``workers`` nor ``memory_limit``, an input of ``work_bytes`` below
    :data:`THREADS_BELOW_BYTES` runs on Dask's threaded scheduler in this process (yields
    None: no cluster to start), a larger one on worker processes.
    """
    automatic = not address and threads is None and workers is None and memory_limit is None
    if automatic and work_bytes is not None and work_bytes < THREADS_BELOW_BYTES:
        logger.info("running on Dask's threads in this process (input of %d bytes)", work_bytes)
        yield None
        return
    if address:
        if workers is not None or memory_limit is not None or threads:
            logger.warning(
                "--workers, --memory-limit and --threads apply to the embedded cluster; ignored with --scheduler"
            )
        with use_scheduler(address) as client:
            logger.info("running on the Dask scheduler at %s (dashboard: %s)", address, client.dashboard_link)
            if SESSION.verbose:
                _forward_retries(client)
            try:
                yield client
            finally:
                client.close()
        return
    silence = logging.CRITICAL if SESSION.verbose == 0 else logging.WARNING if SESSION.verbose == 1 else logging.INFO
    with local_cluster(
        n_workers=workers, memory_limit=memory_limit or "auto", processes=not threads, silence_logs=silence
    ) as client:
        if not quiet:
            click.echo(f"Dask dashboard: {client.dashboard_link}", err=True)
        if SESSION.verbose and not threads:
            _forward_retries(client)
        yield client


def _forward_retries(client):
    """At ``-v``: the workers' log lines of store retries (``dnmf.retries``) shown here."""
    client.run(_log_retries)
    client.forward_logging(RETRY_LOGGER, level=logging.INFO)


def _log_retries():
    logging.getLogger(RETRY_LOGGER).setLevel(logging.INFO)


#: The logger of the store retries (:mod:`dnmf.engine.location`).
RETRY_LOGGER = retry_logger.name


class Bar:
    """A tqdm bar on stderr, drawn from its first update on (an error before that prints only
    the error line)."""

    def __init__(self, total, desc, unit, quiet, initial=0, bar_format=None):
        self._options = dict(
            total=total,
            initial=initial,
            desc=desc,
            unit=unit,
            file=sys.stderr,
            dynamic_ncols=True,
            bar_format=bar_format,
        )
        self._quiet = quiet
        self.bar = None

    def _open(self):
        if self.bar is None and not self._quiet:
            self.bar = tqdm(**{key: value for key, value in self._options.items() if value is not None})
        return self.bar

    def update(self, count):
        """Advance by ``count`` (or raise a Ctrl-C that was lost, see :func:`raise_if_interrupted`)."""
        raise_if_interrupted()
        if self._open() is not None:
            self.bar.update(count)

    def close(self):
        """Finish the bar (if it was drawn)."""
        if self.bar is not None:
            self.bar.close()


class Progress(Bar):
    """The driver's callback: iteration / max_iter, loss, relative change, s/iteration, ETA.

    ``iteration`` is the last one reported (what a Ctrl-C message names)."""

    def __init__(self, max_iter, first, quiet):
        super().__init__(
            max_iter,
            "fit",
            "iter",
            quiet,
            initial=first,
            bar_format="{desc} |{bar}| {n_fmt}/{total_fmt}{postfix} [{elapsed}<{remaining}]",
        )
        self.iteration = first

    def __call__(self, info):
        raise_if_interrupted()
        self.iteration = info.iteration
        if self._open() is None:
            return
        self.bar.set_postfix_str(
            f"loss {info.loss:.5g}, change {info.relative_change:.2e}, {info.seconds:.2f} s/iter", refresh=False
        )
        self.bar.update(info.iteration - self.bar.n)
