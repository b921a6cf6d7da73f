"""Serving machinery without a web framework: the batch queue, the model worker thread, the async service."""
