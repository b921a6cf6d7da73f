"""What an engine of the throughput bench is: ``EngineSpec``, the one description the
coordinator (``qembed.bench.engines``) and the peers that add engines
(``qembed.bench.peer_llamacpp``, ...) share, below both of them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

EngineKind = Literal["qembed", "st", "http", "llamacpp"]  # llamacpp: qembed.bench.peer_llamacpp
# engine: a system under test; baseline: a sentence-transformers setting that may serve as
# the ratio baseline (the fastest one measured is used); reference: shown, never a baseline.
EngineRole = Literal["engine", "baseline", "reference"]


@dataclass(frozen=True)
class EngineSpec:
    name: str
    kind: EngineKind
    role: EngineRole
    model_path: str
    label: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # qembed: Settings fields
    device: str = "cpu"  # st
    dtype: str | None = None  # st: None = sentence-transformers' own default
    threads: int | None = None  # st
    url: str | None = None  # http
    http_model: str | None = None
    api_key: str | None = None
    concurrency: int = 4
    server_pid: int | None = None  # http: whose memory to report, when local

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("api_key", None)
        return data
