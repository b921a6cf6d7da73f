"""Take the README's playground screenshot (docs/img/playground.png) in headless Chromium.

    .venv/bin/python scripts/playground_screenshot.py [OUT.png]

Serves all-MiniLM-L6-v2 (the ``minilm`` extra; no download) with a small search index in a
temporary folder, on 127.0.0.1, and loads ``/`` with texts and a query in the URL so that the
page computes the similarity heatmap and the search results on load. Needs Debian's
``chromium`` (apt-get install chromium).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import uvicorn

from qembed import Embedder, Settings
from qembed.server.app import create_app

TEXTS = [
    "What is the capital of China?",
    "Beijing is the capital of China.",
    "Gravity makes apples fall from trees.",
    "Newton described gravitation in the Principia.",
]
DOCUMENTS = [
    {
        "id": "beijing",
        "text": "Beijing is the capital of the People's Republic of China.",
        "metadata": {"path": "geo/beijing.md"},
    },
    {
        "id": "paris",
        "text": "Paris is the capital and largest city of France.",
        "metadata": {"path": "geo/paris.md"},
    },
    {
        "id": "gravity",
        "text": "Gravity is the attraction between masses; it makes apples fall.",
        "metadata": {"path": "physics/gravity.md"},
    },
]


def main(out: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("no chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(model="minilm", index="notes", data_dir=tmp)
        app = create_app(settings, Embedder("minilm", device="cpu"))
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            for _ in range(600):
                try:
                    if httpx.get(url + "/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            httpx.post(url + "/v1/index", json={"documents": DOCUMENTS}, timeout=60).raise_for_status()
            query = urlencode(
                [
                    *(("text", t) for t in TEXTS),
                    ("task", "sts"),
                    ("run", "1"),
                    ("q", "capital city"),
                    ("k", "3"),
                ]
            )
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                    f"--user-data-dir={tmp}/profile", "--virtual-time-budget=30000", "--window-size=1100,1280",
                    f"--screenshot={out.resolve()}", f"{url}/?{query}",
                ],
                check=True, capture_output=True, timeout=120,
            )  # fmt: skip
        finally:
            server.should_exit = True
            thread.join(timeout=30)
    print(out)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/img/playground.png"))
