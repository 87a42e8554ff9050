"""A real Zarr store that counts the reads of chunk keys: the tests that V is read once
per iteration count there."""

from __future__ import annotations

import collections

import numpy as np
from zarr.storage import WrapperStore


class CountingStore(WrapperStore):
    """A real store that counts reads of chunk keys (``c/...`` or ``<array>/c/...``).

    Copies made by zarr (``with_read_only``) share the counter.
    """

    def __init__(self, store, counts=None):
        super().__init__(store)
        self.counts = collections.Counter() if counts is None else counts

    def _with_store(self, store):
        return type(self)(store, self.counts)

    def _count(self, key):
        if key.startswith("c/") or "/c/" in key:
            self.counts[key] += 1

    async def get(self, key, prototype, byte_range=None):
        self._count(key)
        return await super().get(key, prototype, byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        for key, _ in key_ranges:
            self._count(key)
        return await super().get_partial_values(prototype, key_ranges)

    def reads(self, prefix=""):
        """``{chunk key: reads}`` of the keys that start with ``prefix``."""
        return {key: count for key, count in self.counts.items() if key.startswith(prefix)}


def chunk_keys(array, prefix=""):
    """Every stored chunk key of a Zarr array (default ``/``-separated encoding)."""
    grid = [range(-(-size // chunk)) for size, chunk in zip(array.shape, array.chunks)]
    return {prefix + "c/" + "/".join(map(str, index)) for index in np.ndindex(*[len(g) for g in grid])}


def panel_chunk_reads(indptr, edges, chunk):
    """``{chunk number: panels whose slice of an entry array touches it}`` for a CSR
    matrix's ``indptr``, panel row ``edges`` and entry chunks of ``chunk``: each panel
    reads its own slice, so a chunk straddling an edge is read by both panels."""
    entries = np.asarray(indptr[:], dtype=np.int64)[edges]
    reads = collections.Counter()
    for lo, hi in zip(entries[:-1], entries[1:]):
        reads.update(range(lo // chunk, (hi - 1) // chunk + 1) if hi > lo else [])
    return reads


class PassRecorder:
    """Progress callback: chunk reads done when each iteration was reported."""

    def __init__(self, store, prefix=""):
        self.store, self.prefix, self.totals = store, prefix, []

    def __call__(self, info):
        self.totals.append(sum(self.store.reads(self.prefix).values()))
