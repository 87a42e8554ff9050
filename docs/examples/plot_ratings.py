"""
A ratings matrix, factorized and drawn
======================================

Five users rated four items (0 = not rated). NMF writes the ratings as
``V ≈ W · H``: each user is a mix of two tastes (a row of ``W``), each taste a profile
over the items (a row of ``H``). You will see ``V``, its reconstruction ``W · H``, the
error ``V − W · H``, and the two factors as heatmaps.
"""

import numpy as np

import dnmf

V = np.array(
    [
        [5, 3, 0, 1],
        [4, 0, 0, 1],
        [1, 1, 0, 5],
        [1, 0, 4, 4],
        [0, 1, 5, 4],
    ],
    dtype=float,
)

model = dnmf.NMF(n_components=2, random_state=0)
W = model.fit_transform(V)
H = model.components_
print("W =\n", W.round(2))
print("H =\n", H.round(2))
print(f"error ||V - WH|| = {model.reconstruction_err_:.3f} after {model.n_iter_} iterations")

# %%
# ``V``, ``W · H`` and ``V − W · H`` share one colour scale; each cell carries its value.
# Users 1–2 like items 1–2, users 3–5 items 3–4: one taste each, and the error is small.

dnmf.plot(model, "reconstruction", V=V)

# %%
# The factors: how much of each taste each user has, and each taste's items.

dnmf.plot(
    model,
    "factors",
    V=V,
    row_labels=[f"user {i + 1}" for i in range(5)],
    feature_names=[f"item {j + 1}" for j in range(4)],
)
