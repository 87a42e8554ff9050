"""The ``dnmf`` command line, run for real.

Jobs that start a cluster (``fit``, ``transform``, ``resume``) run as separate
``python -m dnmf.cli`` processes: on the embedded LocalCluster, and on a real
``dask scheduler`` with two ``dask worker`` processes started here on loopback. The
crash test kills a running ``dnmf fit`` (and its workers) with SIGKILL and resumes it.
Quick commands (``generate``, ``info``, errors, configs) run in this process through
:func:`dnmf.cli.main`, the console script's entry point.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import yaml
import zarr

from dnmf.cli import main
from dnmf.io.storage import open_matrix

#: Seconds any one CLI process may take.
CLI_TIMEOUT = 300
#: The repository's run configs.
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


# ------------------------------------------------------------------------ helpers


def dnmf(*args, check=True, timeout=CLI_TIMEOUT):
    """Run ``dnmf ARGS`` in a new process."""
    process = subprocess.run(
        [sys.executable, "-m", "dnmf.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    if check and process.returncode != 0:
        raise AssertionError(f"dnmf {' '.join(map(str, args))} exited {process.returncode}:\n{process.stderr}")
    return process


def call(capsys, *args):
    """Run ``dnmf ARGS`` in this process: ``(status, stdout, stderr)``."""
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def info(capsys, path):
    status, out, err = call(capsys, "info", path, "--json")
    assert status == 0, err
    return json.loads(out)


def assert_one_error_line(status, err, *fragments):
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def read_factors(path):
    group = zarr.open_group(str(path), mode="r")
    return group["W"][...], group["H"][...], dict(group.attrs)


def relative_error(data, W, H):
    V = open_matrix(data)
    V = V.read_rows(0, V.shape[0]).toarray() if hasattr(V, "read_rows") else V[...]
    return np.linalg.norm(V - W @ H) / np.linalg.norm(V)


def make_input(capsys, tmp_path, kind):
    """Generate a small dense or CSR matrix with ``dnmf generate``; returns its path."""
    path = tmp_path / f"{kind}.zarr"
    extra = ["--density", "0.3"] if kind == "sparse" else ["--chunks", "100"]
    status, out, err = call(
        capsys, "generate", path, "--shape", 600, 80, "--rank", 4, "--dtype", "float64", "--seed", 7, *extra
    )
    assert status == 0, err
    assert f"wrote {path}: 600 x 80 float64" in out
    return path


def round_trip(capsys, tmp_path, kind, *where, checkpoint=False):
    """generate → info → fit → transform → info, with the cluster options ``where``."""
    data = make_input(capsys, tmp_path, kind)
    described = info(capsys, data)
    assert described["shape"] == [600, 80] and described["dtype"] == "float64"
    if kind == "sparse":
        assert described["kind"] == "CSR group (Zarr)" and 0.25 < described["density"] < 0.35
    else:
        assert described["kind"] == "dense Zarr array" and described["chunks"] == [100, 80]
    floor = described["generator"]["noise_floor"]

    out = tmp_path / f"{kind}-model.zarr"
    saving = ["--checkpoint", tmp_path / "run.ckpt", "--checkpoint-every", 5] if checkpoint else []
    fitted = dnmf("fit", data, "--rank", 4, "--max-iter", 15, "--tol", 0, "--seed", 0, "--out", out, *saving, *where)
    assert f"wrote {out}: n_iter=15" in fitted.stdout
    assert "15/15" in fitted.stderr  # the progress bar
    described = info(capsys, out)
    assert described["kind"] == "dnmf fit result" and described["n_iter"] == 15
    assert described["W"] == [600, 4] and described["H"] == [4, 80]
    W, H, attrs = read_factors(out)
    assert W.min() >= 0 and H.min() >= 0
    assert attrs["params"]["n_components"] == 4 and len(attrs["loss_history"]) == 16
    np.testing.assert_allclose(attrs["relative_err"], relative_error(data, W, H), rtol=1e-6)
    if checkpoint:  # W written by the workers
        described = info(capsys, tmp_path / "run.ckpt")
        assert (described["iteration"], described["checkpoints"]) == (15, ["ckpt-000010", "ckpt-000015"])
        np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "run.ckpt" / "ckpt-000015" / "W"))[...], W)
    if kind == "dense":
        assert attrs["relative_err"] < 1.5 * floor  # near the noise: the low-rank part was found

    projected = tmp_path / f"{kind}-W.zarr"
    dnmf("transform", data, "--model", out, "--out", projected, "--max-iter", 100, "--quiet", *where)
    described = info(capsys, projected)
    assert described["kind"] == "dnmf transform result" and described["W"] == [600, 4]
    W_new = zarr.open_array(str(projected / "W"), mode="r")[...]
    np.testing.assert_allclose(described["relative_err"], relative_error(data, W_new, H), rtol=1e-6)
    assert described["relative_err"] <= attrs["relative_err"] * 1.01  # W solved for H beats the fit's W
    return out


# ------------------------------------------------------------- round trips


@pytest.mark.slow
@pytest.mark.parametrize("kind, where", [("dense", ["--workers", 1]), ("sparse", ["--workers", 2, "--threads"])])
def test_round_trip_on_the_embedded_cluster(capsys, tmp_path, kind, where):
    round_trip(capsys, tmp_path, kind, *where)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process):
    """SIGTERM the process group started for ``process`` (its nanny's workers too), then SIGKILL."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    """A real ``dask scheduler`` and two ``dask worker`` processes on loopback; yields the address."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask-cluster")
    address = f"tcp://127.0.0.1:{_free_port()}"
    started = []

    def start(name, *args):
        log = open(logs / f"{name}.log", "w")
        process = subprocess.Popen(
            [sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, cwd=logs, start_new_session=True
        )
        started.append((process, log))

    try:
        start(
            "scheduler",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            address.rsplit(":", 1)[1],
            "--no-dashboard",
        )
        for index in range(2):
            start(
                f"worker-{index}",
                "distributed.cli.dask_worker",
                address,
                "--nthreads",
                "1",
                "--host",
                "127.0.0.1",
                "--no-dashboard",
                "--memory-limit",
                "1GiB",
            )
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:
        for process, log in reversed(started):
            _stop(process)
            log.close()


def _scheduler_state(address):
    from distributed import Client

    with Client(address, timeout="30s") as client:
        workers = len(client.scheduler_info()["workers"])
        prefixes = client.run_on_scheduler(lambda dask_scheduler: sorted(dask_scheduler.task_prefixes))
        deadline = time.monotonic() + 30
        while True:  # the CLI's futures are released once its client is gone
            held = client.run_on_scheduler(
                lambda dask_scheduler: sum(1 for t in dask_scheduler.tasks.values() if t.who_wants)
            )
            if held == 0 or time.monotonic() > deadline:
                return workers, prefixes, held
            time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_round_trip_on_a_dask_scheduler_with_two_workers(capsys, tmp_path, dask_cluster, kind):
    round_trip(capsys, tmp_path, kind, "--scheduler", dask_cluster, checkpoint=True)
    workers, prefixes, held = _scheduler_state(dask_cluster)
    assert workers == 2
    assert "panel_step" in prefixes  # the iterations ran there
    assert held == 0  # and left nothing behind


# ------------------------------------------------------------------- kill -9


def _current_iteration(directory):
    try:
        name = (directory / "CURRENT").read_text().strip()
    except FileNotFoundError:
        return 0
    return int(name.split("-")[1]) if name else 0


@pytest.mark.slow
def test_kill_9_during_fit_then_resume_equals_an_uninterrupted_run(capsys, tmp_path):
    data = tmp_path / "v.zarr"
    status, _, err = call(
        capsys,
        "generate",
        data,
        "--shape",
        2000,
        200,
        "--rank",
        6,
        "--dtype",
        "float64",
        "--chunks",
        250,
        "--seed",
        3,
        "--quiet",
    )
    assert status == 0, err
    options = [
        "--rank",
        6,
        "--max-iter",
        24,
        "--tol",
        0,
        "--seed",
        1,
        "--init",
        "random",
        "--workers",
        2,
        "--threads",
        "--quiet",
    ]
    reference = tmp_path / "reference.zarr"
    dnmf("fit", data, "--out", reference, *options)

    out, directory = tmp_path / "out.zarr", tmp_path / "run.ckpt"
    command = [
        sys.executable,
        "-m",
        "dnmf.cli",
        "fit",
        data,
        "--out",
        out,
        "--checkpoint",
        directory,
        "--checkpoint-every",
        2,
        *options,
    ]
    process = subprocess.Popen(
        [str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + CLI_TIMEOUT
        while _current_iteration(directory) < 4:  # at least two checkpoints written
            assert process.poll() is None, "the fit ended before it could be killed:\n" + process.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)  # the CLI with its embedded cluster
    finally:
        _stop(process)
        process.communicate()
    assert process.returncode == -signal.SIGKILL
    killed_at = _current_iteration(directory)
    assert 4 <= killed_at < 24 and not out.exists()

    described = info(capsys, directory)
    assert described["kind"] == "dnmf checkpoint directory" and described["iteration"] == killed_at
    assert len(described["checkpoints"]) <= 3  # two kept, maybe one half-written

    dnmf("resume", directory, "--workers", 2, "--threads", "--quiet")
    W, H, attrs = read_factors(out)
    W_ref, H_ref, attrs_ref = read_factors(reference)
    assert attrs["n_iter"] == attrs_ref["n_iter"] == 24
    np.testing.assert_allclose(W, W_ref, rtol=1e-9, atol=0)
    np.testing.assert_allclose(H, H_ref, rtol=1e-9, atol=0)
    np.testing.assert_allclose(attrs["loss_history"], attrs_ref["loss_history"], rtol=1e-9)
    assert _current_iteration(directory) == 24


# ------------------------------------------------------------------- configs


def _show(capsys, *args):
    status, out, err = call(capsys, "fit", "in.zarr", *args, "--show-config")
    assert status == 0, err
    return yaml.safe_load(out)


def test_config_file_then_flags(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("rank: 7\nmax-iter: 30\nbeta-loss: kullback-leibler\nsolver: mu\nalpha-w: 0.5\nseed: 3\n")
    resolved = _show(capsys, "--config", config)
    assert (resolved["rank"], resolved["max-iter"], resolved["beta-loss"], resolved["alpha-w"]) == (
        7,
        30,
        "kullback-leibler",
        0.5,
    )
    resolved = _show(capsys, "--config", config, "--max-iter", 5, "--seed", 9, "--alpha-w", "0")
    assert (resolved["rank"], resolved["max-iter"], resolved["seed"], resolved["alpha-w"]) == (7, 5, 9, 0)
    assert resolved["tol"] == 1e-4 and resolved["solver"] == "mu"  # table default; file
    resolved = _show(capsys, "--max-iter", 5, "--config", config)  # flags win wherever they stand
    assert resolved["max-iter"] == 5


def test_config_accepts_every_long_option_name(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("n-components: 3\nrandom-state: 4\nout: x.zarr\nworkers: 1\nthreads: true\ncheckpoint-every: 2\n")
    resolved = _show(capsys, "--config", config)
    assert (resolved["rank"], resolved["seed"], resolved["out"], resolved["threads"]) == (3, 4, "x.zarr", True)


def test_unknown_config_key_lists_the_valid_ones(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("rank: 3\nlearning-rate: 0.1\nmax_iter: 4\n")
    status, _, err = call(capsys, "fit", "in.zarr", "--config", config, "--out", "o.zarr")
    assert_one_error_line(
        status, err, "unknown key(s) learning-rate, max_iter", "valid keys: alpha-h, alpha-w,", "max-iter"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        ("- rank\n- 3\n", "must hold a mapping of option: value, got list"),
        ("rank: [3\n", "is not valid YAML"),
        ("rank: 3\nn-components: 4\n", "sets n_components twice"),
    ],
)
def test_bad_config_files(capsys, tmp_path, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    status, _, err = call(capsys, "fit", "in.zarr", "--config", config, "--out", "o.zarr")
    assert_one_error_line(status, err, message)


@pytest.mark.parametrize("name", ["default.yaml", "cluster.yaml", "topics.yaml"])
def test_shipped_configs_are_valid(capsys, name):
    resolved = _show(capsys, "--config", CONFIGS / name)
    assert resolved["rank"] >= 1
    if name == "cluster.yaml":
        assert resolved["scheduler"].startswith("tcp://") and resolved["checkpoint-every"] >= 1
    if name == "topics.yaml":
        assert (resolved["solver"], resolved["beta-loss"]) == ("mu", "kullback-leibler")


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_numpy_and_scipy_files_as_input(capsys, tmp_path, suffix):
    dense = make_input(capsys, tmp_path, "dense")
    V = open_matrix(dense)[...]
    path = tmp_path / f"v{suffix}"
    if suffix == ".npy":
        np.save(path, V)
    else:
        sp.save_npz(path, sp.csr_matrix(V))
    described = info(capsys, path)
    assert described["shape"] == [600, 80] and described["kind"].startswith("NumPy" if suffix == ".npy" else "SciPy")
    status, _, err = call(
        capsys,
        "fit",
        path,
        "--rank",
        4,
        "--max-iter",
        10,
        "--tol",
        0,
        "--out",
        tmp_path / "o.zarr",
        "--workers",
        1,
        "--threads",
        "--quiet",
    )
    assert status == 0, err
    W, H, attrs = read_factors(tmp_path / "o.zarr")
    np.testing.assert_allclose(attrs["relative_err"], np.linalg.norm(V - W @ H) / np.linalg.norm(V), rtol=1e-6)


def test_extrapolate_from_a_flag_or_a_config_file(capsys, tmp_path):
    data = make_input(capsys, tmp_path, "dense")
    config = tmp_path / "run.yaml"
    config.write_text("extrapolate: true\n")
    assert _show(capsys, "--config", config)["extrapolate"] is True
    assert _show(capsys, "--config", config, "--extrapolate", "false")["extrapolate"] is False
    status, _, err = call(
        capsys,
        "fit",
        data,
        "--rank",
        4,
        "--max-iter",
        10,
        "--tol",
        0,
        "--extrapolate",
        "true",
        "--out",
        tmp_path / "o.zarr",
        "--workers",
        1,
        "--threads",
        "--quiet",
    )
    assert status == 0, err
    W, H, attrs = read_factors(tmp_path / "o.zarr")
    assert attrs["params"]["extrapolate"] is True
    np.testing.assert_allclose(attrs["relative_err"], relative_error(data, W, H), rtol=1e-6)


def test_fit_with_config_and_overrides_writes_what_was_resolved(capsys, tmp_path):
    data = make_input(capsys, tmp_path, "dense")
    config = tmp_path / "run.yaml"
    config.write_text(
        f"rank: 3\nmax-iter: 9\ntol: 0\nalpha-w: 0.001\nthreads: true\nworkers: 1\nout: {tmp_path / 'o.zarr'}\n"
    )
    status, out, err = call(capsys, "fit", data, "--config", config, "--max-iter", 4)
    assert status == 0, err
    _, H, attrs = read_factors(tmp_path / "o.zarr")
    assert attrs["n_iter"] == 4 and H.shape == (3, 80)
    assert (attrs["params"]["max_iter"], attrs["params"]["alpha_W"], attrs["params"]["tol"]) == (4, 0.001, 0)
    assert "warning" not in err  # tol 0: no ConvergenceWarning


# ------------------------------------------------------------------- errors


def test_generate_a_graph_like_a_published_one(capsys, tmp_path):
    """--like gives the published graph's rank (and shape and entries, unless given)."""
    path = tmp_path / "g.zarr"
    status, out, err = call(capsys, "generate", path, "--like", "delicious", "--shape", 2000, 3000, "--nnz", 9000)
    assert status == 0, err
    assert f"wrote {path}: 2000 x 3000 float32 (CSR, nnz=" in out and "a graph of 48 planted communities" in out
    status, out, _ = call(capsys, "info", path, "--json")
    described = json.loads(out)
    assert described["kind"] == "CSR group (Zarr)" and described["generator"]["draws"] == 9000
    assert described["generator"]["rank"] == 48


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["fit", "{tmp}/missing.zarr", "--rank", 2, "--out", "{tmp}/o.zarr"], ["input not found", "missing.zarr"]),
        (["fit", "{dense}", "--rank", 2, "--out", "{tmp}/o.zarr", "--max-iter", 0], ["--max-iter must be >= 1, got 0"]),
        (["fit", "{dense}", "--rank", 0, "--out", "{tmp}/o.zarr"], ["--rank must be >= 1, got 0"]),
        (["fit", "{dense}", "--rank", 2, "--out", "{tmp}/o.zarr", "--tol", -1], ["--tol must be >= 0, got -1"]),
        (["fit", "{dense}", "--rank", 2, "--out", "{tmp}/o.zarr", "--l1-ratio", 2], ["--l1-ratio must be <= 1, got 2"]),
        (
            ["fit", "{dense}", "--rank", 99, "--init", "nndsvd", "--out", "{tmp}/o.zarr"],
            ["--init nndsvd can only be used when --rank <= min(n_samples, n_features)", "use --init random"],
        ),
        (["fit", "{dense}", "--rank", 2, "--out", "{tmp}/o.zarr", "--solver", "als"], ["--solver must be one of"]),
        (
            ["fit", "{dense}", "--rank", 2, "--out", "{tmp}/o.zarr", "--beta-loss", "kullback-leibler"],
            ["--solver cd does not handle --beta-loss kullback-leibler; use --solver mu"],
        ),
        (
            ["fit", "{dense}", "--rank", 2, "--out", "{tmp}/o.zarr", "--extrapolate", "maybe"],
            ["--extrapolate must be true, false or auto, got 'maybe'"],
        ),
        (["fit", "{dense}", "--rank", 2, "--out", "{tmp}/taken"], ["taken already exists", "--overwrite"]),
        (["fit", "{dense}", "--rank", 2, "--out", "{dense}"], ["would write over the input"]),
        (["fit", "{dense}", "--out", "{tmp}/o.zarr"], ["missing option '--rank'", "dnmf fit --help"]),
        (["fit", "{dense}", "--rank", 2], ["missing option '--out'"]),
        (["fit", "{dense}", "--rank", 2, "--out", "{tmp}/o.zarr", "--init", "custom"], ["cannot pass"]),
        (["fit", "{dense}", "--rank", 2, "--out", "{tmp}/o.zarr", "--bogus"], ["No such option '--bogus'"]),
        (["fit", "{tmp}/notes.txt", "--rank", 2, "--out", "{tmp}/o.zarr"], ["is not a Zarr array or CSR group"]),
        (["resume", "{tmp}"], ["holds no completed checkpoint"]),
        (["resume", "{tmp}/nowhere"], ["checkpoint directory not found"]),
        (["transform", "{dense}", "--model", "{dense}", "--out", "{tmp}/w.zarr"], ["is not a dnmf result"]),
        (["info", "{tmp}/nowhere"], ["not found"]),
        (["generate", "{tmp}/g.zarr", "--density", 2], ["density must be in (0, 1], got 2.0"]),
        (["generate", "{tmp}/g.zarr", "--dtype", "int8"], ["'int8' is not one of 'float32', 'float64'"]),
        (["generate", "{tmp}/g.zarr", "--nnz", 100, "--noise", 0.1], ["--noise does not apply to a graph"]),
        (["generate", "{tmp}/g.zarr", "--nnz", 100, "--density", 0.1], ["give --density or --nnz, not both"]),
        (["generate", "{tmp}/g.zarr", "--like", "flickr", "--density", 0.1], ["--like draws a graph"]),
        (["generate", "{tmp}/g.zarr", "--like", "myspace"], ["'myspace' is not one of 'delicious', 'flickr'"]),
    ],
)
def test_bad_input_is_one_error_line_and_exit_2(capsys, tmp_path, args, fragments):
    dense = make_input(capsys, tmp_path, "dense")
    (tmp_path / "taken").mkdir()
    (tmp_path / "notes.txt").write_text("not a matrix")
    before = open_matrix(dense)[...]
    args = [str(a).format(tmp=tmp_path, dense=dense) for a in args]
    status, _, err = call(capsys, *args)
    assert_one_error_line(status, err, *fragments)
    np.testing.assert_array_equal(open_matrix(dense)[...], before)  # the input is never touched


def test_verbose_errors_add_the_traceback(capsys, tmp_path):
    status, _, err = call(capsys, "fit", tmp_path / "missing.zarr", "--rank", 2, "--out", tmp_path / "o.zarr", "-v")
    assert status == 2
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: input not found")


def test_main_leaves_the_logging_set_up_as_it_found_it(capsys, tmp_path, caplog):
    """``main`` called in a running program (a notebook, a test) must not keep logging
    into the stream it was given nor stop the program's own handlers from seeing dnmf's records."""
    import logging

    package = logging.getLogger("dnmf")
    before = package.handlers[:], package.propagate, package.level
    call(capsys, "fit", tmp_path / "missing.zarr", "--rank", 2, "--out", tmp_path / "o.zarr", "-vv")
    assert (package.handlers, package.propagate, package.level) == before
    with caplog.at_level("INFO", logger="dnmf.retries"):
        logging.getLogger("dnmf.retries").info("seen")
    assert [record.getMessage() for record in caplog.records] == ["seen"]


def test_the_console_script_exits_2_with_one_line():
    process = dnmf("fit", "/nonexistent/in.zarr", "--rank", 2, "--out", "/nonexistent/o.zarr", check=False)
    assert process.returncode == 2
    assert process.stderr.strip() == "error: input not found: /nonexistent/in.zarr"


def test_resume_refuses_a_changed_run(capsys, tmp_path):
    data = make_input(capsys, tmp_path, "dense")
    common = ["--rank", 3, "--tol", 0, "--seed", 0, "--workers", 1, "--threads", "--quiet"]
    status, _, err = call(
        capsys,
        "fit",
        data,
        "--out",
        tmp_path / "a.zarr",
        "--max-iter",
        4,
        "--checkpoint",
        tmp_path / "c",
        "--checkpoint-every",
        2,
        *common,
    )
    assert status == 0, err
    status, _, err = call(
        capsys,
        "fit",
        data,
        "--out",
        tmp_path / "b.zarr",
        "--max-iter",
        6,
        "--checkpoint",
        tmp_path / "c",
        "--alpha-w",
        0.1,
        *common,
    )
    assert_one_error_line(status, err, "cannot resume from", "alpha_W: checkpoint 0.0, now 0.1")
    status, _, err = call(
        capsys, "fit", data, "--out", tmp_path / "b.zarr", "--max-iter", 6, "--checkpoint", tmp_path / "c", *common
    )  # the same run, longer: resumes
    assert status == 0, err
    assert read_factors(tmp_path / "b.zarr")[2]["n_iter"] == 6
    described = info(capsys, tmp_path / "c")
    assert described["iteration"] == 6 and described["input"] == str(data)


def test_demo_runs_end_to_end(capsys, tmp_path):
    status, out, err = call(
        capsys, "demo", "--workdir", tmp_path, "--shape", 1000, 60, "--rank", 3, "--max-iter", 8, "--workers", 1
    )
    assert status == 0, err
    assert "dnmf demo: V is 1000 x 60 float32, rank 3" in out
    assert "fit: 8 iterations" in out and "relative error" in out and "noise floor" in out
    assert info(capsys, tmp_path / "demo-result.zarr")["n_iter"] == 8


def test_the_embedded_scheduler_is_chosen_by_the_size_of_the_input(capsys, tmp_path):
    """A small INPUT runs on this process's threads (no cluster to start: no dashboard line);
    --workers, --memory-limit and --threads still ask for the embedded cluster."""
    from dnmf.cli.options import THREADS_BELOW_BYTES, running_on

    data = tmp_path / "small.zarr"
    assert call(capsys, "generate", data, "--shape", 300, 40, "--rank", 3)[0] == 0
    for number, (flags, cluster) in enumerate((([], False), (["--workers", 1], True), (["--threads"], True))):
        status, _, err = call(
            capsys, "fit", data, "--rank", 3, "--max-iter", 5, "--out", tmp_path / f"{number}.zarr", *flags
        )
        assert status == 0 and ("Dask dashboard:" in err) == cluster, (flags, err)
    with running_on(work_bytes=THREADS_BELOW_BYTES - 1, quiet=True) as client:
        assert client is None
    with running_on(memory_limit="1GiB", work_bytes=THREADS_BELOW_BYTES - 1, quiet=True) as client:
        assert client is not None and len(client.scheduler_info()["workers"]) >= 1
