"""Parameter sweeps: many variants of one experiment, resumable, on one machine or on Ray.

- :mod:`~ml4t_pipeline.lib.sweep.spec`: the ``sweep:`` block (grid / random) and its trials;
- :mod:`~ml4t_pipeline.lib.sweep.runner`: data prepared once per data section, trials fanned
  out serially, on processes or on Ray, each result stored when it finishes; one trial's key,
  run and outcome in :mod:`~ml4t_pipeline.lib.sweep.trials`, the trial store in
  :mod:`~ml4t_pipeline.lib.sweep.store`, the data preparation in
  :mod:`~ml4t_pipeline.lib.sweep.prepare` and the backends in
  :mod:`~ml4t_pipeline.lib.sweep.backends`;
- :mod:`~ml4t_pipeline.lib.sweep.stats`: Deflated Sharpe Ratio and PBO (CSCV);
- :mod:`~ml4t_pipeline.lib.sweep.results` and :mod:`~ml4t_pipeline.lib.sweep.report`: the
  result table, summary and HTML report;
- the faces (``ml4t sweep``, :class:`ml4t_pipeline.Sweep`) and the Dagster data preparation
  live in :mod:`ml4t_pipeline.sweeps`.
"""
