"""Where dnmf reads and writes: local paths and fsspec URLs, one type for both.

A :class:`Location` is a plain path (``run.ckpt``, ``/data/V.zarr``, ``file:///data``) or a
URL of any fsspec filesystem (``s3://bucket/V.zarr``, ``gs://``, ``abfs://``,
``memory://``), with the storage options that open it (credentials, an endpoint). Zarr
reads and writes it through Zarr v3's ``FsspecStore``; everything else here (listing,
small files, removal, the atomic publication of a small pointer file) goes through the
same fsspec filesystem. Credentials reach the filesystem only: a Location prints,
logs and records its URL without them (:func:`shown`).

Where the store is remote, two things differ from a disk and are handled here:

- **No rename.** :meth:`Location.publish_text` writes a small object in one request
  (a PUT is atomic on an object store; on a disk: a temporary file, ``fsync``, then
  ``os.replace``).
- **Transient failures.** Zarr's reads and writes go through :class:`RetryingStore`,
  which retries timeouts, connection errors, 5xx answers and throttling with
  exponential backoff (:data:`RETRIES` attempts) and logs each retry at INFO level on
  the ``dnmf.retries`` logger (the CLI forwards the workers' logs of it at ``-v``).

Errors of the store become one :class:`~dnmf.errors.DnmfError` naming the URL
(:func:`store_error`): a missing bucket or key, no permission, bad credentials, an
unreachable endpoint, a scheme whose filesystem package is not installed.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import fsspec
import zarr
import zarr.core.sync
from zarr.storage import FsspecStore, WrapperStore

from ..errors import (
    ConcurrentWriteError,
    DestinationError,
    DestinationPermissionError,
    DnmfError,
    MissingDependencyError,
    NotFoundError,
    ParameterError,
    StoreError,
    StorePermissionError,
    StoreUnreachableError,
)

__all__ = [
    "BACKOFF_SECONDS",
    "RETRIES",
    "SCHEME_PACKAGES",
    "UNCHECKED",
    "Location",
    "RetryingStore",
    "fsync_directory",
    "fsync_path",
    "is_url",
    "parse_storage_options",
    "shown",
    "store_error",
    "timed_retry",
    "transient",
]

retry_logger = logging.getLogger("dnmf.retries")

#: What :meth:`Location.version` gives where writes cannot be conditional.
UNCHECKED = "unchecked"
#: Attempts of one store request before its error is raised (the first one included).
RETRIES = 6
#: Wait before the first retry; doubled after each.
BACKOFF_SECONDS = 0.1
#: The package that provides each URL scheme's filesystem (named when it is missing).
SCHEME_PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "az": "adlfs",
    "http": "aiohttp",
    "https": "aiohttp",
}
#: ``errno`` values of store errors worth retrying (busy/throttled, remote I/O, timeouts, resets).
TRANSIENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EBUSY", "EREMOTEIO", "EIO", "ETIMEDOUT", "ECONNRESET", "ECONNREFUSED", "EAGAIN")
    if hasattr(errno, name)
)

#: HTTP client libraries whose connection and timeout errors are transient, and the words that name those.
CLIENT_MODULES = ("botocore", "aiobotocore", "aiohttp", "urllib3", "requests")
TRANSIENT_WORDS = ("Connection", "Timeout", "Throttl", "IncompleteRead", "Payload", "Disconnected")

#: The client libraries' names of "the endpoint cannot be reached" and "no credentials" (botocore, aiohttp).
UNREACHABLE_ERRORS = ("EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionClosedError")
NO_CREDENTIALS_ERRORS = ("NoCredentialsError", "PartialCredentialsError")

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def is_url(target):
    """Whether ``target`` is a URL with a scheme (``s3://…``, ``file://…``), not a plain path."""
    return isinstance(target, str) and bool(_SCHEME.match(target))


def shown(url):
    """``url`` as it may be printed: without user, password or query (where credentials
    can hide: ``s3://KEY:SECRET@bucket/x?token=…`` → ``s3://bucket/x``)."""
    url = str(url)
    match = _SCHEME.match(url)
    if not match:
        return url
    rest = url[match.end() :]
    rest = rest.split("?", 1)[0].split("#", 1)[0]
    head, slash, tail = rest.partition("/")
    return f"{match.group(1)}://{head.rpartition('@')[2]}{slash}{tail}"


def parse_storage_options(text, what="--storage-options"):
    """Storage options from a JSON or YAML mapping (text, or ``@FILE`` to read one)."""
    import yaml

    if text is None:
        return None
    if isinstance(text, dict):
        return dict(text)
    source = str(text)
    if source.startswith("@"):
        try:
            source = Path(source[1:]).expanduser().read_text()
        except OSError as error:
            raise ParameterError(f"{what}: cannot read {text[1:]} ({error.strerror or error})") from None
    try:
        value = yaml.safe_load(source)  # JSON is YAML
    except yaml.YAMLError:
        value = None
    if not isinstance(value, dict):
        raise ParameterError(f"{what} must be a JSON or YAML mapping (e.g. '{{\"anon\": true}}'), or @FILE holding one")
    return value


def transient(error):
    """Whether a store error is worth retrying: timeouts, dropped connections, 5xx and
    throttling answers (not a missing key, a refused permission or bad input)."""
    if isinstance(error, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)):
        return False
    if isinstance(error, (TimeoutError, asyncio.TimeoutError, ConnectionError)):
        return True
    if isinstance(error, OSError):
        return error.errno in TRANSIENT_ERRNOS
    response = getattr(error, "response", None)  # botocore's ClientError
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) if isinstance(response, dict) else 0
    if status >= 500 or status == 429:
        return True
    name = type(error).__name__
    return type(error).__module__.split(".")[0] in CLIENT_MODULES and any(word in name for word in TRANSIENT_WORDS)


