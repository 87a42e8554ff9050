"""Invariants of every fit: non-negative iterates, a loss that never increases,
dtypes kept end to end, clear errors on bad input, and the stopping rule.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from fitting import fit
from sklearn.exceptions import ConvergenceWarning

from dnmf import save_csr
from dnmf.api import non_negative_factorization as nmf

M, N, K = 24, 11, 3
SOLVER_BETAS = [("cd", 2.0), ("mu", 2.0), ("mu", 1.0), ("mu", 0.0), ("mu", 0.5), ("mu", 1.5), ("mu", 3.0)]


def _ids(cases):
    return [f"{solver}-beta{beta:g}" for solver, beta in cases]


def _data(make_matrix, beta, sparse=False, dtype=np.float64, seed=0):
    """Itakura-Saito (beta <= 0) needs strictly positive, hence dense-valued, data."""
    if beta <= 0:
        X = make_matrix(M, N, seed=seed, positive=True, dtype=dtype)
    else:
        X = make_matrix(M, N, seed=seed, density=0.6, dtype=dtype)
    return sp.csr_matrix(X) if sparse else X


def _start(init, make_factors, dtype=np.float64):
    if init == "custom":
        W0, H0 = make_factors(M, N, K, seed=1, dtype=dtype)
        return dict(init="custom", W=W0, H=H0)
    return dict(init=init, random_state=0)


class IterateRecorder:
    """A checkpointer (the driver's hook after every iteration) that keeps every iterate."""

    def __init__(self):
        self.iterates = {}

    def due(self, iteration):
        return True

    def save(self, state):
        self.iterates[state.iteration] = (np.asarray(state.W.compute()), np.asarray(state.H))


# ------------------------------------------------------------------- non-negativity


NON_NEGATIVITY = [(init, case) for init in ("random", "custom") for case in SOLVER_BETAS] + [
    (init, case) for init in ("nndsvd", "nndsvda", "nndsvdar") for case in (("cd", 2.0), ("mu", 1.0))
]


@pytest.mark.parametrize(
    "init, case", NON_NEGATIVITY, ids=[f"{init}-{_ids([case])[0]}" for init, case in NON_NEGATIVITY]
)
def test_every_iterate_is_non_negative(init, case, make_matrix, make_factors):
    solver, beta = case
    X = _data(make_matrix, beta, sparse=beta > 0 and init in ("random", "custom"))
    recorder = IterateRecorder()
    iterations = 4
    result = fit(
        X,
        K,
        solver=solver,
        beta_loss=beta,
        max_iter=iterations,
        tol=0,
        panel_rows=5,
        checkpointer=recorder,
        **_start(init, make_factors),
    )
    assert sorted(recorder.iterates) == list(range(1, iterations + 1))
    for t, (W, H) in recorder.iterates.items():
        assert W.shape == (M, K) and H.shape == (K, N)
        assert np.all(np.isfinite(W)) and np.all(np.isfinite(H)), t
        assert W.min() >= 0 and H.min() >= 0, t
    assert np.array_equal(result.W.compute(), recorder.iterates[iterations][0])
    assert np.all(np.asarray(result.loss_history) >= 0)


# -------------------------------------------------------------- monotone decrease


@pytest.mark.parametrize("sparse, init", [(False, "nndsvda"), (True, "random")], ids=["dense-nndsvda", "sparse-random"])
@pytest.mark.parametrize("solver, beta", SOLVER_BETAS, ids=_ids(SOLVER_BETAS))
def test_loss_never_increases(solver, beta, init, sparse, make_matrix):
    X = _data(make_matrix, beta, sparse=sparse and beta > 0, seed=2)  # Itakura-Saito: dense, positive
    iterations = 12
    result = fit(
        X, K, solver=solver, beta_loss=beta, init=init, random_state=3, max_iter=iterations, tol=0, panel_rows=6
    )
    losses = np.asarray(result.loss_history)
    assert len(losses) == iterations + 1
    assert np.all(np.diff(losses) <= 1e-12 * losses[0]), np.diff(losses)
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("sweeps", [2, 5])
def test_hals_loss_never_increases_with_several_sweeps(sweeps, make_matrix):
    X = make_matrix(M, N, seed=4)
    result = fit(X, K, init="random", random_state=0, max_iter=10, tol=0, inner_sweeps=sweeps, panel_rows=5)
    losses = np.asarray(result.loss_history)
    assert np.all(np.diff(losses) <= 1e-12 * losses[0])


# --------------------------------------------------------------------------- dtypes


def _float32_inputs(X, tmp_path):
    dense = zarr.create_array(str(tmp_path / "dense.zarr"), data=X, chunks=(5, N))
    group = save_csr(sp.csr_matrix(X), tmp_path / "csr.zarr", chunk_entries=16)
    return {
        "numpy": X,
        "scipy": sp.csr_matrix(X),
        "dask": da.from_array(X, chunks=(7, 4)),
        "zarr": dense,
        "csr-group": group,
    }


@pytest.mark.parametrize("solver, beta_loss", [("cd", "frobenius"), ("mu", "kullback-leibler")])
@pytest.mark.parametrize("source", ["numpy", "scipy", "dask", "zarr", "csr-group"])
def test_float32_in_float32_out(source, solver, beta_loss, make_matrix, make_factors, tmp_path):
    X = make_matrix(M, N, seed=5, density=0.7, dtype=np.float32)
    V = _float32_inputs(X, tmp_path)[source]
    start = _start("custom", make_factors, dtype=np.float32)
    W, H, _ = nmf(V, n_components=K, solver=solver, beta_loss=beta_loss, max_iter=3, tol=0, panel_rows=5, **start)
    assert H.dtype == np.float32
    assert W.dtype == np.float32
    assert np.asarray(W).dtype == np.float32
    if source in ("numpy", "scipy"):
        assert isinstance(W, np.ndarray)
    else:
        assert isinstance(W, da.Array)


@pytest.mark.parametrize("init", ["random", "nndsvd", "nndsvda", "nndsvdar"])
@pytest.mark.parametrize("solver, beta_loss", [("cd", "frobenius"), ("mu", "kullback-leibler")])
def test_float32_in_float32_out_for_every_init(init, solver, beta_loss, make_matrix):
    X = make_matrix(M, N, seed=5, density=0.7, dtype=np.float32)
    W, H, _ = nmf(
        X,
        n_components=K,
        solver=solver,
        beta_loss=beta_loss,
        init=init,
        random_state=0,
        max_iter=2,
        tol=0,
        panel_rows=5,
    )
    assert W.dtype == np.float32 and H.dtype == np.float32


@pytest.mark.parametrize(
    "make_input",
    [
        lambda X: X,
        lambda X: (X * 10).astype(np.int64),
        lambda X: (X * 10).astype(np.int32),
        lambda X: (X * 10).astype(np.uint8),
        lambda X: X.astype(np.float16),
        lambda X: sp.csr_matrix((X * 10).astype(np.int32)),
        lambda X: da.from_array((X * 10).astype(np.int16), chunks=(6, N)),
        lambda X: (X * 10).astype(np.int64).tolist(),
    ],
    ids=["float64", "int64", "int32", "uint8", "float16", "scipy-int32", "dask-int16", "list-of-int"],
)
def test_float64_and_integer_inputs_give_float64(make_input, make_matrix, make_factors):
    V = make_input(make_matrix(M, N, seed=6, density=0.7))
    for init in ("custom", "random", "nndsvda"):
        W, H, _ = nmf(V, n_components=K, max_iter=1, tol=0, **_start(init, make_factors))
        assert W.dtype == np.float64 and H.dtype == np.float64, init
        assert np.asarray(W).dtype == np.float64, init


def test_integer_zarr_and_csr_group_give_float64(make_matrix, tmp_path):
    X = (make_matrix(M, N, seed=7, density=0.5) * 10).astype(np.int32)
    dense = zarr.create_array(str(tmp_path / "int.zarr"), data=X, chunks=(5, N))
    group = save_csr(sp.csr_matrix(X), tmp_path / "int-csr.zarr")
    for V in (dense, group):
        W, H, _ = nmf(V, n_components=K, init="nndsvda", max_iter=2, tol=0)
        assert W.dtype == np.float64 and H.dtype == np.float64
        assert W.compute().dtype == np.float64


# ----------------------------------------------------------------------- bad input


def _with(X, index, value):
    X = X.copy()
    X[index] = value
    return X


BAD_VALUES = [
    ("negative", lambda X: _with(X, (2, 3), -1.0), "Negative"),
    ("negative-sparse", lambda X: sp.csr_matrix(_with(X, (2, 3), -1.0)), "Negative"),
    ("negative-dask", lambda X: da.from_array(_with(X, (20, 3), -0.5), chunks=(6, 4)), "Negative"),
    ("nan", lambda X: _with(X, (1, 1), np.nan), "NaN"),
    ("inf", lambda X: _with(X, (0, 5), np.inf), "NaN or infinity"),
    ("-inf", lambda X: _with(X, (0, 5), -np.inf), "NaN or infinity"),
    ("nan-sparse", lambda X: sp.csr_matrix(_with(X, (1, 1), np.nan)), "NaN"),
    ("nan-dask", lambda X: da.from_array(_with(X, (23, 10), np.nan), chunks=(6, 4)), "NaN"),
    ("1-D", lambda X: X[0], "2-D"),
    ("3-D", lambda X: X[None], "2-D"),
    ("3-D-dask", lambda X: da.from_array(X[None]), "2-D"),
    ("empty-rows", lambda X: X[:0], "empty"),
    ("empty-columns", lambda X: X[:, :0], "empty"),
    ("empty-sparse", lambda X: sp.csr_matrix((0, 4)), "empty"),
]


@pytest.mark.parametrize("make_input, match", [(f, m) for _, f, m in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES])
def test_bad_values_raise_value_error(make_input, match, make_matrix):
    V = make_input(make_matrix(M, N, seed=8, density=0.7))
    with pytest.raises(ValueError, match=match):
        nmf(V, n_components=2, init="random", random_state=0, max_iter=2, tol=0)


BAD_DTYPES = [
    ("bool", lambda X: X > 1, "boolean"),
    ("bool-sparse", lambda X: sp.csr_matrix(X > 1), "boolean"),
    ("strings", lambda X: X.astype(str), "string"),
]
#: Complex data is refused with scikit-learn's ``ValueError("Complex data not supported ...")``.
COMPLEX = [
    ("complex", lambda X: X.astype(np.complex128)),
    ("complex-sparse", lambda X: sp.csr_matrix(X.astype(np.complex128))),
    ("complex-dask", lambda X: da.from_array(X.astype(np.complex64))),
]


@pytest.mark.parametrize("make_input, match", [(f, m) for _, f, m in BAD_DTYPES], ids=[i for i, _, _ in BAD_DTYPES])
def test_bad_dtypes_raise_type_error(make_input, match, make_matrix):
    V = make_input(make_matrix(M, N, seed=8, density=0.7))
    with pytest.raises(TypeError, match=match):
        nmf(V, n_components=2, init="random", random_state=0, max_iter=2, tol=0)


@pytest.mark.parametrize("make_input", [f for _, f in COMPLEX], ids=[i for i, _ in COMPLEX])
def test_complex_data_is_refused(make_input, make_matrix):
    V = make_input(make_matrix(M, N, seed=8, density=0.7))
    with pytest.raises(ValueError, match="Complex data not supported"):
        nmf(V, n_components=2, init="random", random_state=0, max_iter=2, tol=0)


def test_bad_dtypes_in_zarr_are_refused(make_matrix, tmp_path):
    X = make_matrix(M, N, seed=8)
    complex_array = zarr.create_array(str(tmp_path / "c.zarr"), data=X.astype(np.complex128), chunks=(5, N))
    with pytest.raises(ValueError, match="Complex data not supported"):
        nmf(complex_array, n_components=2, max_iter=2, tol=0)
    bool_array = zarr.create_array(str(tmp_path / "b.zarr"), data=X > 1, chunks=(5, N))
    with pytest.raises(TypeError, match="boolean"):
        nmf(bool_array, n_components=2, max_iter=2, tol=0)


def test_itakura_saito_refuses_zeros(make_matrix):
    X = make_matrix(M, N, seed=9, density=0.5)
    with pytest.raises(ValueError, match="beta_loss <= 0"):
        nmf(X, n_components=2, solver="mu", beta_loss="itakura-saito", init="random", max_iter=2)


def test_inputs_and_custom_factors_are_not_modified(make_matrix, make_factors):
    X = make_matrix(M, N, seed=10, density=0.7)
    W0, H0 = make_factors(M, N, K, seed=10)
    copies = [a.copy() for a in (X, W0, H0)]
    S = sp.csr_matrix(X)
    S_data = S.data.copy()
    for V in (X, S):
        for solver, beta_loss in [("cd", "frobenius"), ("mu", "kullback-leibler")]:
            nmf(
                V,
                W0,
                H0,
                n_components=K,
                init="custom",
                solver=solver,
                beta_loss=beta_loss,
                max_iter=3,
                tol=0,
                alpha_W=0.1,
                panel_rows=5,
            )
    for original, copy in zip((X, W0, H0), copies):
        assert np.array_equal(original, copy)
    assert np.array_equal(S.data, S_data)


# -------------------------------------------------------------------- stopping rule


def test_convergence_warning_at_max_iter_with_tol(make_matrix):
    X = make_matrix(M, N, seed=11)
    with pytest.warns(ConvergenceWarning, match="Maximum number of iterations 3"):
        W, H, n_iter = nmf(X, n_components=K, init="random", random_state=0, max_iter=3, tol=1e-4)
    assert n_iter == 3


@pytest.mark.parametrize("solver, beta_loss", [("cd", "frobenius"), ("mu", "kullback-leibler")])
def test_tol_zero_runs_max_iter_without_warning(solver, beta_loss, make_matrix):
    X = make_matrix(M, N, seed=11)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = fit(
            X,
            K,
            solver=solver,
            beta_loss=1.0 if beta_loss != "frobenius" else 2.0,
            init="random",
            random_state=0,
            max_iter=12,
            tol=0,
        )
    assert result.n_iter == 12 and not result.converged
    assert len(result.loss_history) == 13


def _documented_stop(solver, errors, violations, tol, max_iter, extrapolated=False):
    """First iterate at which the rule of :mod:`dnmf.engine.driver`'s docstring fires, or None.

    Every solver: after at least 3 passes, unless the last pass raised the error or one of the
    last three raised it by more than 10 tol (relative), when
    max(0, (e_{t-3} - e_t) / 3) * min(t, max_iter - t) <= tol e_t.
    cd also: ``violation_t <= tol * violation_1`` (extrapolated: and ``|e_{t-1} - e_t| <= 10 tol e_t``).
    """
    for t, error in enumerate(errors):
        if t == 0:
            continue
        if solver == "cd":
            settled = not extrapolated or abs(errors[t - 1] - error) <= 10 * tol * error
            if violations[t - 1] <= tol * violations[0] and settled:
                return t
        rose = any(errors[i] - errors[i - 1] > 10 * tol * errors[i] for i in range(max(1, t - 2), t + 1))
        if t < 3 or error > errors[t - 1] or rose:
            continue
        pace = (errors[t - 3] - error) / 3
        if max(pace, 0.0) * min(t, max_iter - t) <= tol * error:
            return t
    return None


@pytest.mark.parametrize(
    "solver, beta, extrapolate", [("cd", 2.0, False), ("cd", 2.0, True), ("mu", 2.0, False), ("mu", 1.0, False)]
)
def test_stops_before_max_iter_where_the_documented_rule_fires(solver, beta, extrapolate, make_factors):
    """Rank-2 data plus noise: the error levels off at the noise, and the fit stops at
    the first iteration where the documented rule holds, without a warning; a rule that
    fires on a loss known one pass late returns the iterate it fired on."""
    W_true, H_true = make_factors(M, N, 2, seed=12)
    X = W_true @ H_true + 0.3 * np.abs(np.random.RandomState(12).standard_normal((M, N)))
    tol, max_iter = 1e-2, 200
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        result = fit(
            X,
            2,
            solver=solver,
            beta_loss=beta,
            init="nndsvda",
            random_state=0,
            max_iter=max_iter,
            tol=tol,
            extrapolate=extrapolate,
        )
    assert result.converged
    assert result.n_iter < max_iter
    errors = np.sqrt(2 * np.asarray(result.loss_history))
    assert len(errors) == result.n_iter + 1
    assert len(result.violations) == (result.n_iter if solver == "cd" else 0)
    assert _documented_stop(solver, errors, result.violations, tol, max_iter, extrapolate) == result.n_iter
