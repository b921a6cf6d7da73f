"""``qembed index PATH... --index NAME`` and ``qembed search "query" --index NAME``.

Progress goes to stderr (a rich bar on a terminal, one plain line per commit otherwise, so
scripts and tests can follow it); results and the final report go to stdout, as rich
text or, with ``--json``, as JSON for scripts.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from qembed.cli.options import build_settings, engine_fields, fail, settings_options
from qembed.errors import QembedError
from qembed.settings import RerankSettings, SearchSettings, Settings

# The store flags and the engine's; the engine's own --chunk-overlap (long-input windows)
# would be confused with the index's, which `qembed index --chunk-overlap` is.
SEARCH_FIELDS = engine_fields(SearchSettings, exclude=("chunk_overlap",))
RERANK_FIELDS = Settings.fields_of(RerankSettings)


def _open(
    values: dict[str, Any], *, create: bool, rebuild: bool = False, reembed: bool = False, wait: float = 30.0
) -> Any:
    """Open the index named by the flags, loading the model it was built with unless --model says otherwise."""
    from qembed.cli.main import setup_logging
    from qembed.search.api import SearchIndex

    settings = build_settings(values)
    setup_logging("warning")
    return SearchIndex.open(
        settings=settings, create=create, rebuild=rebuild, reembed=reembed, lock_timeout=wait
    )


def _reembed(values: dict[str, Any], commit_every: int, wait: float, as_json: bool) -> None:
    """``qembed index --reembed``: every stored chunk through the current --model (no PATHS read)."""
    if not build_settings(values).index:  # --index or QEMBED_INDEX
        raise click.UsageError("give the index to re-embed: --reembed --index NAME [--model MODEL].")
    progress = _Progress()
    try:
        with _open(values, create=False, reembed=True, wait=wait) as idx:
            idx.store.check(load=False)
            try:
                report = idx.reembed(commit_every=commit_every, progress=progress)
            except KeyboardInterrupt:
                progress.close()
                click.secho(
                    "interrupted: the index is refused until it is finished; run the same command again "
                    "to re-embed the rest.", fg="yellow", err=True,
                )  # fmt: skip
                raise SystemExit(130) from None
            finally:
                progress.close()
            stats = idx.stats()
            model = idx.encoder.model
    except QembedError as exc:
        fail(exc)
    if as_json:
        click.echo(
            json.dumps(
                {
                    **report.to_dict(),
                    "model": model,
                    "index": {"documents": stats.documents, "chunks": stats.chunks},
                }
            )
        )
    else:
        click.echo(
            f"re-embedded {report.chunks_embedded} chunk texts of {report.documents_updated} documents with {model} "
            f"in {report.seconds:.1f} s. Index now holds {stats.documents} documents, {stats.chunks} chunks."
        )


def _check(values: dict[str, Any]) -> None:
    """``qembed index --check``: every check, the slow ones too, without loading the model."""
    from qembed.search.store import open_store

    settings = build_settings(values)
    with open_store(
        settings.index, data_dir=settings.data_dir, store_uri=settings.store_uri, create=False
    ) as store:
        store.check(full=True)
        stats = store.stats()
        ann_line = store.check_ann()
    click.echo(
        f"index {store.name!r}: ok ({stats.documents} documents, {stats.chunks} chunks; sizes, checksum and SQLite checked)"
    )
    if ann_line:
        click.echo(ann_line)


class _Progress:
    """A rich progress bar on a terminal; otherwise one flushed line per committed batch."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.task: Any = None

    def __call__(self, p: Any) -> None:
        if not self.tty:
            line = f"progress: {p.done}/{p.total} documents, {p.committed} committed, {p.chunks_embedded} chunks embedded"
            if line != getattr(self, "last", None):
                click.echo(line, err=True)
                sys.stderr.flush()
                self.last = line
            return
        if self.bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("indexing"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[chunks]} chunks embedded"),
                TimeRemainingColumn(),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("index", total=p.total, chunks=0)
        self.bar.update(self.task, completed=p.done, total=p.total, chunks=p.chunks_embedded)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


