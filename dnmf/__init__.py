"""dnmf: out-of-core non-negative matrix factorization on Dask and Zarr.

The estimator (:class:`NMF`) and function (:func:`non_negative_factorization`) of
scikit-learn's API, and the input formats; :mod:`dnmf.tl` and :mod:`dnmf.pl` work on AnnData
objects, as scanpy's ``sc.tl`` and ``sc.pl`` do. The applications (pictures, topics, similar
items, rank selection, consensus NMF) are names of this package too, imported on first use so that
``import dnmf`` stays light; they live in :mod:`dnmf.apps`.

Layers, each importing only the ones before it: :mod:`dnmf.numerics` (NumPy kernels),
:mod:`dnmf.params`, :mod:`dnmf.engine` (Dask graphs, the driver, checkpoints),
:mod:`dnmf.io` (formats, results), :mod:`dnmf.api`, then :mod:`dnmf.estimator` and
:mod:`dnmf.apps`, and :mod:`dnmf.cli` on top.
"""

import importlib
import importlib.metadata
from typing import TYPE_CHECKING, Any

from .api import non_negative_factorization
from .engine.panels import Panels
from .engine.state import FitResult
from .errors import DnmfError
from .estimator import NMF
from .io.storage import CSRMatrix, as_panels, open_matrix, save_csr

# The names of _LAZY for type checkers (``X as X``: re-exported); at run time __getattr__
# imports them when first used.
if TYPE_CHECKING:
    from . import pl as pl
    from . import tl as tl
    from .apps.consensus import Consensus as Consensus
    from .apps.consensus import ConsensusReport as ConsensusReport
    from .apps.consensus import consensus as consensus
    from .apps.consensus import plot_clustering as plot_clustering
    from .apps.consensus import plot_density as plot_density
    from .apps.consensus import plot_k_selection as plot_k_selection
    from .apps.consensus import write_consensus as write_consensus
    from .apps.plots import plot as plot
    from .apps.plots import plot_components as plot_components
    from .apps.plots import plot_convergence as plot_convergence
    from .apps.plots import plot_factors as plot_factors
    from .apps.plots import plot_reconstruction as plot_reconstruction
    from .apps.rank import RankReport as RankReport
    from .apps.rank import plot_rank_report as plot_rank_report
    from .apps.rank import select_rank as select_rank
    from .apps.recommend import recommend as recommend
    from .apps.similar import Neighbor as Neighbor
    from .apps.similar import similar as similar
    from .apps.topics import Corpus as Corpus
    from .apps.topics import Topics as Topics
    from .apps.topics import build_corpus as build_corpus
    from .apps.topics import find_topics as find_topics
    from .apps.topics import open_corpus as open_corpus
    from .apps.topics import top_terms as top_terms
    from .apps.topics import topic_mix as topic_mix
    from .io.results import read_result as read_result

__version__ = importlib.metadata.version("dnmf")

#: Names imported when first used: the applications (:mod:`dnmf.apps`) and the results reader.
_LAZY = {
    "plot": "dnmf.apps.plots",
    "plot_components": "dnmf.apps.plots",
    "plot_convergence": "dnmf.apps.plots",
    "plot_factors": "dnmf.apps.plots",
    "plot_reconstruction": "dnmf.apps.plots",
    "Neighbor": "dnmf.apps.similar",
    "similar": "dnmf.apps.similar",
    "Corpus": "dnmf.apps.topics",
    "Topics": "dnmf.apps.topics",
    "build_corpus": "dnmf.apps.topics",
    "find_topics": "dnmf.apps.topics",
    "open_corpus": "dnmf.apps.topics",
    "top_terms": "dnmf.apps.topics",
    "topic_mix": "dnmf.apps.topics",
    "RankReport": "dnmf.apps.rank",
    "plot_rank_report": "dnmf.apps.rank",
    "select_rank": "dnmf.apps.rank",
    "recommend": "dnmf.apps.recommend",
    "Consensus": "dnmf.apps.consensus",
    "ConsensusReport": "dnmf.apps.consensus",
    "consensus": "dnmf.apps.consensus",
    "write_consensus": "dnmf.apps.consensus",
    "plot_k_selection": "dnmf.apps.consensus",
    "plot_density": "dnmf.apps.consensus",
    "plot_clustering": "dnmf.apps.consensus",
    "read_result": "dnmf.io.results",
}
#: Modules imported when first used: scverse's tools and plots on AnnData objects.
_SUBMODULES = ("tl", "pl")

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
    *_LAZY,
    *_SUBMODULES,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"dnmf.{name}")
    raise AttributeError(f"module 'dnmf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
