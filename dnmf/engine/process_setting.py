"""A process-wide setting held while at least one task needs it.

Panel tasks (BLAS threads, :mod:`dnmf.engine.solvers`) and rank-sweep fit tasks (Dask's local
scheduler, :mod:`dnmf.apps.rank`) run side by side in one process and each needs a setting
that only exists once per process. :class:`SharedSetting` counts the tasks inside: the
first to enter applies the setting, the last to leave restores it, whichever threads
those are.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

__all__ = ["SharedSetting"]


class SharedSetting:
    """Reference-counted process-wide setting.

    Use ``with setting.held(apply):`` where ``apply()`` changes the setting and returns
    a callable that undoes it (or None when nothing was changed). Only the first of
    overlapping holders calls ``apply``; the last one out calls its undo.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._holders = 0
        self._undo = None

    @contextmanager
    def held(self, apply):
        with self._lock:
            if self._holders == 0:
                self._undo = apply()
            self._holders += 1
        try:
            yield
        finally:
            with self._lock:
                self._holders -= 1
                if self._holders == 0 and self._undo is not None:
                    undo, self._undo = self._undo, None
                    undo()
