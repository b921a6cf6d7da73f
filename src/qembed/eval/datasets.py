"""Readers for evaluation data: text pairs with a score/label, and BEIR retrieval folders.

Pairs come in many layouts; the ones we know are read without options:

- STS Benchmark (SBERT/text2vec TSV): header ``score sentence1 sentence2 ...``, read with
  ``csv.QUOTE_NONE`` because sentences contain bare quote characters; the ``.gz`` file with
  a ``split`` column works with ``split="test"``.
- C-MTEB style Chinese files (STS-B zh, ATEC, BQ, LCQMC, PAWS-X): ``s1 \\t s2 \\t score``,
  no header.
- CoSQA JSON: a list of ``{"doc": query, "code": ..., "label": 0/1}``.
- JSONL with any of the usual key names (sentence1/sentence2/score, query/code/label, ...).

Anything else takes ``columns=(left, right, score)`` as names or 0-based positions.
Every problem is reported with the file and line, because a silently skipped row changes
the score.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from qembed.errors import InputError

Format = Literal["auto", "tsv", "csv", "jsonl", "json"]
Column = str | int

LEFT_NAMES = ("sentence1", "s1", "text1", "query", "doc", "question1", "text_a", "anchor")
RIGHT_NAMES = ("sentence2", "s2", "text2", "code", "document", "question2", "text_b", "positive")
SCORE_NAMES = ("score", "label", "similarity", "gold_score", "relevance")
KNOWN_NAMES = {*LEFT_NAMES, *RIGHT_NAMES, *SCORE_NAMES, "split"}


@dataclass
class PairData:
    """Aligned text pairs and their gold score (STS) or label (pairs, code)."""

    name: str
    left: list[str]
    right: list[str]
    scores: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.left)

    def require_binary(self) -> None:
        bad = sorted({float(x) for x in self.scores if x not in (0.0, 1.0)})
        if bad:
            raise InputError(
                f"{self.name}: labels must be 0 or 1, found {bad[:5]}; use `qembed eval sts` for graded scores."
            )
        if self.scores.min() == self.scores.max():
            raise InputError(
                f"{self.name}: every label is {int(self.scores[0])}; the metrics need both 0 and 1."
            )


@dataclass
class RetrievalData:
    """A BEIR folder: documents, the queries that have judgements, graded judgements."""

    name: str
    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    notes: list[str] = field(default_factory=list)  # things worth telling the user


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def detect_format(path: Path) -> Format:
    """From the suffix (under .gz), else from the first character/line."""
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    last = suffixes[-1] if suffixes else ""
    by_suffix: dict[str, Format] = {
        ".tsv": "tsv",
        ".data": "tsv",
        ".txt": "tsv",
        ".csv": "csv",
        ".jsonl": "jsonl",
        ".ndjson": "jsonl",
        ".json": "json",
    }
    if last in by_suffix:
        return by_suffix[last]
    with _open_text(path) as handle:
        head = handle.read(4096)
    stripped = head.lstrip()
    if stripped.startswith("["):
        return "json"
    if stripped.startswith("{"):
        return "jsonl"
    first = head.splitlines()[0] if head else ""
    return "tsv" if "\t" in first else "csv"


def _find(names: Sequence[str], candidates: Sequence[str]) -> int | None:
    lowered = [n.strip().lower() for n in names]
    for candidate in candidates:
        if candidate in lowered:
            return lowered.index(candidate)
    return None


def _resolve_columns(
    header: list[str] | None, columns: Sequence[Column] | None, width: int, where: str
) -> tuple[int, int, int]:
    """Positions of (left, right, score) in a delimited row."""
    if columns is not None:
        out = []
        for col in columns:
            if isinstance(col, int) or (isinstance(col, str) and col.isdigit()):
                index = int(col)
                if index >= width:
                    raise InputError(
                        f"{where}: column {index} does not exist (rows have {width} columns).",
                        param="columns",
                    )
                out.append(index)
            else:
                if header is None or col not in header:
                    raise InputError(f"{where}: no column named {col!r}; header: {header}.", param="columns")
                out.append(header.index(col))
        return out[0], out[1], out[2]
    if header is not None:
        found = [_find(header, names) for names in (LEFT_NAMES, RIGHT_NAMES, SCORE_NAMES)]
        if None in found and len(header) == 3 and found[2] is not None:
            texts = [
                i for i in range(3) if i != found[2]
            ]  # three columns, one is the score: the others are texts
            found = [texts[0], texts[1], found[2]]
        if None in found:
            raise InputError(
                f"{where}: cannot tell which columns hold the two texts and the score (header: {header}); "
                "give them with --columns LEFT,RIGHT,SCORE (names or 0-based positions).",
                param="columns",
            )
        return found[0], found[1], found[2]  # type: ignore[return-value]
    if width == 3:
        return 0, 1, 2
    raise InputError(
        f"{where}: no header and {width} columns; give the columns with --columns LEFT,RIGHT,SCORE (0-based positions).",
        param="columns",
    )


def _parse_score(value: Any, where: str) -> float:
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: score {value!r} is not a number.") from None
    if not math.isfinite(score):
        raise InputError(f"{where}: score {value!r} is not finite.")
    return score


def _text(value: Any, where: str, what: str) -> str:
    if not isinstance(value, str):
        raise InputError(f"{where}: {what} is {type(value).__name__}, not text.")
    if not value.strip():
        raise InputError(f"{where}: {what} is empty.")
    return value


def _delimited_rows(path: Path, fmt: Format) -> Iterator[tuple[int, list[str]]]:
    with _open_text(path) as handle:
        if fmt == "tsv":
            reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        else:
            reader = csv.reader(handle)
        for row in reader:
            if row and any(cell.strip() for cell in row):
                yield reader.line_num, row


def _records(path: Path, fmt: Format) -> Iterator[tuple[int, dict[str, Any]]]:
    if fmt == "json":
        with _open_text(path) as handle:
            try:
                data = json.load(handle)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{path}: not valid JSON ({exc}); for one object per line name it .jsonl."
                ) from None
        if not isinstance(data, list):
            raise InputError(f"{path}: expected a JSON list of objects, got {type(data).__name__}.")
        yield from enumerate(data)
        return
    with _open_text(path) as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc}).") from None


def load_pairs(
    path: str | Path,
    *,
    columns: Sequence[Column] | None = None,
    fmt: Format = "auto",
    header: bool | None = None,
    split: str | None = None,
) -> PairData:
    """Read text pairs with a numeric score or 0/1 label.

    ``columns``: (left, right, score) as names or 0-based positions; default: found by
    name in a header or JSON keys, or positions 0,1,2 for headerless three-column files.
    ``header``: None detects it (a first row naming known columns). ``split``: keep only
    rows whose ``split`` column/key equals it (the STS Benchmark single-file layout).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file.")
    if columns is not None and len(columns) != 3:
        raise InputError(
            f"columns needs three entries (left, right, score), got {len(columns)}.", param="columns"
        )
    kind = detect_format(path) if fmt == "auto" else fmt
    left: list[str] = []
    right: list[str] = []
    scores: list[float] = []
    if kind in ("tsv", "csv"):
        rows = _delimited_rows(path, kind)
        first = next(rows, None)
        if first is None:
            raise InputError(f"{path}: the file is empty.")
        _, first_row = first
        names = [c.strip() for c in first_row]
        has_header = (
            header
            if header is not None
            else (
                any(n.lower() in KNOWN_NAMES for n in names)
                or any(isinstance(c, str) and not c.isdigit() for c in columns or ())
            )
        )
        head = names if has_header else None
        li, ri, si = _resolve_columns(head, columns, len(first_row), str(path))
        split_index = None
        if split is not None:
            split_index = _find(head or [], ("split",))
            if split_index is None:
                raise InputError(
                    f"{path}: split={split!r} given but the file has no 'split' column.", param="split"
                )
        body = rows if has_header else iter([first, *rows])
        need = max(li, ri, si, split_index or 0) + 1
        for lineno, row in body:
            where = f"{path}:{lineno}"
            if len(row) < need:
                raise InputError(
                    f"{where}: {len(row)} columns, expected at least {need} (a tab or quote inside a text?)."
                )
            if split_index is not None and row[split_index] != split:
                continue
            left.append(_text(row[li], where, "the first text"))
            right.append(_text(row[ri], where, "the second text"))
            scores.append(_parse_score(row[si], where))
    else:
        keys: tuple[str, str, str] | None = None
        for lineno, record in _records(path, kind):
            where = f"{path}:{lineno}" if kind == "jsonl" else f"{path}[{lineno}]"
            if not isinstance(record, dict):
                raise InputError(f"{where}: expected an object, got {type(record).__name__}.")
            if keys is None:
                if columns is not None:
                    keys = tuple(str(c) for c in columns)  # type: ignore[assignment]
                else:
                    found = [_find(list(record), names) for names in (LEFT_NAMES, RIGHT_NAMES, SCORE_NAMES)]
                    if None in found:
                        raise InputError(
                            f"{where}: cannot tell which keys hold the two texts and the score (keys: {sorted(record)}); "
                            "give them with --columns LEFT,RIGHT,SCORE.",
                            param="columns",
                        )
                    record_keys = list(record)
                    keys = tuple(record_keys[i] for i in found)  # type: ignore[assignment,index]
            assert keys is not None
            missing = [k for k in keys if k not in record]
            if missing:
                raise InputError(f"{where}: missing key(s) {missing}.")
            if split is not None and record.get("split") != split:
                continue
            left.append(_text(record[keys[0]], where, f"'{keys[0]}'"))
            right.append(_text(record[keys[1]], where, f"'{keys[1]}'"))
            scores.append(_parse_score(record[keys[2]], where))
    if not left:
        raise InputError(f"{path}: no rows" + (f" with split={split!r}." if split else "."))
    name = path.name if split is None else f"{path.name}:{split}"
    return PairData(name, left, right, np.asarray(scores, dtype=np.float64))


