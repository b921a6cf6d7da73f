"""qembed: a self-hosted text-embedding service and semantic-search toolkit."""

from __future__ import annotations

from qembed._version import __version__
from qembed.embedding.embedder import Embedder, EncodeResult, ModelInfo, similarity  # noqa: E402
from qembed.rerank.reranker import Reranker  # noqa: E402
from qembed.settings import Settings  # noqa: E402

__all__ = ["Embedder", "EncodeResult", "ModelInfo", "Reranker", "Settings", "__version__", "similarity"]
