"""Shared infrastructure, defined once: where qembed caches things (``paths``), what
identifies a model folder's weights (``fingerprint``), exact top-k selection (``topk``) and
the progress bar (``progress``), the command that installs an extra (``install``).

This package is the bottom layer: it imports nothing else from qembed and no torch, so any
module (model, embedding, eval, search, bench) can use it.
"""
