"""Shared fixtures of the engine tests: small non-negative matrices, starting
factors and the comparison used against the references.

The helpers are handed out as session-scoped fixtures (plain functions), so that
hypothesis tests can use them too.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp


def nonnegative_matrix(m, n, seed=0, *, density=1.0, positive=False, dtype=np.float64):
    """A dense ``(m, n)`` matrix with entries in [0, ~3).

    ``density < 1`` zeroes a random share of the entries; ``positive`` shifts every entry
    away from zero (Itakura-Saito needs strictly positive data).
    """
    rng = np.random.RandomState(seed)
    X = np.abs(rng.standard_normal((m, n)))
    if positive:
        X += 0.1
    elif density < 1:
        X[rng.uniform(size=(m, n)) >= density] = 0.0
    return X.astype(dtype)


def starting_factors(m, n, k, seed=0, dtype=np.float64):
    """Strictly positive custom ``W0`` (m x k) and ``H0`` (k x n)."""
    rng = np.random.RandomState(seed + 10_000)
    W0 = np.abs(rng.standard_normal((m, k))) + 0.05
    H0 = np.abs(rng.standard_normal((k, n))) + 0.05
    return W0.astype(dtype), H0.astype(dtype)


def max_relative_error(actual, expected):
    """``max |actual - expected| / max |expected|`` (dense or sparse, NumPy or Dask)."""
    actual, expected = (_dense(a) for a in (actual, expected))
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.max(np.abs(expected)) if expected.size else 0.0
    difference = np.max(np.abs(actual - expected)) if expected.size else 0.0
    return float(difference / scale) if scale else float(difference)


def _dense(a):
    if hasattr(a, "compute"):
        a = a.compute()
    if sp.issparse(a):
        a = a.toarray()
    return np.asarray(a, dtype=np.float64)


@pytest.fixture(scope="session")
def make_matrix():
    """:func:`nonnegative_matrix`."""
    return nonnegative_matrix


@pytest.fixture(scope="session")
def make_factors():
    """:func:`starting_factors`."""
    return starting_factors


@pytest.fixture(scope="session")
def relerr():
    """:func:`max_relative_error`."""
    return max_relative_error


# ------------------------------------------------------------------ object storage


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on loopback, for the session: its endpoint URL."""
    pytest.importorskip("s3fs")
    from s3_server import start_server

    process, endpoint = start_server()
    try:
        yield endpoint
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def s3(s3_server, monkeypatch):
    """The S3 server found the standard way (``AWS_ENDPOINT_URL`` and the keys in the
    environment), with a new empty bucket: ``.bucket``, ``.url(key)``, ``.fs`` (s3fs),
    ``.endpoint``."""
    import s3fs
    from s3_server import CREDENTIALS, new_bucket

    for name, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(name, value)
    fs = s3fs.S3FileSystem(
        endpoint_url=s3_server,
        **{"key": CREDENTIALS["AWS_ACCESS_KEY_ID"], "secret": CREDENTIALS["AWS_SECRET_ACCESS_KEY"]},
    )

    class Bucket:
        endpoint = s3_server
        bucket = new_bucket(fs)

        def url(self, key=""):
            return f"s3://{self.bucket}/{key}".rstrip("/")

    Bucket.fs = fs
    return Bucket()
