"""qembed's version, in a module of its own: lower layers (the embedding cache's namespace) read
it without importing the top-level package, which re-exports the public classes of every layer."""

__version__ = "0.1.0"
