"""Formats: inputs in (:mod:`~dnmf.io.storage`: every input as row panels, CSR groups in
Zarr), results out and back (:mod:`~dnmf.io.results`), synthetic matrices
(:mod:`~dnmf.io.generate`), and descriptions of all three (:mod:`~dnmf.io.describe`)."""
