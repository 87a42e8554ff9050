"""Build ``pbmc3k_counts.npz`` and ``pbmc3k_hvg_counts.npz``: 10x Genomics PBMC 3k raw UMI counts
with the Seurat tutorial cell-type labels.

Raw input (not shipped here; about 2.3 MB): ``data/pbmc3k.rda`` from the GitHub repository
``zdebruine/RcppML`` at commit ``5dfd53f980db7b4226bb8468a9b86070b26f98bf``
(2026-03-07; RcppML 1.0.1, GPL (>= 3)); blob 35f8514b9d999cb9cd6ce45653368dc40199dc7e, 2,325,138
bytes, sha256 484a8d14fcde8b71d1a61d5b20acbf60a18129ca6b469d93c1e904b09bc546fe.
That file holds one R object, ``pbmc3k``: a ``dgCMatrix`` of 13,714 genes x 2,700
cells with integer UMI counts (the 10x matrix with Seurat's ``min.cells = 3`` gene filter, i.e. the
counts in SeuratData's ``pbmc3k``, according to RcppML's documentation). Its attribute ``cell_type`` holds the ``seurat_annotations`` of
SeuratData's ``pbmc3k.final`` (9 types; NA for the 62 cells dropped by the tutorial's QC).
Later commits of that repository replaced the file with a custom "StreamPress" byte blob, so use
that exact commit. One way to get it:

    git --git-dir=<RcppML bare clone> show 5dfd53f:data/pbmc3k.rda > pbmc3k.rda

Usage:

    pip install rdata numpy scipy
    python make_pbmc3k.py path/to/pbmc3k.rda [out_dir]

Outputs (each an ``.npz``, i.e. a zip of ``.npy`` arrays, here with bzip2-compressed members;
``numpy.load`` reads it as is, without pickle):

* ``pbmc3k_counts.npz``: the 2,638 annotated cells x all 13,714 genes (every gene detected in
  >= 3 of the 2,700 cells);
* ``pbmc3k_hvg_counts.npz``: the same cells x 3,000 highly variable genes plus classic markers.

Keys: ``data`` (uint16 counts), ``indices`` (uint16 gene index), ``indptr`` (int32),
``shape`` (cells, genes), i.e. a CSR matrix with cells as rows; ``genes`` (gene symbols);
``barcodes`` (10x cell barcodes without the ``-1`` suffix); ``cell_type`` (labels).

Load with:

    z = np.load("pbmc3k_counts.npz")
    X = scipy.sparse.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
"""

import io
import sys
import zipfile
from pathlib import Path

import numpy as np
import rdata
import scipy.sparse as sp

MARKERS = [
    "IL7R",
    "CCR7",
    "S100A4",
    "CD3E",
    "CD3D",
    "CD8A",
    "CD14",
    "LYZ",
    "S100A8",
    "S100A9",
    "MS4A1",
    "CD79A",
    "FCGR3A",
    "MS4A7",
    "GNLY",
    "NKG7",
    "FCER1A",
    "CST3",
    "PPBP",
]
N_HVG = 3000


def read_rda(path):
    obj = rdata.read_rda(str(path))["pbmc3k"]  # dgCMatrix arrives as a SimpleNamespace
    n_genes, n_cells = (int(v) for v in obj.Dim)
    genes_by_cells = sp.csc_matrix((np.asarray(obj.x), np.asarray(obj.i), np.asarray(obj.p)), shape=(n_genes, n_cells))
    genes = np.asarray(obj.Dimnames[0]).astype(str)
    barcodes = np.asarray(obj.Dimnames[1]).astype(str)
    cat = obj.cell_type  # pandas Categorical; NaN for the 62 cells without annotation
    labels = np.array(["" if v != v else str(v) for v in np.asarray(cat, dtype=object)])
    return genes_by_cells, genes, barcodes, labels


def highly_variable(X, n_top):
    """Seurat-flavour normalized dispersion of log1p(counts per 10k), 20 mean bins."""
    X = X.tocsr().astype(np.float64)
    size = np.asarray(X.sum(axis=1)).ravel()
    Xn = sp.diags(1e4 / size) @ X
    mean = np.asarray(Xn.mean(axis=0)).ravel()
    mean_sq = np.asarray(Xn.multiply(Xn).mean(axis=0)).ravel()
    var = (mean_sq - mean**2) * X.shape[0] / (X.shape[0] - 1)
    mean = np.where(mean == 0, 1e-12, mean)
    disp = np.log(np.where(var / mean == 0, 1e-12, var / mean))
    log_mean = np.log1p(mean)
    edges = np.linspace(log_mean.min(), log_mean.max(), 21)
    bins = np.clip(np.digitize(log_mean, edges[1:-1]), 0, 19)
    norm = np.zeros_like(disp)
    for b in range(20):
        sel = bins == b
        if sel.sum() > 1 and disp[sel].std(ddof=1) > 0:
            norm[sel] = (disp[sel] - disp[sel].mean()) / disp[sel].std(ddof=1)
    return np.argsort(-norm, kind="stable")[:n_top]


def save(path, X, genes, barcodes, labels):
    X = sp.csr_matrix(X)
    X.sort_indices()
    assert X.data.max() < 2**16 and X.shape[1] < 2**16
    arrays = dict(
        data=X.data.astype(np.uint16),
        indices=X.indices.astype(np.uint16),
        indptr=X.indptr.astype(np.int32),
        shape=np.array(X.shape, dtype=np.int64),
        genes=genes.astype("U"),
        barcodes=barcodes.astype("U"),
        cell_type=labels.astype("U"),
    )
    # An .npz is a zip of .npy files; bzip2 members (instead of np.savez_compressed's deflate)
    # make the full matrix 2.2 MB instead of 3.9 MB, and numpy.load reads them unchanged.
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_BZIP2, compresslevel=9) as zf:
        for key, value in arrays.items():
            buf = io.BytesIO()
            np.save(buf, value, allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_BZIP2
            zf.writestr(info, buf.getvalue())
    print(f"{path}: {X.shape[0]} cells x {X.shape[1]} genes, nnz={X.nnz}, {Path(path).stat().st_size} bytes")


def main():
    src = Path(sys.argv[1])
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).resolve().parent
    G, genes, barcodes, labels = read_rda(src)
    assert G.shape == (13714, 2700), G.shape
    assert np.all(G.data == np.round(G.data)) and G.data.min() >= 1
    keep = labels != ""
    X = G.T.tocsr()[keep]  # cells x genes
    barcodes, labels = barcodes[keep], labels[keep]
    assert X.shape == (2638, 13714), X.shape
    save(out / "pbmc3k_counts.npz", X, genes, barcodes, labels)

    hvg = highly_variable(X, N_HVG)
    extra = [np.flatnonzero(genes == g)[0] for g in MARKERS if g in set(genes)]
    cols = np.array(sorted(set(hvg.tolist()) | set(extra)))
    save(out / "pbmc3k_hvg_counts.npz", X[:, cols], genes[cols], barcodes, labels)

    values, counts = np.unique(labels, return_counts=True)
    print(dict(zip(values.tolist(), counts.tolist())))


if __name__ == "__main__":
    main()
