"""The one parameter table, its vocabulary, and the frozen configuration every layer takes.

The estimator, the functional API, the CLI and YAML configs all validate through
:data:`PARAMS`, so a bad value gets the same message everywhere (naming the keyword in
Python and the flag on the command line). Each :class:`Param` has a name (the estimator's
keyword; the CLI flag and config key is the same name with ``_`` → ``-`` and lower case,
see :attr:`Param.option`), a default, a check that raises a
:class:`~dnmf.errors.ParameterError` or :class:`~dnmf.errors.ParameterTypeError` naming
the bad value, a one-line description, and whether it changes the numbers a fit
produces (checkpoints refuse to resume when such a parameter differs).

:func:`resolve` turns a mapping of parameters into a :class:`FitConfig`: validated, with
every alias and spelling normalized (``solver="hals"`` → ``"cd"``, beta-loss names →
their beta, ``alpha_H="same"`` → ``alpha_W``, ``np.nan`` → ``"nan"``). The layers below
take that and never see the user's spellings.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .errors import ParameterError, ParameterTypeError
from .numerics.kernels import Penalty

__all__ = [
    "AUTO",
    "BETA_LOSS_NAMES",
    "DEFAULTS",
    "INIT_METHODS",
    "MISSING_MODES",
    "PARAMS",
    "SOLVERS",
    "FitConfig",
    "Param",
    "beta_to_float",
    "compute_penalties",
    "jsonable",
    "NOT_RECORDED",
    "recorded",
    "normalize_missing",
    "param",
    "resolve",
    "resolve_solver",
    "validate_params",
]

#: Solver names: "cd" is HALS (scikit-learn's name), "hals" an alias; "mu" multiplicative updates.
SOLVERS = ("cd", "hals", "mu")
#: The value that lets dnmf choose (``n_components``, ``inner_sweeps``, ``extrapolate``).
AUTO = "auto"
#: Accepted ``init`` names (``None`` picks one, as scikit-learn does).
INIT_METHODS = ("random", "nndsvd", "nndsvda", "nndsvdar", "custom")
#: Names accepted for ``beta_loss`` and the beta they stand for.
BETA_LOSS_NAMES = {"frobenius": 2.0, "kullback-leibler": 1.0, "itakura-saito": 0.0}
#: Canonical names of the missing-value modes (``missing_values`` is normalized to one).
MISSING_MODES = ("nan", "absent")


def beta_to_float(beta_loss):
    """``"frobenius"`` → 2.0, ``"kullback-leibler"`` → 1.0, ``"itakura-saito"`` → 0.0, floats as is."""
    if isinstance(beta_loss, str):
        return BETA_LOSS_NAMES[beta_loss]
    return float(beta_loss)


def normalize_missing(value, name="missing_values"):
    """``None`` → None; ``np.nan``, ``float("nan")`` or ``"nan"`` → ``"nan"``; ``"absent"`` → ``"absent"``.

    Raises
    ------
    ParameterError
        Any other value (named in the message, the parameter called ``name``).
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in MISSING_MODES:
            return text
    elif isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isnan(value):
        return "nan"
    raise ParameterError(
        f"{name} must be None, np.nan (or 'nan': NaN entries are missing) or 'absent' "
        f"(sparse input: absent entries are missing), got {value!r}"
    )


