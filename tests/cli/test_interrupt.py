"""Ctrl-C in a command is never lost, and the teardown after it is quiet.

The signal is a real SIGINT, sent to a separate Python process (the test process keeps
its own handler).
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

from dnmf.cli.interrupt import quiet_shutdown
from dnmf.cli.options import logging_restored

#: A SIGINT that arrives while a finalizer runs: Python drops its KeyboardInterrupt (a Dask
#: future's ``__del__`` runs in the driver's thread every pass). Then a progress update, as
#: the fit's callback makes one.
LOST_IN_A_FINALIZER = textwrap.dedent(
    """
    import os, signal
    from dnmf.cli.interrupt import interrupts_kept
    from dnmf.cli.options import Bar

    class Finalized:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGINT)
            sum(range(1000))  # the handler runs here, in the finalizer

    with interrupts_kept():
        Finalized()
        print("still running", flush=True)
        try:
            Bar(10, "fit", "iter", quiet=True).update(1)
        except KeyboardInterrupt:
            print("raised at the next update", flush=True)
    """
)


def test_a_ctrl_c_lost_in_a_finalizer_is_raised_at_the_next_progress_update():
    done = subprocess.run([sys.executable, "-c", LOST_IN_A_FINALIZER], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["still running", "raised at the next update"]
    assert done.stderr == ""  # no "Exception ignored" from Python: the command prints one error line


def test_the_quiet_teardown_silences_the_libraries_child_loggers_and_main_puts_them_back():
    child = logging.getLogger("distributed.scheduler")  # logs its closed comms at CRITICAL
    before = child.disabled
    with logging_restored():
        quiet_shutdown()
        assert child.disabled and logging.getLogger("distributed").disabled
        assert not logging.getLogger("dnmf").disabled  # the command's own error line still shows
    assert child.disabled == before
