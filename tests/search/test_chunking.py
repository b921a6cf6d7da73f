"""Structure-aware chunking: headings, code definitions, sizes in tokens, overlap, line spans."""

from __future__ import annotations

import textwrap

import pytest

from qembed.errors import InputError
from qembed.search.chunking import ChunkConfig, Chunker
from qembed.search.documents import Document
from qembed.search.ingest import file_document

from .conftest import words


def chunk(
    text: str,
    path: str = "doc.md",
    size: int = 512,
    overlap: int = 64,
    counter=words,
    title: str | None = None,
):
    doc = file_document(f"/x/{path}", path, textwrap.dedent(text).lstrip("\n"), title=title)
    return Chunker(ChunkConfig(size, overlap), counter).chunk(doc)


MARKDOWN = """
---
title: Debug Pods
weight: 10
---
Intro paragraph about debugging.

## Diagnosing

First step.

```shell
# not a heading inside a fence
kubectl describe pods
```

### My pod stays pending

If a Pod is stuck in Pending it cannot be scheduled.

### My pod stays waiting

Image pull problems.
"""


def test_markdown_small_sections_share_a_chunk_with_their_common_trail() -> None:
    chunks = chunk(MARKDOWN)
    assert len(chunks) == 1
    c = chunks[0]
    assert c.title == "Debug Pods"  # from front matter
    assert c.heading == ()  # intro + Diagnosing + its subsections: common trail is the top
    assert c.line_start == 5 and c.line_end == 22  # front matter (lines 1-4) is not chunk text
    assert "# not a heading inside a fence" in c.text
    assert c.embed_text.startswith("Debug Pods\n\n")


def test_markdown_heading_trail_and_line_spans_when_sections_do_not_fit() -> None:
    chunks = chunk(MARKDOWN, size=30, overlap=4)
    by_heading = {c.heading: c for c in chunks}
    pending = by_heading[("Diagnosing", "My pod stays pending")]
    assert pending.text.startswith("### My pod stays pending")
    assert (pending.line_start, pending.line_end) == (16, 18)
    # The section's own heading is the body's first line; the context names its ancestors.
    assert pending.context == "Debug Pods\nDiagnosing"
    # No heading inside the fenced block became a section.
    assert not any("not a heading" in h for c in chunks for h in c.heading)
    # Every line of the document is in some chunk, in order.
    starts = [c.line_start for c in chunks]
    assert starts == sorted(starts)


def test_long_section_is_split_with_overlap_and_sizes_stay_in_budget() -> None:
    paragraphs = "\n\n".join(" ".join(f"w{p}_{i}" for i in range(30)) for p in range(12))
    text = f"# Title\n\n## Big\n\n{paragraphs}\n"
    chunks = chunk(text, size=100, overlap=40)
    assert len(chunks) > 3
    assert chunks[0].heading == ("Title",) and chunks[0].text.startswith(
        "# Title\n\n## Big"
    )  # the H1 line joins
    for c in chunks:
        assert words([c.embed_text])[0] <= 100 + 2  # + the context's ' > ' separators
    assert all(c.heading == ("Title", "Big") for c in chunks[1:])
    # Consecutive chunks of one section repeat the last lines (overlap).
    for a, b in zip(chunks[1:], chunks[2:], strict=False):
        last_line_of_a = a.text.splitlines()[-1]
        assert last_line_of_a in b.text
        assert b.line_start <= a.line_end


def test_a_single_huge_line_is_split_by_sentences_and_words() -> None:
    sentence = " ".join(["word"] * 40) + "."
    text = "# T\n\n" + " ".join([sentence] * 10) + "\n"
    chunks = chunk(text, size=64, overlap=0)
    assert len(chunks) >= 7
    assert all(words([c.embed_text])[0] <= 66 for c in chunks)
    assert chunks[0].line_start == 1  # the heading line joins the first piece
    assert all(c.line_start == 3 for c in chunks[1:]) and all(c.line_end == 3 for c in chunks)
    assert sum(c.text.count("word") for c in chunks) == 400


PYTHON = '''
"""Module docstring."""
import os

CONSTANT = 1


@decorator
def alpha(x):
    """Alpha."""
    return x + 1


# A comment that belongs to Beta.
class Beta:
    def one(self):
        return 1

    def two(self):
        return 2


async def gamma():
    return await something()
'''


