"""Synthetic test matrices: non-negative low rank plus uniform noise, written in chunks.

``V = W H + noise * U`` with ``W`` (m x k), ``H`` (k x n) and ``U`` uniform on [0, 1):
the factors are uniform on [0, 1) too, so every entry is non-negative and ``noise`` is
the amplitude of the added noise. With a ``density`` the matrix is sparse: each entry is
kept with that probability (the kept ones are the entries of the dense matrix) and the
result is stored as a CSR group (:mod:`dnmf.io.storage`). With ``nnz`` instead, it is a
user-item graph of about that many entries, power-law degrees and planted communities
(:mod:`dnmf.io.graph`), stored as a CSR group too, in bounded memory at any width;
:data:`SHAPES` names the shapes of two published benchmark graphs.

The matrix is produced in row blocks of :func:`block_rows` rows (about a million entries, or
stored entries of a sparse one, so that a wide sparse matrix is not made row by row), each drawn from its own
stream of ``numpy.random.SeedSequence(seed, spawn_key=(block + 1,))`` (H from
``spawn_key=(0,)``), so the values depend on the seed and the shape only, not on the
stored chunking, and at most a block plus one stored chunk is ever in memory. Like every
group the package writes, the output appears by one atomic rename when complete.
"""

from __future__ import annotations

import logging
import numbers

import numpy as np
import zarr

from ..engine.durable import new_store
from ..engine.location import Location
from ..errors import ParameterError
from ..params import jsonable
from .csr import CSR_CHUNK_ENTRIES, CSR_FORMAT
from .graph import graph_blocks

__all__ = [
    "BLOCK_ENTRIES",
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_DTYPE",
    "DEFAULT_NOISE",
    "DEFAULT_RANK",
    "DEFAULT_SEED",
    "DEFAULT_SHAPE",
    "DTYPES",
    "SHAPES",
    "block_rows",
    "generate",
    "noise_floor",
]

logger = logging.getLogger(__name__)

#: Default shape: the README's dense 20000 x 2000 example.
DEFAULT_SHAPE = (20000, 2000)
#: Default rank of the low-rank part.
DEFAULT_RANK = 20
#: Default amplitude of the uniform noise.
DEFAULT_NOISE = 0.5
#: Default value dtype.
DEFAULT_DTYPE = "float32"
#: Default seed.
DEFAULT_SEED = 0
#: Value dtypes that can be written.
DTYPES = ("float32", "float64")
#: Entries (rows x n) in one generated block.
BLOCK_ENTRIES = 2**20
#: Default size of one stored row chunk of a dense matrix.
DEFAULT_CHUNK_BYTES = 16 * 2**20
#: ``(shape, nnz, rank)`` of the graphs of PLANC / MPI-FAUN's sparse experiments (Kannan,
#: Ballard and Park, "MPI-FAUN", IEEE TPDS 2018): Flickr's users x groups and Delicious's
#: users x tags, with the ranks fitted there.
SHAPES = {
    "flickr": ((28_000_000, 1_600_000), 112_000_000, 16),
    "delicious": ((17_000_000, 2_500_000), 72_000_000, 48),
}


