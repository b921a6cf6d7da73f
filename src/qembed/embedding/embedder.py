"""The public Python API: ``Embedder("qwen3-0.6b").encode(texts, ...)``.

An encode call runs three stages, which the server's queue also uses one by one so that
inputs of many requests can share model batches:

1. ``prepare``: validate options, apply the prompt, tokenize, cut long inputs into
   windows (``qembed.encode.windows``);
2. ``run``: one padded batch of windows through the backend and pooling;
3. ``finish``: windows back into one vector per input (``qembed.encode.assemble``).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qembed.embedding.cache import CachedCall, EmbeddingCache, namespace
from qembed.encode.assemble import assemble
from qembed.encode.batching import pad_windows, plan_batches
from qembed.encode.inputs import Inputs, check_vocabulary, parse_inputs
from qembed.encode.options import EncodeDefaults, EncodeOptions, ResolvedOptions, check_dimensions
from qembed.encode.windows import Window, plan_windows
from qembed.errors import ForeignTokenIds, InputError
from qembed.model.backends import load_backend
from qembed.model.backends.int8.recipes import Int8Options
from qembed.model.pipeline import MRL_MIN_DIMENSIONS, PipelineSpec, load_pipeline
from qembed.model.sources import ResolvedModel, resolve_model
from qembed.model.tokenization import TextTokenizer
from qembed.settings import DEFAULT_BATCH_SIZE, Settings

log = logging.getLogger(__name__)

RawInputs = str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]] | Inputs


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

    def tokens_per_input(self) -> list[int]:
        """Tokens each input cost (sum of its windows, special tokens and prompt included)."""
        out = [0] * self.n_inputs
        for window in self.windows:
            out[window.owner] += len(window.ids)
        return out


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

    def __init__(
        self, model: str | None = None, *, settings: Settings | None = None, **overrides: Any
    ) -> None:
        base = settings or Settings()
        updates = dict(overrides)
        if model is not None:
            updates["model"] = model
        self.settings = base.overlay(
            **updates
        )  # validated: a misspelt or bad setting fails before anything loads
        s = self.settings
        self.resolved: ResolvedModel = resolve_model(s.model, source=s.source, revision=s.revision)
        self.spec: PipelineSpec = load_pipeline(self.resolved.path, model_id=self.resolved.model_id)
        self.tokenizer = TextTokenizer(self.resolved.path, self.spec)
        self.backend = load_backend(
            s.backend,
            self.resolved.path,
            self.spec,
            device=s.device,
            dtype=s.dtype,
            threads=s.threads,
            quantize=s.quantize,
            export_dir=s.export_dir,
            int8=Int8Options.from_settings(s),
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
        self.defaults = EncodeDefaults(
            model_id=self.resolved.model_id,
            long_text=s.long_text,
            truncation_side=s.truncation_side,
            force_dimensions=s.force_dimensions,
        )
        # LRU embedding cache (cache_size / cache_dir; None when off): see qembed.embedding.cache.
        self.cache: EmbeddingCache | None = EmbeddingCache.from_settings(s, self._cache_namespace)

    def _cache_namespace(self) -> str:
        return namespace(
            self.resolved.path,
            backend=self.backend.name,
            dtype=self.backend.dtype,
            quantize=self.settings.quantize,
            max_tokens=self.max_tokens,
            chunk_overlap=self.chunk_overlap,
        )

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
    def resolve(
        self, options: EncodeOptions | ResolvedOptions | None = None, **kwargs: Any
    ) -> ResolvedOptions:
        """The options of one call (``EncodeOptions`` or its keyword arguments), checked
        against this model and the configured defaults; raises ``InputError``."""
        if isinstance(options, ResolvedOptions):
            return options
        if options is None:
            options = EncodeOptions.of(**kwargs)
        elif kwargs:
            raise InputError("Give the options either as EncodeOptions or as keyword arguments, not both.")
        return options.resolve(self.spec, self.defaults)

    def parse(self, inputs: RawInputs) -> Inputs:
        """The inputs of one call, classified and checked (token ids against the vocabulary, and
        that they are this tokenizer's); ``Inputs`` this embedder checked already pass as they are."""
        if isinstance(inputs, Inputs) and inputs.checked:
            return inputs
        parsed = parse_inputs(inputs)
        check_vocabulary(parsed, self.tokenizer.vocab_size)
        if parsed.tokenized and not self.settings.allow_foreign_token_ids:
            for i, ids in enumerate(parsed.items):
                if not self.tokenizer.is_canonical(ids):  # type: ignore[arg-type]
                    raise ForeignTokenIds(
                        f"{parsed.label(i)} is not a tokenization by {self.info.model_id}'s tokenizer (decoding and "
                        "re-encoding it gives other ids): these look like another tokenizer's ids. LangChain's "
                        "OpenAIEmbeddings sends tiktoken ids by default: pass check_embedding_ctx_length=False so it "
                        "sends the text. To embed such ids anyway, start qembed with --allow-foreign-token-ids.",
                        param="input",
                    )
        return dataclasses.replace(parsed, checked=True)

    def begin(
        self, inputs: RawInputs, options: EncodeOptions | ResolvedOptions | None = None, **kwargs: Any
    ) -> tuple[ResolvedOptions, CachedCall]:
        """Options and inputs checked, and the cache asked: what is left for the model
        (``CachedCall.todo``). The Python API and the server both start a call here."""
        resolved = self.resolve(options, **kwargs)
        return resolved, CachedCall.begin(self.cache, self.parse(inputs), resolved)

    def check_dimensions(self, dimensions: int | None) -> int | None:
        return check_dimensions(dimensions, self.spec, self.defaults)

    def _content(self, inputs: Inputs, prompt: str) -> tuple[list[list[int]], list[int]]:
        """Per input: content ids (prompt first) and the prompt's token count."""
        prompt_ids = list(self.tokenizer.prompt_ids(prompt))
        if not inputs.tokenized:
            texts = inputs.texts
            if not prompt:
                content = self.tokenizer.content_ids(texts)
                return content, [0] * len(content)
            # prompt + text in one pass: exactly the ids the reference gives.
            content = self.tokenizer.content_ids([prompt + t for t in texts])
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
                    content[i] = prompt_ids + self.tokenizer.content_ids([texts[i]])[0]
                    lens.append(prefix)
                else:
                    lens.append(
                        next(
                            (k for k, (a, b) in enumerate(zip(ids, prompt_ids, strict=False)) if a != b),
                            min(len(ids), prefix),
                        )
                    )
            return content, lens
        content, lens = [], []
        for item in inputs.token_ids:
            ids = list(item)
            if self.tokenizer.is_wrapped(ids):  # already a full model input (e.g. from /tokenize)
                h, t = len(self.tokenizer.special.head), len(self.tokenizer.special.tail)
                ids = ids[h : len(ids) - t]
            content.append(prompt_ids + ids)
            lens.append(len(prompt_ids))
        return content, lens

    def prepare(
        self, inputs: RawInputs, options: EncodeOptions | ResolvedOptions | None = None, **kwargs: Any
    ) -> Prepared:
        """Validate and tokenize; raises ``InputError`` with a message that says what to change."""
        resolved = self.resolve(options, **kwargs)
        parsed = self.parse(inputs)
        content, prefix_lens = self._content(parsed, resolved.prefix)
        windows: list[Window] = []
        for i, (ids, plen) in enumerate(zip(content, prefix_lens, strict=True)):
            limit = self.max_tokens
            if resolved.max_tokens is not None:
                # a smaller window for this call, but never one without room for the special
                # tokens, the prompt and one token of content (vLLM's truncate_prompt_tokens=1 is no error)
                limit = min(
                    self.max_tokens, max(resolved.max_tokens, self.tokenizer.special.count + plen + 1)
                )
            windows.extend(
                plan_windows(
                    ids,
                    plen,
                    owner=i,
                    special=self.tokenizer.special,
                    limit=limit,
                    policy=resolved.long_text,
                    side=resolved.truncation_side,
                    overlap=self.chunk_overlap,
                    exclude_prompt=not self.spec.include_prompt,
                    label=parsed.label(i),
                )
            )
        return Prepared(windows, len(content), resolved.normalize, resolved.dimensions)

    # -- stage 2: run ----------------------------------------------------------------------
    def run(self, windows: Sequence[Window]) -> np.ndarray:
        """One model batch: windows -> pooled (not normalized) float32 vectors."""
        ids, mask, skip = pad_windows(windows, pad_id=self.tokenizer.pad_id, side=self.spec.padding_side)
        return self.backend.embed(ids, mask, skip)

    # -- stage 3: finish -------------------------------------------------------------------
    def finish(self, prepared: Prepared, vectors: np.ndarray) -> np.ndarray:
        return assemble(
            prepared.windows,
            vectors,
            n_inputs=prepared.n_inputs,
            normalize=prepared.normalize,
            dimensions=prepared.dimensions,
        )

    # -- all three -----------------------------------------------------------------------
    def encode_with_usage(
        self,
        inputs: RawInputs,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_batch_tokens: int | None = None,
        show_progress_bar: bool = False,
        **options: Any,
    ) -> EncodeResult:
        resolved, call = self.begin(inputs, **options)
        if call.todo is None:  # every input was in the cache
            return EncodeResult(*call.finish(None, []))
        prepared = self.prepare(call.todo, resolved)
        vectors = self._run_prepared(prepared, batch_size, max_batch_tokens, show_progress_bar)
        return EncodeResult(*call.finish(vectors, prepared.tokens_per_input()))

    def _run_prepared(
        self, prepared: Prepared, batch_size: int, max_batch_tokens: int | None, show_progress_bar: bool
    ) -> np.ndarray:
        """Length-sorted batches under the token budget through ``run``, then ``finish``."""
        windows = prepared.windows
        budget = max_batch_tokens or batch_size * self.max_tokens
        batches = plan_batches([len(w.ids) for w in windows], max_tokens=budget, max_rows=batch_size)
        vectors = np.zeros((len(windows), self.spec.hidden_size), dtype=np.float32)
        from qembed.common.progress import Bar

        with Bar("embedding windows", len(windows), enabled=show_progress_bar) as progress:
            for batch in batches:
                vectors[batch] = self.run([windows[i] for i in batch])
                progress.update(len(batch))
        return self.finish(prepared, vectors)

    def encode(self, inputs: RawInputs, **kwargs: Any) -> np.ndarray:
        """Texts (or token id lists) -> float32 array [n, dim] (1-D for a single string).

        Options: prompt_name, prompt, instruction, task, input_type ("query"/"document"),
        dimensions, normalize, long_text ("chunk"/"truncate"/"error"), truncation_side,
        batch_size, max_batch_tokens, show_progress_bar.
        """
        result = self.encode_with_usage(inputs, **kwargs).vectors
        return (
            result[0] if isinstance(inputs, str) or (isinstance(inputs, Inputs) and inputs.single) else result
        )

    def tokenize(
        self, inputs: RawInputs, options: EncodeOptions | ResolvedOptions | None = None, **kwargs: Any
    ) -> list[list[int]]:
        """The token ids of each input as the model reads it: special tokens + prompt + the
        whole content, *untruncated*, for counting. (An input longer than the window is cut
        into windows, truncated or refused only when it is embedded.) Takes and validates the
        options of ``prepare``."""
        resolved = self.resolve(options, **kwargs)
        content, _ = self._content(self.parse(inputs), resolved.prefix)
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
