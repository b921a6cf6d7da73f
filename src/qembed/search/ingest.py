"""Find documents on disk: folders, files and JSONL record files.

Why a plan before reading: the indexer needs to know what each argument *owns* (the id
prefix of its documents) to remove the documents whose files were deleted, and how many
documents there are to draw a progress bar; reading the text happens lazily, one
document at a time, so a large tree is never held in memory.

File types are recognised by extension (``LANGUAGES``); other files, hidden folders,
dependency folders, binary files and qembed's own store folders are skipped and counted.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from qembed.errors import InputError
from qembed.search.documents import Document

log = logging.getLogger(__name__)

LANGUAGES: dict[str, str] = {
    ".md": "markdown", ".markdown": "markdown", ".mdx": "markdown",
    ".txt": "text", ".text": "text",
    ".rst": "rst",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".py": "python", ".pyi": "python",
    ".go": "go",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".tsx": "typescript", ".mts": "typescript",
    ".rs": "rust",
    ".java": "java", ".kt": "kotlin", ".kts": "kotlin", ".scala": "scala",
    ".cs": "csharp",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".hxx": "cpp",
    ".rb": "ruby", ".php": "php",
    ".sh": "bash", ".bash": "bash", ".zsh": "bash",
    ".lua": "lua", ".swift": "swift",
    ".sql": "sql", ".proto": "protobuf",
    ".yaml": "yaml", ".yml": "yaml", ".toml": "toml",
    ".r": "r", ".jl": "julia", ".ex": "elixir", ".exs": "elixir", ".erl": "erlang",
    ".hs": "haskell", ".ml": "ocaml", ".clj": "clojure", ".dart": "dart",
}  # fmt: skip
RECORD_EXTENSIONS = {".jsonl"}
SKIP_DIRS = {"node_modules", "__pycache__", "venv", "site-packages"}
STORE_MARKER = "QEMBED_STORE"  # written into every embedded store folder, so indexing '.' skips it
MAX_FILE_BYTES = 10_000_000


def language_of(name: str) -> tuple[str, str] | None:
    """(language, file type) for a file name, or None when qembed does not read that kind."""
    ext = os.path.splitext(name)[1].lower()
    lang = LANGUAGES.get(ext)
    return (lang, ext[1:]) if lang else None


@dataclass(frozen=True)
class RecordFields:
    """How JSONL records map to documents."""

    text_field: str = "text"
    id_field: str | None = None  # default: "id" or "_id" when the record has one, else the line number
    title_field: str | None = None
    metadata_fields: tuple[str, ...] = ()


@dataclass
class Source:
    """One path argument: the files it holds and the document ids it owns."""

    root: Path
    scope: str  # documents whose id starts with this belong to this source
    exact: bool  # scope is a single document id (a file argument)
    files: list[Path] = field(default_factory=list)
    skipped: int = 0

    def owns(self, doc_id: str) -> bool:
        if self.exact:
            return doc_id == self.scope
        return doc_id.startswith(self.scope)


def _is_binary(path: Path) -> bool:
    with path.open("rb") as f:
        return b"\0" in f.read(8192)


def plan(paths: Sequence[str | os.PathLike[str]], *, exclude: Sequence[str] = ()) -> list[Source]:
    """Resolve arguments to sources; raises ``InputError`` for paths that do not exist."""
    if not paths:
        raise InputError("give at least one file or folder to index.", param="paths")
    sources: list[Source] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise InputError(f"no such file or folder: {raw}", param="paths")
        path = path.resolve()
        if path.is_file():
            if language_of(path.name) is None and path.suffix.lower() not in RECORD_EXTENSIONS:
                known = ", ".join(sorted({*LANGUAGES, *RECORD_EXTENSIONS}))
                raise InputError(
                    f"{raw}: qembed does not read {path.suffix or 'extension-less'} files; it reads {known}.",
                    param="paths",
                )
            scope = f"{path}#" if path.suffix.lower() in RECORD_EXTENSIONS else str(path)
            sources.append(
                Source(path, scope, exact=path.suffix.lower() not in RECORD_EXTENSIONS, files=[path])
            )
            continue
        source = Source(path, str(path).rstrip("/") + "/", exact=False)
        for dirpath, dirnames, filenames in os.walk(path):
            if STORE_MARKER in filenames:
                dirnames[:] = []
                continue
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in SKIP_DIRS)
            for name in sorted(filenames):
                file = Path(dirpath) / name
                rel = file.relative_to(path).as_posix()
                if name.startswith(".") or any(fnmatch(rel, pat) or fnmatch(name, pat) for pat in exclude):
                    continue
                if language_of(name) is None and file.suffix.lower() not in RECORD_EXTENSIONS:
                    source.skipped += 1
                    continue
                try:
                    if file.stat().st_size > MAX_FILE_BYTES or _is_binary(file):
                        log.warning("skipping %s: binary or larger than %d bytes", file, MAX_FILE_BYTES)
                        source.skipped += 1
                        continue
                except OSError as exc:
                    log.warning("skipping %s: %s", file, exc)
                    source.skipped += 1
                    continue
                source.files.append(file)
        sources.append(source)
    return sources


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8-sig", errors="replace")


def _relative(source: Source, file: Path) -> str:
    if source.root.is_file():
        return file.name
    return file.relative_to(source.root).as_posix()


def count_documents(source: Source) -> int:
    """How many documents the source will yield (lines of JSONL files, else files)."""
    total = 0
    for file in source.files:
        if file.suffix.lower() in RECORD_EXTENSIONS:
            with file.open("rb") as f:
                total += sum(1 for line in f if line.strip())
        else:
            total += 1
    return total


def documents(source: Source, fields: RecordFields = RecordFields()) -> Iterator[Document]:
    """Read the source's files into documents, one at a time."""
    for file in source.files:
        rel = _relative(source, file)
        if file.suffix.lower() in RECORD_EXTENSIONS:
            yield from read_records(file, rel, fields)
            continue
        try:
            text = _read_text(file)
        except OSError as exc:
            log.warning("skipping %s: %s", file, exc)
            continue
        yield file_document(str(file), rel, text)


