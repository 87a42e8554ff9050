"""Build ``movielens_small_ratings.csv.gz`` and ``movielens_small_movies.csv.gz`` from the
GroupLens MovieLens "ml-latest-small" dataset (version generated 2018-09-26: 100,836 ratings by
610 users on 9,742 movies).

Raw input: the unmodified files ``ml-latest-small/ratings.csv`` (2,483,723 bytes) and
``ml-latest-small/movies.csv`` (494,431 bytes) plus ``README.txt`` (8,344 bytes), as committed in the
public GitHub repository ``hasstariq/Collaborative-Filltering-`` at commit
``02202ae65f474026d8fedcdd87b4e7c60ef13cc4``. Their row counts (100,836 ratings, 9,742 movies,
610 users) and README match GroupLens' 2018-09-26 release; they were not compared byte for byte
with GroupLens' ml-latest-small.zip. sha256 of the inputs:
ratings.csv aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646,
movies.csv 5a5f32dd9bb3797b8e728a1b98958789d2b13f294a69fdfbc5727f8a9611aa07.

Usage:

    python make_movielens.py path/to/ml-latest-small [out_dir]

Transformation: drop the ``timestamp`` column; keep every rating (half-star scale 0.5-5.0);
write the ratings sorted by (userId, movieId) as ``userId,movieId,rating``; keep only the movies
that have at least one rating (9,724 of 9,742), with ``movieId,title,genres``; gzip both with a
fixed header (mtime 0) so reruns are byte-identical. ``movielens_LICENSE.txt`` copies the
dataset's usage-licence section verbatim, as that licence requires redistributed
transformations to carry the same conditions.
"""

import gzip
import sys
from pathlib import Path

import pandas as pd


def write_gz(df, path):
    data = df.to_csv(index=False, lineterminator="\n").encode("utf-8")
    with open(path, "wb") as fh:
        with gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=9, mtime=0) as gz:
            gz.write(data)
    print(f"{path}: {len(df)} rows, {Path(path).stat().st_size} bytes")


def main():
    src = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent
    ratings = pd.read_csv(src / "ratings.csv")
    movies = pd.read_csv(src / "movies.csv")
    assert ratings.shape[0] == 100836 and ratings.userId.nunique() == 610
    assert movies.shape[0] == 9742
    ratings = ratings[["userId", "movieId", "rating"]].sort_values(["userId", "movieId"])
    movies = movies[movies.movieId.isin(ratings.movieId)].sort_values("movieId")
    write_gz(ratings, out / "movielens_small_ratings.csv.gz")
    write_gz(movies, out / "movielens_small_movies.csv.gz")

    readme = (src / "README.txt").read_text(encoding="utf-8")
    start = readme.index("Usage License")
    end = readme.index("Citation\n========")
    cite = readme[end : readme.index("Further Information")]
    (out / "movielens_LICENSE.txt").write_text(
        "MovieLens ml-latest-small (GroupLens Research, University of Minnesota), generated\n"
        "2018-09-26. The files movielens_small_*.csv.gz are transformations of its ratings.csv\n"
        "and movies.csv and are redistributed under the dataset's own licence, quoted verbatim\n"
        "from its README.txt:\n\n" + readme[start:end].rstrip() + "\n\n\n" + cite.rstrip() + "\n",
        encoding="utf-8",
    )


if __name__ == "__main__":
    main()
