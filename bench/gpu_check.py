"""CUDA check: parity with sentence-transformers on the GPU, batch invariance in bf16, and
throughput of qembed vs sentence-transformers on the full-shape Qwen3-Embedding-0.6B
(seeded random weights, real config and tokenizer: the true compute cost).

Run on a CUDA machine from the repo root:  PYTHONPATH=src python3 bench/gpu_check.py OUTDIR
Writes OUTDIR/gpu_check.json and prints a summary. Random weights: the cosines below are
agreement between implementations, never quality.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from qembed import Embedder
from qembed.dev.make_model import make_model

DEVICE = os.environ.get("QEMBED_CHECK_DEVICE", "cuda")
SHAPES = os.environ.get("QEMBED_CHECK_SHAPES", "tiny,full").split(",")


def sync() -> None:
    if DEVICE.startswith("cuda"):
        torch.cuda.synchronize()


TEXTS = [
    "Hello world",
    "你好",
    "The capital of China is Beijing.",
    "混合 mixed 中文 and English 文本 in one sentence",
    "def add(a, b):\n    return a + b\n",
    "a",
    "Gravity is a force that attracts two bodies towards each other. " * 20,
]


def cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def passages(embedder: Embedder, n: int, tokens: int, seed: int = 0) -> list[str]:
    """Texts of exactly `tokens` model tokens (specials included), from real-ish words."""
    rng = np.random.default_rng(seed)
    words = "the of and to in is was for on that with as by at from his her which or an were are this be had not but have they one all their been has more when who will no if out so said what up its about into than them can only other new some could time these two may then do first any my now such like our over man me even most made after also did many before must through back years where much your way well down should because each just those people how too little state good very make world still own see men work long get here between both life being under never day same another know while last might us great old year off come since against go came right used take three".split()
    out = []
    for _ in range(n):
        ids = embedder.tokenizer.content_ids([" ".join(rng.choice(words, tokens * 2))])[0][: tokens - 1]
        out.append(embedder.tokenizer.decode(ids))
    return out


def tokens_per_s(fn, texts: list[str], n_tokens: int, rounds: int = 3) -> float:
    fn(texts[:8])
    sync()
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        fn(texts)
        sync()
        best = max(best, n_tokens / (time.perf_counter() - t))
    return best


def main(out_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    out_dir.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "device": torch.cuda.get_device_name(0) if DEVICE.startswith("cuda") else DEVICE,
        "torch": torch.__version__,
    }
    tiny = make_model(Path("/tmp/qembed-gpu/tiny"), shape="tiny")
    folders = [("tiny", tiny)]
    if "full" in SHAPES:
        t = time.perf_counter()
        folders.append(("full", make_model(Path("/tmp/qembed-gpu/full"), shape="qwen3-0.6b")))
        report["make_full_s"] = round(time.perf_counter() - t, 1)
    for name, folder in folders:
        ours32 = Embedder(str(folder), device=DEVICE, dtype="float32")
        st32 = SentenceTransformer(str(folder), device=DEVICE, model_kwargs={"dtype": torch.float32})
        res = {}
        for label, kw in (("plain", {}), ("query", {"prompt_name": "query"})):
            a = ours32.encode(TEXTS, **kw)
            b = st32.encode(TEXTS, **kw, convert_to_numpy=True)
            res[f"fp32_{label}_min_cos"] = float(cos_rows(a, b).min())
        ours16 = Embedder(str(folder), device=DEVICE, dtype="bfloat16")
        st16 = SentenceTransformer(str(folder), device=DEVICE, model_kwargs={"dtype": torch.bfloat16})
        ref = st32.encode(TEXTS, convert_to_numpy=True)
        a16 = ours16.encode(TEXTS)
        res["bf16_ours_vs_fp32_min_cos"] = float(cos_rows(a16, ref).min())
        res["bf16_st_vs_fp32_min_cos"] = float(cos_rows(st16.encode(TEXTS, convert_to_numpy=True), ref).min())
        alone = np.stack([ours16.encode([t])[0] for t in TEXTS])
        res["bf16_alone_vs_batch_min_cos"] = float(cos_rows(alone, a16).min())
        res["finite"] = bool(np.isfinite(a16).all())
        report[name] = res
        print(name, json.dumps(res), flush=True)
        del ours32, st32
        if name == "full":
            for n, tokens in ((512, 128), (128, 512)):
                texts = passages(ours16, n, tokens)
                n_tok = sum(len(x) for x in ours16.tokenize(texts))
                for bs in (32, 128):
                    q = tokens_per_s(
                        lambda x, bs=bs, tokens=tokens, m=ours16: m.encode(
                            x, batch_size=bs, max_batch_tokens=bs * tokens
                        ),
                        texts,
                        n_tok,
                    )
                    s = tokens_per_s(lambda x, bs=bs, m=st16: m.encode(x, batch_size=bs), texts, n_tok)
                    report[f"{tokens}tok_bs{bs}"] = {
                        "qembed_tok_s": round(q),
                        "st_tok_s": round(s),
                        "ratio": round(q / s, 3),
                    }
                    print(tokens, bs, report[f"{tokens}tok_bs{bs}"], flush=True)
            one = passages(ours16, 1, 16)
            lat = []
            for _ in range(50):
                t = time.perf_counter()
                ours16.encode(one)
                sync()
                lat.append(time.perf_counter() - t)
            report["qembed_bf16_query16_p50_ms"] = round(1000 * float(np.median(lat)), 2)
    (out_dir / "gpu_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/qembed-gpu-out"))