@click.command(
    "index",
    help="Index files and folders (Markdown, text, rst, HTML, code, JSONL) into a search index; only new or changed text is embedded.",
)
@click.argument("paths", nargs=-1)
@click.option("--text-field", default="text", show_default=True, help="JSONL: the field with the text.")
@click.option(
    "--id-field",
    default=None,
    help="JSONL: the field with a unique id (default: id or _id if present, else the line number).",
)
@click.option("--title-field", default=None, help="JSONL: the field with the title.")
@click.option(
    "--metadata-field",
    "metadata_fields",
    multiple=True,
    help="JSONL: a field to keep as metadata (repeatable).",
)
@click.option(
    "--exclude",
    multiple=True,
    help="Glob of files to skip, matched against the relative path and the name (repeatable).",
)
@click.option(
    "--chunk-size",
    type=int,
    default=None,
    help="Chunk size in model tokens (default 512, or what the index was built with; capped at the model window).",
)
@click.option(
    "--chunk-overlap",
    type=int,
    default=None,
    help="Overlap between chunks of one long section, in tokens (default 64).",
)
@click.option(
    "--commit-every",
    type=int,
    default=256,
    show_default=True,
    help="Chunks per commit: what an interrupted run can lose at most.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option(
    "--rebuild",
    is_flag=True,
    help="Delete the index's data (a damaged index too) and build it from scratch from PATHS.",
)
@click.option(
    "--reembed",
    is_flag=True,
    help="Re-embed every chunk of --index with --model (after a model, revision or prompt change); "
    "no PATHS: the chunks are in the index. Resumable: run it again after an interruption.",
)
@click.option(
    "--check",
    "check_only",
    is_flag=True,
    help="Check the index (file sizes, vector checksum, SQLite) and exit; no PATHS, no model.",
)
@click.option(
    "--wait",
    type=float,
    default=30.0,
    show_default=True,
    help="Seconds to wait for another writer of this index before giving up.",
)
@settings_options(SEARCH_FIELDS)
def index_cmd(paths: tuple[str, ...], text_field: str, id_field: str | None, title_field: str | None, metadata_fields: tuple[str, ...],
              exclude: tuple[str, ...], chunk_size: int | None, chunk_overlap: int | None, commit_every: int, as_json: bool,
              rebuild: bool, reembed: bool, check_only: bool, wait: float, **values: Any) -> None:  # fmt: skip
    if reembed:
        if paths or rebuild or check_only:
            raise click.UsageError(
                "--reembed takes no PATHS, --rebuild or --check: it re-embeds what the index holds."
            )
        _reembed(values, commit_every, wait, as_json)
        return
    if check_only:
        try:
            _check(values)
        except QembedError as exc:
            fail(exc)
        return
    if not paths:
        raise click.UsageError("give the files or folders to index (or --check).")
    if not values.get("index"):
        values["index"] = index_name_for(paths[0])
        click.echo(f"index: {values['index']} (named after {paths[0]}; --index NAME to choose)", err=True)
    progress = _Progress()
    try:
        from qembed.search.ingest import plan

        plan(paths, exclude=exclude)  # bad paths fail before the model loads
        with _open(values, create=True, rebuild=rebuild, wait=wait) as idx:
            idx.store.check(
                load=False
            )  # a cut-short index fails here, with the --rebuild hint, before anything is embedded
            try:
                report = idx.index(
                    paths, text_field=text_field, id_field=id_field, title_field=title_field, metadata_fields=metadata_fields,
                    exclude=exclude, chunk_size=chunk_size, chunk_overlap=chunk_overlap, commit_every=commit_every, progress=progress,
                )  # fmt: skip
            except KeyboardInterrupt:
                progress.close()
                stats = idx.stats()
                click.secho(
                    f"interrupted: the index is consistent ({stats.documents} documents, {stats.chunks} chunks committed); "
                    "run the same command again to finish.", fg="yellow", err=True,
                )  # fmt: skip
                raise SystemExit(130) from None
            finally:
                progress.close()
            stats = idx.stats()
    except QembedError as exc:
        fail(exc)
    if as_json:
        click.echo(
            json.dumps({**report.to_dict(), "index": {"documents": stats.documents, "chunks": stats.chunks}})
        )
    else:
        click.echo(f"{report.summary()}. Index now holds {stats.documents} documents, {stats.chunks} chunks.")


def index_name_for(path: str) -> str:
    """An index name from a folder or file name (``docs/`` -> ``docs``, ``faq.jsonl`` -> ``faq``)."""
    import re
    from pathlib import Path

    target = Path(path).expanduser().resolve()
    stem = target.name if target.is_dir() else target.stem
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")[:63] or "index"
    return name if name[0].isalnum() else f"i{name}"[:63]


