"""
Parts of handwritten digits
===========================

NMF learns *parts*: because nothing can be subtracted, each image is a sum of non-negative
pieces. On scikit-learn's 1,797 handwritten digits (8 x 8 pixels), 16 components come out as
strokes — loops, bars, corners — and every digit is a few of them added up. You will see the
components as images and a few digits next to their reconstruction from the parts.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits

import dnmf

digits = load_digits()
X = digits.data  # 1797 x 64, grey levels 0..16
print(X.shape)

model = dnmf.NMF(n_components=16, random_state=0)
W = model.fit_transform(X)
print(f"{model.n_iter_} iterations, relative error {model.reconstruction_err_ / np.linalg.norm(X):.3f}")

# %%
# The 16 parts, each drawn as an 8 x 8 image (a row of ``H``):

dnmf.plot_components(model.components_, (8, 8))

# %%
# Each digit is its row of ``W`` times the parts. Top: digits; bottom: ``W · H``.

shown = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
fig, axes = plt.subplots(2, len(shown), figsize=(10, 2.4))
for column, i in enumerate(shown):
    axes[0, column].imshow(X[i].reshape(8, 8), cmap="gray_r")
    axes[1, column].imshow((W[i] @ model.components_).reshape(8, 8), cmap="gray_r")
    for axis in axes[:, column]:
        axis.set_axis_off()
axes[0, 0].set_title("digits", loc="left", fontsize=9)
axes[1, 0].set_title("W · H", loc="left", fontsize=9)
plt.show()

# %%
# Which parts make a digit: the usage (row of ``W``) of digit 0 and of digit 7.

fig, ax = plt.subplots(figsize=(7, 2.5))
ax.bar(np.arange(16) - 0.2, W[0], width=0.4, label=f"digit {digits.target[0]}")
ax.bar(np.arange(16) + 0.2, W[7], width=0.4, label=f"digit {digits.target[7]}")
ax.set_xlabel("component")
ax.set_ylabel("usage")
ax.set_xticks(range(16))
ax.legend()
plt.show()
