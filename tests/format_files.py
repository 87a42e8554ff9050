"""Matrices in the formats of single-cell biology and text mining, written by the formats'
own libraries (AnnData, h5py in Cell Ranger's layout, ``scipy.io.mmwrite``), for the tests."""

from __future__ import annotations

import gzip
import hashlib
import shutil

import numpy as np
import scipy.io
import scipy.sparse as sp

#: Cells and genes of :func:`counts`'s default matrix.
M, N = 120, 30


def counts(seed=0, m=M, n=N, density=0.25):
    """A cells x genes matrix of integer counts (int32, as AnnData and 10x store them)."""
    rng = np.random.default_rng(seed)
    X = sp.random(m, n, density=density, format="csr", random_state=seed, data_rvs=lambda k: rng.integers(1, 30, k))
    return X.astype(np.int32)


def names(prefix, size):
    """``prefix0``, ``prefix1``, ..."""
    return [f"{prefix}{i}" for i in range(size)]


def adata_of(X):
    """An AnnData of ``X`` with named cells and genes, and layers ``csc`` and ``dense``."""
    import anndata
    import pandas as pd

    adata = anndata.AnnData(
        X, obs=pd.DataFrame(index=names("cell", X.shape[0])), var=pd.DataFrame(index=names("gene", X.shape[1]))
    )
    adata.layers["csc"] = sp.csc_matrix(X)
    adata.layers["dense"] = X.toarray()
    return adata


def write_10x_h5(path, X):
    """``X`` (cells x genes) in the layout of Cell Ranger's ``filtered_feature_bc_matrix.h5``:
    CSC of features x barcodes."""
    import h5py

    features_by_cells = sp.csc_matrix(X.T)
    with h5py.File(path, "w") as handle:
        group = handle.create_group("matrix")
        for name in ("data", "indices", "indptr"):
            group.create_dataset(name, data=getattr(features_by_cells, name), chunks=True)
        group["shape"] = np.array(features_by_cells.shape, dtype=np.int32)
        group["barcodes"] = np.array([name.encode() for name in names("cell", X.shape[0])])
        features = group.create_group("features")
        features["name"] = np.array([name.encode() for name in names("gene", X.shape[1])])
        features["id"] = np.array([f"ENSG{i:05d}".encode() for i in range(X.shape[1])])


def gzip_file(path):
    """Replace ``path`` by ``path.gz``."""
    with open(path, "rb") as source, gzip.open(f"{path}.gz", "wb") as target:
        shutil.copyfileobj(source, target)
    path.unlink()


def write_mex(directory, X):
    """``X`` (cells x genes) as a 10x MEX directory (features x barcodes, gzipped)."""
    directory.mkdir()
    scipy.io.mmwrite(directory / "matrix.mtx", sp.coo_matrix(X.T))
    gzip_file(directory / "matrix.mtx")
    with gzip.open(directory / "features.tsv.gz", "wt") as handle:
        handle.writelines(f"ENSG{i:05d}\tgene{i}\tGene Expression\n" for i in range(X.shape[1]))
    with gzip.open(directory / "barcodes.tsv.gz", "wt") as handle:
        handle.writelines(f"{name}\n" for name in names("cell", X.shape[0]))


def digest(path):
    """SHA-256 of every file of ``path`` (a file or a tree): proof that nothing changed."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
