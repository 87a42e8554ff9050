"""Similar items: cosine similarity between rows of W, out of core.

NMF gives every row of V (a document, a user, an image) a non-negative profile over the
k components: its row of W. Two rows with the same mix of components are alike whatever
their scale, so similarity is the cosine of the angle between their rows of W::

    score(i, q) = <W_i, q> / (||W_i|| ||q||)        in [0, 1] (W >= 0)

:func:`similar` computes it for every row in one pass over W with a Dask reduction:
each row panel scores its rows and keeps its best ``top`` (``dask.array.argtopk``),
and the panels' candidates are merged in a tree. Only ``top`` indices come back; W is
never gathered, so W may be a Zarr array or a Dask array bigger than memory.

Rows whose W is all zeros (nothing of any component) have no direction; they score 0.

For a fitted :class:`dnmf.NMF` the items are its *features* (the columns of X), each
described by its column of ``components_``: items bought by the same users, words used
in the same topics. Pass the W returned by ``fit_transform`` to compare the rows of X
(users, documents) instead.
"""

from __future__ import annotations

import difflib
import logging
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import dask.array as da
import numpy as np
import zarr
from numpy.typing import ArrayLike

from ..engine.driver import compute
from ..engine.state import FitResult
from ..errors import InputError, InputTypeError, NotFoundError, ParameterError
from ..io.results import Result, read_result

if TYPE_CHECKING:
    from ..estimator import NMF

__all__ = ["Neighbor", "item_vectors", "read_labels", "similar"]

logger = logging.getLogger(__name__)

#: How many close label spellings an "unknown label" error suggests.
LABEL_SUGGESTIONS = 3
#: What :func:`similar` compares the rows of: a fitted model, a fit's result (a path, as
#: read, or as returned), or W itself.
ModelOrW = Union["NMF", FitResult, Result, str, os.PathLike[str], ArrayLike, zarr.Array]


@dataclass(frozen=True)
class Neighbor:
    """One similar item.

    Attributes
    ----------
    index : int
        Row of W (for a fitted NMF: column of X).
    score : float
        Cosine similarity with the query, in [0, 1].
    label : str or None
        ``labels[index]`` when labels were given.
    """

    index: int
    score: float
    label: str | None = None


def item_vectors(model_or_W: ModelOrW) -> da.Array:
    """The items compared by :func:`similar`, as a Dask array of shape (items, k).

    Parameters
    ----------
    model_or_W : fitted dnmf.NMF (or scikit-learn NMF), dnmf.FitResult, result path or \
dnmf.io.results.Result, or an array (NumPy, Dask, Zarr) of shape (items, k)
        A model gives its features (``components_.T``); results and arrays give their
        rows of W.

    Returns
    -------
    dask.array.Array
        Chunked in rows only.
    """
    source = model_or_W
    if isinstance(source, (str, os.PathLike)):
        source = read_result(source)
    if hasattr(source, "components_"):
        vectors = np.asarray(source.components_).T
    elif isinstance(source, Result):
        vectors = source.W
    elif isinstance(source, FitResult):
        vectors = source.W
    else:
        vectors = source
    if isinstance(vectors, zarr.Array):
        vectors = da.from_zarr(vectors)
    elif not isinstance(vectors, da.Array):
        vectors = np.asarray(vectors)
        if vectors.dtype.kind not in "iuf":
            raise InputTypeError(f"W must be a numeric array, got dtype {vectors.dtype}")
        vectors = da.from_array(vectors, chunks=(max(1, vectors.shape[0]) if vectors.ndim else 1,) + vectors.shape[1:])
    if vectors.ndim != 2:
        raise InputError(f"W must be 2-D (items x components), got shape {vectors.shape}")
    if vectors.shape[0] == 0 or vectors.shape[1] == 0:
        raise InputError(f"W is empty: shape {vectors.shape}")
    if vectors.numblocks[1] != 1:
        vectors = vectors.rechunk({1: -1})
    return vectors


def read_labels(
    labels: Sequence[str] | np.ndarray | str | os.PathLike[str] | None, n_items: int | None = None
) -> list[str] | None:
    """Labels as a list of str: a sequence, or a path to a text file with one label a line.

    Raises
    ------
    FileNotFoundError
        ``labels`` is a path to nothing.
    ValueError
        The number of labels differs from ``n_items``.
    """
    if labels is None:
        return None
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        if not path.is_file():
            raise NotFoundError(f"labels file not found: {path}")
        labels = path.read_text(encoding="utf-8").splitlines()
    labels = [str(label) for label in labels]
    if n_items is not None and len(labels) != n_items:
        raise InputError(f"got {len(labels)} labels for {n_items} items; need one label per item (row of W)")
    return labels


