"""Cut documents into chunks along their structure, sized in the embedder's tokens.

Why structure first: a chunk that is one Markdown section or one function is a unit a
person would quote; a fixed-size window cuts sentences and code in half and mixes topics.
So each language is parsed into *sections* (a heading and its paragraphs; a top-level
function or class) made of *blocks* (paragraphs, fenced code, blank-line separated code),
and only what is larger than the budget is split further: a section by its blocks, a
block by its lines, a line by sentences and then words.

Packing rules:
- small consecutive sections share a chunk while the whole of the next one fits; a section
  that does not fit starts a new chunk, so a heading is never separated from its text;
- a section larger than the budget is packed block by block, and each of its chunks after
  the first repeats the last ``overlap`` tokens (whole lines) of the one before;
- every chunk keeps its heading trail (the common ancestors of what it holds), which is
  prepended to the text that is embedded and searched, with the document title.

Sizes are counted with the embedder's own tokenizer: one tokenizer call per document over
all its lines, plus one token per line for the newline, which over-counts slightly and
so keeps chunks inside the model window.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from qembed.errors import InputError
from qembed.search.documents import Chunk, Document, chunk_id

TokenCounter = Callable[[list[str]], list[int]]

MIN_CHUNK_TOKENS = 16


@dataclass(frozen=True)
class ChunkConfig:
    """Chunk size and overlap in tokens (the size is capped at the model window by the caller)."""

    size: int = 512
    overlap: int = 64

    def __post_init__(self) -> None:
        if self.size < MIN_CHUNK_TOKENS:
            raise InputError(
                f"chunk size must be at least {MIN_CHUNK_TOKENS} tokens, not {self.size}.", param="chunk_size"
            )
        if not 0 <= self.overlap <= self.size // 2:
            raise InputError(
                f"chunk overlap must be between 0 and half the chunk size ({self.size // 2}), not {self.overlap}.",
                param="chunk_overlap",
            )

    def key(self) -> str:
        return f"size={self.size},overlap={self.overlap}"


@dataclass
class Piece:
    """A line, or part of a line too long for one chunk."""

    line: int
    text: str
    tokens: int
    block: int  # pieces of one block are joined with newlines, blocks with blank lines


@dataclass
class Section:
    trail: tuple[str, ...]
    pieces: list[Piece] = field(default_factory=list)
    heading_line: int | None = None  # the line that holds this section's heading, if any

    @property
    def tokens(self) -> int:
        return sum(p.tokens for p in self.pieces)


Line = tuple[int, str]  # (1-based line number in the source, text)


# ----------------------------------------------------------------------------------------------
# Parsing: text -> sections of (line, text) blocks
# ----------------------------------------------------------------------------------------------
@dataclass
class _Draft:
    trail: tuple[str, ...]
    blocks: list[list[Line]] = field(default_factory=list)
    heading_line: int | None = None


def _paragraphs(lines: Sequence[Line]) -> list[list[Line]]:
    """Blank-line separated blocks."""
    blocks: list[list[Line]] = []
    current: list[Line] = []
    for no, text in lines:
        if text.strip():
            current.append((no, text))
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t]*#*[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")


def front_matter(lines: list[str]) -> tuple[int, str | None]:
    """Lines taken by a leading YAML/TOML front matter block, and its title if it has one."""
    if not lines or lines[0].strip() not in ("---", "+++"):
        return 0, None
    fence = lines[0].strip()
    for i in range(1, min(len(lines), 200)):
        if lines[i].strip() == fence:
            title = None
            for line in lines[1:i]:
                m = re.match(r"^title\s*[:=]\s*(.+?)\s*$", line)
                if m:
                    title = m.group(1).strip().strip("'\"") or None
                    break
            return i + 1, title
    return 0, None


def parse_markdown(lines: Sequence[Line]) -> tuple[list[_Draft], str | None]:
    """Sections by ATX and setext headings, outside fenced code; heading lines stay in the text."""
    drafts = [_Draft(())]
    stack: list[tuple[int, str]] = []
    title: str | None = None
    fence: str | None = None
    body: list[Line] = []

    def close_body() -> None:
        drafts[-1].blocks.extend(_blocks_with_fences(body))
        body.clear()

    def open_section(level: int, text: str, no: int, heading_lines: list[Line]) -> None:
        nonlocal title
        close_body()
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, text))
        if level == 1 and title is None:
            title = text
        drafts.append(_Draft(tuple(t for _, t in stack), [heading_lines], heading_line=no))

    for i, (no, text) in enumerate(lines):
        if fence is not None:
            body.append((no, text))
            if text.strip().startswith(fence):
                fence = None
            continue
        m = _FENCE.match(text)
        if m:
            fence = m.group(1)[0] * 3
            body.append((no, text))
            continue
        m = _ATX.match(text)
        if m and m.group(2):
            open_section(len(m.group(1)), m.group(2), no, [(no, text)])
            continue
        s = _SETEXT.match(text)
        if s and body and body[-1][1].strip() and i > 0 and lines[i - 1][0] == body[-1][0]:
            # Setext: the previous paragraph line is the heading; '---' after a blank is a rule.
            prev_no, prev_text = body.pop()
            open_section(
                1 if s.group(1)[0] == "=" else 2,
                prev_text.strip(),
                prev_no,
                [(prev_no, prev_text), (no, text)],
            )
            continue
        body.append((no, text))
    close_body()
    return [d for d in drafts if d.blocks], title


def _blocks_with_fences(lines: Sequence[Line]) -> list[list[Line]]:
    """Paragraph blocks, but a fenced code block (blank lines included) is one block."""
    blocks: list[list[Line]] = []
    current: list[Line] = []
    fence: str | None = None
    for no, text in lines:
        if fence is not None:
            current.append((no, text))
            if text.strip().startswith(fence):
                fence = None
                blocks.append(current)
                current = []
            continue
        m = _FENCE.match(text)
        if m:
            if current:
                blocks.append(current)
            current = [(no, text)]
            fence = m.group(1)[0] * 3
            continue
        if text.strip():
            current.append((no, text))
        elif current:
            blocks.append(current)
            current = []
    if current:
        blocks.append(current)
    return blocks


_RST_UNDERLINE = re.compile(r"^([=\-`:'\"~^_*+#<>.])\1{2,}\s*$")


def parse_rst(lines: Sequence[Line]) -> tuple[list[_Draft], str | None]:
    """reStructuredText sections: a title line underlined (optionally overlined) by punctuation;
    levels follow the order in which underline styles first appear, as docutils does."""
    styles: list[str] = []
    drafts = [_Draft(())]
    stack: list[tuple[int, str]] = []
    title: str | None = None
    body: list[Line] = []
    i = 0
    n = len(lines)
    while i < n:
        no, text = lines[i]
        nxt = lines[i + 1][1] if i + 1 < n else ""
        over = False
        if (
            _RST_UNDERLINE.match(text)
            and i + 2 < n
            and _RST_UNDERLINE.match(lines[i + 2][1])
            and lines[i + 1][1].strip()
        ):
            over, heading, under, used = True, lines[i + 1][1].strip(), lines[i + 2][1], 3
        elif (
            text.strip()
            and not text[0].isspace()
            and _RST_UNDERLINE.match(nxt)
            and len(nxt.rstrip()) >= len(text.rstrip())
        ):
            heading, under, used = text.strip(), nxt, 2
        else:
            body.append((no, text))
            i += 1
            continue
        style = ("o" if over else "") + under.strip()[0]
        if style not in styles:
            styles.append(style)
        level = styles.index(style) + 1
        drafts[-1].blocks.extend(_paragraphs(body))
        body = []
        while stack and stack[-1][0] >= level:
            stack.pop()
        stack.append((level, heading))
        if title is None:
            title = heading
        drafts.append(
            _Draft(tuple(t for _, t in stack), [list(lines[i : i + used])], heading_line=lines[i][0])
        )
        i += used
    drafts[-1].blocks.extend(_paragraphs(body))
    return [d for d in drafts if d.blocks], title


def parse_plain(lines: Sequence[Line]) -> list[_Draft]:
    return [_Draft((), _paragraphs(lines))]


def _with_leading_comments(lines: Sequence[str], start: int, prefixes: tuple[str, ...]) -> int:
    """Move a definition's start (0-based) up over the comments and decorators right above it."""
    while start > 0 and lines[start - 1].strip().startswith(prefixes) and lines[start - 1].strip():
        start -= 1
    return start


