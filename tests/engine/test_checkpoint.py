"""Checkpoints: exact resume, atomic replacement, pruning, refusal of a mismatch.

Everything here runs the real driver on Dask's threaded scheduler and real Zarr files;
the process-level crash (kill -9 of ``dnmf fit``) is in ``cli/test_cli.py``.
"""

from __future__ import annotations

import os
import tempfile

import dask
import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnmf.api import Checkpointing, run
from dnmf.engine.checkpoint import (
    CURRENT,
    DEFAULT_EVERY,
    ZarrCheckpointer,
    has_checkpoint,
    load_checkpoint,
    result_params,
)
from dnmf.engine.driver import to_numpy
from dnmf.engine.state import LoopState
from dnmf.errors import CheckpointMismatch
from dnmf.io.generate import generate
from dnmf.io.storage import as_panels, open_matrix, save_csr

K = 4
BASE = dict(n_components=K, init="random", random_state=0, tol=0.0, panel_rows=40)


def _matrix(m=150, n=30, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return (rng.random((m, K)) @ rng.random((K, n)) + 0.1 * rng.random((m, n))).astype(dtype)


def _fit(X, params, directory=None, every=None, **kwargs):
    """A fit, checkpointed (and resumed, when the directory matches) if ``directory`` is given."""
    if directory is None:
        return run(X, params)
    return run(X, params, checkpointing=Checkpointing(directory, every=every, **kwargs))


def _checkpointer(directory, X, params, **kwargs):
    """The checkpointer of a fit of X (wrapped in panels as the fit wraps it)."""
    return ZarrCheckpointer(directory, as_panels(X, panel_rows=params.get("panel_rows")), params, **kwargs)


def _assert_same_fit(resumed, straight):
    """Bit for bit: a checkpoint changes nothing."""
    assert resumed.n_iter == straight.n_iter
    np.testing.assert_array_equal(to_numpy(resumed.W), to_numpy(straight.W))
    np.testing.assert_array_equal(resumed.H, straight.H)
    assert list(resumed.loss_history) == list(straight.loss_history)


def _state(iteration, m=150, n=30, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed + iteration)
    W = da.from_array(rng.random((m, K)).astype(dtype), chunks=(40, K))
    return LoopState(iteration, W, rng.random((K, n)).astype(dtype), tuple(rng.random(iteration + 1)))


def _checkpoint_dirs(directory):
    return sorted(name for name in os.listdir(directory) if name.startswith("ckpt-"))


# ------------------------------------------------------------------ exact resume


@pytest.mark.parametrize(
    "case",
    [
        dict(kind="dense", params={}),
        dict(kind="sparse", params={}),
        dict(kind="dense", params=dict(solver="mu", beta_loss="kullback-leibler")),
        dict(kind="dense", params=dict(alpha_W=0.01, l1_ratio=0.5, inner_sweeps=2)),
        dict(kind="float32", params={}),
    ],
    ids=["hals", "sparse", "mu-kl", "penalties", "float32"],
)
def test_k_iterations_then_resume_k_more_equals_2k(tmp_path, case):
    X = _matrix(dtype=np.float32 if case["kind"] == "float32" else np.float64)
    if case["kind"] == "sparse":
        X[X < np.quantile(X, 0.6)] = 0
        X = sp.csr_matrix(X)
    k = 6
    params = {**BASE, **case["params"]}
    straight = _fit(X, {**params, "max_iter": 2 * k})
    first = _fit(X, {**params, "max_iter": k}, tmp_path / "run.ckpt", every=100)  # saves the final state only
    assert first.n_iter == k
    state, metadata = load_checkpoint(tmp_path / "run.ckpt")
    assert (state.iteration, metadata["finished"]) == (k, False)
    resumed = _fit(X, {**params, "max_iter": 2 * k}, tmp_path / "run.ckpt", every=100)
    _assert_same_fit(resumed, straight)


def test_resume_from_zarr_and_csr_group_inputs(tmp_path):
    dense = tmp_path / "v.zarr"
    generate(dense, (120, 25), 3, chunk_rows=30, dtype="float64", seed=1)
    sparse = tmp_path / "s.zarr"
    save_csr(sp.csr_matrix(open_matrix(dense)[:] * (open_matrix(dense)[:] > 1.0)), sparse)
    for source in (open_matrix(dense), open_matrix(sparse)):
        params = {**BASE, "panel_rows": 30}
        straight = _fit(source, {**params, "max_iter": 8})
        directory = tmp_path / f"{type(source).__name__}.ckpt"
        _fit(source, {**params, "max_iter": 3}, directory, every=1)
        _assert_same_fit(_fit(source, {**params, "max_iter": 8}, directory, every=1), straight)


def test_finished_checkpoint_runs_no_more_iterations(tmp_path):
    X = _matrix()
    params = {**BASE, "tol": 0.5, "max_iter": 100}  # a huge tol: the stopping rule fires early
    first = _fit(X, params, tmp_path / "c", every=1)
    state, metadata = load_checkpoint(tmp_path / "c")
    assert metadata["finished"] and state.iteration == first.n_iter < 100
    again = _fit(X, params, tmp_path / "c", every=1)
    assert again.n_iter == first.n_iter
    np.testing.assert_array_equal(again.H, first.H)


def test_max_iter_may_change_on_resume_and_counts_all_iterations(tmp_path):
    X = _matrix()
    _fit(X, {**BASE, "max_iter": 4}, tmp_path / "c", every=2)
    resumed = _fit(X, {**BASE, "max_iter": 9}, tmp_path / "c", every=2)
    assert resumed.n_iter == 9
    assert len(resumed.loss_history) == 10


# ---------------------------------------------------------- layout and atomicity


def test_layout_and_metadata(tmp_path):
    X = _matrix()
    _fit(X, {**BASE, "max_iter": 4, "alpha_W": 0.0}, tmp_path / "c", every=2, run_info={"note": "x"})
    assert (tmp_path / "c" / CURRENT).read_text().strip() == "ckpt-000004"
    state, metadata = load_checkpoint(tmp_path / "c")
    assert metadata["iteration"] == 4 and len(state.loss_history) == 5
    assert metadata["fingerprint"]["shape"] == [150, 30]
    assert metadata["fingerprint"]["panel_rows"] == [38, 38, 37, 37]
    assert metadata["params"] == result_params({**BASE, "max_iter": 4})
    assert "max_iter" not in metadata["params"] and metadata["all_params"]["max_iter"] == 4
    assert metadata["rng"]["random_state"] == 0
    assert metadata["run"] == {"note": "x"}
    assert metadata["checkpoints"] == ["ckpt-000002", "ckpt-000004"]
    assert state.W.dtype == np.float64 and state.W.shape == (150, K)


def _boom():
    raise OSError("disk full")


def test_a_crashed_save_leaves_the_last_good_checkpoint_current(tmp_path):
    directory = tmp_path / "c"
    X = _matrix()
    checkpointer = _checkpointer(directory, X, BASE, every=1)
    checkpointer.save(_state(2))
    checkpointer.save(_state(4))
    broken = LoopState(6, da.from_delayed(dask.delayed(_boom)(), shape=(150, K), dtype=float), _state(6).H, (1.0,))
    with pytest.raises(OSError, match="disk full"):
        checkpointer.save(broken)
    assert "ckpt-000006" in _checkpoint_dirs(directory)  # written in part, never made current
    state, _ = load_checkpoint(directory)
    assert state.iteration == 4
    np.testing.assert_array_equal(state.H, _state(4).H)
    np.testing.assert_array_equal(state.W.compute(), _state(4).W.compute())
    checkpointer.save(_state(8))  # the next save removes the debris
    assert _checkpoint_dirs(directory) == ["ckpt-000004", "ckpt-000008"]


def test_a_directory_without_completed_pointer_is_ignored(tmp_path):
    directory = tmp_path / "c"
    X = _matrix()
    _checkpointer(directory, X, BASE).save(_state(3))
    (directory / "ckpt-000099").mkdir()  # a newer, unfinished checkpoint
    (directory / f"{CURRENT}.tmp-12345").write_text("ckpt-000099\n")  # its pointer never renamed
    state, _ = load_checkpoint(directory)
    assert state.iteration == 3
    fresh = tmp_path / "fresh"
    (fresh / "ckpt-000005").mkdir(parents=True)  # debris of a first save that crashed
    assert not has_checkpoint(fresh)
    assert _checkpointer(fresh, X, BASE).resume_state() is None


def test_pruning_keeps_the_last_two(tmp_path):
    X = _matrix()
    checkpointer = _checkpointer(tmp_path / "c", X, BASE)
    for iteration in (1, 2, 3, 4, 5):
        checkpointer.save(_state(iteration))
    assert _checkpoint_dirs(tmp_path / "c") == ["ckpt-000004", "ckpt-000005"]
    three = _checkpointer(tmp_path / "d", X, BASE, keep=3)
    for iteration in (1, 2, 3, 4):
        three.save(_state(iteration))
    assert _checkpoint_dirs(tmp_path / "d") == ["ckpt-000002", "ckpt-000003", "ckpt-000004"]


def test_saving_the_current_iteration_again_never_overwrites_it(tmp_path):
    checkpointer = _checkpointer(tmp_path / "c", _matrix(), BASE)
    checkpointer.save(_state(3))
    checkpointer.save(_state(3, seed=1))
    assert (tmp_path / "c" / CURRENT).read_text().strip() == "ckpt-000003-1"
    np.testing.assert_array_equal(load_checkpoint(tmp_path / "c")[0].H, _state(3, seed=1).H)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    m=st.integers(1, 60),
    n=st.integers(1, 12),
    iteration=st.integers(0, 10**6),
    dtype=st.sampled_from([np.float32, np.float64]),
    finished=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_checkpoints_round_trip(m, n, iteration, dtype, finished, seed):
    rng = np.random.default_rng(seed)
    W = rng.random((m, K)).astype(dtype)
    H = rng.random((K, n)).astype(dtype)
    history = tuple(float(x) for x in rng.random(rng.integers(0, 5)) * 10.0 ** rng.integers(-300, 300))
    with tempfile.TemporaryDirectory() as temp:
        checkpointer = _checkpointer(os.path.join(temp, "c"), np.ones((m, n), dtype), {**BASE, "panel_rows": 7})
        checkpointer.save(LoopState(iteration, da.from_array(W, chunks=(7, K)), H, history, finished))
        state, metadata = load_checkpoint(os.path.join(temp, "c"))
        assert (state.iteration, state.finished, state.loss_history) == (iteration, finished, history)
        assert state.W.dtype == dtype and state.H.dtype == dtype
        np.testing.assert_array_equal(state.W.compute(), W)
        np.testing.assert_array_equal(state.H, H)


# ------------------------------------------------------------- refusing to resume


@pytest.fixture
def saved(tmp_path):
    """A checkpoint of a 4-iteration fit of ``_matrix()`` with BASE parameters."""
    _fit(_matrix(), {**BASE, "max_iter": 4}, tmp_path / "c", every=2)
    return tmp_path / "c"


@pytest.mark.parametrize(
    "X, params, message",
    [
        (_matrix(m=151), {}, r"it was written for another matrix \(shape: checkpoint \[150, 30\], now \[151, 30\]\)$"),
        (_matrix(dtype=np.float32), {}, r"dtype: checkpoint 'float64', now 'float32'"),
        (_matrix() * 2, {}, r"content: sampled rows \[0, .*\] differ"),
        (sp.csr_matrix(_matrix()), {}, r"sparse: checkpoint False, now True"),
        (
            _matrix(),
            {"panel_rows": 50},
            r"row chunking: checkpoint 4 panels of up to 38 rows, now 3 panels of up to 50",
        ),
        (
            _matrix(),
            {"alpha_W": 0.1},
            r"parameters differ \(alpha_H: checkpoint 0\.0, now 0\.1; alpha_W: checkpoint 0\.0",
        ),
        (_matrix(), {"random_state": 1}, r"random_state: checkpoint 0, now 1"),
        (_matrix(), {"solver": "mu"}, r"solver: checkpoint 'cd', now 'mu'"),
    ],
    ids=["shape", "dtype", "content", "sparsity", "chunking", "penalty", "seed", "solver"],
)
def test_resume_refuses_another_matrix_or_parameters(saved, X, params, message):
    with pytest.raises(CheckpointMismatch, match="cannot resume from .*ckpt-000004: .*" + message):
        _fit(X, {**BASE, **params}, saved)


def test_equivalent_spellings_and_max_iter_resume(saved):
    params = {**BASE, "solver": "hals", "beta_loss": 2.0, "alpha_H": 0.0, "max_iter": 50}
    assert _checkpointer(saved, _matrix(), params).resume_state().iteration == 4


def test_bad_directories_and_arguments(tmp_path):
    X = _matrix()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("x")
    with pytest.raises(ValueError, match="not a dnmf checkpoint directory"):
        _checkpointer(tmp_path / "notes", X, BASE)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        _checkpointer(tmp_path / "file", X, BASE)
    with pytest.raises(FileNotFoundError, match="no completed checkpoint"):
        load_checkpoint(tmp_path / "notes")
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "missing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / CURRENT).write_text("../etc\n")
    with pytest.raises(ValueError, match="damaged"):
        load_checkpoint(tmp_path / "bad")
    with pytest.raises(ValueError, match="checkpoint_every must be a positive integer, got 0"):
        _checkpointer(tmp_path / "x", X, BASE, every=0)
    with pytest.raises(ValueError, match="max_iter must be >= 1"):
        _checkpointer(tmp_path / "x", X, {**BASE, "max_iter": 0})


def test_due_every_and_seconds(tmp_path):
    X = _matrix()
    assert _checkpointer(tmp_path / "a", X, BASE).every == DEFAULT_EVERY
    every = _checkpointer(tmp_path / "a", X, BASE, every=3)
    assert [i for i in range(1, 10) if every.due(i)] == [3, 6, 9]
    timed = _checkpointer(tmp_path / "b", X, BASE, seconds=1e-9)
    assert timed.every is None and all(timed.due(i) for i in range(1, 4))
