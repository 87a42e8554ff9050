"""What a checkpoint records of V and of the parameters, and the refusal to resume on
anything else (see :mod:`dnmf.engine.checkpoint`)."""

from __future__ import annotations

import hashlib

import numpy as np
import scipy.sparse as sp

from ...errors import CheckpointMismatch
from ...params import DEFAULTS, PARAMS, beta_to_float, jsonable, resolve_solver
from ..driver import compute

__all__ = ["RESUMABLE_PARAMS", "SAMPLE_ROWS", "check_compatible", "matrix_fingerprint", "result_params"]

#: Rows of V hashed into the fingerprint (evenly spaced, first and last included).
SAMPLE_ROWS = 8
#: Result-changing parameters a resume may change: they only decide where the run stops.
RESUMABLE_PARAMS = ("max_iter",)


def _sample_rows(m):
    return sorted({int(round(r)) for r in np.linspace(0, m - 1, min(SAMPLE_ROWS, m))})


def _row_bytes(row, dtype):
    if sp.issparse(row):
        row = sp.csr_matrix(row)
        row.sum_duplicates()
        row.sort_indices()
        return b"".join(
            [
                np.asarray(row.indices, np.int64).tobytes(),
                np.asarray(row.data, dtype).tobytes(),
            ]
        )
    return np.ascontiguousarray(np.asarray(row), dtype).tobytes()


def matrix_fingerprint(panels):
    """What identifies V cheaply: shape, dtype, sparsity, chunking, nnz and a sample hash.

    Parameters
    ----------
    panels : dnmf.engine.panels.Panels

    Returns
    -------
    dict
        JSON-ready: ``shape``, ``dtype``, ``sparse``, ``panel_rows`` (list), ``nnz``
        (None when the source does not know it without a pass), ``sample_rows`` and
        ``sample_sha256``.
    """
    m = panels.shape[0]
    rows = _sample_rows(m)
    pieces = [panels.array[r : r + 1] for r in rows]
    # Data that lives here (NumPy, SciPy, Zarr, files) is sampled by this process; only a
    # user's Dask array may need its own scheduler.
    values = compute(*pieces, scheduler=None if panels.from_dask else "sync")
    digest = hashlib.sha256()
    for row in values:
        digest.update(_row_bytes(row, panels.dtype))
    return {
        "shape": [int(s) for s in panels.shape],
        "dtype": str(panels.dtype),
        "sparse": bool(panels.sparse),
        "panel_rows": [int(r) for r in panels.row_chunks],
        "nnz": panels.nnz,
        "sample_rows": rows,
        "sample_sha256": digest.hexdigest(),
    }


def result_params(params):
    """The compared parameters: result-changing ones but :data:`RESUMABLE_PARAMS`, normalized.

    ``solver="hals"`` counts as ``"cd"``, ``beta_loss`` names as their beta and
    ``alpha_H="same"`` as ``alpha_W``, so spellings of one fit compare equal.
    """
    p = {**DEFAULTS, **params}
    out = {}
    for spec in PARAMS:
        if not spec.changes_result or spec.name in RESUMABLE_PARAMS:
            continue
        value = p[spec.name]
        if spec.name == "solver":
            value = resolve_solver(value)
        elif spec.name == "beta_loss":
            value = beta_to_float(value)
        elif spec.name == "alpha_H" and value == "same":
            value = p["alpha_W"]
        out[spec.name] = jsonable(value)
    return out


def _describe_chunks(rows):
    return f"{len(rows)} panels of up to {max(rows)} rows" if rows else "no panels"


def _fingerprint_differences(saved, now):
    differences = []
    for key in ("shape", "dtype", "sparse", "nnz"):
        if saved.get(key) != now.get(key) and not (key == "nnz" and None in (saved.get(key), now.get(key))):
            differences.append(f"{key}: checkpoint {saved.get(key)!r}, now {now.get(key)!r}")
    if saved.get("shape") == now.get("shape") and saved.get("panel_rows") != now.get("panel_rows"):
        differences.append(
            f"row chunking: checkpoint {_describe_chunks(saved.get('panel_rows') or [])}, "
            f"now {_describe_chunks(now.get('panel_rows') or [])} (pass the same panel_rows)"
        )
    if not differences and saved.get("sample_sha256") != now.get("sample_sha256"):
        differences.append(
            f"content: sampled rows {saved.get('sample_rows')} differ "
            f"(sha256 {saved.get('sample_sha256', '')[:12]}… vs {now.get('sample_sha256', '')[:12]}…)"
        )
    return differences


def check_compatible(metadata, fingerprint, params):
    """Refuse to resume ``metadata``'s checkpoint on another matrix or other parameters.

    Parameters
    ----------
    metadata : dict
        As returned by :func:`load_checkpoint`.
    fingerprint : dict
        :func:`matrix_fingerprint` of the matrix to fit now.
    params : dict
        The parameters of the fit now.

    Raises
    ------
    CheckpointMismatch
        Listing every difference, e.g. ``alpha_W: checkpoint 0.0, now 0.1``.
    """
    where = metadata.get("path", "the checkpoint")
    matrix = _fingerprint_differences(metadata["fingerprint"], fingerprint)
    # a parameter a checkpoint does not record came after it was written: it ran the default
    saved, now = {**result_params({}), **metadata["params"]}, result_params(params)
    changed = [
        f"{name}: checkpoint {saved.get(name)!r}, now {now.get(name)!r}"
        for name in sorted(set(saved) | set(now))
        if saved.get(name) != now.get(name)
    ]
    parts = []
    if matrix:
        parts.append("it was written for another matrix (" + "; ".join(matrix) + ")")
    if changed:
        parts.append("result-changing parameters differ (" + "; ".join(changed) + ")")
    if parts:
        raise CheckpointMismatch(f"cannot resume from {where}: " + " and ".join(parts))