def test_python_top_level_definitions_are_chunks() -> None:
    chunks = chunk(PYTHON, path="pkg/mod.py", size=20, overlap=0)
    trails = [c.heading for c in chunks]
    assert ("def alpha",) in trails and ("def gamma",) in trails
    alpha = next(c for c in chunks if c.heading == ("def alpha",))
    assert alpha.text.startswith("@decorator")  # decorators belong to the definition
    assert alpha.language == "python" and alpha.file_type == "py"
    # Beta does not fit 20 tokens: cut into its methods, each with the class in its trail.
    assert ("class Beta", "def one") in trails and ("class Beta", "def two") in trails
    beta_head = next(c for c in chunks if c.heading == ("class Beta",))
    assert beta_head.text.startswith("# A comment that belongs to Beta.")


def test_python_small_class_stays_whole_and_syntax_errors_fall_back_to_blocks() -> None:
    chunks = chunk(PYTHON, path="mod.py", size=512, overlap=0)
    assert len(chunks) == 1  # everything fits one chunk
    broken = chunk("def f(:\n    pass\n\nx = 1\n", path="bad.py", size=512)
    assert len(broken) == 1 and "x = 1" in broken[0].text


GO = """
package main

import "fmt"

// Hello says hello.
func Hello(name string) string {
	return "hi " + name
}

type Server struct {
	addr string
}

func (s *Server) Start() error {
	fmt.Println(s.addr)
	return nil
}
"""


def test_go_definitions_by_regex() -> None:
    chunks = chunk(GO, path="main.go", size=16, overlap=0)
    trails = [c.heading[0] for c in chunks if c.heading]
    assert any(t.startswith("func Hello") for t in trails)
    assert any(t.startswith("type Server struct") for t in trails)
    assert any(t.startswith("func (s *Server) Start()") for t in trails)
    hello = next(c for c in chunks if c.heading and c.heading[0].startswith("func Hello"))
    assert hello.text.startswith("// Hello says hello.")
    assert hello.language == "go"


def test_unknown_code_language_is_cut_by_lines() -> None:
    text = "\n".join(f"line {i} with some words" for i in range(100))
    chunks = chunk(text, path="data.sql", size=60, overlap=10)
    assert len(chunks) > 5
    assert chunks[0].line_start == 1 and chunks[-1].line_end == 100


RST = """
Project
=======

Intro.

Install
-------

Run pip.

Usage
-----

Call it.
"""


def test_rst_sections() -> None:
    chunks = chunk(RST, path="index.rst", size=16, overlap=0)
    assert chunks[0].title == "Project"
    assert ("Project", "Install") in [c.heading for c in chunks]
    usage = next(c for c in chunks if c.heading == ("Project", "Usage"))
    assert usage.line_start == 11


HTML = """<html><head><title>Page T</title><script>var x = "hidden";</script></head>
<body>
<h1>Main</h1>
<p>First paragraph
spans lines.</p>
<h2>Sub</h2>
<p>Second.</p>
<pre>code line 1
code line 2</pre>
</body></html>
"""


def test_html_is_text_only_with_source_lines() -> None:
    chunks = chunk(HTML, path="page.html", size=16, overlap=0)
    assert chunks[0].title == "Page T"
    text = "\n".join(c.text for c in chunks)
    assert "hidden" not in text and "<p>" not in text
    sub = next(c for c in chunks if c.heading == ("Main", "Sub"))
    assert sub.line_start == 6  # the <h2> line in the HTML source
    assert "code line 2" in text
    assert all(c.language == "html" for c in chunks)


def test_real_tokenizer_keeps_chunks_inside_the_window(minilm_encoder) -> None:
    text = "# Guide\n\n" + "\n\n".join(
        f"## Part {p}\n\n" + " ".join(f"Kubernetes schedules pod{p}x{i} onto nodes." for i in range(60))
        for p in range(4)
    )
    doc = Document("/d/guide.md", "guide.md", text, "markdown", "md")
    chunks = Chunker(ChunkConfig(128, 16), minilm_encoder.count_tokens).chunk(doc)
    assert len(chunks) > 4
    sizes = minilm_encoder.count_tokens([c.embed_text for c in chunks])
    assert max(sizes) <= 128, sizes


def test_bad_config_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="at least 16"):
        ChunkConfig(8, 0)
    with pytest.raises(InputError, match="half the chunk size"):
        ChunkConfig(100, 60)


def test_empty_document_has_no_chunks() -> None:
    assert chunk("", path="empty.md") == []
    assert chunk("\n\n   \n", path="blank.txt") == []
