"""Settings flags come from the settings groups: every command that loads a model has the
engine's flags (``--quantize``, ``--int8-*``, ...), flag = env var = field, and every
overlay of settings is validated (unknown names and bad values fail before a model loads)."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from qembed.cli.options import build_settings, engine_fields, settings_options
from qembed.errors import InputError
from qembed.settings import GROUPS, EncodeSettings, ModelSettings, SearchSettings, Settings

# Every command that loads a model (in process), by its path under `qembed`.
MODEL_LOADING = [
    ("info",), ("embed",), ("serve",), ("index",), ("search",), ("embed-corpus",),
    ("eval", "sts"), ("eval", "pairs"), ("eval", "code"), ("eval", "retrieval"), ("eval", "compare"), ("eval", "zh-report"),
    ("bench", "throughput"), ("bench", "load"),
]  # fmt: skip


def _root() -> click.Group:
    from qembed.cli.main import cli

    return cli()


def _command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = _root()
    for name in path:
        assert isinstance(command, click.Group), path
        command = command.commands[name]
    return command


def _flags(command: click.Command) -> set[str]:
    return {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)}


def _all_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            out += _all_commands(command, (*prefix, name))
        else:
            out.append((*prefix, name))
    return out


@pytest.mark.parametrize("path", MODEL_LOADING, ids=" ".join)
def test_every_model_loading_command_has_the_engine_flags(path: tuple[str, ...]) -> None:
    flags = _flags(_command(path))
    assert "--quantize" in flags and "--int8-min-cosine" in flags
    for name in engine_fields():
        flag = "--" + name.replace("_", "-")
        if name == "model" and path in (("eval", "compare"), ("eval", "zh-report")):
            continue  # --model is repeatable there: one target each
        if name == "chunk_overlap" and path in (("index",), ("search",)):
            continue  # --chunk-overlap is the index's chunking there
        assert flag in flags, (path, flag)


def test_every_command_with_a_model_flag_is_listed() -> None:
    """A new model-loading command cannot forget the engine flags unseen."""
    with_model = {path for path in _all_commands(_root()) if "--model" in _flags(_command(path))}
    assert with_model <= set(MODEL_LOADING), with_model - set(MODEL_LOADING)


def test_help_shows_the_env_var_of_a_generated_flag() -> None:
    result = CliRunner().invoke(_root(), ["eval", "sts", "--help"])
    assert result.exit_code == 0, result.output
    assert "--quantize" in result.output and "QEMBED_QUANTIZE" in result.output


def test_groups_partition_the_settings() -> None:
    names = [n for g in GROUPS for n in g.model_fields]
    assert sorted(names) == sorted(Settings.model_fields) and len(names) == len(set(names))
    assert Settings.fields_of(SearchSettings) == [
        "data_dir",
        "index",
        "store_uri",
        "ann",
        "ann_threshold",
        "ann_ef",
    ]
    assert Settings.fields_of(ModelSettings, EncodeSettings) == engine_fields()
    assert "quantize" in Settings.fields_of(ModelSettings) and "max_tokens" in Settings.fields_of(
        EncodeSettings
    )
    assert Settings.group_of("max_batch_tokens").__name__ == "ServingSettings"
    with pytest.raises(ValueError, match="nosuch"):
        Settings.fields_of(ModelSettings, exclude=("nosuch",))


def test_settings_stay_flat() -> None:
    s = Settings()
    assert (
        s.max_batch_size == 256 and s.quantize == "none" and s.data_dir == "qembed-data" and s.port == 30000
    )


@pytest.mark.parametrize(("changes", "field", "words"), [
    ({"devcie": "cuda"}, "devcie", "did you mean 'device'"),
    ({"long_text": "bogus"}, "long_text", "'chunk', 'truncate' or 'error'"),
    ({"threads": 0}, "threads", "greater than or equal to 1"),
    ({"quantize": "int9"}, "quantize", "int8"),
])  # fmt: skip
def test_overlay_refuses_unknown_names_and_bad_values(changes: dict, field: str, words: str) -> None:
    with pytest.raises(InputError) as info:
        Settings().overlay(**changes)
    assert info.value.param == field and field in info.value.message and words in info.value.message


def test_overlay_applies_validated_changes() -> None:
    base = Settings()
    s = base.overlay(quantize="int8", int8_keep="mlp.down_proj, q_proj", threads="2")
    assert (s.quantize, s.int8_keep, s.threads) == ("int8", ["mlp.down_proj", "q_proj"], 2)
    assert base.quantize == "none" and base.overlay() is base


@pytest.mark.parametrize("overrides", [{"long_text": "bogus"}, {"devcie": "cuda"}])
def test_embedder_validates_overrides_before_loading(monkeypatch, overrides: dict) -> None:
    import qembed.embedding.embedder as embedder_module
    from qembed import Embedder

    def never(*args, **kwargs):
        raise AssertionError("a model was resolved before the settings were validated")

    monkeypatch.setattr(embedder_module, "resolve_model", never)
    with pytest.raises(InputError) as info:
        Embedder(**overrides)
    assert next(iter(overrides)) in info.value.message


def _capture() -> tuple[click.Command, list[Settings]]:
    seen: list[Settings] = []

    @click.command()
    @settings_options(engine_fields())
    def command(**values):
        seen.append(build_settings(values))

    return command, seen


def test_env_var_flag_and_field_are_one(monkeypatch) -> None:
    command, seen = _capture()
    monkeypatch.setenv("QEMBED_QUANTIZE", "int8")
    monkeypatch.setenv("QEMBED_INT8_MIN_COSINE", "0.5")
    assert CliRunner().invoke(command, []).exit_code == 0
    assert (seen[-1].quantize, seen[-1].int8_min_cosine) == ("int8", 0.5)  # env var -> field
    result = CliRunner().invoke(command, ["--int8-min-cosine", "0.9", "--int8-keep", "a", "--int8-keep", "b"])
    assert result.exit_code == 0, result.output
    assert (seen[-1].quantize, seen[-1].int8_min_cosine, seen[-1].int8_keep) == (
        "int8",
        0.9,
        ["a", "b"],
    )  # the flag wins


def test_a_bad_flag_is_one_error_line_exit_2(tiny_model_dir) -> None:
    result = CliRunner().invoke(_root(), ["embed", "--model", str(tiny_model_dir), "--threads", "0", "hi"])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "threads" in lines[0]


def test_a_bad_env_var_is_one_error_line_exit_2(monkeypatch) -> None:
    monkeypatch.setenv("QEMBED_PORT", "99999999")
    result = CliRunner().invoke(_root(), ["info", "--model", "/nonexistent"])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and "port" in result.stderr


def test_bench_refuses_a_bad_settings_flag() -> None:
    result = CliRunner().invoke(_root(), ["bench", "throughput", "--model", "/nonexistent", "--threads", "0"])
    assert result.exit_code == 2 and "threads" in result.output


def test_the_cli_is_click_only() -> None:
    code = "import sys, qembed.cli.main as m; m.cli(); print('typer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
