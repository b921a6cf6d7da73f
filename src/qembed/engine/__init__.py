"""Serving machinery between the public API and the model: windows, batches, queue, worker."""
