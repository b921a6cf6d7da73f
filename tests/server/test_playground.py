"""#14: the playground at ``/`` and offline /docs and /redoc (no CDN, nothing from elsewhere).

The HTTP tests run in process; ``test_playground_in_chromium`` (e2e) loads the page in
headless Chromium (Debian's ``chromium`` package), with the texts in the URL so that the page
computes on load, and reads the similarity the page rendered from the dumped DOM. It skips
when no Chromium is installed; it also takes a screenshot (``QEMBED_PLAYGROUND_SCREENSHOT=PATH``
keeps it; the README's, with MiniLM and an index, is taken by ``scripts/playground_screenshot.py``).
The search tests load the page over a served index (``--index``) and without one.
"""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import httpx
import numpy as np
import pytest

from qembed.server.routes.playground import DOCS_ASSETS, PLAYGROUND_ASSETS, STATIC, docs_assets_dir
from tests.server.conftest import LiveServer, settings_for

EXTERNAL = re.compile(r"\b(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}")  # http://host, https://host, //host


class _Refs(html.parser.HTMLParser):
    """Every src/href of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


def refs(page: str) -> list[str]:
    parser = _Refs()
    parser.feed(page)
    return parser.refs


def assert_local(page: str, where: str) -> None:
    found = EXTERNAL.findall(page)
    assert not found, f"{where} references other hosts: {found}"


# -- the page and its assets ------------------------------------------------------------------


def test_root_serves_the_playground(tiny_client) -> None:
    r = tiny_client.get("/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert (
        "default-src 'none'" in r.headers["content-security-policy"]
    )  # the browser refuses anything from elsewhere
    assert_local(r.text, "/")
    assert 'id="texts"' in r.text and 'id="heatmap"' in r.text
    for ref in refs(r.text):
        assert not ref.startswith("/") and "//" not in ref  # relative: works behind a path prefix too
        if ref.startswith("data:"):
            continue
        asset = tiny_client.get("/" + ref)
        assert asset.status_code == 200, ref


def test_playground_assets(tiny_client) -> None:
    js = tiny_client.get("/static/playground.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "v1/embeddings" in js.text and "data-similarity" in js.text
    css = tiny_client.get("/static/playground.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    for name in PLAYGROUND_ASSETS | {"playground.html"}:
        assert_local((STATIC / name).read_text(encoding="utf-8"), name)


@pytest.mark.parametrize(
    "path",
    ["/static/nope.js", "/static/..%2Fapp.py", "/static/docs/..%2F..%2Fapp.py", "/static/docs/core.py"],
)
def test_only_listed_assets_are_served(tiny_client, path: str) -> None:
    assert tiny_client.get(path).status_code == 404


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
def test_docs_pages_use_bundled_assets(tiny_client, page: str, assets: set[str]) -> None:
    r = tiny_client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert_local(r.text, page)
    assert "/openapi.json" in r.text
    used = set()
    for ref in refs(r.text):
        assert ref.startswith("/static/docs/"), ref
        asset = tiny_client.get(ref)
        assert asset.status_code == 200, ref
        if ref.endswith(".js"):
            assert asset.headers["content-type"].startswith("text/javascript")
            assert len(asset.content) > 100_000  # the real bundle, not a stub
        used.add(ref.rsplit("/", 1)[1])
    assert used == assets
    assert used <= DOCS_ASSETS and all((docs_assets_dir() / name).is_file() for name in DOCS_ASSETS)


def test_swagger_asks_no_validator(tiny_client) -> None:
    assert '"validatorUrl": null' in tiny_client.get("/docs").text  # else it calls validator.swagger.io


def test_pages_are_open_and_out_of_the_schema(make_client) -> None:
    client = make_client(api_key=["secret-key-1"])
    for path in ["/", "/docs", "/redoc", "/static/playground.js", "/static/docs/swagger-ui.css"]:
        assert client.get(path).status_code == 200, path
    assert (
        client.post("/v1/embeddings", json={"input": "x"}).status_code == 401
    )  # what they call still needs the key
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/docs", "/redoc"} & set(paths) and not any(p.startswith("/static") for p in paths)


# -- in a browser -------------------------------------------------------------------------------


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


@pytest.fixture
def binary() -> str:
    """Chromium's path; the test skips without one."""
    found = chromium()
    if found is None:
        pytest.skip("no Chromium (Debian: apt-get install chromium)")
    return found