def file_document(
    doc_id: str, path: str, text: str, *, title: str | None = None, metadata: dict[str, Any] | None = None
) -> Document:
    """A document from a file's text; HTML is reduced to its text with source line numbers."""
    lang, ftype = language_of(path) or ("text", os.path.splitext(path)[1].lstrip(".").lower())
    line_map: tuple[int, ...] | None = None
    if lang == "html":
        html = html_to_text(text)
        text, line_map, title = html.text, html.line_map, title or html.title
    return Document(
        doc_id, path, text, lang, ftype, title=title, metadata=dict(metadata or {}), line_map=line_map
    )


def record_document(doc_id: str, text: str, metadata: dict[str, Any]) -> Document:
    """A document sent by a client (HTTP, Python API): id, text and free metadata.

    ``metadata.path`` (default: the id) is what path filters see; ``metadata.title`` is the
    title; ``metadata.language`` overrides the language guessed from the path's extension.
    """
    path = str(metadata.get("path") or doc_id)
    title = metadata.get("title")
    lang, ftype = language_of(path) or ("text", "")
    if isinstance(metadata.get("language"), str) and metadata["language"]:
        lang = metadata["language"].lower()
    doc = file_document(doc_id, path, text, title=str(title) if title else None, metadata=metadata)
    if doc.language != lang:
        doc = Document(doc_id, path, text, lang, ftype, title=doc.title, metadata=metadata)
    return doc


def json_lines(file: Path, *, param: str) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """``(line number, "file:line", object)`` for each JSON object of a JSONL file (blank lines
    skipped; a byte-order mark tolerated). A line that is not a JSON object is an
    ``InputError`` naming the file and line, against ``param``. Shared by ``qembed index``
    and ``qembed embed-corpus`` so that both read the same files the same way."""
    with file.open("r", encoding="utf-8-sig", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{file}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{where}: not valid JSON ({exc.msg}) and so not a JSON object; write one JSON object per line.",
                    param=param,
                ) from None
            if not isinstance(record, dict):
                raise InputError(
                    f"{where}: a line must be a JSON object, not {type(record).__name__}.", param=param
                )
            yield lineno, where, record


