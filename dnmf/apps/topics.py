"""Topics: tf-idf of a set of documents, factorized; top terms per topic, topic mix per document.

Documents come from a folder of ``.txt`` files (searched recursively, sorted by path;
each file is one document, labelled by its path relative to the folder) or from one
column of a CSV file (one row, one document; labelled by ``label_column`` or
``"row N"``). scikit-learn's :class:`~sklearn.feature_extraction.text.TfidfVectorizer`
turns them into a documents x terms matrix, which is stored as a *corpus group*::

    CORPUS.zarr/           Zarr group, attrs {kind: "dnmf-corpus", version, source,
      tfidf/                 column, vectorizer}
                           documents x terms, a CSR group (see dnmf.io.storage): the input
                           of `dnmf fit CORPUS.zarr/tfidf`
      vocabulary           (terms,) str, the term of each column
      documents            (documents,) str, the label of each row

NMF of the tf-idf matrix: each row of ``components_`` (H) is a topic, its largest
entries its top terms; each row of W says how much of each topic a document holds, and
normalized to sum 1, its *topic mix*.
"""

from __future__ import annotations

import csv
import gzip
import logging
import numbers
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from numpy.typing import ArrayLike

from ..engine.driver import to_numpy
from ..engine.durable import new_group
from ..engine.location import Location
from ..errors import InputError, NotFoundError, ParameterError
from ..io.csr import write_csr
from ..io.results import open_kind
from ..io.storage import CSRMatrix, open_matrix
from ..params import jsonable

if TYPE_CHECKING:
    from ..estimator import NMF

__all__ = [
    "CORPUS_KIND",
    "DEFAULT_TOP",
    "VECTORIZER_DEFAULTS",
    "Corpus",
    "Topics",
    "build_corpus",
    "corpus_of",
    "open_corpus",
    "read_documents",
    "top_terms",
    "topic_mix",
    "find_topics",
]

logger = logging.getLogger(__name__)

#: ``attrs["kind"]`` of a corpus group.
CORPUS_KIND = "dnmf-corpus"
#: Layout version in ``attrs["version"]``.
CORPUS_VERSION = 1
#: Names inside a corpus group.
TFIDF, VOCABULARY, DOCUMENTS = "tfidf", "vocabulary", "documents"
#: Suffix of the documents read from a folder.
TEXT_SUFFIX = ".txt"
#: Suffixes of the CSV files read as documents (gzip-compressed ones too).
CSV_SUFFIXES = (".csv", ".csv.gz")
#: Column used when a CSV has one named so and ``column`` is not given.
DEFAULT_COLUMN = "text"
#: Top terms shown per topic.
DEFAULT_TOP = 10
#: TfidfVectorizer settings unless overridden: English stop words out, terms in more
#: than 95% of the documents out, log-scaled term counts, unit-length rows.
VECTORIZER_DEFAULTS = {"stop_words": "english", "max_df": 0.95, "min_df": 1, "sublinear_tf": True}
#: NMF settings of :func:`find_topics` unless overridden (NNDSVDA suits sparse tf-idf).
NMF_DEFAULTS = {"init": "nndsvda", "random_state": 0, "max_iter": 200}
#: Width of the label column in :meth:`Topics.format`.
LABEL_WIDTH = 32


# --------------------------------------------------------------------- documents


def _read_folder(folder):
    paths = sorted(p for p in folder.rglob(f"*{TEXT_SUFFIX}") if p.is_file())
    if not paths:
        raise InputError(f"no {TEXT_SUFFIX} files in {folder}")
    labels = [p.relative_to(folder).as_posix() for p in paths]
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in paths]
    return labels, texts


def _read_csv(path, column, label_column):
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        names = reader.fieldnames or []
        if column is None:
            if DEFAULT_COLUMN in names:
                column = DEFAULT_COLUMN
            elif len(names) == 1:
                column = names[0]
            else:
                raise InputError(f"{path} has columns {names}; say which one holds the text (column=..., --column)")
        for name, what in ((column, "column"), (label_column, "label column")):
            if name is not None and name not in names:
                raise InputError(f"{what} {name!r} is not in {path}; its columns are {names}")
        rows = list(reader)
    if not rows:
        raise InputError(f"{path} has no rows")
    texts = [row[column] or "" for row in rows]
    labels = [row[label_column] or "" for row in rows] if label_column else [f"row {i}" for i in range(len(rows))]
    return labels, texts


