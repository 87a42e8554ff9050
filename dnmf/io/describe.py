"""What ``dnmf info`` shows: a description of an input matrix, a fit or transform result,
or a checkpoint directory, as a plain dict."""

from __future__ import annotations

import numpy as np

from ..engine import checkpoint as ckpt
from ..engine.location import Location
from ..errors import InputError
from .adata import anndata_summary
from .formats import format_of
from .mtx import read_header
from .results import FIT_KIND, H5AD_SUFFIX, read_result, stored_attrs
from .storage import CSRMatrix, open_matrix
from .tenx import mex_files, tenx_h5_summary

__all__ = ["FORMAT_TITLES", "describe"]

#: How ``dnmf info`` names the files of :mod:`dnmf.io.formats`.
FORMAT_TITLES = {
    "h5ad": "AnnData (.h5ad)",
    "anndata-zarr": "AnnData (Zarr store)",
    "10x-h5": "10x Genomics HDF5 (cells x features)",
    "10x-mex": "10x Genomics MEX directory (cells x features)",
    "mtx": "MatrixMarket",
}


def _disk_bytes(location):
    """Bytes stored at a Location (a file, or everything below a directory or prefix)."""
    return int(location.retried("listing", lambda: location.fs.du(location.path, total=True)))


def _describe_matrix(location):
    path = location.url
    matrix = open_matrix(location)
    info = {"path": path, "shape": list(matrix.shape), "dtype": str(matrix.dtype)}
    if isinstance(matrix, CSRMatrix):
        m, n = matrix.shape
        info.update(
            kind="CSR group (Zarr)",
            chunks=f"{matrix.data.chunks[0]} entries per chunk of indices/data",
            nnz=matrix.nnz,
            density=matrix.nnz / (m * n),
            bytes=int(matrix.nnz * (matrix.dtype.itemsize + matrix.indices.dtype.itemsize) + (m + 1) * 8),
        )
    elif hasattr(matrix, "format") and not isinstance(matrix, np.ndarray):  # scipy.sparse from .npz
        info.update(
            kind="SciPy sparse (.npz)", chunks=None, nnz=int(matrix.nnz), density=matrix.nnz / np.prod(matrix.shape)
        )
        info["bytes"] = int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes)
    elif isinstance(matrix, np.ndarray):
        info.update(
            kind="NumPy array (.npy, memory-mapped)", chunks=None, nnz="not counted (dense)", bytes=int(matrix.nbytes)
        )
    else:
        info.update(
            kind="dense Zarr array",
            chunks=list(matrix.chunks),
            nnz="not counted (dense)",
            bytes=int(np.prod(matrix.shape) * matrix.dtype.itemsize),
        )
    info["stored_bytes"] = _disk_bytes(location)
    generator = stored_attrs(location).get("generator")
    if generator:
        info["generator"] = generator
    return info


def _describe_checkpoint(location):
    state, metadata = ckpt.load_checkpoint(location)
    fingerprint = metadata["fingerprint"]
    history = state.loss_history
    return {
        "path": location.url,
        "kind": "dnmf checkpoint directory",
        "current": metadata["name"],
        "checkpoints": metadata["checkpoints"],
        "iteration": state.iteration,
        "finished": state.finished,
        "loss": history[-1] if history else None,
        "shape": fingerprint["shape"],
        "dtype": fingerprint["dtype"],
        "sparse": fingerprint["sparse"],
        "W": list(state.W.shape),
        "H": list(state.H.shape),
        "input": metadata["run"].get("input"),
        "out": metadata["run"].get("out"),
        "params": metadata["all_params"],
        "created": metadata["created"],
        "stored_bytes": _disk_bytes(location),
    }


def _describe_result(result, location):
    attrs = result.attrs
    info = {
        "path": result.path,
        "kind": "dnmf fit result" if result.kind == FIT_KIND else "dnmf transform result",
        "W": list(result.W.shape),
        "dtype": str(result.W.dtype),
        "n_iter": attrs.get("n_iter"),
        "reconstruction_err": attrs.get("reconstruction_err"),
        "relative_err": attrs.get("relative_err"),
    }
    if result.kind == FIT_KIND:
        history = attrs.get("loss_history") or []
        info.update(
            H=list(result.H.shape),
            loss=history[-1] if history else None,
            converged=attrs.get("converged"),
            params=attrs.get("params"),
        )
    else:
        info["model"] = attrs.get("model")
    info["input"] = attrs.get("input")
    info["stored_bytes"] = _disk_bytes(location)
    return info


def _describe_format(path, kind, layer):
    """A file of :mod:`dnmf.io.formats`, from its metadata: nothing is converted."""
    info = {"path": path, "kind": FORMAT_TITLES[kind]}
    if kind in ("h5ad", "anndata-zarr"):
        info.update(anndata_summary(path, layer))
    elif kind == "10x-h5":
        info.update(tenx_h5_summary(path))
    else:
        rows, columns, entries, field = read_header(mex_files(path)["matrix"] if kind == "10x-mex" else path)
        info.update(shape=[columns, rows] if kind == "10x-mex" else [rows, columns], field=field, nnz=entries)
    if isinstance(info.get("nnz"), int) and "shape" in info:
        info["density"] = info["nnz"] / max(1, int(np.prod(info["shape"])))
    info["stored_bytes"] = _disk_bytes(Location.of(path))
    return info


def describe(path, layer=None, storage_options=None):
    """What ``dnmf info`` shows about ``path`` (a path or URL): an input matrix, a result
    or a checkpoint directory (``layer``: of an AnnData file)."""
    location = Location.of(path, storage_options).checked("")
    path = location.url
    kind = format_of(path) if location.local else None
    if kind is not None and path.endswith(H5AD_SUFFIX) and layer is None:
        try:  # a fit written as .h5ad is shown as the result it is
            return _describe_result(read_result(path), location)
        except InputError:
            pass
    if kind is not None:
        return _describe_format(path, kind, layer)
    names = location.names() if location.is_dir() else []
    if ckpt.CURRENT in names or any(name.startswith("ckpt-") for name in names):
        return _describe_checkpoint(location)
    if not path.endswith((".npy", ".npz")):
        try:
            return _describe_result(read_result(location), location)
        except InputError:
            pass
    return _describe_matrix(location)
