"""Recommendations from NMF: similar items, similar users and top picks, out of core.

A synthetic user x item matrix of ratings (users like some of four genres; items belong
to one genre) is stored as a Zarr CSR group, factorized by ``dnmf.NMF`` straight from
Zarr (W comes back as a Dask array, never gathered), and then:

- items like an item: ``dnmf.similar(model, "sci-fi 03")`` compares the items' columns
  of H (which genres they load on);
- users like a user: ``dnmf.similar(W, 0)`` compares rows of W, one Dask reduction;
- top picks for a user: the largest entries of ``W[u] @ H`` among the items they have
  not rated.

Draws W and H as heatmaps (``recommendations_factors.png``).

    python scripts/examples/recommendations.py [--out-dir DIR] [--users N]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.exceptions import ConvergenceWarning

import dnmf

GENRES = ("sci-fi", "comedy", "horror", "romance")
ITEMS_PER_GENRE = 15
USERS = 400
#: Chance that a user rated an item of a genre they like / do not like.
RATE_LIKED, RATE_OTHER = 0.5, 0.03
RANK = len(GENRES)
MAX_ITER = 60
SEED = 3


def make_ratings(users=USERS, seed=SEED):
    """``(ratings, item_names, item_genres, user_likes)``; ratings are 1..5, sparse."""
    rng = np.random.default_rng(seed)
    genres = np.repeat(np.arange(len(GENRES)), ITEMS_PER_GENRE)
    names = [f"{GENRES[g]} {i % ITEMS_PER_GENRE:02d}" for i, g in enumerate(genres)]
    likes = rng.random((users, len(GENRES))) < 0.35
    likes[~likes.any(axis=1), rng.integers(len(GENRES))] = True
    liked = likes[:, genres]
    rated = rng.random(liked.shape) < np.where(liked, RATE_LIKED, RATE_OTHER)
    scores = np.where(liked, rng.integers(4, 6, liked.shape), rng.integers(1, 3, liked.shape))
    return sp.csr_matrix(np.where(rated, scores, 0).astype(np.float64)), names, genres, likes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default=None, help="Where to write (default: a new temporary directory).")
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--max-iter", type=int, default=MAX_ITER)
    args = parser.parse_args(argv)
    out = Path(args.out_dir or tempfile.mkdtemp(prefix="dnmf-recommendations-example-"))
    out.mkdir(parents=True, exist_ok=True)

    ratings, names, genres, likes = make_ratings(args.users)
    stored = dnmf.save_csr(ratings, out / "ratings.zarr", overwrite=True)
    print(
        f"{ratings.shape[0]} users x {ratings.shape[1]} items, {ratings.nnz} ratings, stored in {out / 'ratings.zarr'}"
    )

    model = dnmf.NMF(n_components=RANK, init="nndsvda", max_iter=args.max_iter, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        W = model.fit_transform(stored)  # a Dask array: the fit read the Zarr group panel by panel
    print(f"fitted rank {RANK} in {model.n_iter_} iterations; W is a {type(W).__module__}.{type(W).__name__}")

    item = names[3]
    print(f"\nitems like {item!r}:")
    item_matches = dnmf.similar(model, item, top=5, labels=names)
    for match in item_matches:
        print(f"  {match.label:<12} cosine {match.score:.3f}")

    user = 0
    user_genres = ", ".join(g for g, liked in zip(GENRES, likes[user]) if liked)
    user_matches = dnmf.similar(W, user, top=5)
    print(f"\nusers like user {user} (likes {user_genres}):")
    for match in user_matches:
        theirs = ", ".join(g for g, liked in zip(GENRES, likes[match.index]) if liked)
        print(f"  user {match.index:<4} cosine {match.score:.3f}  likes {theirs}")

    predicted = np.asarray(W[user].compute()) @ model.components_
    predicted[ratings[user].indices] = -np.inf  # already rated
    picks = np.argsort(-predicted, kind="stable")[:5]
    print(f"\ntop picks for user {user}: {', '.join(names[i] for i in picks)}")

    picture = out / "recommendations_factors.png"
    dnmf.plot_factors(W, model.components_, out=picture, feature_names=names)
    print(f"\nW and H drawn in {picture}")
    return {
        "names": names,
        "genres": genres,
        "likes": likes,
        "item_matches": item_matches,
        "user_matches": user_matches,
        "picks": picks,
        "pictures": [picture],
    }


if __name__ == "__main__":
    main()
