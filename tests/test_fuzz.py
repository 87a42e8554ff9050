"""Fuzzing ``NMF.fit_transform``: random shapes, densities, scales, dtypes, input
kinds (NumPy, SciPy CSR, Dask and Zarr arrays with random chunks), panel sizes and
parameter combinations, some of them invalid.

Every example either raises one of the documented errors (a ``ValueError`` or
``TypeError`` whose message matches :data:`DOCUMENTED`), or returns non-negative finite
factors whose data-fit loss never increases from one iteration to the next. The loss is
only monotone for the unpenalized problem (HALS and MU decrease the *penalized*
objective), so the check is made when ``alpha_W == 0``; the last entry of
``loss_history_`` is the loss after the final W-solve (``polish``), which starts afresh,
and is left out. ``tol=0`` and a few iterations keep every example short.
"""

from __future__ import annotations

import re
import warnings

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from dnmf import NMF

#: Messages of the errors a bad combination may raise (the bad-input table's, in short).
DOCUMENTED = [
    r"Negative values in data passed to NMF",
    r"Input contains NaN or infinity|Input X contains (NaN|infinity)",
    r"When beta_loss <= 0 and X contains zeros",
    r"init = 'nndsvd\w*' can only be used when n_components <= min\(n_samples, n_features\)",
    r"boolean dtype",
    r"solver '(cd|hals)' does not handle beta_loss",
]
#: Relative and (times ||V||^2 for the dtype's rounding) absolute slack of "never increases".
RTOL = 1e-6
ATOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}


@st.composite
def problems(draw):
    m, n = draw(st.integers(1, 40)), draw(st.integers(1, 12))
    density = draw(st.sampled_from([1.0, 0.7, 0.3, 0.05, 0.0]))
    scale = 10.0 ** draw(st.integers(-3, 3))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.RandomState(seed)
    X = np.abs(rng.standard_normal((m, n))) * scale
    X[rng.uniform(size=(m, n)) >= density] = 0.0
    bad = draw(st.sampled_from([None] * 16 + ["negative", "nan", "inf"]))
    if bad is not None:
        X[rng.randint(m), rng.randint(n)] = {"negative": -1.0, "nan": np.nan, "inf": np.inf}[bad]
    dtype = draw(st.sampled_from([np.float64, np.float32] * 4 + [np.int64, np.bool_]))
    X = (X * 10).astype(dtype) if dtype is np.int64 else X.astype(dtype)
    kind = draw(st.sampled_from(["numpy", "scipy", "dask", "zarr"]))
    panel_rows = draw(st.one_of(st.none(), st.integers(1, m)))
    chunks = (draw(st.integers(1, m)), draw(st.integers(1, n)))
    if kind == "scipy":
        X = sp.csr_matrix(X)
    elif kind == "dask":
        X = da.from_array(X, chunks=chunks)
    elif kind == "zarr":
        X = zarr.create_array(store=zarr.storage.MemoryStore(), data=X, chunks=chunks)
    solver = draw(st.sampled_from(["cd", "hals", "mu"]))
    betas = ["frobenius", "kullback-leibler", "itakura-saito", 0.5, 1.5, 3.0]
    if solver != "mu":  # mostly what HALS handles; now and then a documented refusal
        betas = ["frobenius"] * 10 + betas[1:2]
    beta = draw(st.sampled_from(betas))
    penalized = draw(st.sampled_from([False, False, False, True]))
    params = dict(
        n_components=draw(st.integers(1, min(m, n) + 1)),
        init=draw(st.sampled_from([None, "random", "nndsvd", "nndsvda", "nndsvdar"])),
        solver=solver,
        beta_loss=beta,
        max_iter=draw(st.integers(2, 6)),
        tol=0.0,
        random_state=seed,
        alpha_W=draw(st.sampled_from([0.01, 0.1])) if penalized else 0.0,
        l1_ratio=draw(st.sampled_from([0.0, 0.5, 1.0])),
        inner_sweeps=draw(st.integers(1, 3)),
        panel_rows=panel_rows,
    )
    return X, params


def _squared_norm(X):
    values = X.compute() if hasattr(X, "compute") else X[...] if isinstance(X, zarr.Array) else X
    values = values.toarray() if sp.issparse(values) else np.asarray(values)
    return float(np.sum(values.astype(np.float64) ** 2))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=problems())
def test_fit_gives_a_documented_error_or_nonnegative_factors_with_a_non_increasing_loss(problem):
    X, params = problem
    model = NMF(**params)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "init ignored", convergence
            W = model.fit_transform(X)
    except (ValueError, TypeError) as error:
        message = str(error)
        assert any(re.search(pattern, message) for pattern in DOCUMENTED), f"undocumented error: {message!r}"
        event(f"error: {message[:40]}")
        return
    W = np.asarray(W.compute() if hasattr(W, "compute") else W)
    H = model.components_
    assert W.shape == (X.shape[0], model.n_components_) and H.shape == (model.n_components_, X.shape[1])
    assert np.all(np.isfinite(W)) and np.all(np.isfinite(H)), (W, H)
    assert W.min() >= 0 and H.min() >= 0
    assert np.isfinite(model.reconstruction_err_)
    losses = np.asarray(model.loss_history_[:-1])
    assert np.all(np.isfinite(losses)), losses
    if params["alpha_W"]:
        event("fitted, penalized (loss not checked)")
        return
    event(f"fitted, loss checked: {params['solver']} {params['beta_loss']}")
    atol = ATOL[np.dtype(H.dtype)] * _squared_norm(X)
    increases = np.diff(losses) - (RTOL * losses[:-1] + atol)
    assert np.all(increases <= 0), (losses, params)


@pytest.mark.parametrize(
    "solver, beta", [("cd", "frobenius"), ("mu", "frobenius"), ("mu", "kullback-leibler"), ("mu", 1.5)]
)
@pytest.mark.parametrize(
    "X",
    [np.zeros((6, 4)), np.ones((1, 5)), np.ones((5, 1)), np.eye(5), sp.csr_matrix((7, 3))],
    ids=["all-zero", "one-row", "one-column", "identity", "sparse-empty"],
)
def test_corner_cases_the_fuzzer_may_miss(X, solver, beta):
    model = NMF(n_components=1, solver=solver, beta_loss=beta, init="nndsvda", max_iter=4, tol=0.0)
    W = model.fit_transform(X)
    assert np.all(np.isfinite(W)) and np.all(np.isfinite(model.components_))
    assert W.min() >= 0 and model.components_.min() >= 0
    losses = np.asarray(model.loss_history_[:-1])
    assert np.all(np.diff(losses) <= RTOL * losses[:-1] + 1e-12)
