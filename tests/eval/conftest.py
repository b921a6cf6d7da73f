"""Helpers for the eval tests: a counting fake target, and a small OpenAI-compatible HTTP
server backed by a real in-process Embedder (so the HTTP client is tested against real
vectors, whether or not qembed's own server exists yet)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qembed.eval.prompts import Prompting, Role
from qembed.eval.targets import TargetStats


class FakeTarget:
    """Deterministic vectors from a text hash; counts what it embeds; can fail on call N."""

    def __init__(
        self, *, dim: int = 8, chunk_size: int = 4, interrupt_on_call: int | None = None, tag: str = "fake"
    ) -> None:
        self.name = tag
        self.chunk_size = chunk_size
        self.stats = TargetStats()
        self.dim = dim
        self.interrupt_on_call = interrupt_on_call
        self.calls = 0
        self.embedded: list[str] = []
        self.tag = tag

    def identity(self) -> dict[str, Any]:
        return {"kind": "fake", "tag": self.tag, "dim": self.dim}

    def embed(self, texts: Sequence[str], prompting: Prompting, role: Role) -> np.ndarray:
        self.calls += 1
        if self.interrupt_on_call is not None and self.calls == self.interrupt_on_call:
            raise KeyboardInterrupt
        self.embedded.extend(texts)
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256((role + t).encode()).digest()[:8], "little")
            rows.append(np.random.default_rng(seed).standard_normal(self.dim))
        return np.asarray(rows, dtype=np.float32)

    def prompt_description(self, prompting: Prompting, role: Role) -> str:
        return prompting.describe(role)

    def close(self) -> None:
        pass


@pytest.fixture
def make_beir(tmp_path: Path):
    """A tiny BEIR folder with n documents and graded judgements."""

    def make(n_docs: int = 30, n_queries: int = 6, name: str = "beir") -> Path:
        root = tmp_path / name
        (root / "qrels").mkdir(parents=True)
        with open(root / "corpus.jsonl", "w", encoding="utf-8") as f:
            for i in range(n_docs):
                f.write(
                    json.dumps(
                        {
                            "_id": f"d{i}",
                            "title": f"topic {i % 5}",
                            "text": f"document number {i} about topic {i % 5}",
                        }
                    )
                    + "\n"
                )
        with open(root / "queries.jsonl", "w", encoding="utf-8") as f:
            for q in range(n_queries):
                f.write(json.dumps({"_id": f"q{q}", "text": f"query {q}: what about topic {q % 5}?"}) + "\n")
        with open(root / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for q in range(n_queries):
                for i in range(n_docs):
                    if i % 5 == q % 5:
                        f.write(f"q{q}\td{i}\t{1 + (i % 3 == 0)}\n")
        return root

    return make


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAIServer  # type: ignore[assignment]

    def log_message(self, *args: Any) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(body, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": "fake-model", "object": "model"}]})
        elif self.path == "/metrics":
            self._send(200, "# HELP x\nprocess_resident_memory_bytes 1.048576e+08\n")
        else:
            self._send(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.requests.append({"body": body, "auth": self.headers.get("Authorization")})
            if srv.fail_next:
                status = srv.fail_next.pop(0)
                self._send(
                    status, {"error": {"message": f"injected {status}", "type": "test"}}, {"Retry-After": "0"}
                )
                return
            if srv.api_key and self.headers.get("Authorization") != f"Bearer {srv.api_key}":
                self._send(401, {"error": {"message": "bad key"}})
                return
            options = {
                k: body[k]
                for k in ("task", "input_type", "instruction", "prompt_name", "dimensions")
                if k in body
            }
            try:
                vectors = srv.embedder.encode(body["input"], **options)
            except Exception as exc:  # noqa: BLE001 - a fake server answers 400 like the real one
                self._send(400, {"error": {"message": str(exc)}})
                return
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        self._send(
            200, {"object": "list", "data": list(reversed(data)), "model": body.get("model")}
        )  # out of order on purpose


class FakeOpenAIServer(ThreadingHTTPServer):
    def __init__(self, embedder: Any) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.embedder = embedder
        self.lock = threading.Lock()  # Embedder.run is not thread-safe
        self.requests: list[dict[str, Any]] = []
        self.fail_next: list[int] = []
        self.api_key: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def fake_server(tiny_embedder: Any) -> Iterator[FakeOpenAIServer]:
    server = FakeOpenAIServer(tiny_embedder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
