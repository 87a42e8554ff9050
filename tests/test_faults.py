"""Faults, each against real processes, files and mounts.

- The driver (``dnmf fit``) is SIGKILLed at three points: mid-iteration (progress seen
  past a checkpoint, the next one not written), right after a checkpoint (the moment
  CURRENT flips) and inside a checkpoint write (the test hook
  ``DNMF_TEST_PAUSE_IN_CHECKPOINT_WRITE`` holds the save of one iteration after its W is
  written). Each time the current checkpoint (and every one up to it) still verifies
  against its checksums, and ``dnmf resume`` ends with the factors of an uninterrupted run.
- A worker of a real ``dask scheduler`` + 2 ``dask worker`` cluster is SIGKILLed while
  a fit runs on it (with checkpoints, from the CLI; without, from the API): the fit
  completes with the undisturbed run's factors, and with checkpoints the scheduler's
  record of the fit's lineage stays bounded.
- Two ``dnmf fit`` processes run at once on that cluster (a dense and a sparse input):
  each ends with the factors it gets alone.
- A checkpoint's file is truncated or altered: loading it fails naming the file and the
  previous intact checkpoint, which ``dnmf resume --from`` then uses explicitly.
- No room (a 1 MiB tmpfs, too small or full) and no permission (a read-only bind mount;
  a path under a regular file) for OUT or the checkpoint directory: one error line
  before the cluster starts. Mounting needs root; those tests skip, saying so, without.
- A ``dnmf fit --overwrite`` killed while writing OUT (test hook
  ``DNMF_TEST_PAUSE_IN_RESULT_WRITE``) leaves the previous OUT as it was and nothing that
  looks like a result; a failed write leaves nothing at all.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import zarr

from dnmf import NMF
from dnmf.api import Checkpointing, run
from dnmf.cli import main
from dnmf.engine.checkpoint import (
    CURRENT,
    MANIFEST,
    CorruptCheckpointError,
    load_checkpoint,
    verify_checkpoint,
)
from dnmf.engine.durable import TEMP_PREFIX, check_writable
from dnmf.engine.state import FitResult
from dnmf.io.generate import generate
from dnmf.io.results import read_result, write_fit
from dnmf.io.storage import open_matrix, save_csr

#: Seconds any one process or wait may take.
TIMEOUT = 240
#: The ``dnmf`` console script's entry point in a new process, with SIGINT as a terminal
#: gives it (unblocked, raising KeyboardInterrupt) whatever the test process passes on: a
#: child inherits its parent's blocked and ignored signals.
DNMF = (
    sys.executable,
    "-c",
    "import signal, sys; signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT}); "
    "signal.signal(signal.SIGINT, signal.default_int_handler); from dnmf.cli import main; sys.exit(main())",
)
#: Rank, iterations and checkpoint interval of the driver-kill runs.
K, ITERATIONS, EVERY = 6, 30, 10
#: Parameters of those runs, as the CLI passes them.
PARAMS = dict(n_components=K, init="random", random_state=1, tol=0.0, max_iter=ITERATIONS)
OPTIONS = ["--rank", K, "--init", "random", "--seed", 1, "--tol", 0, "--max-iter", ITERATIONS]


# ------------------------------------------------------------------------ helpers


def _start(args, env=None):
    """``dnmf ARGS`` in a new process group (SIGKILL of the group takes its workers too)."""
    return subprocess.Popen(
        [*DNMF, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )


def _kill(process):
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=TIMEOUT)


class _Progress:
    """Follows the progress bar a ``dnmf fit`` process draws on stderr (``i/total``)."""

    def __init__(self, process):
        self.iteration, self.text = 0, ""
        self._thread = threading.Thread(target=self._read, args=(process.stderr,), daemon=True)
        self._thread.start()

    def finish(self):
        """Wait until the process's stderr is read to its end."""
        self._thread.join(TIMEOUT)

    def _read(self, stream):
        for chunk in iter(lambda: stream.read1(4096), b""):
            self.text += chunk.decode(errors="replace")
            found = re.findall(r"\| (\d+)/\d+", self.text[-400:])
            if found:
                self.iteration = int(found[-1])