def _units_to_drafts(lines: Sequence[Line], units: list[tuple[int, int, tuple[str, ...]]]) -> list[_Draft]:
    """Definitions as sections; the lines between them (imports, constants) as their own sections."""
    drafts: list[_Draft] = []
    pos = 0
    for start, end, trail in sorted(units):
        if start < pos:
            continue
        if start > pos:
            drafts.append(_Draft((), _paragraphs(lines[pos:start])))
        drafts.append(_Draft(trail, _paragraphs(lines[start:end]), heading_line=lines[start][0]))
        pos = end
    if pos < len(lines):
        drafts.append(_Draft((), _paragraphs(lines[pos:])))
    return [d for d in drafts if d.blocks]


def parse_python(lines: Sequence[Line], budget_hint: Callable[[int, int], bool]) -> list[_Draft]:
    """Top-level functions and classes via ``ast``; a class too big for one chunk is cut into
    its methods. Falls back to blank-line blocks when the file does not parse."""
    source = "\n".join(t for _, t in lines)
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return parse_plain(lines)
    raw = [t for _, t in lines]
    units: list[tuple[int, int, tuple[str, ...]]] = []

    def span(node: ast.stmt) -> tuple[int, int]:
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
        return _with_leading_comments(raw, first - 1, ("#",)), node.end_lineno or node.lineno

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            s, e = span(node)
            units.append((s, e, (f"def {node.name}",)))
        elif isinstance(node, ast.ClassDef):
            s, e = span(node)
            trail = (f"class {node.name}",)
            methods = [
                m for m in node.body if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            ]
            if methods and not budget_hint(s, e):
                head_end = span(methods[0])[0]
                units.append((s, head_end, trail))
                for m in methods:
                    ms, me = span(m)
                    kind = "class" if isinstance(m, ast.ClassDef) else "def"
                    units.append((ms, me, (*trail, f"{kind} {m.name}")))
            else:
                units.append((s, e, trail))
    return _units_to_drafts(lines, units)