@click.command("search", help="Search an index: dense (default), hybrid (dense + BM25, rank fusion) or bm25.")
@click.argument("query")
@click.option("-k", "--top-k", "k", type=int, default=10, show_default=True, help="How many results.")
@click.option("--mode", type=click.Choice(["dense", "hybrid", "bm25"]), default="dense", show_default=True)
@click.option("--path-prefix", default=None, help="Only chunks whose path starts with this.")
@click.option(
    "--language", default=None, help="Only this language (markdown, text, rst, html, python, go, ...)."
)
@click.option("--file-type", default=None, help="Only this file extension (md, py, ...).")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
@click.option(
    "--rerank",
    "rerank_on",
    is_flag=True,
    help="Re-score the top candidates with --rerank-model (Qwen3-Reranker or a cross-encoder) and rank by it.",
)
@settings_options(RERANK_FIELDS)
@settings_options(SEARCH_FIELDS)
def search_cmd(
    query: str,
    k: int,
    mode: str,
    path_prefix: str | None,
    language: str | None,
    file_type: str | None,
    as_json: bool,
    rerank_on: bool,
    **values: Any,
) -> None:
    rerank_values = {name: values.pop(name) for name in RERANK_FIELDS}
    if not rerank_on and any(v is not None for v in rerank_values.values()):
        raise click.UsageError("--rerank-model, --rerank-max-length and --rerank-instruction need --rerank.")
    try:
        reranker = None
        if rerank_on:  # loaded first: a wrong --rerank-model fails before the index is opened
            from qembed.rerank.reranker import Reranker

            shared = {
                name: v for name, v in values.items() if name in ("device", "dtype", "threads", "long_text")
            }
            reranker = Reranker(settings=build_settings({**shared, **rerank_values}))
        with _open(values, create=False) as idx:
            results = idx.search(
                query,
                k=k,
                mode=mode,  # type: ignore[arg-type]
                path_prefix=path_prefix,
                language=language,
                file_type=file_type,
                rerank=reranker,
            )
    except QembedError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], ensure_ascii=False))
        return
    render(query, results)


def render(query: str, results: list[Any]) -> None:
    """Ranked snippets: rank, score, path:lines, heading trail, then the lines that matter most."""
    from rich.console import Console
    from rich.markup import escape

    from qembed.search.bm25 import query_terms

    console = Console()
    if not results:
        console.print("no results")
        return
    terms = set(query_terms(query))
    for r in results:
        c = r.chunk
        parts = [
            f"dense {r.dense_score:.3f}" if r.dense_score is not None else "",
            f"bm25 {r.bm25_score:.2f}" if r.bm25_score is not None else "",
        ]
        detail = ", ".join(p for p in parts if p)
        shown = detail and (mode_of(r) == "hybrid" or r.rerank_score is not None)
        console.print(
            f"[bold]{r.rank:>2}.[/bold] [cyan]{escape(c.path)}[/cyan]:{c.line_start}-{c.line_end}  [green]{r.score:.4f}[/green]"
            + (
                f" (rerank; {detail})"
                if shown and r.rerank_score is not None
                else f" ({detail})"
                if shown
                else ""
            )
        )
        trail = " > ".join(t for t in (c.title, *c.heading) if t)
        if trail:
            console.print(f"    [magenta]{escape(trail)}[/magenta]")
        for line in snippet(c.text, terms):
            console.print(f"    [dim]│[/dim] {escape(line)}")
        console.print()


def mode_of(r: Any) -> str:
    return "hybrid" if r.dense_score is not None and r.bm25_score is not None else "single"


def snippet(text: str, terms: set[str], lines: int = 4, width: int = 160) -> list[str]:
    """The lines sharing most terms with the query (in text order), or the first lines."""
    from qembed.search.bm25 import terms as split

    candidates = [ln for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("```")]
    if not candidates:
        return []
    scored = sorted(range(len(candidates)), key=lambda i: -len(terms.intersection(split(candidates[i]))))
    best = (
        sorted(scored[:lines])
        if terms and any(terms.intersection(split(candidates[i])) for i in scored[:1])
        else list(range(min(lines, len(candidates))))
    )
    return [candidates[i][:width] + ("…" if len(candidates[i]) > width else "") for i in best]


def register(group: click.Group) -> None:
    group.add_command(index_cmd)
    group.add_command(search_cmd)
