"""The README's nginx example, run with the real nginx (Debian's package) in front of qembed.

The ``nginx`` block of README "Behind nginx" is taken as written; only the addresses change
(listen on a free port of 127.0.0.1 without TLS, upstream = a qembed server in a thread) and
it is wrapped in an ``http`` block whose pid, log and temp paths live in ``tmp_path``
(``master_process off``: one unprivileged process, nothing in /var). Checked through it:

- a body of 8,000,001 bytes (payload limit + 1) is a 413 with qembed's JSON body, not nginx's
  HTML and not a 502 (the bug of ``client_max_body_size 8m``: 8,388,608 bytes);
- a body of exactly 8,000,000 bytes reaches qembed (its own JSON 400 for the junk field);
- an ordinary request is served, and kept-alive upstream connections keep working after
  nginx's upstream ``keepalive_timeout``;
- the documented timeouts agree with qembed's settings.

Skipped (with the reason) where nginx is not installed: ``apt-get install nginx-light``.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qembed import Settings
from qembed.server.app import create_app

from .conftest import settings_for, wait_for
from .test_http_edges import Served

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
)
LIMIT = Settings.model_fields["payload_limit"].default


def readme_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Behind nginx", 1)[1]
    match = re.search(r"```nginx\n(.*?)```", section, re.S)
    assert match, "README 'Behind nginx' has no ```nginx block"
    return match.group(1)


def _directive(block: str, name: str) -> str:
    match = re.search(rf"^\s*{name}\s+([^;]+);", block, re.M)
    assert match, f"{name} missing from the README nginx block"
    return match.group(1).strip()


def _seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)?", value).groups()  # type: ignore[union-attr]
    return float(number) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[unit]


def test_readme_limits_and_timeouts_match_qembeds_defaults() -> None:
    block = readme_block()
    defaults = Settings()
    assert _directive(block, "client_max_body_size") == str(defaults.payload_limit)  # bytes, not "8m"
    assert _seconds(_directive(block, "client_header_timeout")) == defaults.request_read_timeout
    assert _seconds(_directive(block, "client_body_timeout")) == defaults.request_read_timeout
    assert _seconds(_directive(block, "keepalive_timeout")) < defaults.timeout_keep_alive
    assert _seconds(_directive(block, "proxy_read_timeout")) > defaults.request_read_timeout
    assert "error_page 413" in block


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def nginx_config(block: str, *, upstream_port: int, listen_port: int, prefix: Path) -> str:
    block = re.sub(r"server 127\.0\.0\.1:\d+;", f"server 127.0.0.1:{upstream_port};", block)
    block = re.sub(r"listen 443 ssl;", f"listen 127.0.0.1:{listen_port};", block)
    assert f"listen 127.0.0.1:{listen_port};" in block and f"127.0.0.1:{upstream_port}" in block
    temps = "\n".join(
        f"    {name}_temp_path {prefix / name};"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""daemon off;
master_process off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix / "access.log"};
{temps}
{block}
}}
"""


@pytest.fixture(scope="module")
def proxied(
    tiny_model_dir: Path, tiny_embedder: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    settings = settings_for(tiny_model_dir)
    server = Served(create_app(settings, tiny_embedder), settings)
    server.__enter__()
    prefix = tmp_path_factory.mktemp("nginx")
    port = _free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_config(readme_block(), upstream_port=server.port, listen_port=port, prefix=prefix))
    check = subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True, text=True, timeout=30
    )
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (
            (prefix / "error.log").read_text() if (prefix / "error.log").exists() else "nginx exited"
        )
        try:
            return httpx.get(url + "/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=30, what="nginx in front of qembed")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        server.__exit__(None, None, None)


def _body(size: int) -> bytes:
    head, tail = b'{"input": "hello", "padding": "', b'"}'
    return head + b"x" * (size - len(head) - len(tail)) + tail


def test_ordinary_request_passes(proxied: str) -> None:
    r = httpx.post(proxied + "/v1/embeddings", json={"input": ["hello", "world"]}, timeout=60)
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == 2
    assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"])  # nginx's $request_id, kept by qembed


def test_one_byte_over_the_limit_is_qembeds_413_json(proxied: str) -> None:
    body = _body(LIMIT + 1)
    assert len(body) == 8_000_001
    r = httpx.post(
        proxied + "/v1/embeddings", content=body, headers={"Content-Type": "application/json"}, timeout=60
    )
    assert r.status_code == 413, r.text[:300]
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["code"] == "payload_too_large" and error["type"] == "invalid_request_error"

    def chunks() -> Iterator[bytes]:  # no Content-Length: nginx counts
        for i in range(0, len(body), 1 << 20):
            yield body[i : i + (1 << 20)]

    chunked = httpx.post(
        proxied + "/v1/embeddings", content=chunks(), headers={"Content-Type": "application/json"}, timeout=60
    )
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "payload_too_large"


def test_a_body_at_the_limit_reaches_qembed(proxied: str) -> None:
    body = _body(LIMIT)
    r = httpx.post(
        proxied + "/v1/embeddings", content=body, headers={"Content-Type": "application/json"}, timeout=120
    )
    assert r.status_code == 400, r.text[:300]  # qembed read it: the padding field is unknown
    assert r.json()["error"]["param"] == "padding"


def test_upstream_keepalive_survives_idle_periods(proxied: str) -> None:
    with httpx.Client(base_url=proxied, timeout=60) as client:
        for _ in range(3):
            assert client.post("/v1/embeddings", json={"input": "again"}).status_code == 200
        time.sleep(
            _seconds(_directive(readme_block(), "keepalive_timeout")) + 0.5
        )  # nginx dropped its idle upstream connections
        for _ in range(3):
            assert client.post("/v1/embeddings", json={"input": "again"}).status_code == 200
