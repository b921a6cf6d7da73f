"""`qembed serve` (qembed.cli.serve): a flag per setting, and flags and env vars become the
Settings the server runs with (the server itself is not started)."""

from __future__ import annotations

from click.testing import CliRunner

from qembed.settings import Settings


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
        [
            "--model",
            "minilm",
            "--port",
            "31234",
            "--max-batch-tokens",
            "4096",
            "--api-key",
            "a",
            "--api-key",
            "b",
            "--no-warmup",
        ],
    )
    assert result.exit_code == 0, result.output
    s = seen[0]
    assert (s.model, s.port, s.max_batch_tokens, s.max_batch_size, s.warmup) == (
        "minilm",
        31234,
        4096,
        7,
        False,
    )
    assert [k.get_secret_value() for k in s.api_key] == ["a", "b"]  # the flag wins over the env var
