"""Masked NMF: missing entries left out of the loss and of the updates.

A naive full-matrix reference of the weighted multiplicative updates lives here; the
out-of-core solver must follow it iteration by iteration, reduce to the unmasked solver
when nothing is missing, predict hidden entries of a planted low-rank matrix to the
noise level, and read V once per iteration.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from counting_store import CountingStore
from fitting import fit
from sklearn.exceptions import ConvergenceWarning
from zarr.storage import LocalStore

import dnmf
from dnmf.api import non_negative_factorization
from dnmf.apps.recommend import observed_columns, recommend
from dnmf.numerics import masked, masked_hals
from dnmf.numerics.kernels import Penalty, StepSpec, mu_gamma, panel_step, update_h
from dnmf.params import compute_penalties

BETAS = [2.0, 1.0, 0.5, 0.0, 3.0]
#: Planted problem of the recovery test: shape, rank, noise level, share hidden.
PLANTED = dict(m=300, n=200, k=5, sigma=0.1, hidden=0.3)


# ----------------------------------------------------------------------- references


def reference_iteration(V, M, W, H, beta):
    """One weighted MU iteration on full matrices: W first, then H with the new W."""
    gamma = mu_gamma(beta)
    V = np.where(M, V, 0.0)
    WH = W @ H
    W = W * (((M * V * WH ** (beta - 2)) @ H.T) / ((M * WH ** (beta - 1)) @ H.T)) ** gamma
    WH = W @ H
    H = H * ((W.T @ (M * V * WH ** (beta - 2))) / (W.T @ (M * WH ** (beta - 1)))) ** gamma
    return W, H


def reference_hals_iteration(V, M, W, H, penalty_W=None, penalty_H=None):
    """One masked HALS iteration, row by row and column by column: each row of W (then
    each column of H, with the new W) swept with its own Gram over observed entries."""
    penalty_W, penalty_H = penalty_W or Penalty(), penalty_H or Penalty()

    def sweep(A, B, mask, values, penalty):  # rows a of A against B (k x p), observed where mask
        A = A.copy()
        for i in range(A.shape[0]):
            gram = (B * mask[i]) @ B.T + penalty.l2 * np.eye(B.shape[0])
            cross = (values[i] * mask[i]) @ B.T - penalty.l1
            for t in range(A.shape[1]):
                if gram[t, t] != 0:
                    A[i, t] = max(A[i, t] - (gram[t] @ A[i] - cross[t]) / gram[t, t], 0.0)
        return A

    V = np.where(M, V, 0.0)
    W = sweep(W, H, M, V, penalty_W)
    return W, sweep(H.T, W.T, M.T, V.T, penalty_H).T


def reference_loss(V, M, WH, beta):
    """Beta-divergence over observed entries (V > 0 here)."""
    v, wh = V[M], WH[M]
    if beta == 2:
        return 0.5 * np.sum((v - wh) ** 2)
    if beta == 1:
        return np.sum(v * np.log(v / wh) - v + wh)
    if beta == 0:
        return np.sum(v / wh - np.log(v / wh) - 1)
    return np.sum(v**beta + (beta - 1) * wh**beta - beta * v * wh ** (beta - 1)) / (beta * (beta - 1))


def problem(m=40, n=24, k=3, share=0.3, seed=0):
    """Positive V, an observed mask, V with NaN where unobserved, and starting factors."""
    rng = np.random.RandomState(seed)
    V = np.abs(rng.standard_normal((m, n))) + 0.1
    M = rng.uniform(size=(m, n)) >= share
    W0 = np.abs(rng.standard_normal((m, k))) + 0.1
    H0 = np.abs(rng.standard_normal((k, n))) + 0.1
    return V, M, np.where(M, V, np.nan), W0, H0


def planted(m, n, k, sigma, hidden, seed=0):
    """Low rank + Gaussian noise (kept non-negative), and a mask hiding ``hidden`` of it."""
    rng = np.random.RandomState(seed)
    L = (rng.uniform(0.2, 1.0, (m, k)) @ rng.uniform(0.2, 1.0, (k, n))) / np.sqrt(k)
    V = np.maximum(L + sigma * rng.standard_normal((m, n)), 0.0)
    return V, rng.uniform(size=(m, n)) < hidden


def quiet(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return function(*args, **kwargs)


# --------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("mode, share", [("nan", 0.3), ("nan", 0.01), ("absent", 0.3)])
def test_panel_step_matches_reference(beta, mode, share):
    """30% NaN: masked dense products; 2% NaN: unmasked products minus sparse corrections
    at the missing entries (Frobenius); absent: products at stored entries only."""
    V, M, V_nan, W0, H0 = problem(share=share)
    assert (share < masked.FEW_MISSING_SHARE) == (np.mean(~M) < masked.FEW_MISSING_SHARE) and (~M).any()
    data = V_nan if mode == "nan" else sp.csr_matrix(np.where(M, V, 0.0))
    step = StepSpec("mu", beta, missing=mode)
    W1, partial = masked.panel_step(data, W0, H0, step)
    H1, _ = masked.update_h(H0, partial, step)
    W_ref, H_ref = reference_iteration(V, M, W0, H0, beta)
    np.testing.assert_allclose(W1, W_ref, rtol=1e-10)
    np.testing.assert_allclose(H1, H_ref, rtol=1e-10)
    np.testing.assert_allclose(partial.loss, reference_loss(V, M, W0 @ H0, beta), rtol=1e-10)


def test_dense_row_blocks_add_up(monkeypatch):
    """Row blocks of a dense panel (cache blocking) give the numbers of one block."""
    V, M, V_nan, W0, H0 = problem(m=50)
    step = StepSpec("mu", 1.0, missing="nan")
    whole_W, whole = masked.panel_step(V_nan, W0, H0, step)
    monkeypatch.setattr(masked, "CACHE_BLOCK_BYTES", 7 * V.shape[1] * 8)  # blocks of 7 rows
    split_W, split = masked.panel_step(V_nan, W0, H0, step)
    np.testing.assert_allclose(split_W, whole_W, rtol=1e-12)
    np.testing.assert_allclose(split.h_numerator, whole.h_numerator, rtol=1e-12)
    np.testing.assert_allclose(split.loss, whole.loss, rtol=1e-12)


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5])
def test_kernels_without_missing_entries_equal_unmasked(beta):
    """All observed: the masked kernels compute the unmasked MU step."""
    V, _, _, W0, H0 = problem()
    unmasked = StepSpec("mu", beta)
    W_plain, part = panel_step(V, W0, H0, unmasked)
    H_plain, _ = update_h(H0, part, unmasked)
    for data, mode in ((V, "nan"), (sp.csr_matrix(V), "absent")):
        step = dataclasses.replace(unmasked, missing=mode)
        W1, partial = masked.panel_step(data, W0, H0, step)
        np.testing.assert_allclose(W1, W_plain, rtol=1e-12)
        np.testing.assert_allclose(masked.update_h(H0, partial, step)[0], H_plain, rtol=1e-12)


def test_prepared_panels_leave_the_input_alone():
    """NaN found once: zeros in a copy, the flat positions listed; a panel without NaN
    is not copied, and a fit on in-memory input (prepared panels kept) changes nothing."""
    V, M, V_nan, W0, H0 = problem()
    before = V_nan.copy()
    prepared = masked.prepare_panel(V_nan, "nan")
    np.testing.assert_array_equal(V_nan, before)
    np.testing.assert_array_equal(prepared.values, np.where(M, V, 0.0))
    np.testing.assert_array_equal(prepared.missing, np.flatnonzero(~M))
    assert masked.prepare_panel(prepared, "nan") is prepared
    clean = masked.prepare_panel(V, "nan")
    assert clean.values is V and clean.missing.size == 0
    step = StepSpec("mu", 2.0, missing="nan")
    W_prepared, from_prepared = masked.panel_step(prepared, W0, H0, step)
    W_raw, from_raw = masked.panel_step(V_nan, W0, H0, step)
    np.testing.assert_array_equal(W_prepared, W_raw)
    np.testing.assert_array_equal(from_prepared.h_numerator, from_raw.h_numerator)
    quiet(fit, V_nan, 3, solver="mu", init="custom", W=W0, H=H0, max_iter=3, panel_rows=7, missing_values="nan")
    np.testing.assert_array_equal(V_nan, before)


# -------------------------------------------------------------------------- solver


@pytest.mark.parametrize("beta", [2.0, 1.0, 0.5])
def test_out_of_core_iterates_follow_reference(beta):
    """Several panels, several iterations: the iterates of the naive reference."""
    V, M, V_nan, W0, H0 = problem(m=45, n=20)
    n_iter = 5
    W_ref, H_ref = W0, H0
    for _ in range(n_iter):
        W_ref, H_ref = reference_iteration(V, M, W_ref, H_ref, beta)
    result = fit(
        V_nan,
        3,
        solver="mu",
        beta_loss=beta,
        init="custom",
        W=W0,
        H=H0,
        max_iter=n_iter,
        tol=0,
        panel_rows=10,
        missing_values="nan",
    )
    np.testing.assert_allclose(result.W.compute(), W_ref, rtol=1e-9)
    np.testing.assert_allclose(result.H, H_ref, rtol=1e-9)
    assert result.loss == pytest.approx(reference_loss(V, M, W_ref @ H_ref, beta), rel=1e-9)
    assert np.all(np.diff(result.loss_history) <= 1e-9 * result.loss_history[0])  # MM: never increases


@pytest.mark.parametrize("penalties", [False, True], ids=["plain", "penalized"])
@pytest.mark.parametrize("mode", ["nan", "absent"])
def test_masked_hals_follows_reference(mode, penalties):
    """solver="cd" with missing values: per-row and per-column Grams over the observed
    entries, several panels, several iterations, the iterates of the naive reference;
    the loss never increases (every HALS step is exact minimization)."""
    V, M, V_nan, W0, H0 = problem(m=45, n=20)
    data = V_nan if mode == "nan" else sp.csr_matrix(np.where(M, V, 0.0))
    alphas = dict(alpha_W=0.02, alpha_H=0.01, l1_ratio=0.6) if penalties else {}
    pW, pH = compute_penalties(**{"alpha_W": 0.0, "alpha_H": "same", "l1_ratio": 0.0, **alphas}, shape=V.shape)
    n_iter = 5
    W_ref, H_ref = W0, H0
    for _ in range(n_iter):
        W_ref, H_ref = reference_hals_iteration(V, M, W_ref, H_ref, pW, pH)
    result = fit(
        data,
        3,
        solver="cd",
        init="custom",
        W=W0,
        H=H0,
        max_iter=n_iter,
        tol=0,
        panel_rows=10,
        missing_values=mode,
        **alphas,
    )
    np.testing.assert_allclose(result.W.compute(), W_ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.H, H_ref, rtol=1e-9, atol=1e-12)
    if not penalties:
        assert result.loss == pytest.approx(reference_loss(V, M, W_ref @ H_ref, 2.0), rel=1e-9)
        assert np.all(np.diff(result.loss_history) <= 1e-9 * result.loss_history[0])


def test_masked_hals_row_blocks_add_up(monkeypatch):
    """Row Grams held a block of rows at a time give the numbers of one block."""
    V, M, V_nan, W0, H0 = problem(m=50)
    step = StepSpec("cd", 2.0, sweeps_W=2, sweeps_H=2, missing="nan")
    whole_W, whole = masked_hals.panel_step(V_nan, W0, H0, step)
    monkeypatch.setattr(masked_hals, "GRAM_BLOCK_BYTES", 7 * 3 * 3 * 8)  # blocks of 7 rows
    split_W, split = masked_hals.panel_step(V_nan, W0, H0, step)
    np.testing.assert_allclose(split_W, whole_W, rtol=1e-12)
    for a, b in zip(split, whole):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_masked_hals_with_everything_stored_is_unmasked_hals(make_matrix, make_factors):
    """A CSR matrix storing every entry, ``"absent"``: masked HALS gives HALS's factors."""
    X = make_matrix(50, 20, seed=4, positive=True)
    W0, H0 = make_factors(50, 20, 3, seed=4)
    common = dict(solver="cd", init="custom", W=W0, H=H0, max_iter=20, tol=0, panel_rows=12, inner_sweeps=3)
    dense = fit(X, 3, **common)
    stored = fit(sp.csr_matrix(X), 3, missing_values="absent", **common)
    np.testing.assert_allclose(stored.H, dense.H, rtol=1e-9)
    np.testing.assert_allclose(stored.W.compute(), dense.W.compute(), rtol=1e-9)


