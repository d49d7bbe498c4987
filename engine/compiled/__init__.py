"""Compiled drivers of the built-in strategies over the execution core (:mod:`engine.core`).

- :mod:`engine.compiled.plan`: which runs qualify (:func:`~engine.compiled.plan.compiled_reason`)
  and their inputs (:func:`~engine.compiled.plan.plan_topn`);
- :mod:`engine.compiled.topn`: the :class:`engine.TopNStrategy` driver (:func:`run_topn`,
  :class:`~engine.compiled.topn.CompiledRun`), with its parts: the plan, kernel tuples and codes
  (:mod:`engine.compiled.state`), the per-bar passes (:mod:`engine.compiled.passes`), the
  ranking and hook C (:mod:`engine.compiled.decisions`) and the record conversion
  (:mod:`engine.compiled.outputs`);
- :mod:`engine.compiled.variants`: many variants of one TopN run on one panel in one pass
  (:func:`~engine.compiled.variants.run_variants`; which sets qualify:
  :func:`~engine.compiled.plan.variants_reason`).
"""
