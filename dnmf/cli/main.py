"""The ``dnmf`` command line: the group, its commands, and how errors end a command.

Commands: ``generate`` and ``info`` (:mod:`.data`); ``fit``, ``resume``, ``transform``
and ``demo`` (:mod:`.fit`); ``plot``, ``topics`` and ``similar`` (:mod:`.explore`);
``rank`` and ``recommend`` (:mod:`.rank`); ``consensus`` (:mod:`.consensus`). Their shared
options are in :mod:`.options`.

Jobs run on an embedded ``LocalCluster`` (``--workers``, ``--memory-limit``; its
dashboard link is printed) or, with ``--scheduler tcp://HOST:PORT``, on an existing Dask
cluster. A progress bar on stderr shows iteration / max_iter, the loss, its relative
change, seconds per iteration and the ETA; ``--quiet`` silences it, ``-v`` / ``-vv``
turn on logging.

Bad input (a missing file, a bad value, an existing OUT, an unreachable scheduler, a
checkpoint that does not match or fails its checksums: every :class:`~dnmf.errors.DnmfError`)
and an unusable destination (no permission, a read-only or full file system: probed
before the cluster starts) exit with status 2 and one line on stderr starting with
``error:``; ``-v`` adds the traceback. Ctrl-C exits with status 130 and one line naming
the last complete checkpoint. Anything else is a bug in dnmf and keeps its traceback.
The embedded cluster's own log lines (e.g. a task's traceback) are shown from ``-v`` on.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
import warnings

import click

from ..errors import DnmfError
from . import consensus, data, explore, fit, rank
from .interrupt import Interrupted, interrupts_kept, quiet_shutdown
from .options import SESSION, logging_restored

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERRUPTED", "USER_ERRORS", "cli", "main"]

#: Exit status for bad input (as click's usage errors).
EXIT_BAD_INPUT = 2
#: Exit status after Ctrl-C.
EXIT_INTERRUPTED = 130
#: Errors that end a command with one ``error:`` line and :data:`EXIT_BAD_INPUT`.
USER_ERRORS = (DnmfError,)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="dnmf", prog_name="dnmf")
def cli():
    """Out-of-core non-negative matrix factorization (V ≈ W·H) on Dask and Zarr."""


for _module in (data, fit, explore, rank, consensus):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def _one_line(text):
    return " ".join(str(text).split())


@contextlib.contextmanager
def _warnings_as_lines():
    """Warnings become one ``warning:`` line on stderr (none with --quiet)."""

    def show(message, category, filename, lineno, file=None, line=None):
        if not SESSION.quiet:
            click.echo(f"warning: {_one_line(message)}", err=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def main(argv=None):
    """Run the ``dnmf`` command line; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default: ``sys.argv[1:]``).
    """
    SESSION.verbose, SESSION.quiet = 0, False
    with logging_restored(), _warnings_as_lines(), interrupts_kept():
        try:
            status = cli.main(args=argv, prog_name="dnmf", standalone_mode=False)
        except (KeyboardInterrupt, click.exceptions.Abort) as interrupt:
            quiet_shutdown()
            cause = interrupt if isinstance(interrupt, Interrupted) else interrupt.__cause__  # click wraps it
            click.echo(f"error: {cause}" if isinstance(cause, Interrupted) else "error: interrupted", err=True)
            return EXIT_INTERRUPTED
        except click.ClickException as error:
            hint = ""
            if isinstance(error, click.UsageError) and error.ctx is not None:
                hint = f" (see '{error.ctx.command_path} --help')"
            click.echo(f"error: {_one_line(error.format_message())}{hint}", err=True)
            return EXIT_BAD_INPUT
        except USER_ERRORS as error:
            if SESSION.verbose:
                traceback.print_exc()
            click.echo(f"error: {_one_line(error)}", err=True)
            return EXIT_BAD_INPUT
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