@pytest.mark.parametrize("solver", ["mu", "cd"])
def test_hidden_entries_predicted_to_noise_level(solver):
    """Planted rank 5 + noise sigma, 30% hidden: hidden entries within 10% of sigma."""
    p = PLANTED
    V, hidden = planted(p["m"], p["n"], p["k"], p["sigma"], p["hidden"])
    X = np.where(hidden, np.nan, V)
    model = dnmf.NMF(p["k"], solver=solver, missing_values=np.nan, max_iter=400, tol=1e-6, random_state=0)
    W = quiet(model.fit_transform, X)
    predicted = W @ model.components_
    rmse = np.sqrt(np.mean((predicted[hidden] - V[hidden]) ** 2))
    assert rmse <= 1.1 * p["sigma"], rmse
    observed_rmse = np.sqrt(np.mean((predicted[~hidden] - V[~hidden]) ** 2))
    assert model.reconstruction_err_ == pytest.approx(observed_rmse * np.sqrt((~hidden).sum()), rel=1e-6)
    assert not np.isnan(X[~hidden]).any() and np.isnan(X[hidden]).all()  # input untouched


@pytest.mark.parametrize("beta_loss", ["frobenius", "kullback-leibler"])
def test_no_missing_entries_identical_to_unmasked(make_matrix, beta_loss):
    X = make_matrix(60, 25, seed=3)
    common = dict(n_components=4, solver="mu", beta_loss=beta_loss, max_iter=30, random_state=0, panel_rows=16)
    plain = quiet(dnmf.NMF(**common).fit, X)
    masked_model = quiet(dnmf.NMF(**common, missing_values=np.nan).fit, X)
    np.testing.assert_array_equal(masked_model.components_, plain.components_)
    assert masked_model.loss_history_ == plain.loss_history_


