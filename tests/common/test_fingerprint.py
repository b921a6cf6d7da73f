"""One model fingerprint: it moves with the weights and the config, and with nothing else."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from qembed.common.fingerprint import model_fingerprint, weight_files


@pytest.fixture
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "model.safetensors").write_bytes(b"w" * 16)
    (folder / "tokenizer.json").write_text("{}")
    return folder


def _touch(path: Path, offset: float = 10.0) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + int(offset * 1e9)))


def test_stable_when_nothing_changes(model: Path) -> None:
    first = model_fingerprint(model)
    assert model_fingerprint(model) == first
    (model / "README.md").write_text("notes")  # not a weight or the config
    _touch(model / "tokenizer.json")
    assert model_fingerprint(model) == first


@pytest.mark.parametrize(
    "change",
    [
        lambda m: _touch(m / "model.safetensors"),  # re-downloaded / rebuilt
        lambda m: (m / "model.safetensors").write_bytes(b"w" * 17),
        lambda m: (m / "config.json").write_text('{"hidden_size": 16}'),
        lambda m: (m / "extra.bin").write_bytes(b"x"),  # a second weight file
        lambda m: (m / "model.safetensors").rename(m / "other.safetensors"),
        lambda m: (m / "onnx").mkdir() or (m / "onnx" / "model.onnx").write_bytes(b"o"),  # subfolders count
        lambda m: (m / "weights.pth").write_bytes(b"p"),
    ],
)
def test_changes_with_the_weights_or_config(model: Path, change) -> None:
    before = model_fingerprint(model)
    change(model)
    assert model_fingerprint(model) != before


def test_qembed_exports_and_hidden_folders_are_not_part_of_the_model(model: Path) -> None:
    before = model_fingerprint(model)
    export = model / ".qembed" / "exports" / "onnx-int8-0123"
    export.mkdir(parents=True)
    (export / "model.onnx").write_bytes(b"exported")  # written next to the model by qembed itself
    (export / "openvino_model.bin").write_bytes(b"ir")
    (model / ".cache" / "huggingface").mkdir(parents=True)
    (model / ".cache" / "huggingface" / "model.safetensors.lock").write_text("")
    assert model_fingerprint(model) == before
    assert [name for name, _, _ in weight_files(model)] == ["model.safetensors"]


def test_hub_snapshot_commit_counts(tmp_path: Path) -> None:
    digests = set()
    for commit in ("a" * 40, "b" * 40):
        folder = tmp_path / "snapshots" / commit
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        digests.add(model_fingerprint(folder))
    assert len(digests) == 2


def test_symlinked_weights_are_stated_through(tmp_path: Path, model: Path) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"b" * 5)
    (model / "model.safetensors").unlink()
    (model / "model.safetensors").symlink_to(blob)
    assert weight_files(model)[0][1] == 5
    before = model_fingerprint(model)
    blob.write_bytes(b"b" * 6)
    assert model_fingerprint(model) != before


def test_top_level_folders_keep_the_earlier_digest(model: Path) -> None:
    """The digest the export cache used before this module: existing exports stay valid."""
    h = hashlib.sha256()
    h.update((model / "config.json").read_bytes())
    st = (model / "model.safetensors").stat()
    h.update(f"model.safetensors:{st.st_size}:{st.st_mtime_ns}\n".encode())
    assert model_fingerprint(model) == h.hexdigest()


def test_the_caches_use_it(model: Path) -> None:
    """The export cache key and eval's target identity move with the same fingerprint."""
    from qembed.model.backends import artifacts

    key = artifacts.artifact_key("onnx-int8", model, {})
    _touch(model / "model.safetensors")
    assert artifacts.artifact_key("onnx-int8", model, {}) != key
    src = Path(artifacts.__file__).read_text()
    assert "model_fingerprint(folder)" in src
    import qembed.embedding.cache as embedding_cache
    import qembed.eval.targets as targets

    for module in (embedding_cache, targets):
        assert "model_fingerprint(" in Path(module.__file__).read_text(), module.__name__


def test_missing_folder_has_a_fingerprint(tmp_path: Path) -> None:
    assert weight_files(tmp_path / "absent") == []
    assert model_fingerprint(tmp_path / "absent") == hashlib.sha256().hexdigest()
