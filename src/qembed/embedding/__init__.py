"""The embedder (the public Python API) and the embedding cache that wraps it."""