def test_sparse_all_stored_absent_equals_dense_unmasked(make_matrix, make_factors):
    """A CSR matrix storing every entry has nothing absent: the masked solver on it gives
    the unmasked solver's factors on the dense matrix."""
    X = make_matrix(50, 20, seed=4, positive=True)
    W0, H0 = make_factors(50, 20, 3, seed=4)
    common = dict(solver="mu", init="custom", W=W0, H=H0, max_iter=20, tol=0, panel_rows=12)
    dense = fit(X, 3, **common)
    stored = fit(sp.csr_matrix(X), 3, missing_values="absent", **common)
    np.testing.assert_allclose(stored.H, dense.H, rtol=1e-10)
    np.testing.assert_allclose(stored.W.compute(), dense.W.compute(), rtol=1e-10)
    np.testing.assert_allclose(stored.loss_history, dense.loss_history, rtol=1e-9)


def test_sparse_absent_ratings():
    """Ratings: only 35% of a planted matrix stored; the absent entries are predicted."""
    sigma = 0.05
    V, hidden = planted(120, 80, 3, sigma, 0.65, seed=1)
    R = sp.csr_matrix(np.where(hidden, 0.0, V))
    R.eliminate_zeros()
    W, H, _ = quiet(
        non_negative_factorization,
        R,
        n_components=3,
        solver="mu",
        missing_values="absent",
        max_iter=150,
        tol=1e-6,
        random_state=0,
        panel_rows=50,
    )
    truth = V[hidden & (V > 0)]
    rmse = np.sqrt(np.mean(((W @ H)[hidden & (V > 0)] - truth) ** 2))
    assert rmse < 1.5 * sigma, rmse


