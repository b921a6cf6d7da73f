"""`qembed download` against a hub-compatible HTTP server on 127.0.0.1 (HF_ENDPOINT)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from qembed import Embedder
from tests.model.hub_server import HubServer, use_hub

REPO = "Org/Qwen3-Embedding-tiny"
TEXTS = ["Hello world", "你好", "The capital of China is Beijing."]


def _model_files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(folder).parts
    }


def _invoke(*args: str):
    from qembed.cli.main import cli

    return CliRunner().invoke(cli(), list(args))


@pytest.fixture
def hub(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setitem(sys.modules, "modelscope", None)
    with HubServer({REPO: tiny_model_dir}) as server:
        use_hub(monkeypatch, endpoint=server.url, home=tmp_path / "hf-home")
        yield server


def test_download_into_a_folder(
    hub: HubServer, tmp_path: Path, tiny_model_dir: Path, tiny_embedder: Embedder
) -> None:
    target = tmp_path / "downloaded"
    result = _invoke("download", REPO, "--dir", str(target))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == str(target.resolve())
    assert _model_files(target) == _model_files(tiny_model_dir)
    assert hub.requested("GET", "/resolve/")  # it really came over HTTP
    embedder = Embedder(str(target))
    assert embedder.info.source == "local"
    np.testing.assert_array_equal(embedder.encode(TEXTS), tiny_embedder.encode(TEXTS))


def test_download_into_the_cache_then_load_offline(
    hub: HubServer, tmp_path: Path, tiny_embedder: Embedder
) -> None:
    result = _invoke("download", REPO)
    assert result.exit_code == 0, result.output
    cached = Path(result.stdout.strip().splitlines()[-1])
    assert cached.is_relative_to(tmp_path / "hf-home" / "hub")
    hub.stop()  # no network from here on: a cache hit or a failure
    embedder = Embedder(REPO)
    assert embedder.info.model_id == REPO and embedder.info.source == "huggingface"
    assert Path(embedder.info.path) == cached
    np.testing.assert_array_equal(embedder.encode(TEXTS), tiny_embedder.encode(TEXTS))


def test_interrupted_download_resumes_with_a_range_request(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with HubServer({REPO: tiny_model_dir}, cut_once=("model.safetensors",)) as server:
        use_hub(monkeypatch, endpoint=server.url, home=tmp_path / "hf-home")
        result = _invoke("download", REPO, "--dir", str(tmp_path / "d"))
        assert result.exit_code == 0, result.output
        ranged = [
            h for _, _, h in server.requested("GET", "model.safetensors") if "range" in {k.lower() for k in h}
        ]
    assert ranged, "the second attempt should resume with a Range request"
    assert (tmp_path / "d" / "model.safetensors").read_bytes() == (
        tiny_model_dir / "model.safetensors"
    ).read_bytes()


def test_download_of_an_unknown_repo_is_one_error_line(hub: HubServer) -> None:
    result = _invoke("download", "Org/Nope")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Org/Nope" in lines[0]
    assert "Traceback" not in result.output


def test_download_minilm_needs_no_network() -> None:
    result = _invoke("download", "minilm")
    assert result.exit_code == 0, result.output
    folder = Path(result.stdout.strip().splitlines()[-1])
    assert (folder / "model.safetensors").is_file()


@pytest.mark.e2e
def test_download_cli_in_a_subprocess_honours_hf_endpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The real command line: HF_ENDPOINT and HF_HOME from the environment, nothing patched."""
    with HubServer({REPO: tiny_model_dir}) as server:
        env = {
            **os.environ,
            "HF_ENDPOINT": server.url,
            "HF_HOME": str(tmp_path / "hf-home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        env.pop("HF_HUB_OFFLINE", None)
        env.pop("HF_HUB_CACHE", None)
        target = tmp_path / "sub"
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                "from qembed.cli.main import main; main()",
                "download",
                REPO,
                "--dir",
                str(target),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines()[-1] == str(target.resolve())
        assert server.requested("HEAD", "/resolve/")
    assert _model_files(target) == _model_files(tiny_model_dir)
