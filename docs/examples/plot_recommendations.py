"""
Movie recommendations from ratings
==================================

610 people rated 9,724 movies (MovieLens, 100,836 ratings from half a star to five stars).
NMF of the users x movies matrix (an unrated movie counts as 0: for ranking what to watch
next, *not rated* is information too) gives each movie a few taste loadings (a column of
``H``) and each user a mix of those tastes (a row of ``W``). Then:

- movies like a movie: the cosine similarity of their loadings (:func:`dnmf.similar`);
- what a user has not seen but would like: the largest entries of ``W[u] · H`` among the
  movies they did not rate (:func:`dnmf.recommend`).

To predict the rating itself, fit with ``missing_values="absent"`` instead, which leaves the
unrated entries out of the loss (see :ref:`missing-values`).

The data are GroupLens' "ml-latest-small", used under its licence (research, non-commercial;
see ``docs/examples/data/movielens_LICENSE.txt``).
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.sparse as sp

import dnmf

DATA = Path("data")  # beside this example
ratings = pd.read_csv(DATA / "movielens_small_ratings.csv.gz")
movies = pd.read_csv(DATA / "movielens_small_movies.csv.gz").set_index("movieId")

# Keep the movies rated by at least 20 people: the others say little about taste.
counts = ratings["movieId"].value_counts()
ratings = ratings[ratings["movieId"].isin(counts.index[counts >= 20])]
users, user_index = np.unique(ratings["userId"], return_inverse=True)
items, item_index = np.unique(ratings["movieId"], return_inverse=True)
R = sp.csr_matrix((ratings["rating"].to_numpy(np.float32), (user_index, item_index)))
titles = movies.loc[items, "title"].tolist()
print(f"{R.shape[0]} users x {R.shape[1]} movies, {R.nnz} ratings ({R.nnz / np.prod(R.shape):.1%} observed)")

model = dnmf.NMF(n_components=12, random_state=0)
W = model.fit_transform(R)
H = model.components_
print(f"{model.n_iter_} iterations, relative error {model.reconstruction_err_ / sp.linalg.norm(R):.3f}")

# %%
# Movies like a movie
# -------------------
# The query and its five nearest movies by the cosine of their loadings.

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
for axis, query in zip(axes, ["Toy Story (1995)", "Matrix, The (1999)", "Godfather, The (1972)"]):
    neighbours = dnmf.similar(model, query, top=5, labels=titles)
    axis.barh([n.label for n in neighbours][::-1], [n.score for n in neighbours][::-1])
    axis.set_title(query, fontsize=10)
    axis.set_xlim(0, 1)
    axis.set_xlabel("cosine similarity")
    axis.tick_params(axis="y", labelsize=8)
fig.tight_layout()
plt.show()

# %%
# Top picks for a user
# --------------------
# The five unrated movies with the highest score ``W[u] · H`` for user 0, next to what they
# rated highest themselves.

u = 0
row = R[u]
liked = row.indices[np.argsort(-row.data)][:5]
print("rated highest:", *(f"  {titles[j]} ({row[0, j]:.1f})" for j in liked), sep="\n")
picks = dnmf.recommend(W[u], H, observed=row.indices, top=5)
print("recommended:", *(f"  {titles[j]} (score {score:.2f})" for j, score in picks), sep="\n")

# %%
# The tastes
# ----------
# Each taste's most loaded movies: a row of ``H`` read as a list.

dnmf.plot_components(H, feature_names=titles, top=6, max_components=6, columns=3)
