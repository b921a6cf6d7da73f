"""Headless locust load test for any OpenAI-compatible embeddings endpoint.

For people who already use locust. `qembed bench load` measures the same thing without
it (closed loop, errors by status, a Markdown/JSON report); locust is not a qembed
dependency: `pip install locust` first.

    QEMBED_LOCUST_WORKLOAD=passage QEMBED_LOCUST_INPUTS=1 \\
    locust -f bench/locustfile.py --headless -H http://127.0.0.1:30000 \\
        -u 10 -r 10 -t 60s --csv bench/results/locust

Environment:
  QEMBED_LOCUST_WORKLOAD  query | passage | document | long  (default query: ~16 tokens)
  QEMBED_LOCUST_INPUTS    texts per request (default 1)
  QEMBED_LOCUST_POOL      distinct texts to cycle through (default 512)
  QEMBED_LOCUST_MODEL     `model` in the request (default: first of GET /v1/models)
  QEMBED_LOCUST_TOKENIZER model folder whose tokenizer cuts the texts (default: Qwen3's, shipped with qembed)
  QEMBED_BENCH_API_KEY    Bearer token, if the server wants one

The texts are the standard qembed workloads (real English, Chinese and code, cut to exact
token lengths), so a locust run and a `qembed bench load` run send the same requests.
Locust users wait for each answer before the next request (wait_time = 0): a closed loop,
as in `qembed bench load`.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from locust import HttpUser, constant, events, task

from qembed.bench.load import default_tokenizer_folder
from qembed.bench.workloads import WorkloadBuilder, parse_workload

WORKLOAD = os.environ.get("QEMBED_LOCUST_WORKLOAD", "query")
INPUTS = int(os.environ.get("QEMBED_LOCUST_INPUTS", "1"))
POOL = int(os.environ.get("QEMBED_LOCUST_POOL", "512"))
API_KEY = os.environ.get("QEMBED_BENCH_API_KEY")
_state: dict[str, object] = {}


@events.init.add_listener
def _build_texts(environment, **_kwargs) -> None:  # noqa: ANN001 - locust's signature
    """Build the request texts once per locust process, before any user starts."""
    folder = (
        Path(os.environ["QEMBED_LOCUST_TOKENIZER"])
        if os.environ.get("QEMBED_LOCUST_TOKENIZER")
        else default_tokenizer_folder()
    )
    workload = WorkloadBuilder(folder).build(parse_workload(WORKLOAD, count=POOL))
    _state["texts"] = workload.texts
    _state["counter"] = itertools.count()


class EmbeddingsUser(HttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.headers = {"Authorization": f"Bearer {API_KEY}"} if API_KEY else {}
        self.model = os.environ.get("QEMBED_LOCUST_MODEL")
        if not self.model:
            with self.client.get(
                "/v1/models", headers=self.headers, name="/v1/models", catch_response=True
            ) as response:
                data = response.json().get("data") if response.status_code == 200 else None
                self.model = data[0]["id"] if data else "default"
                response.success()

    @task
    def embed(self) -> None:
        texts: list[str] = _state["texts"]  # type: ignore[assignment]
        start = next(_state["counter"]) * INPUTS  # type: ignore[call-overload]
        batch = [texts[(start + j) % len(texts)] for j in range(INPUTS)]
        with self.client.post("/v1/embeddings", json={"model": self.model, "input": batch}, headers=self.headers,
                              name=f"/v1/embeddings [{WORKLOAD} x{INPUTS}]", catch_response=True) as response:  # fmt: skip
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                return
            data = response.json().get("data", [])
            if len(data) != len(batch):
                response.failure(f"{len(data)} vectors for {len(batch)} inputs")
            else:
                response.success()
