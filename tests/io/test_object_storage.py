"""Inputs, outputs and checkpoints in an object store: a real S3 server (moto's, in its
own process, on loopback) read and written by real s3fs clients, in this process, in
``dask worker`` processes that share no directory with it, and in ``dnmf`` commands.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import scipy.sparse as sp
import zarr

pytest.importorskip("s3fs")

from s3_server import FaultyProxy, start_server  # noqa: E402

from dnmf import NMF  # noqa: E402
from dnmf.cli.main import main  # noqa: E402
from dnmf.engine.location import Location  # noqa: E402
from dnmf.io.results import read_result  # noqa: E402
from dnmf.io.storage import open_matrix  # noqa: E402

#: Storage options that carry credentials explicitly (moto accepts any): they must never
#: appear in what dnmf writes or prints.
SECRET = "s3cr3t-never-written"
KEY_ID = "AKIDNEVERWRITTEN"
#: Client options that turn botocore's own retries off: every failure reaches dnmf's.
NO_CLIENT_RETRIES = {"config_kwargs": {"retries": {"total_max_attempts": 1}}}


def _tf_idf_like(m=1200, n=300, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(m, n, density=0.04, random_state=seed, format="csr", dtype=np.float32)
    X.data = rng.gamma(0.8, 1.0, X.nnz).astype(np.float32)
    return X


def _upload_csr(X, url, chunk_entries=4096):
    """``X`` written as a CSR group at ``url`` (through dnmf's own store), opened."""
    group = zarr.open_group(Location.of(url).zarr_store(read_only=False), mode="w")
    group.create_array("indptr", data=X.indptr.astype(np.int64), chunks=(256,))
    group.create_array("indices", data=X.indices.astype(np.int32), chunks=(chunk_entries,))
    group.create_array("data", data=X.data, chunks=(chunk_entries,))
    group.attrs.update({"format": "csr", "shape": list(X.shape)})
    return url


def _upload_dense(X, url, rows=100):
    array = zarr.create_array(
        Location.of(url).zarr_store(read_only=False), shape=X.shape, chunks=(rows, X.shape[1]), dtype=X.dtype
    )
    array[...] = X
    return url


def _dnmf(*args, env=None, cwd=None, check=True, timeout=600):
    """Run the ``dnmf`` command line in its own process."""
    done = subprocess.run(
        [sys.executable, "-m", "dnmf.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )
    if check and done.returncode != 0:
        raise AssertionError(f"dnmf {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def _cli(capsys, *args, check=True):
    """Run the ``dnmf`` command line in this process (faster than :func:`_dnmf`, for the
    commands whose own process does not matter); the outcome as :func:`_dnmf`'s."""
    status = main(list(args))
    out, err = capsys.readouterr()
    if check and status != 0:
        raise AssertionError(f"dnmf {' '.join(args)} exited {status}:\n{out}\n{err}")
    return subprocess.CompletedProcess(args, status, out, err)


def _all_objects(fs, bucket):
    return {path: fs.cat_file(path) for path in fs.find(bucket)}


# ------------------------------------------------------------------ the Python API


@pytest.mark.parametrize("kind", ["csr", "dense"])
def test_fit_from_s3_equals_the_in_memory_fit(s3, kind):
    X = _tf_idf_like()
    url = _upload_csr(X, s3.url("v.zarr")) if kind == "csr" else _upload_dense(X.toarray(), s3.url("v.zarr"))
    W = NMF(6, random_state=0, max_iter=40).fit_transform(url)
    expected = NMF(6, random_state=0, max_iter=40).fit_transform(X if kind == "csr" else X.toarray())
    np.testing.assert_array_equal(np.asarray(W), expected)


def test_npz_and_npy_inputs_are_read_from_urls(s3, tmp_path):
    X = _tf_idf_like(200, 50)
    sp.save_npz(tmp_path / "v.npz", X)
    np.save(tmp_path / "v.npy", X.toarray())
    s3.fs.put(str(tmp_path / "v.npz"), f"{s3.bucket}/v.npz")
    s3.fs.put(str(tmp_path / "v.npy"), f"{s3.bucket}/v.npy")
    assert (open_matrix(s3.url("v.npz")) != X).nnz == 0
    np.testing.assert_array_equal(open_matrix(s3.url("v.npy")), X.toarray())


def test_checkpointed_estimator_resumes_from_s3(s3):
    X = _tf_idf_like()
    url = _upload_csr(X, s3.url("v.zarr"))
    checkpoint = s3.url("run.ckpt")
    NMF(5, random_state=1, max_iter=12, tol=0, checkpoint=checkpoint, checkpoint_every=4).fit(url)
    assert s3.fs.cat_file(f"{s3.bucket}/run.ckpt/CURRENT").decode().strip() == "ckpt-000012"
    resumed = NMF(5, random_state=1, max_iter=20, tol=0, checkpoint=checkpoint, checkpoint_every=4).fit(url)
    plain = NMF(5, random_state=1, max_iter=20, tol=0).fit(X)
    assert resumed.n_iter_ == 20
    np.testing.assert_array_equal(resumed.components_, plain.components_)
    names = sorted(path.rsplit("/", 1)[-1] for path in s3.fs.ls(f"{s3.bucket}/run.ckpt"))
    assert names == ["CURRENT", "ckpt-000016", "ckpt-000020"]  # pruned only after the new one is current


# ------------------------------------------------------------------ the command line


def test_cli_fit_with_input_output_and_checkpoints_on_s3_records_no_credentials(s3, tmp_path):
    X = _tf_idf_like()
    url = _upload_csr(X, s3.url("v.zarr"))
    options = json.dumps({"key": KEY_ID, "secret": SECRET, "endpoint_url": s3.endpoint})
    done = _dnmf(
        "fit",
        url,
        "--rank",
        "5",
        "--seed",
        "0",
        "--max-iter",
        "30",
        "--tol",
        "0",
        "--out",
        s3.url("result.zarr"),
        "--checkpoint",
        s3.url("run.ckpt"),
        "--checkpoint-every",
        "10",
        "--storage-options",
        options,
        "--threads",
        "-v",
    )
    result = read_result(s3.url("result.zarr"))
    plain = NMF(5, random_state=0, max_iter=30, tol=0).fit(X)
    np.testing.assert_array_equal(result.H, plain.components_)
    assert result.attrs["input"] == url
    written = b"".join(_all_objects(s3.fs, s3.bucket).values())
    for secret in (SECRET, KEY_ID):
        assert secret.encode() not in written
        assert secret not in done.stdout + done.stderr
    shown = _dnmf("fit", url, "--rank", "5", "--out", s3.url("x.zarr"), "--storage-options", options, "--show-config")
    assert SECRET not in shown.stdout and KEY_ID not in shown.stdout and "storage-options" in shown.stdout
    config = tmp_path / "run.yaml"
    config.write_text(
        f"rank: 3\nmax-iter: 5\nthreads: true\nstorage-options:\n  key: {KEY_ID}\n  secret: {SECRET}\n"
        f"  endpoint_url: {s3.endpoint}\n"
    )
    done = _dnmf("fit", url, "--out", s3.url("from-config.zarr"), "--config", str(config), "-v")
    assert read_result(s3.url("from-config.zarr")).H.shape == (3, X.shape[1])
    assert SECRET not in done.stdout + done.stderr


def test_cli_info_transform_and_plot_take_urls(s3, tmp_path, capsys):
    X = _tf_idf_like(400, 80)
    url = _upload_csr(X, s3.url("v.zarr"))
    _cli(capsys, "fit", url, "--rank", "3", "--max-iter", "20", "--out", s3.url("fit.zarr"), "--threads")
    assert "dnmf fit result" in _cli(capsys, "info", s3.url("fit.zarr")).stdout
    _cli(capsys, "transform", url, "--model", s3.url("fit.zarr"), "--out", s3.url("w.zarr"), "--threads")
    assert read_result(s3.url("w.zarr")).W.shape == (400, 3)
    assert "CSR group" in _cli(capsys, "info", url).stdout
    _cli(capsys, "plot", s3.url("fit.zarr"), "--kind", "convergence", "--out", str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").stat().st_size > 0
    assert "most similar to row 0" in _cli(capsys, "similar", s3.url("fit.zarr"), "--row", "0").stdout
    _cli(
        capsys,
        "fit",
        url,
        "--rank",
        "3",
        "--max-iter",
        "6",
        "--out",
        s3.url("f2.zarr"),
        "--checkpoint",
        s3.url("c.ckpt"),
        "--checkpoint-every",
        "3",
        "--threads",
    )
    assert "dnmf checkpoint directory" in _cli(capsys, "info", s3.url("c.ckpt")).stdout


def _kill_when(process, fs, key, seconds=300):
    """SIGKILL ``process`` as soon as ``key`` exists in the store (it is then paused by a test hook)."""
    deadline = time.monotonic() + seconds
    while not fs.exists(key):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{key} never appeared"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_driver_killed_inside_a_checkpoint_write_resumes_bit_identical(s3, capsys):
    X = _tf_idf_like()
    url = _upload_csr(X, s3.url("v.zarr"))
    checkpoint, out = s3.url("run.ckpt"), s3.url("result.zarr")
    args = [
        "fit",
        url,
        "--rank",
        "5",
        "--seed",
        "3",
        "--max-iter",
        "20",
        "--tol",
        "0",
        "--out",
        out,
        "--checkpoint",
        checkpoint,
        "--checkpoint-every",
        "5",
        "--threads",
        "-q",
    ]
    env = {**os.environ, "DNMF_TEST_PAUSE_IN_CHECKPOINT_WRITE": "60@10"}
    process = subprocess.Popen(
        [sys.executable, "-m", "dnmf.cli", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _kill_when(process, s3.fs, f"{s3.bucket}/run.ckpt/ckpt-000010/W/zarr.json")
    assert s3.fs.cat_file(f"{s3.bucket}/run.ckpt/CURRENT").decode().strip() == "ckpt-000005"
    assert not s3.fs.exists(f"{s3.bucket}/result.zarr/zarr.json")
    _cli(capsys, "resume", checkpoint, "-q", "--threads")
    resumed = read_result(out)
    args[args.index(out)], args[args.index(checkpoint)] = s3.url("plain.zarr"), s3.url("plain.ckpt")
    _cli(capsys, *args)
    plain = read_result(s3.url("plain.zarr"))
    np.testing.assert_array_equal(resumed.H, plain.H)
    np.testing.assert_array_equal(np.asarray(resumed.W), np.asarray(plain.W))
    assert resumed.attrs["n_iter"] == plain.attrs["n_iter"] == 20


def test_driver_killed_inside_the_output_write_leaves_no_result(s3, capsys):
    url = _upload_csr(_tf_idf_like(300, 60), s3.url("v.zarr"))
    env = {**os.environ, "DNMF_TEST_PAUSE_IN_RESULT_WRITE": "60"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dnmf.cli",
            "fit",
            url,
            "--rank",
            "3",
            "--max-iter",
            "5",
            "--out",
            s3.url("r.zarr"),
            "--threads",
            "-q",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _kill_when(process, s3.fs, f"{s3.bucket}/r.zarr/W/zarr.json")
    with pytest.raises(ValueError, match="not a dnmf result"):
        read_result(s3.url("r.zarr"))
    _cli(
        capsys,
        "fit",
        url,
        "--rank",
        "3",
        "--max-iter",
        "5",
        "--out",
        s3.url("r.zarr"),
        "--threads",
        "--overwrite",
        "-q",
    )
    assert read_result(s3.url("r.zarr")).H.shape == (3, 60)


def test_a_cluster_whose_workers_share_no_directory(s3, tmp_path):
    """A real ``dask scheduler`` and two ``dask worker`` processes, each started in an
    empty directory of its own: input, output and checkpoints are URLs only."""
    X = _tf_idf_like(3000, 200)
    url = _upload_csr(X, s3.url("v.zarr"))
    env = dict(os.environ)
    scheduler_port = __import__("s3_server").free_port()
    address = f"tcp://127.0.0.1:{scheduler_port}"
    processes = []
    try:
        (tmp_path / "scheduler").mkdir()
        processes.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "distributed.cli.dask_scheduler",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(scheduler_port),
                    "--dashboard-address",
                    ":0",
                ],
                cwd=tmp_path / "scheduler",
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        for i in range(2):
            where = tmp_path / f"worker-{i}"
            where.mkdir()
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "distributed.cli.dask_worker",
                        address,
                        "--nthreads",
                        "1",
                        "--no-nanny",
                        "--local-directory",
                        str(where),
                    ],
                    cwd=where,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        from distributed import Client

        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
        driver = tmp_path / "driver"
        driver.mkdir()
        _dnmf(
            "fit",
            url,
            "--rank",
            "4",
            "--seed",
            "0",
            "--max-iter",
            "15",
            "--tol",
            "0",
            "--out",
            s3.url("result.zarr"),
            "--checkpoint",
            s3.url("run.ckpt"),
            "--checkpoint-every",
            "5",
            "--scheduler",
            address,
            "-q",
            cwd=driver,
        )
        for i in range(2):
            assert sorted(p.name for p in (tmp_path / f"worker-{i}").iterdir() if not p.name.startswith(".")) in (
                [],
                ["dask-scratch-space"],
            ), list((tmp_path / f"worker-{i}").iterdir())
        assert not any(driver.iterdir())
        result = read_result(s3.url("result.zarr"))
        plain = NMF(4, random_state=0, max_iter=15, tol=0).fit(X)
        np.testing.assert_array_equal(result.H, plain.components_)
    finally:
        for process in reversed(processes):
            process.kill()
            process.wait()


# ------------------------------------------------------------------ bad input


@pytest.fixture(scope="module")
def strict_s3():
    """A second S3 server that checks credentials (moto with IAM enforced after the
    set-up requests): a user allowed the bucket ``open`` only; ``closed`` exists."""
    import botocore.session

    process, endpoint = start_server({**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4"})
    try:
        session = botocore.session.get_session()
        plain = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b")
        iam = session.create_client("iam", **plain)
        iam.create_user(UserName="analyst")
        key = iam.create_access_key(UserName="analyst")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": ["arn:aws:s3:::open", "arn:aws:s3:::open/*"]}
            ],
        }
        iam.put_user_policy(UserName="analyst", PolicyName="open-only", PolicyDocument=json.dumps(policy))
        session.create_client("s3", **plain).create_bucket(Bucket="closed")
        user = dict(endpoint_url=endpoint, key=key["AccessKeyId"], secret=key["SecretAccessKey"])
        import s3fs

        s3fs.S3FileSystem(**user).mkdir("open")
        yield user
    finally:
        process.kill()
        process.wait()


def _error_line(done):
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


def test_store_errors_are_one_line_naming_the_url(s3, strict_s3, tmp_path, capsys):
    url = _upload_csr(_tf_idf_like(100, 20), s3.url("v.zarr"))
    s3.fs.pipe_file(f"{s3.bucket}/cells.h5ad", b"not read")
    before = _all_objects(s3.fs, s3.bucket)
    out = str(tmp_path / "out.zarr")
    cases = {
        "missing bucket": (
            ["fit", "s3://no-such-bucket-dnmf/v.zarr", "--out", out],
            "no-such-bucket-dnmf",
            "does not exist",
        ),
        "missing key": (["fit", s3.url("nothing.zarr"), "--out", out], "nothing.zarr", "not found"),
        "unknown scheme": (["fit", "nosuch://b/v.zarr", "--out", out], "nosuch://", "not a storage scheme"),
        "package missing": (["fit", "gs://bucket/v.zarr", "--out", out], "gs://", "pip install gcsfs"),
        "unwritable output bucket": (
            ["fit", url, "--out", "s3://no-such-bucket-dnmf/r.zarr"],
            "s3://no-such-bucket-dnmf/r.zarr",
            "does not exist",
        ),
        "a format read from disks only": (
            ["fit", s3.url("cells.h5ad"), "--out", out],
            "cells.h5ad",
            "copy this file to a local disk",
        ),
        "credentials in the URL": (
            ["fit", "s3://AKID:hush@no-such-bucket-dnmf/v.zarr", "--out", out],
            "s3://no-such-bucket-dnmf/v.zarr",
            "",
        ),
    }
    for name, (args, named, problem) in cases.items():
        line = _error_line(_cli(capsys, *args, "--rank", "2", "--threads", check=False))
        assert named in line and problem in line and "hush" not in line, (name, line)
    strict = json.dumps(strict_s3)
    wrong = json.dumps({**strict_s3, "secret": "wrong-secret", "key": "AKIDWRONG"})
    unreachable = json.dumps(
        {
            "endpoint_url": f"http://127.0.0.1:{__import__('s3_server').free_port()}",
            "config_kwargs": {"connect_timeout": 1, "retries": {"total_max_attempts": 1}},
        }
    )
    cases = {
        "no permission": (
            ["fit", "s3://closed/v.zarr", "--storage-options", strict],
            "s3://closed/v.zarr",
            "permission denied",
        ),
        "wrong credentials": (
            ["fit", "s3://open/v.zarr", "--storage-options", wrong],
            "s3://open/v.zarr",
            "permission denied",
        ),
        "unreachable endpoint": (
            ["fit", "s3://open/v.zarr", "--storage-options", unreachable],
            "s3://open/v.zarr",
            "cannot reach",
        ),
    }
    for name, (args, named, problem) in cases.items():
        line = _error_line(_cli(capsys, *args, "--out", out, "--rank", "2", "--threads", check=False))
        assert named in line and problem in line, (name, line)
        assert "wrong-secret" not in line and strict_s3["secret"] not in line
    line = _error_line(
        _cli(
            capsys,
            "fit",
            url,
            "--out",
            "s3://closed/r.zarr",
            "--rank",
            "2",
            "--threads",
            "--storage-options",
            json.dumps({**strict_s3, "endpoint_url": s3.endpoint}),
            check=False,
        )
    )
    assert "s3://closed/r.zarr" in line
    assert _all_objects(s3.fs, s3.bucket) == before  # the input untouched
    assert not os.path.exists(out)


# ------------------------------------------------------------------ faults


def test_a_fit_survives_a_store_failing_five_percent_of_requests(s3):
    X = _tf_idf_like()
    url = _upload_csr(X, s3.url("v.zarr"), chunk_entries=1024)
    proxy = FaultyProxy(s3.endpoint, rate=0.05, seed=1)
    try:
        faulty = {"endpoint_url": proxy.url, **NO_CLIENT_RETRIES}
        done = _dnmf(
            "fit",
            url,
            "--rank",
            "5",
            "--seed",
            "0",
            "--max-iter",
            "10",
            "--tol",
            "0",
            "--out",
            s3.url("result.zarr"),
            "--checkpoint",
            s3.url("run.ckpt"),
            "--checkpoint-every",
            "5",
            "--storage-options",
            json.dumps(faulty),
            "--workers",
            "2",
            "-v",
        )
    finally:
        proxy.close()
    assert proxy.failed > 0
    assert "retrying" in done.stderr
    assert "Unclosed client session" not in done.stderr  # the workers' s3fs sessions are closed at exit
    result = read_result(s3.url("result.zarr"))
    np.testing.assert_array_equal(result.H, NMF(5, random_state=0, max_iter=10, tol=0).fit(X).components_)


def test_every_operation_of_the_zarr_store_is_retried(s3, caplog):
    """With each request failing once (a 500) and botocore retrying nothing, every
    operation Zarr asks of the store succeeds: writes, reads, lookups, listings, deletions."""
    from zarr.core.buffer import cpu, default_buffer_prototype
    from zarr.core.sync import sync

    proxy = FaultyProxy(s3.endpoint, once=True)
    try:
        store = Location.of(s3.url("once"), {"endpoint_url": proxy.url, **NO_CLIENT_RETRIES}).zarr_store(
            read_only=False
        )
        with caplog.at_level("INFO", logger="dnmf.retries"):
            for key in ("a/x", "a/y", "b"):
                sync(store.set(key, cpu.Buffer.from_bytes(key.encode())))
            assert sync(store.get("a/x", default_buffer_prototype())).to_bytes() == b"a/x"
            assert [
                value.to_bytes()
                for value in sync(store.get_partial_values(default_buffer_prototype(), [("a/y", None)]))
            ] == [b"a/y"]
            assert sync(store.exists("b")) and sync(store.getsize("b")) == 1
            assert sync(store.getsize_prefix("a")) == 6
            assert sorted(sync(_listed(store.list()))) == ["a/x", "a/y", "b"]
            assert sorted(sync(_listed(store.list_prefix("a/")))) == ["a/x", "a/y"]
            assert sorted(sync(_listed(store.list_dir("")))) == ["a", "b"]
            assert not sync(store.is_empty("a"))
            sync(store.delete("b"))
            sync(store.delete_dir("a"))
            assert sync(store.is_empty(""))
            sync(store.set("c", cpu.Buffer.from_bytes(b"c")))
            sync(store.clear())
    finally:
        proxy.close()
    assert sorted(s3.fs.find(s3.bucket, refresh=True)) == []
    retried = {record.getMessage().split()[1] for record in caplog.records if record.name == "dnmf.retries"}
    assert retried == {"write", "read", "lookup", "listing", "deletion"}


async def _listed(keys):
    return [key async for key in keys]


def test_lookups_of_a_location_are_retried_not_answered_no(s3):
    """A failed request is not an answer: with a third of the requests failing, the
    lookups a checkpoint's validity rests on (is there a manifest?) say what is there."""
    s3.fs.pipe_file(f"{s3.bucket}/look/ckpt/SHA256SUMS", b"x")
    proxy = FaultyProxy(s3.endpoint, rate=0.3, seed=0)
    try:
        here = Location.of(s3.url("look"), {"endpoint_url": proxy.url, **NO_CLIENT_RETRIES})
        manifest, missing = here.join("ckpt", "SHA256SUMS"), here.join("ckpt", "CURRENT")
        for _ in range(10):
            here.fs.invalidate_cache()
            assert manifest.is_file() and manifest.exists() and not manifest.is_dir()
            assert here.join("ckpt").is_dir() and not here.join("ckpt").is_file()
            assert not missing.is_file() and not missing.exists()
            assert here.names() == ["ckpt"] and manifest.read_bytes() == b"x"
    finally:
        proxy.close()
    assert proxy.failed > 0


def test_generate_topics_store_and_rank_report_write_to_urls(s3, tmp_path, capsys):
    _cli(capsys, "generate", s3.url("g.zarr"), "--shape", "300", "40", "--rank", "3", "--density", "0.2", "-q")
    assert open_matrix(s3.url("g.zarr")).shape == (300, 40)
    documents = tmp_path / "docs.csv"
    documents.write_text(
        "text\n"
        + "\n".join(
            f"{'apples pears plums' if i % 2 else 'rivers lakes seas'} note{i % 5} word{i % 7}" for i in range(40)
        )
    )
    done = _cli(capsys, "topics", str(documents), "--rank", "2", "--store", s3.url("corpus.zarr"), "-q")
    assert done.returncode == 0
    from dnmf.apps.topics import open_corpus

    corpus = open_corpus(s3.url("corpus.zarr"))
    assert corpus.matrix.shape[0] == 40 and "apples" in set(corpus.vocabulary)
    _cli(
        capsys,
        "rank",
        s3.url("g.zarr"),
        "--ranks",
        "2:3",
        "--replicates",
        "2",
        "--out",
        s3.url("rank.json"),
        "--threads",
        "-q",
    )
    assert json.loads(s3.fs.cat_file(f"{s3.bucket}/rank.json"))["scores"]


def test_two_fits_writing_one_checkpoint_url_are_refused(s3):
    """``CURRENT`` is replaced only if it is what this fit last saw (S3's conditional
    writes): the second of two checkpointers opened on one empty directory fails."""
    import dask.array as da

    from dnmf.engine.checkpoint import ZarrCheckpointer
    from dnmf.engine.state import LoopState
    from dnmf.errors import ConcurrentWriteError
    from dnmf.io.storage import as_panels

    X = _tf_idf_like(60, 20)
    panels = as_panels(X)
    first, second = (ZarrCheckpointer(s3.url("shared.ckpt"), panels, {"n_components": 2}) for _ in range(2))
    rng = np.random.default_rng(0)
    state = LoopState(
        1,
        da.from_array(rng.random((60, 2), dtype=np.float32)),
        rng.random((2, 20), dtype=np.float32),
        (2.0, 1.0),
        False,
        None,
        None,
        (0.5,),
    )
    first.save(state)
    first.save(dataclasses.replace(state, iteration=2))
    with pytest.raises(ConcurrentWriteError, match="two fits"):
        second.save(state)
    assert s3.fs.cat_file(f"{s3.bucket}/shared.ckpt/CURRENT").decode().strip() == "ckpt-000002"


def test_checkpoint_files_are_hashed_from_their_content_not_the_size_the_store_reports(s3):
    """Hashed through a file object, an object that a store reports as empty hashed as
    empty: every checkpoint's manifest alike, and a W read back under another's name."""
    import hashlib

    from dnmf.engine.checkpoint.manifest import file_sha256

    content = np.arange(1000, dtype=np.float32).tobytes()
    s3.fs.pipe_file(f"{s3.bucket}/blob", content)
    proxy = FaultyProxy(s3.endpoint, rate=0.0, zero_sizes=True)
    try:
        digest, size = file_sha256(Location.of(s3.url("blob"), {"endpoint_url": proxy.url}))
    finally:
        proxy.close()
    assert (digest, size) == (hashlib.sha256(content).hexdigest(), len(content))
