"""Topics: tf-idf in Zarr, NMF, top terms, topic mix; library and `dnmf topics`.

The corpus is written by the test: two clearly separated themes (space, baking) whose
documents share only filler words; each theme must land in its own component.
"""

from __future__ import annotations

import csv
import gzip
import random

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer

import dnmf
from dnmf.apps.topics import VECTORIZER_DEFAULTS, corpus_of, read_documents
from dnmf.cli import main

SPACE = "rocket orbit astronaut launch satellite planet moon telescope galaxy".split()
BAKING = "oven flour butter sugar dough bread cake chocolate yeast".split()
FILLER = "today new great first story".split()
PER_THEME = 6
FIT = {"max_iter": 60}


def texts(seed=0):
    """``{label: (theme, text)}``, themes interleaved."""
    rng = random.Random(seed)
    docs = {}
    for i in range(PER_THEME):
        for theme, words in (("space", SPACE), ("baking", BAKING)):
            body = " ".join(rng.choice(words if rng.random() < 0.8 else FILLER) for _ in range(25))
            docs[f"{theme}-{i}.txt"] = (theme, body)
    return docs


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    where = tmp_path_factory.mktemp("docs")
    (where / "nested").mkdir()
    for label, (_, body) in texts().items():
        (where / ("nested" if label.endswith("5.txt") else "") / label).write_text(body)
    (where / "notes.md").write_text("not a document")
    return where


@pytest.fixture(scope="module")
def found(folder, tmp_path_factory):
    store = tmp_path_factory.mktemp("store") / "corpus.zarr"
    return dnmf.find_topics(folder, 2, top=5, store=store, **FIT)


def theme_of(label):
    return label.split("/")[-1].split("-")[0]


def test_two_themes_land_in_different_components(found):
    main_topic = {label: int(np.argmax(mix)) for label, mix in zip(found.documents, found.mix)}
    space = {t for label, t in main_topic.items() if theme_of(label) == "space"}
    baking = {t for label, t in main_topic.items() if theme_of(label) == "baking"}
    assert len(space) == 1 and len(baking) == 1 and space != baking
    (s,), (b,) = space, baking
    assert {term for term, _ in found.terms[s]} <= set(SPACE)
    assert {term for term, _ in found.terms[b]} <= set(BAKING)
    assert all(len(words) == 5 for words in found.terms)
    np.testing.assert_allclose(found.mix.sum(axis=1), 1.0)
    assert np.all(found.mix[:, s][[theme_of(d) == "space" for d in found.documents]] > 0.8)


def test_corpus_group_holds_tfidf_vocabulary_and_labels(found, folder):
    corpus = dnmf.open_corpus(found.corpus)
    labels, bodies = read_documents(folder)
    assert corpus.documents == labels == sorted(labels)
    assert "nested/space-5.txt" in labels and not any(label.endswith(".md") for label in labels)
    expected = TfidfVectorizer(**VECTORIZER_DEFAULTS).fit(bodies)
    assert list(corpus.vocabulary) == list(expected.get_feature_names_out())
    stored = corpus.matrix.read_rows(0, corpus.matrix.shape[0])
    assert abs(stored - sp.csr_matrix(expected.transform(bodies))).max() < 1e-12
    assert dnmf.open_matrix(corpus.tfidf_path).shape == (len(labels), len(corpus.vocabulary))
    assert corpus_of(corpus.tfidf_path).path == corpus.path
    assert corpus_of(folder) is None
    assert found.W.shape == (len(labels), 2) and isinstance(found.W, np.ndarray)


def test_stored_corpus_is_reused(found):
    again = dnmf.find_topics(found.corpus, 2, top=3, **FIT)
    assert again.documents == found.documents and again.corpus == found.corpus
    assert [words[:3] for words in found.terms] == again.terms  # same data, same settings: same topics
    np.testing.assert_allclose(again.mix, found.mix, atol=1e-8)


def test_csv_column_and_labels(tmp_path):
    path = tmp_path / "news.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["headline", "body"])
        for label, (_, body) in texts(seed=1).items():
            writer.writerow([label.upper(), body])
    result = dnmf.find_topics(path, 2, column="body", label_column="headline", **FIT)
    assert result.documents[0] == "SPACE-0.TXT" and result.corpus is None
    main_topic = np.argmax(result.mix, axis=1)
    themes = np.array([theme_of(d.lower()) for d in result.documents])
    assert len(set(main_topic[themes == "space"])) == 1
    assert set(main_topic[themes == "space"]).isdisjoint(main_topic[themes == "baking"])
    with pytest.raises(
        ValueError, match="column 'text' is not in .*news.csv; its columns are \\['headline', 'body'\\]"
    ):
        read_documents(path, column="text")
    with pytest.raises(ValueError, match="say which one holds the text"):
        read_documents(path)
    compressed = tmp_path / "news.csv.gz"
    compressed.write_bytes(gzip.compress(path.read_bytes()))
    assert read_documents(compressed, column="body") == read_documents(path, column="body")


