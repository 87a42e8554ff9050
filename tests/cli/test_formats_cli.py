"""``dnmf`` on AnnData, 10x and MatrixMarket files: fits on the embedded cluster's worker
processes (which open the files themselves), ``--out result.h5ad``, ``--layer`` kept by
``dnmf resume``, ``dnmf info``, and one ``error:`` line for each bad file, which stays as
it was."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp
import zarr

anndata = pytest.importorskip("anndata")
pytest.importorskip("h5py")

from format_files import M, N, adata_of, counts, digest, gzip_file, names, write_10x_h5, write_mex  # noqa: E402
from test_cli import assert_one_error_line, call, dnmf, read_factors  # noqa: E402

from dnmf import NMF, open_matrix  # noqa: E402

K = 3


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    where = tmp_path_factory.mktemp("cli-formats")
    X = counts(seed=5)
    adata = adata_of(X)
    adata.layers["doubled"] = X * 2
    adata.write_h5ad(where / "cells.h5ad")
    write_10x_h5(where / "filtered_feature_bc_matrix.h5", X)
    write_mex(where / "mex", X)
    scipy.io.mmwrite(where / "counts.mtx", sp.coo_matrix(X))
    gzip_file(where / "counts.mtx")
    return where, X


def test_fit_h5ad_on_worker_processes_writes_h5ad(files, tmp_path):
    where, X = files
    out = tmp_path / "result.h5ad"
    dnmf("fit", where / "cells.h5ad", "--rank", K, "--out", out, "--workers", 2, "--quiet")
    written = anndata.read_h5ad(out)
    assert list(written.obs_names) == names("cell", M) and list(written.var_names) == names("gene", N)
    reference = NMF(K, random_state=0).fit(X.astype(np.float32))  # the CLI's seed is 0
    np.testing.assert_allclose(written.varm["NMF_components"].T, reference.components_, rtol=1e-4, atol=1e-5)
    assert written.obsm["X_nmf"].shape == (M, K) and written.obsm["X_nmf"].dtype == np.float32
    assert written.uns["nmf"]["n_iter"] == reference.n_iter_


@pytest.mark.parametrize("name", ["filtered_feature_bc_matrix.h5", "mex", "counts.mtx.gz"])
def test_fit_10x_and_matrix_market(files, name, tmp_path):
    where, X = files
    out = tmp_path / "out.zarr"
    dnmf(
        "fit",
        where / name,
        "--rank",
        K,
        "--max-iter",
        20,
        "--out",
        out,
        "--store",
        tmp_path / "store.zarr",
        "--threads",
        "--quiet",
    )
    W, H, attrs = read_factors(out)
    reference = NMF(K, random_state=0, max_iter=20).fit(X.astype(np.float32))
    np.testing.assert_allclose(H, reference.components_, rtol=1e-4, atol=1e-5)
    assert (tmp_path / "store.zarr").exists() == (name != "filtered_feature_bc_matrix.h5")  # 10x .h5 needs none


def test_a_conversion_goes_beside_out_by_default(files, tmp_path):
    where, _ = files
    before = sorted(path.name for path in where.iterdir())
    dnmf(
        "fit",
        where / "counts.mtx.gz",
        "--rank",
        K,
        "--max-iter",
        5,
        "--out",
        tmp_path / "out.zarr",
        "--threads",
        "--quiet",
    )
    assert (tmp_path / "counts.mtx.gz.csr.zarr").is_dir()
    assert sorted(path.name for path in where.iterdir()) == before  # nothing written beside the input


def test_an_existing_out_is_refused_before_any_conversion(files, tmp_path, capsys):
    where, _ = files
    (tmp_path / "out.zarr").mkdir()
    status, _, err = call(
        capsys, "fit", where / "counts.mtx.gz", "--rank", K, "--out", tmp_path / "out.zarr", "--threads", "--quiet"
    )
    assert_one_error_line(status, err, "already exists")
    assert not (tmp_path / "counts.mtx.gz.csr.zarr").exists()


def test_similar_names_cells_by_their_barcodes(files, tmp_path, capsys):
    where, _ = files
    out = tmp_path / "out.zarr"
    dnmf(
        "fit",
        where / "filtered_feature_bc_matrix.h5",
        "--rank",
        K,
        "--max-iter",
        20,
        "--out",
        out,
        "--threads",
        "--quiet",
    )
    status, printed, err = call(capsys, "similar", out, "--label", "cell7", "--top", 3)
    assert status == 0, err
    assert printed.splitlines()[0] == "most similar to 'cell7':"
    assert all(line.split()[-1].startswith("cell") for line in printed.splitlines()[2:]), printed


def test_a_fit_written_as_h5ad_is_a_result_like_a_zarr_one(files, tmp_path, capsys):
    """``--out x.h5ad`` can be read back wherever a result is: ``transform --model``,
    ``similar``, ``plot``, ``info`` and ``read_result`` (the same W, H and record as the
    Zarr result)."""
    from dnmf.io.results import read_result

    where, _ = files
    outputs = {suffix: tmp_path / f"model.{suffix}" for suffix in ("zarr", "h5ad")}
    for out in outputs.values():
        dnmf("fit", where / "cells.h5ad", "--rank", K, "--max-iter", 10, "--out", out, "--threads", "--quiet")
    zarr_result, h5ad_result = read_result(outputs["zarr"]), read_result(outputs["h5ad"])
    np.testing.assert_array_equal(np.asarray(h5ad_result.W), zarr_result.W[...])
    np.testing.assert_array_equal(h5ad_result.H, zarr_result.H)
    assert h5ad_result.kind == zarr_result.kind
    for key in ("n_iter", "converged", "reconstruction_err", "relative_err", "loss_history", "input"):
        assert h5ad_result.attrs[key] == zarr_result.attrs[key], key
    assert h5ad_result.attrs["params"]["n_components"] == K
    projected = {}
    for suffix, model in outputs.items():
        out = tmp_path / f"w-{suffix}.zarr"
        dnmf("transform", where / "cells.h5ad", "--model", model, "--out", out, "--threads", "--quiet")
        projected[suffix] = zarr.open_group(str(out), mode="r")["W"][...]
    np.testing.assert_array_equal(projected["h5ad"], projected["zarr"])
    status, printed, err = call(capsys, "similar", outputs["h5ad"], "--label", "cell7", "--top", 3)
    assert status == 0, err
    assert printed.splitlines()[0] == "most similar to 'cell7':"
    status, _, err = call(capsys, "plot", outputs["h5ad"], "--kind", "factors", "--out", tmp_path / "factors.png")
    assert status == 0, err
    assert (tmp_path / "factors.png").stat().st_size > 0
    status, printed, err = call(capsys, "info", outputs["h5ad"], "--json")
    assert status == 0, err
    described = json.loads(printed)
    assert described["kind"] == "dnmf fit result" and described["n_iter"] == zarr_result.attrs["n_iter"]


def test_an_h5ad_that_holds_no_fit_is_not_a_model(files, tmp_path, capsys):
    where, _ = files
    status, _, err = call(
        capsys,
        "transform",
        where / "cells.h5ad",
        "--model",
        where / "cells.h5ad",
        "--out",
        tmp_path / "w.zarr",
        "--threads",
        "--quiet",
    )
    assert_one_error_line(status, err, "is not a dnmf result")
    assert not (tmp_path / "w.zarr").exists()


def test_layer_is_read_and_kept_by_resume(files, tmp_path):
    where, X = files
    checkpoint, out = tmp_path / "run.ckpt", tmp_path / "out.zarr"
    dnmf(
        "fit",
        where / "cells.h5ad",
        "--layer",
        "doubled",
        "--rank",
        K,
        "--max-iter",
        6,
        "--tol",
        0,
        "--checkpoint",
        checkpoint,
        "--checkpoint-every",
        2,
        "--out",
        out,
        "--threads",
        "--quiet",
    )
    dnmf("resume", checkpoint, "--max-iter", 10, "--overwrite", "--threads", "--quiet")
    _, H, attrs = read_factors(out)
    assert attrs["n_iter"] == 10
    reference = NMF(K, random_state=0, max_iter=10, tol=0).fit((X * 2).astype(np.float32))
    np.testing.assert_allclose(H, reference.components_, rtol=1e-4, atol=1e-5)


def test_info_reads_metadata_only(files, capsys):
    where, _ = files
    status, out, err = call(capsys, "info", where / "cells.h5ad", "--layer", "csc", "--json")
    assert status == 0, err
    described = json.loads(out)
    assert described["encoding"] == "csc_matrix" and described["shape"] == [M, N]
    assert described["layers"] == ["csc", "dense", "doubled"]
    assert not (where / "cells.h5ad.csc.csr.zarr").exists()  # nothing converted
    status, out, _ = call(capsys, "info", where / "mex", "--json")
    assert json.loads(out)["shape"] == [M, N]
    status, out, _ = call(capsys, "info", where / "filtered_feature_bc_matrix.h5", "--json")
    described = json.loads(out)
    assert (described["shape"], described["stored_dtype"], described["nnz"]) == ([M, N], "int32", counts(seed=5).nnz)


def test_dtype_and_layer_reach_fit_and_transform(files, tmp_path):
    where, X = files
    model = tmp_path / "model.zarr"
    dnmf(
        "fit",
        where / "cells.h5ad",
        "--dtype",
        "float64",
        "--rank",
        K,
        "--max-iter",
        10,
        "--out",
        model,
        "--threads",
        "--quiet",
    )
    W, H, _ = read_factors(model)
    assert W.dtype == H.dtype == np.float64
    projections = {}
    for layer in ("X", "doubled"):
        out = tmp_path / f"w-{layer}.zarr"
        dnmf(
            "transform",
            where / "cells.h5ad",
            *(("--layer", layer) if layer != "X" else ()),
            "--model",
            model,
            "--out",
            out,
            "--threads",
            "--quiet",
        )
        projections[layer] = zarr.open_group(str(out), mode="r")["W"][...]
    assert projections["X"].dtype == np.float32  # integer counts read as float32 (H cast to the input's dtype)
    np.testing.assert_allclose(projections["doubled"], 2 * projections["X"], rtol=1e-3, atol=1e-3)  # layer = 2 X


def _bad_files(where, X):
    text = where / "not-really.h5ad"
    text.write_text("cell,gene,count\n")
    header = where / "bad-header.mtx"
    header.write_text("%%MatrixMarket matrix something real general\n2 2 1\n1 1 1.0\n")
    negative = where / "negative.mtx"
    negative.write_text("%%MatrixMarket matrix coordinate real general\n2 2 2\n1 1 1.0\n2 2 -3.0\n")
    truncated = where / "truncated.mtx"
    truncated.write_text("%%MatrixMarket matrix coordinate integer general\n2 2 3\n1 1 1\n2 2 3\n")
    missing = where / "missing-dataset.h5"
    write_10x_h5(missing, X)
    import h5py

    with h5py.File(missing, "r+") as handle:
        del handle["matrix/indptr"]
    return text, header, negative, truncated, missing


def test_bad_files_give_one_error_line_and_stay_as_they_were(files, tmp_path, capsys):
    where, X = files
    text, header, negative, truncated, missing = _bad_files(tmp_path, X)
    cases = [
        ((text, "--rank", 2), [str(text), "is not an AnnData file"]),
        ((header, "--rank", 2), [str(header), "not a MatrixMarket file we can read"]),
        ((negative, "--rank", 2), [str(negative), "negative value -3.0 at (1, 1)"]),
        ((truncated, "--rank", 2), [str(truncated), "declares 3 entries but the file holds 2"]),
        ((missing, "--rank", 2), [str(missing), "missing matrix/indptr"]),
        (
            (where / "cells.h5ad", "--layer", "counts", "--rank", 2),
            ["has no layer 'counts'", "['csc', 'dense', 'doubled']"],
        ),
        ((where / "counts.mtx.gz", "--layer", "x", "--rank", 2), ["has no layers"]),
    ]
    before = {path: digest(path) for path in (text, header, negative, truncated, missing, where / "cells.h5ad")}
    for args, fragments in cases:
        status, _, err = call(capsys, "fit", *args, "--out", tmp_path / "out.zarr", "--threads", "--quiet")
        assert_one_error_line(status, err, *fragments)
        assert not (tmp_path / "out.zarr").exists()
    assert {path: digest(path) for path in before} == before


def test_open_matrix_names_the_layers_there_are(files):
    where, _ = files
    with pytest.raises(ValueError, match=r"has no layer 'raw'; its layers are \['csc', 'dense', 'doubled'\]"):
        open_matrix(where / "cells.h5ad", layer="raw")
