"""A small Hugging Face hub look-alike on 127.0.0.1 for download tests (no network).

It implements what ``huggingface_hub`` 2.x asks for in ``snapshot_download``:

- ``GET /api/models/{repo}[/revision/{rev}]``: repo info with ``sha`` and ``siblings``;
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=...``: the file listing
  (``type``, ``path``, ``size``, ``oid``; LFS files also carry ``lfs``);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{file}``: the file with ``ETag``, ``X-Repo-Commit``,
  ``Content-Length``; ``Range`` requests get ``206`` with ``Content-Range`` (resume).

Unknown repos answer 404 with ``X-Error-Code: RepoNotFound``, unknown revisions
``RevisionNotFound``, unknown files ``EntryNotFound``, as the real hub does. No Xet headers
are sent, so the client uses plain HTTP downloads.

For resume tests, ``cut_once`` names files whose first GET sends the headers of the whole
file and then only half of the bytes before closing the connection.

Usage::

    with HubServer({"Org/Tiny": folder}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        ...
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".gz")


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class _Repo:
    def __init__(self, repo_id: str, folder: Path) -> None:
        self.repo_id = repo_id
        self.folder = Path(folder)
        self.files: dict[str, bytes] = {
            p.relative_to(self.folder).as_posix(): p.read_bytes()
            for p in sorted(self.folder.rglob("*"))
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(self.folder).parts)
        }
        digest = hashlib.sha1()
        for name, data in self.files.items():
            digest.update(name.encode() + b"\0" + hashlib.sha1(data).digest())
        self.sha = digest.hexdigest()  # a 40-hex "commit" that changes with the content

    def is_lfs(self, name: str) -> bool:
        return name.endswith(LFS_SUFFIXES)

    def etag(self, name: str) -> str:
        data = self.files[name]
        return hashlib.sha256(data).hexdigest() if self.is_lfs(name) else _git_blob_sha(data)

    def tree(self, prefix: str, recursive: bool) -> list[dict]:
        entries: list[dict] = []
        folders: set[str] = set()
        base = prefix.strip("/")
        for name, data in self.files.items():
            if base and not name.startswith(base + "/"):
                continue
            rest = name[len(base) + 1 :] if base else name
            if "/" in rest:
                top = (base + "/" if base else "") + rest.split("/", 1)[0]
                if top not in folders:
                    folders.add(top)
                    entries.append(
                        {
                            "type": "directory",
                            "path": top,
                            "oid": hashlib.sha1(top.encode()).hexdigest(),
                            "size": 0,
                        }
                    )
                if not recursive:
                    continue
            entry = {"type": "file", "path": name, "size": len(data), "oid": _git_blob_sha(data)}
            if self.is_lfs(name):
                entry["lfs"] = {
                    "oid": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "pointerSize": 134,
                }
            entries.append(entry)
        return entries


class HubServer:
    """Serve local folders as hub repos on 127.0.0.1 (an ephemeral port) in a thread."""

    def __init__(self, repos: dict[str, Path], *, cut_once: tuple[str, ...] = ()) -> None:
        self.repos = {repo_id: _Repo(repo_id, folder) for repo_id, folder in repos.items()}
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path, headers)
        self._cut_pending = set(cut_once)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests ------------------------------------------------------------------
    def record(self, method: str, path: str, headers: dict[str, str]) -> None:
        with self._lock:
            self.requests.append((method, path, headers))

    def take_cut(self, name: str) -> bool:
        with self._lock:
            if name in self._cut_pending:
                self._cut_pending.discard(name)
                return True
            return False

    def requested(self, method: str, contains: str = "") -> list[tuple[str, str, dict[str, str]]]:
        with self._lock:
            return [r for r in self.requests if r[0] == method and contains in r[1]]


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence stderr
        pass

    # -- responses ---------------------------------------------------------------------------
    def _send(
        self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, *, head: bool = False
    ) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        self._send(
            status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def _error(self, status: int, code: str, message: str, *, head: bool = False) -> None:
        body = json.dumps({"error": message}).encode()
        self._send(
            status,
            body,
            {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message},
            head=head,
        )

    # -- routing -------------------------------------------------------------------------------
    def do_HEAD(self) -> None:  # noqa: N802
        self._route(head=True)

    def do_GET(self) -> None:  # noqa: N802
        self._route(head=False)

    def _route(self, *, head: bool) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        query = parse_qs(split.query)
        self.hub.record("HEAD" if head else "GET", self.path, {k: v for k, v in self.headers.items()})
        if path.startswith("/api/models/"):
            self._api(path[len("/api/models/") :], query, head=head)
        elif "/resolve/" in path:
            self._resolve(path.lstrip("/"), head=head)
        else:
            self._error(404, "NotFound", f"no route for {path}", head=head)

    def _find_repo(self, rest: str) -> tuple[_Repo | None, str]:
        for repo_id, repo in self.hub.repos.items():
            if rest == repo_id or rest.startswith(repo_id + "/"):
                return repo, rest[len(repo_id) :].lstrip("/")
        return None, rest

    def _revision_ok(self, repo: _Repo, revision: str) -> bool:
        return revision in ("main", repo.sha)

    def _api(self, rest: str, query: dict[str, list[str]], *, head: bool) -> None:
        repo, tail = self._find_repo(rest)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", head=head)
            return
        if tail == "" or tail.startswith("revision/"):
            revision = tail[len("revision/") :] if tail else "main"
            if not self._revision_ok(repo, revision):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
                return
            self._json(
                200,
                {
                    "_id": repo.sha[:24],
                    "id": repo.repo_id,
                    "modelId": repo.repo_id,
                    "sha": repo.sha,
                    "private": False,
                    "disabled": False,
                    "gated": False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": ["sentence-transformers"],
                    "library_name": "sentence-transformers",
                    "siblings": [{"rfilename": name} for name in repo.files],
                },
            )
            return
        if tail.startswith("tree/"):
            revision, _, sub = tail[len("tree/") :].partition("/")
            if not self._revision_ok(repo, revision):
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
                return
            recursive = (query.get("recursive") or ["false"])[0].lower() in ("1", "true")
            self._json(200, repo.tree(sub, recursive))
            return
        self._error(404, "NotFound", f"no api route for {rest}", head=head)

    def _resolve(self, rest: str, *, head: bool) -> None:
        repo_part, _, after = rest.partition("/resolve/")
        repo = self.hub.repos.get(repo_part)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", head=head)
            return
        revision, _, name = after.partition("/")
        if not self._revision_ok(repo, revision):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head=head)
            return
        if name not in repo.files:
            self._error(404, "EntryNotFound", f"{name} does not exist", head=head)
            return
        data = repo.files[name]
        headers = {
            "ETag": f'"{repo.etag(name)}"',
            "X-Repo-Commit": repo.sha,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if repo.is_lfs(name):
            headers["X-Linked-Etag"] = f'"{repo.etag(name)}"'
            headers["X-Linked-Size"] = str(len(data))
        start = 0
        status = 200
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes=") and not head:
            first, _, last = range_header[len("bytes=") :].partition("-")
            start = int(first or 0)
            end = int(last) if last else len(data) - 1
            if start >= len(data):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"})
                return
            data = data[start : end + 1]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{start + len(data) - 1}/{len(repo.files[name])}"
        headers["Content-Length"] = str(len(data))
        if not head and status == 200 and self.hub.take_cut(name):
            # Promise the whole file, send half, drop the connection: an interrupted download.
            self.send_response(200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(status, data, headers, head=head)


def use_hub(monkeypatch, *, endpoint: str, home: Path, offline: bool = False) -> None:
    """Point huggingface_hub (in this process) at ``endpoint`` with ``home`` as HF_HOME.

    huggingface_hub reads its environment once, at import; the env vars are set for child
    processes and the already-imported constants are patched for this one.
    """
    from huggingface_hub import constants

    hub_cache = str(Path(home) / "hub")
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", hub_cache)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", hub_cache)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
    host = urlsplit(endpoint).hostname
    if host and hasattr(constants, "HF_URL_HOSTS"):
        monkeypatch.setattr(constants, "HF_URL_HOSTS", frozenset(constants.HF_URL_HOSTS | {host}))


def closed_port_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (connections are refused at once)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