# Top-level definitions per language, matched at column 0. Languages without an entry are cut by lines.
_DEFS: dict[str, re.Pattern[str]] = {
    "go": re.compile(r"^(func|type)\b"),
    "javascript": re.compile(
        r"^(export\s+)?(default\s+)?(async\s+)?(function\*?|class|const|let|var)\s+[\w$]+"
    ),
    "typescript": re.compile(
        r"^(export\s+)?(default\s+)?(declare\s+)?(abstract\s+)?(async\s+)?(function\*?|class|interface|type|enum|const|let|namespace)\s+[\w$]+"
    ),
    "rust": re.compile(
        r"^(pub(\([^)]*\))?\s+)?(async\s+)?(unsafe\s+)?(fn|struct|enum|trait|impl|mod|type|const|static|union|macro_rules!)\b"
    ),
    "java": re.compile(
        r"^(public|protected|private|abstract|final|sealed|static|\s)*(class|interface|enum|record|@interface)\s+\w+"
    ),
    "kotlin": re.compile(
        r"^(public|private|internal|open|abstract|data|sealed|inline|suspend|\s)*(fun|class|interface|object|enum class)\b"
    ),
    "scala": re.compile(
        r"^(case\s+|abstract\s+|sealed\s+|final\s+|implicit\s+)*(def|class|object|trait)\s+\w+"
    ),
    "csharp": re.compile(
        r"^(public|internal|private|protected|static|abstract|sealed|partial|\s)*(class|interface|struct|enum|record|namespace)\s+\w+"
    ),
    "c": re.compile(
        r"^(?!(if|for|while|switch|return|else)\b)[A-Za-z_][\w\s\*]*\b\w+\s*\([^;]*$|^(struct|enum|union|typedef)\b"
    ),
    "cpp": re.compile(
        r"^(?!(if|for|while|switch|return|else)\b)[A-Za-z_~][\w\s\*&:<>,~]*\b[\w~]+\s*\([^;]*$|^(struct|class|enum|union|namespace|template|typedef)\b"
    ),
    "ruby": re.compile(r"^(def|class|module)\b"),
    "php": re.compile(r"^(abstract\s+|final\s+)?(function|class|interface|trait|enum)\b"),
    "bash": re.compile(r"^(function\s+[\w-]+|[\w-]+\s*\(\)\s*)"),
    "lua": re.compile(r"^(local\s+)?function\b"),
    "swift": re.compile(
        r"^(public\s+|private\s+|internal\s+|open\s+|fileprivate\s+|final\s+)*(func|class|struct|enum|protocol|extension|actor)\b"
    ),
}
_COMMENT_PREFIXES = ("//", "#", "/*", "*", "@", "--", "///", "#[")


