"""The runnable examples (scripts/examples/) run end to end and show what they claim."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from test_plots import assert_png

EXAMPLES = Path(__file__).resolve().parents[2] / "scripts" / "examples"
#: Pixel size (width, height) of each picture the examples draw (with the arguments below).
PICTURES = {
    "topics.png": (2 * 320, 2 * 260 + 40),  # 3 topics: a 2 x 2 grid of bar charts
    "digits_parts.png": (4 * 160, 3 * 180 + 40),  # 12 parts: a 4 x 3 grid of 8 x 8 images
    "digits_reconstruction.png": (1500, 500),
    "digits_convergence.png": (700, 450),
    "recommendations_factors.png": (1200, 500),
}


def load(name):
    spec = importlib.util.spec_from_file_location(f"dnmf_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def run(tmp_path, capsys):
    def run(name, *args):
        result = load(name).main(["--out-dir", str(tmp_path), *args])
        for picture in result["pictures"]:
            assert_png(picture, PICTURES[Path(picture).name], curve="convergence" in str(picture))
        return result, capsys.readouterr().out

    return run


def test_topics_example(run, tmp_path):
    result, out = run("topics")
    found, themes = result["topics"], result["themes"]
    main_topic = {label: int(np.argmax(mix)) for label, mix in zip(found.documents, found.mix)}
    by_theme = {
        theme: {main_topic[label] for label, t in themes.items() if t == theme} for theme in set(themes.values())
    }
    assert all(len(topics) == 1 for topics in by_theme.values())
    assert len(set.union(*by_theme.values())) == len(by_theme)  # one topic per theme
    assert out.count("\ntopic ") + out.startswith("topic ") == 3
    assert (tmp_path / "corpus.zarr" / "tfidf").is_dir()
    first = found.documents[0]
    assert all(
        line.split()[1] == themes[first] for line in out.splitlines() if line.startswith("  ") and ".txt" in line
    )


def test_digits_parts_example(run):
    result, out = run("digits_parts", "--max-iter", "20", "--rank", "12")
    assert result["model"].components_.shape == (12, 64)
    assert [p.name for p in result["pictures"]] == [
        "digits_parts.png",
        "digits_reconstruction.png",
        "digits_convergence.png",
    ]
    assert result["same_digit"] >= 8, out
    assert "relative error" in out


def test_recommendations_example(run):
    result, out = run("recommendations", "--users", "200", "--max-iter", "30")
    genres, likes, names = result["genres"], result["likes"], result["names"]
    assert all(genres[m.index] == genres[3] for m in result["item_matches"])  # like "sci-fi 03": sci-fi
    shared = [np.any(likes[m.index] & likes[0]) for m in result["user_matches"]]
    assert all(shared)
    liked_genres = set(np.flatnonzero(likes[0]))
    assert sum(genres[i] in liked_genres for i in result["picks"]) >= 4
    assert f"items like {names[3]!r}" in out and "top picks for user 0" in out
