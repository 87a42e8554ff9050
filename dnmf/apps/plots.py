"""Pictures of a factorization: heatmaps, convergence, components; PNG files.

Each function draws one matplotlib :class:`~matplotlib.figure.Figure` on the
non-interactive Agg canvas (pyplot is never imported and no global backend is set, so
this works on servers and inside notebooks alike), saves it as a PNG when ``out`` is
given, and returns it. matplotlib is imported on first use only; ``import dnmf`` does
not load it. A saved PNG is ``figsize * DPI`` pixels (e.g. 1500 x 500 for
:func:`plot_reconstruction`).

Big matrices are sampled
------------------------
Heatmaps show at most ``max_rows`` rows and ``max_columns`` columns
(:data:`SAMPLE_ROWS`, :data:`SAMPLE_COLUMNS`): a matrix with more is drawn on an evenly
spaced sample of its rows (columns) that always includes the first and the last one
(:func:`sample_indices`), and the panel's title says so ("rows: 200 of 100000, evenly
spaced"). Only the sampled rows are read: from a Zarr array the chunks that hold them,
from a CSR group their entries. ``V - WH`` is computed on the sample only, never whole.

Small matrices (at most :data:`ANNOTATE_MAX` rows and columns) get their values written
in the cells (``annotate=None``; force with True/False).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import dask.array as da
import numpy as np
import scipy.sparse as sp
import zarr
from numpy.typing import ArrayLike

from ..engine.driver import compute
from ..engine.state import FitResult
from ..errors import InputError, InputTypeError, NotFoundError, ParameterError
from ..io.results import FIT_KIND, Result, read_result
from ..io.storage import CSRMatrix, MatrixLike, as_panels, open_matrix

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..estimator import NMF

__all__ = [
    "ANNOTATE_MAX",
    "DPI",
    "PLOT_KINDS",
    "SAMPLE_COLUMNS",
    "SAMPLE_ROWS",
    "plot",
    "plot_components",
    "plot_convergence",
    "plot_factors",
    "plot_reconstruction",
    "sample_indices",
]

logger = logging.getLogger(__name__)

#: Most rows a heatmap shows; more are sampled (see the module docstring).
SAMPLE_ROWS = 200
#: Most columns a heatmap shows; more are sampled.
SAMPLE_COLUMNS = 200
#: Heatmaps with at most this many rows and columns have their values written in.
ANNOTATE_MAX = 12
#: Resolution of saved PNGs (pixels per inch of ``figsize``).
DPI = 100
#: Components shown at most by :func:`plot_components`.
MAX_COMPONENTS = 64
#: Features listed per component by :func:`plot_components` without ``image_shape``.
TOP_FEATURES = 10
#: What :func:`plot` (and `dnmf plot --kind`) draws.
PLOT_KINDS = ("reconstruction", "factors", "convergence", "components")
#: Most tick labels on a heatmap axis: row/column numbers, names (labels, terms).
MAX_TICKS, MAX_NAMED_TICKS = 12, 40
#: Figure sizes in inches.
RECONSTRUCTION_SIZE = (15, 5)
FACTORS_SIZE = (12, 5)
CONVERGENCE_SIZE = (7, 4.5)
#: Inches per component panel in :func:`plot_components`.
COMPONENT_CELL = {"image": (1.6, 1.8), "bars": (3.2, 2.6)}
#: Fixed margins of the figures whose labels have known lengths (numbers).
RECONSTRUCTION_MARGINS = {"left": 0.04, "right": 0.99, "bottom": 0.1, "top": 0.87, "wspace": 0.15}
CONVERGENCE_MARGINS = {"left": 0.13, "right": 0.97, "bottom": 0.12, "top": 0.9}
#: Colormaps.
VALUES_CMAP, RESIDUAL_CMAP, IMAGE_CMAP = "viridis", "RdBu_r", "gray_r"


# ------------------------------------------------------------------------ sampling


def sample_indices(size: int, limit: int | None) -> np.ndarray:
    """At most ``limit`` evenly spaced indices of ``range(size)``, first and last included.

    Parameters
    ----------
    size : int
    limit : int or None
        None: all indices.

    Returns
    -------
    ndarray of int64, sorted, unique
    """
    if limit is None or size <= limit:
        return np.arange(size, dtype=np.int64)
    if limit < 1:
        raise ParameterError(f"sample size must be a positive integer, got {limit!r}")
    if limit == 1:
        return np.zeros(1, dtype=np.int64)
    return np.unique(np.round(np.linspace(0, size - 1, limit)).astype(np.int64))


def _read(X, rows, columns=None):
    """Dense ``X[rows][:, columns]`` (all columns if None), reading only those rows."""
    if isinstance(X, (str, os.PathLike)):
        X = open_matrix(X)
    if isinstance(X, CSRMatrix):
        block = _csr_rows(X, rows)
    elif isinstance(X, zarr.Array):
        block = X.get_orthogonal_selection((rows, slice(None) if columns is None else columns))
        columns = None
    elif isinstance(X, da.Array):
        block = compute(X[rows])[0]
    elif sp.issparse(X):
        block = sp.csr_matrix(X)[rows]
    else:
        block = compute(as_panels(X).array[rows])[0]
    if columns is not None:
        block = block[:, columns]
    block = block.toarray() if sp.issparse(block) else np.asarray(block)
    return block.astype(np.float64, copy=False)


def _csr_rows(X, rows):
    """Rows ``rows`` of a CSR group: one coordinate read per array, each stored chunk read once."""
    rows = np.asarray(rows, dtype=np.int64)
    starts = np.asarray(X.indptr.get_coordinate_selection(rows), dtype=np.int64)
    ends = np.asarray(X.indptr.get_coordinate_selection(rows + 1), dtype=np.int64)
    lengths = ends - starts
    positions = np.concatenate([np.arange(a, b) for a, b in zip(starts, ends)] + [np.empty(0, np.int64)])
    data = X.data.get_coordinate_selection(positions) if positions.size else np.empty(0, X.dtype)
    indices = X.indices.get_coordinate_selection(positions) if positions.size else np.empty(0, np.int64)
    pointers = np.concatenate([[0], np.cumsum(lengths)])
    return sp.csr_matrix((data, indices, pointers), shape=(len(rows), X.shape[1]))


def _shape(X):
    if isinstance(X, (str, os.PathLike)):
        X = open_matrix(X)
    shape = getattr(X, "shape", None)
    if shape is None:
        shape = np.shape(X)
    if len(shape) != 2:
        raise InputError(f"expected a 2-D matrix, got shape {tuple(shape)}")
    return tuple(int(s) for s in shape)


def _sample_note(taken, total, what):
    return f"{what}: {taken} of {total}, evenly spaced" if taken < total else f"{what}: all {total}"


# --------------------------------------------------------------------- matplotlib


def new_figure(size: tuple[float, float], margins: dict[str, float] | None = None) -> Figure:
    """A Figure on the Agg canvas (no pyplot, no global state).

    ``margins`` (``subplots_adjust`` arguments) fix the layout, which is much faster to
    draw than the default constrained layout that fits labels of any length.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size, dpi=DPI, layout=None if margins else "constrained")
    FigureCanvasAgg(figure)
    if margins:
        figure.subplots_adjust(**margins)
    return figure