def parse_code(lines: Sequence[Line], language: str) -> list[_Draft]:
    pattern = _DEFS.get(language)
    if pattern is None:
        return parse_plain(lines)
    raw = [t for _, t in lines]
    starts = [i for i, t in enumerate(raw) if t and not t[0].isspace() and pattern.match(t)]
    if not starts:
        return parse_plain(lines)
    units: list[tuple[int, int, tuple[str, ...]]] = []
    begins = [_with_leading_comments(raw, s, _COMMENT_PREFIXES) for s in starts]
    for j, (s, b) in enumerate(zip(starts, begins, strict=True)):
        end = begins[j + 1] if j + 1 < len(begins) else len(raw)
        name = raw[s].strip().rstrip("{").strip()
        units.append((b, max(end, b + 1), (name[:100],)))
    return _units_to_drafts(lines, units)


# ----------------------------------------------------------------------------------------------
# Sizing and packing
# ----------------------------------------------------------------------------------------------
_SENTENCE = re.compile(r"(?<=[.!?;。！？；])\s+|(?<=[。！？；])")
_WORD = re.compile(r"\S+\s*")


class Chunker:
    """Turns one document into chunks; ``count_tokens`` is the embedder's tokenizer."""

    def __init__(self, config: ChunkConfig, count_tokens: TokenCounter) -> None:
        self.config = config
        self.count_tokens = count_tokens

    # -- long lines -------------------------------------------------------------------------
    def _split_long(self, text: str, limit: int) -> list[tuple[str, int]]:
        """A line over the budget: sentences, then words (characters for unspaced scripts)."""
        parts = [p for p in _SENTENCE.split(text) if p and p.strip()]
        counts = self.count_tokens(parts)
        out: list[tuple[str, int]] = []
        for part, count in zip(parts, counts, strict=True):
            if count <= limit:
                out.append((part, count))
                continue
            words = _WORD.findall(part)
            if len(words) <= 1:
                step = max(1, len(part) * limit // max(count, 1))
                words = [part[i : i + step] for i in range(0, len(part), step)]
            for w, c in zip(words, self.count_tokens(words), strict=True):
                if c > limit:  # a single unbreakable token run: cut by characters
                    step = max(1, len(w) * limit // max(c, 1))
                    out.extend((w[i : i + step], limit) for i in range(0, len(w), step))
                else:
                    out.append((w, c))
        # Greedy regroup so pieces are as large as the limit allows.
        merged: list[tuple[str, int]] = []
        for part, count in out:
            if merged and merged[-1][1] + count <= limit:
                merged[-1] = (merged[-1][0] + " " + part.strip(), merged[-1][1] + count)
            else:
                merged.append((part.strip(), count))
        return [m for m in merged if m[0]]

    def _sections(self, drafts: list[_Draft], limit: int) -> list[Section]:
        flat = [text for d in drafts for block in d.blocks for _, text in block]
        counts = iter(self.count_tokens(flat) if flat else [])
        sections: list[Section] = []
        block_no = 0
        for d in drafts:
            section = Section(d.trail, heading_line=d.heading_line)
            for block in d.blocks:
                block_no += 1
                for no, text in block:
                    count = next(counts) + 1  # + the newline
                    if count <= limit:
                        section.pieces.append(Piece(no, text.rstrip(), count, block_no))
                    else:
                        # Half-budget pieces pack better: a heading line and a long paragraph share a chunk.
                        pieces = self._split_long(text, max(8, limit // 2))
                        section.pieces.extend(Piece(no, part, c + 1, block_no) for part, c in pieces)
            sections.append(section)
        return sections

    # -- packing ----------------------------------------------------------------------------
    def chunk(self, doc: Document) -> list[Chunk]:
        """The chunks of one document, in order."""
        raw_lines = doc.text.splitlines()
        skip, fm_title = front_matter(raw_lines) if doc.language in ("markdown", "text") else (0, None)
        numbers = (
            doc.line_map
            if doc.line_map is not None and len(doc.line_map) == len(raw_lines)
            else range(1, len(raw_lines) + 1)
        )
        lines: list[Line] = list(zip(numbers, raw_lines, strict=True))[skip:]
        title = doc.title or fm_title
        size = self.config.size
        if doc.language in ("markdown", "html"):
            drafts, md_title = parse_markdown(lines)
            title = title or md_title
        elif doc.language == "rst":
            drafts, rst_title = parse_rst(lines)
            title = title or rst_title
        elif doc.language == "python":

            def fits(start: int, end: int) -> bool:
                # Rough pre-check (4 characters a token) of whether a class fits one chunk.
                chars = sum(len(lines[k][1]) + 1 for k in range(start, min(end, len(lines))))
                return chars // 4 <= size

            drafts = parse_python(lines, fits)
        elif doc.language in _DEFS:
            drafts = parse_code(lines, doc.language)
        else:
            drafts = parse_plain(lines)
        title = title or doc.path.rsplit("/", 1)[-1]

        header_cost = self.count_tokens([title])[0] + 2
        trails = {d.trail for d in drafts}
        trail_cost = (
            dict(zip(trails, self.count_tokens([" > ".join(t) for t in trails]), strict=True))
            if trails
            else {}
        )
        max_trail = max(trail_cost.values(), default=0)
        # The body budget leaves room for the context header (title + longest trail).
        budget = max(size // 2, size - header_cost - max_trail - 1)
        sections = self._sections(drafts, budget)

        groups: list[tuple[list[Piece], list[Section]]] = []
        current: list[Piece] = []
        owners: list[Section] = []
        used = 0

        def flush() -> None:
            nonlocal current, owners, used
            if current:
                groups.append((current, owners))
            current, owners, used = [], [], 0

        for section in sections:
            if not section.pieces:
                continue
            tokens = section.tokens
            if tokens <= budget:
                if used + tokens > budget:
                    flush()
                current.extend(section.pieces)
                owners.append(section)
                used += tokens
                continue
            # A big section continues the current chunk only when that holds next to nothing
            # (a lone heading above it is not worth a chunk); otherwise it starts its own.
            if used > budget // 4:
                flush()
            owners.append(section)
            for piece in section.pieces:
                if used + piece.tokens > budget and current:
                    tail = self._overlap(current)
                    while tail and sum(p.tokens for p in tail) + piece.tokens > budget:
                        tail = tail[1:]
                    flush()
                    current, used = list(tail), sum(p.tokens for p in tail)
                    owners = [section]
                current.append(piece)
                used += piece.tokens
                if not owners:
                    owners = [section]
            flush()
        flush()

        chunks: list[Chunk] = []
        for ordinal, (pieces, secs) in enumerate(groups):
            trail = _common_trail([s.trail for s in secs])
            # The section's own heading is already the body's first line: don't repeat it.
            header_trail = trail
            if len(secs) >= 1 and trail == secs[0].trail and secs[0].heading_line == pieces[0].line and trail:
                header_trail = trail[:-1]
            context_parts = [title]
            shown = [t for t in header_trail if t != title]
            if shown:
                context_parts.append(" > ".join(shown))
            chunks.append(
                Chunk(
                    chunk_id=chunk_id(doc.doc_id, ordinal),
                    doc_id=doc.doc_id,
                    ordinal=ordinal,
                    path=doc.path,
                    title=title,
                    heading=trail,
                    line_start=pieces[0].line,
                    line_end=pieces[-1].line,
                    language=doc.language,
                    file_type=doc.file_type,
                    text=_join(pieces),
                    context="\n".join(context_parts),
                    metadata=doc.metadata,
                )
            )
        return chunks

    def _overlap(self, pieces: list[Piece]) -> list[Piece]:
        """The trailing pieces of a full chunk, up to ``overlap`` tokens, repeated in the next."""
        limit = self.config.overlap
        tail: list[Piece] = []
        total = 0
        for piece in reversed(pieces):
            if total + piece.tokens > limit:
                break
            tail.insert(0, piece)
            total += piece.tokens
        if len(tail) == len(pieces):  # never repeat a whole chunk
            tail = tail[1:]
        return tail


def _common_trail(trails: list[tuple[str, ...]]) -> tuple[str, ...]:
    if not trails:
        return ()
    first = trails[0]
    n = len(first)
    for t in trails[1:]:
        n = min(n, len(t))
        for i in range(n):
            if t[i] != first[i]:
                n = i
                break
    return first[:n]


def _join(pieces: list[Piece]) -> str:
    out: list[str] = []
    prev: Piece | None = None
    for p in pieces:
        if prev is not None:
            if p.line == prev.line:
                out.append(" ")
            elif p.block == prev.block:
                out.append("\n")
            else:
                out.append("\n\n")
        out.append(p.text)
        prev = p
    return "".join(out)
