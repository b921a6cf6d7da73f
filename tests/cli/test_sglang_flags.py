"""sglang's serving command starts qembed: its flags are translated, refused with why, or
accepted and logged; a port in use is found before the model loads."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from qembed.cli import serve as serve_mod
from qembed.cli.main import cli


def _run_capturing(monkeypatch: pytest.MonkeyPatch, *args: str):
    seen = {}

    def fake_run_server(settings):
        seen["settings"] = settings
        return 0

    monkeypatch.setattr(serve_mod, "run_server", fake_run_server)
    result = CliRunner().invoke(cli(), ["serve", "--port", "0", *args])
    return result, seen.get("settings")


def test_sglang_command_translates(monkeypatch: pytest.MonkeyPatch) -> None:
    result, settings = _run_capturing(
        monkeypatch, "--model-path", "Qwen/Qwen3-Embedding-0.6B", "--is-embedding", "--context-length", "4096",
        "--tp", "1", "--mem-fraction-static", "0.8", "--trust-remote-code",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert settings.model == "Qwen/Qwen3-Embedding-0.6B" and settings.max_tokens == 4096


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tp", "2"], "one replica per GPU"),
        (["--chat-template", "x.jinja"], "never applies a chat template"),
        (["--model", "a", "--model-path", "b"], "disagree"),
    ],
)
def test_sglang_flags_that_cannot_apply_are_refused_with_why(
    monkeypatch: pytest.MonkeyPatch, args: list[str], needle: str
) -> None:
    result, settings = _run_capturing(monkeypatch, *args)
    assert result.exit_code == 2 and needle in result.output and settings is None


def test_a_port_in_use_is_refused_before_the_model_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setattr(serve_mod, "run_server", lambda settings: pytest.fail("the model would load"))
        result = CliRunner().invoke(cli(), ["serve", "--host", "127.0.0.1", "--port", str(port)])
    assert result.exit_code == 2 and f"127.0.0.1:{port}" in result.output and "--port" in result.output


@pytest.mark.e2e
def test_the_articles_sglang_command_starts_a_server(tmp_path: Path, tiny_model_dir: Path) -> None:
    """`python -m sglang.launch_server --model-path ... --is-embedding --host ... --port ...`, with qembed."""
    from tests.server.conftest import serve_process

    log_path = tmp_path / "serve.log"
    args = [
        "--model-path",
        str(tiny_model_dir),
        "--is-embedding",
        "--host",
        "127.0.0.1",
        "--log-level",
        "info",
    ]
    with serve_process(log_path, *args) as (proc, url):
        r = httpx.post(url + "/v1/embeddings", json={"input": "hello"}, timeout=30)
        assert r.status_code == 200 and len(r.json()["data"][0]["embedding"]) == 64
        proc.terminate()
        proc.wait(60)
    assert "--is-embedding: accepted" in log_path.read_text()
