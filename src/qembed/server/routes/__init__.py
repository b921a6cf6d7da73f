"""HTTP routes: ``embeddings`` (OpenAI + native + tokenize, behind the API key) and ``meta``
(models, health, readiness, info, metrics)."""
