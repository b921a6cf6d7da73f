"""qembed.eval: quality evaluation of a model or an OpenAI-compatible server.

Layers, each with one job: ``datasets`` (readers) -> ``targets`` (in-process Embedder or
HTTP endpoint; latency, memory) -> ``encode`` (distinct texts once, through ``cache``) ->
``search`` (exact top-k) -> ``metrics`` (plain numpy) -> ``tasks`` (the four evaluations)
-> ``compare`` (targets x tasks -> table, JSON, Markdown). ``api`` mirrors ``qembed eval``.
Nothing is imported here, so that ``import qembed.eval.metrics`` stays light.
"""
