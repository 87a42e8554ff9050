"""Ctrl-C in a command: the exception that carries what to do next, and a quiet teardown."""

from __future__ import annotations

import logging

__all__ = ["Interrupted", "quiet_shutdown"]


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a fit, with what the user can do next (the one line ``main`` prints)."""


def quiet_shutdown() -> None:
    """After Ctrl-C the cluster's client is torn down mid-request: its event loop would log
    the cancelled requests' tracebacks ("Task exception was never retrieved"). The
    command's one ``error:`` line says what happened instead."""
    for name in ("asyncio", "distributed", "tornado"):
        logging.getLogger(name).disabled = True