def test_top_terms_and_topic_mix():
    H = np.array([[0.0, 3.0, 1.0, 2.0], [1.0, 0.0, 0.0, 0.0]])
    assert dnmf.top_terms(H, ["a", "b", "c", "d"], top=3) == [[("b", 3.0), ("d", 2.0), ("c", 1.0)], [("a", 1.0)]]
    np.testing.assert_array_equal(dnmf.topic_mix([[1.0, 3.0], [0.0, 0.0]]), [[0.25, 0.75], [0.0, 0.0]])
    with pytest.raises(ValueError, match="vocabulary has 3 terms"):
        dnmf.top_terms(H, ["a", "b", "c"])


def test_bad_sources_name_the_bad_value(tmp_path, folder):
    with pytest.raises(FileNotFoundError, match="documents not found: /nonexistent/docs"):
        dnmf.find_topics("/nonexistent/docs", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .txt files in .*empty"):
        dnmf.find_topics(tmp_path / "empty", 2)
    (tmp_path / "doc.pdf").write_text("x")
    with pytest.raises(ValueError, match="doc.pdf is neither a folder of .txt files nor a .csv \\(or .csv.gz\\) file"):
        dnmf.find_topics(tmp_path / "doc.pdf", 2)
    with pytest.raises(ValueError, match="n_components must be an integer in \\[1, 12\\].*got 50"):
        dnmf.find_topics(folder, 50)
    with pytest.raises(ValueError, match="column/label_column apply to a CSV file"):
        dnmf.find_topics(folder, 2, column="text")
    with pytest.raises(FileNotFoundError, match="corpus not found"):
        dnmf.open_corpus(tmp_path / "nothing.zarr")
    with pytest.raises(FileExistsError, match="already exists"):
        dnmf.build_corpus(folder, folder)


def test_cli_topics(folder, tmp_path, capsys):
    store = tmp_path / "corpus.zarr"
    status = main(["topics", str(folder), "--rank", "2", "--top", "4", "--max-iter", "60", "--store", str(store)])
    assert status == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    topic_lines = [line for line in lines if line.startswith("topic ")]
    assert len(topic_lines) == 2 and all(len(line.split(": ")[1].split(", ")) == 4 for line in topic_lines)
    rows = [line.split() for line in lines if line.endswith(".txt") or ".txt " in line]
    assert len(rows) == 2 * PER_THEME
    mains = {theme_of(row[0]): set() for row in rows}
    for row in rows:
        mains[theme_of(row[0])].add(row[-1])
    assert len(mains["space"]) == 1 and mains["space"] != mains["baking"]
    assert dnmf.open_corpus(store).documents[0] == "baking-0.txt"


@pytest.mark.parametrize(
    "args, message",
    [
        (["/nonexistent/docs", "--rank", "2"], "error: documents not found: /nonexistent/docs"),
        (["DOCS", "--rank", "2", "--column", "body"], "error: column/label_column apply to a CSV file"),
        (["DOCS"], "error: Missing option '--rank'"),
        (["DOCS", "--rank", "0"], "error: Invalid value for '--rank'"),
    ],
)
def test_cli_topics_bad_input_exits_2(folder, capsys, args, message):
    args = [str(folder) if a == "DOCS" else a for a in args]
    assert main(["topics", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err


def test_fit_of_a_stored_corpus_knows_its_labels_and_terms(found, tmp_path, capsys):
    """`dnmf similar` and `dnmf plot` of a fit of CORPUS/tfidf find the labels and the vocabulary."""
    from test_plots import assert_png

    from dnmf import api
    from dnmf.io.results import read_result, write_fit

    corpus = dnmf.open_corpus(found.corpus)
    params = {**api.DEFAULTS, "n_components": 2, "max_iter": 30, "tol": 0.0, "random_state": 0, "init": "nndsvda"}
    out = tmp_path / "out.zarr"
    write_fit(out, api.run(corpus.matrix, params), params, input_path=corpus.tfidf_path)

    assert main(["similar", str(out), "--label", "space-0.txt", "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [theme_of(line.split()[-1]) for line in lines[2:]] == ["space"] * 3

    picture = tmp_path / "terms.png"
    assert main(["plot", str(out), "--kind", "components", "--out", str(picture)]) == 0
    capsys.readouterr()
    assert_png(picture, (2 * 320, 260 + 40))
    found_terms = corpus_of(read_result(out).attrs["input"]).vocabulary  # what `dnmf plot` labels bars with
    figure = dnmf.plot(out, "components", feature_names=found_terms)
    bars = [{label.get_text() for label in axes.get_yticklabels()} - set(FILLER) for axes in figure.axes]
    themes = {"space" if bar <= set(SPACE) else "baking" if bar <= set(BAKING) else "mixed" for bar in bars}
    assert themes == {"space", "baking"}