def read_documents(
    source: str | os.PathLike[str], *, column: str | None = None, label_column: str | None = None
) -> tuple[list[str], list[str]]:
    """Read documents and their labels.

    Parameters
    ----------
    source : str or path
        A folder of ``.txt`` files or a ``.csv`` file (``.csv.gz`` too).
    column : str, optional
        CSV column holding the text (default: ``"text"``, or the only column).
    label_column : str, optional
        CSV column holding each document's label (default: ``"row N"``).

    Returns
    -------
    labels, texts : list of str
    """
    path = Path(source)
    if not path.exists():
        raise NotFoundError(f"documents not found: {source}")
    if path.is_dir():
        if column is not None or label_column is not None:
            raise InputError(
                f"column/label_column apply to a CSV file, but {source} is a folder of {TEXT_SUFFIX} files"
            )
        return _read_folder(path)
    if not path.name.lower().endswith(CSV_SUFFIXES):
        raise InputError(f"{source} is neither a folder of {TEXT_SUFFIX} files nor a .csv (or .csv.gz) file")
    return _read_csv(path, column, label_column)


# ------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Corpus:
    """A corpus group opened read-only (layout in the module docstring).

    Attributes
    ----------
    path : str
    matrix : CSRMatrix
        documents x terms tf-idf.
    vocabulary : ndarray of str, shape (terms,)
    documents : list of str
        Document labels, one per row.
    attrs : dict
    """

    path: str
    matrix: CSRMatrix
    vocabulary: np.ndarray
    documents: list[str]
    attrs: dict[str, Any]

    @property
    def tfidf_path(self) -> str:
        """Path of the tf-idf CSR group (what `dnmf fit` reads)."""
        return os.path.join(self.path, TFIDF)


def _write_strings(group, name, values):
    values = np.asarray(values, dtype=str) if len(values) else np.empty(0, dtype=str)
    array = group.create_array(name, shape=values.shape, dtype=str, chunks=(max(1, len(values)),))
    if len(values):
        array[:] = values


