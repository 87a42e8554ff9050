"""
Gene programs of blood cells
============================

In single-cell RNA-seq each cell is a row of counts over genes. NMF of the normalized counts
finds *gene programs*: a program is a row of ``H`` (weights over genes) and each cell uses each
program to some degree (a row of ``W``). On 2,638 blood cells of a healthy donor (10x Genomics
PBMC 3k; cell types from the Seurat tutorial), the programs' top genes are the textbook markers
of the cell types, and each cell type uses its own program. You will see the usage of each
program by cell type and each program's top genes.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scipy.sparse as sp

import dnmf

# Raw UMI counts, cells x genes (the 3,000 most variable genes and 19 markers), as CSR.
z = np.load(Path("data") / "pbmc3k_hvg_counts.npz")
counts = sp.csr_matrix((z["data"].astype(np.float32), z["indices"], z["indptr"]), shape=tuple(z["shape"]))
genes, cell_types = z["genes"], z["cell_type"]
print(f"{counts.shape[0]} cells x {counts.shape[1]} genes, {counts.nnz} non-zero counts")

# %%
# The usual normalization: each cell scaled to 10,000 counts, then ``log1p``. The matrix stays
# sparse and non-negative.

per_cell = np.asarray(counts.sum(axis=1)).ravel()
X = counts.multiply(1e4 / per_cell[:, None]).tocsr()
X.data = np.log1p(X.data)

model = dnmf.NMF(n_components=9, random_state=0)
usage = model.fit_transform(X)
print(f"{model.n_iter_} iterations")

# %%
# Mean usage of each program by cell type (each program scaled to its largest mean):
# one program, or two, per cell type.

table = pd.DataFrame(usage).groupby(cell_types).mean()
table = table / table.max(axis=0)
fig, ax = plt.subplots(figsize=(7, 4))
image = ax.imshow(table.to_numpy(), cmap="viridis", aspect="auto")
ax.set_yticks(range(len(table.index)), table.index)
ax.set_xticks(range(table.shape[1]), [f"P{j}" for j in range(table.shape[1])])
ax.set_xlabel("program")
fig.colorbar(image, label="mean usage (scaled)")
fig.tight_layout()
plt.show()

# %%
# Each program's top genes: CD3D and CD3E (T cells), S100A8, S100A9 and LYZ (CD14+
# monocytes), NKG7, GNLY and GZMB (NK cells), HLA class II genes and CD74 (B cells), CCL5
# (CD8 T cells), LST1 and FCER1G (FCGR3A+ monocytes), PPBP and PF4 (platelets).

for j, program in enumerate(model.components_):
    top = genes[np.argsort(-program)[:8]]
    print(f"P{j} ({table.index[table[j].argmax()]}): {', '.join(top)}")

dnmf.plot_components(model.components_, feature_names=genes, top=8, columns=3)