def test_absent_csr_group_out_of_core(tmp_path):
    """A stored CSR group with missing_values='absent' fits panel by panel (Dask output)."""
    V, hidden = planted(80, 40, 3, 0.05, 0.5, seed=2)
    R = sp.csr_matrix(np.where(hidden, 0.0, V))
    stored = dnmf.save_csr(R, tmp_path / "ratings.zarr", chunk_entries=300)
    common = dict(
        n_components=3, solver="mu", missing_values="absent", max_iter=20, tol=0, init="random", random_state=0
    )
    W_disk, H_disk, _ = non_negative_factorization(stored, panel_rows=16, **common)
    W_mem, H_mem, _ = non_negative_factorization(R, panel_rows=16, **common)
    np.testing.assert_allclose(W_disk.compute(), W_mem, rtol=1e-10)
    np.testing.assert_allclose(H_disk, H_mem, rtol=1e-10)


def test_zarr_input_read_once_per_iteration(tmp_path):
    """Dense Zarr with NaN: every chunk read once per iteration (+ stats and final loss)."""
    V, M, V_nan, W0, H0 = problem(m=40, n=12, k=3)
    zarr.create_array(str(tmp_path / "v.zarr"), data=V_nan, chunks=(5, 6), zarr_format=3)
    store = CountingStore(LocalStore(str(tmp_path / "v.zarr"), read_only=True))
    Z = zarr.open_array(store=store, mode="r")
    store.counts.clear()
    per_iteration = []
    n_iter = 4
    result = fit(
        Z,
        3,
        solver="mu",
        init="custom",
        W=W0,
        H=H0,
        max_iter=n_iter,
        tol=0,
        panel_rows=10,
        missing_values="nan",
        callback=lambda info: per_iteration.append(sum(store.counts.values())),
    )
    n_chunks = 8 * 2
    assert set(store.counts.values()) == {1 + n_iter + 1}  # stats, iterations, final loss
    assert len(store.counts) == n_chunks
    assert np.diff(per_iteration).tolist() == [n_chunks] * (n_iter - 1)
    in_memory = fit(
        V_nan, 3, solver="mu", init="custom", W=W0, H=H0, max_iter=n_iter, tol=0, panel_rows=10, missing_values="nan"
    )
    np.testing.assert_allclose(result.H, in_memory.H, rtol=1e-12)
    np.testing.assert_array_equal(Z[...], V_nan)  # read-only input unchanged


