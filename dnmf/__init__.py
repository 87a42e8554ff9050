"""dnmf: out-of-core non-negative matrix factorization on Dask and Zarr.

The estimator (:class:`NMF`) and function (:func:`non_negative_factorization`) of
scikit-learn's API, and the input formats. The applications (pictures, topics, similar
items, rank selection, consensus NMF) are names of this package too, imported on first use so that
``import dnmf`` stays light; they live in :mod:`dnmf.apps`.

Layers, each importing only the ones before it: :mod:`dnmf.numerics` (NumPy kernels),
:mod:`dnmf.params`, :mod:`dnmf.engine` (Dask graphs, the driver, checkpoints),
:mod:`dnmf.io` (formats, results), :mod:`dnmf.api`, then :mod:`dnmf.estimator` and
:mod:`dnmf.apps`, and :mod:`dnmf.cli` on top.
"""

import importlib

from .api import non_negative_factorization
from .engine.panels import Panels
from .engine.state import FitResult
from .errors import DnmfError
from .estimator import NMF
from .io.storage import CSRMatrix, as_panels, open_matrix, save_csr

#: Names of :mod:`dnmf.apps`, imported when first used.
_APPS = {
    "plot": "plots",
    "plot_components": "plots",
    "plot_convergence": "plots",
    "plot_factors": "plots",
    "plot_reconstruction": "plots",
    "Neighbor": "similar",
    "similar": "similar",
    "Corpus": "topics",
    "Topics": "topics",
    "build_corpus": "topics",
    "find_topics": "topics",
    "open_corpus": "topics",
    "top_terms": "topics",
    "topic_mix": "topics",
    "RankReport": "rank",
    "plot_rank_report": "rank",
    "select_rank": "rank",
    "recommend": "recommend",
    "Consensus": "consensus",
    "ConsensusReport": "consensus",
    "consensus": "consensus",
    "write_consensus": "consensus",
}

__all__ = [
    "NMF",
    "CSRMatrix",
    "DnmfError",
    "FitResult",
    "Panels",
    "as_panels",
    "non_negative_factorization",
    "open_matrix",
    "save_csr",
    *_APPS,
]


def __getattr__(name):
    if name in _APPS:
        value = getattr(importlib.import_module(f"dnmf.apps.{_APPS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dnmf' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
