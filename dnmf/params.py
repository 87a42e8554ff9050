"""The one parameter table: the estimator, the functional API, the CLI and YAML configs
all validate through it, so a bad value gets the same message everywhere.

Each :class:`Param` has a name (the estimator's keyword; the CLI flag and config key is
the same name with ``_`` → ``-`` and lower case, see :attr:`Param.option`), a
default, a check that raises ``ValueError``/``TypeError`` naming the bad value, a
one-line description, and whether it changes the numbers a fit produces (checkpoints
refuse to resume when such a parameter differs).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .init import INIT_METHODS
from .kernels import Penalty
from .losses import BETA_LOSS_NAMES, beta_to_float
from .masked import normalize_missing

__all__ = ["PARAMS", "SOLVERS", "Param", "compute_penalties", "param", "resolve_solver", "validate_params"]

#: Solver names: "cd" is HALS (scikit-learn's name), "hals" an alias; "mu" multiplicative updates.
SOLVERS = ("cd", "hals", "mu")


def _integer(name, low=None, allow_none=False):
    def check(value):
        if value is None and allow_none:
            return
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
        if low is not None and value < low:
            raise ValueError(f"{name} must be >= {low}, got {value!r}")

    return check


def _real(name, low=None, high=None):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
        if not np.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if low is not None and value < low:
            raise ValueError(f"{name} must be >= {low}, got {value!r}")
        if high is not None and value > high:
            raise ValueError(f"{name} must be <= {high}, got {value!r}")

    return check


def _one_of(name, options, allow_none=False):
    def check(value):
        if value is None and allow_none:
            return
        if value not in options:
            raise ValueError(f"{name} must be one of {list(options)}{' or None' if allow_none else ''}, got {value!r}")

    return check


def _n_components(value):
    if value is None or value == "auto":
        return
    _integer("n_components", low=1)(value)


def _beta_loss(value):
    if isinstance(value, str):
        _one_of("beta_loss", tuple(BETA_LOSS_NAMES))(value)
    else:
        _real("beta_loss")(value)


def _alpha_H(value):
    if isinstance(value, str):
        _one_of("alpha_H", ("same",))(value)
    else:
        _real("alpha_H", low=0)(value)


def _random_state(value):
    if value is None or isinstance(value, np.random.RandomState):
        return
    _integer("random_state", low=0)(value)


def _boolean(name):
    def check(value):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")

    return check


def _anything(value):
    return None


@dataclass(frozen=True)
class Param:
    """One row of the parameter table."""

    name: str
    default: Any
    check: Callable[[Any], None]
    doc: str
    changes_result: bool = True

    @property
    def option(self):
        """The CLI long option / YAML key: ``alpha_W`` → ``alpha-w``."""
        return self.name.replace("_", "-").lower()


PARAMS = (
    Param("n_components", None, _n_components, "Rank k; None or 'auto' keeps all features (as scikit-learn)."),
    Param("init", None, _one_of("init", INIT_METHODS, allow_none=True), "Initialization; None picks as scikit-learn."),
    Param("solver", "cd", _one_of("solver", SOLVERS), "'cd' (HALS, alias 'hals') or 'mu' (multiplicative updates)."),
    Param("beta_loss", "frobenius", _beta_loss, "'frobenius', 'kullback-leibler', 'itakura-saito' or a float beta."),
    Param("tol", 1e-4, _real("tol", low=0), "Stop when the error falls by less than tol (relative) over 10 iterations."),
    Param("max_iter", 200, _integer("max_iter", low=1), "Maximum number of outer iterations (passes over V)."),
    Param("random_state", None, _random_state, "Seed of the random/nndsvd* initializations."),
    Param("alpha_W", 0.0, _real("alpha_W", low=0), "Penalty weight on W (scaled by n_features, as scikit-learn)."),
    Param("alpha_H", "same", _alpha_H, "Penalty weight on H (scaled by n_samples); 'same' uses alpha_W."),
    Param("l1_ratio", 0.0, _real("l1_ratio", low=0, high=1), "Share of L1 in the penalties (0: pure L2)."),
    Param("verbose", 0, _integer("verbose", low=0), "Log each iteration at INFO level when > 0.", changes_result=False),
    Param("inner_sweeps", 1, _integer("inner_sweeps", low=1), "HALS sweeps (or MU updates) per factor per pass over V."),
    Param(
        "extrapolate", False, _boolean("extrapolate"),
        "Extrapolated HALS: fewer passes to a given error, iterates no longer scikit-learn's (solver cd).",
    ),
    Param(
        "missing_values", None, normalize_missing,
        "Missing entries, left out of the loss: nan (NaN entries) or absent (sparse: absent entries).",
    ),
    Param("panel_rows", None, _integer("panel_rows", low=1, allow_none=True), "Rows per panel of V (default: ~64 MiB)."),
    Param("client", None, _anything, "Dask Client or scheduler address; default: the active client, else threads.", changes_result=False),
)

_BY_NAME = {p.name: p for p in PARAMS}


def param(name):
    """The :class:`Param` called ``name``."""
    return _BY_NAME[name]


def validate_params(values):
    """Check every known parameter in ``values``; the first bad one raises.

    ``ValueError``/``TypeError`` name the parameter and the offending value. Also checks
    the combinations: beta-divergences other than Frobenius need ``solver='mu'``;
    ``extrapolate=True`` needs ``solver='cd'`` and no ``missing_values``.
    """
    for name, value in values.items():
        if name in _BY_NAME:
            _BY_NAME[name].check(value)
    solver = values.get("solver", "cd")
    beta = beta_to_float(values.get("beta_loss", "frobenius"))
    if resolve_solver(solver) == "cd" and beta != 2:
        raise ValueError(
            f"Invalid beta_loss parameter: solver 'cd' does not handle beta_loss = {values.get('beta_loss')!r}; "
            "use solver='mu'"
        )
    if values.get("extrapolate"):
        if resolve_solver(solver) != "cd":
            raise ValueError(f"extrapolate=True needs solver='cd' (extrapolated HALS), got solver={solver!r}")
        if values.get("missing_values") is not None:
            raise ValueError(
                f"extrapolate=True does not handle missing_values={values['missing_values']!r}; "
                "use extrapolate=False"
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
