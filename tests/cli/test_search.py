"""`qembed index` names the index after the folder when --index is not given."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from qembed.cli.main import cli
from qembed.cli.search import index_name_for


def test_index_name_from_paths(tmp_path: Path) -> None:
    (tmp_path / "my docs").mkdir()
    (tmp_path / "faq.v2.jsonl").write_text("")
    assert index_name_for(str(tmp_path / "my docs")) == "my-docs"
    assert index_name_for(str(tmp_path / "faq.v2.jsonl")) == "faq-v2"
    assert index_name_for(str(tmp_path / "my docs") + "/") == "my-docs"
    assert index_name_for("/") == "index"


def test_index_without_a_name_uses_the_folder(tmp_path: Path, minilm_embedder) -> None:
    docs = tmp_path / "handbook"
    docs.mkdir()
    (docs / "a.md").write_text("# Pods\n\nA pod is the smallest deployable unit.\n")
    data = tmp_path / "data"
    result = CliRunner().invoke(
        cli(), ["index", str(docs), "--model", "minilm", "--data-dir", str(data), "--json"]
    )
    assert result.exit_code == 0, result.output
    assert "index: handbook" in result.output
    assert json.loads(result.stdout.splitlines()[-1])["index"]["documents"] == 1
    assert (data / "handbook").is_dir()
