"""The ``SHA256SUMS`` file of a checkpoint: written last, verified before any use.

Its format is ``sha256sum``'s, so ``cd ckpt-000012 && sha256sum -c SHA256SUMS`` checks a
checkpoint by hand.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

__all__ = ["HASH_BLOCK_BYTES", "MANIFEST", "check_manifest", "file_sha256", "files", "write_manifest"]

#: Checksum file of each checkpoint directory (``sha256sum`` format).
MANIFEST = "SHA256SUMS"
#: Bytes read at a time when hashing a file.
HASH_BLOCK_BYTES = 2**20

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def files(path):
    """Every file under ``path`` but the manifest, as sorted relative POSIX paths."""
    path = Path(path)
    found = []
    for root, _, names in os.walk(path):
        for name in names:
            relative = Path(root, name).relative_to(path).as_posix()
            if relative != MANIFEST:
                found.append(relative)
    return sorted(found)


def write_manifest(path):
    """Write ``path/SHA256SUMS``; returns the SHA-256 of its text (names the content)."""
    text = "".join(f"{file_sha256(Path(path, relative))}  {relative}\n" for relative in files(path))
    with open(Path(path, MANIFEST), "w") as handle:
        handle.write(text)
    return hashlib.sha256(text.encode()).hexdigest()


def check_manifest(path):
    """``(problem, file)`` of the first mismatch between ``path`` and its manifest, or
    ``(None, digest of the manifest)``."""
    path = Path(path)
    manifest = path / MANIFEST
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
    for relative in files(path):
        if relative not in recorded:
            return f"{path / relative} is not listed in {MANIFEST}", path / relative
    for relative, digest in recorded.items():
        file = path / relative
        if not file.is_file():
            return f"{file} is missing", file
        actual = file_sha256(file)
        if actual != digest:
            return (
                f"{file} fails its checksum (sha256 {actual[:16]}…, {MANIFEST} records {digest[:16]}…; "
                f"{file.stat().st_size} bytes)"
            ), file
    return None, hashlib.sha256(text.encode()).hexdigest()
