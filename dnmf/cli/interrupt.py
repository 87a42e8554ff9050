"""Ctrl-C in a command: the exception that carries what to do next, an interrupt that is
not lost, and a quiet teardown."""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading

__all__ = ["QUIETED_LOGGERS", "Interrupted", "family_of", "interrupts_kept", "quiet_shutdown", "raise_if_interrupted"]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a fit, with what the user can do next (the one line ``main`` prints)."""


#: The libraries whose loggers :func:`quiet_shutdown` silences.
QUIETED_LOGGERS = ("asyncio", "distributed", "tornado")

_PENDING = threading.Event()


def _on_sigint(signum, frame):
    _PENDING.set()
    raise KeyboardInterrupt


def _quiet_about_interrupts(hook):
    """``sys.unraisablehook`` that says nothing of a lost KeyboardInterrupt (it is kept)."""

    def unraisable(info):
        if not isinstance(info.exc_value, KeyboardInterrupt):
            hook(info)

    return unraisable


@contextlib.contextmanager
def interrupts_kept():
    """Ctrl-C raises KeyboardInterrupt, as Python's own handler does, and is also kept:
    Python drops an exception raised while a finalizer runs (a Dask future's ``__del__``
    is one, in the driver's thread, every pass), prints "Exception ignored", and the fit
    would go on. Here it says nothing, and :func:`raise_if_interrupted`, called at each
    progress update, raises it again.

    Only from the main thread, and only over Python's default handler (a program that
    calls :func:`dnmf.cli.main` with its own handler keeps it)."""
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGINT) is not signal.default_int_handler
    ):
        yield
        return
    _PENDING.clear()
    hook = sys.unraisablehook
    sys.unraisablehook = _quiet_about_interrupts(hook)
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        sys.unraisablehook = hook
        _PENDING.clear()


def raise_if_interrupted() -> None:
    """Raise KeyboardInterrupt if Ctrl-C came (under :func:`interrupts_kept`) and its
    exception was lost."""
    if _PENDING.is_set():
        raise KeyboardInterrupt


def quiet_shutdown() -> None:
    """After Ctrl-C the cluster's client is torn down mid-request: its event loop would log
    the cancelled requests' tracebacks ("Task exception was never retrieved"), its
    scheduler the closed comms. The command's one ``error:`` line says what happened
    instead."""
    for logger in family_of(QUIETED_LOGGERS):
        logger.disabled = True


def family_of(names):
    """The existing loggers named ``names`` and their descendants (``distributed.scheduler``):
    a disabled logger does not silence its children, whose records reach its handlers."""
    prefixes = tuple(f"{name}." for name in names)
    return [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name in names or name.startswith(prefixes)
    ]
