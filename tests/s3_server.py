"""A real S3-compatible server on loopback for the tests: moto's standalone server, in
its own process, started by the fixtures (nothing is mocked in the client libraries).

:func:`start_server` runs ``python -m moto.server`` on a free port; :class:`FaultyProxy`
stands in front of a server and answers a share of the requests with ``503 SlowDown``
or ``500 InternalError`` (the fault-injection case). The fixtures of ``conftest.py`` point the standard AWS
environment variables (``AWS_ENDPOINT_URL`` and the keys) at the server, so that every
client (s3fs in the tests, in dnmf, and in ``dask worker`` processes started with that
environment) finds it the standard way.
"""

from __future__ import annotations

import http.client
import http.server
import random
import socket
import subprocess
import sys
import threading
import time
import uuid

#: The fake credentials moto accepts.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(port, process, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the S3 server exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the S3 server did not listen on port {port} within {seconds} s")


def start_server(env=None):
    """``(process, endpoint URL)`` of a new moto server on loopback."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    _wait_for(port, process)
    return process, f"http://127.0.0.1:{port}"


def new_bucket(fs, prefix="dnmf-test"):
    """A new empty bucket (its name)."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    fs.mkdir(name)
    return name


class FaultyProxy:
    """An HTTP proxy on loopback that forwards to ``upstream`` and answers a share
    ``rate`` of the requests with S3's ``503 SlowDown`` or ``500 InternalError`` instead,
    half each (``failed`` counts them); with ``once``, it answers ``500`` to the first
    request of each method and URL and forwards the others (every operation fails once);
    with ``zero_sizes``, its HEAD answers say every object is empty (a broken store).

    Attributes
    ----------
    url : str
        The endpoint to give the clients.
    """

    def __init__(self, upstream, rate=0.0, seed=0, zero_sizes=False, once=False):
        self.upstream = upstream.split("://", 1)[1]
        self.rate, self.failed, self.forwarded = rate, 0, 0
        self._seen = set() if once else None
        self.zero_sizes = zero_sizes  # a broken store: HEAD answers report every object as empty
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy._lock:
                    draw = proxy._random.random()
                    fail = draw < proxy.rate
                    if proxy._seen is not None:
                        draw, fail = proxy.rate, (self.command, self.path) not in proxy._seen
                        proxy._seen.add((self.command, self.path))
                    proxy.failed += fail
                    proxy.forwarded += not fail
                if fail:
                    status, code, message = (
                        (503, "SlowDown", "Please reduce your request rate.")
                        if draw < proxy.rate / 2
                        else (500, "InternalError", "We encountered an internal error. Please try again.")
                    )
                    payload = (
                        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f"<Message>{message}</Message></Error>"
                    ).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                connection = http.client.HTTPConnection(proxy.upstream, timeout=60)
                headers = {key: value for key, value in self.headers.items() if key.lower() != "connection"}
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                length = answer.getheader("Content-Length") if self.command == "HEAD" else None
                if self.command == "HEAD" and proxy.zero_sizes:
                    length = "0"
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self):
        self._server.shutdown()
        self._server.server_close()
