"""10x Genomics feature-barcode matrices: the HDF5 file and the MEX directory.

``filtered_feature_bc_matrix.h5`` holds group ``matrix`` with ``data``, ``indices``,
``indptr``, ``shape`` (features, barcodes), ``barcodes`` and ``features/name``: a CSC
matrix of features x barcodes, which is the CSR matrix of barcodes (cells) x features
read here with no conversion. A MEX directory (``matrix.mtx.gz``, ``features.tsv.gz``
or ``genes.tsv``, ``barcodes.tsv.gz``) is streamed once, transposed, into a CSR group
(:func:`dnmf.io.mtx.convert_mtx`).

Rows are cells (barcodes), columns features (gene names, as scanpy's ``var_names``).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

from ..errors import InputError
from .csr import CSRMatrix
from .hdf5 import Dataset, opened
from .mtx import convert_mtx, read_header

__all__ = [
    "H5_DATASETS",
    "is_mex",
    "mex_files",
    "mex_labels",
    "open_10x_h5",
    "open_mex",
    "tenx_h5_labels",
    "tenx_h5_summary",
]

#: What a 10x HDF5 file's ``matrix`` group holds.
H5_DATASETS = ("data", "indices", "indptr", "shape", "barcodes", "features/name")
#: Candidate names of a MEX directory's three files, newest layout first.
MEX_NAMES = {
    "matrix": ("matrix.mtx.gz", "matrix.mtx"),
    "features": ("features.tsv.gz", "features.tsv", "genes.tsv.gz", "genes.tsv"),
    "barcodes": ("barcodes.tsv.gz", "barcodes.tsv"),
}


def _matrix_group(handle, path):
    if "matrix" not in handle:
        raise InputError(f"{path}: not a 10x Genomics HDF5 file (no group 'matrix'; it holds {sorted(handle)})")
    group = handle["matrix"]
    missing = [name for name in H5_DATASETS if name not in group]
    if missing:
        raise InputError(f"{path}: 10x HDF5 file is missing {', '.join('matrix/' + name for name in missing)}")
    return group


def open_10x_h5(path, values_of):
    """The cells x features matrix of a 10x HDF5 file; ``values_of(stored dtype)`` is
    the dtype its values are read as."""
    path = os.fspath(path)
    with opened(path) as handle:
        group = _matrix_group(handle, path)
        features, barcodes = (int(s) for s in group["shape"][()])
        values = values_of(group["data"].dtype)
    parts = (Dataset(path, f"matrix/{name}") for name in ("indptr", "indices", "data"))
    return CSRMatrix.checked(*parts, (barcodes, features), path, path=path, values=values)


def tenx_h5_summary(path):
    """Shape (cells x features), stored dtype and entries of a 10x HDF5 file, from its metadata."""
    with opened(path) as handle:
        group = _matrix_group(handle, os.fspath(path))
        features, barcodes = (int(s) for s in group["shape"][()])
        return {
            "shape": [barcodes, features],
            "stored_dtype": str(group["data"].dtype),
            "nnz": int(group["data"].shape[0]),
        }


def tenx_h5_labels(path):
    """``(barcodes, feature names)`` of a 10x HDF5 file."""
    with opened(path) as handle:
        group = _matrix_group(handle, os.fspath(path))
        return _strings(group["barcodes"][()]), _strings(group["features/name"][()])


def _strings(values):
    return [value.decode() if isinstance(value, bytes) else str(value) for value in values]


def is_mex(path):
    """Whether ``path`` is a directory holding a 10x ``matrix.mtx(.gz)``."""
    path = Path(path)
    return path.is_dir() and any((path / name).is_file() for name in MEX_NAMES["matrix"])


def mex_files(path):
    """``{"matrix": ..., "features": ..., "barcodes": ...}`` of a MEX directory."""
    path = Path(path)
    found = {}
    for role, names in MEX_NAMES.items():
        present = [path / name for name in names if (path / name).is_file()]
        if not present:
            raise InputError(f"{path}: 10x MEX directory has no {' or '.join(names)}")
        found[role] = present[0]
    return found


def _tsv_column(path, column):
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        lines = [line.rstrip("\n").split("\t") for line in handle if line.strip()]
    return [fields[min(column, len(fields) - 1)] for fields in lines]


def mex_labels(path):
    """``(barcodes, feature names)`` of a MEX directory."""
    files = mex_files(path)
    return _tsv_column(files["barcodes"], 0), _tsv_column(files["features"], 1)


def open_mex(path, store, values, *, source, progress=None, overwrite=False):
    """The cells x features matrix of a MEX directory, converted into ``store`` once."""
    files = mex_files(path)
    features, barcodes, _, _ = read_header(files["matrix"])
    names = mex_labels(path)
    if (barcodes, features) != tuple(len(labels) for labels in names):
        raise InputError(
            f"{path}: matrix.mtx is {features} features x {barcodes} barcodes but the directory lists "
            f"{len(names[1])} features and {len(names[0])} barcodes"
        )
    return convert_mtx(
        files["matrix"],
        store,
        values,
        source=source,
        transpose=True,
        progress=progress,
        overwrite=overwrite,
    )