def _wait_for(condition, process, what):
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the process ended before {what}: {process.stderr.read().decode()}")
        assert time.monotonic() < deadline, f"no {what} in time"
        time.sleep(0.005)


def _current(directory):
    try:
        return (Path(directory) / CURRENT).read_text().strip()
    except FileNotFoundError:
        return None


def _call(capfd, *args):
    status = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return status, out, err


def _one_error_line(status, err, *fragments):
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert re.search(fragment, lines[0]), (fragment, lines[0])
    return lines[0]


def _factors(path):
    group = zarr.open_group(str(path), mode="r")
    return group["W"][...], group["H"][...], dict(group.attrs)


def _assert_same(path, reference):
    """Bit for bit (the fit is the same computation however it was interrupted)."""
    W, H, attrs = _factors(path)
    assert attrs["n_iter"] == reference.n_iter
    np.testing.assert_array_equal(W, reference.W)
    np.testing.assert_array_equal(H, reference.H)
    assert attrs["loss_history"] == list(reference.loss_history)


def _tree_hashes(root):
    return {
        str(Path(folder, name).relative_to(root)): hashlib.sha256(Path(folder, name).read_bytes()).hexdigest()
        for folder, _, names in os.walk(root)
        for name in names
    }


# --------------------------------------------------------------- driver killed


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A stored V and its uninterrupted fit (the reference, on the threaded scheduler)."""
    root = tmp_path_factory.mktemp("faults")
    data = root / "v.zarr"
    generate(data, (2000, 200), K, chunk_rows=250, dtype="float64", seed=3)
    return data, run(str(data), PARAMS, as_numpy=True)


def _kill_mid_iteration(process, directory, progress):
    """Killed while iterating between two checkpoints (progress past one, the next not written)."""
    _wait_for(lambda: progress.iteration >= EVERY + 3, process, f"iteration {EVERY + 3}")
    _kill(process)
    assert not (directory / f"ckpt-{2 * EVERY:06d}").exists()  # between two checkpoints
    return f"ckpt-{EVERY:06d}"


def _kill_right_after_a_checkpoint(process, directory, progress):
    """Killed the moment CURRENT names a new checkpoint."""
    _wait_for(lambda: _current(directory) == f"ckpt-{EVERY:06d}", process, "the first checkpoint")
    _kill(process)
    assert not (directory / f"ckpt-{2 * EVERY:06d}").exists()
    return f"ckpt-{EVERY:06d}"


def _kill_during_a_checkpoint_write(process, directory, progress):
    """Killed inside the save of iteration 2 x EVERY (held by the test hook after W is written)."""
    partial = directory / f"ckpt-{2 * EVERY:06d}"
    _wait_for(lambda: (partial / "W" / "zarr.json").exists(), process, "the second checkpoint's W")
    _kill(process)
    assert not (partial / MANIFEST).exists()  # really in the middle of that save
    return f"ckpt-{EVERY:06d}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "kill",
    [_kill_mid_iteration, _kill_right_after_a_checkpoint, _kill_during_a_checkpoint_write],
    ids=["mid-iteration", "right-after-a-checkpoint", "during-a-checkpoint-write"],
)
def test_driver_killed_then_resumed_equals_an_uninterrupted_run(capfd, tmp_path, stored, kill):
    data, reference = stored
    input_before = _tree_hashes(data)
    out, directory = tmp_path / "out.zarr", tmp_path / "run.ckpt"
    hold = kill is _kill_during_a_checkpoint_write
    env = {"DNMF_TEST_PAUSE_IN_CHECKPOINT_WRITE": f"{TIMEOUT}@{2 * EVERY}"} if hold else {}
    process = _start(
        [
            "fit",
            data,
            *OPTIONS,
            "--out",
            out,
            "--checkpoint",
            directory,
            "--checkpoint-every",
            EVERY,
            "--workers",
            2,
            "--threads",
        ],
        env=env,
    )
    expected = kill(process, directory, _Progress(process))
    assert process.returncode == -signal.SIGKILL
    assert not out.exists()

    # No checkpoint is left unreadable: CURRENT and every checkpoint up to it verify.
    assert _current(directory) == expected
    state, metadata = load_checkpoint(directory)
    assert state.iteration == EVERY
    for name in metadata["checkpoints"]:
        if name <= expected:
            verify_checkpoint(directory / name)

    status, _, err = _call(capfd, "resume", directory, "--workers", 2, "--threads", "--quiet")
    assert status == 0, err
    _assert_same(out, reference)
    assert _current(directory) == f"ckpt-{ITERATIONS:06d}"
    assert sorted(n for n in os.listdir(directory) if n.startswith("ckpt-")) == [
        f"ckpt-{2 * EVERY:06d}",
        f"ckpt-{ITERATIONS:06d}",
    ]  # the half-written one was replaced, older ones pruned
    assert not [n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX)]
    assert _tree_hashes(data) == input_before  # the input was only read


@pytest.mark.slow
@pytest.mark.parametrize(  # each dtype and each kind of worker once (all four pairs cost a minute of CI)
    "where, dtype",
    [(["--workers", 1], "float32"), (["--workers", 1, "--threads"], "float64")],
    ids=["processes-float32", "threads-float64"],
)
def test_a_checkpoint_changes_nothing_plain_checkpointed_and_resumed_fits_are_bit_identical(
    capfd, tmp_path, dtype, where
):
    """With the defaults (accelerated HALS) and a fixed seed: a fit, the same fit writing
    checkpoints, and that fit killed between two checkpoints and resumed give the same
    bits of W and H, in a worker process and on threads."""
    data = tmp_path / "v.zarr"
    generate(data, (3000, 120), K, chunk_rows=500, dtype=dtype, seed=5)
    options = ["--rank", K, "--seed", 0, "--tol", 0, "--max-iter", ITERATIONS, *where, "--quiet"]
    status, _, err = _call(capfd, "fit", data, *options, "--out", tmp_path / "plain.zarr")
    assert status == 0, err
    status, _, err = _call(
        capfd,
        "fit",
        data,
        *options,
        "--out",
        tmp_path / "checkpointed.zarr",
        "--checkpoint",
        tmp_path / "a.ckpt",
        "--checkpoint-every",
        7,
    )
    assert status == 0, err
    env = {"DNMF_TEST_PAUSE_IN_CHECKPOINT_WRITE": f"{TIMEOUT}@14"}  # held in the second save
    process = _start(
        [
            "fit",
            data,
            *options[:-1],
            "--out",
            tmp_path / "killed.zarr",
            "--checkpoint",
            tmp_path / "b.ckpt",
            "--checkpoint-every",
            7,
        ],
        env=env,
    )
    _wait_for(lambda: (tmp_path / "b.ckpt" / "ckpt-000014" / "W" / "zarr.json").exists(), process, "the second save")
    _kill(process)
    assert _current(tmp_path / "b.ckpt") == "ckpt-000007"
    status, _, err = _call(capfd, "resume", tmp_path / "b.ckpt", *where, "--quiet")
    assert status == 0, err
    W, H, attrs = _factors(tmp_path / "plain.zarr")
    assert W.dtype == np.dtype(dtype)
    for name in ("checkpointed.zarr", "killed.zarr"):
        W_other, H_other, attrs_other = _factors(tmp_path / name)
        np.testing.assert_array_equal(W_other, W)
        np.testing.assert_array_equal(H_other, H)
        assert attrs_other["loss_history"] == attrs["loss_history"]


@pytest.mark.slow
@pytest.mark.parametrize("checkpointed", [True, False], ids=["with-checkpoints", "without"])
def test_ctrl_c_exits_130_with_one_line_that_says_how_to_resume(tmp_path, stored, checkpointed):
    data, _ = stored
    directory = tmp_path / "run.ckpt"
    extra = ["--checkpoint", directory, "--checkpoint-every", 2] if checkpointed else []
    process = _start(
        [
            "fit",
            data,
            "--rank",
            K,
            "--tol",
            0,
            "--max-iter",
            10_000,
            "--out",
            tmp_path / "o.zarr",
            "--workers",
            1,
            *extra,
        ]
    )
    progress = _Progress(process)
    _wait_for(lambda: progress.iteration >= 5, process, "iteration 5")
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # not _kill: progress reads stderr
        progress.finish()
        raise AssertionError(f"still running {TIMEOUT} s after SIGINT: {progress.text[-3000:]}") from None
    progress.finish()
    assert process.returncode == 130
    tail = progress.text.split("\r")[-1]
    assert "Traceback" not in progress.text and "Task exception" not in progress.text, progress.text
    errors = [line for line in tail.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, tail
    if checkpointed:
        assert re.search(
            rf"interrupted after iteration \d+; the last complete checkpoint is {re.escape(str(directory))}"
            rf"/ckpt-\d+: resume with `dnmf resume {re.escape(str(directory))}`",
            errors[0],
        ), errors[0]
    else:
        assert "nothing was saved" in errors[0]
    assert not (tmp_path / "o.zarr").exists()


# ------------------------------------------------------------ corrupted checkpoint


def _truncate(file):
    with open(file, "r+b") as handle:
        handle.truncate(max(0, file.stat().st_size // 2))


def _flip_a_byte(file):
    content = bytearray(file.read_bytes())
    content[len(content) // 2] ^= 0x01
    file.write_bytes(bytes(content))


def _chunk_of_W(path):
    return sorted(p for p in (path / "W").rglob("*") if p.is_file() and p.name != "zarr.json")[0]


CORRUPTIONS = {
    "W-chunk-truncated": (lambda path: _chunk_of_W(path), _truncate),
    "W-chunk-altered": (lambda path: _chunk_of_W(path), _flip_a_byte),
    "H-chunk-altered": (
        lambda path: next(p for p in (path / "H").rglob("*") if p.is_file() and p.name != "zarr.json"),
        _flip_a_byte,
    ),
    "attrs-altered": (
        lambda path: path / "zarr.json",
        lambda f: f.write_text(f.read_text().replace('"iteration": 6', '"iteration": 7')),
    ),
    "checksums-truncated": (lambda path: path / MANIFEST, _truncate),
    "file-added": (lambda path: path / "W" / "stray", lambda f: f.write_bytes(b"x")),
    "file-removed": (lambda path: _chunk_of_W(path), Path.unlink),
}


@pytest.fixture
def checkpointed(tmp_path):
    """A 6-iteration fit checkpointed every 2 iterations (ckpt-4 and ckpt-6 kept), and V."""
    X = np.abs(np.random.RandomState(0).standard_normal((90, 20)))
    params = {**PARAMS, "n_components": 3, "max_iter": 6, "panel_rows": 30}
    run(X, params, checkpointing=Checkpointing(tmp_path / "c", every=2))
    return tmp_path / "c", X, params


@pytest.mark.parametrize("corruption", sorted(CORRUPTIONS))
def test_a_corrupted_checkpoint_is_refused_naming_the_file_and_the_previous_one(checkpointed, corruption):
    directory, X, params = checkpointed
    where, damage = CORRUPTIONS[corruption]
    file = where(directory / "ckpt-000006")
    before = file.read_bytes() if file.exists() else None
    damage(file)
    assert not file.exists() or file.read_bytes() != before
    with pytest.raises(CorruptCheckpointError) as raised:
        load_checkpoint(directory)
    message = str(raised.value)
    assert f"checkpoint {directory / 'ckpt-000006'} is corrupted: " in message
    assert str(file) in message or (corruption == "checksums-truncated" and MANIFEST in message)
    assert "the previous checkpoint ckpt-000004 is intact" in message and "--from ckpt-000004" in message
    assert raised.value.previous == "ckpt-000004"
    with pytest.raises(CorruptCheckpointError):  # never resumed silently
        NMF(**{**params, "max_iter": 8}, checkpoint=directory, checkpoint_every=2).fit(X)
    # used when asked
    state, metadata = load_checkpoint(directory, name="ckpt-000004")
    assert state.iteration == 4


def test_resume_from_the_previous_checkpoint_equals_an_uninterrupted_run(checkpointed):
    directory, X, params = checkpointed
    _flip_a_byte(_chunk_of_W(directory / "ckpt-000006"))
    checkpointing = Checkpointing(directory, every=2, resume_from="ckpt-000004")
    resumed = run(X, {**params, "max_iter": 9}, checkpointing=checkpointing, as_numpy=True)
    straight = run(X, {**params, "max_iter": 9}, as_numpy=True)
    np.testing.assert_array_equal(resumed.W, straight.W)
    np.testing.assert_array_equal(resumed.H, straight.H)
    assert _current(directory) == "ckpt-000009"
    assert sorted(n for n in os.listdir(directory) if n.startswith("ckpt-")) == ["ckpt-000008", "ckpt-000009"]
    load_checkpoint(directory)  # the corrupted one is gone, the new ones verify


def test_no_intact_checkpoint_left_says_so(checkpointed):
    directory, _, _ = checkpointed
    for name in ("ckpt-000004", "ckpt-000006"):
        _flip_a_byte(_chunk_of_W(directory / name))
    with pytest.raises(CorruptCheckpointError, match=r"no older intact checkpoint is left in .*; remove it"):
        load_checkpoint(directory)


def test_cli_reports_a_corrupted_checkpoint_and_resumes_from_the_previous_one_when_asked(capfd, tmp_path, stored):
    data, _ = stored
    out, directory = tmp_path / "out.zarr", tmp_path / "run.ckpt"
    common = ["--workers", 1, "--threads", "--quiet"]
    status, _, err = _call(
        capfd, "fit", data, *OPTIONS[:-1], 6, "--out", out, "--checkpoint", directory, "--checkpoint-every", 2, *common
    )
    assert status == 0, err
    file = _chunk_of_W(directory / "ckpt-000006")
    _truncate(file)
    status, _, err = _call(capfd, "resume", directory, "--max-iter", 8, "--overwrite", *common)
    _one_error_line(
        status,
        err,
        re.escape(str(file)),
        r"fails its checksum",
        rf"`dnmf resume {re.escape(str(directory))} --from ckpt-000004`",
    )
    status, _, err = _call(capfd, "info", directory)
    _one_error_line(status, err, re.escape(str(file)))
    status, _, err = _call(capfd, "resume", directory, "--from", "ckpt-000004", "--max-iter", 8, "--overwrite", *common)
    assert status == 0, err
    _assert_same(out, run(str(data), {**PARAMS, "max_iter": 8}, as_numpy=True))


# ------------------------------------------------------- no room, no permission


@contextlib.contextmanager
def _mounted(target, *options):
    """Mount (tmpfs or a bind mount, then remounted with ``options``) at ``target``; skip without privileges."""
    target.mkdir(parents=True, exist_ok=True)
    commands = {
        "tmpfs": [["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)]],
        "read-only": [["mount", "--bind", str(target), str(target)], ["mount", "-o", "remount,ro,bind", str(target)]],
    }[options[0]]
    done = []
    try:
        for command in commands:
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                pytest.skip(f"cannot {' '.join(command)} (needs root/CAP_SYS_ADMIN): {result.stderr.strip()}")
            done.append(command)
        yield target
    finally:
        if done:
            subprocess.run(["umount", "-l", str(target)], capture_output=True)


def _fill(directory):
    with contextlib.suppress(OSError), open(directory / "filler", "wb") as handle:
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()


@pytest.fixture
def small_input(tmp_path):
    """A V whose factors at rank 30 take 1.2 MiB (more than the 1 MiB tmpfs holds)."""
    path = tmp_path / "in" / "v.zarr"
    zarr.create_array(str(path), data=np.abs(np.random.RandomState(0).standard_normal((5000, 40))), chunks=(1000, 40))
    return path


def _refused_before_the_cluster_starts(capfd, args, *fragments):
    started = time.perf_counter()
    status, _, err = _call(capfd, "fit", *args, "--rank", 30, "--max-iter", 2, "--workers", 1, "--threads")
    line = _one_error_line(status, err, *fragments)  # not --quiet: a started cluster would print its dashboard
    assert time.perf_counter() - started < 30
    return line


def test_no_room_for_out_or_checkpoints_is_refused_before_the_first_iteration(capfd, tmp_path, small_input):
    with _mounted(tmp_path / "small", "tmpfs") as small:
        _refused_before_the_cluster_starts(
            capfd,
            [small_input, "--out", small / "out.zarr"],
            r"not enough space for OUT .*/small/out\.zarr: it needs about 1\.2 MiB .*free in .*/small",
        )
        _refused_before_the_cluster_starts(
            capfd,
            [small_input, "--out", tmp_path / "out.zarr", "--checkpoint", small / "ckpt"],
            r"not enough space for checkpoint directory .*/small/ckpt",
        )
        assert not (tmp_path / "out.zarr").exists() and os.listdir(small) == []
        _fill(small)
        _refused_before_the_cluster_starts(
            capfd,
            [small_input, "--out", small / "out.zarr"],
            r"cannot write OUT .*/small/out\.zarr: No space left on device",
        )
        with pytest.raises(OSError, match="No space left on device"):
            NMF(n_components=1, checkpoint=small / "ckpt").fit(np.ones((4, 3)))
        assert sorted(os.listdir(small)) == ["filler"]  # no probe left behind


def test_no_permission_for_out_or_checkpoints_is_refused_before_the_first_iteration(capfd, tmp_path, small_input):
    with _mounted(tmp_path / "locked", "read-only") as locked:
        _refused_before_the_cluster_starts(
            capfd,
            [small_input, "--out", locked / "out.zarr"],
            r"cannot write OUT .*/locked/out\.zarr: Read-only file system",
        )
        _refused_before_the_cluster_starts(
            capfd,
            [small_input, "--out", tmp_path / "out.zarr", "--checkpoint", locked / "deeper" / "ckpt"],
            r"cannot write checkpoint directory .*/locked/deeper/ckpt: Read-only file system \(probe of .*/locked\)",
        )
        with pytest.raises(OSError, match="Read-only file system"):
            NMF(n_components=1, checkpoint=locked / "ckpt").fit(np.ones((4, 3)))
    (tmp_path / "a-file").write_text("x")
    _refused_before_the_cluster_starts(
        capfd,
        [small_input, "--out", tmp_path / "a-file" / "out.zarr"],
        r"cannot write OUT .*a-file/out\.zarr: .*a-file is not a directory",
    )
    with pytest.raises(NotADirectoryError, match="is not a directory"):
        check_writable(tmp_path / "a-file" / "x" / "y")


# --------------------------------------------------------- half-written OUT


@pytest.mark.slow
def test_a_run_killed_while_writing_out_leaves_the_previous_out_intact(capfd, tmp_path, stored):
    data, _ = stored
    out = tmp_path / "out.zarr"
    options = [*OPTIONS[:-1], 3, "--out", out, "--workers", 1, "--threads", "--quiet"]
    status, _, err = _call(capfd, "fit", data, *options)
    assert status == 0, err
    before = _tree_hashes(out)
    process = _start(
        ["fit", data, *options, "--overwrite", "--max-iter", 4], env={"DNMF_TEST_PAUSE_IN_RESULT_WRITE": str(TIMEOUT)}
    )
    hidden = lambda: [p for p in tmp_path.iterdir() if p.name.startswith(TEMP_PREFIX)]  # noqa: E731
    _wait_for(lambda: any((p / "W" / "zarr.json").exists() for p in hidden()), process, "OUT's W written")
    _kill(process)
    assert _tree_hashes(out) == before  # the old OUT is untouched
    assert read_result(out).attrs["n_iter"] == 3
    (partial,) = hidden()  # the new one, hidden, and not a result
    with pytest.raises(ValueError, match="is not a dnmf result"):
        read_result(partial)


def _boom(block):
    raise OSError("disk gone")


def test_a_failed_write_leaves_no_out(tmp_path):
    W = da.ones((40, 2), chunks=(10, 2)).map_blocks(_boom, dtype=float)
    result = FitResult(W, np.ones((2, 5)), 1, [1.0, 0.5], False, 1.0)
    with pytest.raises(OSError, match="disk gone"):
        write_fit(tmp_path / "out.zarr", result, PARAMS)
    assert os.listdir(tmp_path) == []


# ----------------------------------------------- a real scheduler with 2 workers


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Cluster:
    """A ``dask scheduler`` and ``dask worker`` processes on loopback, each in its own process group."""

    def __init__(self, logs):
        self.logs, self.address, self.processes, self.workers = logs, f"tcp://127.0.0.1:{_free_port()}", [], []

    def _spawn(self, name, *args):
        log = open(self.logs / f"{name}.log", "w")
        process = subprocess.Popen(
            [sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, cwd=self.logs, start_new_session=True
        )
        self.processes.append((process, log))
        return process

    def start(self):
        self._spawn(
            "scheduler",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            self.address.rsplit(":", 1)[1],
            "--no-dashboard",
        )
        for _ in range(2):
            self.add_worker()
        self.wait_for_workers(2)

    def add_worker(self):
        self.workers.append(
            self._spawn(
                f"worker-{len(self.workers)}",
                "distributed.cli.dask_worker",
                self.address,
                "--nthreads",
                "1",
                "--host",
                "127.0.0.1",
                "--no-dashboard",
                "--memory-limit",
                "1GiB",
            )
        )

    def wait_for_workers(self, n):
        from distributed import Client

        with Client(self.address, timeout="60s") as client:
            client.wait_for_workers(n, timeout=TIMEOUT)
            deadline = time.monotonic() + TIMEOUT
            while len(client.scheduler_info()["workers"]) != n:  # a killed one must be gone too
                assert time.monotonic() < deadline
                time.sleep(0.1)

    def kill_worker(self):
        """SIGKILL the newest worker (its nanny and worker processes)."""
        worker = self.workers.pop()
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=TIMEOUT)

    def stop(self):
        for process, log in reversed(self.processes):
            for sig in (signal.SIGTERM, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, sig)
                try:
                    process.wait(timeout=20)
                    break
                except subprocess.TimeoutExpired:
                    continue
            log.close()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = _Cluster(tmp_path_factory.mktemp("dask-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        from dnmf.engine.scheduler import connect

        with contextlib.suppress(Exception):
            connect(cluster.address).close()
        cluster.stop()


@pytest.fixture(scope="module")
def cluster_inputs(tmp_path_factory):
    """A dense Zarr input and a CSR group, split in 8 panels (W spread over both workers)."""
    root = tmp_path_factory.mktemp("cluster-inputs")
    dense, sparse = root / "dense.zarr", root / "sparse.zarr"
    generate(dense, (2400, 120), 5, chunk_rows=300, dtype="float64", seed=5)
    V = open_matrix(dense)[...]
    save_csr(sp.csr_matrix(V * (V > np.quantile(V, 0.5))), sparse, chunk_entries=20000)
    return dense, sparse


CLUSTER_PARAMS = dict(n_components=5, init="random", random_state=2, tol=0.0, max_iter=10, panel_rows=600)
CLUSTER_OPTIONS = ["--rank", 5, "--init", "random", "--seed", 2, "--tol", 0, "--max-iter", 10, "--panel-rows", 600]


@pytest.fixture(scope="module")
def alone(cluster, cluster_inputs):
    """Each input's fit on the cluster, undisturbed and alone (from the API)."""
    return {
        path: run(str(path), {**CLUSTER_PARAMS, "client": cluster.address}, as_numpy=True) for path in cluster_inputs
    }