def run_chromium(
    binary: str, profile: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    command = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--disable-component-update",
        "--mute-audio",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=30000",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


class _Cells(html.parser.HTMLParser):
    """The heatmap cells (row, col) -> similarity, and the token counts, of a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[int, int], float] = {}
        self.counts: list[int] = []
        self.status: str | None = None
        self.status_text: list[str] = []
        self._in_status = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("data-similarity") is not None:
            self.cells[(int(a["data-row"] or 0), int(a["data-col"] or 0))] = float(
                a["data-similarity"] or "nan"
            )
        if tag == "tr" and a.get("data-count") is not None:
            self.counts.append(int(a["data-count"] or 0))
        if a.get("id") == "status":
            self.status = a.get("data-state")
            self._in_status = True

    def handle_endtag(self, tag: str) -> None:
        self._in_status = False

    def handle_data(self, data: str) -> None:
        if self._in_status:
            self.status_text.append(data)


@pytest.mark.e2e
def test_playground_in_chromium(binary: str, tiny_model_dir, tiny_embedder, tmp_path) -> None:
    from qembed.server.app import create_app

    texts = ["What is the capital of China?", "Beijing is the capital of China."]
    expected = np.asarray(tiny_embedder.encode(texts, task="sts"), dtype=np.float64)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    tokens = [len(t) for t in tiny_embedder.tokenize(texts, task="sts")]

    with LiveServer(create_app(settings_for(tiny_model_dir), tiny_embedder)) as server:
        url = f"{server.url}/?" + "&".join(f"text={quote(t)}" for t in texts) + "&task=sts&run=1"
        done = run_chromium(binary, tmp_path / "profile", "--dump-dom", url)
        assert done.returncode == 0, done.stderr[-2000:]
        page = _Cells()
        page.feed(done.stdout)
        assert page.status == "done", (
            f"status {page.status}: {''.join(page.status_text)}\n{done.stderr[-2000:]}"
        )
        assert set(page.cells) == {(0, 0), (0, 1), (1, 0), (1, 1)}
        assert page.cells[(0, 0)] == pytest.approx(1.0, abs=1e-4)
        assert page.cells[(0, 1)] == pytest.approx(page.cells[(1, 0)], abs=1e-6)
        assert page.cells[(0, 1)] == pytest.approx(float(expected[0] @ expected[1]), abs=1e-3)
        assert page.counts == tokens

        shot = Path(os.environ.get("QEMBED_PLAYGROUND_SCREENSHOT") or tmp_path / "playground.png").resolve()
        shot.parent.mkdir(parents=True, exist_ok=True)
        taken = run_chromium(
            binary,
            tmp_path / "profile",
            f"--screenshot={shot}",
            "--window-size=1100,900",
            "--hide-scrollbars",
            url,
        )
        assert taken.returncode == 0, taken.stderr[-2000:]
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # /docs and /redoc render from the bundled assets (with a CDN they were blank offline).
        for path, rendered in [("/docs", "opblock-summary"), ("/redoc", "Create embeddings (OpenAI)")]:
            dom = run_chromium(binary, tmp_path / "profile", "--dump-dom", server.url + path)
            assert dom.returncode == 0, dom.stderr[-2000:]
            assert rendered in dom.stdout, f"{path} did not render: {dom.stdout[-1500:]}"


class _Hits(html.parser.HTMLParser):
    """The search results (rank, score, id) of a dumped DOM, and whether the search box shows."""

    def __init__(self) -> None:
        super().__init__()
        self.hits: list[tuple[int, float, str]] = []
        self.search_hidden: bool | None = None
        self.status: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "li" and a.get("data-rank") is not None:
            self.hits.append(
                (int(a["data-rank"] or 0), float(a["data-score"] or "nan"), a.get("data-id") or "")
            )
        if a.get("id") == "search":
            self.search_hidden = "hidden" in a
        if a.get("id") == "search-status":
            self.status = a.get("data-state")


@pytest.mark.e2e
def test_playground_search_in_chromium(binary: str, tiny_model_dir, tiny_embedder, tmp_path) -> None:
    from qembed.server.app import create_app

    app = create_app(
        settings_for(tiny_model_dir, index="notes", data_dir=str(tmp_path / "data")), tiny_embedder
    )
    with LiveServer(app) as server:
        docs = [
            {"id": "a", "text": "Beijing is the capital of China."},
            {"id": "b", "text": "Gravity pulls things down."},
        ]
        httpx.post(server.url + "/v1/index", json={"documents": docs}, timeout=60).raise_for_status()
        expected = httpx.post(
            server.url + "/v1/search", json={"query": "capital of China", "k": 2}, timeout=60
        ).json()["data"]
        done = run_chromium(
            binary, tmp_path / "profile", "--dump-dom", f"{server.url}/?q={quote('capital of China')}&k=2"
        )
        assert done.returncode == 0, done.stderr[-2000:]
        page = _Hits()
        page.feed(done.stdout)
        assert page.search_hidden is False and page.status == "done", done.stdout[-2000:]
        assert [(rank, hit_id) for rank, _, hit_id in page.hits] == [(h["rank"], h["id"]) for h in expected]
        assert [score for _, score, _ in page.hits] == pytest.approx([h["score"] for h in expected], abs=1e-6)


@pytest.mark.e2e
def test_no_search_box_without_an_index(binary: str, live_server, tmp_path) -> None:
    done = run_chromium(binary, tmp_path / "profile", "--dump-dom", live_server.url + "/")
    page = _Hits()
    page.feed(done.stdout)
    assert page.search_hidden is True
