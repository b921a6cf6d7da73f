"""What the search layer stores: documents (a file or a record) and their chunks.

A *document* is the unit of incremental indexing: it is replaced as a whole when its
hash changes, and removed when its source disappears. A *chunk* is the unit of
retrieval: one embedding, one BM25 entry, one search hit. Chunk ids are derived from the
document id and the chunk's position, so re-running an interrupted index writes the same
ids again instead of adding duplicates.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

# Bump when chunking changes in a way that must re-chunk existing indexes.
CHUNKER_VERSION = "2"


def sha256(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Document:
    """One source of text: a file, a JSONL record, or a document sent over HTTP.

    ``doc_id`` is the key in the index (an absolute file path, ``file.jsonl#id``, or the id a
    client chose); ``path`` is what users see and filter on (relative to the indexed folder,
    or the record id).
    """

    doc_id: str
    path: str
    text: str
    language: str
    file_type: str = ""
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    # Source line of each line of ``text`` when the text was extracted (HTML); None: line i is i + 1.
    line_map: tuple[int, ...] | None = None

    def content_hash(self, chunking: str) -> str:
        """Changes when anything that ends up in a chunk changes (text, title, metadata, chunking)."""
        meta = json.dumps(self.metadata, sort_keys=True, ensure_ascii=False, default=str)
        return sha256(
            CHUNKER_VERSION,
            chunking,
            self.path,
            self.language,
            self.file_type,
            self.title or "",
            meta,
            self.text,
        )


@dataclass(frozen=True)
class Chunk:
    """A piece of a document small enough for one embedding window."""

    chunk_id: str
    doc_id: str
    ordinal: int
    path: str
    title: str
    heading: tuple[str, ...]
    line_start: int
    line_end: int
    language: str
    file_type: str
    text: str  # the chunk body as it appears in the source
    context: str  # title and heading trail, prepended to the body for embedding and BM25
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def embed_text(self) -> str:
        """What the model and BM25 see: the context line(s), then the body."""
        return f"{self.context}\n\n{self.text}" if self.context else self.text

    @property
    def content_hash(self) -> str:
        """Identifies the embedding: equal texts share one vector, whatever file they are in."""
        return sha256(self.embed_text)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.chunk_id,
            "doc_id": self.doc_id,
            "ordinal": self.ordinal,
            "path": self.path,
            "title": self.title,
            "heading": list(self.heading),
            "lines": [self.line_start, self.line_end],
            "language": self.language,
            "file_type": self.file_type,
            "text": self.text,
            "metadata": self.metadata,
        }


def chunk_id(doc_id: str, ordinal: int) -> str:
    return sha256(doc_id, str(ordinal))[:32]
