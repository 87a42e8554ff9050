"""
Gene programs in a scanpy workflow
==================================

Single-cell analyses live in an :class:`anndata.AnnData` and run as scanpy's
``sc.pp`` / ``sc.tl`` / ``sc.pl`` calls. :mod:`dnmf.tl` and :mod:`dnmf.pl` join that flow:
``dnmf.tl.nmf(adata, k)`` writes the cells' usage of k gene programs to
``adata.obsm["X_nmf"]`` and the programs to ``adata.varm["NMF_components"]``, as
``sc.tl.pca`` writes its own; ``dnmf.tl.consensus`` runs consensus NMF (cNMF) over several
ranks on the raw counts and keeps the chosen one; ``dnmf.pl`` draws both.

The data: 2,638 blood cells of a healthy donor (10x Genomics PBMC 3k: the 3,000 most variable
genes and 19 markers), with the cell types of the Seurat tutorial. You will see programs whose
top genes are the known markers of those cell types, each used by its own cells on the UMAP.
"""

from pathlib import Path

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

import dnmf

z = np.load(Path("data") / "pbmc3k_hvg_counts.npz")
counts = sp.csr_matrix((z["data"].astype(np.float32), z["indices"], z["indptr"]), shape=tuple(z["shape"]))
adata = ad.AnnData(
    counts,
    obs=pd.DataFrame({"cell_type": pd.Categorical(z["cell_type"])}, index=z["barcodes"]),
    var=pd.DataFrame(index=z["genes"]),
)
adata.layers["counts"] = adata.X.copy()
print(adata)

# %%
# scanpy's standard preprocessing: each cell to 10,000 counts, ``log1p``, the 2,000 most
# variable genes, then PCA, the neighbour graph and UMAP for the pictures.

sc.pp.normalize_total(adata, target_sum=1e4)
sc.pp.log1p(adata)
sc.pp.highly_variable_genes(adata, n_top_genes=2000)
sc.pp.pca(adata, random_state=0)
sc.pp.neighbors(adata, random_state=0)
sc.tl.umap(adata, random_state=0)

# %%
# NMF, the way ``sc.tl.pca`` is called: the log-normalized X, its highly variable genes
# (``use_highly_variable`` defaults to them when ``adata.var`` marks them), results in the
# object. ``dnmf.pl.usage`` draws each program's usage over the UMAP.

dnmf.tl.nmf(adata, 8)
print({key: adata.uns["nmf"][key] for key in ("n_iter", "relative_err")})
dnmf.pl.usage(adata, "umap", ncols=4)
plt.show()

# %%
# The cell types, for comparison:

sc.pl.umap(adata, color="cell_type", legend_loc="on data", legend_fontsize=8)
plt.show()

# %%
# Consensus NMF on the raw counts (the ``counts`` layer), as cNMF runs it: ranks 6 to 10,
# 20 seeded replicates each, the 2,000 most over-dispersed genes scaled to unit variance,
# usages refit against TPM. The k-selection plot marks the recommended rank: the largest
# whose stability is within 0.05 of the best.

dnmf.tl.consensus(adata, range(6, 11), replicates=20, layer="counts", preprocess="counts")
print(f"chosen k = {adata.uns['cnmf']['k']}")
dnmf.pl.k_selection(adata)
plt.show()

# %%
# The replicates' spectra of the chosen rank: the histogram of their local density (those
# right of the threshold are outliers, dropped) and their distances, by cluster.

dnmf.pl.density(adata)
dnmf.pl.clustering(adata)
plt.show()

# %%
# Each consensus program over the UMAP, and its top genes by cNMF's gene score: ribosomal
# genes (resting T cells), LYZ, S100A8 and CD14 (CD14+ monocytes), NKG7, GZMB and GNLY (NK
# cells), CD79A and MS4A1 (B cells), FCGR3A and LST1 (FCGR3A+ monocytes), FCER1A and HLA
# class II (dendritic cells), LILRA4 and CLEC4C (plasmacytoid dendritic cells), TOP2A and
# BIRC5 (dividing cells), PF4 and PPBP (platelets).

dnmf.pl.usage(adata, "umap", key="X_cnmf", ncols=4)
dnmf.pl.top_genes(adata, key="cnmf_gene_scores", n_genes=8, ncols=4)
plt.show()

# %%
# Which cell type uses each program most (the mean usage by cell type):

usage = pd.DataFrame(np.asarray(adata.obsm["X_cnmf"]), index=adata.obs_names)
by_type = usage.groupby(adata.obs["cell_type"], observed=True).mean()
scores = adata.varm["cnmf_gene_scores"]
for j in range(by_type.shape[1]):
    top = adata.var_names[np.argsort(-scores[:, j])[:6]]
    print(f"program {j + 1}: {by_type[j].idxmax():<18} {', '.join(top)}")
