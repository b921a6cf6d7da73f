"""The llama.cpp peer (qembed.bench.peer_llamacpp) without building llama.cpp: command lines,
cache keys, the runner protocol (against a fake ``llama_cpp`` module), token comparison and
the peer-unavailable path. The real build is tested in test_peer_llamacpp_integration.py."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from qembed.bench import peer_llamacpp as pl
from qembed.bench.engines import EngineSpec


def test_parse_quants_keeps_order_drops_repeats_and_names_the_choices() -> None:
    assert pl.parse_quants("bf16,q8_0") == ["bf16", "q8_0"]
    assert pl.parse_quants(" Q8_0 , bf16,q8_0") == ["q8_0", "bf16"]
    with pytest.raises(ValueError, match="choose from bf16, q8_0"):
        pl.parse_quants("q4_k")
    with pytest.raises(ValueError):
        pl.parse_quants(",")


def test_install_builds_the_pinned_sdist_natively_and_pins_our_torch(tmp_path: Path) -> None:
    steps = pl.install_commands(tmp_path, "2.13.0+cpu", cores=2)
    assert [s[0].split()[1] for s in steps] == ["download", "install", "install"]
    download, requirements, build = (s[1] for s in steps)
    assert (
        f"llama-cpp-python=={pl.LLAMA_CPP_PYTHON}" in download
        and ":all:" in download
        and "--no-deps" in download
    )
    # the converter's pins next to our torch, and the gguf-py of the vendored llama.cpp (not PyPI's)
    assert "torch==2.13.0" in requirements and "transformers==4.57.6" in requirements
    assert requirements[-1] == str(pl.source_dir(tmp_path) / "vendor" / "llama.cpp" / "gguf-py")
    assert requirements[requirements.index("-c") + 1] == str(tmp_path / "torch-constraint.txt")
    # built from the sdist, never a prebuilt wheel, for this CPU
    assert build[-1].endswith(f"llama_cpp_python-{pl.LLAMA_CPP_PYTHON}.tar.gz") and "--no-binary" in build
    assert (
        steps[2][2]["CMAKE_ARGS"] == "-DGGML_NATIVE=ON" and steps[2][2]["CMAKE_BUILD_PARALLEL_LEVEL"] == "2"
    )
    assert (
        pl.converter_path(tmp_path)
        == pl.source_dir(tmp_path) / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"
    )


def test_context_holds_the_largest_batch_in_one_decode() -> None:
    assert pl.context_tokens([16 * 128, 16]) == 2048
    assert pl.context_tokens([16 * 128 + 1]) == 2304  # rounded up to 256
    assert pl.context_tokens([2 * 16]) == 512  # never below llama.cpp's usual minimum


def _fake_converter(tmp_path: Path) -> pl.LlamaCppStatus:
    """A status whose 'converter' writes a file and counts its runs (no llama.cpp needed)."""
    converter = tmp_path / "peer" / "convert_hf_to_gguf.py"
    converter.parent.mkdir()
    converter.write_text(
        textwrap.dedent(
            """
            import sys, pathlib
            args = sys.argv[1:]
            out = pathlib.Path(args[args.index("--outfile") + 1])
            runs = pathlib.Path(__file__).with_name("runs.txt")
            runs.write_text(runs.read_text() + args[args.index("--outtype") + 1] + "\\n" if runs.exists() else args[args.index("--outtype") + 1] + "\\n")
            if args[args.index("--outtype") + 1] == "broken":
                print("NotImplementedError: the fake converter refuses", file=sys.stderr)
                sys.exit(3)
            out.write_bytes(b"GGUF" + args[args.index("--outtype") + 1].encode())
            """
        )
    )
    status = pl.LlamaCppStatus("llama.cpp", True, python=sys.executable, version="0.3.36")
    status.converter, status.gguf_version, status.transformers = str(converter), "0.19.0", "4.57.6"
    return status


def test_gguf_is_converted_once_per_model_revision_and_quant(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"x" * 10)
    status = _fake_converter(tmp_path)
    cache = tmp_path / "cache"
    bf16 = pl.gguf_file(status, model, "bf16", export_dir=cache)
    assert bf16.name == "model-bf16.gguf" and bf16.read_bytes() == b"GGUFbf16"
    assert pl.gguf_file(status, model, "bf16", export_dir=cache) == bf16  # cached: not converted again
    q8 = pl.gguf_file(status, model, "q8_0", export_dir=cache)
    assert q8.parent != bf16.parent and q8.read_bytes() == b"GGUFq8_0"
    runs = (tmp_path / "peer" / "runs.txt").read_text().split()
    assert runs == ["bf16", "q8_0"]
    manifest = json.loads((bf16.parent / "qembed-export.json").read_text())
    assert manifest["recipe"]["outtype"] == "bf16" and manifest["recipe"]["llama-cpp-python"] == "0.3.36"
    assert manifest["recipe"]["converter_sha256"]
    # new weights: a new revision, a new conversion
    (model / "model.safetensors").write_bytes(b"y" * 11)
    assert pl.gguf_file(status, model, "bf16", export_dir=cache).parent != bf16.parent
    assert (tmp_path / "peer" / "runs.txt").read_text().split() == ["bf16", "q8_0", "bf16"]
    # another converter (another llama.cpp) changes the key too
    assert pl.gguf_recipe(status, "bf16") != {**pl.gguf_recipe(status, "bf16"), "llama-cpp-python": "0.3.37"}


def test_a_failed_conversion_raises_the_converters_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    status = _fake_converter(tmp_path)
    monkeypatch.setitem(pl.QUANTS, "broken", ("broken", "int8"))
    with pytest.raises(RuntimeError, match="NotImplementedError: the fake converter refuses"):
        pl.gguf_file(status, model, "broken", export_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").rglob("*.gguf"))  # nothing half-written left to reuse


def test_token_comparison_points_at_the_first_difference() -> None:
    same = pl.compare_tokens(["a", "b"], [[1, 2, 151643], [3, 151643]], [[1, 2, 151643], [3, 151643]])
    assert same == {"texts": 2, "identical": 2, "last_ids": [151643]}
    diff = pl.compare_tokens(["a", "b"], [[1, 2, 151643], [3, 4]], [[1, 2, 151643], [3, 4, 151643]])
    assert diff["identical"] == 1 and diff["last_ids"] == [4, 151643]
    assert diff["first_difference"] == {"text": 1, "position": 2, "llama.cpp": [3, 4], "qembed": [3, 4, 151643],
                                        "llama.cpp_tokens": 2, "qembed_tokens": 3}  # fmt: skip


def test_a_missing_peer_venv_is_reported_with_how_to_fix_it(tmp_path: Path) -> None:
    status = pl.ensure_llamacpp(tmp_path / "none", install=False)
    assert (
        not status.available and "--peer-install" in status.reason and str(tmp_path / "none") in status.reason
    )


def test_a_broken_peer_venv_is_reported_with_the_real_import_error(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)  # a Python without llama_cpp
    status = pl.ensure_llamacpp(venv, install=False)
    assert not status.available
    assert "No module named 'llama_cpp'" in status.reason and status.attempts[0]["step"].startswith(
        "use the existing venv"
    )


def test_an_install_that_fails_reports_the_step_and_pips_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_venv(venv: Path, entries: list[Path]) -> None:
        (venv / "bin").mkdir(parents=True)
        return None

    fail = [
        sys.executable,
        "-c",
        "import sys; print('ERROR: No matching distribution found for llama-cpp-python==0.3.36', file=sys.stderr); sys.exit(1)",
    ]
    monkeypatch.setattr(pl, "_fresh_venv", fake_venv)
    monkeypatch.setattr(
        pl, "install_commands", lambda *a, **k: [("pip download llama-cpp-python==0.3.36 (sdist)", fail, {})]
    )
    status = pl.ensure_llamacpp(tmp_path / "venv", install=True, log_dir=tmp_path / "logs")
    assert (
        not status.available
        and "No matching distribution found" in status.reason
        and "pip download" in status.reason
    )
    assert "No matching distribution" in (tmp_path / "logs" / "peer-llamacpp-pip.log").read_text()


def test_plan_turns_an_unavailable_peer_into_one_reasoned_row_per_quant(tmp_path: Path) -> None:
    bench = SimpleNamespace(
        o=SimpleNamespace(
            llamacpp_venv=tmp_path / "none",
            peer_install=False,
            log_dir=tmp_path,
            llamacpp_quants=["bf16", "q8_0"],
        )
    )
    specs, failed, section = pl.plan(bench)
    assert specs == [] and [f[0] for f in failed] == ["llamacpp-bf16", "llamacpp-q8_0"]
    assert all("--peer-install" in f[2] for f in failed) and section["status"]["available"] is False
    md = "\n".join(pl.markdown(section, []))
    assert "## Peer: llama.cpp" in md and "Not measured" in md and "--peer-install" in md


# -- the runner protocol, against a fake llama_cpp ------------------------------------------------
FAKE_LLAMA_CPP = r'''
"""A stand-in for llama_cpp with the surface the runner uses."""
import hashlib, math, os, types
__version__ = "0.0-fake"
LLAMA_FLASH_ATTN_TYPE_ENABLED = 1

def llama_print_system_info():
    return b"CPU : AVX512 = 1 | FAKE = 1 |"

class Llama:
    def __init__(self, model_path, *, embedding, pooling_type, n_ctx, n_batch, n_ubatch, n_threads, n_threads_batch, flash_attn, n_gpu_layers, verbose):
        if os.environ.get("FAKE_LLAMA_FAIL"):
            raise ValueError("Failed to load model from file: " + model_path)
        os.write(1, b"llama_context: this goes to stdout in C code\n")  # as C code would: must not break the protocol
        self.metadata = {"general.architecture": "qwen3", "qwen3.pooling_type": str(pooling_type), "tokenizer.ggml.add_eos_token": "true"}
        self.context_params = types.SimpleNamespace(n_batch=n_batch, n_ubatch=n_ubatch, n_seq_max=256, n_threads=n_threads,
                                                    n_threads_batch=n_threads_batch, flash_attn_type=1 if flash_attn else 0)
        self._pooling, self._n_ctx = pooling_type, n_ctx

    def pooling_type(self):
        return self._pooling

    def n_embd(self):
        return 4

    def n_ctx(self):
        return self._n_ctx

    def tokenize(self, text, add_bos=True, special=False):
        return [b for b in text] + ([151643] if add_bos else [])

    def embed(self, texts, normalize, truncate, return_count):
        out = []
        for t in texts:
            h = hashlib.sha256(t.encode()).digest()
            v = [h[i] - 128.0 for i in range(4)]
            n = math.sqrt(sum(x * x for x in v))
            out.append([x / n for x in v])
        return out, sum(len(self.tokenize(t.encode())) for t in texts)
'''


@pytest.fixture
def fake_llama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pkg = tmp_path / "fake" / "llama_cpp"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_LLAMA_CPP)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "fake"))
    return tmp_path


def _spec(tmp_path: Path, hf_model: Path, check_texts: list[str]) -> EngineSpec:
    status = pl.LlamaCppStatus("llama.cpp", True, python=sys.executable, version="0.0-fake")
    gguf = tmp_path / "model-bf16.gguf"
    gguf.write_bytes(b"GGUF")
    [spec] = pl.engine_specs(status, {"bf16": gguf}, hf_model=hf_model, pooling="lasttoken", threads=2, batch_tokens=[64],
                             check_texts=check_texts, log_dir=tmp_path / "logs")  # fmt: skip
    return spec


@pytest.mark.e2e
def test_runner_protocol_end_to_end_with_a_fake_llama_cpp(fake_llama: Path, tiny_model_dir: Path) -> None:
    spec = _spec(fake_llama, tiny_model_dir, check_texts=["hello world"])
    assert spec.kind == "llamacpp" and spec.settings["pooling_type"] == 3 and spec.settings["n_ubatch"] == 512
    runner = pl.LlamaCppRunner(spec)
    try:
        info = runner.info()
        assert (
            info["dtype"] == "bfloat16"
            and info["threads"] == 2
            and info["flash_attn"] is True
            and info["pooling_type"] == 3
        )
        assert info["rss_pid"] == runner.proc.pid and info["gguf_metadata"]["qwen3.pooling_type"] == "3"
        assert "AVX512 = 1" in info["system_info"] and 0 < info["pipe_roundtrip_ms"] < 1000
        # the fake tokenizes bytes: not qembed's ids, and the check says so (it can fail)
        assert info["token_check"]["identical"] == 0 and info["token_check"]["first_difference"]["text"] == 0
        tokens, n, dim = runner.batch(["a", "bb", "ccc"], 2)
        assert (tokens, n, dim) == (1 + 2 + 3 + 3, 3, 4)
        vectors = runner.vectors(["a", "bb"])
        assert vectors.shape == (2, 4) and vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)
        runner.single("q")
    finally:
        runner.close()
    assert runner.proc.returncode == 0
    assert "this goes to stdout in C code" in (fake_llama / "logs" / "llamacpp-bf16.log").read_text()


@pytest.mark.e2e
def test_runner_load_failure_carries_llama_cpps_error(
    fake_llama: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_LLAMA_FAIL", "1")
    with pytest.raises(RuntimeError, match="Failed to load model from file"):
        pl.LlamaCppRunner(_spec(fake_llama, tiny_model_dir, check_texts=[]))


def test_checks_fail_when_pooling_or_tokens_differ() -> None:
    def engine(pooling: int, in_file: str, identical: int) -> SimpleNamespace:
        info = {"pooling_type": pooling, "gguf_metadata": {"general.architecture": "qwen3", "qwen3.pooling_type": in_file},
                "token_check": {"texts": 3, "identical": identical, "last_ids": [151643]}}  # fmt: skip
        return SimpleNamespace(
            spec=SimpleNamespace(kind="llamacpp", name="llamacpp-bf16"), status="ok", info=info
        )

    good = pl.checks([engine(3, "3", 3)], "lasttoken")
    assert [c["ok"] for c in good] == [True, True]
    bad = pl.checks([engine(3, "1", 2)], "lasttoken")  # GGUF says MEAN; one text tokenized differently
    assert [c["ok"] for c in bad] == [False, False] and "qwen3.pooling_type=1" in bad[0]["detail"]


# -- the command line -----------------------------------------------------------------------------
def test_bad_quant_is_one_clear_message() -> None:
    from click.testing import CliRunner

    from qembed.cli.bench import bench_group

    result = CliRunner().invoke(
        bench_group,
        ["throughput", "--model", "/nonexistent", "--peer", "llama.cpp", "--llamacpp-quant", "q4_k"],
    )
    assert result.exit_code == 2 and "choose from bf16, q8_0" in result.output


def test_peers_are_repeatable_and_reach_the_options(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from click.testing import CliRunner

    import qembed.bench.throughput as throughput
    from qembed.cli.bench import bench_group

    seen: list[throughput.ThroughputOptions] = []

    class Stop(Exception):
        pass

    def fake_run(options: throughput.ThroughputOptions, progress: object = None) -> dict:
        seen.append(options)
        raise Stop

    monkeypatch.setattr(throughput, "run_throughput", fake_run)
    args = ["throughput", "--model", "/nonexistent", "--out", str(tmp_path), "--peer", "infinity", "--peer", "llama.cpp",
            "--llamacpp-quant", "q8_0", "--llamacpp-venv", str(tmp_path / "v")]  # fmt: skip
    result = CliRunner().invoke(bench_group, args)
    assert isinstance(result.exception, Stop), result.output
    [o] = seen
    assert (
        o.peers() == ["infinity", "llama.cpp"]
        and o.llamacpp_quants == ["q8_0"]
        and o.llamacpp_venv == tmp_path / "v"
    )
    CliRunner().invoke(bench_group, ["throughput", "--model", "/nonexistent", "--out", str(tmp_path)])
    assert (
        seen[1].peers() == []
        and seen[1].llamacpp_quants == ["bf16", "q8_0"]
        and seen[1].llamacpp_venv == pl.DEFAULT_LLAMACPP_VENV
    )