def save_figure(figure: Figure, out: str | os.PathLike[str] | None) -> Figure:
    if out is not None:
        out = Path(out)
        if not out.parent.exists():
            raise NotFoundError(f"folder of the output image not found: {out.parent}")
        figure.savefig(out, format="png", dpi=DPI)
        logger.info("wrote %s (%d x %d px)", out, *(figure.get_size_inches() * DPI).round().astype(int))
    return figure


def _heatmap(
    axes, values, title, *, cmap=VALUES_CMAP, vmin=None, vmax=None, annotate=None, row_labels=None, column_labels=None
):
    image = axes.imshow(values, aspect="auto", interpolation="nearest", cmap=cmap, vmin=vmin, vmax=vmax)
    axes.figure.colorbar(image, ax=axes, shrink=0.85)
    axes.set_title(title, fontsize=10)
    rows, columns = values.shape
    if annotate is None:
        annotate = rows <= ANNOTATE_MAX and columns <= ANNOTATE_MAX
    if annotate:
        low, high = image.get_clim()
        middle = (low + high) / 2
        for (i, j), value in np.ndenumerate(values):
            light = cmap == RESIDUAL_CMAP and abs(value) > 0.5 * max(abs(low), abs(high))
            dark = cmap != RESIDUAL_CMAP and value < middle
            colour = "white" if light or dark else "black"
            axes.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=7, color=colour)
    if row_labels is not None:
        _ticks(axes.set_yticks, row_labels)
    if column_labels is not None:
        _ticks(axes.set_xticks, column_labels, rotation=90)
    return image