def _scheduler_tasks(address):
    from distributed import Client

    with Client(address, timeout="30s") as client:
        return client.run_on_scheduler(lambda dask_scheduler: len(dask_scheduler.tasks))


@pytest.mark.slow
def test_two_fits_at_once_on_one_cluster_get_what_they_get_alone(cluster, cluster_inputs, alone, tmp_path):
    processes = {}
    for path in cluster_inputs:
        name = path.stem
        processes[path] = _start(
            [
                "fit",
                path,
                *CLUSTER_OPTIONS,
                "--out",
                tmp_path / f"{name}-out.zarr",
                "--checkpoint",
                tmp_path / f"{name}.ckpt",
                "--checkpoint-every",
                1,
                "--scheduler",
                cluster.address,
                "--quiet",
            ]
        )
    both = lambda: all(_current(tmp_path / f"{p.stem}.ckpt") for p in cluster_inputs)  # noqa: E731
    _wait_for(both, next(iter(processes.values())), "both fits iterating")
    assert all(process.poll() is None for process in processes.values())  # both iterating at once
    for path, process in processes.items():
        _, err = process.communicate(timeout=TIMEOUT)
        assert process.returncode == 0, err.decode()
        _assert_same(tmp_path / f"{path.stem}-out.zarr", alone[path])