def _row_of_label(label, labels):
    if labels is None:
        raise InputError(f"query {label!r} is a label, but no labels were given")
    rows = [i for i, known in enumerate(labels) if known == label]
    if not rows:
        close = difflib.get_close_matches(label, labels, n=LABEL_SUGGESTIONS)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise InputError(f"unknown label {label!r}{hint}")
    if len(rows) > 1:
        raise InputError(f"label {label!r} names {len(rows)} items (rows {rows[:5]}); query by row instead")
    return rows[0]


def _query_vector(query, vectors, labels):
    """``(q, row)``: the query's vector and its row (None for a vector query)."""
    m, k = vectors.shape
    if isinstance(query, str):
        query = _row_of_label(query, labels)
    if isinstance(query, numbers.Integral) and not isinstance(query, bool):
        row = int(query)
        if not 0 <= row < m:
            raise InputError(f"row {row} is out of range: W has {m} rows (0..{m - 1})")
        return np.asarray(compute(vectors[row])[0], dtype=np.float64), row
    q = np.asarray(query, dtype=np.float64).ravel()
    if q.shape != (k,):
        raise InputError(f"query vector has {q.size} entries; expected {k} (one per component)")
    return q, None


def _cosine_block(block, unit_query):
    """Cosine of each row of a panel with a unit vector (rows of zeros score 0)."""
    block = np.asarray(block, dtype=np.float64)
    norms = np.sqrt(np.einsum("ij,ij->i", block, block))
    dots = block @ unit_query
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)


def similar(
    model_or_W: ModelOrW,
    query: int | str | ArrayLike,
    top: int = 5,
    labels: Sequence[str] | np.ndarray | str | os.PathLike[str] | None = None,
    *,
    exclude_query: bool = True,
) -> list[Neighbor]:
    """The ``top`` items most similar to ``query``, by cosine similarity of their W rows.

    Parameters
    ----------
    model_or_W : fitted NMF, FitResult, result (path or Result) or array of shape (items, k)
        See :func:`item_vectors`: rows of W, or a model's features.
    query : int, str or array-like of shape (k,)
        A row index, a label (needs ``labels``) or a vector in component space (e.g. a
        row of ``model.transform(X_new)``).
    top : int, default=5
        Number of items returned (fewer if there are not that many).
    labels : sequence of str or path, optional
        One label per item (a path: a text file, one label a line); used to look up a
        str ``query`` and returned with each match. A model fitted on a DataFrame uses
        its ``feature_names_in_`` by default.
    exclude_query : bool, default=True
        Leave the query's own row out of the answer.

    Returns
    -------
    list of Neighbor
        Best first (ties: lower index first).

    Raises
    ------
    ValueError
        Unknown or ambiguous label, row out of range, wrong vector length, a query of
        all zeros (no direction), or labels not one per item.
    """
    if not isinstance(top, numbers.Integral) or isinstance(top, bool) or top < 1:
        raise ParameterError(f"top must be a positive integer, got {top!r}")
    if labels is None and hasattr(model_or_W, "feature_names_in_"):
        labels = list(model_or_W.feature_names_in_)
    vectors = item_vectors(model_or_W)
    m = vectors.shape[0]
    labels = read_labels(labels, m)
    q, row = _query_vector(query, vectors, labels)
    norm = float(np.linalg.norm(q))
    if not norm > 0:
        what = f"row {row}" if row is not None else "the query vector"
        raise InputError(f"{what} is all zeros: it has no direction, so cosine similarity is undefined")
    unit = q / norm
    skip = row is not None and exclude_query
    wanted = min(m, top + skip)
    scores = vectors.map_blocks(_cosine_block, unit, drop_axis=1, dtype=np.float64)
    candidates = np.asarray(compute(da.argtopk(scores, wanted))[0])
    if skip:
        candidates = candidates[candidates != row]
    rows = np.sort(candidates)
    exact = _cosine_block(compute(vectors[rows])[0] if len(rows) else np.empty((0, vectors.shape[1])), unit)
    order = np.lexsort((rows, -exact))[:top]
    logger.debug("similar: %d candidates from %d panels", len(candidates), vectors.numblocks[0])
    return [Neighbor(int(rows[i]), float(exact[i]), None if labels is None else labels[int(rows[i])]) for i in order]
