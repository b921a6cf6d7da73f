"""qembed: a self-hosted text-embedding service and semantic-search toolkit."""

from __future__ import annotations

__version__ = "0.1.0"

from qembed.embedding.embedder import Embedder, EncodeResult, ModelInfo, similarity  # noqa: E402
from qembed.settings import Settings  # noqa: E402

__all__ = ["Embedder", "EncodeResult", "ModelInfo", "Settings", "__version__", "similarity"]