def _ticks(setter, labels, rotation=0):
    """At most :data:`MAX_TICKS` (numbers) or :data:`MAX_NAMED_TICKS` (names) tick labels."""
    named = len(labels) > 0 and isinstance(labels[0], str)
    step = max(1, math.ceil(len(labels) / (MAX_NAMED_TICKS if named else MAX_TICKS)))
    positions = list(range(0, len(labels), step))
    setter(positions, [str(labels[p]) for p in positions], fontsize=7, rotation=rotation)


# ------------------------------------------------------------------------- figures


def plot_reconstruction(
    V: MatrixLike,
    W: ArrayLike | da.Array | zarr.Array,
    H: ArrayLike,
    *,
    out: str | os.PathLike[str] | None = None,
    max_rows: int | None = SAMPLE_ROWS,
    max_columns: int | None = SAMPLE_COLUMNS,
    annotate: bool | None = None,
) -> Figure:
    """V, W·H and V − W·H side by side, as heatmaps (on a sample of a big V).

    Parameters
    ----------
    V : array-like, sparse matrix, Dask/Zarr array, CSRMatrix or path, shape (m, n)
    W : array-like, Dask or Zarr array of shape (m, k)
    H : array-like of shape (k, n)
    out : str or path, optional
        PNG to write (``RECONSTRUCTION_SIZE * DPI`` pixels).
    max_rows, max_columns : int or None
        Sample size (see the module docstring); None shows everything.
    annotate : bool, optional
        Write values in the cells (default: only for small matrices).

    Returns
    -------
    matplotlib.figure.Figure
    """
    m, n = _shape(V)
    if _shape(W)[0] != m or np.shape(H)[1] != n or _shape(W)[1] != np.shape(H)[0]:
        raise InputError(f"shapes do not match: V {(m, n)}, W {_shape(W)}, H {np.shape(H)}")
    rows, columns = sample_indices(m, max_rows), sample_indices(n, max_columns)
    WH = _read(W, rows) @ np.asarray(H, dtype=np.float64)[:, columns]
    return _reconstruction(_read(V, rows, columns), WH, (m, n), (rows, columns), out, annotate)


def _reconstruction(V, WH, shape, sample, out, annotate):
    R = V - WH
    norm = float(np.linalg.norm(V))
    relative = float(np.linalg.norm(R)) / norm if norm > 0 else float("nan")
    figure = new_figure(RECONSTRUCTION_SIZE, RECONSTRUCTION_MARGINS)
    axes = figure.subplots(1, 3)
    high = float(max(V.max(initial=0.0), WH.max(initial=0.0))) or 1.0
    bound = float(np.abs(R).max(initial=0.0)) or 1.0
    (rows, columns), (m, n) = sample, shape
    where = {"row_labels": rows if len(rows) < m else None, "column_labels": columns if len(columns) < n else None}
    _heatmap(axes[0], V, "V", vmin=0, vmax=high, annotate=annotate, **where)
    _heatmap(axes[1], WH, "W·H", vmin=0, vmax=high, annotate=annotate, **where)
    _heatmap(
        axes[2],
        R,
        f"V − W·H (relative error {relative:.3g} on the sample)",
        cmap=RESIDUAL_CMAP,
        vmin=-bound,
        vmax=bound,
        annotate=annotate,
        **where,
    )
    notes = f"{_sample_note(len(rows), m, 'rows')}; {_sample_note(len(columns), n, 'columns')}"
    figure.suptitle(f"V ({m} x {n}) and its reconstruction — {notes}", fontsize=11)
    return save_figure(figure, out)