def build_corpus(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    column: str | None = None,
    label_column: str | None = None,
    overwrite: bool = False,
    storage_options: dict[str, Any] | None = None,
    **vectorizer: Any,
) -> Corpus:
    """Vectorize documents with tf-idf and store them as a corpus group.

    Parameters
    ----------
    source : str or path
        A folder of ``.txt`` files or a ``.csv`` file (see :func:`read_documents`).
    out : str or path
        Corpus group to write (appears whole, by one rename).
    column, label_column : str, optional
        For a CSV source.
    overwrite : bool
        Replace an existing ``out``; otherwise ``FileExistsError``.
    **vectorizer
        TfidfVectorizer parameters, over :data:`VECTORIZER_DEFAULTS`.

    Returns
    -------
    Corpus
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    labels, texts = read_documents(source, column=column, label_column=label_column)
    settings = {**VECTORIZER_DEFAULTS, **vectorizer}
    tfidf = TfidfVectorizer(**settings)
    X = tfidf.fit_transform(texts)
    vocabulary = tfidf.get_feature_names_out()
    attrs = {
        "kind": CORPUS_KIND,
        "version": CORPUS_VERSION,
        "source": os.fspath(Path(source).absolute()),
        "column": column,
        "vectorizer": jsonable(settings),
    }
    with new_group(out, overwrite, storage_options) as group:
        group.attrs.update(attrs)
        write_csr(group.create_group(TFIDF), X)
        _write_strings(group, VOCABULARY, vocabulary)
        _write_strings(group, DOCUMENTS, labels)
    logger.info("wrote corpus %s: %d documents x %d terms, %d entries", out, X.shape[0], X.shape[1], X.nnz)
    return open_corpus(out, storage_options)


def open_corpus(path: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> Corpus:
    """Open a corpus group (at a path or URL) read-only.

    Raises
    ------
    NotFoundError
        Nothing at ``path``.
    InputError
        ``path`` is not a corpus group.
    """
    location = Location.of(path, storage_options).checked("corpus")
    url: str = location.url
    group, attrs = open_kind(location, "corpus group", (CORPUS_KIND,))
    matrix: CSRMatrix = open_matrix(location.join(TFIDF))  # type: ignore[assignment]  # tfidf is a CSR group
    vocabulary = np.array([str(term) for term in group[VOCABULARY][:]], dtype=str)
    documents = [str(label) for label in group[DOCUMENTS][:]]
    if matrix.shape != (len(documents), len(vocabulary)):
        raise InputError(
            f"{url}: tf-idf has shape {matrix.shape} but there are {len(documents)} documents "
            f"and {len(vocabulary)} terms"
        )
    return Corpus(url, matrix, vocabulary, documents, attrs)


def corpus_of(matrix_path: str | os.PathLike[str] | None) -> Corpus | None:
    """The corpus whose tf-idf matrix is at ``matrix_path``, or None if it is not one."""
    if matrix_path is None:
        return None
    location = Location.of(matrix_path)
    if location.name != TFIDF:
        return None
    try:
        return open_corpus(location.parent)
    except (FileNotFoundError, ValueError, ConnectionError, PermissionError):
        return None


def _is_corpus(location):
    if not location.join("zarr.json").is_file():
        return False
    return zarr.open_group(store=location.zarr_store(), mode="r").attrs.get("kind") == CORPUS_KIND


# ------------------------------------------------------------------------- topics


def top_terms(
    H: ArrayLike, vocabulary: Sequence[str] | np.ndarray, top: int = DEFAULT_TOP
) -> list[list[tuple[str, float]]]:
    """The ``top`` heaviest terms of each topic.

    Parameters
    ----------
    H : array-like of shape (k, terms)
        ``components_``.
    vocabulary : sequence of str, length terms
    top : int

    Returns
    -------
    list of list of (str, float)
        For each topic, its terms and weights, heaviest first (terms of weight 0 left out).
    """
    H = np.asarray(H)
    if H.ndim != 2 or H.shape[1] != len(vocabulary):
        raise ParameterError(f"H has shape {H.shape} but the vocabulary has {len(vocabulary)} terms")
    if top < 1:
        raise ParameterError(f"top must be a positive integer, got {top!r}")
    terms = []
    for row in H:
        order = np.argsort(-row, kind="stable")[:top]
        terms.append([(str(vocabulary[j]), float(row[j])) for j in order if row[j] > 0])
    return terms


def topic_mix(W: ArrayLike) -> np.ndarray:
    """Rows of W scaled to sum 1: each document's share of each topic (rows of zeros stay 0).

    Parameters
    ----------
    W : array-like of shape (documents, k)

    Returns
    -------
    ndarray of shape (documents, k)
    """
    W = np.asarray(W, dtype=np.float64)
    totals = W.sum(axis=1, keepdims=True)
    return np.divide(W, totals, out=np.zeros_like(W), where=totals > 0)


@dataclass(frozen=True)
class Topics:
    """What :func:`find_topics` found.

    Attributes
    ----------
    model : dnmf.NMF
        Fitted on the tf-idf matrix; ``model.components_`` is H (topics x terms).
    W : ndarray of shape (documents, k)
    terms : list of list of (str, float)
        :func:`top_terms` of each topic.
    mix : ndarray of shape (documents, k)
        :func:`topic_mix` of W.
    vocabulary : ndarray of str
    documents : list of str
        Document labels.
    corpus : str or None
        Path of the stored corpus group (None: it was temporary).
    """

    model: NMF
    W: np.ndarray
    terms: list[list[tuple[str, float]]]
    mix: np.ndarray
    vocabulary: np.ndarray
    documents: list[str]
    corpus: str | None

    def format(self, max_documents: int | None = None) -> str:
        """Top terms of each topic, then the topic mix of each document, as text."""
        k = len(self.terms)
        lines = [f"topic {t}: {', '.join(term for term, _ in words)}" for t, words in enumerate(self.terms)]
        header = f"{'document':<{LABEL_WIDTH}} " + " ".join(f"{'t' + str(t):>6}" for t in range(k)) + "  main"
        lines += ["", header]
        shown = self.documents if max_documents is None else self.documents[:max_documents]
        for label, mix in zip(shown, self.mix):
            if len(label) > LABEL_WIDTH:
                label = label[: LABEL_WIDTH - 1] + "…"
            main = f"t{int(np.argmax(mix))}" if mix.sum() > 0 else "-"
            lines.append(f"{label:<{LABEL_WIDTH}} " + " ".join(f"{share:6.2f}" for share in mix) + f"  {main}")
        if len(shown) < len(self.documents):
            lines.append(f"… {len(self.documents) - len(shown)} more documents")
        return "\n".join(lines)


def find_topics(
    source: str | os.PathLike[str],
    n_components: int,
    *,
    top: int = DEFAULT_TOP,
    column: str | None = None,
    label_column: str | None = None,
    store: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    vectorizer: dict[str, Any] | None = None,
    **nmf_params: Any,
) -> Topics:
    """Topics of a set of documents in one call: tf-idf → Zarr → NMF → top terms and mixes.

    Parameters
    ----------
    source : str or path
        A folder of ``.txt`` files, a ``.csv`` file, or an existing corpus group (used as is).
    n_components : int
        Number of topics.
    top : int, default=10
        Terms listed per topic.
    column, label_column : str, optional
        For a CSV source (see :func:`read_documents`).
    store : str or path, optional
        Keep the corpus group here (it can then be fitted again with `dnmf fit
        STORE/tfidf`); by default it is written to a temporary directory and removed.
    overwrite : bool
        Replace an existing ``store``.
    vectorizer : dict, optional
        TfidfVectorizer parameters over :data:`VECTORIZER_DEFAULTS`.
    **nmf_params
        :class:`dnmf.NMF` parameters over :data:`NMF_DEFAULTS` (``max_iter``, ``tol``,
        ``random_state``, ``beta_loss``, ``solver``, ...).

    Returns
    -------
    Topics
    """
    reading: dict[str, Any] = {"column": column, "label_column": label_column}
    if Location.of(source).is_dir() and _is_corpus(Location.of(source)):
        return _fit_topics(open_corpus(source), n_components, top, nmf_params, keep=True)
    if store is not None:
        corpus = build_corpus(source, store, overwrite=overwrite, **reading, **(vectorizer or {}))
        return _fit_topics(corpus, n_components, top, nmf_params, keep=True)
    with tempfile.TemporaryDirectory(prefix="dnmf-topics-") as where:
        corpus = build_corpus(source, os.path.join(where, "corpus.zarr"), **reading, **(vectorizer or {}))
        return _fit_topics(corpus, n_components, top, nmf_params, keep=False)


def _fit_topics(corpus, n_components, top, nmf_params, keep):
    from ..estimator import NMF

    m, n = corpus.matrix.shape
    valid = isinstance(n_components, numbers.Integral) and not isinstance(n_components, bool)
    if not valid or not 1 <= n_components <= min(m, n):
        raise InputError(
            f"n_components must be an integer in [1, {min(m, n)}] for {m} documents x {n} terms, got {n_components!r}"
        )
    model = NMF(n_components=int(n_components), **{**NMF_DEFAULTS, **nmf_params})
    W = model.fit_transform(corpus.matrix)
    W = to_numpy(W) if hasattr(W, "dask") else np.asarray(W)
    logger.info("topics: %d topics of %d documents x %d terms in %d iterations", n_components, m, n, model.n_iter_)
    return Topics(
        model=model,
        W=W,
        terms=top_terms(model.components_, corpus.vocabulary, top),
        mix=topic_mix(W),
        vocabulary=corpus.vocabulary,
        documents=corpus.documents,
        corpus=corpus.path if keep else None,
    )
