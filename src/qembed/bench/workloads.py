"""Standard benchmark workloads: real text cut to exact token lengths with the model's tokenizer.

Field reports compare servers on "128-token passages" or "512-token documents"; those
words mean nothing unless the inputs really have that many tokens *for the model measured*.
So a workload is built per model folder: English prose, Chinese prose and Python source
(the three scripts a multilingual embedder meets most) are tokenized with the folder's own
tokenizer, cut into slices, and each slice is decoded and re-checked until
``tokens(text) == target`` exactly, special tokens included (what the model pays for).

Texts come from ``qembed/bench/corpus`` (small, Apache-2.0 / public domain, see SOURCE.md),
the installed Python standard library (code), and optionally the user's own text files.
Each ``variant`` (one per measurement round) draws different slices of the same lengths, so
an embedding cache cannot turn a later round into a lookup.
"""

from __future__ import annotations

import inspect
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import import_module, resources
from pathlib import Path
from typing import cast

# Standard-library modules whose source is the "code" part of the workloads. Pure Python
# modules present in every CPython >= 3.11 build.
CODE_MODULES = (
    "json.decoder",
    "json.encoder",
    "textwrap",
    "heapq",
    "bisect",
    "fractions",
    "string",
    "shlex",
    "calendar",
    "functools",
    "queue",
    "graphlib",
    "colorsys",
    "base64",
    "csv",
    "tokenize",
)  # about 67k tokens of code: plenty of distinct slices, quick to tokenize
_ADJUST_TRIES = 12
WARMUP_VARIANT = 10_000  # the variant of a workload's texts for warm-ups: texts no measured round uses


@dataclass(frozen=True)
class WorkloadSpec:
    """A named input shape: ``count`` texts of exactly ``tokens`` tokens each."""

    name: str
    tokens: int
    count: int
    description: str
    mixed: bool = False  # one text drawn across all sources (the long document)


PRESETS: dict[str, WorkloadSpec] = {
    "query": WorkloadSpec("query", 16, 256, "short search queries"),
    "passage": WorkloadSpec("passage", 128, 256, "passages (RAG chunks)"),
    "document": WorkloadSpec("document", 512, 64, "documents"),
    "long": WorkloadSpec("long", 8192, 1, "one 8k-token document", mixed=True),
}


def parse_workload(text: str, *, count: int | None = None) -> WorkloadSpec:
    """``passage`` or ``passage:64`` (count) or ``passage:64x200`` (count x tokens)."""
    name, _, rest = text.partition(":")
    if name not in PRESETS:
        raise ValueError(
            f"unknown workload {name!r}; choose one of {', '.join(PRESETS)} (optionally name:COUNT or name:COUNTxTOKENS)"
        )
    spec = PRESETS[name]
    tokens = spec.tokens
    if rest:
        n, _, t = rest.partition("x")
        count = int(n)
        if t:
            tokens = int(t)
    if count is not None:
        if count < 1:
            raise ValueError(f"workload {name}: the count must be >= 1, not {count}")
        spec = WorkloadSpec(spec.name, tokens, count, spec.description, spec.mixed)
    elif tokens != spec.tokens:
        spec = WorkloadSpec(spec.name, tokens, spec.count, spec.description, spec.mixed)
    return spec


@dataclass(frozen=True)
class TextSource:
    """One stream of real text; ``language`` is what the report shows (en, zh, code, file)."""

    name: str
    language: str
    text: str


def corpus_text(name: str) -> str:
    return (resources.files("qembed.bench") / "corpus" / name).read_text(encoding="utf-8")


def stdlib_code(modules: Iterable[str] = CODE_MODULES) -> str:
    """Source code of standard-library modules, as installed with this interpreter."""
    parts = []
    for name in modules:
        try:
            parts.append(inspect.getsource(import_module(name)))
        except (ImportError, OSError, TypeError):  # a stripped or frozen stdlib: use what is there
            continue
    if not parts:
        raise RuntimeError("no standard-library source is readable; cannot build the code workload")
    return "\n\n".join(parts)


def default_sources(extra_files: Sequence[Path] = ()) -> list[TextSource]:
    sources = [
        TextSource("corpus/english.txt", "en", corpus_text("english.txt")),
        TextSource("corpus/chinese.txt", "zh", corpus_text("chinese.txt")),
        TextSource("python-stdlib", "code", stdlib_code()),
    ]
    for path in extra_files:
        text = Path(path).read_text(encoding="utf-8")
        if not text.strip():
            raise ValueError(f"{path} holds no text")
        sources.append(TextSource(str(path), "file", text))
    return sources


@dataclass
class Workload:
    """Concrete texts of one spec and variant, with the exact token count of each."""

    spec: WorkloadSpec
    variant: int
    texts: list[str]
    token_counts: list[int]
    languages: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def tokens_sent(self) -> int:
        return sum(self.token_counts)

    def language_mix(self) -> dict[str, int]:
        mix: dict[str, int] = {}
        for lang in self.languages:
            mix[lang] = mix.get(lang, 0) + 1
        return mix


