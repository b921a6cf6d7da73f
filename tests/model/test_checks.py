"""Incomplete model folders: one message per kind, listing what is missing, where, and the fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from qembed import Embedder
from qembed.errors import IncompleteModelFolder
from qembed.model.checks import check_model_folder, missing_files


def _copy(src: Path, dst: Path, *, without: tuple[str, ...] = ()) -> Path:
    """A cheap copy of a model folder (symlinked files) minus some paths."""
    for path in src.rglob("*"):
        rel = path.relative_to(src)
        if path.is_dir() or any(rel.as_posix() == w or rel.as_posix().startswith(w + "/") for w in without):
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
    return dst


def _no_config(src: Path, dst: Path) -> Path:
    return _copy(src, dst, without=("config.json",))


def _no_weights(src: Path, dst: Path) -> Path:
    return _copy(src, dst, without=("model.safetensors",))


def _missing_shard(src: Path, dst: Path) -> Path:
    _copy(src, dst, without=("model.safetensors",))
    (dst / "model-00001-of-00002.safetensors").symlink_to(src / "model.safetensors")
    index = {
        "metadata": {},
        "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"},
    }
    (dst / "model.safetensors.index.json").write_text(json.dumps(index))
    return dst


def _no_tokenizer(src: Path, dst: Path) -> Path:
    return _copy(src, dst, without=("tokenizer.json", "vocab.json", "merges.txt"))


def _no_pooling(src: Path, dst: Path) -> Path:
    return _copy(src, dst, without=("1_Pooling",))


KINDS = {
    "no_config": (_no_config, ["config.json"]),
    "no_weights": (_no_weights, ["model.safetensors"]),
    "missing_shard": (_missing_shard, ["model-00002-of-00002.safetensors", "model.safetensors.index.json"]),
    "no_tokenizer": (_no_tokenizer, ["tokenizer"]),
    "no_pooling_config": (_no_pooling, ["1_Pooling/config.json", "modules.json"]),
}


@pytest.fixture(scope="module")
def broken_folders(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("broken")
    folders = {kind: make(tiny_model_dir, root / kind) for kind, (make, _) in KINDS.items()}
    folders["does_not_exist"] = root / "no-such-folder"
    return folders


def test_the_complete_fixture_passes(tiny_model_dir: Path, minilm_dir: Path) -> None:
    assert missing_files(tiny_model_dir) == []
    assert missing_files(minilm_dir) == []
    check_model_folder(tiny_model_dir)


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_incomplete_folder_has_its_own_message(broken_folders: dict[str, Path], kind: str) -> None:
    folder = broken_folders[kind]
    with pytest.raises(IncompleteModelFolder) as info:
        Embedder(str(folder))
    message = info.value.message
    for needle in KINDS[kind][1]:
        assert needle in message, message
    assert str(folder) in message  # where it looked
    assert "qembed download" in message  # how to fix it
    assert "\n" not in message  # one line
    assert info.value.folder == str(folder) and info.value.missing
    # Only what is really missing is listed.
    others = {"config.json": "no_config", "tokenizer": "no_tokenizer", "1_Pooling": "no_pooling_config"}
    for needle, owner in others.items():
        if owner != kind:
            assert f"missing {needle}" not in message and f"; {needle}" not in message, message


def test_messages_differ_between_kinds(broken_folders: dict[str, Path]) -> None:
    messages = set()
    for folder in broken_folders.values():
        with pytest.raises(IncompleteModelFolder) as info:
            check_model_folder(folder)
        messages.add(info.value.message.replace(str(folder), "<dir>"))
    assert len(messages) == len(broken_folders)


def test_missing_folder(broken_folders: dict[str, Path]) -> None:
    folder = broken_folders["does_not_exist"]
    with pytest.raises(IncompleteModelFolder) as info:
        Embedder(str(folder))
    message = info.value.message
    assert "does not exist" in message and str(folder) in message
    assert "minilm" in message and "qembed download" in message


def test_several_missing_files_are_all_listed(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "bare", without=("config.json", "model.safetensors"))
    with pytest.raises(IncompleteModelFolder) as info:
        check_model_folder(folder, model_id="Org/Model")
    assert "config.json" in info.value.message and "model.safetensors" in info.value.message
    assert "qembed download Org/Model" in info.value.message
    assert len(info.value.missing) == 2


def test_pytorch_bin_and_full_shard_sets_are_accepted(tiny_model_dir: Path, tmp_path: Path) -> None:
    bin_folder = _copy(tiny_model_dir, tmp_path / "bin", without=("model.safetensors",))
    (bin_folder / "pytorch_model.bin").write_bytes(b"x")
    assert missing_files(bin_folder) == []
    sharded = _missing_shard(tiny_model_dir, tmp_path / "sharded")
    (sharded / "model-00002-of-00002.safetensors").write_bytes(b"x")
    assert missing_files(sharded) == []


@pytest.mark.parametrize("kind", [*KINDS, "does_not_exist"])
def test_cli_prints_one_error_line_and_exits_2(broken_folders: dict[str, Path], kind: str) -> None:
    from qembed.cli.main import cli

    result = CliRunner().invoke(cli(), ["info", "--model", str(broken_folders[kind])])
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    err = result.stderr
    assert "Traceback" not in err and "Traceback" not in result.stdout
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "qembed download" in lines[0]


@pytest.mark.e2e
def test_cli_in_a_subprocess_has_no_traceback(broken_folders: dict[str, Path]) -> None:
    import subprocess
    import sys

    folder = broken_folders["no_weights"]
    proc = subprocess.run(
        [sys.executable, "-c", "from qembed.cli.main import main; main()", "info", "--model", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [proc.stderr.strip()]
    assert proc.stderr.startswith("error: ") and "model.safetensors" in proc.stderr


def test_unreadable_modules_json_and_index(tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = _copy(tiny_model_dir, tmp_path / "bad-json", without=("modules.json", "model.safetensors"))
    (folder / "modules.json").write_text("{not json")
    (folder / "model.safetensors.index.json").write_text("[]")
    missing = missing_files(folder)
    assert any("modules.json" in m and "unreadable" in m for m in missing), missing
    assert any("model.safetensors.index.json" in m and "unreadable" in m for m in missing), missing
    shutil.rmtree(folder)
