"""The ``qembed`` command. Each subcommand parses flags into Settings and calls one layer below.

Subcommands live in their own modules (``qembed.cli.<name>``) and are attached here, so
that this file stays a table of contents.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click

from qembed import __version__
from qembed.cli.options import build_settings, engine_fields, fail, settings_options
from qembed.errors import QembedError
from qembed.settings import CacheSettings


class _Group(click.Group):
    """Lists its commands in the order they were added (a table of contents), not sorted."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(
    "qembed",
    cls=_Group,
    no_args_is_help=True,
    help="qembed: self-hosted text embeddings (Qwen3-Embedding and any sentence-transformers model).",
)
@click.version_option(__version__, "--version", "-V", prog_name="qembed", message="%(prog)s %(version)s")
def app() -> None:
    pass


@click.group(
    "dev", cls=_Group, no_args_is_help=True, help="Developer tools: fixture models for tests and benchmarks."
)
def dev_app() -> None:
    pass


def setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


@app.command(
    "download",
    help="Fetch a complete model folder and check it.\n\nMODEL: Hub id or alias (qwen3-0.6b, qwen3-4b, qwen3-8b, minilm).",
)
@click.argument("model")
@click.option(
    "--dir",
    "dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Write the folder here (default: the hub cache).",
)
@click.option(
    "--source",
    default="auto",
    show_default=True,
    help="auto (Hugging Face, then ModelScope), huggingface or modelscope.",
)
@click.option("--revision", default=None, help="Branch, tag or commit.")
def download(model: str, dir: Path | None, source: str, revision: str | None) -> None:
    from qembed.model.sources import download as fetch

    setup_logging()
    try:
        resolved = fetch(model, local_dir=dir, source=source, revision=revision)
    except QembedError as exc:
        fail(exc)
    click.echo(str(resolved.path))


@dev_app.command(
    "make-model",
    help="Write a Qwen3-Embedding-shaped folder: real config and tokenizer, seeded random weights.",
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write.")
@click.option(
    "--shape",
    default="tiny",
    show_default=True,
    help="tiny (2 layers, hidden 64), small (4 layers, hidden 256) or qwen3-0.6b (full shape).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@click.option(
    "--old-tokenizer/--no-old-tokenizer",
    default=False,
    show_default=True,
    help="Omit tokenizer.json (an old revision that does not append <|endoftext|>).",
)
@click.option(
    "--outliers",
    type=float,
    default=0.0,
    show_default=True,
    help="Add real-LLM activation outliers of this strength (1 = the documented recipe; 0 = none).",
)
@click.option(
    "--kind",
    type=click.Choice(["embedding", "reranker", "cross-encoder"]),
    default="embedding",
    show_default=True,
    help="embedding (Qwen3-Embedding), reranker (Qwen3-Reranker: Qwen3ForCausalLM; name the folder *reranker*) "
    "or cross-encoder (one-label BERT; shapes tiny, minilm).",
)
def make_model_cmd(out: Path, shape: str, seed: int, old_tokenizer: bool, outliers: float, kind: str) -> None:
    from qembed.dev.make_model import make_cross_encoder, make_model, make_reranker

    try:
        if kind == "reranker":
            path = make_reranker(out, shape=shape, seed=seed)
        elif kind == "cross-encoder":
            path = make_cross_encoder(out, shape=shape, seed=seed)
        else:
            path = make_model(out, shape=shape, seed=seed, append_eos=not old_tokenizer, outliers=outliers)
    except ValueError as exc:  # an unknown shape for the kind
        raise click.BadParameter(str(exc), param_hint="--shape") from exc
    click.echo(str(path))


@click.command(
    "info",
    help="Load a model and print what qembed knows about it (JSON): the same fields as GET /info, plus its folder.",
)
@settings_options(engine_fields())
def info_cmd(**values: Any) -> None:
    from qembed.embedding.embedder import Embedder
    from qembed.server.schemas import ServedModel, describe
    from qembed.serving.service import default_max_batch_tokens

    setup_logging("warning")
    try:
        settings = build_settings(values)
        embedder = Embedder(settings=settings)
    except QembedError as exc:
        fail(exc)
    served = ServedModel.from_embedder(
        embedder.info, served_model_name=settings.served_model_name, requested=settings.model
    )
    tokens = settings.max_batch_tokens or default_max_batch_tokens(embedder.info.device)
    body = {
        **describe(embedder.info, settings, served, max_batch_tokens=tokens).model_dump(),
        "path": embedder.info.path,
    }
    click.echo(json.dumps(body, indent=2, ensure_ascii=False))


@click.command("embed", help="Embed texts (arguments, or one per line on stdin) and print JSON lines.")
@click.argument("texts", nargs=-1)
@click.option("--prompt-name", default=None, help="A prompt of the model, e.g. query.")
@click.option(
    "--instruction", default=None, help="Free instruction: 'Instruct: {instruction}\\nQuery:{text}'."
)
@click.option("--task", default=None, help="Task preset (retrieval, sts, code_retrieval, ...).")
@click.option("--input-type", type=click.Choice(["query", "document"]), default="query")
@click.option("--dimensions", type=int, default=None, help="Matryoshka dimensions.")
@settings_options(engine_fields(CacheSettings))
def embed_cmd(
    texts: tuple[str, ...],
    prompt_name: str | None,
    instruction: str | None,
    task: str | None,
    input_type: str,
    dimensions: int | None,
    **values: Any,
) -> None:
    from qembed.embedding.embedder import Embedder

    setup_logging("warning")
    lines = list(texts) or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    try:
        embedder = Embedder(settings=build_settings(values))
        vectors = embedder.encode(
            lines,
            prompt_name=prompt_name,
            instruction=instruction,
            task=task,
            input_type=input_type,
            dimensions=dimensions,
        )
    except QembedError as exc:
        fail(exc)
    for text, vector in zip(lines, vectors, strict=True):
        click.echo(
            json.dumps({"text": text, "embedding": [round(float(x), 7) for x in vector]}, ensure_ascii=False)
        )


def _attach(group: click.Group) -> None:
    """Subcommands that live in their own modules."""
    group.add_command(dev_app)
    group.add_command(info_cmd)
    group.add_command(embed_cmd)
    for module_name in ("serve", "eval", "bench", "search", "corpus"):
        try:
            module = __import__(f"qembed.cli.{module_name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"qembed.cli.{module_name}":
                raise
            continue
        module.register(group)


def cli() -> click.Group:
    if "info" not in app.commands:
        _attach(app)
    return app


def main() -> None:
    cli().main(prog_name="qembed")


if __name__ == "__main__":
    main()
