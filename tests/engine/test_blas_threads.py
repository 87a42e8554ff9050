"""BLAS's thread count during a fit on Dask's local schedulers: every core for in-memory
dense panels (run one at a time), cores // parallel tasks for sparse panels."""

import numpy as np
import pytest
import scipy.sparse as sp
from dask.system import CPU_COUNT
from threadpoolctl import threadpool_info

from dnmf.api import run

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # 2 iterations, on purpose


def _blas_threads():
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def _threads_during_fit(X, **params):
    seen = []
    run(
        X,
        {"n_components": 3, "max_iter": 2, "random_state": 0, **params},
        callback=lambda info: seen.append(_blas_threads()),
    )
    return seen


def test_in_memory_dense_panels_run_one_at_a_time_with_blas_on_every_core():
    X = np.random.default_rng(0).random((4000, 30))
    assert _threads_during_fit(X, panel_rows=1000) == [{CPU_COUNT}] * 2


@pytest.mark.skipif(CPU_COUNT < 2, reason="one core: one BLAS thread either way")
def test_parallel_sparse_panels_share_the_cores_with_blas():
    X = sp.random(4000, 30, density=0.2, format="csr", random_state=0)
    assert _threads_during_fit(X, panel_rows=1000) == [{CPU_COUNT // min(4, CPU_COUNT)}] * 2
