"""Topics of a small corpus in one call: tf-idf → Zarr CSR → NMF → top terms and topic mixes.

Writes a corpus of short texts on three themes (space, baking, football) as .txt files,
finds three topics with ``dnmf.find_topics``, prints each topic's top terms and each
document's topic mix, draws the topics' top terms (``topics.png``) and lists the
documents most similar to the first one.

    python scripts/examples/topics.py [--out-dir DIR]

The same from the command line: ``dnmf topics DIR/docs --rank 3 --store DIR/corpus.zarr``.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import dnmf

#: Words of each theme, and words any document may use.
THEMES = {
    "space": "rocket orbit astronaut launch satellite planet moon telescope galaxy mission crew station".split(),
    "baking": "oven flour butter sugar dough bake bread cake chocolate recipe yeast kitchen".split(),
    "football": "goal striker referee match league penalty stadium coach team season defender keeper".split(),
}
COMMON = "the a of and to in on with today new first great".split()
DOCUMENTS_PER_THEME = 8
WORDS_PER_DOCUMENT = 30
SEED = 7


def write_corpus(folder, seed=SEED):
    """Write ``DOCUMENTS_PER_THEME`` .txt files per theme into ``folder``; returns {name: theme}."""
    rng = random.Random(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    themes = {}
    for theme, words in THEMES.items():
        for i in range(DOCUMENTS_PER_THEME):
            text = " ".join(rng.choice(words if rng.random() < 0.7 else COMMON) for _ in range(WORDS_PER_DOCUMENT))
            name = f"{theme}-{i:02d}.txt"
            (folder / name).write_text(text.capitalize() + ".\n")
            themes[name] = theme
    return themes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=None, help="Where to write (default: a new temporary directory).")
    args = parser.parse_args(argv)
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="dnmf-topics-example-"))
    themes = write_corpus(out / "docs")

    found = dnmf.find_topics(out / "docs", len(THEMES), top=6, store=out / "corpus.zarr", overwrite=True)
    print(found.format())

    picture = out / "topics.png"
    dnmf.plot_components(found.model.components_, feature_names=found.vocabulary, top=8, out=picture)
    print(f"\ntop terms drawn in {picture}")

    first = found.documents[0]
    print(f"\ndocuments most like {first} ({themes[first]}):")
    for match in dnmf.similar(found.W, first, top=3, labels=found.documents):
        print(f"  {match.label:<16} {themes[match.label]:<9} cosine {match.score:.3f}")
    return {"topics": found, "themes": themes, "pictures": [picture]}


if __name__ == "__main__":
    main()