def plot_factors(
    W: ArrayLike | da.Array | zarr.Array,
    H: ArrayLike,
    *,
    out: str | os.PathLike[str] | None = None,
    max_rows: int | None = SAMPLE_ROWS,
    max_columns: int | None = SAMPLE_COLUMNS,
    annotate: bool | None = None,
    feature_names: Sequence[str] | np.ndarray | None = None,
    row_labels: Sequence[str] | np.ndarray | None = None,
) -> Figure:
    """Heatmaps of W (rows x components) and H (components x features).

    Parameters
    ----------
    W : array-like, Dask or Zarr array of shape (m, k)
    H : array-like of shape (k, n)
    out : str or path, optional
        PNG to write (``FACTORS_SIZE * DPI`` pixels).
    max_rows, max_columns : int or None
        Sample sizes of W's rows and H's columns.
    annotate : bool, optional
        Write values in the cells (default: only for small matrices).
    feature_names : sequence of str, optional
        Column labels of H.
    row_labels : sequence of str, optional
        Row labels of W.

    Returns
    -------
    matplotlib.figure.Figure
    """
    m, k = _shape(W)
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2 or H.shape[0] != k:
        raise InputError(f"shapes do not match: W {(m, k)}, H {H.shape}")
    rows = sample_indices(m, max_rows)
    return _factors_figure(_read(W, rows), H, m, rows, row_labels, out, max_columns, annotate, feature_names)


def _factors_figure(W, H, m, rows, row_labels, out, max_columns, annotate, feature_names):
    """W: rows ``rows`` of the (m, k) W."""
    k, n = H.shape
    columns = sample_indices(n, max_columns)
    if row_labels is not None:
        row_labels = [row_labels[r] for r in rows]
    elif len(rows) < m:
        row_labels = rows
    if feature_names is not None:
        feature_names = [feature_names[c] for c in columns]
    elif len(columns) < n:
        feature_names = columns
    figure = new_figure(FACTORS_SIZE)
    left, right = figure.subplots(1, 2, width_ratios=[1, 2])
    components = [f"c{c}" for c in range(k)]
    _heatmap(
        left,
        W,
        f"W ({m} x {k}) — {_sample_note(W.shape[0], m, 'rows')}",
        annotate=annotate,
        row_labels=row_labels,
        column_labels=components,
    )
    _heatmap(
        right,
        H[:, columns],
        f"H ({k} x {n}) — {_sample_note(len(columns), n, 'columns')}",
        annotate=annotate,
        row_labels=components,
        column_labels=feature_names,
    )
    left.set_xlabel("component")
    right.set_ylabel("component")
    return save_figure(figure, out)


