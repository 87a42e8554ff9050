"""A multiplicative-update pass over a panel: ``W H`` at V's entries taken once for the loss and W."""

import numpy as np
import pytest
import scipy.sparse as sp

from dnmf.numerics import kernels
from dnmf.numerics.kernels import StepSpec


@pytest.mark.parametrize("beta", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("sweeps", [1, 3])
def test_a_mu_pass_takes_wh_at_v_once_for_its_loss_and_first_update(beta, sparse, sweeps, monkeypatch):
    """The loss of the iterate a pass starts from and the pass's first update of W read the
    same ``W H`` at V's stored entries: one product fewer, and the same bits as taking it
    for each of them."""
    rng = np.random.default_rng(0)
    V = sp.random(60, 40, density=0.3, format="csr", random_state=0)
    if beta == 0.0:  # Itakura-Saito: no zeros
        V = sp.csr_matrix(V.toarray() + 0.1)
    V = V if sparse else V.toarray()
    W, H = rng.random((60, 5)) + 0.1, rng.random((5, 40)) + 0.1
    step = StepSpec("mu", beta, sweeps_W=sweeps)

    calls = []
    wh_at = kernels._wh_at
    monkeypatch.setattr(kernels, "_wh_at", lambda *args: calls.append(1) or wh_at(*args))
    shared_W, shared = kernels.panel_step(V, W, H, step)
    assert len(calls) == sweeps + 1  # the shared one, the later updates', the H-step's

    monkeypatch.setattr(kernels._WRule, "cross", lambda self, V, W=None: None)
    calls.clear()
    apart_W, apart = kernels.panel_step(V, W, H, step)
    assert len(calls) == sweeps + 2
    np.testing.assert_array_equal(shared_W, apart_W)
    for a, b in zip(shared, apart):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("beta", [1.0, 0.5, 0.0, 1.5])
@pytest.mark.parametrize("sparse", [True, False])
def test_beta_loss_pieces_in_runs_are_scikit_learns_divergence(beta, sparse, monkeypatch):
    """The loss terms, taken a run of entries at a time (runs of 7 here), add up to
    scikit-learn's ``_beta_divergence``: entries of V at or below EPSILON out of the data
    terms, WH floored at EPSILON."""
    from sklearn.decomposition._nmf import _beta_divergence

    from dnmf.numerics.losses import beta_loss

    monkeypatch.setattr(kernels, "LOSS_RUN", 7)
    rng = np.random.default_rng(2)
    V = sp.random(30, 20, density=0.4, format="csr", random_state=2)
    V.data[::5] = 1e-9  # at or below EPSILON: left out
    if beta == 0.0:  # Itakura-Saito: V without zeros
        V = sp.csr_matrix(V.toarray() + 0.2)
    W, H = rng.random((30, 3)), rng.random((3, 20))
    W[0] = 0.0  # WH at 0 on a row: floored at EPSILON
    V = V if sparse else V.toarray()
    pieces = kernels.beta_loss_pieces(V, W, H, beta)
    expected = _beta_divergence(V, W, H, beta)
    np.testing.assert_allclose(beta_loss(pieces, beta, V.shape[0] * V.shape[1]), expected, rtol=1e-12)
