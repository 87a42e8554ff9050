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
