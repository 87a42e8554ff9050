"""The distributed engine: Dask graphs over V's row panels, and the loop that runs them.

- :mod:`~dnmf.engine.panels`: V as the engine sees it (:class:`~dnmf.engine.panels.Panels`)
- :mod:`~dnmf.engine.solvers`: every graph of a pass, built in one place
- :mod:`~dnmf.engine.initialization`: random, NNDSVD and custom initial factors
- :mod:`~dnmf.engine.driver`: the outer loop, the stopping rule; the only module that
  calls ``compute`` or ``persist``
- :mod:`~dnmf.engine.state`: the values a fit passes around (statistics, loop state, result)
- :mod:`~dnmf.engine.checkpoint`: crash-safe checkpoints and exact resume
- :mod:`~dnmf.engine.durable`: atomic, flushed directory writes
- :mod:`~dnmf.engine.scheduler`: clients, scheduler addresses, the embedded cluster
- :mod:`~dnmf.engine.process_setting`: process-wide settings held by concurrent fits
"""
