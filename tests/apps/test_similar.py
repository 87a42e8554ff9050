"""Similar items: cosine similarity over rows of W, out of core.

A naive NumPy reference ranks every row; :func:`dnmf.similar` must agree with it for
every kind of W (NumPy, many-panel Dask, Zarr, a stored fit result), find planted
near-duplicates first, and name bad queries in its errors.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

import dnmf
from dnmf.apps.similar import Neighbor, item_vectors
from dnmf.cli import main
from dnmf.engine.state import FitResult
from dnmf.io.results import write_fit

M, K = 3000, 8
QUERY = 1234
#: Rows that are scaled copies of the query (plus a little noise), in different panels.
PLANTED = (7, 1500, 2999)


def reference(W, row, top):
    """Naive ranking: cosine with every other row, best first, ties by index."""
    W = np.asarray(W, dtype=np.float64)
    norms = np.linalg.norm(W, axis=1)
    scores = W @ W[row] / np.where(norms > 0, norms, 1) / np.linalg.norm(W[row])
    order = [i for i in np.lexsort((np.arange(len(W)), -scores)) if i != row]
    return [(int(i), float(scores[i])) for i in order[:top]]


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    W = rng.random((M, K)) ** 3  # spread-out directions
    for scale, row in zip((3.0, 0.5, 20.0), PLANTED):
        W[row] = scale * W[QUERY] + 1e-4 * rng.random(K)
    return W


@pytest.fixture(scope="module")
def fit_result(planted, tmp_path_factory):
    path = tmp_path_factory.mktemp("similar") / "out.zarr"
    H = np.ones((K, 5))
    write_fit(path, FitResult(W=da.from_array(planted, chunks=(250, K)), H=H, n_iter=1, loss_history=[1.0]), {})
    return path


def as_kind(W, kind, tmp_path):
    if kind == "numpy":
        return W
    if kind == "dask":
        return da.from_array(W, chunks=(128, K))  # 24 panels
    array = zarr.open_array(str(tmp_path / "W.zarr"), mode="w", shape=W.shape, chunks=(500, K), dtype=W.dtype)
    array[...] = W
    return zarr.open_array(str(tmp_path / "W.zarr"), mode="r")


@pytest.mark.parametrize("kind", ["numpy", "dask", "zarr"])
def test_planted_near_duplicates_come_first(planted, kind, tmp_path):
    matches = dnmf.similar(as_kind(planted, kind, tmp_path), QUERY, top=5)
    assert all(isinstance(m, Neighbor) for m in matches)
    assert {m.index for m in matches[:3]} == set(PLANTED)
    assert all(m.score > 0.9999 for m in matches[:3])
    assert matches[3].score < matches[2].score
    expected = reference(planted, QUERY, 5)
    assert [m.index for m in matches] == [i for i, _ in expected]
    np.testing.assert_allclose([m.score for m in matches], [s for _, s in expected], rtol=1e-12)


def test_matches_reference_for_random_queries(planted):
    W = da.from_array(planted, chunks=(97, K))  # uneven panels
    for row in (0, 1, 96, 97, 2500, M - 1):
        matches = dnmf.similar(W, row, top=7)
        assert [(m.index, round(m.score, 10)) for m in matches] == [
            (i, round(s, 10)) for i, s in reference(planted, row, 7)
        ]


def test_scores_of_a_dask_W_come_from_a_per_panel_reduction(planted):
    """W is never gathered: the graph keeps top-N per panel (argtopk) before merging."""
    W = da.from_array(planted, chunks=(100, K))
    vectors = item_vectors(W)
    assert vectors.numblocks == (30, 1)
    assert dnmf.similar(W, QUERY, top=3)[0].index in PLANTED


def test_labels_vector_query_and_exclusion(planted, tmp_path):
    labels = [f"item {i}" for i in range(M)]
    by_label = dnmf.similar(planted, f"item {QUERY}", top=3, labels=labels)
    assert {m.label for m in by_label} == {f"item {i}" for i in PLANTED}
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("\n".join(labels) + "\n")
    assert dnmf.similar(planted, f"item {QUERY}", top=3, labels=labels_file) == by_label
    by_vector = dnmf.similar(planted, planted[QUERY], top=4)
    assert by_vector[0].index == QUERY and by_vector[0].score == pytest.approx(1.0)
    with_self = dnmf.similar(planted, QUERY, top=4, exclude_query=False)
    assert QUERY in [m.index for m in with_self]
    assert len(dnmf.similar(planted[:4], 0, top=10)) == 3


def test_fit_result_path_and_model(planted, fit_result):
    assert {m.index for m in dnmf.similar(fit_result, QUERY, top=3)} == set(PLANTED)
    assert {m.index for m in dnmf.similar(str(fit_result), QUERY, top=3)} == set(PLANTED)
    # A model's items are its features: columns 0 and 3 of X are duplicates.
    rng = np.random.default_rng(1)
    X = rng.random((40, 3)) @ rng.random((3, 6))
    X[:, 3] = 2 * X[:, 0]
    model = dnmf.NMF(3, init="nndsvda", max_iter=20, tol=0, random_state=0).fit(X)
    np.testing.assert_array_equal(item_vectors(model).compute(), model.components_.T)
    names = list("abcdef")
    assert dnmf.similar(model, "a", top=1, labels=names)[0].label == "d"


def test_rows_of_zeros_score_zero():
    W = np.array([[1.0, 0.0], [0.0, 0.0], [2.0, 0.1], [0.5, 1.0]])
    matches = dnmf.similar(W, 0, top=3)
    assert [m.index for m in matches] == [2, 3, 1]
    assert matches[-1].score == 0.0


@pytest.mark.parametrize(
    "query, kwargs, error, match",
    [
        ("dog bites man", {"labels": [f"r{i}" for i in range(M)]}, ValueError, "unknown label 'dog bites man'"),
        ("r5", {}, ValueError, "'r5' is a label, but no labels"),
        (
            "twice",
            {"labels": ["twice"] * 2 + [f"r{i}" for i in range(M - 2)]},
            ValueError,
            "label 'twice' names 2 items",
        ),
        (5, {"labels": ["a", "b"]}, ValueError, "got 2 labels for 3000 items"),
        (M, {}, ValueError, f"row {M} is out of range"),
        (-1, {}, ValueError, "row -1 is out of range"),
        ([1.0, 2.0], {}, ValueError, "query vector has 2 entries; expected 8"),
        (3, {"top": 0}, ValueError, "top must be a positive integer, got 0"),
        (3, {"labels": "/nonexistent/labels.txt"}, FileNotFoundError, "/nonexistent/labels.txt"),
    ],
)
def test_bad_queries_name_the_bad_value(planted, query, kwargs, error, match):
    with pytest.raises(error, match=match):
        dnmf.similar(planted, query, **kwargs)


def test_query_of_zeros_and_bad_W():
    with pytest.raises(ValueError, match="row 1 is all zeros"):
        dnmf.similar(np.array([[1.0, 0.0], [0.0, 0.0]]), 1)
    with pytest.raises(ValueError, match="W must be 2-D"):
        dnmf.similar(np.ones(4), 0)
    with pytest.raises(FileNotFoundError, match="/nonexistent/out.zarr"):
        dnmf.similar("/nonexistent/out.zarr", 0)


def test_cli_similar(fit_result, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"title {i}" for i in range(M)) + "\n")
    assert main(["similar", str(fit_result), "--row", str(QUERY), "--top", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"most similar to row {QUERY}:"
    assert {int(line.split()[1]) for line in out[2:]} == set(PLANTED)

    assert main(["similar", str(fit_result), "--label", f"title {QUERY}", "--labels", str(labels), "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert all(f"title {i}" in out for i in PLANTED)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--label", "dog bites man", "--labels", "LABELS"], "error: unknown label 'dog bites man'"),
        (["--label", "x"], "error: --label 'x' needs labels"),
        (["--row", "1", "--label", "x"], "error: give exactly one query"),
        ([], "error: give exactly one query"),
        (["--row", "99999"], "error: row 99999 is out of range"),
        (
            ["--row", "1", "--labels", "/nonexistent/labels.txt"],
            "error: labels file not found: /nonexistent/labels.txt",
        ),
    ],
)
def test_cli_similar_bad_input_exits_2(fit_result, tmp_path, capsys, args, message):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"title {i}" for i in range(M)) + "\n")
    args = [str(labels) if a == "LABELS" else a for a in args]
    assert main(["similar", str(fit_result), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err


def test_cli_similar_missing_result(capsys):
    assert main(["similar", "/nonexistent/out.zarr", "--row", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: result not found: /nonexistent/out.zarr"
