"""The output of a corpus job: a Parquet dataset (a folder of part files) and its identity.

Each part file holds ``id`` (string), ``vector`` (fixed-size list of float32) and ``tokens``
(the tokens the model read for that document), and carries the identity of the vectors in
its Parquet schema metadata: ``qembed.identity`` is the ``VectorIdentity`` every qembed
vector artifact records (model id, revision fingerprint, dimension, prompts, dtype,
backend, quantization), ``qembed.corpus`` what this job chose (the side its texts were
embedded as and so the exact prompt, the long-text policy). A part read on its own still
says what made it.

Why part files and not one file: a part is the unit of commit. It is written under a
hidden temporary name, fsync'ed, renamed into place and the folder fsync'ed, so a part
is either whole or absent after a kill or a power cut; readers (pyarrow, Ray, DuckDB,
pandas) skip hidden names. A re-run reads the ids of the committed parts and embeds only
the rest, so nothing is embedded twice and nothing is lost. One writer at a time: a lock
file in the folder refuses a second concurrent run.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qembed.embedding.identity import VectorIdentity
from qembed.errors import InputError

if TYPE_CHECKING:
    import pyarrow as pa

IDENTITY_KEY = b"qembed.identity"  # the VectorIdentity, as every vector artifact records it
CORPUS_KEY = b"qembed.corpus"  # how this job encoded: which side's prompt, the window policy
PART = re.compile(r"^part-(\d{6,})\.parquet$")
LOCK_NAME = ".qembed-corpus.lock"


@dataclass(frozen=True)
class CorpusIdentity:
    """What made a corpus output's vectors: the shared ``VectorIdentity`` (model, revision,
    dimension, prompts of both sides, engine) plus what this job chose among them (the side
    its texts were embedded as, hence the exact prompt) and the long-text policy, which
    changes the vectors of documents longer than the window."""

    vectors: VectorIdentity
    input_type: str
    prompt: str
    long_text: str
    max_tokens: int

    def extras(self) -> dict[str, Any]:
        return {
            "input_type": self.input_type,
            "prompt": self.prompt,
            "long_text": self.long_text,
            "max_tokens": self.max_tokens,
        }

    def metadata(self) -> dict[bytes, bytes]:
        """The Parquet schema metadata of every part."""
        return {
            IDENTITY_KEY: self.vectors.to_json().encode(),
            CORPUS_KEY: json.dumps(self.extras(), sort_keys=True).encode(),
        }

    @classmethod
    def from_metadata(cls, meta: Mapping[bytes, bytes]) -> CorpusIdentity | None:
        if IDENTITY_KEY not in meta or CORPUS_KEY not in meta:
            return None
        extras = json.loads(meta[CORPUS_KEY])
        return cls(
            VectorIdentity.from_json(meta[IDENTITY_KEY].decode()),
            input_type=str(extras.get("input_type")),
            prompt=str(extras.get("prompt")),
            long_text=str(extras.get("long_text")),
            max_tokens=int(extras.get("max_tokens") or 0),
        )

    def compare(self, current: CorpusIdentity) -> tuple[list[str], list[str]]:
        """(errors, warnings) of ``current`` against this recorded identity, one line each."""
        diffs = self.vectors.compare(current.vectors)
        errs = [str(d) for d in diffs if d.severity == "error"]
        warns = [str(d) for d in diffs if d.severity == "warning"]
        for name in ("prompt", "long_text", "max_tokens"):
            a, b = getattr(self, name), getattr(current, name)
            if a != b:
                errs.append(f"{name}: {a!r} recorded, {b!r} now")
        return errs, warns

    def label(self) -> str:
        prompt = f"prompt {self.prompt!r}" if self.prompt else "no prompt"
        return f"{self.vectors.label()}, {self.input_type}s, {prompt}"


def require_pyarrow() -> None:
    """Corpus jobs read and write Parquet: say how to get pyarrow before any work starts."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise InputError(
            "qembed embed-corpus writes Parquet and needs pyarrow: pip install 'qembed-server[corpus]'.",
            param="out",
        ) from None


