"""--served-model-name is repeatable (sglang/vLLM accept several): every name is accepted in
`model`, the first is the one responses and /v1/models give."""

from __future__ import annotations

from qembed import Settings


def test_several_served_names(make_client) -> None:
    client = make_client(served_model_name=["embedder", "text-embedding-3-small"])
    assert client.get("/v1/models").json()["data"][0]["id"] == "embedder"
    for name in ("embedder", "text-embedding-3-small"):
        r = client.post("/v1/embeddings", json={"input": "x", "model": name})
        assert r.status_code == 200 and r.json()["model"] == "embedder"
    assert client.post("/v1/embeddings", json={"input": "x", "model": "other"}).status_code == 404


def test_env_var_takes_a_comma_separated_list(monkeypatch) -> None:
    monkeypatch.setenv("QEMBED_SERVED_MODEL_NAME", "a, b")
    assert Settings().served_model_name == ["a", "b"]
