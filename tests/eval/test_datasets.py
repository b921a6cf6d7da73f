"""Pair and BEIR readers: the known layouts without options, columns by name or position,
and a clear error (file:line) for every bad row."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from qembed.errors import InputError
from qembed.eval.datasets import load_beir, load_pairs


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_stsb_en_layout_keeps_quotes(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "sts.tsv",
        'score\tsentence1\tsentence2\tgenre\n2.5\tHe said "hi.\tShe said "bye".\tnews\n4\tA\tB\tx\n',
    )
    data = load_pairs(f)
    assert data.left == ['He said "hi.', "A"]  # QUOTE_NONE: a lone quote is text, not a field opener
    assert data.right == ['She said "bye".', "B"]
    assert data.scores.tolist() == [2.5, 4.0]


def test_headerless_three_columns_is_s1_s2_score(tmp_path: Path) -> None:
    f = _write(
        tmp_path / "STS-B.test.data",
        "一个女孩在给她的头发做发型。\t一个女孩在梳头。\t2\n一群人。\t一群男孩。\t3\n",
    )
    data = load_pairs(f)
    assert data.left[0] == "一个女孩在给她的头发做发型。" and data.scores.tolist() == [2.0, 3.0]


def test_csv_jsonl_json_and_columns(tmp_path: Path) -> None:
    csv_file = _write(tmp_path / "p.csv", 'a,b,label\n"x, with comma",y,1\nu,v,0\n')
    assert load_pairs(csv_file).left == ["x, with comma", "u"]
    jsonl = _write(
        tmp_path / "p.jsonl",
        '{"query": "q1", "code": "def f(): pass", "label": 1}\n\n{"query": "q2", "code": "x = 1", "label": 0}\n',
    )
    data = load_pairs(jsonl)
    assert data.left == ["q1", "q2"] and data.right == ["def f(): pass", "x = 1"]
    cosqa = _write(
        tmp_path / "cosqa.json",
        json.dumps([{"idx": "i", "doc": "sort list", "code": "def s(x): ...", "label": 1}]),
    )
    assert load_pairs(cosqa).left == ["sort list"]
    odd = _write(tmp_path / "odd.tsv", "id\tfirst\tsecond\tgold\n1\tx\ty\t0.5\n")
    assert load_pairs(odd, columns=["first", "second", "gold"]).scores.tolist() == [0.5]
    by_position = _write(tmp_path / "pos.tsv", "1\tx\ty\t0.5\n")
    assert load_pairs(by_position, columns=[1, 2, 3]).left == ["x"]


def test_gzip_with_split_column(tmp_path: Path) -> None:
    f = tmp_path / "all.tsv.gz"
    with gzip.open(f, "wt", encoding="utf-8") as h:
        h.write("split\tscore\tsentence1\tsentence2\ntrain\t1\ta\tb\ntest\t2\tc\td\n")
    data = load_pairs(f, split="test")
    assert data.left == ["c"] and data.name == "all.tsv.gz:test"
    with pytest.raises(InputError, match="no rows with split='dev'"):
        load_pairs(f, split="dev")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a\tb\tnot-a-number\n", r"bad.tsv:1: score 'not-a-number' is not a number"),
        ("a\tb\t1\nc\td\n", r"bad.tsv:2: 2 columns, expected at least 3"),
        ("a\t \t1\n", r"bad.tsv:1: the second text is empty"),
        ("a\tb\tc\td\t1\n", r"no header and 5 columns"),
        ("", "empty"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        load_pairs(_write(tmp_path / "bad.tsv", text))


def test_unknown_header_asks_for_columns(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--columns"):
        load_pairs(_write(tmp_path / "h.jsonl", '{"x": "a", "y": "b", "z": 1}\n'))


def _beir(root: Path, qrels: str = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq2\td3\t1\n") -> Path:
    root.mkdir()
    _write(
        root / "corpus.jsonl",
        "\n".join(
            json.dumps(d)
            for d in [
                {"_id": "d1", "title": "Title", "text": "body one"},
                {"_id": "d2", "title": "", "text": "body two"},
                {"_id": "d3", "text": "body three"},
                {"_id": "d4", "title": "", "text": ""},
            ]
        )
        + "\n",
    )
    _write(
        root / "queries.jsonl",
        '{"_id": "q1", "text": "first"}\n{"_id": "q2", "text": "second"}\n{"_id": "q3", "text": "unjudged"}\n',
    )
    (root / "qrels").mkdir()
    _write(root / "qrels" / "test.tsv", qrels)
    return root


def test_beir_folder(tmp_path: Path) -> None:
    data = load_beir(_beir(tmp_path / "b"))
    assert data.corpus == {"d1": "Title body one", "d2": "body two", "d3": "body three"}
    assert data.queries == {"q1": "first", "q2": "second"}  # only judged queries
    assert data.qrels == {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}}
    assert any("no text dropped" in n for n in data.notes)
    assert load_beir(tmp_path / "b", use_title=False).corpus["d1"] == "body one"


def test_beir_errors(tmp_path: Path) -> None:
    folder = _beir(tmp_path / "b")
    with pytest.raises(InputError, match="no qrels/dev.tsv; splits here: test"):
        load_beir(folder, split="dev")
    _write(folder / "qrels" / "dev.tsv", "q1\td1\t1\n")
    (folder / "qrels" / "test.tsv").unlink()
    with pytest.raises(InputError, match="choose one with --split"):
        _write(folder / "qrels" / "train.tsv", "q1\td1\t1\n")
        load_beir(folder)
    bad = _beir(tmp_path / "c", "q9\td1\t1\n")
    with pytest.raises(InputError, match="not in queries.jsonl"):
        load_beir(bad)
    with pytest.raises(InputError, match="no corpus.jsonl"):
        load_beir(tmp_path)


def test_shared_data_layouts(shared_data: Path) -> None:
    en = load_pairs(shared_data / "stsb_en" / "sts-test.tsv")
    assert len(en) == 1379 and en.left[0] == "A girl is styling her hair." and en.scores[0] == 2.5
    assert len(load_pairs(shared_data / "stsb_en" / "stsbenchmark.tsv.gz", split="test")) == 1379
    zh = load_pairs(shared_data / "stsb_zh" / "STS-B.test.data")
    assert len(zh) == 1361 and set(zh.scores.tolist()) == {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}
    cosqa = load_pairs(shared_data / "cosqa" / "cosqa-dev.json")
    assert len(cosqa) == 604 and int(cosqa.scores.sum()) == 313
    cran = load_beir(shared_data / "cranfield_beir")
    assert (len(cran.corpus), len(cran.queries), sum(len(g) for g in cran.qrels.values())) == (
        1398,
        225,
        1612,
    )
    assert cran.notes[0].startswith("2 document(s) with no text dropped: 471, 995")  # empty in the source too
    code = load_beir(shared_data / "cosqa_retrieval" / "beir")
    assert (len(code.corpus), len(code.queries)) == (6267, 500)