# -- BEIR -------------------------------------------------------------------------------------


def _jsonl_objects(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for lineno, record in _records(path, "jsonl"):
        where = f"{path}:{lineno}"
        if not isinstance(record, dict) or "_id" not in record:
            raise InputError(f"{where}: expected an object with an '_id'.")
        yield where, record


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for lineno, row in _delimited_rows(path, "tsv"):
        if len(row) < 3:
            raise InputError(f"{path}:{lineno}: expected query-id, corpus-id, score.")
        if lineno == 1 and not _is_number(row[2]):
            continue  # header
        if not _is_number(row[2]):
            raise InputError(f"{path}:{lineno}: score {row[2]!r} is not a number.")
        qrels.setdefault(row[0].strip(), {})[row[1].strip()] = int(float(row[2]))
    if not qrels:
        raise InputError(f"{path}: no judgements.")
    return qrels


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def qrels_file(folder: Path, split: str | None) -> Path:
    """qrels/{split}.tsv; without a split: test.tsv, or the only file there is."""
    qdir = folder / "qrels"
    files = sorted(qdir.glob("*.tsv")) if qdir.is_dir() else []
    if not files:
        raise InputError(
            f"{folder}: no qrels/*.tsv; is this a BEIR folder (corpus.jsonl, queries.jsonl, qrels/)?"
        )
    names = [f.stem for f in files]
    if split is not None:
        if split not in names:
            raise InputError(
                f"{folder}: no qrels/{split}.tsv; splits here: {', '.join(names)}.", param="split"
            )
        return qdir / f"{split}.tsv"
    if "test" in names:
        return qdir / "test.tsv"
    if len(files) == 1:
        return files[0]
    raise InputError(
        f"{folder}: several qrels files ({', '.join(names)}); choose one with --split.", param="split"
    )


def load_beir(folder: str | Path, *, split: str | None = None, use_title: bool = True) -> RetrievalData:
    """Read a BEIR folder. Document text = title + " " + text (BEIR's dense-model rule).

    Only queries with judgements in the chosen split are kept (BEIR does the same).
    Documents whose title and text are both empty are dropped (no model can embed nothing)
    and reported in ``notes``.
    """
    folder = Path(folder)
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / name).is_file():
            raise InputError(
                f"{folder}: no {name}; a BEIR folder has corpus.jsonl, queries.jsonl and qrels/*.tsv."
            )
    qpath = qrels_file(folder, split)
    qrels = _read_qrels(qpath)
    notes: list[str] = []

    corpus: dict[str, str] = {}
    empty: list[str] = []
    for where, record in _jsonl_objects(folder / "corpus.jsonl"):
        doc_id = str(record["_id"])
        if doc_id in corpus:
            raise InputError(f"{where}: document id {doc_id!r} appears twice.")
        title = str(record.get("title") or "").strip()
        text = str(record.get("text") or "").strip()
        joined = f"{title} {text}".strip() if use_title else text
        if not joined:
            empty.append(doc_id)
            continue
        corpus[doc_id] = joined
    if empty:
        notes.append(f"{len(empty)} document(s) with no text dropped: {', '.join(empty[:5])}")
    if not corpus:
        raise InputError(f"{folder}/corpus.jsonl: no documents with text.")

    all_queries: dict[str, str] = {}
    for where, record in _jsonl_objects(folder / "queries.jsonl"):
        all_queries[str(record["_id"])] = _text(record.get("text"), where, "the query text")
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise InputError(
            f"{qpath}: {len(missing)} judged query id(s) not in queries.jsonl, e.g. {missing[:3]}."
        )
    queries = {q: all_queries[q] for q in qrels}
    unknown_docs = {d for grades in qrels.values() for d in grades if d not in corpus}
    if unknown_docs:
        notes.append(
            f"{len(unknown_docs)} judged document id(s) are not in the corpus (they count as never retrieved)"
        )
    return RetrievalData(f"{folder.name}:{qpath.stem}", corpus, queries, qrels, notes)