def read_records(file: Path, rel: str, fields: RecordFields) -> Iterator[Document]:
    """Documents from a JSONL file; every problem names the file and line."""
    seen: set[str] = set()
    for lineno, where, record in json_lines(file, param="paths"):
        if fields.text_field not in record:
            have = ", ".join(sorted(record)[:12])
            raise InputError(
                f"{where}: no field {fields.text_field!r} (fields: {have}); choose one with --text-field.",
                param="text_field",
            )
        text = record[fields.text_field]
        if text is None:
            text = ""
        if not isinstance(text, str):
            raise InputError(f"{where}: field {fields.text_field!r} must be a string.", param="text_field")
        id_field = fields.id_field or next((k for k in ("id", "_id") if k in record), None)
        if id_field is not None and id_field not in record:
            raise InputError(
                f"{where}: no field {id_field!r} for the record id; choose one with --id-field.",
                param="id_field",
            )
        rid = str(record[id_field]) if id_field else str(lineno)
        if rid in seen:
            raise InputError(
                f"{where}: record id {rid!r} appears twice; ids must be unique (--id-field).",
                param="id_field",
            )
        seen.add(rid)
        title = None
        if fields.title_field:
            value = record.get(fields.title_field)
            title = str(value).strip() if value not in (None, "") else None
        metadata: dict[str, Any] = {"source": rel}
        for name in fields.metadata_fields:
            if name in record:
                metadata[name] = record[name]
        path = rid if id_field else f"{rel}#{lineno}"
        doc = file_document(f"{file}#{rid}", path, text, title=title, metadata=metadata)
        if language_of(path) is None:  # an id without a known extension: plain text
            doc = Document(doc.doc_id, path, text, "text", "", title=title, metadata=metadata)
        yield doc


# ----------------------------------------------------------------------------------------------
# HTML: text only
# ----------------------------------------------------------------------------------------------
@dataclass
class HtmlText:
    text: str
    line_map: tuple[int, ...]  # source line of each text line
    title: str | None


_BLOCK = {
    "p", "div", "section", "article", "main", "header", "footer", "aside", "li", "ul", "ol", "dl", "dt", "dd",
    "table", "tr", "blockquote", "figure", "figcaption", "form", "fieldset", "details", "summary", "hr", "br",
}  # fmt: skip
_SKIP = {"script", "style", "noscript", "template", "svg", "head", "nav", "iframe", "object"}
_HEADINGS = {f"h{i}": i for i in range(1, 7)}


class _TextParser(HTMLParser):
    """Collects visible text; headings become Markdown headings and <pre> a fenced block, so the
    Markdown chunker can cut the page along its structure."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[tuple[int, str]] = []
        self.current: list[str] = []
        self.current_line = 1
        self.skip = 0
        self.pre = 0
        self.heading = 0
        self.in_title = False
        self.title: list[str] = []

    def _break(self, blank: bool = True) -> None:
        text = " ".join("".join(self.current).split())
        if text:
            prefix = "#" * self.heading + " " if self.heading else ""
            self.lines.append((self.current_line, prefix + text))
            if blank:
                self.lines.append((self.current_line, ""))
        self.current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        if tag in _SKIP:
            self.skip += 1
            return
        if tag in _HEADINGS:
            self._break()
            self.heading = _HEADINGS[tag]
        elif tag == "pre":
            self._break()
            self.pre += 1
            self.lines.append((self.getpos()[0], "```"))
        elif tag in _BLOCK:
            self._break(blank=tag not in ("br", "li", "tr", "dt", "dd"))

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
            return
        if tag in _HEADINGS:
            self._break()
            self.heading = 0
        elif tag == "pre" and self.pre:
            raw = "".join(self.current)
            start = self.current_line
            for k, line in enumerate(raw.strip("\n").split("\n")):
                self.lines.append((start + k, line.rstrip()))
            self.current = []
            self.pre -= 1
            self.lines.append((self.getpos()[0], "```"))
            self.lines.append((self.getpos()[0], ""))
        elif tag in _BLOCK:
            self._break(blank=tag not in ("li", "tr", "dt", "dd"))

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        if self.skip:
            return
        if not "".join(self.current).strip():
            self.current_line = self.getpos()[0] + (len(data) - len(data.lstrip("\n")) if not self.pre else 0)
        self.current.append(data)


def html_to_text(html: str) -> HtmlText:
    parser = _TextParser()
    parser.feed(html)
    parser.close()
    parser._break()
    lines = parser.lines
    while lines and not lines[-1][1]:
        lines.pop()
    title = " ".join("".join(parser.title).split()) or None
    return HtmlText("\n".join(t for _, t in lines), tuple(n for n, _ in lines), title)
