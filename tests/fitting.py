"""``fit(X, k, **params)``: the functional API in one call, for tests that compare runs.

The parameters are those of :data:`dnmf.params.PARAMS` (``beta_loss``, ``inner_sweeps``,
``missing_values``, ...); ``W``, ``H`` and ``update_H`` go to :func:`dnmf.api.prepare`,
``callback`` to :func:`dnmf.api.run_job`, and ``checkpointer`` (anything with the
driver's ``due``/``save`` hooks) replaces the job's.
"""

import dataclasses

from dnmf.api import prepare, run_job


def fit(X, n_components, *, W=None, H=None, update_H=True, callback=None, checkpointer=None, **params):
    """A fit of ``X`` at rank ``n_components``; returns the FitResult."""
    job = prepare(X, {"n_components": n_components, **params}, W=W, H=H, update_H=update_H)
    if checkpointer is not None:
        job = dataclasses.replace(job, checkpointer=checkpointer)
    return run_job(job, callback=callback)
