"""Synthetic user-item graphs: sparse count matrices with power-law degrees and planted communities.

The rows are users, the columns items (groups, tags, products), and an entry counts how
often a user drew an item. The expected matrix is non-negative and of rank ``k``::

    E[V] = diag(d) Θ Φ

- ``d``: each row's degree (draws), a power law of exponent :data:`ROW_EXPONENT`
  (density ``∝ x^-γ``), scaled so that the degrees add up to the requested ``nnz`` on
  average; rows with few draws and a few with very many, as in real user-item graphs.
- ``Θ`` (m x k): each row's memberships, Dirichlet(:data:`MEMBERSHIP_CONCENTRATION`)
  (mostly one community per user, some several).
- ``Φ`` (k x n): each community's distribution over the columns. Every column has a
  power-law popularity (exponent :data:`COLUMN_EXPONENT`) and one home community; a draw
  from community ``c`` takes a column of ``c`` by popularity, or, with probability
  :data:`CROSSOVER`, any column by popularity.

Repeated draws of one entry add up, so the number of stored entries is a little below
``nnz`` (the degrees' sum); the values are small integers, mostly 1. Only vectors of
length ``n`` (the columns' popularity, home and order) and one row block at a time
are held in memory. Every block is drawn from its own stream,
``numpy.random.SeedSequence(seed, spawn_key=(1, block))`` (the columns' from
``spawn_key=(0,)``), so the matrix depends on ``(shape, nnz, rank, seed)`` only.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "BLOCK_DRAWS",
    "COLUMN_EXPONENT",
    "CROSSOVER",
    "MEMBERSHIP_CONCENTRATION",
    "ROW_EXPONENT",
    "Columns",
    "graph_blocks",
]

#: Power-law exponent of the rows' degrees.
ROW_EXPONENT = 2.5
#: Power-law exponent of the columns' popularity.
COLUMN_EXPONENT = 2.2
#: Dirichlet concentration of each row's community memberships.
MEMBERSHIP_CONCENTRATION = 0.1
#: Probability that a draw ignores its community and takes any column by popularity.
CROSSOVER = 0.1
#: Draws (before duplicates are merged) in one generated row block.
BLOCK_DRAWS = 2**21


def _stream(seed, *key):
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _pareto(rng, size, exponent):
    """Power-law draws of density ``∝ x^-exponent`` on ``[1, ∞)``."""
    return rng.random(size) ** (-1.0 / (exponent - 1.0))


class Columns:
    """The columns' side of the graph: the cumulative popularity over all columns and,
    community after community, over each community's own (all length-``n`` vectors)."""

    def __init__(self, n, k, seed):
        rng = _stream(seed, 0)
        popularity = _pareto(rng, n, COLUMN_EXPONENT)
        home = rng.integers(0, k, n)
        self.order = np.argsort(home, kind="stable")  # the columns, community after community
        self.starts = np.searchsorted(home[self.order], np.arange(k + 1))
        self.everywhere = _cumulative(popularity)
        within = popularity[self.order]
        for c in range(k):
            piece = slice(self.starts[c], self.starts[c + 1])
            within[piece] = _cumulative(within[piece]) + c if within[piece].size else within[piece]
        self.within = within  # community c's columns take (c, c + 1]
        self.n, self.k = n, k

    def draw(self, rng, communities):
        """One column per draw: from its community (``communities``) or, at the
        crossover rate, from all columns; by popularity."""
        u = rng.random(communities.size)
        empty = self.starts[communities] == self.starts[communities + 1]  # a community with no columns
        anywhere = (rng.random(communities.size) < CROSSOVER) | empty
        columns = np.empty(communities.size, np.int64)
        columns[anywhere] = np.searchsorted(self.everywhere, u[anywhere], side="right")
        own = ~anywhere
        place = np.searchsorted(self.within, communities[own] + u[own], side="right")
        columns[own] = self.order[np.minimum(place, self.n - 1)]
        return np.minimum(columns, self.n - 1)


def _cumulative(weights):
    total = np.cumsum(weights)
    return total / total[-1]


def _block_rows(m, nnz):
    return int(max(1, min(m, BLOCK_DRAWS * m // max(1, nnz))))


def _degree_scale(m, nnz, seed, rows):
    """Factor on the power-law draws that makes the degrees add up to ``nnz`` on average
    (one cheap pass over the rows' draws, block by block, from the blocks' own streams)."""
    total = 0.0
    for index, start in enumerate(range(0, m, rows)):
        total += float(np.sum(_pareto(_stream(seed, 1, index), min(rows, m - start), ROW_EXPONENT)))
    return nnz / total


def graph_blocks(shape, nnz, k, seed, dtype):
    """``(rows, per_row, columns, values)`` per row block, in CSR order: the block's
    number of rows, entries per row, and each entry's column and count."""
    m, n = shape
    rows = _block_rows(m, nnz)
    scale = _degree_scale(m, nnz, seed, rows)
    columns = Columns(n, k, seed)
    for index, start in enumerate(range(0, m, rows)):
        rng = _stream(seed, 1, index)
        count = min(rows, m - start)
        weight = _pareto(rng, count, ROW_EXPONENT) * scale
        degree = np.minimum(np.floor(weight + rng.random(count)).astype(np.int64), n)  # rounded without bias
        membership = np.cumsum(rng.dirichlet(np.full(k, MEMBERSHIP_CONCENTRATION), count), axis=1)
        membership[:, -1] = 1.0
        row = np.repeat(np.arange(count), degree)
        flat = (membership + np.arange(count)[:, None]).ravel()  # row r's communities take (r, r + 1]
        community = np.searchsorted(flat, row + rng.random(row.size), side="right") - row * k
        community = np.minimum(community, k - 1)
        keys, counts = np.unique(row * n + columns.draw(rng, community), return_counts=True)
        row, column = np.divmod(keys, n)
        yield count, np.bincount(row, minlength=count), column, counts.astype(dtype)
