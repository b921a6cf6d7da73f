"""Reranking: score (query, document) pairs with Qwen3-Reranker or a cross-encoder."""
