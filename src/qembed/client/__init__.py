"""Clients of embeddings servers: the one OpenAI-compatible HTTP client (``openai``)."""

from qembed.client.openai import (
    ClientError,
    HttpEncoder,
    OpenAIClient,
    Outcome,
    base_url,
    embeddings_url,
    error_message,
    models_url,
    parse_embeddings,
    server_root,
)

__all__ = [
    "ClientError",
    "HttpEncoder",
    "OpenAIClient",
    "Outcome",
    "base_url",
    "embeddings_url",
    "error_message",
    "models_url",
    "parse_embeddings",
    "server_root",
]
