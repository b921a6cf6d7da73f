"""Finding documents: which files are read, what JSONL records become, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qembed.errors import InputError
from qembed.search.bm25 import query_terms, terms
from qembed.search.ingest import STORE_MARKER, RecordFields, documents, plan, record_document


def _tree(root: Path) -> None:
    (root / "docs" / "sub").mkdir(parents=True)
    (root / "docs" / "a.md").write_text("# A\n\ntext a\n")
    (root / "docs" / "sub" / "b.py").write_text("def b():\n    return 1\n")
    (root / "docs" / "sub" / "page.html").write_text("<html><body><h1>P</h1><p>para</p></body></html>")
    (root / "docs" / "notes.rst").write_text("T\n=\n\nbody\n")
    (root / "docs" / "image.png").write_bytes(b"\x89PNG\0\0binary")
    (root / "docs" / "weird.bin.txt").write_bytes(b"text\0with nul")
    (root / "docs" / ".hidden.md").write_text("# hidden\n")
    (root / "docs" / ".git").mkdir()
    (root / "docs" / ".git" / "x.md").write_text("# git internals\n")
    (root / "docs" / "node_modules" / "m").mkdir(parents=True)
    (root / "docs" / "node_modules" / "m" / "index.js").write_text("function f() {}\n")
    store = root / "docs" / "qembed-data" / "idx"
    store.mkdir(parents=True)
    (store / STORE_MARKER).write_text("")
    (store / "readme.md").write_text("# inside a store folder\n")
    (root / "docs" / "skip_me.md").write_text("# excluded\n")


def test_folder_walk_reads_known_text_files_only(tmp_path: Path) -> None:
    _tree(tmp_path)
    [source] = plan([tmp_path / "docs"], exclude=["skip_*"])
    rels = sorted(f.relative_to(tmp_path / "docs").as_posix() for f in source.files)
    assert rels == ["a.md", "notes.rst", "sub/b.py", "sub/page.html"]
    assert source.skipped == 2  # the PNG (unknown extension) and the .txt with a NUL byte
    docs = {d.path: d for d in documents(source)}
    assert docs["a.md"].language == "markdown" and docs["sub/b.py"].language == "python"
    assert docs["sub/page.html"].text.startswith("# P") and "<p>" not in docs["sub/page.html"].text
    assert docs["a.md"].doc_id == str((tmp_path / "docs" / "a.md").resolve())
    assert source.owns(docs["a.md"].doc_id) and not source.owns(str(tmp_path / "docsx" / "a.md"))


def test_missing_path_and_unknown_file_type_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file or folder"):
        plan([tmp_path / "nope"])
    (tmp_path / "x.xyz").write_text("?")
    with pytest.raises(InputError, match="does not read .xyz files"):
        plan([tmp_path / "x.xyz"])
    with pytest.raises(InputError, match="at least one"):
        plan([])


def test_jsonl_records_with_fields(tmp_path: Path) -> None:
    f = tmp_path / "pages.jsonl"
    rows = [
        {"path": "docs/a.md", "en_title": "A page", "en_text": "# A\n\nbody", "zh_title": "甲", "other": 1},
        {"path": "docs/b", "en_title": "", "en_text": "plain words", "zh_title": "乙"},
    ]
    f.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n\n")
    [source] = plan([f])
    fields = RecordFields(
        text_field="en_text", id_field="path", title_field="en_title", metadata_fields=("zh_title",)
    )
    docs = list(documents(source, fields))
    assert [d.path for d in docs] == ["docs/a.md", "docs/b"]
    a, b = docs
    assert a.doc_id == f"{f.resolve()}#docs/a.md" and a.title == "A page" and a.language == "markdown"
    assert a.metadata == {"source": "pages.jsonl", "zh_title": "甲"}
    assert b.language == "text" and b.title is None
    assert source.owns(a.doc_id)


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    f = tmp_path / "r.jsonl"
    f.write_text('{"id": "1", "text": "a"}\n{"id": "2", "body": "b"}\n')
    with pytest.raises(InputError, match=r"r.jsonl:2: no field 'text' \(fields: body, id\)"):
        list(documents(plan([f])[0]))
    f.write_text('{"id": "1", "text": "a"}\n{"id": "1", "text": "b"}\n')
    with pytest.raises(InputError, match="appears twice"):
        list(documents(plan([f])[0]))
    f.write_text('{"id": "1", "text": "a"}\nnot json\n')
    with pytest.raises(InputError, match="r.jsonl:2: not valid JSON"):
        list(documents(plan([f])[0]))


def test_client_documents_take_path_title_language_from_metadata() -> None:
    d = record_document("id-1", "def f():\n    pass\n", {"path": "src/f.py", "title": "F"})
    assert (d.path, d.language, d.file_type, d.title) == ("src/f.py", "python", "py", "F")
    d = record_document("plain", "hello", {"language": "Markdown"})
    assert (d.path, d.language) == ("plain", "markdown")


def test_bm25_terms_for_identifiers_and_chinese() -> None:
    for spelling in ("--max-surge", "max_surge", "maxSurge", "MaxSurge"):
        assert {"maxsurge", "max", "surge"} <= set(terms(spelling)), spelling
    assert terms("the pod is in a cluster") == ["pod", "cluster"]  # function words dropped
    zh = terms("Pod 停滞在 Pending 状态")
    assert "停滞" in zh and "状态" in zh and "pod" in zh
    assert query_terms("pod pod Pod") == ["pod"]
