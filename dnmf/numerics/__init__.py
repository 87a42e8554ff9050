"""Per-panel mathematics: NumPy and SciPy only, no Dask.

Every function takes in-memory arrays (a row panel of V, the matching rows of W, the
broadcast H) and returns arrays; :mod:`dnmf.engine` builds the graphs that call them.

- :mod:`~dnmf.numerics.kernels`: HALS and MU updates, partial sums, losses of a panel
- :mod:`~dnmf.numerics.losses`: losses from summed partials
- :mod:`~dnmf.numerics.masked`, :mod:`~dnmf.numerics.masked_hals`: missing values
- :mod:`~dnmf.numerics.extrapolation`: the step schedule of extrapolated HALS
- :mod:`~dnmf.numerics.randomized_svd`: the randomized SVD's panel products and small steps
"""
