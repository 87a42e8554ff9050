"""dnmf: out-of-core non-negative matrix factorization on Dask and Zarr."""

from .driver import FitResult, factorize
from .storage import CSRMatrix, Panels, as_panels, open_matrix, save_csr

__all__ = ["CSRMatrix", "FitResult", "Panels", "as_panels", "factorize", "open_matrix", "save_csr"]
