"""The HTTP edges of issue #13: auth before the body, read timeouts and the connection cap,
injection-proof access log lines, no redirects, aborted uploads as client errors, lone
surrogates as 400s, the warning for an open bind without a key, /info without paths, and
an input schema that says exactly what the server accepts.

Servers that need real sockets run ``qembed serve``'s own uvicorn config
(``qembed.cli.serve.uvicorn_config``: the h11 protocol with qembed's limits) in a thread.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import psutil
import pytest
import uvicorn

from qembed.cli.serve import uvicorn_config
from qembed.server.app import create_app, is_loopback
from qembed.server.middleware import log_value, request_id_of

from .conftest import metric_samples, settings_for, wait_for

KEY = "sk-edge-test-key"


class Served:
    """``qembed serve``'s uvicorn config, in a thread, on a socket bound first."""

    def __init__(self, app: Any, settings: Any) -> None:
        self.app = app
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn_config(app, settings, log_level="warning", timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()

        def ready() -> bool:
            try:
                return httpx.get(self.url + "/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, what="/ready")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()

    def metrics(self) -> dict:
        return metric_samples(httpx.get(self.url + "/metrics", timeout=10).text)

    def connect(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=10)


@pytest.fixture
def serve(tiny_model_dir: Path, tiny_embedder: Any) -> Iterator[Callable[..., Served]]:
    servers: list[Served] = []

    def start(**overrides: Any) -> Served:
        settings = settings_for(tiny_model_dir, **overrides)
        server = Served(create_app(settings, tiny_embedder), settings)
        server.__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__(None, None, None)


def _head(path: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


def _read_response(sock: socket.socket, timeout: float = 10) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    match = re.search(rb"content-length: (\d+)", head, re.I)
    while match and len(rest) < int(match.group(1)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head + b"\r\n\r\n" + rest


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes ``sock`` (EOF or reset) within ``seconds``."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionError:
        return True
    return True


# -- auth before the body ---------------------------------------------------------------------


def test_unauthenticated_request_is_refused_before_its_body_is_read(serve) -> None:
    server = serve(api_key=[KEY])
    with server.connect() as sock:
        sock.sendall(_head("/v1/embeddings", 1000))  # the body never comes
        answer = _read_response(sock, timeout=5)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "invalid_api_key"
    # the same request with the key is read and served
    r = httpx.post(
        server.url + "/v1/embeddings",
        json={"input": "hi"},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert r.status_code == 200
    # open routes stay open
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def test_unauthenticated_uploads_do_not_grow_memory(serve) -> None:
    server = serve(api_key=[KEY])
    body = b"x" * 7_900_000
    me = psutil.Process()
    before = me.memory_info().rss
    sockets: list[socket.socket] = []
    peak = before

    def upload() -> None:
        sock = server.connect()
        sockets.append(sock)
        try:
            sock.sendall(_head("/v1/embeddings", len(body) + 1))
            sock.sendall(body)  # all but the last byte: an old server would hold it forever
        except OSError:
            pass  # refused and closed: the rest was never read

    threads = [threading.Thread(target=upload) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
        peak = max(peak, me.memory_info().rss)
    time.sleep(0.5)
    peak = max(peak, me.memory_info().rss)
    for sock in sockets:
        sock.close()
    assert peak - before < 50 * 2**20, f"RSS grew by {(peak - before) / 2**20:.0f} MiB"


def test_protected_routes_trailing_slash_and_get_need_the_key_too(serve) -> None:
    server = serve(api_key=[KEY])
    for method, path in [
        ("GET", "/v1/models"),
        ("GET", "/v1/models/"),
        ("POST", "/v1/embeddings/"),
        ("POST", "/tokenize"),
    ]:
        r = httpx.request(method, server.url + path, json={"input": "x"}, timeout=10, follow_redirects=False)
        assert r.status_code == 401, (method, path, r.status_code)
        assert "location" not in r.headers


# -- timeouts and the connection cap ------------------------------------------------------------


def test_idle_and_slow_header_connections_are_closed(serve) -> None:
    server = serve(request_read_timeout=1.0)
    with server.connect() as idle, server.connect() as slow:
        slow.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: test\r\n")  # headers never finished
        start = time.monotonic()
        assert _closed_within(idle, 10)
        assert _closed_within(slow, 10)
        assert time.monotonic() - start < 5


def test_stalled_body_is_closed_and_logged_as_408(serve) -> None:
    server = serve(request_read_timeout=1.0)
    with server.connect() as sock:
        sock.sendall(_head("/v1/embeddings", 100) + b'{"input":')
        assert _closed_within(sock, 10)
    key = ("qembed_requests_total", (("route", "/v1/embeddings"), ("status", "408")))
    wait_for(lambda: server.metrics().get(key, 0) >= 1, timeout=10, what="a 408 counted")
    assert not any(
        name == "qembed_requests_total" and dict(labels).get("status") == "500"
        for name, labels in server.metrics()
    )


def test_kept_alive_connection_outlives_the_read_timeout_between_requests(serve) -> None:
    server = serve(request_read_timeout=0.5, timeout_keep_alive=5.0)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.post("/v1/embeddings", json={"input": "one"}).status_code == 200
        time.sleep(1.0)  # longer than the read timeout, shorter than keep-alive
        assert client.post("/v1/embeddings", json={"input": "two"}).status_code == 200
        assert client.get("/metrics").status_code == 200


def test_keep_alive_timeout_closes_idle_kept_alive_connections(serve) -> None:
    server = serve(timeout_keep_alive=0.5, request_read_timeout=30.0)
    with server.connect() as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        assert _read_response(sock).startswith(b"HTTP/1.1 200")
        start = time.monotonic()
        assert _closed_within(sock, 10)
        assert time.monotonic() - start < 5


def test_connections_over_the_cap_get_503_and_are_closed(serve) -> None:
    server = serve(max_connections=3)
    wait_for(
        lambda: not server.server.server_state.connections,
        timeout=10,
        what="the readiness probes' connections closed",
    )
    held = [server.connect() for _ in range(3)]
    try:
        for sock in held:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            assert _read_response(sock).startswith(b"HTTP/1.1 200")
        with server.connect() as extra:
            answer = _read_response(extra)
        assert answer.startswith(b"HTTP/1.1 503"), answer[:200]
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "too_many_connections"
    finally:
        for sock in held:
            sock.close()
    # below the cap again
    wait_for(
        lambda: httpx.get(server.url + "/health", timeout=5).status_code == 200,
        timeout=10,
        what="a connection accepted again",
    )


# -- aborted uploads -----------------------------------------------------------------------------


def test_aborted_upload_is_a_client_error_not_a_500(serve) -> None:
    server = serve()
    with server.connect() as sock:
        sock.sendall(_head("/v1/embeddings", 100_000) + b'{"input": "abc')
        time.sleep(0.2)
    key = ("qembed_requests_total", (("route", "/v1/embeddings"), ("status", "499")))
    wait_for(lambda: server.metrics().get(key, 0) >= 1, timeout=10, what="a 499 counted")
    samples = server.metrics()
    assert not any(
        name == "qembed_requests_total" and dict(labels).get("status") == "500" for name, labels in samples
    )
    assert samples[("qembed_errors_total", (("kind", "client_closed_request"),))] >= 1


# -- the access log --------------------------------------------------------------------------------


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "qembed.server.access"]


def test_newline_in_path_cannot_forge_a_log_line(tiny_client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="qembed.server.access"):
        r = tiny_client.get("/v1/x%0arequest id=forged method=GET path=/v1/embeddings status=200")
    assert r.status_code == 404
    lines = _access_lines(caplog)
    assert lines and all("\n" not in line and "\r" not in line for line in lines)
    line = lines[-1]
    assert 'path="/v1/x\\nrequest id=forged method=GET path=/v1/embeddings status=200"' in line
    assert line.count(" status=") == 1 or re.search(r'" status=404 ', line)


def test_quoted_request_id_is_replaced_not_echoed(tiny_client, caplog: pytest.LogCaptureFixture) -> None:
    bad = 'abc" status=200 user="admin'
    with caplog.at_level(logging.INFO, logger="qembed.server.access"):
        r = tiny_client.get("/health/", headers={"X-Request-Id": bad})  # /health is logged at DEBUG
        r2 = tiny_client.get("/info", headers={"X-Request-Id": bad})
    for response in (r, r2):
        assert response.status_code == 200
        given = response.headers["x-request-id"]
        assert given != bad and re.fullmatch(r"[0-9a-f]{16}", given)
    line = _access_lines(caplog)[-1]
    assert "admin" not in line and line.startswith(
        f"request id={r2.headers['x-request-id']} method=GET path=/info status=200"
    )
    # a safe id is kept
    assert (
        tiny_client.get("/health", headers={"X-Request-Id": "req_1.2-3"}).headers["x-request-id"]
        == "req_1.2-3"
    )


def test_log_value_and_request_id_helpers() -> None:
    assert log_value("/v1/embeddings") == "/v1/embeddings"
    assert log_value("/a\nb") == '"/a\\nb"'
    assert log_value('x" y=1') == '"x\\" y=1"'
    assert log_value("\ud800") == '"\\ud800"'
    assert log_value("a=b") == '"a=b"'
    assert request_id_of({b"x-request-id": b"ok-1"}) == "ok-1"
    for bad in (b"", b"a b", b"x" * 65, b'a"b', "é".encode()):
        assert request_id_of({b"x-request-id": bad}) != bad.decode("latin-1")


# -- no redirects ------------------------------------------------------------------------------


def test_trailing_slash_is_served_not_redirected(tiny_client) -> None:
    r = tiny_client.post(
        "/v1/embeddings/", json={"input": "hi"}, follow_redirects=False, headers={"Host": "evil.example"}
    )
    assert r.status_code == 200 and "location" not in r.headers
    assert tiny_client.get("/health/", follow_redirects=False).status_code == 200
    missing = tiny_client.get("/nothing/", follow_redirects=False)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


# -- lone surrogates ---------------------------------------------------------------------------


SURROGATE_BODIES = [
    ("/v1/embeddings", '{"input": "a\\ud800b"}'),
    ("/v1/embeddings", '{"input": ["ok", "\\udc00"]}'),
    ("/embed", '{"inputs": ["\\ud800"]}'),
    ("/tokenize", '{"input": "\\ud800"}'),
    ("/v1/search", '{"query": "\\ud800"}'),
    ("/v1/search", '{"query": "ok", "filters": {"path_prefix": "\\ud800"}}'),
    ("/v1/index", '{"documents": [{"id": "x", "text": "\\ud800"}]}'),
    ("/v1/index", '{"documents": [{"id": "\\ud800", "text": "ok"}]}'),
    ("/v1/index", '{"documents": [{"id": "x", "text": "ok", "metadata": {"title": "\\ud800"}}]}'),
    ("/v1/index", '{"documents": [{"id": "x", "text": "ok", "metadata": {"\\ud800": 1}}]}'),
    ("/v1/index", '{"documents": [{"id": "x", "text": "ok", "metadata": {"tags": ["a", "\\udfff"]}}]}'),
]


@pytest.fixture
def index_client(make_client, tmp_path: Path):
    return make_client(index="edges", data_dir=str(tmp_path))


@pytest.mark.parametrize(("path", "body"), SURROGATE_BODIES, ids=lambda v: v if v.startswith("/") else "")
def test_lone_surrogates_are_400_everywhere(index_client, path: str, body: str) -> None:
    r = index_client.post(path, content=body.encode(), headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_invalid_utf8_bytes_are_400(index_client) -> None:
    for path, body in [
        ("/v1/embeddings", b'{"input": "\xff"}'),
        ("/v1/index", b'{"documents": [{"id": "x", "text": "\xc3"}]}'),
    ]:
        r = index_client.post(path, content=body, headers={"Content-Type": "application/json"})
        assert r.status_code == 400, (path, r.text)
    # the index still works
    ok = index_client.post(
        "/v1/index", json={"documents": [{"id": "x", "text": "fine text", "metadata": {"title": "t"}}]}
    )
    assert ok.status_code == 200, ok.text


# -- the warning for an open bind --------------------------------------------------------------


def test_warning_for_a_non_loopback_bind_without_a_key(
    tiny_model_dir: Path, tiny_embedder: Any, caplog
) -> None:
    def warnings(**overrides: Any) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="qembed.server.app"):
            create_app(settings_for(tiny_model_dir, **overrides), tiny_embedder)
        return [
            r.getMessage()
            for r in caplog.records
            if r.levelno >= logging.WARNING and "--api-key" in r.getMessage()
        ]

    assert warnings(host="0.0.0.0")
    assert warnings(host="::")
    assert not warnings(host="0.0.0.0", api_key=[KEY])
    assert not warnings(host="127.0.0.1")
    assert not warnings(host="localhost")


def test_is_loopback() -> None:
    assert (
        is_loopback("127.0.0.1")
        and is_loopback("::1")
        and is_loopback("[::1]")
        and is_loopback("localhost")
        and is_loopback("127.1.2.3")
    )
    assert (
        not is_loopback("0.0.0.0")
        and not is_loopback("::")
        and not is_loopback("10.0.0.5")
        and not is_loopback("example.com")
    )


# -- /info -----------------------------------------------------------------------------------------


def _paths_in(info: dict) -> list[str]:
    names = [info["model"], info["served_model_name"], *info["accepted_model_names"]]
    return [n for n in names if n.startswith("/") or "/tmp" in n or str(Path.home()) in n]


def test_info_hides_absolute_paths_unless_authenticated(make_client, tiny_model_dir: Path) -> None:
    client = make_client(api_key=[KEY])
    anonymous = client.get("/info")
    assert anonymous.status_code == 200
    assert str(tiny_model_dir) not in anonymous.text and not _paths_in(anonymous.json())
    assert tiny_model_dir.name.lower() in anonymous.json()["accepted_model_names"]
    wrong = client.get("/info", headers={"Authorization": "Bearer nope"}).json()
    assert not _paths_in(wrong)
    authed = client.get("/info", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert str(tiny_model_dir).lower() in authed["accepted_model_names"]


def test_info_without_keys_shows_folder_names_only(tiny_client, tiny_model_dir: Path) -> None:
    info = tiny_client.get("/info")
    assert str(tiny_model_dir) not in info.text and str(tiny_model_dir).lower() not in info.text
    assert not _paths_in(info.json())


# -- the input schema is what the server accepts ---------------------------------------------------


INPUTS_REFUSED = [
    "",
    [],
    [""],
    ["ok", ""],
    [[]],
    [[1], []],
    [1, "a"],
    ["a", 1],
    [[1, "a"]],
    [True],
    {"a": 1},
    1,
    None,
    [1.5],
]
INPUTS_ACCEPTED = ["hello", ["a", "b"], [1, 2, 3], [[1, 2], [3]]]


def test_input_schema_matches_the_validator(tiny_client) -> None:
    # (token ids must be this tokenizer's -- a fact about the model no schema can say -- so the
    # token inputs accepted are /tokenize's own)
    ids = [
        row["tokens"]
        for row in tiny_client.post("/tokenize", json={"input": ["hello world", "more"]}).json()["data"]
    ]
    accepted = [*INPUTS_ACCEPTED[:2], ids[0], ids]
    schema = tiny_client.get("/openapi.json").json()
    request = schema["components"]["schemas"]["EmbeddingRequest"]
    validator = jsonschema_rs.validator_for(request["properties"]["input"])
    for value in INPUTS_REFUSED:
        assert not validator.is_valid(value), value
        assert tiny_client.post("/v1/embeddings", json={"input": value}).status_code == 400, value
    for value in accepted:
        assert validator.is_valid(value), value
        assert tiny_client.post("/v1/embeddings", json={"input": value}).status_code == 200, value


# -- CORS still answers the gate's refusals ----------------------------------------------------------


def test_gate_refusals_carry_cors_headers(make_client) -> None:
    origin = "https://app.example"
    client = make_client(api_key=[KEY], cors_allow_origin=[origin], payload_limit=2048)
    refused = client.post("/v1/embeddings", json={"input": "x"}, headers={"Origin": origin})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == origin
    big = client.post(
        "/v1/embeddings", content=b"x" * 4096, headers={"Origin": origin, "Authorization": f"Bearer {KEY}"}
    )
    assert big.status_code == 413 and big.headers["access-control-allow-origin"] == origin
    preflight = client.options(
        "/v1/embeddings",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == origin


def test_lone_surrogate_message_says_what_is_wrong(tiny_client) -> None:
    for body in ('{"input": "a\\ud800b"}', '{"input": ["\\udc00"]}'):
        r = tiny_client.post(
            "/v1/embeddings", content=body.encode(), headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 400
        assert "surrogate pair" in r.json()["error"]["message"], r.text
