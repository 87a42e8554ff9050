"""dnmf.NMF as a drop-in for sklearn.decomposition.NMF."""

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from sklearn.datasets import load_digits
from sklearn.decomposition import NMF as SklearnNMF
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize
from sklearn.utils.estimator_checks import parametrize_with_checks

from dnmf import NMF, non_negative_factorization

#: Our error may exceed scikit-learn's by at most this factor.
ERROR_SLACK = 1.01
#: ``fit(X).transform(X)`` is within this share of ``fit_transform(X)`` (Frobenius norm).
TRANSFORM_CLOSE = 0.05


@parametrize_with_checks(
    # max_iter=500: scikit-learn's own setting for its NMF in these checks (at 50 its
    # fit_transform and transform differ by more than the checks allow, and so do ours);
    # its KL fit needs a tighter tol for the same (ours gives its numbers)
    [NMF(max_iter=500), NMF(solver="mu", beta_loss="kullback-leibler", max_iter=1000, tol=1e-6, init="nndsvda")]
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _corpus(n_docs=300, seed=0):
    """Documents drawn from three themes with a shared background vocabulary."""
    rng = np.random.RandomState(seed)
    themes = [
        "goal match team player league score coach season striker referee".split(),
        "vote election party senate policy minister campaign law budget parliament".split(),
        "cell protein gene enzyme membrane dna molecule tissue receptor virus".split(),
    ]
    background = "the a of and report week new people said time".split()
    docs = []
    for i in range(n_docs):
        words = list(rng.choice(themes[i % 3], size=20)) + list(rng.choice(background, size=10))
        if i % 7 == 0:
            words += list(rng.choice(themes[(i + 1) % 3], size=5))
        docs.append(" ".join(words))
    return docs


@pytest.fixture(scope="module")
def tfidf():
    return TfidfVectorizer().fit_transform(_corpus())


def test_readme_example_runs_unchanged():
    V = np.array([[5, 3, 0, 1], [4, 0, 0, 1], [1, 1, 0, 5], [1, 0, 4, 4], [0, 1, 5, 4]])
    model = NMF(n_components=2, init="random", random_state=42, max_iter=500)
    W = model.fit_transform(V)
    H = model.components_
    err = np.linalg.norm(V - W @ H)
    reference = SklearnNMF(n_components=2, init="random", random_state=42, max_iter=500)
    W_ref = reference.fit_transform(V)
    err_ref = np.linalg.norm(V - W_ref @ reference.components_)
    assert err <= ERROR_SLACK * err_ref
    assert model.reconstruction_err_ == pytest.approx(err, rel=1e-9)


def test_articles_example_runs_unchanged(tfidf):
    articles = tfidf
    nmf = NMF(n_components=6, random_state=0)
    nmf_features = nmf.fit_transform(articles)
    norm_features = normalize(nmf_features)
    similarities = norm_features.dot(norm_features[23])
    assert similarities.shape == (articles.shape[0],)
    assert similarities[23] == pytest.approx(1.0)
    # Documents of article 23's theme (23 % 3) are the most similar on average.
    theme = np.arange(articles.shape[0]) % 3
    means = [similarities[theme == t].mean() for t in range(3)]
    assert np.argmax(means) == 23 % 3
    reference = SklearnNMF(n_components=6, random_state=0).fit(articles)
    assert nmf.reconstruction_err_ <= ERROR_SLACK * reference.reconstruction_err_


@pytest.mark.parametrize("k", [5, 10, 16])
def test_default_error_on_digits_matches_sklearn(k):
    X = load_digits().data
    ours = NMF(n_components=k, random_state=0).fit(X)
    theirs = SklearnNMF(n_components=k, random_state=0).fit(X)
    assert ours.reconstruction_err_ <= ERROR_SLACK * theirs.reconstruction_err_


@pytest.mark.parametrize("k", [5, 10, 16])
def test_default_error_on_tfidf_matches_sklearn(tfidf, k):
    ours = NMF(n_components=k, random_state=0).fit(tfidf)
    theirs = SklearnNMF(n_components=k, random_state=0).fit(tfidf)
    assert ours.reconstruction_err_ <= ERROR_SLACK * theirs.reconstruction_err_


@pytest.mark.parametrize(
    "params", [dict(solver="cd"), dict(solver="mu"), dict(solver="mu", beta_loss="kullback-leibler")]
)
@pytest.mark.parametrize("sparse", [False, True])
def test_fit_transform_is_the_last_iterate_and_transform_comes_close(params, sparse):
    """As scikit-learn's: ``fit_transform`` returns the last iterate's W (the functional
    API's numbers), and ``transform`` solves W again for the final H, close to it."""
    X = load_digits().data[:400]
    X = sp.csr_matrix(X) if sparse else X
    W_fit_transform = NMF(n_components=8, random_state=0, **params).fit_transform(X)
    W_function, _, _ = non_negative_factorization(X, n_components=8, random_state=0, **params)
    np.testing.assert_array_equal(W_fit_transform, W_function)
    W_transform = NMF(n_components=8, random_state=0, **params).fit(X).transform(X)
    assert np.linalg.norm(W_transform - W_fit_transform) <= TRANSFORM_CLOSE * np.linalg.norm(W_fit_transform)


def test_fitted_attributes_and_inverse_transform():
    X = load_digits().data
    model = NMF(n_components=6, random_state=0)
    W = model.fit_transform(X)
    assert model.components_.shape == (6, 64)
    assert model.n_components_ == 6
    assert model.n_features_in_ == 64
    assert 1 <= model.n_iter_ <= model.max_iter
    assert len(model.loss_history_) >= 2
    assert model.reconstruction_err_ == pytest.approx(np.linalg.norm(X - W @ model.components_), rel=1e-8)
    assert model.reconstruction_err_ == pytest.approx(np.sqrt(2 * model.loss_history_[-1]))
    np.testing.assert_allclose(model.inverse_transform(W), W @ model.components_)
    assert list(model.get_feature_names_out()) == [f"nmf{i}" for i in range(6)]


def test_pandas_feature_names():
    pd = pytest.importorskip("pandas")
    X = pd.DataFrame(load_digits().data[:200, :10], columns=[f"px{i}" for i in range(10)])
    model = NMF(n_components=3, random_state=0).fit(X)
    assert list(model.feature_names_in_) == list(X.columns)
    assert isinstance(model.transform(X), np.ndarray)


def test_output_types_follow_input(tmp_path):
    X = load_digits().data[:300].astype(np.float32)
    W_numpy = NMF(n_components=4, random_state=0, panel_rows=100).fit_transform(X)
    assert isinstance(W_numpy, np.ndarray) and W_numpy.dtype == np.float32

    X_dask = da.from_array(X, chunks=(100, 64))
    model = NMF(n_components=4, random_state=0)
    W_dask = model.fit_transform(X_dask)
    assert isinstance(W_dask, da.Array)
    assert W_dask.chunks[0] == (100, 100, 100)
    np.testing.assert_allclose(W_dask.compute(), W_numpy, rtol=1e-5, atol=1e-5)
    assert isinstance(model.transform(X_dask), da.Array)

    z = zarr.create_array(str(tmp_path / "x.zarr"), shape=X.shape, chunks=(100, 64), dtype=X.dtype)
    z[:] = X
    W_zarr = NMF(n_components=4, random_state=0, panel_rows=100).fit_transform(str(tmp_path / "x.zarr"))
    assert isinstance(W_zarr, da.Array)
    np.testing.assert_allclose(W_zarr.compute(), W_dask.compute(), rtol=1e-5, atol=1e-5)


def test_non_negative_factorization_matches_sklearn_signature():
    X = load_digits().data[:300]
    W, H, n_iter = non_negative_factorization(X, n_components=5, random_state=0)
    assert W.shape == (300, 5) and H.shape == (5, 64) and isinstance(n_iter, int)
    W_frozen, H_same, _ = non_negative_factorization(X, H=H, n_components=5, update_H=False)
    assert H_same is not None and np.array_equal(H_same, H)
    assert np.linalg.norm(X - W_frozen @ H) <= np.linalg.norm(X - W @ H) * (1 + 1e-6)


@pytest.mark.parametrize(
    "params, error, match",
    [
        (dict(n_components=0), ValueError, "n_components must be >= 1, got 0"),
        (dict(n_components=-2), ValueError, "n_components must be >= 1, got -2"),
        (dict(n_components=1.5), TypeError, "n_components must be an integer, got 1.5"),
        (dict(solver="lbfgs"), ValueError, "solver must be one of .* got 'lbfgs'"),
        (dict(init="svd"), ValueError, "init must be one of .* got 'svd'"),
        (dict(beta_loss="poisson"), ValueError, "beta_loss must be one of .* got 'poisson'"),
        (dict(beta_loss="kullback-leibler"), ValueError, "solver 'cd' does not handle beta_loss"),
        (dict(tol=-1.0), ValueError, "tol must be >= 0, got -1.0"),
        (dict(max_iter=0), ValueError, "max_iter must be >= 1, got 0"),
        (dict(alpha_W=-0.1), ValueError, "alpha_W must be >= 0, got -0.1"),
        (dict(alpha_H="other"), ValueError, "alpha_H must be one of \\['same'\\], got 'other'"),
        (dict(l1_ratio=2.0), ValueError, "l1_ratio must be <= 1, got 2.0"),
        (dict(inner_sweeps=0), ValueError, "inner_sweeps must be >= 1, got 0"),
        (dict(n_components=70, init="nndsvda"), ValueError, r"init = 'nndsvda' can only be used when n_components <= "),
    ],
)
def test_bad_parameters_name_the_value(params, error, match):
    X = load_digits().data[:50]
    with pytest.raises(error, match=match):
        NMF(**params).fit(X)


@pytest.mark.parametrize(
    "X, error, match",
    [
        (-np.ones((4, 3)), ValueError, "Negative values in data passed to NMF"),
        (np.array([[1.0, np.nan], [1.0, 2.0]]), ValueError, "NaN"),
        (np.array([[1.0, np.inf], [1.0, 2.0]]), ValueError, "infinity"),
        (np.ones((4, 3), dtype=bool), TypeError, "boolean dtype bool"),
        (np.ones(5), ValueError, "2D array"),
    ],
)
def test_bad_input_gets_a_clear_error(X, error, match):
    with pytest.raises(error, match=match):
        NMF(n_components=2).fit(X)


def test_out_of_core_bad_input_is_caught_before_iterating():
    X = da.from_array(-np.ones((20, 5)), chunks=(5, 5))
    with pytest.raises(ValueError, match="Negative values in data passed to NMF"):
        NMF(n_components=2).fit(X)


def test_convergence_warning_at_max_iter():
    X = load_digits().data[:200]
    with pytest.warns(ConvergenceWarning, match="Maximum number of iterations 3 reached"):
        NMF(n_components=5, max_iter=3, random_state=0).fit(X)


def test_checkpointed_fit_resumes_to_the_uninterrupted_result(tmp_path):
    X = load_digits().data[:400]
    params = dict(n_components=6, init="random", random_state=0, tol=0, panel_rows=100)
    uninterrupted = NMF(max_iter=12, **params).fit(X)
    directory = tmp_path / "run.ckpt"
    first = NMF(max_iter=6, checkpoint=directory, checkpoint_every=3, **params).fit(X)
    assert first.n_iter_ == 6
    resumed = NMF(max_iter=12, checkpoint=directory, checkpoint_every=3, **params).fit(X)
    assert resumed.n_iter_ == 12
    np.testing.assert_array_equal(resumed.components_, uninterrupted.components_)  # bit for bit
    assert resumed.loss_history_ == uninterrupted.loss_history_


def test_checkpoint_of_another_matrix_is_refused(tmp_path):
    X = load_digits().data[:400]
    directory = tmp_path / "run.ckpt"
    with pytest.warns(ConvergenceWarning):
        NMF(n_components=4, max_iter=3, random_state=0, checkpoint=directory, checkpoint_every=1).fit(X)
    with pytest.raises(ValueError, match="shape"):
        NMF(n_components=4, max_iter=3, random_state=0, checkpoint=directory).fit(X[:300])
