"""Bad input: one table of cases, run through the API and through the CLI.

Every case gives, from the API (``dnmf.NMF.fit`` and ``non_negative_factorization``, on
in-memory data and on stored files), a ``ValueError``, ``TypeError`` or
``FileNotFoundError`` (``FileExistsError`` for an existing OUT) whose message names the
bad value; from the CLI, exit status 2 and exactly one line on stderr, starting with
``error:`` and naming it (a traceback only with ``-v``).

Data safety: every input file of the table lives under one directory whose files are
hashed (SHA-256 of each file, and the set of files) before the first case; after each
case the hashes must be the same. Caller's in-memory arrays must be unchanged too.

The CLI cases run in this process through :func:`dnmf.cli.main` (the console script's
entry point) with file-descriptor capture, so stray log lines of an embedded cluster
would be seen; a few run as real ``python -m dnmf.cli`` processes as well.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import zarr

from dnmf import NMF, non_negative_factorization
from dnmf.api import Checkpointing, run
from dnmf.cli import main
from dnmf.io.results import write_fit
from dnmf.io.storage import save_csr

M, N = 30, 10
#: Seconds a CLI process may take.
CLI_TIMEOUT = 120
#: The ``dnmf`` console script (its entry point, :func:`dnmf.cli.main`) in a new process.
DNMF = (sys.executable, "-c", "import sys; from dnmf.cli import main; sys.exit(main())")


# ---------------------------------------------------------------------------- inputs


def _good(seed=0):
    return np.abs(np.random.RandomState(seed).standard_normal((M, N))) + 0.01


def _with(value, at=(3, 3), seed=0):
    X = _good(seed)
    X[at] = value
    return X


#: In-memory versions of the data cases (built afresh for every case).
ARRAYS = {
    "good": _good,
    "negative": lambda: _with(-2.0),
    "nan": lambda: _with(np.nan),
    "inf": lambda: _with(np.inf),
    "minus-inf": lambda: _with(-np.inf),
    "zeros": lambda: _with(0.0),
    "empty-rows": lambda: np.zeros((0, N)),
    "empty-columns": lambda: np.zeros((M, 0)),
    "1d": lambda: np.ones(N),
    "3d": lambda: np.ones((2, 3, 4)),
    "boolean": lambda: _good() > 1,
    "complex": lambda: _good().astype(complex),
    "text": lambda: np.array([["a", "b"], ["c", "d"]]),
    "object": lambda: np.array([[1.0, "x"], [2.0, 3.0]], dtype=object),
}


def _write_inputs(root):
    """Every stored input of the table under ``root``; returns ``{name: path}``."""
    paths = {}

    def dense(name, X, chunks=None):
        paths[name] = root / f"{name}.zarr"
        zarr.create_array(str(paths[name]), data=X, chunks=chunks or tuple(max(1, s) for s in X.shape))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr: fixed-length strings have no v3 spec yet
        for name in ("good", "negative", "nan", "inf", "minus-inf", "zeros", "1d", "3d", "boolean", "complex", "text"):
            dense(name, ARRAYS[name]())
        paths["other"] = root / "other.zarr"
        zarr.create_array(str(paths["other"]), data=_good(seed=1), chunks=(10, N))
        for name, shape in (("empty-rows", (0, N)), ("empty-columns", (M, 0))):
            paths[name] = root / f"{name}.zarr"
            zarr.create_array(str(paths[name]), shape=shape, dtype="f8", chunks=(10, 10))
    sparse = sp.csr_matrix(_good() * (_good() > 1))
    for name in ("csr-decreasing", "csr-bad-end"):
        paths[name] = root / f"{name}.zarr"
        save_csr(sparse, paths[name], chunk_entries=16)
        group = zarr.open_group(str(paths[name]), mode="r+")
        indptr = group["indptr"][:]
        if name == "csr-decreasing":
            indptr[5] = indptr[6] + 3  # row 5 ends after row 6 starts
        else:
            indptr[-1] += 5  # ends beyond nnz
        group["indptr"][:] = indptr
    paths["npy-3d"] = root / "three.npy"
    np.save(paths["npy-3d"], np.ones((2, 3, 4)))
    paths["npy-object"] = root / "object.npy"
    np.save(paths["npy-object"], ARRAYS["object"](), allow_pickle=True)
    paths["text-file"] = root / "notes.txt"
    paths["text-file"].write_text("not a matrix\n")
    paths["plain-directory"] = root / "plain"
    paths["plain-directory"].mkdir()
    (paths["plain-directory"] / "readme.txt").write_text("x\n")
    paths["group-not-csr"] = root / "group.zarr"
    zarr.open_group(str(paths["group-not-csr"]), mode="w").attrs["format"] = "coo"
    paths["unknown-key.yaml"] = root / "unknown-key.yaml"
    paths["unknown-key.yaml"].write_text("rank: 2\nlearning-rate: 0.1\n")
    # a checkpoint of "good", to be refused for "other"
    paths["checkpoint"] = root / "good.ckpt"
    params = dict(n_components=2, init="random", random_state=0, tol=0.0, max_iter=2)
    run(str(paths["good"]), params, checkpointing=Checkpointing(paths["checkpoint"], every=1))
    paths["missing"] = root / "nowhere" / "missing.zarr"
    return paths


def _tree_hashes(root):
    """``{relative path: sha256}`` of every file under ``root``."""
    hashes = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = Path(folder, name)
            hashes[path.relative_to(root).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """``(paths, hashes before any case)``."""
    root = tmp_path_factory.mktemp("bad-input") / "inputs"
    root.mkdir()
    paths = _write_inputs(root)
    return paths, root, _tree_hashes(root)


@pytest.fixture
def untouched(inputs):
    """Yields the paths; afterwards, asserts that no input file changed, appeared or vanished."""
    paths, root, before = inputs
    yield paths
    assert _tree_hashes(root) == before


# ------------------------------------------------------------------------ the table
#
# Each case: id, the input (a name of ARRAYS / of the stored inputs), parameters, the
# exception, a regex its message must match (the bad value), and the CLI arguments after
# the input path (None: the case has no CLI form; the CLI adds --out and runs on threads).

E = pytest.param
DATA_CASES = [
    E("negative", {}, ValueError, r"Negative values .*minimum is -2\.0", id="negative"),
    E("nan", {}, ValueError, r"NaN", id="nan"),
    E("inf", {}, ValueError, r"infinity", id="inf"),
    E("minus-inf", {}, ValueError, r"infinity", id="minus-inf"),
    E("empty-rows", {}, ValueError, r"\(0, 10\)|shape=\(0, 10\)", id="empty-rows"),
    E("empty-columns", {}, ValueError, r"\(30, 0\)", id="empty-columns"),
    E("1d", {}, ValueError, r"1-D|1D", id="1d"),
    E("3d", {}, ValueError, r"3-D|dim 3", id="3d"),
    E("boolean", {}, TypeError, r"boolean dtype bool", id="boolean"),
    E("complex", {}, ValueError, r"Complex data not supported: .*complex128", id="complex"),
    E("text", {}, TypeError, r"string dtype <U1", id="text"),
    E(
        "zeros",
        {"solver": "mu", "beta_loss": "itakura-saito"},
        ValueError,
        r"When beta_loss <= 0 and X contains zeros, the solver may diverge.*\(X has 1 zeros; beta_loss=0\.0\)",
        id="itakura-saito-with-zeros",
    ),
    E(
        "zeros",
        {"solver": "mu", "beta_loss": -0.5},
        ValueError,
        r"contains zeros.*beta_loss=-0\.5",
        id="beta-negative-zeros",
    ),
]

PARAM_CASES = [  # id, parameters, exception, its message in Python, the CLI arguments, its message on the CLI
    E(
        {"n_components": 0},
        ValueError,
        r"n_components must be >= 1, got 0",
        ["--rank", 0],
        r"--rank must be >= 1, got 0",
        id="rank-0",
    ),
    E(
        {"n_components": -3},
        ValueError,
        r"n_components must be >= 1, got -3",
        ["--rank", -3],
        r"--rank must be >= 1, got -3",
        id="rank-negative",
    ),
    E(
        {"n_components": 1.5},
        TypeError,
        r"n_components must be an integer, got 1\.5",
        ["--rank", 1.5],
        r"--rank must be an integer, got 1\.5",
        id="rank-float",
    ),
    E(
        {"n_components": "two"},
        TypeError,
        r"n_components must be an integer, got 'two'",
        ["--rank", "two"],
        r"--rank must be an integer, got 'two'",
        id="rank-text",
    ),
    E(
        {"n_components": 11, "init": "nndsvd"},
        ValueError,
        r"init = 'nndsvd' can only be used when n_components <= min\(n_samples, n_features\) \(n_components=11, "
        r".* = 10\); use init='random'",
        ["--rank", 11, "--init", "nndsvd"],
        r"--init nndsvd can only be used when --rank <= min\(n_samples, n_features\) \(--rank 11, .* = 10\); "
        r"use --init random",
        id="rank-too-large-for-nndsvd",
    ),
    E(
        {"solver": "als"},
        ValueError,
        r"solver must be one of .*got 'als'",
        ["--solver", "als"],
        r"--solver must be one of .*got 'als'",
        id="solver",
    ),
    E(
        {"init": "pca"},
        ValueError,
        r"init must be one of .*got 'pca'",
        ["--init", "pca"],
        r"--init must be one of .*got 'pca'",
        id="init",
    ),
    E(
        {"solver": "mu", "beta_loss": "poisson"},
        ValueError,
        r"beta_loss must be one of .*got 'poisson'",
        ["--solver", "mu", "--beta-loss", "poisson"],
        r"--beta-loss must be one of .*got 'poisson'",
        id="beta-name",
    ),
    E(
        {"beta_loss": "kullback-leibler"},
        ValueError,
        r"solver 'cd' does not handle beta_loss = 'kullback-leibler'",
        ["--beta-loss", "kullback-leibler"],
        r"--solver cd does not handle --beta-loss kullback-leibler; use --solver mu",
        id="kl-asked-of-cd",
    ),
    E(
        {"beta_loss": 0.5},
        ValueError,
        r"solver 'cd' does not handle beta_loss = 0\.5",
        ["--beta-loss", 0.5],
        r"--solver cd does not handle --beta-loss 0\.5",
        id="beta-float-asked-of-cd",
    ),
    E(
        {"max_iter": 0},
        ValueError,
        r"max_iter must be >= 1, got 0",
        ["--max-iter", 0],
        r"--max-iter must be >= 1, got 0",
        id="max-iter",
    ),
    E(
        {"tol": -1.0},
        ValueError,
        r"tol must be >= 0, got -1\.0",
        ["--tol", -1.0],
        r"--tol must be >= 0, got -1\.0",
        id="tol",
    ),
    E(
        {"alpha_W": -0.1},
        ValueError,
        r"alpha_W must be >= 0, got -0\.1",
        ["--alpha-w", -0.1],
        r"--alpha-w must be >= 0, got -0\.1",
        id="alpha",
    ),
    E(
        {"l1_ratio": 2},
        ValueError,
        r"l1_ratio must be <= 1, got 2",
        ["--l1-ratio", 2],
        r"--l1-ratio must be <= 1, got 2",
        id="l1-ratio",
    ),
]

CUSTOM_CASES = [
    E(
        np.ones((M - 1, 2)),
        np.ones((2, N)),
        r"Array with wrong first dimension passed to NMF \(input W\)\. Expected 30, but got 29\.",
        id="W-shape",
    ),
    E(
        np.ones((M, 2)),
        np.ones((2, N + 1)),
        r"Array with wrong second dimension passed to NMF \(input H\)\. Expected 10, but got 11\.",
        id="H-shape",
    ),
    E(-np.ones((M, 2)), np.ones((2, N)), r"Negative values in data passed to NMF \(input W\)", id="W-negative"),
    E(np.ones((M, 2)), -np.ones((2, N)), r"Negative values in data passed to NMF \(input H\)", id="H-negative"),
    E(np.ones((M, 2)), np.full((2, N), np.nan), r"Input contains NaN", id="H-nan"),
]

PATH_CASES = [
    E("missing", FileNotFoundError, r"input not found: .*nowhere/missing\.zarr", id="missing-path"),
    E("text-file", ValueError, r"notes\.txt is not a Zarr array or CSR group", id="text-file"),
    E("plain-directory", ValueError, r"plain is not a Zarr array or CSR group", id="plain-directory"),
    E("group-not-csr", ValueError, r"group\.zarr is not a CSR matrix: attrs\['format'\] is 'coo'", id="group-not-csr"),
    E(
        "csr-decreasing",
        ValueError,
        r"csr-decreasing\.zarr: inconsistent indptr: it decreases at row 5",
        id="csr-indptr-decreasing",
    ),
    E(
        "csr-bad-end",
        ValueError,
        r"csr-bad-end\.zarr: inconsistent indptr: .*ends at \d+, expected 0 and nnz=\d+",
        id="csr-indptr-end",
    ),
    E("npy-3d", ValueError, r"must be 2-D .*3-D shape \(2, 3, 4\)", id="npy-3d"),
    E("npy-object", ValueError, r"object\.npy is not a NumPy \.npy file of numbers", id="npy-object"),
]

BASE = dict(n_components=2, init="random", random_state=0, max_iter=3, tol=0.0)


# ------------------------------------------------------------------------- the API


def _fit(api, X, params, W=None, H=None):
    params = {**BASE, **params}
    if api == "estimator":
        model = NMF(**params)
        return model.fit(X, W=W, H=H) if W is not None or H is not None else model.fit(X)
    return non_negative_factorization(X, W=W, H=H, **params)


@pytest.mark.parametrize("api", ["estimator", "function"])
@pytest.mark.parametrize("name, params, error, message", DATA_CASES)
def test_api_refuses_bad_data_in_memory(untouched, api, name, params, error, message):
    X = ARRAYS[name]()
    before = X.copy()
    with pytest.raises(error, match=message):
        _fit(api, X, params)
    np.testing.assert_array_equal(X, before)  # the caller's array is never modified


@pytest.mark.parametrize("api", ["estimator", "function"])
@pytest.mark.parametrize("name, params, error, message", DATA_CASES)
def test_api_refuses_bad_stored_data(untouched, api, name, params, error, message):
    with pytest.raises(error, match=message):
        _fit(api, str(untouched[name]), params)


@pytest.mark.parametrize("api", ["estimator", "function"])
def test_api_refuses_non_numeric_objects(api):
    with pytest.raises((TypeError, ValueError), match=r"'x'"):
        _fit(api, ARRAYS["object"](), {})


@pytest.mark.parametrize("api", ["estimator", "function"])
@pytest.mark.parametrize("params, error, message, cli, cli_message", PARAM_CASES)
def test_api_refuses_bad_parameters(untouched, api, params, error, message, cli, cli_message):
    with pytest.raises(error, match=message):
        _fit(api, ARRAYS["good"](), params)
    with pytest.raises(error, match=message):
        _fit(api, str(untouched["good"]), params)


@pytest.mark.parametrize("api", ["estimator", "function"])
@pytest.mark.parametrize("W, H, message", CUSTOM_CASES)
def test_api_refuses_bad_custom_factors(untouched, api, W, H, message):
    W_before, H_before = W.copy(), H.copy()
    for X in (ARRAYS["good"](), str(untouched["good"])):
        with pytest.raises(ValueError, match=message):
            _fit(api, X, {"init": "custom"}, W=W, H=H)
    np.testing.assert_array_equal(W, W_before)
    np.testing.assert_array_equal(H, H_before)


@pytest.mark.parametrize("api", ["estimator", "function"])
@pytest.mark.parametrize("name, error, message", PATH_CASES)
def test_api_refuses_bad_paths(untouched, api, name, error, message):
    with pytest.raises(error, match=message):
        _fit(api, str(untouched[name]), {})


def test_api_refuses_unknown_parameters_and_an_existing_out(untouched, tmp_path):
    with pytest.raises(TypeError, match=r"unknown parameter\(s\) \['learning_rate'\]"):
        run(ARRAYS["good"](), {**BASE, "learning_rate": 0.1})
    result = run(ARRAYS["good"](), BASE)
    (tmp_path / "taken.zarr").mkdir()
    with pytest.raises(FileExistsError, match=r"taken\.zarr already exists; pass --overwrite \(overwrite=True\)"):
        write_fit(tmp_path / "taken.zarr", result, BASE)
    assert os.listdir(tmp_path / "taken.zarr") == []


def test_api_refuses_a_checkpoint_of_another_matrix(untouched):
    model = NMF(**{**BASE, "max_iter": 4}, checkpoint=untouched["checkpoint"], checkpoint_every=1)
    with pytest.raises(ValueError, match=r"cannot resume from .*good\.ckpt.*another matrix \(content: sampled rows"):
        model.fit(str(untouched["other"]))


def test_kullback_leibler_with_zeros_is_fitted_as_scikit_learn_does(untouched):
    """scikit-learn refuses zeros only for beta <= 0; KL with zeros fits (finite factors)."""
    from sklearn.decomposition import NMF as SklearnNMF

    X = ARRAYS["zeros"]()
    X[X < 0.5] = 0  # a third of the entries
    W0, H0 = np.full((M, 2), 0.5) + np.arange(M)[:, None] / M, np.full((2, N), 0.5) + np.arange(N) / N
    params = dict(n_components=2, init="custom", solver="mu", beta_loss="kullback-leibler", max_iter=20, tol=0)
    ours = NMF(**params).fit(X, W=W0, H=H0)
    reference = SklearnNMF(**params).fit(X, W=W0.copy(), H=H0.copy())
    assert np.all(np.isfinite(ours.components_)) and ours.components_.min() >= 0
    np.testing.assert_allclose(ours.components_, reference.components_, rtol=1e-9)


# ------------------------------------------------------------------------- the CLI


def _call(capfd, *args):
    """``dnmf ARGS`` in this process: ``(status, stderr)`` with fd-level capture."""
    status = main([str(a) for a in args])
    _, err = capfd.readouterr()
    return status, err


def _assert_one_error_line(status, err, message):
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert re.search(message, lines[0]), (message, lines[0])


#: Where the CLI cases run: one worker thread of an embedded cluster (starts at once).
THREADS = ("--workers", 1, "--threads")


def _fit_args(path, tmp_path, *extra, where=THREADS):
    return [
        "fit",
        path,
        "--rank",
        2,
        "--max-iter",
        3,
        "--tol",
        0,
        "--seed",
        0,
        "--init",
        "random",
        "--out",
        tmp_path / "out.zarr",
        *where,
        "--quiet",
        *extra,
    ]


@pytest.mark.parametrize("name, params, error, message", DATA_CASES)
def test_cli_refuses_bad_data(untouched, capfd, tmp_path, name, params, error, message):
    extra = []
    for key, value in params.items():
        extra += [f"--{key.replace('_', '-')}", value]
    status, err = _call(capfd, *_fit_args(untouched[name], tmp_path, *extra))
    _assert_one_error_line(status, err, message)
    assert not (tmp_path / "out.zarr").exists()


@pytest.mark.parametrize("params, error, message, cli, cli_message", PARAM_CASES)
def test_cli_refuses_bad_parameters(untouched, capfd, tmp_path, params, error, message, cli, cli_message):
    """The same bad values on the command line: the message names the flag typed."""
    args = _fit_args(untouched["good"], tmp_path)
    rank = args.index("--rank")
    del args[rank : rank + 2]  # the case's own --rank, if any, or the default one below
    if "--rank" not in cli:
        cli = ["--rank", 2, *cli]
    status, err = _call(capfd, *args, *cli)
    _assert_one_error_line(status, err, cli_message)


@pytest.mark.parametrize("name, error, message", PATH_CASES)
def test_cli_refuses_bad_paths(untouched, capfd, tmp_path, name, error, message):
    status, err = _call(capfd, *_fit_args(untouched[name], tmp_path))
    _assert_one_error_line(status, err, message)


def test_cli_refuses_custom_init_an_existing_out_an_unknown_key_and_another_matrix(untouched, capfd, tmp_path):
    status, err = _call(capfd, *_fit_args(untouched["good"], tmp_path, "--init", "custom"))
    _assert_one_error_line(status, err, r"--init custom needs initial W and H, which the command line cannot pass")

    (tmp_path / "out.zarr").mkdir()
    (tmp_path / "out.zarr" / "mine.txt").write_text("keep me\n")
    status, err = _call(capfd, *_fit_args(untouched["good"], tmp_path))
    _assert_one_error_line(status, err, r"out\.zarr already exists; pass --overwrite")
    assert (tmp_path / "out.zarr" / "mine.txt").read_text() == "keep me\n"

    status, err = _call(capfd, *_fit_args(untouched["good"], tmp_path, "--config", untouched["unknown-key.yaml"]))
    _assert_one_error_line(status, err, r"unknown key\(s\) learning-rate in .*unknown-key\.yaml; valid keys: ")

    status, err = _call(
        capfd,
        "fit",
        untouched["other"],
        "--rank",
        2,
        "--max-iter",
        3,
        "--tol",
        0,
        "--seed",
        0,
        "--init",
        "random",
        "--out",
        tmp_path / "o2.zarr",
        "--checkpoint",
        untouched["checkpoint"],
        "--workers",
        1,
        "--threads",
        "--quiet",
    )
    _assert_one_error_line(
        status, err, r"cannot resume from .*good\.ckpt/ckpt-000002: it was written for another matrix"
    )
    assert not (tmp_path / "o2.zarr").exists()

    status, err = _call(capfd, "resume", untouched["checkpoint"], "--from", "ckpt-000099", "--quiet")
    _assert_one_error_line(
        status, err, r"good\.ckpt holds no checkpoint 'ckpt-000099' \(it holds \['ckpt-000001', 'ckpt-000002'\]\)"
    )


def test_cli_in_real_processes_one_line_and_a_traceback_only_with_verbose(untouched, tmp_path):
    """Two `dnmf fit` processes at once: an error found by the statistics pass of an embedded
    cluster with a worker process (whose log lines must not reach stderr), and, with -v, an
    error found before the cluster starts (the traceback, then the error line last)."""
    cases = [
        (
            _fit_args(untouched["negative"], tmp_path, where=("--workers", 1)),
            r"^error: \S+negative\S*: Negative values in data passed to NMF \(input minimum is -2\.0\)$",
        ),
        ([*_fit_args(untouched["missing"], tmp_path), "-v"], None),
    ]
    processes = [
        subprocess.Popen([*DNMF, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for args, _ in cases
    ]
    for process, (_, message) in zip(processes, cases):
        _, err = process.communicate(timeout=CLI_TIMEOUT)
        assert process.returncode == 2, err
        lines = err.strip().splitlines()
        if message is None:  # -v: the traceback, then the error line last
            assert "Traceback (most recent call last)" in err, err
            assert lines[-1].startswith("error: input not found: ") and lines[-1].endswith("missing.zarr"), err
        else:
            assert len(lines) == 1, err
            assert re.search(message, lines[0]), (message, lines[0])