class CorpusOutput:
    """A folder of committed part files (created on first write)."""

    def __init__(self, folder: str | Path) -> None:
        require_pyarrow()
        self.folder = Path(folder).expanduser()
        if self.folder.exists() and not self.folder.is_dir():
            raise InputError(
                f"--out {self.folder} is a file; give a folder for the Parquet dataset.", param="out"
            )

    # -- what is there ---------------------------------------------------------------------------
    def parts(self) -> list[Path]:
        """Committed part files, in commit order."""
        if not self.folder.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.folder.iterdir() if (m := PART.match(p.name))]
        return [p for _, p in sorted(found)]

    def identity(self) -> CorpusIdentity | None:
        """The identity the committed parts record (None when there are none); parts that
        disagree, or a part without one, are an error naming the part."""
        import pyarrow.parquet as pq

        first: tuple[Path, CorpusIdentity] | None = None
        for part in self.parts():
            found = CorpusIdentity.from_metadata(pq.read_schema(part).metadata or {})
            if found is None:
                raise InputError(
                    f"{part} has no qembed identity in its Parquet metadata: {self.folder} is not the output of "
                    "qembed embed-corpus. Use another --out.",
                    param="out",
                )
            if first is None:
                first = (part, found)
                continue
            errs, _ = first[1].compare(found)
            if errs:
                raise InputError(
                    f"{self.folder} mixes vectors of two models: {first[0].name} has {first[1].label()}, "
                    f"{part.name} has {found.label()}. Rebuild it with --overwrite.",
                    param="out",
                )
        return first[1] if first else None

    def done_ids(self) -> set[str]:
        """The ids of every committed part: what a re-run does not embed again."""
        import pyarrow.parquet as pq

        done: set[str] = set()
        for part in self.parts():
            done.update(pq.read_table(part, columns=["id"]).column("id").to_pylist())
        return done

    def check_identity(self, identity: CorpusIdentity, *, overwrite: bool = False) -> list[str]:
        """Refuse to add vectors of another model, prompt or dimension to the existing parts
        (``overwrite`` deletes them instead). Returns warnings (the same model on another engine)."""
        if overwrite:
            self.clear()
            return []
        old = self.identity()
        if old is None:
            return []
        errs, warns = old.compare(identity)
        if not errs:
            return warns
        raise InputError(
            f"{self.folder} holds vectors of {old.label()}; this run would make {identity.label()} "
            f"({'; '.join(errs)}). Run with the same model and options, choose another --out, "
            "or pass --overwrite to delete the existing parts and embed everything again.",
            param="out",
        )

    # -- writing ---------------------------------------------------------------------------------
    def clear(self) -> None:
        """Delete the committed parts and leftovers of killed runs (nothing else in the folder)."""
        for part in self.parts():
            part.unlink()
        self.clean_temp()

    def clean_temp(self) -> None:
        """Temporary parts of a killed run: never committed, so never read."""
        if self.folder.is_dir():
            for tmp in self.folder.glob(".part-*.tmp"):
                tmp.unlink(missing_ok=True)

    def lock(self) -> Any:
        """The writer lock of this output (a ``filelock.FileLock`` that fails at once when held)."""
        from filelock import FileLock

        self.folder.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.folder / LOCK_NAME), timeout=0)

    def next_index(self) -> int:
        parts = self.parts()
        m = PART.match(parts[-1].name) if parts else None
        return int(m.group(1)) + 1 if m else 0

    def write_part(
        self, index: int, ids: list[str], vectors: np.ndarray, tokens: list[int], identity: CorpusIdentity
    ) -> Path:
        """Commit one part: temp name, fsync, rename, fsync the folder. Returns its path."""
        import pyarrow.parquet as pq

        table = part_table(ids, vectors, tokens, identity)
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"part-{index:06d}.parquet"
        tmp = self.folder / f".{final.name}.tmp"
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        fsync_dir(self.folder)
        return final


def part_table(ids: list[str], vectors: np.ndarray, tokens: list[int], identity: CorpusIdentity) -> pa.Table:
    """One part as an Arrow table: id, vector (fixed-size list<float32>), tokens; identity in the schema metadata."""
    import pyarrow as pa

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[0] != len(ids) or len(tokens) != len(ids):
        raise ValueError(
            f"a part of {len(ids)} ids got vectors {vectors.shape} and {len(tokens)} token counts"
        )
    dim = int(vectors.shape[1])
    vector = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), type=pa.float32()), dim)
    schema = pa.schema(
        [("id", pa.string()), ("vector", pa.list_(pa.float32(), dim)), ("tokens", pa.int32())],
        metadata=identity.metadata(),
    )
    return pa.Table.from_arrays(
        [pa.array(ids, type=pa.string()), vector, pa.array(tokens, type=pa.int32())], schema=schema
    )


def fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_output(folder: str | Path) -> tuple[list[str], np.ndarray, list[int]]:
    """Every committed row (ids, vectors [n, dim], tokens) in part order: for checks and tests."""
    import pyarrow.parquet as pq

    ids: list[str] = []
    vectors: list[np.ndarray] = []
    tokens: list[int] = []
    for part in CorpusOutput(folder).parts():
        table = pq.read_table(part)
        ids.extend(table.column("id").to_pylist())
        col = table.column("vector").combine_chunks()
        flat = np.asarray(col.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
        vectors.append(flat.reshape(-1, col.type.list_size))
        tokens.extend(table.column("tokens").to_pylist())
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, 0), dtype=np.float32)
    return ids, matrix, tokens