def jsonable(value):
    """A JSON-ready copy of a parameter value (NumPy scalars → Python; objects → their type name)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    return type(value).__name__


# Each check takes the value and the name to call it by: the keyword in Python, the flag
# (``--max-iter``) on the command line.


def _integer(low=None, allow_none=False):
    def check(value, name):
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ParameterTypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
        if low is not None and value < low:
            raise ParameterError(f"{name} must be >= {low}, got {value!r}")

    return check


def _real(low=None, high=None):
    def check(value, name):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ParameterTypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
        if not np.isfinite(value):
            raise ParameterError(f"{name} must be finite, got {value!r}")
        if low is not None and value < low:
            raise ParameterError(f"{name} must be >= {low}, got {value!r}")
        if high is not None and value > high:
            raise ParameterError(f"{name} must be <= {high}, got {value!r}")

    return check


def _one_of(options, allow_none=False):
    def check(value, name):
        if value is None and allow_none:
            return
        if value not in options:
            raise ParameterError(
                f"{name} must be one of {list(options)}{' or None' if allow_none else ''}, got {value!r}"
            )

    return check


def _or_auto(check):
    """``check``, with ``"auto"`` allowed too."""

    def with_auto(value, name):
        if isinstance(value, str) and value == AUTO:
            return
        check(value, name)

    return with_auto


def _n_components(value, name):
    if value is not None:
        _or_auto(_integer(low=1))(value, name)


def _beta_loss(value, name):
    (_one_of(tuple(BETA_LOSS_NAMES)) if isinstance(value, str) else _real())(value, name)


def _alpha_H(value, name):
    (_one_of(("same",)) if isinstance(value, str) else _real(low=0))(value, name)


def _random_state(value, name):
    if value is None or isinstance(value, np.random.RandomState):
        return
    _integer(low=0)(value, name)


def _boolean(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise ParameterTypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def _boolean_or_auto(value, name):
    if isinstance(value, str) and value == AUTO:
        return
    if not isinstance(value, (bool, np.bool_)):
        choices = "true, false or auto" if name.startswith("-") else f"True, False or {AUTO!r}"
        raise ParameterTypeError(f"{name} must be {choices}, got {value!r} ({type(value).__name__})")


def _anything(value, name):
    return None


def _mapping(value, name):
    if value is not None and not isinstance(value, Mapping):
        raise ParameterTypeError(f"{name} must be a dict of filesystem options or None, got {type(value).__name__}")


@dataclass(frozen=True)
class Param:
    """One row of the parameter table."""

    name: str
    default: Any
    check: Callable[[Any, str], None]
    doc: str
    changes_result: bool = True

    def check_value(self, value, name=None):
        """Raise ``ParameterError``/``ParameterTypeError`` for a bad ``value``, calling it ``name``."""
        self.check(value, name or self.name)

    @property
    def option(self):
        """The CLI long option / YAML key: ``alpha_W`` → ``alpha-w``."""
        return self.name.replace("_", "-").lower()


PARAMS = (
    Param("n_components", AUTO, _n_components, "Rank k; 'auto' (or None): all features, or H's rows with custom H."),
    Param("init", None, _one_of(INIT_METHODS, allow_none=True), "Initialization; None picks as scikit-learn."),
    Param("solver", "cd", _one_of(SOLVERS), "'cd' (HALS, alias 'hals') or 'mu' (multiplicative updates)."),
    Param("beta_loss", "frobenius", _beta_loss, "'frobenius', 'kullback-leibler', 'itakura-saito' or a float beta."),
    Param("tol", 1e-4, _real(low=0), "Stopping tolerance, as scikit-learn's (see dnmf.engine.driver)."),
    Param("max_iter", 200, _integer(low=1), "Maximum number of outer iterations (passes over V)."),
    Param("random_state", None, _random_state, "Seed of the random/nndsvd* initializations."),
    Param("alpha_W", 0.0, _real(low=0), "Penalty weight on W (scaled by n_features, as scikit-learn)."),
    Param("alpha_H", "same", _alpha_H, "Penalty weight on H (scaled by n_samples); 'same' uses alpha_W."),
    Param("l1_ratio", 0.0, _real(low=0, high=1), "Share of L1 in the penalties (0: pure L2)."),
    Param("verbose", 0, _integer(low=0), "Log each iteration at INFO level when > 0.", changes_result=False),
    Param(
        "inner_sweeps",
        AUTO,
        _or_auto(_integer(low=1)),
        "HALS sweeps (or MU updates) per factor per pass over V; 'auto': by cost (cd, large V), else 1.",
    ),
    Param(
        "extrapolate",
        AUTO,
        _boolean_or_auto,
        "Extrapolated HALS: fewer passes to a given error; 'auto': on for cd on a large V without missing values.",
    ),
    Param(
        "missing_values",
        None,
        normalize_missing,
        "Missing entries, left out of the loss: nan (NaN entries) or absent (sparse: absent entries).",
    ),
    Param("panel_rows", None, _integer(low=1, allow_none=True), "Rows per panel of V (default: ~64 MiB)."),
    Param(
        "client",
        None,
        _anything,
        "Dask Client or scheduler address; default: the active client, else threads.",
        changes_result=False,
    ),
    Param(
        "storage_options",
        None,
        _mapping,
        "Options of the fsspec filesystem of URL inputs, outputs and checkpoints (credentials, endpoint_url).",
        changes_result=False,
    ),
)

#: Parameters never written into a checkpoint or a result (a live object; credentials).
NOT_RECORDED = ("client", "storage_options")


def recorded(params):
    """``params`` as results and checkpoints record them: JSON-ready, without :data:`NOT_RECORDED`."""
    return {name: jsonable(value) for name, value in params.items() if name not in NOT_RECORDED}


_BY_NAME = {p.name: p for p in PARAMS}


def param(name):
    """The :class:`Param` called ``name``."""
    return _BY_NAME[name]


def validate_params(values, *, shape=None, spell=None):
    """Check every known parameter in ``values``; the first bad one raises.

    :class:`~dnmf.errors.ParameterError` / :class:`~dnmf.errors.ParameterTypeError` name the parameter and the offending value. Also checks
    the combinations: beta-divergences other than Frobenius need ``solver='mu'``;
    ``extrapolate=True`` needs ``solver='cd'`` and no ``missing_values``; with the
    matrix's ``shape``, the NNDSVD inits need ``n_components <= min(shape)`` (as
    scikit-learn words it).

    Parameters
    ----------
    values : dict
    shape : tuple of int, optional
    spell : callable, optional
        ``name -> what the user typed`` (the CLI: ``"max_iter" -> "--max-iter"``); the
        messages use it. Default: the keyword itself.
    """
    spell = spell or (lambda name: name)
    for name, value in values.items():
        if name in _BY_NAME:
            _BY_NAME[name].check(value, spell(name))

    def typed(name, value, python_separator="="):
        """``solver='mu'`` in Python, ``--solver mu`` on the command line."""
        flag = spell(name)
        return f"{flag} {value}" if flag.startswith("-") else f"{name}{python_separator}{value!r}"

    solver = values.get("solver", "cd")
    beta_loss = values.get("beta_loss", "frobenius")
    if resolve_solver(solver) == "cd" and beta_to_float(beta_loss) != 2:
        raise ParameterError(
            f"Invalid {spell('beta_loss')} parameter: {typed('solver', solver, ' ')} does not handle "
            f"{typed('beta_loss', beta_loss, ' = ')}; use {typed('solver', 'mu')}"
        )
    extrapolate = values.get("extrapolate", AUTO)
    if not isinstance(extrapolate, str) and extrapolate:
        if resolve_solver(solver) != "cd":
            raise ParameterError(
                f"{typed('extrapolate', True)} needs {typed('solver', 'cd')} (extrapolated HALS), "
                f"got {typed('solver', solver)}"
            )
        if values.get("missing_values") is not None:
            raise ParameterError(
                f"{typed('extrapolate', True)} does not handle {typed('missing_values', values['missing_values'])}; "
                f"use {typed('extrapolate', False)}"
            )
    k, init = values.get("n_components"), values.get("init")
    if shape is not None and isinstance(init, str) and init.startswith("nndsvd") and isinstance(k, numbers.Integral):
        if k > min(shape):
            raise ParameterError(
                f"{typed('init', init, ' = ')} can only be used when {spell('n_components')} <= "
                f"min(n_samples, n_features) ({typed('n_components', k)}, min(n_samples, n_features) = "
                f"{min(shape)}); use {typed('init', 'random')}"
            )
    return values


def resolve_solver(solver):
    """``"hals"`` → ``"cd"``; others unchanged."""
    return "cd" if solver == "hals" else solver


def compute_penalties(alpha_W, alpha_H, l1_ratio, shape):
    """scikit-learn's scaling: W's penalties × n_features, H's × n_samples.

    Returns
    -------
    penalty_W, penalty_H : Penalty
    """
    n_samples, n_features = shape
    alpha_H = alpha_W if alpha_H == "same" else alpha_H
    penalty_W = Penalty(n_features * alpha_W * l1_ratio, n_features * alpha_W * (1.0 - l1_ratio))
    penalty_H = Penalty(n_samples * alpha_H * l1_ratio, n_samples * alpha_H * (1.0 - l1_ratio))
    return penalty_W, penalty_H


#: Default value of every parameter of the table.
DEFAULTS = {p.name: p.default for p in PARAMS}


@dataclass(frozen=True)
class FitConfig:
    """A fit's parameters, validated and normalized once (:func:`resolve`).

    Attributes
    ----------
    n_components : int or "auto"
        The rank; ``"auto"`` until the input (or a custom H) decides it.
    init : str or None
    solver : {"cd", "mu"}
    beta_loss : float
        The beta of the divergence: 2 (Frobenius), 1 (Kullback-Leibler), 0 (Itakura-Saito)
        or any float.
    tol : float
    max_iter : int
    random_state : int, RandomState or None
    alpha_W, alpha_H, l1_ratio : float
        ``alpha_H`` is ``alpha_W`` when it was ``"same"``.
    verbose : int
    inner_sweeps : int or "auto"
    extrapolate : bool or "auto"
    missing_values : {None, "nan", "absent"}
    panel_rows : int or None
    client : distributed.Client, str or None
    storage_options : dict or None
    params : dict
        The table's names with the values as given (after defaults; ``missing_values``
        normalized), for the records (checkpoints, results).
    """

    n_components: Any
    init: Any
    solver: str
    beta_loss: float
    tol: float
    max_iter: int
    random_state: Any
    alpha_W: float
    alpha_H: float
    l1_ratio: float
    verbose: int
    inner_sweeps: Any
    extrapolate: Any
    missing_values: Any
    panel_rows: Any
    client: Any
    storage_options: Any
    params: dict

    def penalties(self, shape):
        """``(penalty_W, penalty_H)``, scaled as scikit-learn scales them for a V of ``shape``."""
        return compute_penalties(self.alpha_W, self.alpha_H, self.l1_ratio, shape)

    def with_rank(self, n_components):
        """The same configuration with the rank decided."""
        return FitConfig(**{**{f.name: getattr(self, f.name) for f in fields(self)}, "n_components": int(n_components)})


def resolve(values, *, shape=None, spell=None):
    """Validate ``values`` (names of :data:`PARAMS`; missing ones take their defaults)
    and normalize them into a :class:`FitConfig`.

    ``shape`` and ``spell`` as in :func:`validate_params`.

    Raises
    ------
    ParameterTypeError
        An unknown name (listing the valid ones), or a value of the wrong type.
    ParameterError
        A bad value or combination.
    """
    unknown = set(values) - set(DEFAULTS)
    if unknown:
        raise ParameterTypeError(f"unknown parameter(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    p = validate_params({**DEFAULTS, **values}, shape=shape, spell=spell)
    p["missing_values"] = normalize_missing(p["missing_values"])
    k = p["n_components"]
    return FitConfig(
        n_components=AUTO if k is None or k == AUTO else int(k),
        init=p["init"],
        solver=resolve_solver(p["solver"]),
        beta_loss=beta_to_float(p["beta_loss"]),
        tol=float(p["tol"]),
        max_iter=int(p["max_iter"]),
        random_state=p["random_state"],
        alpha_W=float(p["alpha_W"]),
        alpha_H=float(p["alpha_W"] if p["alpha_H"] == "same" else p["alpha_H"]),
        l1_ratio=float(p["l1_ratio"]),
        verbose=int(p["verbose"]),
        inner_sweeps=p["inner_sweeps"],
        extrapolate=p["extrapolate"] if isinstance(p["extrapolate"], str) else bool(p["extrapolate"]),
        missing_values=p["missing_values"],
        panel_rows=p["panel_rows"],
        client=p["client"],
        storage_options=p["storage_options"],
        params=p,
    )
