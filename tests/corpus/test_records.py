"""Reading a corpus: JSONL and Parquet, files and folders, and the messages for bad records."""

from __future__ import annotations

import pytest

from qembed.corpus.records import CorpusInput, Fields
from qembed.errors import InputError
from tests.corpus.conftest import make_docs, write_jsonl, write_parquet


def read_all(source: CorpusInput, rows: int = 7) -> tuple[list[str], list[str]]:
    ids, texts = [], []
    for i, t in source.blocks(rows):
        assert len(i) <= rows
        ids += i
        texts += t
    return ids, texts


def test_jsonl_and_parquet_give_the_same_records(tmp_path):
    docs = make_docs(50)
    a = CorpusInput.of(write_jsonl(tmp_path / "c.jsonl", docs))
    b = CorpusInput.of(write_parquet(tmp_path / "c.parquet", docs))
    assert (a.kind, b.kind) == ("jsonl", "parquet")
    expected = ([d["id"] for d in docs], [d["text"] for d in docs])
    assert read_all(a) == expected == read_all(b)
    assert a.count() == b.count() == 50


def test_a_folder_is_read_in_sorted_order_skipping_hidden_files(tmp_path):
    docs = make_docs(30)
    write_jsonl(tmp_path / "in" / "b.jsonl", docs[10:])
    write_jsonl(tmp_path / "in" / "a.jsonl", docs[:10])
    write_jsonl(tmp_path / "in" / ".hidden.jsonl", make_docs(5, seed=9))
    source = CorpusInput.of(tmp_path / "in")
    assert [p.name for p in source.files] == ["a.jsonl", "b.jsonl"]
    assert read_all(source)[0] == [d["id"] for d in docs]


def test_blank_lines_are_skipped_and_integer_ids_become_strings(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": 7, "text": "seven"}\n\n   \n{"id": "x", "text": "ex"}\n')
    source = CorpusInput.of(path)
    assert read_all(source) == (["7", "x"], ["seven", "ex"])
    assert source.count() == 2


def test_other_field_names(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"key": "k1", "body": "hello"}])
    assert read_all(CorpusInput.of(path, Fields("key", "body"))) == (["k1"], ["hello"])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": "no id"}', "no id field 'id' (its fields: text); choose it with --id-field"),
        ('{"id": "a"}', "no text field 'text'; choose it with --text-field"),
        ('{"id": "a", "text": ""}', "the text is empty"),
        ('{"id": true, "text": "t"}', "the id must be a non-empty string or an integer"),
        ('{"id": "a", "text": 5}', "the text must be a string, not int"),
        ("[1, 2]", "a line must be a JSON object, not list"),
        ("{oops", "not a JSON object"),
    ],
)
def test_a_bad_record_names_its_file_and_line(tmp_path, line, message):
    path = tmp_path / "c.jsonl"
    path.write_text('{"id": "ok", "text": "fine"}\n' + line + "\n")
    with pytest.raises(InputError) as err:
        read_all(CorpusInput.of(path))
    assert f"{path}:2: " in err.value.message
    assert message in err.value.message


def test_a_parquet_file_without_the_column_lists_its_columns(tmp_path):
    path = write_parquet(tmp_path / "c.parquet", [{"key": "a", "text": "t"}])
    with pytest.raises(InputError, match=r"no column 'id' \(its columns: key, text\).*--id-field"):
        read_all(CorpusInput.of(path))


def test_inputs_that_are_not_a_corpus_are_refused(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        CorpusInput.of(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="neither JSONL"):
        CorpusInput.of(tmp_path / "notes.txt")
    with pytest.raises(InputError, match="holds no .jsonl"):
        CorpusInput.of(tmp_path)
    write_jsonl(tmp_path / "mixed" / "a.jsonl", make_docs(1))
    write_parquet(tmp_path / "mixed" / "b.parquet", make_docs(1))
    with pytest.raises(InputError, match="mixes JSONL and Parquet"):
        CorpusInput.of(tmp_path / "mixed")