class RetryingStore(WrapperStore):
    """A Zarr store whose reads, writes, lookups and deletions are retried on
    :func:`transient` errors, with exponential backoff (see the module docstring)."""

    def __init__(self, store, url=None):
        super().__init__(store)
        self.url = url
        _close_at_exit(getattr(store, "fs", None))

    def _with_store(self, store):
        return type(self)(store, self.url)

    def __reduce__(self):
        return (type(self), (self._store, self.url))

    async def _retried(self, what, key, call):
        for attempt in range(1, RETRIES + 1):
            try:
                return await call()
            except Exception as error:
                if attempt == RETRIES or not transient(error):
                    raise
                await asyncio.sleep(_backoff(what, f"{self.url or 'store'}/{key}", error, attempt))

    async def get(self, key, prototype, byte_range=None):
        return await self._retried("read", key, lambda: self._store.get(key, prototype, byte_range))

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        return await self._retried(
            "read",
            key_ranges[0][0] if key_ranges else "",
            lambda: self._store.get_partial_values(prototype, key_ranges),
        )

    async def exists(self, key):
        return await self._retried("lookup", key, lambda: self._store.exists(key))

    async def set(self, key, value):
        return await self._retried("write", key, lambda: self._store.set(key, value))

    async def set_if_not_exists(self, key, value):
        return await self._retried("write", key, lambda: self._store.set_if_not_exists(key, value))

    async def delete(self, key):
        return await self._retried("deletion", key, lambda: self._store.delete(key))

    async def delete_dir(self, prefix):
        return await self._retried("deletion", prefix, lambda: self._store.delete_dir(prefix))

    async def clear(self):
        return await self._retried("deletion", "", self._store.clear)

    async def is_empty(self, prefix):
        return await self._retried("lookup", prefix, lambda: self._store.is_empty(prefix))

    async def getsize(self, key):
        return await self._retried("lookup", key, lambda: self._store.getsize(key))

    async def getsize_prefix(self, prefix):
        return await self._retried("lookup", prefix, lambda: self._store.getsize_prefix(prefix))

    async def _listed(self, prefix, listing):
        """A listing, retried whole (so a retry never yields a key twice)."""
        keys = await self._retried("listing", prefix, lambda: _gathered(listing()))
        for key in keys:
            yield key

    def list(self):
        return self._listed("", self._store.list)

    def list_prefix(self, prefix):
        return self._listed(prefix, lambda: self._store.list_prefix(prefix))

    def list_dir(self, prefix):
        return self._listed(prefix, lambda: self._store.list_dir(prefix))


async def _gathered(keys):
    return [key async for key in keys]


