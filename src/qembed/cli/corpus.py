"""``qembed embed-corpus INPUT --out OUTPUT``: a whole corpus into a Parquet dataset.

One machine by default (``qembed.corpus.job.run_local``); ``--ray ADDRESS`` (or ``--ray
local``) runs the embedding on a Ray cluster with an actor pool of ``--workers`` embedders
(``qembed.corpus.ray_job``). Either way a re-run resumes. Progress goes to stderr (a rich
bar with tokens/s and ETA on a terminal, one plain line per committed part otherwise, so
scripts and tests can follow it); the report goes to stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from qembed.cli.options import build_settings, engine_fields, fail, settings_options
from qembed.errors import QembedError
from qembed.settings import SearchSettings

# The engine's flags, the engine batch (padded tokens / rows per model call) from the serving group,
# and the search store's for --index (whose own --index flag is the command's).
CORPUS_FIELDS = [*engine_fields(SearchSettings, exclude=("index",)), "max_batch_tokens", "max_batch_size"]


class _Progress:
    """A rich bar (documents, tokens/s, ETA) on a terminal; otherwise a flushed line per committed part."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.last_parts = -1
        self.seen = 0

    def __call__(self, p: Any) -> None:
        rate = p.tokens / p.seconds if p.seconds > 0 else 0.0
        if not self.tty:
            if p.parts != self.last_parts:
                self.last_parts = p.parts
                click.echo(
                    f"progress: {p.done}/{p.total} documents, {p.committed} committed in {p.parts} parts, "
                    f"{rate:,.0f} tokens/s",
                    err=True,
                )
                sys.stderr.flush()
            return
        if self.bar is None:
            from qembed.common.progress import Bar

            self.bar = Bar("embedding documents", p.total)
        self.bar.update(p.done - self.seen)
        self.seen = p.done
        self.bar.note(f"{rate:,.0f} tokens/s, {p.parts} parts")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@click.command(
    "embed-corpus",
    help="Embed a corpus (JSONL or Parquet: a file or a folder) into a Parquet dataset of id, vector, tokens, "
    "with the model identity in its metadata (or, with --index NAME, into a search index). A re-run embeds only the ids not yet written. "
    "Records with an id seen before are skipped (the first wins).",
)
@click.argument("input_path", metavar="INPUT")
@click.option(
    "--out", "out", type=click.Path(path_type=Path), default=None, help="Output folder (Parquet part files)."
)
@click.option(
    "--index",
    "index_name",
    default=None,
    help="Instead of --out: add the documents (id + text) to this qembed search index (one machine; resumes by content hash).",
)
@click.option(
    "--id-field", default="id", show_default=True, help="The field/column with each document's unique id."
)
@click.option("--text-field", default="text", show_default=True, help="The field/column with the text.")
@click.option(
    "--task",
    default="retrieval",
    show_default=True,
    help="Task preset whose prompt the documents get (with --input-type); 'none' for the model's default prompt.",
)
@click.option("--input-type", type=click.Choice(["document", "query"]), default="document", show_default=True)
@click.option("--prompt-name", default=None, help="A prompt of the model instead of the task preset.")
@click.option("--prompt", default=None, help="A literal prefix instead of the task preset.")
@click.option("--instruction", default=None, help="A free instruction instead of the task preset.")
@click.option("--dimensions", type=int, default=None, help="Matryoshka dimensions.")
@click.option(
    "--batch-tokens",
    type=int,
    default=None,
    help="Tokens gathered per embedding step (Ray: per actor batch, sized in rows from a sample). Default 32768.",
)
@click.option(
    "--commit-every",
    type=int,
    default=None,
    help="Rows per part file: what a killed run can lose at most. Default 4096.",
)
@click.option(
    "--overwrite", is_flag=True, help="Delete the output's existing parts and embed everything again."
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    help="Run on Ray: a cluster address (ray://head:10001, auto) or 'local'.",
)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="With --ray: embedder actors (each loads the model once).",
)
@click.option(
    "--cpus-per-worker",
    type=float,
    default=1.0,
    show_default=True,
    help="With --ray: CPUs each actor reserves (and its torch threads).",
)
@click.option(
    "--gpus-per-worker",
    type=float,
    default=0.0,
    show_default=True,
    help="With --ray: GPUs each actor reserves.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@settings_options(CORPUS_FIELDS)
def embed_corpus_cmd(input_path: str, out: Path | None, index_name: str | None, id_field: str, text_field: str, task: str, input_type: str,
                     prompt_name: str | None, prompt: str | None, instruction: str | None, dimensions: int | None,
                     batch_tokens: int | None, commit_every: int | None, overwrite: bool, ray_address: str | None,
                     workers: int, cpus_per_worker: float, gpus_per_worker: float, as_json: bool,
                     **values: Any) -> None:  # fmt: skip
    from qembed.cli.main import setup_logging
    from qembed.corpus.job import DEFAULT_BATCH_TOKENS, DEFAULT_COMMIT_EVERY, CorpusOptions, run_local
    from qembed.corpus.output import CorpusOutput
    from qembed.corpus.records import CorpusInput, Fields

    setup_logging("warning")
    if (out is None) == (index_name is None):
        raise click.UsageError("give --out OUTPUT (a Parquet dataset) or --index NAME (a search index).")
    if index_name is not None:
        _index(input_path, index_name, id_field, text_field, commit_every, ray_address, as_json, values)
        return
    assert out is not None
    progress = _Progress()
    try:
        source = CorpusInput.of(input_path, Fields(id_field, text_field))
        output = CorpusOutput(out)
        options = CorpusOptions(
            task=None if task.lower() == "none" else task,
            input_type=input_type,  # type: ignore[arg-type]
            prompt_name=prompt_name,
            prompt=prompt,
            instruction=instruction,
            dimensions=dimensions,
        )
        options.choices()  # conflicting prompt flags fail before the model loads
        settings = build_settings(values)
        batch_tokens = batch_tokens or DEFAULT_BATCH_TOKENS
        commit_every = commit_every or DEFAULT_COMMIT_EVERY
        try:
            if ray_address:
                from qembed.corpus.ray_job import run_ray

                report = run_ray(
                    ray_address, settings, source, output, options, workers=workers, cpus_per_worker=cpus_per_worker,
                    gpus_per_worker=gpus_per_worker, batch_tokens=batch_tokens, commit_every=commit_every,
                    overwrite=overwrite, progress=progress,
                )  # fmt: skip
            else:
                from qembed.embedding.embedder import Embedder

                report = run_local(
                    Embedder(settings=settings), source, output, options, batch_tokens=batch_tokens,
                    commit_every=commit_every, overwrite=overwrite, progress=progress,
                )  # fmt: skip
        except KeyboardInterrupt:
            progress.close()
            click.secho(
                f"interrupted: {out} holds only whole parts; run the same command again to embed the rest.",
                fg="yellow",
                err=True,
            )
            raise SystemExit(130) from None
        finally:
            progress.close()
    except QembedError as exc:
        fail(exc)
    if as_json:
        click.echo(json.dumps({**report.to_dict(), "out": str(out)}))
    else:
        click.echo(f"{report.summary()}.")


def _index(
    input_path: str,
    index_name: str,
    id_field: str,
    text_field: str,
    commit_every: int | None,
    ray_address: str | None,
    as_json: bool,
    values: dict[str, Any],
) -> None:
    """``--index NAME``: the documents through the search index's own flow (``qembed.corpus.index_job``)."""
    from qembed.cli.search import _Progress as IndexProgress
    from qembed.corpus.index_job import run_index
    from qembed.corpus.records import CorpusInput, Fields

    progress = IndexProgress()
    try:
        if ray_address:
            raise QembedError(
                "--index runs on one machine; with --ray write a Parquet dataset (--out) and load it from there.",
                param="index",
            )
        source = CorpusInput.of(input_path, Fields(id_field, text_field))
        settings = build_settings({**values, "index": index_name})
        try:
            report, duplicates, stats = run_index(
                settings, source, index_name, commit_every=commit_every or 256, progress=progress
            )
        finally:
            progress.close()
    except QembedError as exc:
        fail(exc)
    if as_json:
        body = {
            **report.to_dict(),
            "duplicates": duplicates,
            "index": {"documents": stats.documents, "chunks": stats.chunks},
        }
        click.echo(json.dumps(body))
    else:
        dup = f"; {duplicates} duplicate ids skipped (first record wins)" if duplicates else ""
        click.echo(
            f"{report.summary()}{dup}. Index {index_name!r} now holds {stats.documents} documents, {stats.chunks} chunks."
        )


def register(group: click.Group) -> None:
    group.add_command(embed_corpus_cmd)
