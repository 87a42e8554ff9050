"""Which Dask scheduler a fit runs on.

The library follows the Dask convention: with no client given, work goes to the active
``distributed.Client`` if there is one, else to Dask's threaded scheduler (a small fit
costs milliseconds, not a cluster start-up). :func:`use_scheduler` makes a given
``Client`` or scheduler address current for a block; :func:`local_cluster` is the
embedded ``LocalCluster`` the CLI starts.
"""

from __future__ import annotations

import contextlib
import logging

from ..errors import ClusterError, ParameterTypeError

__all__ = ["connect", "local_cluster", "use_scheduler"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def use_scheduler(client=None):
    """Run the block on ``client``: a ``distributed.Client``, a scheduler address
    (``"tcp://host:port"``) or None (leave the current default alone)."""
    if client is None:
        yield None
        return
    from distributed import Client

    if isinstance(client, Client):
        with client.as_current():
            yield client
        return
    if not isinstance(client, str):
        raise ParameterTypeError(f"client must be a distributed.Client or a scheduler address, got {client!r}")
    connected = connect(client)
    with connected.as_current():
        yield connected


_CONNECTIONS = {}


def connect(address):
    """A ``Client`` on the scheduler at ``address``, kept open for this process so that
    results persisted on that cluster stay reachable after the fit returns."""
    from distributed import Client

    connected = _CONNECTIONS.get(address)
    if connected is None or connected.status != "running":
        try:
            connected = Client(address, timeout="10s", set_as_default=False)
        except OSError as error:
            raise ClusterError(f"cannot reach the Dask scheduler at {address}: {error}") from None
        _CONNECTIONS[address] = connected
    return connected


#: Dask config under which :func:`local_cluster` starts its workers when no memory limit
#: is asked for: the nannies do not set ``MALLOC_TRIM_THRESHOLD_`` in them. Setting it
#: (Dask's default, 65536) turns off glibc's adaptive mmap threshold, so every
#: decompressed chunk buffer is a fresh mmap that page-faults in: reading a 1.6 GB
#: float32 Zarr matrix on 2 workers took 3.35 s with it and 1.69 s without (resident
#: memory 100 -> 205 MiB per worker).
WORKER_CONFIG = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
#: glibc's trim threshold under an explicit memory limit (Dask's own value): freed panel
#: buffers go back to the system at once, or Dask counts them as unmanaged memory and
#: pauses (or restarts) a worker whose limit they fill.
TRIM_THRESHOLD = 65536
#: ``mallopt`` parameter number of the trim threshold (glibc's ``M_TRIM_THRESHOLD``).
M_TRIM_THRESHOLD = -1


def _trim_here():
    """Set glibc's trim threshold in this process (threads workers live here); a no-op
    where the C library is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(ctypes.c_int(M_TRIM_THRESHOLD), ctypes.c_int(TRIM_THRESHOLD))
    except (OSError, AttributeError):
        logger.debug("no glibc mallopt here: memory trimming left as it is")


@contextlib.contextmanager
def local_cluster(
    n_workers=None, memory_limit="auto", threads_per_worker=None, processes=True, silence_logs=logging.WARN
):
    """An embedded ``LocalCluster`` and a ``Client`` on it, current for the block.

    Its dashboard link is logged at INFO level. ``silence_logs`` is the level below which
    the cluster's own log lines (scheduler, workers, nannies) are dropped. Without a
    memory limit (``"auto"``) workers start under :data:`WORKER_CONFIG` (fast reads);
    with one, memory is trimmed (:data:`TRIM_THRESHOLD`: in the workers' processes, or
    in this one when they are threads), so that a worker stays inside its limit.
    """
    import dask
    from distributed import Client, LocalCluster

    capped = memory_limit not in (None, "auto")
    if capped and not processes:
        _trim_here()
    with (
        dask.config.set({} if capped else WORKER_CONFIG),
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=threads_per_worker,
            memory_limit=memory_limit,
            processes=processes,
            dashboard_address=":0",
            silence_logs=silence_logs,
        ) as cluster,
        Client(cluster) as client,
    ):
        logger.info("Dask dashboard: %s", client.dashboard_link)
        with client.as_current():
            yield client
