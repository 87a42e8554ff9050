"""Pictures: every PNG written is opened and checked — a real PNG, of the
expected pixel size, with non-trivial content — and the heatmaps hold exactly the
documented sample of the matrices.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import dask.array as da
import numpy as np
import pytest
import scipy.sparse as sp
import zarr
from matplotlib.image import imread
from PIL import Image

import dnmf
from dnmf import api
from dnmf.apps import plots
from dnmf.apps.plots import DPI, SAMPLE_COLUMNS, SAMPLE_ROWS, sample_indices
from dnmf.cli import main
from dnmf.io.results import write_fit

#: Pixel sizes (width, height) of the fixed-size figures.
RECONSTRUCTION_PX = (1500, 500)
FACTORS_PX = (1200, 500)
CONVERGENCE_PX = (700, 450)
#: A real picture has many colours and is not all background.
MIN_COLOURS = 16
MIN_INKED = 0.02
#: The convergence curve is drawn in matplotlib's first colour (tab:blue).
CURVE_RGB, MIN_CURVE_PIXELS = (0x1F, 0x77, 0xB4), 300


def assert_png(path, size=None, figure=None, curve=False):
    """``path`` is a PNG of ``size`` (or of ``figure``'s size) pixels with non-trivial content
    (and, with ``curve``, a drawn convergence curve)."""
    if figure is not None:
        size = tuple(int(round(s)) for s in figure.get_size_inches() * DPI)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.size == size, (image.size, size)
    pixels = imread(path)
    assert pixels.shape[:2] == (size[1], size[0])
    rgb = (pixels[..., :3].reshape(-1, 3) * 255).round().astype(np.uint32)
    colours = np.unique(rgb[:, 0] << 16 | rgb[:, 1] << 8 | rgb[:, 2])
    assert len(colours) >= MIN_COLOURS, f"only {len(colours)} colours"
    inked = np.mean(np.any(rgb < 245, axis=1))
    assert inked > MIN_INKED, f"only {inked:.1%} of the pixels are not background"
    assert rgb.std() > 10
    if curve:
        on_curve = np.sum(np.all(np.abs(rgb.astype(int) - CURVE_RGB) < 40, axis=1))
        assert on_curve >= MIN_CURVE_PIXELS, f"only {on_curve} pixels of the curve"


def low_rank(m, n, k, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    W, H = rng.random((m, k)), rng.random((k, n))
    return W @ H + noise * rng.random((m, n)), W, H


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A fit result OUT.zarr (written by dnmf.io.results) of a stored 90 x 48 V."""
    where = tmp_path_factory.mktemp("plots")
    V, _, _ = low_rank(90, 48, 4)
    stored = zarr.open_array(str(where / "V.zarr"), mode="w", shape=V.shape, chunks=(30, 48), dtype=V.dtype)
    stored[...] = V
    params = {**api.DEFAULTS, "n_components": 4, "max_iter": 15, "tol": 0.0, "random_state": 0, "init": "nndsvda"}
    result = api.run(V, params)
    write_fit(where / "out.zarr", result, params, input_path=str(where / "V.zarr"))
    return where, V


@pytest.fixture(scope="module")
def model(fitted):
    """A dnmf.NMF fitted on the same V."""
    return dnmf.NMF(4, init="nndsvda", max_iter=10, tol=0, random_state=0).fit(fitted[1])


def test_sample_indices_are_evenly_spaced_with_both_ends():
    np.testing.assert_array_equal(sample_indices(10, SAMPLE_ROWS), np.arange(10))
    rows = sample_indices(5000, 200)
    assert len(rows) == 200 and rows[0] == 0 and rows[-1] == 4999
    assert np.all(np.diff(rows) > 0) and np.ptp(np.diff(rows)) <= 1 + 1
    np.testing.assert_array_equal(sample_indices(7, None), np.arange(7))
    np.testing.assert_array_equal(sample_indices(7, 1), [0])
    with pytest.raises(ValueError, match="sample size must be a positive integer, got 0"):
        sample_indices(7, 0)


def test_reconstruction_of_a_big_matrix_shows_the_documented_sample(tmp_path):
    V, W, H = low_rank(3000, 500, 5)
    out = tmp_path / "reconstruction.png"
    figure = dnmf.plot_reconstruction(V, W, H, out=out)
    assert_png(out, RECONSTRUCTION_PX)
    rows, columns = sample_indices(3000, SAMPLE_ROWS), sample_indices(500, SAMPLE_COLUMNS)
    shown_V, shown_WH, shown_R = (axes.images[0].get_array() for axes in figure.axes[:3])
    np.testing.assert_allclose(shown_V, V[np.ix_(rows, columns)])
    np.testing.assert_allclose(shown_WH, (W @ H)[np.ix_(rows, columns)])
    np.testing.assert_allclose(shown_R, (V - W @ H)[np.ix_(rows, columns)], atol=1e-12)
    title = figure.get_suptitle()
    assert "rows: 200 of 3000, evenly spaced" in title and "columns: 200 of 500, evenly spaced" in title
    everything = dnmf.plot_reconstruction(V[:50, :40], W[:50], H[:, :40], max_rows=None)
    assert "rows: all 50" in everything.get_suptitle()


@pytest.mark.parametrize("kind", ["zarr", "csr-group", "scipy", "dask-sparse", "path"])
def test_stored_inputs_are_sampled_by_rows(kind, tmp_path):
    rng = np.random.default_rng(3)
    dense = sp.random(400, 60, density=0.2, random_state=4, format="csr").toarray()
    rows, columns = sample_indices(400, 37), sample_indices(60, 11)
    if kind == "zarr":
        X = zarr.open_array(str(tmp_path / "V.zarr"), mode="w", shape=dense.shape, chunks=(64, 60), dtype=dense.dtype)
        X[...] = dense
    elif kind in ("csr-group", "path"):
        X = dnmf.save_csr(dense, tmp_path / "V.zarr", chunk_entries=500)
        X = str(tmp_path / "V.zarr") if kind == "path" else X
    elif kind == "scipy":
        X = sp.csr_matrix(dense)
    else:
        X = da.from_array(sp.csr_matrix(dense), chunks=(100, 60), asarray=False)
    np.testing.assert_array_equal(plots._read(X, rows, columns), dense[np.ix_(rows, columns)])
    if kind == "csr-group":
        out = tmp_path / "stored.png"
        W = zarr.open_array(str(tmp_path / "W.zarr"), mode="w", shape=(400, 3), chunks=(50, 3), dtype=float)
        W[...] = rng.random((400, 3))
        dnmf.plot_reconstruction(X, W, rng.random((3, 60)), out=out, max_rows=37, max_columns=11)
        assert_png(out, RECONSTRUCTION_PX)


def test_small_factors_are_annotated(tmp_path):
    rng = np.random.default_rng(1)
    W, H = rng.random((6, 3)), rng.random((3, 8))
    out = tmp_path / "factors.png"
    figure = dnmf.plot_factors(W, H, out=out, feature_names=[f"f{j}" for j in range(8)])
    assert_png(out, FACTORS_PX)
    left, right = figure.axes[:2]  # then their colorbars
    assert len(left.texts) == 6 * 3 and len(right.texts) == 3 * 8
    assert left.texts[0].get_text() == f"{W[0, 0]:.3g}"
    assert [label.get_text() for label in right.get_xticklabels()] == [f"f{j}" for j in range(8)]
    big = dnmf.plot_factors(rng.random((1000, 3)), rng.random((3, 900)))
    assert not big.axes[0].texts and "rows: 200 of 1000" in big.axes[0].get_title()
    assert big.axes[1].images[0].get_array().shape == (3, 200)


def test_convergence_from_a_history_a_model_and_a_result(tmp_path, fitted, model):
    history = [10.0, 4.0, 2.0, 1.5, 1.4, 1.39]
    out = tmp_path / "convergence.png"
    figure = dnmf.plot_convergence(history, out=out)
    assert_png(out, CONVERGENCE_PX, curve=True)
    axes = figure.axes[0]
    np.testing.assert_array_equal(axes.lines[0].get_ydata(), history)
    assert axes.get_yscale() == "log"
    where, _ = fitted
    stored = zarr.open_group(str(where / "out.zarr"), mode="r").attrs["loss_history"]
    from_result = dnmf.plot_convergence(where / "out.zarr", out=tmp_path / "result.png")
    np.testing.assert_allclose(from_result.axes[0].lines[0].get_ydata(), stored)
    assert_png(tmp_path / "result.png", CONVERGENCE_PX, curve=True)
    np.testing.assert_allclose(dnmf.plot_convergence(model).axes[0].lines[0].get_ydata(), model.loss_history_)


def test_components_as_images_and_as_top_features(tmp_path):
    rng = np.random.default_rng(2)
    H = rng.random((6, 40)) ** 4
    out = tmp_path / "parts.png"
    figure = dnmf.plot_components(H, (8, 5), out=out)
    assert_png(out, figure=figure)
    assert tuple(np.round(figure.get_size_inches() * DPI)) == (3 * 160, 2 * 180 + 40)  # a 3 x 2 grid
    for c in range(6):
        np.testing.assert_array_equal(figure.axes[c].images[0].get_array(), H[c].reshape(8, 5))
    names = [f"word{j}" for j in range(40)]
    out = tmp_path / "bars.png"
    bars = dnmf.plot_components(H, feature_names=names, top=4, out=out)
    assert_png(out, figure=bars)
    shown = [label.get_text() for label in bars.axes[0].get_yticklabels()]
    assert shown == [names[j] for j in np.argsort(-H[0])[:4][::-1]]


def test_plot_by_kind_from_a_fit_result_and_from_a_model(tmp_path, fitted, model):
    where, V = fitted
    sizes = {"reconstruction": RECONSTRUCTION_PX, "factors": FACTORS_PX, "convergence": CONVERGENCE_PX}
    for kind in plots.PLOT_KINDS:
        out = tmp_path / f"{kind}.png"
        figure = dnmf.plot(where / "out.zarr", kind, out, image_shape=(6, 8) if kind == "components" else None)
        assert_png(out, sizes.get(kind), figure=figure if kind == "components" else None, curve=kind == "convergence")
    figure = dnmf.plot(model, "reconstruction", tmp_path / "model.png", V=V, max_rows=30)
    assert_png(tmp_path / "model.png", RECONSTRUCTION_PX)
    rows = sample_indices(90, 30)
    np.testing.assert_allclose(figure.axes[1].images[0].get_array(), model.transform(V[rows]) @ model.components_)
    dnmf.plot(model, "factors", tmp_path / "model-factors.png", V=V)
    assert_png(tmp_path / "model-factors.png", FACTORS_PX)


def test_bad_arguments_name_the_bad_value(tmp_path, fitted, model):
    where, V = fitted
    result = where / "out.zarr"
    with pytest.raises(ValueError, match="unknown plot kind 'heatmap'"):
        dnmf.plot(result, "heatmap")
    with pytest.raises(ValueError, match="image shape 7 x 7 = 49 pixels does not match the 48 features"):
        dnmf.plot(result, "components", image_shape=(7, 7))
    with pytest.raises(ValueError, match="'reconstruction' needs V"):
        dnmf.plot(model, "reconstruction")
    with pytest.raises(ValueError, match="shapes do not match"):
        dnmf.plot_reconstruction(V, np.ones((90, 3)), np.ones((2, 48)))
    with pytest.raises(FileNotFoundError, match="/nonexistent/dir"):
        dnmf.plot_convergence([1.0, 0.5], out="/nonexistent/dir/c.png")
    with pytest.raises(FileNotFoundError, match="/nonexistent/out.zarr"):
        dnmf.plot("/nonexistent/out.zarr", "convergence")
    with pytest.raises(ValueError, match="got 3 feature names for 48 features"):
        dnmf.plot_components(np.ones((2, 48)), feature_names=["a", "b", "c"])


def test_cli_plot_every_kind(tmp_path, fitted, capsys):
    where, _ = fitted
    result = str(where / "out.zarr")
    sizes = {
        "reconstruction": RECONSTRUCTION_PX,
        "factors": FACTORS_PX,
        "convergence": CONVERGENCE_PX,
        "components": (2 * 160, 2 * 180 + 40),
    }
    for kind, extra in [
        ("reconstruction", []),
        ("factors", []),
        ("convergence", []),
        ("components", ["--image-shape", "6", "8"]),
    ]:
        out = tmp_path / f"{kind}.png"
        assert main(["plot", result, "--kind", kind, "--out", str(out), *extra]) == 0
        assert capsys.readouterr().out.startswith(f"wrote {out} ({kind}")
        assert_png(out, sizes[kind], curve=kind == "convergence")
    out = tmp_path / "given-input.png"
    assert (
        main(
            [
                "plot",
                result,
                "--kind",
                "reconstruction",
                "--input",
                str(where / "V.zarr"),
                "--rows",
                "20",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert_png(out, RECONSTRUCTION_PX)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--kind", "components", "--image-shape", "7", "7"], "error: image shape 7 x 7 = 49 pixels does not match"),
        (["--kind", "heatmap"], "error: Invalid value for '--kind'"),
        (["--kind", "reconstruction", "--input", "/nonexistent/V.zarr"], "error: input not found: /nonexistent/V.zarr"),
        (["--kind", "convergence", "--out", "EXISTING"], "error: EXISTING already exists"),
    ],
)
def test_cli_plot_bad_input_exits_2(tmp_path, fitted, capsys, args, message):
    existing = tmp_path / "existing.png"
    existing.write_bytes(b"")
    args = [str(existing) if a == "EXISTING" else a for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "new.png")]
    assert main(["plot", str(fitted[0] / "out.zarr"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message.replace("EXISTING", str(existing))), err


def test_cli_plot_missing_result_and_moved_input(tmp_path, fitted, capsys):
    assert main(["plot", "/nonexistent/out.zarr", "--kind", "convergence", "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.strip() == "error: result not found: /nonexistent/out.zarr"
    V = fitted[1]
    params = {**api.DEFAULTS, "n_components": 2, "max_iter": 2, "tol": 0.0}
    write_fit(tmp_path / "moved.zarr", api.run(V, params), params, input_path=str(tmp_path / "gone.zarr"))
    assert (
        main(["plot", str(tmp_path / "moved.zarr"), "--kind", "reconstruction", "--out", str(tmp_path / "y.png")]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the input recorded in") and "gone.zarr" in err and "pass --input V" in err


def test_import_is_light_and_plots_leave_no_global_state(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys
        import dnmf
        assert "matplotlib" not in sys.modules, "import dnmf loaded matplotlib"
        import matplotlib
        backend = matplotlib.get_backend()
        dnmf.plot_convergence([3.0, 2.0, 1.0], out={str(tmp_path / "c.png")!r})
        assert matplotlib.get_backend() == backend
        import matplotlib.pyplot as plt
        assert plt.get_fignums() == [], "a figure was left open in pyplot"
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert_png(tmp_path / "c.png", CONVERGENCE_PX, curve=True)