@pytest.mark.slow
def test_worker_killed_mid_iteration_the_cli_fit_completes_as_undisturbed(cluster, cluster_inputs, alone, tmp_path):
    dense, _ = cluster_inputs
    out, directory = tmp_path / "out.zarr", tmp_path / "run.ckpt"
    process = _start(
        [
            "fit",
            dense,
            *CLUSTER_OPTIONS,
            "--out",
            out,
            "--checkpoint",
            directory,
            "--checkpoint-every",
            3,
            "--scheduler",
            cluster.address,
        ]
    )
    progress = _Progress(process)
    _wait_for(lambda: progress.iteration >= 4, process, "iteration 4")
    cluster.kill_worker()  # with its blocks of W and H, mid-iteration
    killed_at = progress.iteration
    try:
        process.wait(timeout=TIMEOUT)
    finally:
        cluster.add_worker()
    assert process.returncode == 0, progress.text
    assert killed_at < 10
    _assert_same(out, alone[dense])
    cluster.wait_for_workers(2)


@pytest.mark.slow
@pytest.mark.parametrize("checkpoints", [False, True], ids=["no-checkpoints", "checkpoints"])
def test_worker_killed_mid_fit_from_the_api_the_fit_completes_as_undisturbed(
    cluster, cluster_inputs, alone, tmp_path, checkpoints
):
    """Without checkpoints Dask replays the whole lineage, which the scheduler keeps (its
    task records grow with the iterations); with them the lineage starts at the last
    checkpoint (the records stay flat)."""
    dense, _ = cluster_inputs
    params = {**CLUSTER_PARAMS, "client": cluster.address}
    tasks = {}

    def callback(info):
        if info.iteration in (4, 8):
            tasks[info.iteration] = _scheduler_tasks(cluster.address)
        if info.iteration == 9:
            cluster.kill_worker()

    checkpointing = Checkpointing(tmp_path / "c", every=2) if checkpoints else None
    try:
        result = run(str(dense), params, checkpointing=checkpointing, callback=callback, as_numpy=True)
    finally:
        cluster.add_worker()
    np.testing.assert_array_equal(result.W, alone[dense].W)
    np.testing.assert_array_equal(result.H, alone[dense].H)
    if checkpoints:
        assert tasks[8] <= tasks[4] + 5, tasks  # flat
    else:
        assert tasks[8] >= tasks[4] + 4 * 4, tasks  # at least a task per panel per iteration more
    cluster.wait_for_workers(2)