def store_error(error, url, what="", writing=False):
    """One :class:`~dnmf.errors.DnmfError` for an error of the store at ``url`` (shown
    without credentials), or None when ``error`` is not a store error."""
    url = shown(url)
    subject = f"{what} {url}".strip()
    if isinstance(error, DnmfError):
        return error
    name = type(error).__name__
    text = " ".join(str(error).split()) or name
    if isinstance(error, FileNotFoundError):
        if "bucket" in text.lower():
            return NotFoundError(f"{subject}: the bucket does not exist ({text})")
        return NotFoundError(f"{subject} not found")
    if isinstance(error, PermissionError):
        kind = DestinationPermissionError if writing else StorePermissionError
        return kind(
            f"{subject}: permission denied by the store ({text}); check the credentials "
            "(AWS_* environment variables, a profile, or --storage-options)"
        )
    if name in UNREACHABLE_ERRORS or isinstance(error, (ConnectionError, TimeoutError)):
        return StoreUnreachableError(f"{subject}: cannot reach the store's endpoint ({_without_urls(text)})")
    if name in NO_CREDENTIALS_ERRORS:
        return StorePermissionError(
            f"{subject}: no credentials found; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
            "a profile, or pass --storage-options"
        )
    if isinstance(error, OSError):
        kind = DestinationError if writing else StoreError
        return kind(f"{subject}: the store failed ({text})")
    return None


def _without_urls(text):
    """An error text with its URLs cut to scheme and host (they may carry signed queries)."""
    return re.sub(r"(https?://[^/\s\"']+)[^\s\"']*", r"\1", text)


def _filesystem(protocol, options):
    try:
        return fsspec.filesystem(protocol, **options)
    except ImportError as error:
        package = SCHEME_PACKAGES.get(protocol)
        hint = f"pip install {package}" if package else str(error)
        raise MissingDependencyError(
            f"{protocol}:// URLs need a filesystem package that is not installed: {hint}"
        ) from None
    except ValueError as error:
        if "Protocol not known" in str(error):
            raise ParameterError(
                f"{protocol}:// is not a storage scheme fsspec knows (s3://, gs://, abfs://, "
                "memory://, file://, or a plain path)"
            ) from None
        raise ParameterError(f"storage options for {protocol}:// refused: {error}") from None
    except TypeError as error:
        raise ParameterError(f"storage options for {protocol}:// refused: {error}") from None


