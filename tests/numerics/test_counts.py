"""cNMF's count preprocessing, panel by panel.

The reference here is cNMF's own code (``cnmf.cnmf``: ``compute_tpm``,
``get_highvar_genes_sparse`` and ``get_norm_counts`` of cNMF 1.7), transcribed onto
pandas and scikit-learn's ``StandardScaler`` as cNMF runs it; the out-of-core
preprocessing must pick the same genes and make the same matrix, whatever the panels,
dense or sparse, and never change its input.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.preprocessing import StandardScaler

from dnmf.apps.counts import prepare_counts
from dnmf.errors import InputError, ParameterError
from dnmf.io.storage import as_panels


def cnmf_reference(counts, numgenes):
    """``(genes kept, normalized counts)`` as cNMF 1.7's ``prepare`` makes them."""
    totals = counts.sum(axis=1, keepdims=True)
    tpm = counts / np.where(totals > 0, totals, 1) * 1e6  # scanpy's normalize_total(target_sum=1e6)
    scaler = StandardScaler(with_mean=False).fit(tpm)
    gene_mean, gene_var = pd.Series(scaler.mean_), pd.Series(scaler.var_)
    gene_fano = gene_var / gene_mean
    top_genes = gene_mean.sort_values(ascending=False)[:20].index
    A = (np.sqrt(gene_var) / gene_mean)[top_genes].min()
    w_mean_low, w_mean_high = gene_mean.quantile([0.10, 0.90])
    w_fano_low, w_fano_high = gene_fano.quantile([0.10, 0.90])
    winsor_box = (
        (gene_fano > w_fano_low) & (gene_fano < w_fano_high) & (gene_mean > w_mean_low) & (gene_mean < w_mean_high)
    )
    B = np.sqrt(gene_fano[winsor_box].median())
    fano_ratio = gene_fano / ((A**2) * gene_mean + (B**2))
    kept = np.flatnonzero(fano_ratio.index.isin(fano_ratio.sort_values(ascending=False).index[:numgenes]))
    norm = counts[:, kept].astype(np.float64)
    std = norm.std(axis=0, ddof=1)  # scanpy's scale(zero_center=False): sample std, 0 -> 1
    return kept, norm / np.where(std > 0, std, 1)


def overdispersed_counts(cells=900, genes=400, seed=0):
    """Poisson counts of cells mixing gene programs over a background, with varied
    library sizes, a few genes never seen and one empty cell."""
    rng = np.random.default_rng(seed)
    background = rng.gamma(0.3, 1.0, (1, genes))
    programs = rng.gamma(0.5, 1.0, (5, genes))
    rates = 0.5 * background / background.sum() + 0.5 * rng.dirichlet(np.full(5, 0.3), cells) @ (
        programs / programs.sum(axis=1, keepdims=True)
    )
    counts = rng.poisson(rng.lognormal(np.log(2000), 0.5, (cells, 1)) * rates).astype(np.float32)
    counts[:, :7] = 0
    counts[5] = 0
    return counts


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("panel_rows", [900, 128])
def test_the_preprocessing_is_cnmfs(sparse, dtype, panel_rows):
    counts = overdispersed_counts().astype(dtype)
    X = sp.csr_matrix(counts) if sparse else counts
    before = X.copy()
    kept, norm = cnmf_reference(counts.astype(np.float64), 150)
    panels, done = prepare_counts(as_panels(X, panel_rows=panel_rows), 150)
    np.testing.assert_array_equal(done.columns, kept)
    assert panels.shape == (900, 150) and panels.dtype == dtype and panels.sparse == sparse
    made = panels.array.compute()
    made = made.toarray() if sparse else made
    np.testing.assert_allclose(made, norm, rtol=1e-6 if dtype == np.float32 else 1e-12, atol=0)
    assert (X != before).nnz == 0 if sparse else np.array_equal(X, before)


def test_more_genes_asked_than_there_are_keeps_them_all():
    counts = overdispersed_counts(cells=200, genes=50)
    panels, done = prepare_counts(as_panels(counts), 2000)
    np.testing.assert_array_equal(done.columns, np.arange(50))
    assert panels.shape == (200, 50) and done.to_dict()["top_genes"] == 50


@pytest.mark.parametrize(
    "bad, error, fragment",
    [
        (-1.0, InputError, "Negative values"),
        (np.nan, InputError, "NaN or infinity"),
    ],
)
def test_bad_counts_are_refused_by_the_statistics_pass(bad, error, fragment):
    counts = overdispersed_counts(cells=100, genes=40)
    counts[3, 20] = bad
    with pytest.raises(error, match=fragment):
        prepare_counts(as_panels(counts), 10)


@pytest.mark.parametrize("top", [0, 2.5, True])
def test_top_genes_must_be_a_positive_integer(top):
    with pytest.raises(ParameterError, match="top_genes must be an integer >= 1"):
        prepare_counts(as_panels(overdispersed_counts(cells=50, genes=20)), top)
