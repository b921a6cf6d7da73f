"""The public Python API: ``Embedder("qwen3-0.6b").encode(texts, ...)``.

An encode call runs three stages, which the server's queue also uses one by one so that
inputs of many requests can share model batches:

1. ``prepare``: validate options, apply the prompt, tokenize, cut long inputs into
   windows (``qembed.encode.windows``);
2. ``run``: one padded batch of windows through the backend and pooling;
3. ``finish``: windows back into one vector per input (``qembed.encode.assemble``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qembed.encode.assemble import assemble
from qembed.encode.batching import pad_windows, plan_batches
from qembed.embedding.cache import EmbeddingCache, encode_cached
from qembed.embedding.cache import namespace as cache_namespace
from qembed.encode.windows import Window, plan_windows
from qembed.errors import InputError
from qembed.model.backends import load_backend
from qembed.model.instructions import InputType, resolve_prompt
from qembed.model.pipeline import MRL_MIN_DIMENSIONS, PipelineSpec, load_pipeline
from qembed.model.sources import ResolvedModel, resolve_model
from qembed.model.tokenization import TextTokenizer
from qembed.settings import Settings

log = logging.getLogger(__name__)

Inputs = str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]]


@dataclass(frozen=True)
class ModelInfo:
    """Facts about the loaded model (always the model really loaded)."""

    model_id: str
    path: str
    source: str
    dimension: int
    max_tokens: int
    pooling: str
    normalize: bool
    prompts: dict[str, str]
    supports_mrl: bool
    min_dimensions: int
    model_type: str
    backend: str
    device: str
    dtype: str
    fallback_reason: str | None = None
    prompt_family: str = "none"  # qembed.model.families: what task presets give each side
    # int8 builds: the recipe and the quality gate's measurement (min/mean cosine to float32 on
    # the calibration set, the threshold); None for float models.
    quantization: dict[str, Any] | None = None


@dataclass
class Prepared:
    """An encode request after tokenization: its windows and how to finish them."""

    windows: list[Window]
    n_inputs: int
    normalize: bool
    dimensions: int | None
    prompt_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.prompt_tokens = sum(len(w.ids) for w in self.windows)


@dataclass(frozen=True)
class EncodeResult:
    vectors: np.ndarray
    prompt_tokens: int


def _quantization(backend: Any, threshold: float) -> dict[str, Any] | None:
    """What /info and reports say about an int8 build (its recipe and gate measurement)."""
    quality = getattr(backend, "quality", None)
    if quality is None:
        return None
    return {"recipe": getattr(backend, "recipe", None), "gate": {**quality, "threshold": threshold}}


class Embedder:
    """Load a model once; turn texts into vectors the way the reference implementation does."""

    def __init__(self, model: str | None = None, *, settings: Settings | None = None, **overrides: Any) -> None:
        base = settings or Settings()
        updates = dict(overrides)
        if model is not None:
            updates["model"] = model
        self.settings = base.model_copy(update=updates) if updates else base
        s = self.settings
        self.resolved: ResolvedModel = resolve_model(s.model, source=s.source, revision=s.revision)
        self.spec: PipelineSpec = load_pipeline(self.resolved.path, model_id=self.resolved.model_id)
        self.tokenizer = TextTokenizer(self.resolved.path, self.spec)
        self.backend = load_backend(
            s.backend, self.resolved.path, self.spec, device=s.device, dtype=s.dtype, threads=s.threads,
            quantize=s.quantize, export_dir=s.export_dir, int8=s.int8_options(),
        )
        self.max_tokens = s.max_tokens or self.spec.max_tokens
        if self.max_tokens <= self.tokenizer.special.count + 1:
            raise InputError(f"max_tokens={self.max_tokens} leaves no room for text.", param="max_tokens")
        self.chunk_overlap = s.chunk_overlap if s.chunk_overlap is not None else self.max_tokens // 8
        self.info = ModelInfo(
            model_id=self.resolved.model_id,
            path=str(self.resolved.path),
            source=self.resolved.source,
            dimension=self.spec.hidden_size,
            max_tokens=self.max_tokens,
            pooling=self.spec.pooling,
            normalize=self.spec.normalize,
            prompts=dict(self.spec.prompts),
            supports_mrl=self.spec.supports_mrl,
            min_dimensions=MRL_MIN_DIMENSIONS if self.spec.supports_mrl else self.spec.hidden_size,
            model_type=self.spec.model_type,
            backend=self.backend.name,
            device=self.backend.device,
            dtype=self.backend.dtype,
            fallback_reason=self.resolved.fallback_reason,
            prompt_family=self.spec.prompt_family,
            quantization=_quantization(self.backend, s.int8_min_cosine),
        )
        # LRU embedding cache (cache_size / cache_dir; None when off): see qembed.embedding.cache.
        self.cache: EmbeddingCache | None = EmbeddingCache.from_settings(s, lambda: cache_namespace(self))

    # -- facts --------------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        return self.spec.hidden_size

    @property
    def prompts(self) -> dict[str, str]:
        return dict(self.spec.prompts)

    def __repr__(self) -> str:
        i = self.info
        return f"Embedder({i.model_id!r}, dim={i.dimension}, pooling={i.pooling}, max_tokens={i.max_tokens}, {i.device}/{i.dtype})"

    # -- stage 1: prepare -----------------------------------------------------------------
    def check_dimensions(self, dimensions: int | None) -> int | None:
        if dimensions is None:
            return None
        if isinstance(dimensions, bool) or not isinstance(dimensions, int):
            raise InputError(f"dimensions must be an integer, not {dimensions!r}.", param="dimensions")
        hidden = self.spec.hidden_size
        low = MRL_MIN_DIMENSIONS if self.spec.supports_mrl else hidden
        if self.settings.force_dimensions:
            low = 1
        if not low <= dimensions <= hidden:
            why = "" if self.spec.supports_mrl or self.settings.force_dimensions else (
                f" ({self.info.model_id} was not trained for Matryoshka truncation; start qembed with "
                "--force-dimensions to truncate anyway)"
            )
            raise InputError(f"dimensions must be between {low} and {hidden} for {self.info.model_id}, not {dimensions}{why}.", param="dimensions")
        return None if dimensions == hidden else dimensions

    def _content(self, inputs: Inputs, prompt: str) -> tuple[list[list[int]], list[int]]:
        """Per input: content ids (prompt first) and the prompt's token count."""
        if isinstance(inputs, str):
            inputs = [inputs]
        items = list(inputs)
        if not items:
            raise InputError("input is empty; send at least one text.", param="input")
        if all(isinstance(x, int) and not isinstance(x, bool) for x in items):
            items = [items]  # one tokenized input
        prompt_ids = list(self.tokenizer.prompt_ids(prompt))
        if all(isinstance(x, str) for x in items):
            for i, text in enumerate(items):
                if not text:
                    raise InputError(f"input[{i}] is an empty string; every input needs at least one character.", param="input")
            if not prompt:
                content = self.tokenizer.content_ids(items)
                return content, [0] * len(content)
            # prompt + text in one pass: exactly the ids the reference gives.
            content = self.tokenizer.content_ids([prompt + t for t in items])
            prefix = len(prompt_ids)
            budget = self.max_tokens - self.tokenizer.special.count
            lens = []
            for i, ids in enumerate(content):
                if ids[:prefix] == prompt_ids:
                    lens.append(prefix)
                    continue
                # The text's first characters merged with the prompt's last token (e.g. "Query:" + "(x").
                if len(ids) > budget:
                    # Windows repeat the prompt: tokenize it apart so that every window gets all of it.
                    content[i] = prompt_ids + self.tokenizer.content_ids([items[i]])[0]
                    lens.append(prefix)
                else:
                    lens.append(next((k for k, (a, b) in enumerate(zip(ids, prompt_ids, strict=False)) if a != b), min(len(ids), prefix)))
            return content, lens
        if any(isinstance(x, str) for x in items):
            i = next(i for i, x in enumerate(items) if isinstance(x, str) != isinstance(items[0], str))
            kinds = ("a string", "not a string") if isinstance(items[i], str) else ("not a string", "a string")
            raise InputError(
                f"input[{i}] is {kinds[0]} but input[0] is {kinds[1]}; send either texts or lists of token ids, not both.",
                param="input",
            )
        content, lens = [], []
        for i, ids in enumerate(items):
            if isinstance(ids, str) or not isinstance(ids, Sequence) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
                raise InputError(f"input[{i}] must be a string or a list of token ids; mixed inputs are not allowed.", param="input")
            if not ids:
                raise InputError(f"input[{i}] is an empty token list.", param="input")
            bad = next((t for t in ids if not 0 <= t < self.tokenizer.vocab_size), None)
            if bad is not None:
                raise InputError(f"input[{i}] has token id {bad}, outside the vocabulary [0, {self.tokenizer.vocab_size}).", param="input")
            ids = list(ids)
            if self.tokenizer.is_wrapped(ids):  # already a full model input (e.g. from /tokenize)
                h, t = len(self.tokenizer.special.head), len(self.tokenizer.special.tail)
                ids = ids[h : len(ids) - t]
            content.append(prompt_ids + ids)
            lens.append(len(prompt_ids))
        return content, lens

    def _long_text_policy(self, long_text: str | None, truncation_side: str | None) -> tuple[str, str]:
        policy = long_text or self.settings.long_text
        side = truncation_side or self.settings.truncation_side
        if policy not in ("chunk", "truncate", "error"):
            raise InputError(f"long_text must be chunk, truncate or error, not {policy!r}.", param="long_text")
        if side not in ("right", "left"):
            raise InputError(f"truncation_side must be right or left, not {side!r}.", param="truncation_side")
        return policy, side

    def prepare(
        self,
        inputs: Inputs,
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        instruction: str | None = None,
        task: str | None = None,
        input_type: InputType = "query",
        dimensions: int | None = None,
        normalize: bool | None = None,
        long_text: str | None = None,
        truncation_side: str | None = None,
    ) -> Prepared:
        """Validate and tokenize; raises ``InputError`` with a message that says what to change."""
        prefix = resolve_prompt(self.spec, prompt_name=prompt_name, prompt=prompt, instruction=instruction, task=task, input_type=input_type)
        dims = self.check_dimensions(dimensions)
        policy, side = self._long_text_policy(long_text, truncation_side)
        content, prefix_lens = self._content(inputs, prefix)
        windows: list[Window] = []
        for i, (ids, plen) in enumerate(zip(content, prefix_lens, strict=True)):
            windows.extend(
                plan_windows(
                    ids, plen, owner=i, special=self.tokenizer.special, limit=self.max_tokens, policy=policy,
                    side=side, overlap=self.chunk_overlap, exclude_prompt=not self.spec.include_prompt,
                )
            )
        return Prepared(windows, len(content), self.spec.normalize if normalize is None else bool(normalize), dims)

    # -- stage 2: run ----------------------------------------------------------------------
    def run(self, windows: Sequence[Window]) -> np.ndarray:
        """One model batch: windows -> pooled (not normalized) float32 vectors."""
        ids, mask, skip = pad_windows(windows, pad_id=self.tokenizer.pad_id, side=self.spec.padding_side)
        return self.backend.embed(ids, mask, skip)

    # -- stage 3: finish -------------------------------------------------------------------
    def finish(self, prepared: Prepared, vectors: np.ndarray) -> np.ndarray:
        return assemble(prepared.windows, vectors, n_inputs=prepared.n_inputs, normalize=prepared.normalize, dimensions=prepared.dimensions)

    # -- all three -----------------------------------------------------------------------
    def encode_with_usage(
        self, inputs: Inputs, *, batch_size: int = 32, max_batch_tokens: int | None = None, show_progress_bar: bool = False, **options: Any
    ) -> EncodeResult:
        def run(prepared: Prepared) -> np.ndarray:
            return self._run_prepared(prepared, batch_size, max_batch_tokens, show_progress_bar)

        if self.cache is not None:  # only the inputs not seen before run (qembed.embedding.cache)
            return EncodeResult(*encode_cached(self.cache, self, inputs, run, **options))
        prepared = self.prepare(inputs, **options)
        return EncodeResult(run(prepared), prepared.prompt_tokens)

    def _run_prepared(self, prepared: Prepared, batch_size: int, max_batch_tokens: int | None, show_progress_bar: bool) -> np.ndarray:
        """Length-sorted batches under the token budget through ``run``, then ``finish``."""
        windows = prepared.windows
        budget = max_batch_tokens or batch_size * self.max_tokens
        batches = plan_batches([len(w.ids) for w in windows], max_tokens=budget, max_rows=batch_size)
        vectors = np.zeros((len(windows), self.spec.hidden_size), dtype=np.float32)
        progress = None
        if show_progress_bar:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(windows), desc="embedding", unit="window")
        for batch in batches:
            vectors[batch] = self.run([windows[i] for i in batch])
            if progress is not None:
                progress.update(len(batch))
        if progress is not None:
            progress.close()
        return self.finish(prepared, vectors)

    def encode(self, inputs: Inputs, **kwargs: Any) -> np.ndarray:
        """Texts (or token id lists) -> float32 array [n, dim] (1-D for a single string).

        Options: prompt_name, prompt, instruction, task, input_type ("query"/"document"),
        dimensions, normalize, long_text ("chunk"/"truncate"/"error"), truncation_side,
        batch_size, max_batch_tokens, show_progress_bar.
        """
        result = self.encode_with_usage(inputs, **kwargs).vectors
        return result[0] if isinstance(inputs, str) else result

    def tokenize(
        self,
        inputs: Inputs,
        *,
        prompt_name: str | None = None,
        prompt: str | None = None,
        instruction: str | None = None,
        task: str | None = None,
        input_type: InputType = "query",
        dimensions: int | None = None,
        normalize: bool | None = None,
        long_text: str | None = None,
        truncation_side: str | None = None,
    ) -> list[list[int]]:
        """The token ids of each input as the model reads it: special tokens + prompt + the
        whole content, *untruncated*, for counting. (An input longer than the window is cut
        into windows, truncated or refused only when it is embedded.) Takes and validates the
        options of ``prepare``."""
        prefix = resolve_prompt(self.spec, prompt_name=prompt_name, prompt=prompt, instruction=instruction, task=task, input_type=input_type)
        self.check_dimensions(dimensions)
        self._long_text_policy(long_text, truncation_side)
        content, _ = self._content(inputs, prefix)
        return [self.tokenizer.wrap(ids) for ids in content]

    def similarity(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return similarity(a, b)


def similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity matrix between two sets of vectors."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float32))
    b = np.atleast_2d(np.asarray(b, dtype=np.float32))
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T