@dataclass(frozen=True, eq=False)
class Location:
    """A file, directory or prefix on a disk or in an object store.

    Attributes
    ----------
    url : str
        As shown in messages and recorded in results: an absolute local path, or the URL
        without credentials.
    fs : fsspec.AbstractFileSystem
    path : str
        ``url`` as ``fs`` names it (``bucket/key`` for S3).
    protocol : str
        ``"file"`` for local paths.
    options : dict
        The storage options (never shown).
    """

    url: str
    fs: object = field(repr=False)
    path: str
    protocol: str
    options: dict = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, target, storage_options=None):
        """The Location of a path, ``file://`` URL or fsspec URL (a Location: itself)."""
        if isinstance(target, Location):
            return target
        options = dict(storage_options or {})
        text = os.fspath(target)
        match = _SCHEME.match(text) if isinstance(text, str) else None
        if match is None or match.group(1) in ("file", "local"):
            local = text[match.end() :] if match else text
            absolute = str(Path(local).expanduser().absolute())
            return cls(absolute, fsspec.filesystem("file"), absolute, "file", {})
        protocol = match.group(1)
        if "@" in text[match.end() :].split("/", 1)[0]:
            raise ParameterError(
                f"{shown(text)}: credentials in a URL are not used (and never shown); give them in the "
                "environment (AWS_ACCESS_KEY_ID, ...), a profile, or --storage-options / storage_options"
            )
        fs = _filesystem(protocol, options)
        path = fs._strip_protocol(text.split("?", 1)[0])
        url = shown(text).rstrip("/")
        return cls(url, fs, str(path).rstrip("/"), protocol, options)

    @property
    def local(self):
        """On this machine's file system (renames and ``fsync`` exist)."""
        return self.protocol == "file"

    @property
    def name(self):
        """The last part of the path."""
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def __str__(self):
        return self.url

    def __fspath__(self):
        if not self.local:
            raise TypeError(f"{self.url} is not a local path")
        return self.path

    def join(self, *names):
        """The Location of ``names`` below this one."""
        suffix = "/".join(str(name).strip("/") for name in names)
        return Location(f"{self.url}/{suffix}", self.fs, f"{self.path}/{suffix}", self.protocol, self.options)

    @property
    def parent(self):
        """The Location above this one."""
        head = self.path.rstrip("/").rsplit("/", 1)[0]
        url = self.url.rstrip("/").rsplit("/", 1)[0]
        return Location(url, self.fs, head, self.protocol, self.options)

    # ----------------------------------------------------------------- queries

    def retried(self, what, call):
        """``call()``, retried as the store's own requests are (:func:`timed_retry`) when remote."""
        return call() if self.local else timed_retry(call, what, self.url)

    def kind(self):
        """``"file"``, ``"directory"`` (a prefix with objects, on a store) or None when
        nothing is there. Any other failure is raised (and retried where remote), never
        taken for "missing" as fsspec's ``exists``/``isfile``/``isdir`` may take it. (On a
        disk, what ``os.path`` says: a path under a file is missing, not an error.)"""
        if self.local:
            if os.path.isdir(self.path):
                return "directory"
            return "file" if os.path.isfile(self.path) else ("other" if os.path.lexists(self.path) else None)

        def look():
            try:
                return self.fs.info(self.path).get("type")
            except FileNotFoundError:
                return None

        return self.retried("lookup", look)

    def exists(self):
        """Whether anything (a file, a directory, a prefix with objects) is there."""
        return self.kind() is not None

    def is_dir(self):
        """Whether a directory or a non-empty prefix is there."""
        return self.kind() == "directory"

    def is_file(self):
        """Whether a file (an object) is there."""
        return self.kind() == "file"

    def names(self):
        """Names directly below (files and directories), sorted; empty if nothing is there."""
        try:
            entries = self.retried("listing", lambda: self.fs.ls(self.path, detail=False, refresh=True))
        except FileNotFoundError:
            return []
        return sorted({entry.rstrip("/").rsplit("/", 1)[-1] for entry in entries} - {""})

    def files(self):
        """Every file below, as sorted relative POSIX paths."""
        base = self.path.rstrip("/") + "/"
        found = self.retried("listing", lambda: self.fs.find(self.path))
        return sorted(path[len(base) :] for path in found if path.startswith(base))

    def read_bytes(self):
        """The whole file."""
        return self.retried("read", lambda: self.fs.cat_file(self.path))

    def read_text(self):
        """The whole file as UTF-8 text."""
        return self.read_bytes().decode()

    # ------------------------------------------------------------------ writes

    def write_bytes(self, data):
        """Write a whole file (one request on an object store)."""
        self.retried("write", lambda: self.fs.pipe_file(self.path, data))

    @property
    def conditional(self):
        """Whether writes here can be conditional on the version they replace (S3's
        ``If-Match`` / ``If-None-Match``)."""
        return self.protocol in ("s3", "s3a")

    def version(self):
        """The version (ETag) of the object here, None when there is none; :data:`UNCHECKED`
        where writes cannot be conditional."""
        if not self.conditional:
            return UNCHECKED
        try:
            return self.retried("lookup", lambda: self.fs.info(self.path, refresh=True)).get("ETag")
        except FileNotFoundError:
            return None

    def publish_text(self, text, replacing=UNCHECKED):
        """Make ``text`` the content of this file in one atomic step: a single PUT on an
        object store; a temporary sibling, ``fsync`` and ``os.replace`` on a disk.

        ``replacing``: the :meth:`version` this write must replace (None: the file must
        not exist yet); where :attr:`conditional`, a write that would replace anything else
        raises :class:`~dnmf.errors.ConcurrentWriteError`. Returns the new version
        (:data:`UNCHECKED` where writes are not conditional).
        """
        if not self.local:
            if not self.conditional or replacing is UNCHECKED:
                self.write_bytes(text.encode())
                return UNCHECKED
            condition = {"mode": "create"} if replacing is None else {"IfMatch": replacing}
            try:
                answer = self.retried("write", lambda: self.fs.pipe_file(self.path, text.encode(), **condition))
            except (FileExistsError, OSError) as error:
                if isinstance(error, FileExistsError) or "pre-condition" in str(error):
                    raise ConcurrentWriteError(
                        f"{self.url} was written by someone else since this process last read or wrote it"
                    ) from None
                raise
            return (answer or {}).get("ETag") or self.version()
        temporary = f"{self.path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        with open(temporary, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        fsync_directory(os.path.dirname(self.path))
        return UNCHECKED

    def makedirs(self):
        """Create the directory (and parents) if missing; nothing to do on an object store."""
        if self.local:
            os.makedirs(self.path, exist_ok=True)

    def remove(self, first=()):
        """Delete everything here (missing is fine); the files named in ``first`` go
        before the rest (a manifest, a root ``zarr.json``: what makes the rest valid)."""
        for name in first:
            with contextlib.suppress(FileNotFoundError):
                self.retried("deletion", lambda name=name: self.fs.rm_file(f"{self.path}/{name}"))
        with contextlib.suppress(FileNotFoundError):
            if self.exists():
                self.retried("deletion", lambda: self.fs.rm(self.path, recursive=True))
        self.fs.invalidate_cache(self.path)

    # -------------------------------------------------------------------- zarr

    def zarr_store(self, read_only=True):
        """What ``zarr.open*`` takes for this Location: the path on a disk, else a
        :class:`RetryingStore` over Zarr's ``FsspecStore``."""
        if self.local:
            return self.path
        fs = self.fs
        if not getattr(fs, "async_impl", False) or not getattr(fs, "asynchronous", False):
            fs = _async_twin(self)
        return RetryingStore(FsspecStore(fs, path=self.path, read_only=read_only), self.url)

    def open_zarr(self, mode="r", what="Zarr store"):
        """``zarr.open`` of this Location, its store errors as :func:`store_error`'s."""
        try:
            return zarr.open(store=self.zarr_store(read_only=mode == "r"), mode=mode)
        except Exception as error:
            problem = store_error(error, self.url, what, writing=mode != "r")
            if problem is None or isinstance(problem, StoreError):
                raise
            raise problem from None

    def probe_write(self, what="output", into=False):
        """Fail now if nothing can be written here: a small object is written beside
        this Location (``into``: in it) and removed."""
        probe = (self if into else self.parent).join(f".dnmf-tmp-probe-{uuid.uuid4().hex[:12]}")
        try:
            probe.write_bytes(b"\0" * 64)
            probe.fs.rm_file(probe.path)
        except Exception as error:
            problem = store_error(error, self.url, f"cannot write {what}", writing=True)
            if problem is None:
                raise
            raise problem from None

    def checked(self, what="input"):
        """Fail now if the store cannot be reached or refuses: one listing of the parent."""
        try:
            if self.exists():
                return self
        except Exception as error:
            problem = store_error(error, self.url, what)
            if problem is None:
                raise
            raise problem from None
        bucket = self.path.split("/", 1)[0]
        if not self.local and bucket != self.path and not self.retried("lookup", lambda: self.fs.exists(bucket)):
            raise NotFoundError(f"{what + ' ' if what else ''}{self.url}: the bucket {bucket!r} does not exist")
        raise NotFoundError(f"{what + ' ' if what else ''}not found: {self.url}")


