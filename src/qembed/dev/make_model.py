"""Build Qwen3-Embedding-shaped model folders with seeded random weights.

Real weights cannot be downloaded everywhere (CI, air-gapped machines), but the real
config and tokenizer are small and public (Apache-2.0), so we ship them in
``qembed/dev/assets/qwen3`` and generate the weights:

- ``tiny``: 2 layers, hidden 64, the REAL tokenizer; fast tests of tokenization, pooling,
  padding and parity (the weights carry no meaning).
- ``qwen3-0.6b``: the full Qwen3-Embedding-0.6B shape (28 layers, hidden 1024): the true
  compute cost, for benchmarks. Random weights: never read a similarity from it as quality.

The folder is what the hub repo holds: config.json, model.safetensors, tokenizer.json
(rebuilt with the post-processor that appends ``<|endoftext|>`` = 151643),
tokenizer_config.json, vocab.json, merges.txt, modules.json, 1_Pooling/config.json,
config_sentence_transformers.json.
"""

from __future__ import annotations

import gzip
import json
import shutil
from importlib import resources
from pathlib import Path

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
        single="$A:0 <|endoftext|>:0", pair="$A:0 $B:1 <|endoftext|>:1", special_tokens=[("<|endoftext|>", EOS_ID)]
    )
    tok.backend_tokenizer.save(str(out / "tokenizer.json"))


def make_model(out: Path, *, shape: str = "tiny", seed: int = 0, dtype: str | None = None, append_eos: bool = True) -> Path:
    """Write a complete Qwen3-Embedding-style folder to ``out`` and return it."""
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
    model = Qwen3Model(Qwen3Config(**{k: v for k, v in config.items() if k not in ("architectures", "torch_dtype")}))
    save_dtype = getattr(torch, dtype or ("float32" if shape == "tiny" else "bfloat16"))
    state = {k: v.detach().to(save_dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out