class WorkloadBuilder:
    """Cuts the sources into texts of exact token length for one model folder's tokenizer."""

    def __init__(self, model_folder: Path, sources: Sequence[TextSource] | None = None) -> None:
        from qembed.model.pipeline import load_pipeline
        from qembed.model.tokenization import TextTokenizer

        folder = Path(model_folder)
        self.tokenizer = TextTokenizer(folder, load_pipeline(folder))
        self.special = self.tokenizer.special.count
        self.sources = list(sources) if sources is not None else default_sources()
        self._streams: dict[str, list[int]] = {}

    # -- counting ------------------------------------------------------------------------
    def count(self, text: str) -> int:
        """Tokens the model sees for ``text`` (special tokens included, no prompt)."""
        return len(self.tokenizer.content_ids([text])[0]) + self.special

    def count_many(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) + self.special for ids in self.tokenizer.content_ids(list(texts))]

    # -- cutting -------------------------------------------------------------------------
    def _stream(self, source: TextSource) -> list[int]:
        if source.name not in self._streams:
            ids = self.tokenizer.content_ids([source.text])[0]
            if not ids:
                raise ValueError(f"{source.name} tokenizes to nothing")
            self._streams[source.name] = ids
        return self._streams[source.name]

    def _mixed(self, rounds: int = 40) -> TextSource:
        """Paragraphs of every source in turn (en, zh, code, en, ...): one long document that
        mixes scripts the way a real knowledge-base page with code samples does."""
        paragraphs = [[p for p in s.text.split("\n\n") if p.strip()] for s in self.sources]
        mixed = [paras[i % len(paras)] for i in range(rounds) for paras in paragraphs if paras]
        return TextSource("mixed", "mixed", "\n\n".join(mixed))

    def _slice(self, stream: list[int], start: int, n: int) -> list[int]:
        out: list[int] = []
        pos = start % len(stream)
        while len(out) < n:
            take = stream[pos : pos + n - len(out)]
            out.extend(take)
            pos = 0
        return out

    def cut(self, stream: list[int], start: int, target: int) -> str | None:
        """A text of exactly ``target`` model tokens beginning near ``stream[start]``, or None.

        Decoding a slice of ids and re-encoding the text can merge or split tokens at the
        cut (byte-level BPE, half a CJK character), so adjust the slice until it fits."""
        n = target - self.special
        if n < 1:
            raise ValueError(
                f"{target} tokens leave no room for text (the model adds {self.special} special tokens)"
            )
        k = n
        seen: set[int] = set()
        for _ in range(_ADJUST_TRIES):
            if k < 1 or k in seen:
                return None
            seen.add(k)
            # one sequence of ids decodes to one string (str | list[str] covers batches)
            text = cast(
                str,
                self.tokenizer.tokenizer.decode(
                    self._slice(stream, start, k), clean_up_tokenization_spaces=False
                ),
            )
            # No half characters, and no leading/trailing whitespace: real inputs rarely have
            # it, and some servers strip it (sentence-transformers < 5 does), which would
            # make them embed other tokens than the rest.
            text = text.strip("\ufffd").strip()
            if not text:
                return None
            got = self.count(text)
            if got == target:
                return text
            k += target - got
        return None

    def build(self, spec: WorkloadSpec, variant: int = 0) -> Workload:
        """``spec.count`` texts (distinct slices) of exactly ``spec.tokens`` tokens."""
        sources = [self._mixed()] if spec.mixed else self.sources
        per_source = [
            spec.count // len(sources) + (1 if i < spec.count % len(sources) else 0)
            for i in range(len(sources))
        ]
        picked: list[list[tuple[str, str]]] = []
        for source, k in zip(sources, per_source, strict=True):
            stream = self._stream(source)
            rng = random.Random(f"{spec.name}/{spec.tokens}/{variant}/{source.name}")
            offsets = (
                rng.sample(range(len(stream)), k)
                if k <= len(stream)
                else [rng.randrange(len(stream)) for _ in range(k)]
            )
            texts: list[tuple[str, str]] = []
            for offset in offsets:
                text = None
                for shift in range(64):
                    text = self.cut(stream, offset + shift, spec.tokens)
                    if text is not None:
                        break
                if text is None:
                    raise RuntimeError(f"could not cut a {spec.tokens}-token text out of {source.name}")
                texts.append((text, source.language))
            picked.append(texts)
        # Interleave the sources (en, zh, code, en, ...) so every batch mixes scripts.
        ordered: list[tuple[str, str]] = []
        for i in range(max(per_source)):
            ordered.extend(texts[i] for texts in picked if i < len(texts))
        texts_only = [t for t, _ in ordered]
        return Workload(spec, variant, texts_only, self.count_many(texts_only), [lang for _, lang in ordered])