def fsync_path(path, directory=False):
    """Flush a file (or a directory's entries: renames, creations) to disk; where the file
    system refuses, nothing to flush."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        descriptor = os.open(path, flags)
    except OSError:  # some file systems refuse to open directories
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def fsync_directory(path):
    """Flush a directory's entries (renames, creations) to disk."""
    fsync_path(path, directory=True)


def _async_twin(location):
    """The asynchronous filesystem Zarr needs for ``location`` (fsspec's wrapper for a
    synchronous one, such as ``memory://``)."""
    fs = location.fs
    if getattr(fs, "async_impl", False):
        return type(fs)(**{**location.options, "asynchronous": True})
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

    return AsyncFileSystemWrapper(fs)


_closing = set()


def _close_at_exit(fs):
    """Close an asynchronous s3fs filesystem's connections when this process exits (in
    every process that unpickles a store: the workers too). s3fs leaves that to the owner
    of an ``asynchronous=True`` instance; unclosed, aiohttp prints "Unclosed client
    session" at exit."""
    if fs is None or not hasattr(fs, "close_session") or id(fs) in _closing:
        return
    _closing.add(id(fs))

    def close():
        client = getattr(fs, "_s3", None)
        if client is not None:
            with contextlib.suppress(Exception):
                type(fs).close_session(zarr.core.sync._get_loop(), client)

    atexit.register(close)


def timed_retry(call, what, url):
    """``call()`` retried on :func:`transient` errors as :class:`RetryingStore` retries
    (for the small synchronous requests outside Zarr)."""
    for attempt in range(1, RETRIES + 1):
        try:
            return call()
        except Exception as error:
            if attempt == RETRIES or not transient(error):
                raise
            time.sleep(_backoff(what, url, error, attempt))


def _backoff(what, url, error, attempt):
    """Log a retry; the seconds to wait before it."""
    retry_logger.info(
        "retrying %s of %s after %s (attempt %d of %d)", what, url, type(error).__name__, attempt + 1, RETRIES
    )
    return BACKOFF_SECONDS * 2 ** (attempt - 1)
