"""
Consensus NMF: choosing the number of programs
==============================================

A single NMF depends on its random start. Consensus NMF (cNMF; Kotliar et al., *eLife* 2019)
fits many replicates for each rank k, keeps the programs that recur, and averages them; its
*stability* (a silhouette of the replicates' programs) and the *error* of the consensus say
which k to keep. dnmf fits all replicates of a batch together, one read of the counts per
iteration for the whole ensemble. On the PBMC 3k counts (2,638 blood cells) with cNMF's counts
preprocessing, you will see the k-selection plot, then the local-density filter and the
clustered programs of the recommended k.
"""

from pathlib import Path

import numpy as np
import scipy.sparse as sp

import dnmf

z = np.load(Path("data") / "pbmc3k_hvg_counts.npz")
counts = sp.csr_matrix((z["data"].astype(np.float32), z["indices"], z["indptr"]), shape=tuple(z["shape"]))
genes = z["genes"]

result = dnmf.consensus(
    counts, range(5, 11), replicates=10, preprocess="counts", top_genes=1500, random_state=0, max_iter=300
)
report = result.report
for score in report.scores:
    print(f"k={score.rank}: stability {score.stability:.3f}, error {score.error:.4g}")
print("recommended k:", report.recommended)

# %%
# Stability (higher is better) and error (lower is better) against k; the recommended k is the
# largest whose stability is within 0.05 of the best.

dnmf.plot_k_selection(report)

# %%
# The replicates' programs at the recommended k: most sit close to their neighbours (left of
# the threshold); outliers are dropped before the consensus.

k = report.recommended
dnmf.plot_density(result, k)

# %%
# The programs kept, clustered: one block per consensus program.

dnmf.plot_clustering(result, k)

# %%
# Each consensus program's top genes by cNMF's gene scores (each gene's z-scored expression
# regressed on the usages): the markers of T cells, monocytes, B cells, NK cells and platelets.

for j, spectrum in enumerate(result.spectra_score[k]):
    print(f"program {j}: {', '.join(genes[np.argsort(-spectrum)[:8]])}")
