"""The input of a corpus job: JSONL or Parquet files (a file, or a folder of them).

One record = one document: an id and a text, taken from two named fields/columns
(``--id-field``, ``--text-field``). Ids are kept as strings (an integer id ``7`` is
``"7"``), because the output's id column and the resume bookkeeping compare them as such.

Reading streams in small blocks (a few dozen records), never the whole corpus: memory
stays flat however large the input is, and the job can size model batches by tokens.
A bad record fails with its file and line (JSONL) or row (Parquet), so it can be fixed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from qembed.errors import InputError
from qembed.search.ingest import json_lines

Kind = Literal["jsonl", "parquet"]
SUFFIXES: dict[str, Kind] = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


@dataclass(frozen=True)
class Fields:
    """Which field of a record holds the id and which the text."""

    id: str = "id"
    text: str = "text"


@dataclass(frozen=True)
class CorpusInput:
    """The files of one input (one kind; a folder's files in sorted order) and the fields to read."""

    kind: Kind
    files: tuple[Path, ...]
    fields: Fields = Fields()

    @classmethod
    def of(cls, path: str | Path, fields: Fields = Fields()) -> CorpusInput:
        """A JSONL/Parquet file, or a folder searched recursively (hidden entries skipped)."""
        root = Path(path).expanduser()
        if root.is_file():
            kind = SUFFIXES.get(root.suffix.lower())
            if kind is None:
                raise InputError(
                    f"{root} is neither JSONL (.jsonl, .ndjson, .json: one object per line) nor Parquet (.parquet).",
                    param="input",
                )
            return cls(kind, (root,), fields)
        if not root.is_dir():
            raise InputError(
                f"{root} does not exist; give a JSONL or Parquet file or a folder of them.", param="input"
            )
        found = sorted(
            p
            for p in root.rglob("*")
            if p.is_file()
            and p.suffix.lower() in SUFFIXES
            and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
        )
        if not found:
            raise InputError(f"{root} holds no .jsonl, .ndjson, .json or .parquet files.", param="input")
        kinds = {SUFFIXES[p.suffix.lower()] for p in found}
        if len(kinds) > 1:
            raise InputError(
                f"{root} mixes JSONL and Parquet files; give one kind per run (a folder or file each).",
                param="input",
            )
        return cls(kinds.pop(), tuple(found), fields)

    def count(self) -> int:
        """Records in the input (for the progress bar): non-blank lines, or Parquet row counts."""
        if self.kind == "parquet":
            import pyarrow.parquet as pq

            return sum(pq.ParquetFile(f).metadata.num_rows for f in self.files)
        total = 0
        for file in self.files:
            with open(file, "rb") as fh:
                total += sum(1 for line in fh if line.strip())
        return total

    def blocks(self, rows: int = 64) -> Iterator[tuple[list[str], list[str]]]:
        """(ids, texts) of up to ``rows`` records at a time, in file order."""
        reader = self._parquet_blocks if self.kind == "parquet" else self._jsonl_blocks
        for file in self.files:
            yield from reader(file, rows)

    def _jsonl_blocks(self, file: Path, rows: int) -> Iterator[tuple[list[str], list[str]]]:
        ids: list[str] = []
        texts: list[str] = []
        for _, where, record in json_lines(file, param="input"):
            i, t = self.record(record.get(self.fields.id), record.get(self.fields.text), where, record)
            ids.append(i)
            texts.append(t)
            if len(ids) >= rows:
                yield ids, texts
                ids, texts = [], []
        if ids:
            yield ids, texts

    def _parquet_blocks(self, file: Path, rows: int) -> Iterator[tuple[list[str], list[str]]]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(file)
        names = pf.schema_arrow.names
        missing = [c for c in (self.fields.id, self.fields.text) if c not in names]
        if missing:
            raise InputError(
                f"{file} has no column {missing[0]!r} (its columns: {', '.join(names)}); "
                "choose them with --id-field / --text-field.",
                param="input",
            )
        row = 0
        for batch in pf.iter_batches(batch_size=rows, columns=[self.fields.id, self.fields.text]):
            raw_ids = batch.column(0).to_pylist()
            raw_texts = batch.column(1).to_pylist()
            ids, texts = [], []
            for k, (i, t) in enumerate(zip(raw_ids, raw_texts, strict=True)):
                a, b = self.record(i, t, f"{file} row {row + k}", None)
                ids.append(a)
                texts.append(b)
            row += len(raw_ids)
            yield ids, texts

    def record(
        self, raw_id: Any, raw_text: Any, where: str, record: dict[str, Any] | None
    ) -> tuple[str, str]:
        """One record's (id, text), checked; the message names the record and the flag to change."""
        return check_id(raw_id, where, self.fields, record), check_text(raw_text, where, self.fields)


def check_id(raw: Any, where: str, fields: Fields, record: dict[str, Any] | None = None) -> str:
    if isinstance(raw, str) and raw:
        return raw
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    if raw is None:
        keys = f" (its fields: {', '.join(record)})" if record else ""
        raise InputError(
            f"{where}: no id field {fields.id!r}{keys}; choose it with --id-field.", param="id_field"
        )
    raise InputError(
        f"{where}: the id must be a non-empty string or an integer, not {raw!r}.", param="id_field"
    )


def check_text(raw: Any, where: str, fields: Fields) -> str:
    if isinstance(raw, str) and raw:
        return raw
    if raw == "":
        raise InputError(f"{where}: the text is empty; drop the record or give it text.", param="text_field")
    if raw is None:
        raise InputError(
            f"{where}: no text field {fields.text!r}; choose it with --text-field.", param="text_field"
        )
    raise InputError(f"{where}: the text must be a string, not {type(raw).__name__}.", param="text_field")