def plot_convergence(
    loss_history: Sequence[float] | NMF | FitResult | Result | str | os.PathLike[str],
    *,
    out: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> Figure:
    """The loss after each iteration (iteration 0: the initialization).

    Parameters
    ----------
    loss_history : sequence of float, or a fitted NMF / FitResult / result with one
    out : str or path, optional
        PNG to write (``CONVERGENCE_SIZE * DPI`` pixels).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    losses = np.asarray(_loss_history(loss_history), dtype=np.float64)
    if losses.ndim != 1 or losses.size == 0:
        raise InputError(f"loss history must be a non-empty sequence of numbers, got shape {losses.shape}")
    figure = new_figure(CONVERGENCE_SIZE, CONVERGENCE_MARGINS)
    axes = figure.subplots()
    axes.plot(np.arange(losses.size), losses, marker="o" if losses.size <= 50 else None, markersize=3)
    if np.all(losses > 0):
        axes.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("iteration (0: the initialization)")
    axes.set_ylabel("loss")
    axes.grid(True, which="both", alpha=0.3)
    drop = f", {losses[0] / losses[-1]:.3g}x below the initial loss" if losses[-1] > 0 else ""
    axes.set_title(title or f"convergence: final loss {losses[-1]:.4g}{drop}", fontsize=10)
    return save_figure(figure, out)


def plot_components(
    H: ArrayLike,
    image_shape: tuple[int, int] | None = None,
    *,
    out: str | os.PathLike[str] | None = None,
    feature_names: Sequence[str] | np.ndarray | None = None,
    top: int = TOP_FEATURES,
    max_components: int = MAX_COMPONENTS,
    columns: int | None = None,
) -> Figure:
    """Each component (row of H) as an image, or as a bar chart of its top features.

    Parameters
    ----------
    H : array-like of shape (k, n)
        ``components_``.
    image_shape : (int, int), optional
        Show each component as a ``height x width`` image (``height * width == n``).
    out : str or path, optional
        PNG to write (a grid of panels; ``COMPONENT_CELL`` inches each).
    feature_names : sequence of str, optional
        Bar labels when there is no ``image_shape`` (e.g. a topic model's vocabulary).
    top : int
        Bars per component.
    max_components : int
        Components shown at most (the first ones).
    columns : int, optional
        Panels per row of the grid (default: about square).

    Returns
    -------
    matplotlib.figure.Figure
    """
    H = np.asarray(H, dtype=np.float64)
    if H.ndim != 2:
        raise InputError(f"H must be 2-D (components x features), got shape {H.shape}")
    k, n = H.shape
    if image_shape is not None:
        height, width = (int(s) for s in image_shape)
        if height < 1 or width < 1 or height * width != n:
            raise InputError(
                f"image shape {height} x {width} = {height * width} pixels does not match the {n} features of H"
            )
    if feature_names is not None and len(feature_names) != n:
        raise InputError(f"got {len(feature_names)} feature names for {n} features")
    shown = min(k, max_components)
    grid = columns or max(1, math.ceil(math.sqrt(shown)))
    lines = math.ceil(shown / grid)
    cell = COMPONENT_CELL["image" if image_shape is not None else "bars"]
    figure = new_figure((cell[0] * grid, cell[1] * lines + 0.4))
    axes = np.atleast_1d(figure.subplots(lines, grid, squeeze=False)).ravel()
    for c, ax in enumerate(axes):
        if c >= shown:
            ax.set_axis_off()
            continue
        if image_shape is not None:
            ax.imshow(H[c].reshape(height, width), cmap=IMAGE_CMAP, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            order = np.argsort(-H[c], kind="stable")[:top][::-1]
            names = [str(feature_names[j]) if feature_names is not None else f"feature {j}" for j in order]
            ax.barh(range(len(order)), H[c, order], color="tab:blue")
            ax.set_yticks(range(len(order)), names, fontsize=7)
            ax.tick_params(axis="x", labelsize=6)
        ax.set_title(f"component {c}", fontsize=8)
    more = f" (first {shown} of {k})" if shown < k else ""
    figure.suptitle(f"{k} components{more}", fontsize=10)
    return save_figure(figure, out)


# ---------------------------------------------------------------------- dispatcher


def _loss_history(source):
    """A loss history from a sequence, a fitted NMF, a FitResult or a fit result (path or Result)."""
    if isinstance(source, (str, os.PathLike)):
        source = read_result(source)
    if isinstance(source, Result):
        if "loss_history" not in source.attrs:
            raise InputError(f"{source.path} records no loss history (a transform result?)")
        return source.attrs["loss_history"]
    for name in ("loss_history_", "loss_history"):
        if hasattr(source, name):
            return getattr(source, name)
    if hasattr(source, "components_"):
        raise InputError("this model records no loss history (scikit-learn's NMF does not; dnmf.NMF does)")
    return source


def _factors(source):
    """``(W or None, H, input path or None)`` of a model, a FitResult or a fit result."""
    if isinstance(source, (str, os.PathLike)):
        source = read_result(source)
    if isinstance(source, Result):
        if source.kind != FIT_KIND:
            raise InputError(f"{source.path} is a transform result (no H); plot needs the OUT of a fit")
        return source.W, source.H, source.attrs.get("input")
    if hasattr(source, "components_"):
        return None, np.asarray(source.components_), None
    if isinstance(source, FitResult):
        return source.W, np.asarray(source.H), None
    raise InputTypeError(f"cannot plot a {type(source).__name__}: pass a fitted NMF, a FitResult or a fit result path")


def plot(
    source: NMF | FitResult | Result | str | os.PathLike[str],
    kind: Literal["reconstruction", "factors", "convergence", "components"],
    out: str | os.PathLike[str] | None = None,
    *,
    V: MatrixLike | None = None,
    image_shape: tuple[int, int] | None = None,
    feature_names: Sequence[str] | np.ndarray | None = None,
    row_labels: Sequence[str] | np.ndarray | None = None,
    max_rows: int | None = SAMPLE_ROWS,
    max_columns: int | None = SAMPLE_COLUMNS,
    annotate: bool | None = None,
) -> Figure:
    """One of the plots of a fitted model, by name (what `dnmf plot` draws).

    Parameters
    ----------
    source : fitted dnmf.NMF, dnmf.FitResult, or a fit result (path or dnmf.io.results.Result)
    kind : {"reconstruction", "factors", "convergence", "components"}
    out : str or path, optional
        PNG to write.
    V : matrix or path, optional
        The factorized matrix, for "reconstruction" (and "factors" of a model, which
        keeps no W); default: the input recorded in a fit result. For a model, W of the
        sampled rows is computed with ``model.transform``.
    image_shape : (int, int), optional
        For "components": show components as images.
    feature_names : sequence of str, optional
        Labels of the columns of V (H's columns; "components" bars).
    row_labels : sequence of str, optional
        Labels of the rows of V (W's rows in "factors").
    max_rows, max_columns, annotate
        See :func:`plot_reconstruction`.

    Returns
    -------
    matplotlib.figure.Figure
    """
    if kind not in PLOT_KINDS:
        raise ParameterError(f"unknown plot kind {kind!r}; choose one of {', '.join(PLOT_KINDS)}")
    if kind == "convergence":
        return plot_convergence(source, out=out)
    W, H, recorded = _factors(source)
    if kind == "components":
        return plot_components(H, image_shape, out=out, feature_names=feature_names)
    V = recorded if V is None else V
    if V is None and (kind == "reconstruction" or W is None):
        raise ParameterError(f"plot kind {kind!r} needs V, the factorized matrix (V=..., --input)")
    if W is None:  # a model: W of the sampled rows only
        m, n = _shape(V)
        if n != H.shape[1]:
            raise InputError(f"V has {n} columns but the model has {H.shape[1]} features")
        rows, columns = sample_indices(m, max_rows), sample_indices(n, max_columns)
        V_rows = _read(V, rows)
        W_rows = np.asarray(source.transform(V_rows), dtype=np.float64)  # type: ignore[union-attr]  # no W: a model
        if kind == "factors":
            return _factors_figure(W_rows, H, m, rows, row_labels, out, max_columns, annotate, feature_names)
        return _reconstruction(V_rows[:, columns], W_rows @ H[:, columns], (m, n), (rows, columns), out, annotate)
    if kind == "factors":
        return plot_factors(
            W,
            H,
            out=out,
            max_rows=max_rows,
            max_columns=max_columns,
            annotate=annotate,
            feature_names=feature_names,
            row_labels=row_labels,
        )
    return plot_reconstruction(V, W, H, out=out, max_rows=max_rows, max_columns=max_columns, annotate=annotate)
