"""The server's docs cannot drift: generated tables are current, every documented error code
is one the code sends, the curl examples work; `qembed serve` has a flag per setting."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from qembed.server import docs
from qembed.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def documents() -> list[Path]:
    return [README]


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.name)
def test_generated_tables_are_current(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "<!-- qembed:settings-table -->" in text and "<!-- qembed:errors-table -->" in text
    assert docs.render(text) == text, f"run: python -m qembed.server.docs {path.relative_to(ROOT)}"
    for name in Settings.model_fields:
        assert f"`QEMBED_{name.upper()}`" in text


def test_documented_error_codes_are_sent_by_the_code() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "src" / "qembed").rglob("*.py") if p.name != "docs.py")
    for status, code, _, _ in docs.ERRORS:
        assert f'"{code}"' in source, f"documented code {code} ({status}) is not in the source"


def curl_examples() -> list[tuple[str, dict]]:
    text = README.read_text(encoding="utf-8")
    found = re.findall(r"curl -s http://127\.0\.0\.1:30000(/\S+)[^\n]*(?:\\\n\s*)?-d '([^']*)'", text)
    return [(path, json.loads(body)) for path, body in found]


def test_curl_examples_work(tiny_client) -> None:
    examples = curl_examples()
    assert len(examples) >= 7
    for path, body in examples:
        if "dimensions" in body:
            body = {**body, "dimensions": 32}  # the tiny test model has 64 dimensions
        r = tiny_client.post(path, json=body)
        assert r.status_code == 200, (path, body, r.text)


def test_serve_has_a_flag_per_setting() -> None:
    from qembed.cli.serve import serve_cmd

    result = CliRunner().invoke(serve_cmd, ["--help"])
    assert result.exit_code == 0, result.output
    for name in Settings.model_fields:
        assert "--" + name.replace("_", "-") in result.output, name
    assert "QEMBED_MAX_BATCH_TOKENS" in result.output


def test_serve_flags_become_settings(monkeypatch) -> None:
    import qembed.cli.serve as serve

    seen: list[Settings] = []
    monkeypatch.setattr(serve, "run_server", lambda settings: seen.append(settings) or 0)
    monkeypatch.setenv("QEMBED_MAX_BATCH_SIZE", "7")
    monkeypatch.setenv("QEMBED_API_KEY", "from-env")
    result = CliRunner().invoke(
        serve.serve_cmd,
        ["--model", "minilm", "--port", "31234", "--max-batch-tokens", "4096", "--api-key", "a", "--api-key", "b", "--no-warmup"],
    )
    assert result.exit_code == 0, result.output
    s = seen[0]
    assert (s.model, s.port, s.max_batch_tokens, s.max_batch_size, s.warmup) == ("minilm", 31234, 4096, 7, False)
    assert [k.get_secret_value() for k in s.api_key] == ["a", "b"]  # the flag wins over the env var
