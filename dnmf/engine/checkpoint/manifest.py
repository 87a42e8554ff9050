"""The ``SHA256SUMS`` file of a checkpoint: written last, verified before any use.

Its format is ``sha256sum``'s, so ``cd ckpt-000012 && sha256sum -c SHA256SUMS`` checks a
local checkpoint by hand. The files are hashed by tasks of the active scheduler
(:func:`dnmf.engine.driver.each`), on the workers, where they are read: on an object
store the driver reads only the manifest.
"""

from __future__ import annotations

import hashlib
import re

from ..driver import each
from ..location import Location

__all__ = ["MANIFEST", "check_manifest", "file_sha256", "files", "write_manifest"]

#: Checksum file of each checkpoint directory (``sha256sum`` format).
MANIFEST = "SHA256SUMS"

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def file_sha256(location):
    """``(SHA-256 hex digest, size)`` of the file at a :class:`~dnmf.engine.location.Location`.

    Read whole, by one GET on an object store (a checkpoint's files are Zarr chunks of
    one panel of W, or H): not through a file object, which trusts the size the store
    reports for the object (a store that reported 0 made every checkpoint hash alike).
    """
    content = location.read_bytes()
    return hashlib.sha256(content).hexdigest(), len(content)


def files(location):
    """Every file under ``location`` but the manifest, as sorted relative POSIX paths."""
    return [relative for relative in Location.of(location).files() if relative != MANIFEST]


def write_manifest(location):
    """Write ``location/SHA256SUMS``; returns the SHA-256 of its text (names the content)."""
    location = Location.of(location)
    names = files(location)
    digests = each(file_sha256, [location.join(name) for name in names])
    text = "".join(f"{digest}  {name}\n" for name, (digest, _) in zip(names, digests))
    location.join(MANIFEST).write_bytes(text.encode())
    return hashlib.sha256(text.encode()).hexdigest()


def check_manifest(location):
    """``(problem, file)`` of the first mismatch between ``location`` and its manifest,
    or ``(None, digest of the manifest)``."""
    location = Location.of(location)
    manifest = location.join(MANIFEST)
    try:
        text = manifest.read_text()
    except (OSError, UnicodeDecodeError) as error:
        return f"{manifest} cannot be read ({error.__class__.__name__})", manifest
    recorded = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, separator, relative = line.partition("  ")
        if not separator or not _DIGEST.match(digest) or not relative:
            return f"{manifest} is damaged at line {number}", manifest
        recorded[relative] = digest
    if not text.endswith("\n"):
        return f"{manifest} is truncated", manifest
    present = set(files(location))
    unlisted = sorted(present - set(recorded))
    if unlisted:
        return f"{location.join(unlisted[0])} is not listed in {MANIFEST}", location.join(unlisted[0])
    missing = [relative for relative in recorded if relative not in present]
    if missing:
        return f"{location.join(missing[0])} is missing", location.join(missing[0])
    names = list(recorded)
    for relative, (actual, size) in zip(names, each(file_sha256, [location.join(name) for name in names])):
        if actual != recorded[relative]:
            return (
                f"{location.join(relative)} fails its checksum (sha256 {actual[:16]}…, {MANIFEST} records "
                f"{recorded[relative][:16]}…; {size} bytes)"
            ), location.join(relative)
    return None, hashlib.sha256(text.encode()).hexdigest()
