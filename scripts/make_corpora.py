"""CSV files of two public text corpora, for ``bench_sklearn.py --corpus``.

- 20 Newsgroups (the "bydate" split, train and test together): one row per post, the
  header block removed as scikit-learn's ``fetch_20newsgroups(remove=("headers",))`` removes
  it (everything before the first blank line), empty posts left out. Column ``text``.
- Reuters-21578: one row per ``<BODY>`` element of the ``reut2-*.sgm`` files, HTML entities
  decoded. Column ``body``.

Both are read from copies already on disk (the 20news-bydate tarball unpacked, and the
directory holding Reuters' ``.sgm`` files); nothing is downloaded.

    python scripts/make_corpora.py --out /tmp/dnmf-bench \\
        --newsgroups 20news-bydate/ --reuters reuters21578/
"""

from __future__ import annotations

import argparse
import csv
import html
import re
from pathlib import Path

_BODY = re.compile(r"<BODY>(.*?)</BODY>", re.S)


def newsgroups_posts(root):
    """The posts under ``root/20news-bydate-*/GROUP/ID``, headers removed, empty ones left out."""
    posts = []
    for path in sorted(Path(root).glob("20news-bydate-*/*/*")):
        _, _, body = path.read_bytes().decode("latin-1").partition("\n\n")
        if body.strip():
            posts.append(body)
    return posts


def reuters_bodies(root):
    """The ``<BODY>`` texts of ``root/reut2-*.sgm``, in file order."""
    bodies = []
    for path in sorted(Path(root).glob("reut2-*.sgm")):
        bodies += [html.unescape(text) for text in _BODY.findall(path.read_bytes().decode("latin-1"))]
    return bodies


def write_csv(path, column, documents):
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([column])
        writer.writerows([document] for document in documents)
    print(f"{path}: {len(documents)} documents")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Directory for the CSV files.")
    parser.add_argument("--newsgroups", type=Path, help="The unpacked 20news-bydate directory.")
    parser.add_argument("--reuters", type=Path, help="The directory with Reuters-21578's reut2-*.sgm files.")
    args = parser.parse_args(argv)
    if not (args.newsgroups or args.reuters):
        parser.error("give --newsgroups DIR, --reuters DIR or both")
    args.out.mkdir(parents=True, exist_ok=True)
    for source, name, column, read in [
        (args.newsgroups, "20newsgroups.csv", "text", newsgroups_posts),
        (args.reuters, "reuters21578.csv", "body", reuters_bodies),
    ]:
        if source is None:
            continue
        documents = read(source)
        if not documents:
            parser.error(f"no documents found under {source}")
        write_csv(args.out / name, column, documents)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
