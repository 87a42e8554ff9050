"""dnmf: out-of-core non-negative matrix factorization on Dask and Zarr."""

from .api import non_negative_factorization
from .driver import FitResult, factorize
from .estimator import NMF
from .storage import CSRMatrix, Panels, as_panels, open_matrix, save_csr

__all__ = [
    "NMF",
    "CSRMatrix",
    "FitResult",
    "Panels",
    "as_panels",
    "factorize",
    "non_negative_factorization",
    "open_matrix",
    "save_csr",
]

# Interpretable results (issue 7): pictures, topics, similar items.
from .plots import plot, plot_components, plot_convergence, plot_factors, plot_reconstruction  # noqa: E402
from .similar import Neighbor, similar  # noqa: E402
from .topics import Corpus, Topics, build_corpus, find_topics, open_corpus, top_terms, topic_mix  # noqa: E402

__all__ += [
    "Corpus",
    "Neighbor",
    "Topics",
    "build_corpus",
    "find_topics",
    "open_corpus",
    "plot",
    "plot_components",
    "plot_convergence",
    "plot_factors",
    "plot_reconstruction",
    "similar",
    "top_terms",
    "topic_mix",
]

# Missing values and rank selection (issue 8).
from .rank import RankReport, plot_rank_report, select_rank  # noqa: E402

__all__ += ["RankReport", "plot_rank_report", "select_rank"]
