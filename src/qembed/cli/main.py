"""The ``qembed`` command. Each subcommand parses flags into Settings and calls one layer below.

Subcommands live in their own modules (``qembed.cli.<name>``) and are attached here, so
that this file stays a table of contents.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from qembed.cli.options import build_settings, settings_options
from qembed.errors import QembedError

app = typer.Typer(help="qembed: self-hosted text embeddings (Qwen3-Embedding and any sentence-transformers model).", no_args_is_help=True)
dev_app = typer.Typer(help="Developer tools: fixture models for tests and benchmarks.", no_args_is_help=True)
app.add_typer(dev_app, name="dev")

MODEL_FIELDS = ["model", "source", "revision", "backend", "quantize", "int8_min_cosine", "int8_smoothquant", "int8_keep", "int8_activations", "device", "dtype", "threads", "max_tokens", "long_text", "truncation_side", "chunk_overlap", "force_dimensions"]


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def fail(exc: QembedError) -> None:
    """Print a qembed error as one message (no stack trace) and exit 2."""
    typer.secho(f"error: {exc.message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@app.command()
def download(
    model: Annotated[str, typer.Argument(help="Hub id or alias (qwen3-0.6b, qwen3-4b, qwen3-8b, minilm).")],
    dir: Annotated[Path | None, typer.Option("--dir", help="Write the folder here (default: the hub cache).")] = None,
    source: Annotated[str, typer.Option(help="auto (Hugging Face, then ModelScope), huggingface or modelscope.")] = "auto",
    revision: Annotated[str | None, typer.Option(help="Branch, tag or commit.")] = None,
) -> None:
    """Fetch a complete model folder and check it."""
    from qembed.model.sources import download as fetch

    setup_logging()
    try:
        resolved = fetch(model, local_dir=dir, source=source, revision=revision)
    except QembedError as exc:
        fail(exc)
    typer.echo(str(resolved.path))


@dev_app.command("make-model")
def make_model_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder to write.")],
    shape: Annotated[str, typer.Option(help="tiny (2 layers, hidden 64), small (4 layers, hidden 256) or qwen3-0.6b (full shape).")] = "tiny",
    seed: Annotated[int, typer.Option(help="Seed of the random weights.")] = 0,
    old_tokenizer: Annotated[bool, typer.Option(help="Omit tokenizer.json (an old revision that does not append <|endoftext|>).")] = False,
    outliers: Annotated[
        float,
        typer.Option(help="Add real-LLM activation outliers of this strength (1 = the documented recipe; 0 = none)."),
    ] = 0.0,
) -> None:
    """Write a Qwen3-Embedding-shaped folder: real config and tokenizer, seeded random weights."""
    from qembed.dev.make_model import make_model

    path = make_model(out, shape=shape, seed=seed, append_eos=not old_tokenizer, outliers=outliers)
    typer.echo(str(path))


@click.command("info", help="Load a model and print what qembed knows about it (JSON).")
@settings_options(MODEL_FIELDS)
def info_cmd(**values: Any) -> None:
    from dataclasses import asdict

    from qembed.embedding.embedder import Embedder

    settings = build_settings(values)
    setup_logging("warning")
    try:
        embedder = Embedder(settings=settings)
    except QembedError as exc:
        fail(exc)
    typer.echo(json.dumps(asdict(embedder.info), indent=2, ensure_ascii=False))


@click.command("embed", help="Embed texts (arguments, or one per line on stdin) and print JSON lines.")
@click.argument("texts", nargs=-1)
@click.option("--prompt-name", default=None, help="A prompt of the model, e.g. query.")
@click.option("--instruction", default=None, help="Free instruction: 'Instruct: {instruction}\\nQuery:{text}'.")
@click.option("--task", default=None, help="Task preset (retrieval, sts, code_retrieval, ...).")
@click.option("--input-type", type=click.Choice(["query", "document"]), default="query")
@click.option("--dimensions", type=int, default=None, help="Matryoshka dimensions.")
@settings_options(MODEL_FIELDS)
def embed_cmd(texts: tuple[str, ...], prompt_name: str | None, instruction: str | None, task: str | None, input_type: str, dimensions: int | None, **values: Any) -> None:
    from qembed.embedding.embedder import Embedder

    settings = build_settings(values)
    setup_logging("warning")
    lines = list(texts) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    try:
        embedder = Embedder(settings=settings)
        vectors = embedder.encode(lines, prompt_name=prompt_name, instruction=instruction, task=task, input_type=input_type, dimensions=dimensions)
    except QembedError as exc:
        fail(exc)
    for text, vector in zip(lines, vectors, strict=True):
        typer.echo(json.dumps({"text": text, "embedding": [round(float(x), 7) for x in vector]}, ensure_ascii=False))


def _attach(group: click.Group) -> None:
    """Subcommands that live in their own modules."""
    group.add_command(info_cmd)
    group.add_command(embed_cmd)
    for module_name in ("serve", "eval", "bench", "search"):
        try:
            module = __import__(f"qembed.cli.{module_name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"qembed.cli.{module_name}":
                raise
            continue
        module.register(group)


def cli() -> click.Group:
    group = typer.main.get_group(app)
    _attach(group)
    return group


def main() -> None:
    try:
        cli()(prog_name="qembed")
    # typer vendors its own click, so it does not handle the exceptions of the commands
    # written with plain click (info, embed, serve, ...): --help and usage errors.
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(1)


if __name__ == "__main__":
    main()
