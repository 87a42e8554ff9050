"""The ``dnmf`` command line (entry point :func:`main`); see :mod:`dnmf.cli.main`."""

from .main import cli, main

__all__ = ["cli", "main"]