def block_rows(shape, density=1.0):
    """Rows per generated block for a matrix of ``shape`` (about :data:`BLOCK_ENTRIES` entries,
    or stored entries when only a ``density`` share of them is kept)."""
    return int(max(1, min(shape[0], BLOCK_ENTRIES // max(1.0, shape[1] * density))))


def noise_floor(shape, noise, squared_norm):
    """Relative error of the true factors on dense data: about ``||noise - mean||_F / ||V||_F``.

    The mean of the uniform noise is a rank-one term a factorization can absorb; what is
    left has variance ``noise² / 12`` per entry. (Sparse data has no such floor: the
    zeros are not low rank.)
    """
    if squared_norm <= 0:
        return 0.0
    return float(np.sqrt(shape[0] * shape[1] * noise**2 / 12.0 / squared_norm))


def _check(shape, rank, noise, density, nnz, chunk_rows, dtype, seed):
    if len(shape) != 2 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in shape):
        raise ParameterError(f"shape must be two positive integers, got {tuple(shape)!r}")
    if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
        raise ParameterError(f"rank must be a positive integer, got {rank!r}")
    if noise is not None and not (isinstance(noise, numbers.Real) and np.isfinite(noise) and noise >= 0):
        raise ParameterError(f"noise must be a finite number >= 0, got {noise!r}")
    if density is not None and not (isinstance(density, numbers.Real) and 0 < density <= 1):
        raise ParameterError(f"density must be in (0, 1], got {density!r}")
    if nnz is not None:
        if isinstance(nnz, bool) or not isinstance(nnz, numbers.Integral) or nnz < 1:
            raise ParameterError(f"nnz must be a positive integer, got {nnz!r}")
        if density is not None:
            raise ParameterError(
                "give density or nnz, not both: density keeps entries of a dense low-rank matrix, nnz draws a graph"
            )
        if noise is not None:
            raise ParameterError("noise does not apply to a graph (nnz): its entries are counts of draws")
    if chunk_rows is not None and (not isinstance(chunk_rows, numbers.Integral) or chunk_rows < 1):
        raise ParameterError(f"chunks must be a positive number of rows, got {chunk_rows!r}")
    if str(dtype) not in DTYPES:
        raise ParameterError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ParameterError(f"seed must be an integer >= 0, got {seed!r}")


def _stream(seed, *key):
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _planted_rows(shape, k, seed, density=1.0):
    """``(rng, rows, W)`` per block of rows: the block's own seeded stream, and the
    block's planted factor (k columns), drawn first from it."""
    m = shape[0]
    rows = block_rows(shape, density)
    for index, start in enumerate(range(0, m, rows)):
        rng = _stream(seed, index + 1)
        count = min(rows, m - start)
        yield rng, count, rng.random((count, k))


def _dense_blocks(shape, H, noise, seed, dtype):
    for rng, count, W in _planted_rows(shape, H.shape[0], seed):
        block = W @ H
        if noise:
            block += noise * rng.random((count, shape[1]))
        yield block.astype(dtype)


def _sparse_blocks(shape, H, noise, density, seed, dtype):
    """``(rows, indptr_counts, indices, data)`` per block, row-major (CSR order)."""
    n = shape[1]
    for rng, count, W in _planted_rows(shape, H.shape[0], seed, density):
        size = count * n
        kept = rng.choice(size, size=rng.binomial(size, density), replace=False)
        kept.sort()
        row, column = np.divmod(kept, n)
        values = np.einsum("ij,ji->i", W[row], H[:, column])
        if noise:
            values += noise * rng.random(kept.size)
        yield count, np.bincount(row, minlength=count), column, values.astype(dtype)


def _write_dense(target, shape, H, noise, seed, dtype, chunk_rows, progress):
    array = zarr.create_array(store=target, shape=shape, chunks=(chunk_rows, shape[1]), dtype=dtype)
    pending, held, written, squares = [], 0, 0, 0.0
    for block in _dense_blocks(shape, H, noise, seed, dtype):
        pending.append(block)
        held += block.shape[0]
        squares += float(np.sum(np.square(block, dtype=np.float64)))
        while held >= chunk_rows or (held and written + held == shape[0]):
            rows = np.concatenate(pending) if len(pending) > 1 else pending[0]
            take = min(chunk_rows, rows.shape[0])
            array[written : written + take] = rows[:take]
            written += take
            pending, held = ([rows[take:]] if take < rows.shape[0] else []), rows.shape[0] - take
            if progress is not None:
                progress(take)
    return array, squares, shape[0] * shape[1]


def _write_csr(target, shape, blocks, dtype, entries, progress):
    """Write ``(rows, per_row, columns, values)`` blocks (in CSR order) as a CSR group whose
    ``indices``/``data`` chunks hold ``entries``."""
    m, n = shape
    group = zarr.open_group(target, mode="w")
    index_dtype = np.int32 if n <= np.iinfo(np.int32).max else np.int64
    indptr = group.create_array("indptr", shape=(m + 1,), dtype=np.int64, chunks=(min(CSR_CHUNK_ENTRIES, m + 1),))
    indices = group.create_array("indices", shape=(0,), dtype=index_dtype, chunks=(entries,))
    data = group.create_array("data", shape=(0,), dtype=dtype, chunks=(entries,))
    indptr[0:1] = np.zeros(1, np.int64)
    row, nnz, squares = 0, 0, 0.0
    for count, per_row, columns, values in blocks:
        indptr[row + 1 : row + count + 1] = nnz + np.cumsum(per_row)
        if values.size:
            indices.append(columns.astype(index_dtype))
            data.append(values)
        row += count
        nnz += int(values.size)
        squares += float(np.sum(np.square(values, dtype=np.float64)))
        if progress is not None:
            progress(count)
    group.attrs.update({"format": CSR_FORMAT, "shape": [m, n]})
    return group, squares, nnz


def generate(
    path,
    shape=DEFAULT_SHAPE,
    rank=DEFAULT_RANK,
    *,
    noise=None,
    density=None,
    nnz=None,
    chunk_rows=None,
    dtype=DEFAULT_DTYPE,
    seed=DEFAULT_SEED,
    overwrite=False,
    progress=None,
    storage_options=None,
):
    """Write a synthetic non-negative matrix of planted rank to ``path`` (a path or URL): low
    rank plus noise (dense, or sparse with ``density``), or a user-item graph (``nnz``).

    Parameters
    ----------
    path : str, path-like or URL
        Zarr destination: a 2-D array (dense) or a CSR group (``density`` or ``nnz`` given).
    shape : (int, int)
        ``(m, n)``.
    rank : int
        Rank of the low-rank part (of a graph: its number of communities).
    noise : float, optional
        Amplitude of the added uniform ``[0, noise)`` noise (default
        :data:`DEFAULT_NOISE`; a graph has none).
    density : float in (0, 1], optional
        Keep each entry with this probability and store CSR.
    nnz : int, optional
        Draw a user-item graph of about this many entries (:mod:`dnmf.io.graph`; a
        little fewer are stored, repeated draws adding up) and store CSR.
    chunk_rows : int, optional
        Rows per stored chunk (dense; default: the power of two of rows nearest below
        :data:`DEFAULT_CHUNK_BYTES`). For CSR, ``indices``/``data`` chunks hold about
        ``chunk_rows`` rows' entries (default :data:`~dnmf.io.csr.CSR_CHUNK_ENTRIES`).
    dtype : {"float32", "float64"}
    seed : int
    overwrite : bool
        Replace an existing ``path``; otherwise ``FileExistsError``.
    progress : callable, optional
        Called with the number of rows written after each block.
    storage_options : dict, optional
        For a URL: its filesystem's options.

    Returns
    -------
    dict
        What was written (also stored as ``attrs["generator"]``): ``shape``, ``rank``,
        ``noise``, ``density``, ``draws`` (the ``nnz`` asked for a graph), ``seed``,
        ``dtype``, ``nnz``, ``chunk_rows``, ``squared_norm`` and ``noise_floor`` (see
        :func:`noise_floor`; None when sparse).
    """
    shape = tuple(shape)
    _check(shape, rank, noise, density, nnz, chunk_rows, dtype, seed)
    dtype = np.dtype(dtype)
    if nnz is None and noise is None:
        noise = DEFAULT_NOISE
    sparse = density is not None or nnz is not None
    if not sparse and chunk_rows is None:
        rows = max(1, DEFAULT_CHUNK_BYTES // (shape[1] * dtype.itemsize))
        chunk_rows = 1 << (rows.bit_length() - 1)  # a power of two: panels are whole multiples
    if chunk_rows is not None:
        chunk_rows = int(min(chunk_rows, shape[0]))
    per_row = shape[1] * density if density is not None else (nnz / shape[0] if nnz is not None else None)
    entries = int(min(CSR_CHUNK_ENTRIES, max(1, chunk_rows * per_row))) if sparse and chunk_rows else CSR_CHUNK_ENTRIES
    with new_store(path, overwrite, storage_options) as target:
        if nnz is not None:
            blocks = graph_blocks(shape, nnz, rank, seed, dtype)
            node, squares, stored = _write_csr(target, shape, blocks, dtype, entries, progress)
        else:
            H = _stream(seed, 0).random((rank, shape[1]))
            if density is None:
                node, squares, stored = _write_dense(target, shape, H, noise, seed, dtype, chunk_rows, progress)
            else:
                blocks = _sparse_blocks(shape, H, noise, density, seed, dtype)
                node, squares, stored = _write_csr(target, shape, blocks, dtype, entries, progress)
        info = {
            "shape": list(shape),
            "rank": int(rank),
            "noise": None if noise is None else float(noise),
            "density": None if density is None else float(density),
            "draws": None if nnz is None else int(nnz),
            "seed": int(seed),
            "dtype": str(dtype),
            "nnz": int(stored),
            "chunk_rows": chunk_rows,
            "squared_norm": squares,
            "noise_floor": None if sparse else noise_floor(shape, noise, squares),
        }
        node.attrs["generator"] = jsonable(info)
    logger.info("generated %s: %s", Location.of(path, storage_options), info)
    return info
