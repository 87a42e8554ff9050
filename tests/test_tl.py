"""``dnmf.tl`` and ``dnmf.pl`` on real ``anndata`` objects: in memory (dense, CSR, CSC),
backed by an ``.h5ad`` file, and with a lazy Dask X on a ``LocalCluster``.

The data are real counts: the first cells and genes of PBMC 3k (10x Genomics), vendored
for the documentation's gallery.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import anndata as ad
import dask.array as da
import matplotlib
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import dnmf
from dnmf.errors import InputError, InputTypeError, ParameterError

matplotlib.use("Agg")

DATA = Path(__file__).resolve().parents[1] / "docs" / "examples" / "data" / "pbmc3k_hvg_counts.npz"
K = 4


def pbmc_counts(cells=400, genes=300):
    """Raw counts (cells x genes, CSR float32) with their gene names and cell types."""
    with np.load(DATA, allow_pickle=False) as data:
        counts = sp.csr_matrix((data["data"], data["indices"], data["indptr"]), shape=tuple(data["shape"]))
        names, types = data["genes"].astype(str), data["cell_type"].astype(str)
    counts = counts[:cells, :genes].astype(np.float32)
    return counts, names[:genes], types[:cells]


def log_normalized(counts):
    totals = np.asarray(counts.sum(axis=1)).ravel()
    normalized = sp.diags(1e4 / np.maximum(totals, 1)) @ counts
    return normalized.log1p().astype(np.float32).tocsr()


def make_adata(X, names=None, **kwargs):
    n_obs, n_vars = X.shape
    var = pd.DataFrame(index=pd.Index(names if names is not None else [f"g{j}" for j in range(n_vars)]))
    return ad.AnnData(X=X, obs=pd.DataFrame(index=pd.Index([f"c{i}" for i in range(n_obs)])), var=var, **kwargs)


@pytest.fixture(scope="module")
def pbmc():
    counts, names, types = pbmc_counts()
    return log_normalized(counts), counts, names, types


def relative_difference(actual, expected):
    return float(np.linalg.norm(np.asarray(actual) - expected) / np.linalg.norm(expected))


def reference(X, **params):
    model = dnmf.NMF(K, random_state=0, **params)
    W = model.fit_transform(X)
    return np.asarray(W), model


@pytest.mark.parametrize("kind", ["dense", "csr", "csc"])
def test_nmf_in_memory_equals_the_estimator_and_leaves_x_alone(kind, pbmc):
    logs = pbmc[0]
    X = {"dense": logs.toarray(), "csr": logs.copy(), "csc": logs.tocsc()}[kind]
    before = X.copy()
    adata = make_adata(X)
    assert dnmf.tl.nmf(adata, K) is None
    W, model = reference(X)
    np.testing.assert_array_equal(adata.obsm["X_nmf"], W)
    np.testing.assert_array_equal(adata.varm["NMF_components"], model.components_.T)
    record = adata.uns["nmf"]
    assert record["n_iter"] == model.n_iter_
    assert record["reconstruction_err"] == pytest.approx(model.reconstruction_err_, rel=1e-12)
    assert record["relative_err"] == pytest.approx(model.reconstruction_err_ / np.linalg.norm(logs.toarray()), rel=1e-5)
    np.testing.assert_array_equal(record["loss_history"], model.loss_history_)
    assert record["params"]["n_components"] == K and record["params"]["layer"] is None
    assert adata.X is X
    if kind == "dense":
        np.testing.assert_array_equal(X, before)
    else:
        assert (X != before).nnz == 0 and X.format == before.format


def test_nmf_on_a_layer_with_highly_variable_genes_zero_fills_the_others(pbmc):
    logs, counts = pbmc[0], pbmc[1]
    adata = make_adata(counts.copy(), layers={"logs": logs.copy()})
    hvg = np.zeros(adata.n_vars, dtype=bool)
    hvg[::3] = True
    adata.var["highly_variable"] = hvg
    dnmf.tl.nmf(adata, K, layer="logs")
    W, model = reference(logs[:, np.flatnonzero(hvg)])
    np.testing.assert_array_equal(adata.obsm["X_nmf"], W)
    components = adata.varm["NMF_components"]
    np.testing.assert_array_equal(components[hvg], model.components_.T)
    assert not components[~hvg].any()
    assert adata.uns["nmf"]["params"]["use_highly_variable"] and adata.uns["nmf"]["params"]["layer"] == "logs"
    dnmf.tl.nmf(adata, K, layer="logs", use_highly_variable=False, key_added="all_genes")
    assert adata.varm["all_genes"][~hvg].any()


def test_key_added_renames_all_three_and_copy_leaves_the_object_alone(pbmc):
    adata = make_adata(pbmc[0].copy())
    copied = dnmf.tl.nmf(adata, K, key_added="programs", copy=True)
    assert isinstance(copied, ad.AnnData)
    assert "programs" in copied.obsm and "programs" in copied.varm and "programs" in copied.uns
    assert not adata.obsm and not adata.varm and not adata.uns
    np.testing.assert_array_equal(copied.X.toarray(), adata.X.toarray())


def test_an_existing_key_is_an_error_unless_overwrite(pbmc):
    adata = make_adata(pbmc[0].copy())
    dnmf.tl.nmf(adata, K, max_iter=5)
    first = adata.obsm["X_nmf"].copy()
    with pytest.raises(InputError, match=r"adata.obsm\['X_nmf'\] exists already; pass overwrite=True"):
        dnmf.tl.nmf(adata, K)
    np.testing.assert_array_equal(adata.obsm["X_nmf"], first)
    dnmf.tl.nmf(adata, K, overwrite=True)
    assert adata.uns["nmf"]["n_iter"] > 5


def test_bad_input_is_one_clear_error_and_the_object_unchanged(pbmc):
    logs = pbmc[0]
    adata = make_adata(logs.copy(), layers={"counts": pbmc[1].copy()})
    with pytest.raises(InputError, match=r"no layer 'raw'; its layers are \['counts'\]"):
        dnmf.tl.nmf(adata, K, layer="raw")
    with pytest.raises(ParameterError, match=r"n_components=500 is more than the matrix allows: it has 400 cells"):
        dnmf.tl.nmf(adata, 500)
    with pytest.raises(InputError, match=r'adata.var has no "highly_variable" column'):
        dnmf.tl.nmf(adata, K, use_highly_variable=True)
    negative = logs.copy()
    negative.data[7] = -1.0
    adata.layers["shifted"] = negative
    with pytest.raises(InputError, match=r"^adata.layers\['shifted'\]: Negative values in data passed to NMF"):
        dnmf.tl.nmf(adata, K, layer="shifted")
    with pytest.raises(ParameterError, match="beta_loss"):
        dnmf.tl.nmf(adata, K, beta_loss="kullback-leibler", solver="cd")
    with pytest.raises(InputTypeError, match="expected an anndata.AnnData, got ndarray"):
        dnmf.tl.nmf(logs.toarray(), K)
    assert not adata.obsm and not adata.varm and not adata.uns
    assert adata.layers["shifted"].data[7] == -1.0


@pytest.mark.parametrize("kind", ["dense", "csr"])
def test_a_backed_anndata_is_read_from_its_file_a_panel_at_a_time(kind, tmp_path):
    """The fit of a backed object matches the in-memory one, with a traced peak far under
    the size of X (it is read a row panel at a time, never whole)."""
    rng = np.random.default_rng(0)
    counts = sp.random(6000, 400, density=0.3 if kind == "csr" else 1.0, random_state=rng, dtype=np.float32)
    X = counts.tocsr() if kind == "csr" else counts.toarray()
    path = tmp_path / "pbmc.h5ad"
    hvg = np.arange(400) % 2 == 0
    stored = make_adata(X)
    stored.var["highly_variable"] = hvg
    stored.write_h5ad(path)
    in_memory = ad.read_h5ad(path)
    dnmf.tl.nmf(in_memory, K, panel_rows=500)
    backed = ad.read_h5ad(path, backed="r")
    x_bytes = X.data.nbytes * 2 if kind == "csr" else X.nbytes
    tracemalloc.start()
    try:
        dnmf.tl.nmf(backed, K, panel_rows=500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < x_bytes / 2, (peak, x_bytes)
    assert isinstance(backed.obsm["X_nmf"], np.ndarray)
    # the same fit to rounding: the stored panels' tasks run on Dask's threads, BLAS on one thread each
    assert relative_difference(backed.obsm["X_nmf"], in_memory.obsm["X_nmf"]) < 1e-3
    assert relative_difference(backed.varm["NMF_components"], in_memory.varm["NMF_components"]) < 1e-3
    assert backed.uns["nmf"]["relative_err"] == pytest.approx(in_memory.uns["nmf"]["relative_err"], rel=1e-5)
    assert not backed.varm["NMF_components"][~hvg].any()
    with pytest.raises(InputError, match="a view of a backed AnnData"):
        dnmf.tl.nmf(backed[:100], K, overwrite=True)
    with pytest.raises(InputError, match="a view of a backed AnnData"):
        dnmf.NMF(K).fit(backed[:100])
    with pytest.raises(ParameterError, match="copy=True needs the AnnData in memory"):
        dnmf.tl.nmf(backed, K, copy=True)


#: Rows of every block of the lazy X computed (appends are atomic; workers are threads here).
READ_ROWS: list[int] = []


def _logged(block):
    READ_ROWS.append(block.shape[0])
    return block


def test_a_lazy_dask_x_on_a_local_cluster_stays_lazy_and_is_read_by_blocks(pbmc, tmp_path):
    from anndata.experimental import read_elem_lazy
    from distributed import Client, LocalCluster

    logs = pbmc[0]
    path = tmp_path / "logs.h5ad"
    make_adata(logs).write_h5ad(path)
    import h5py

    READ_ROWS.clear()
    with (
        h5py.File(path, "r") as handle,
        LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster,
        Client(cluster),
    ):
        lazy = read_elem_lazy(handle["X"], chunks=(100, logs.shape[1]))
        lazy = lazy.map_blocks(_logged, dtype=lazy.dtype, meta=lazy._meta)
        adata = make_adata(lazy)
        dnmf.tl.nmf(adata, K)
        usage = adata.obsm["X_nmf"]
        assert isinstance(usage, da.Array)
        W = usage.compute()
    assert adata.X is lazy
    assert max(READ_ROWS) == 100 and len(READ_ROWS) >= 4 * adata.uns["nmf"]["n_iter"]
    W_ref, model = reference(logs)
    assert relative_difference(W, W_ref) < 1e-3
    assert relative_difference(adata.varm["NMF_components"], model.components_.T) < 1e-3


@pytest.fixture(scope="module")
def consensus_adata(pbmc):
    logs, counts, names, types = pbmc
    adata = make_adata(logs.copy(), names=names, layers={"counts": counts.copy()})
    adata.obs["cell_type"] = types
    dnmf.tl.consensus(adata, [3, 4], replicates=4, layer="counts", preprocess="counts", top_genes=150)
    return adata


def test_consensus_writes_the_chosen_rank_into_the_object(consensus_adata, pbmc):
    adata = consensus_adata
    logs, counts = pbmc[0], pbmc[1]
    record = adata.uns["cnmf"]
    expected = dnmf.consensus(counts, [3, 4], replicates=4, preprocess="counts", top_genes=150)
    k = expected.report.recommended
    assert record["k"] == record["recommended"] == k
    np.testing.assert_array_equal(record["ranks"], [3, 4])
    np.testing.assert_allclose(record["stability"], [s.stability for s in expected.report.scores])
    genes = np.asarray(expected.preprocessing.columns)
    np.testing.assert_array_equal(record["genes_used"], genes)
    np.testing.assert_array_equal(adata.obsm["X_cnmf"], expected.usages[k].compute())
    spectra = adata.varm["cnmf_spectra"]
    np.testing.assert_array_equal(spectra[genes], expected.spectra[k].T)
    assert not np.delete(spectra, genes, axis=0).any()
    np.testing.assert_array_equal(adata.varm["cnmf_spectra_tpm"], expected.spectra_tpm[k].T)
    np.testing.assert_array_equal(adata.varm["cnmf_gene_scores"], expected.spectra_score[k].T)
    assert record["unit_spectra"].shape == (4 * k, genes.size)
    assert (adata.layers["counts"] != counts).nnz == 0 and (adata.X != logs).nnz == 0


def test_consensus_results_survive_an_h5ad_round_trip_and_k_picks_another_rank(consensus_adata, pbmc, tmp_path):
    path = tmp_path / "out.h5ad"
    consensus_adata.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert back.uns["cnmf"]["k"] == consensus_adata.uns["cnmf"]["k"]
    other = 3 if consensus_adata.uns["cnmf"]["k"] == 4 else 4
    copied = dnmf.tl.consensus(
        back, [3, 4], k=other, replicates=4, layer="counts", preprocess="counts", top_genes=150, copy=True
    )
    assert copied.obsm["X_cnmf"].shape[1] == other and back.obsm["X_cnmf"].shape[1] != other
    with pytest.raises(ParameterError, match=r"k=5 is not one of the ranks tried \(3, 4\)"):
        dnmf.tl.consensus(back, [3, 4], k=5, overwrite=True)


def test_the_plots_read_the_object_and_return_axes(consensus_adata, tmp_path):
    adata = consensus_adata
    adata.obsm["X_umap"] = np.asarray(adata.obsm["X_cnmf"][:, :2])
    axes = dnmf.pl.usage(adata, key="X_cnmf", show=False, save=tmp_path / "usage.png")
    assert len(axes) == adata.uns["cnmf"]["k"] and (tmp_path / "usage.png").stat().st_size > 0
    axes = dnmf.pl.top_genes(adata, key="cnmf_gene_scores", n_genes=5, components=[1, 2], show=False)
    assert [len(ax.get_yticklabels()) for ax in axes] == [5, 5]
    labels = {label.get_text() for label in axes[0].get_yticklabels()}
    assert labels <= set(adata.var_names)
    for plot in (dnmf.pl.k_selection, dnmf.pl.density, dnmf.pl.clustering):
        assert plot(adata, show=False, save=tmp_path / f"{plot.__name__}.png") is not None
    with pytest.raises(InputError, match=r"adata.obsm has no 'X_tsne'"):
        dnmf.pl.usage(adata, basis="tsne", key="X_cnmf", show=False)
    with pytest.raises(InputError, match="run dnmf.tl.consensus"):
        dnmf.pl.k_selection(adata, key="other", show=False)
    with pytest.raises(InputError, match=r"components are numbered 1 to"):
        dnmf.pl.top_genes(adata, key="cnmf_spectra", components=[0], show=False)
    import matplotlib.pyplot as plt

    plt.close("all")