def test_estimator_transform_and_nndsvd_with_nan():
    V, M, V_nan, _, _ = problem(m=60, n=30, share=0.2)
    model = dnmf.NMF(3, solver="mu", missing_values=np.nan, max_iter=50, random_state=0)  # nndsvda on filled V
    W = quiet(model.fit_transform, V_nan)
    assert np.isfinite(W).all() and np.isfinite(model.components_).all() and (W >= 0).all()
    W_again = quiet(model.transform, V_nan)  # W solved again for the final H: close to the last iterate
    assert np.linalg.norm(W_again - W) <= 0.05 * np.linalg.norm(W)
    assert model.loss_history_[-1] < model.loss_history_[0]
    assert model.__sklearn_tags__().input_tags.allow_nan


BAD = [
    (dict(missing_values=np.nan), "sparse", "np.nan needs dense input"),
    (dict(solver="mu", missing_values="zero"), "nan", "missing_values must be None, np.nan"),
    (dict(solver="mu", missing_values="absent"), "nan", "'absent' needs sparse input"),
    (dict(solver="mu", missing_values=np.nan), "sparse", "np.nan needs dense input"),
    (dict(solver="mu", missing_values=np.nan), "inf", r"infinity \(1 entries\); NaN entries are treated as missing"),
    (dict(solver="mu", missing_values=np.nan), "negative", "Negative values"),
    (dict(solver="mu", missing_values=np.nan), "all-nan", "no observed entry"),
]


@pytest.mark.parametrize("params, data, message", BAD)
def test_bad_input(params, data, message):
    V, _, V_nan, _, _ = problem(m=10, n=6)
    X = {
        "nan": V_nan,
        "sparse": sp.csr_matrix(V),
        "inf": np.where(np.arange(60).reshape(10, 6) == 7, np.inf, V_nan),
        "negative": np.where(np.arange(60).reshape(10, 6) == 7, -1.0, V_nan),
        "all-nan": np.full((10, 6), np.nan),
    }[data]
    with pytest.raises(ValueError, match=message):
        non_negative_factorization(X, n_components=2, max_iter=3, **params)


def test_recommend_excludes_observed():
    H = np.array([[1.0, 2.0, 3.0, 4.0, 0.5]])
    picks = recommend(np.array([2.0]), H, observed=[3], top=2)
    assert picks == [(2, 6.0), (1, 4.0)]
    row = np.array([[np.nan, 1.0, np.nan, 2.0, 0.0]])
    assert observed_columns(row, "nan").tolist() == [1, 3, 4]
    assert observed_columns(sp.csr_matrix(np.array([[1.0, 0.0, 2.0, 0.0]])), "absent").tolist() == [0, 2]


def test_cli_fit_missing_then_recommend(tmp_path, capsys):
    """`dnmf fit --missing nan` then `dnmf recommend`: unobserved columns only, best first."""
    from dnmf.cli import main

    V, M, V_nan, _, _ = problem(m=30, n=16, share=0.25)
    zarr.create_array(str(tmp_path / "v.zarr"), data=V_nan, chunks=(10, 16))
    out = tmp_path / "out.zarr"
    assert (
        main(
            [
                "fit",
                str(tmp_path / "v.zarr"),
                "--rank",
                "3",
                "--solver",
                "mu",
                "--missing",
                "nan",
                "--max-iter",
                "20",
                "--out",
                str(out),
                "--threads",
                "--workers",
                "1",
                "-q",
            ]
        )
        == 0
    )
    assert main(["recommend", str(out), "--row", "2", "--top", "3", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    fitted = zarr.open_group(str(out), mode="r")
    scores = np.asarray(fitted["W"][2]) @ np.asarray(fitted["H"][...])
    unobserved = np.flatnonzero(~M[2])
    expected = unobserved[np.argsort(-scores[unobserved], kind="stable")][:3]
    assert [pick["column"] for pick in shown["top"]] == expected.tolist()
    assert shown["observed"] == int(M[2].sum())
    assert fitted.attrs["params"]["missing_values"] == "nan"
    assert main(["recommend", str(out), "--row", "99"]) == 2
    assert "out of range" in capsys.readouterr().err
