"""llama.cpp (the engine under Ollama) as a peer of ``qembed bench throughput``.

What runs: ``llama-cpp-python`` (pinned, ``LLAMA_CPP_PYTHON``) built from its PyPI sdist
with ``GGML_NATIVE=ON``, so ggml is compiled for this CPU (AVX-512, VNNI, BF16 where the
CPU has them; the report shows ggml's own feature line), with the model converted by the
``convert_hf_to_gguf.py`` of the llama.cpp vendored in that same sdist (with the gguf-py
next to it: converter, gguf writer and runtime always come from one llama.cpp commit) to
GGUF BF16 and Q8_0.

Why a peer venv: like infinity (``qembed.bench.peers``), llama.cpp must never change the
environment qembed is measured in. It lives in ``/tmp/qembed-peer-llamacpp``, which sees
our torch through a ``.pth`` (the converter imports torch; pip runs with our torch pinned)
and gets the converter's own pins (transformers 4.57.6, numpy 2.2) without touching ours.
``--peer-install`` builds it once (5-15 minutes on 2 cores); ``--no-peer-install`` reuses
it; when it cannot be built, converted or loaded the report says why, with the real error.

Why in process over a pipe, not ``llama_cpp.server`` over HTTP: the other engines that
set the bar (qembed in process, sentence-transformers) are measured as library calls;
llama.cpp measured the same way, ``Llama.embed`` on the same batch of texts, is the fair
and reproducible number. The server would add its own HTTP/JSON stack and request
scheduling (``llama_cpp.server`` serialises requests), which is a property of that server,
not of llama.cpp's compute. The runner (``qembed.bench.llamacpp_runner``) is a small
script in the peer venv that speaks JSON lines; the bench's worker process for the engine
drives it. The pipe adds one small JSON round trip per call (measured at start, in the
report as ``pipe_roundtrip_ms``: well under a millisecond, against 100+ ms per batch).

Same work as qembed: the converter writes pooling type LAST for a Qwen3-Embedding folder
(from its ``1_Pooling/config.json``) and ``tokenizer.ggml.add_eos_token`` from the
tokenizer's post-processor, so ``Llama.embed`` appends ``<|endoftext|>`` and pools its
hidden state; the runner normalises (L2). The bench checks both: the GGUF metadata that
llama.cpp read (pooling type LAST) and the token ids llama.cpp feeds the model against
qembed's tokenizer for the same texts, and the report gives the cosine of the vectors.

Sizing: ``n_ctx = n_batch = n_ubatch`` = the largest batch of the run in tokens (texts x
tokens of the longest cell), so a ``batch_size`` batch is one ``llama_decode``, as it is one
forward pass for the other engines; ``n_threads`` = qembed's threads; flash attention on.

What llama.cpp does that the others do not (measured as it ships, not patched): with
``embeddings`` on, ``llama_context::decode`` marks every token as an output
(``output_all = cparams.embeddings``) and the qwen3 graph applies the output projection to
every output row, so each token also pays the 151,669 x 1,024 lm_head (+35% FLOPs over the
0.88 GFLOP/token of the layers) and the context holds n_ubatch x n_vocab float logits (1.2 GB
at n_ubatch 2048, visible in its peak RSS). llama-server runs embeddings the same way.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import tarfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qembed.bench.peers import PeerStatus, _fresh_venv, _last_lines, _torch_files

if TYPE_CHECKING:
    from qembed.bench.spec import EngineSpec

LLAMA_CPP_PYTHON = "0.3.36"
DEFAULT_LLAMACPP_VENV = Path("/tmp/qembed-peer-llamacpp")
CMAKE_ARGS = "-DGGML_NATIVE=ON"
# The converter's pins, from requirements/requirements-convert_hf_to_gguf.txt of the llama.cpp
# vendored in LLAMA_CPP_PYTHON (torch is ours instead of its 2.11: the conversion only reads
# tensors). gguf itself is the gguf-py of that same llama.cpp.
CONVERTER_REQUIREMENTS = (
    "numpy~=2.2.6",
    "sentencepiece>=0.1.98,<0.3.0",
    "transformers==4.57.6",
    "protobuf>=4.21.0,<5.0.0",
)
_RECORD = "qembed-peer-install.json"
RUNNER = Path(__file__).with_name("llamacpp_runner.py")

# quant name -> (converter --outtype, the dtype the engine computes its matmuls in, for MFU)
QUANTS: dict[str, tuple[str, str]] = {"bf16": ("bf16", "bfloat16"), "q8_0": ("q8_0", "int8")}
LLAMA_POOLING = {"none": 0, "mean": 1, "cls": 2, "last": 3}  # llama.h enum llama_pooling_type
_POOLING_FROM_PIPELINE = {"lasttoken": "last", "mean": "mean", "cls": "cls"}


@dataclass
class LlamaCppStatus(PeerStatus):
    converter: str | None = None  # convert_hf_to_gguf.py of the vendored llama.cpp
    gguf_version: str | None = None
    transformers: str | None = None
    sdist: str | None = None
    cmake_args: str | None = None
    system_info: str | None = None  # ggml's CPU feature line (AVX512 = 1, ...)


def parse_quants(text: str) -> list[str]:
    """``bf16,q8_0`` -> ["bf16", "q8_0"]; an unknown name is an error that lists the known ones."""
    names = [q.strip().lower() for q in text.split(",") if q.strip()]
    unknown = [q for q in names if q not in QUANTS]
    if unknown or not names:
        raise ValueError(f"{text!r}: choose from {', '.join(QUANTS)} (comma-separated)")
    return list(dict.fromkeys(names))


# -- the peer venv -----------------------------------------------------------------------------
def source_dir(venv: Path, version: str = LLAMA_CPP_PYTHON) -> Path:
    """Where the sdist is unpacked: its vendored llama.cpp holds the converter and gguf-py."""
    return venv / "src" / f"llama_cpp_python-{version}"


def converter_path(venv: Path, version: str = LLAMA_CPP_PYTHON) -> Path:
    return source_dir(venv, version) / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"


def install_commands(
    venv: Path, our_torch: str, *, cores: int, version: str = LLAMA_CPP_PYTHON
) -> list[tuple[str, list[str], dict[str, str]]]:
    """(step, command, extra environment) of an install, in order: fetch the sdist, the
    converter's requirements (our torch pinned), then the native build of llama-cpp-python."""
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "--disable-pip-version-check"]
    constraint = ["-c", str(venv / "torch-constraint.txt")]
    sdist = venv / "src" / f"llama_cpp_python-{version}.tar.gz"
    gguf_py = source_dir(venv, version) / "vendor" / "llama.cpp" / "gguf-py"
    torch_pin = f"torch=={our_torch.split('+')[0]}"
    build_env = {"CMAKE_ARGS": CMAKE_ARGS, "CMAKE_BUILD_PARALLEL_LEVEL": str(cores), "FORCE_CMAKE": "1"}
    return [
        (f"pip download llama-cpp-python=={version} (sdist)",
         [*pip, "download", "--no-deps", "--no-binary", ":all:", f"llama-cpp-python=={version}", "-d", str(sdist.parent)], {}),
        (f"pip install the converter's requirements and gguf-py ({torch_pin} pinned)",
         [*pip, "install", *constraint, torch_pin, *CONVERTER_REQUIREMENTS, str(gguf_py)], {}),
        (f"pip install llama-cpp-python=={version} from source ({CMAKE_ARGS})",
         [*pip, "install", "--no-binary", "llama-cpp-python", *constraint, str(sdist)], build_env),
    ]  # fmt: skip


_PROBE = (
    "import importlib.metadata as m, json, llama_cpp, gguf, transformers, torch\n"
    "print(json.dumps({'version': llama_cpp.__version__, 'gguf': m.version('gguf'), 'transformers': transformers.__version__,\n"
    "  'torch': torch.__version__, 'system_info': llama_cpp.llama_print_system_info().decode('utf-8', 'replace').strip()}))\n"
)


def probe(python: Path) -> tuple[dict[str, Any] | None, str]:
    """What the peer's interpreter has (versions, ggml's CPU features), or the error."""
    try:
        proc = subprocess.run([str(python), "-c", _PROBE], capture_output=True, text=True, timeout=300)
    except (subprocess.TimeoutExpired, OSError) as exc:
        return None, str(exc)
    if proc.returncode != 0:
        return None, (proc.stderr or proc.stdout).strip()[-1500:]
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1]), ""
    except (json.JSONDecodeError, IndexError):
        return None, f"unexpected probe output: {proc.stdout[-500:]!r}"


def _judge(status: LlamaCppStatus, venv: Path, found: dict[str, Any], our_torch: str) -> LlamaCppStatus:
    status.python, status.version, status.torch = (
        str(venv / "bin" / "python"),
        found["version"],
        found["torch"],
    )
    status.gguf_version, status.transformers = found.get("gguf"), found.get("transformers")
    status.requirement = f"llama-cpp-python=={found['version']} (sdist, CMAKE_ARGS={CMAKE_ARGS})"
    converter = converter_path(venv, found["version"])
    status.converter, status.sdist = str(converter), str(source_dir(venv, found["version"]))
    status.cmake_args = CMAKE_ARGS
    system = found.get("system_info", "")
    if found["torch"] != our_torch:
        status.reason = (
            f"the peer venv runs torch {found['torch']}, not ours ({our_torch}); refusing to use it"
        )
    elif not converter.is_file():
        status.reason = f"{converter} is missing (the unpacked llama-cpp-python sdist); run with --peer-install to rebuild the peer venv"
    else:
        status.available = True
    status.system_info = system
    return status


def ensure_llamacpp(
    venv: Path = DEFAULT_LLAMACPP_VENV, *, install: bool = True, log_dir: Path | None = None
) -> LlamaCppStatus:
    """A venv with a native build of llama-cpp-python, its converter and gguf-py; built when
    asked to. Never half-usable: the probe imports everything the converter and runner need."""
    status = LlamaCppStatus("llama.cpp", False)
    python = venv / "bin" / "python"
    our_torch, entries = _torch_files()
    if python.exists():
        found, error = probe(python)
        if found:
            record = venv / _RECORD
            if record.exists():
                status.attempts = json.loads(record.read_text()).get("attempts", [])
            return _judge(status, venv, found, our_torch)
        status.attempts.append({"step": f"use the existing venv {venv}", "error": _last_lines(error, 6)})
    if not install:
        status.reason = f"llama-cpp-python is not usable in {venv} (run with --peer-install to build it from PyPI, 5-15 minutes)"
        if status.attempts:
            status.reason += ": " + status.attempts[-1]["error"].splitlines()[-1]
        return status
    log_dir = log_dir or venv.parent
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "peer-llamacpp-pip.log"
    venv_error = _fresh_venv(venv, entries)
    if venv_error:
        status.reason = venv_error
        return status
    (venv / "torch-constraint.txt").write_text(f"torch=={our_torch.split('+')[0]}\n")
    for step, cmd, env in install_commands(venv, our_torch, cores=os.cpu_count() or 1):
        try:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=3600, env={**os.environ, **env}
            )
            output, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            output, code = str(exc), -1
        with open(log, "a") as f:
            f.write(f"$ {' '.join(f'{k}={v}' for k, v in env.items())} {' '.join(cmd)}\n{output}\n")
        if code != 0:
            status.attempts.append({"step": step, "error": _last_lines(output)})
            status.reason = (
                f"llama-cpp-python could not be installed: {step}: {_last_lines(output, 3)} (full log: {log})"
            )
            return status
        if step.startswith("pip download"):  # unpack it: the converter and gguf-py come from it
            sdist = Path(cmd[-1]) / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
            with tarfile.open(sdist) as tar:
                tar.extractall(sdist.parent, filter="data")
    found, error = probe(python)
    if not found:
        status.attempts.append(
            {"step": "import llama_cpp, gguf, transformers in the new venv", "error": _last_lines(error, 6)}
        )
        status.reason = f"llama-cpp-python was built but does not import: {_last_lines(error, 2)}"
        return status
    (venv / _RECORD).write_text(
        json.dumps(
            {"requirement": f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "attempts": status.attempts}, indent=1
        )
    )
    return _judge(status, venv, found, our_torch)


# -- the GGUF files ----------------------------------------------------------------------------
def gguf_recipe(status: LlamaCppStatus, quant: str) -> dict[str, Any]:
    """What decides the bytes of a GGUF besides the model: part of its cache key."""
    converter = Path(status.converter or "")
    digest = None
    if converter.is_file():  # the script and the model classes it imports (conversion/*.py)
        h = hashlib.sha256()
        for path in [converter, *sorted((converter.parent / "conversion").glob("*.py"))]:
            h.update(path.read_bytes())
        digest = h.hexdigest()[:16]
    return {"outtype": QUANTS[quant][0], "llama-cpp-python": status.version, "gguf": status.gguf_version,
            "transformers": status.transformers, "converter_sha256": digest}  # fmt: skip


def converter_command(status: LlamaCppStatus, model_dir: Path, quant: str, outfile: Path) -> list[str]:
    return [
        str(status.python),
        str(status.converter),
        str(model_dir),
        "--outtype",
        QUANTS[quant][0],
        "--outfile",
        str(outfile),
    ]


def gguf_file(
    status: LlamaCppStatus, model_dir: Path, quant: str, *, export_dir: str | os.PathLike[str] | None = None
) -> Path:
    """The model as a GGUF of ``quant``, converted once per model revision and recipe
    (``qembed.model.backends.artifacts``: same cache, same atomic build, same manifest)."""
    from qembed.model.backends.artifacts import cached_artifact

    name = f"model-{quant}.gguf"

    def build(tmp: Path, stage: Any) -> None:
        with stage(f"convert_hf_to_gguf.py --outtype {QUANTS[quant][0]}"):
            log = tmp / "convert.log"
            with open(log, "w") as f:
                # NO_LOCAL_GGUF unset: the converter imports the gguf-py next to it, the same one we installed
                env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
                proc = subprocess.run(
                    converter_command(status, model_dir, quant, tmp / name),
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    env=env,
                    timeout=3600,
                )
            if proc.returncode != 0 or not (tmp / name).is_file():
                raise RuntimeError(
                    f"convert_hf_to_gguf.py --outtype {quant} failed (exit {proc.returncode}): {_last_lines(log.read_text(errors='replace'), 8)}"
                )

    folder = cached_artifact(
        f"gguf-{quant}",
        model_dir,
        gguf_recipe(status, quant),
        build,
        steps=1,
        export_dir=export_dir,
        progress=False,
    )
    return folder / name


# -- the engine, worker side --------------------------------------------------------------------
class LlamaCppRunner:
    """The bench worker's handle on the runner script in the peer venv (``EngineSpec.kind``
    ``llamacpp``; ``spec.settings`` holds the peer python, the GGUF and the context sizes)."""

    def __init__(self, spec: EngineSpec) -> None:
        cfg = dict(spec.settings)
        self.cfg = cfg
        log_path = Path(cfg["log"])
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            runner_command(cfg),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
        )
        log.close()
        first = self._read()
        if "ready" not in first:
            self.close()
            raise RuntimeError(
                f"llama.cpp could not load {cfg['gguf']}: {first.get('error')}; log {log_path}: {_last_lines(_tail(log_path), 6)}"
            )
        self.ready: dict[str, Any] = first["ready"]
        self.token_check = self._token_check(cfg.get("check_texts") or [], Path(cfg["hf_model"]))
        self.pipe_ms = self._pipe_roundtrip_ms()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait(timeout=30)
            return {"error": f"the llama.cpp runner exited (code {code}) without answering"}
        return json.loads(line)

    def call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **fields}) + "\n")
        self.proc.stdin.flush()
        reply = self._read()
        if "ok" not in reply:
            raise RuntimeError(f"llama.cpp {cmd}: {reply.get('error')}")
        return reply["ok"]

    def _pipe_roundtrip_ms(self, n: int = 20) -> float:
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.call("tokenize", texts=[])
            times.append(time.perf_counter() - t0)
        return round(sorted(times)[n // 2] * 1000, 4)

    def _token_check(self, texts: list[str], hf_model: Path) -> dict[str, Any]:
        """llama.cpp's token ids vs qembed's tokenizer (special tokens included) on the same texts."""
        if not texts:
            return {}
        return compare_tokens(
            texts, self.call("tokenize", texts=texts)["ids"], qembed_token_ids(hf_model, texts)
        )

    def info(self) -> dict[str, Any]:
        r = self.ready
        return {
            "backend": f"llama.cpp (llama-cpp-python {r['llama_cpp_python']})", "device": "cpu", "dtype": QUANTS[self.cfg["quant"]][1],
            "quant": self.cfg["quant"], "threads": r["threads"], "dimension": r["n_embd"], "rss_pid": r["pid"],
            "gguf": r["gguf"], "gguf_metadata": r["metadata"], "pooling_type": r["pooling_type"], "n_ctx": r["n_ctx"],
            "n_batch": r["n_batch"], "n_ubatch": r["n_ubatch"], "n_seq_max": r["n_seq_max"], "flash_attn": r["flash_attn"],
            "system_info": r["system_info"], "token_check": self.token_check, "pipe_roundtrip_ms": self.pipe_ms,
        }  # fmt: skip

    def batch(self, texts: list[str], batch_size: int) -> tuple[int | None, int, int]:
        out = self.call("batch", texts=texts, batch_size=batch_size)
        return int(out["tokens"]), int(out["n_vectors"]), int(out["dimension"])

    def single(self, text: str) -> None:
        self.call("single", text=text)

    def vectors(self, texts: list[str]) -> Any:
        return decode_vectors(self.call("vectors", texts=texts))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("stop")
            except (RuntimeError, OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def runner_command(cfg: dict[str, Any]) -> list[str]:
    keys = ("gguf", "pooling_type", "n_ctx", "n_batch", "n_ubatch", "threads", "flash_attn", "verbose")
    return [str(cfg["python"]), str(RUNNER), json.dumps({k: cfg[k] for k in keys if k in cfg})]


def decode_vectors(payload: dict[str, Any]) -> Any:
    import numpy as np

    rows, dim = payload["shape"]
    return np.frombuffer(base64.b64decode(payload["float32_b64"]), dtype=np.float32).reshape(rows, dim)


def qembed_token_ids(hf_model: Path, texts: Sequence[str]) -> list[list[int]]:
    """The ids qembed runs for each text: content ids wrapped in the model's special tokens."""
    from qembed.model.pipeline import load_pipeline
    from qembed.model.tokenization import TextTokenizer

    tok = TextTokenizer(Path(hf_model), load_pipeline(Path(hf_model)))
    return [tok.wrap(ids) for ids in tok.content_ids(list(texts))]


def compare_tokens(
    texts: Sequence[str], theirs: Sequence[Sequence[int]], ours: Sequence[Sequence[int]]
) -> dict[str, Any]:
    same = [list(a) == list(b) for a, b in zip(theirs, ours, strict=True)]
    out: dict[str, Any] = {
        "texts": len(texts),
        "identical": sum(same),
        "last_ids": sorted({int(t[-1]) for t in theirs if t}),
    }
    if not all(same):
        i = same.index(False)
        a, b = list(theirs[i]), list(ours[i])
        at = next((k for k in range(min(len(a), len(b))) if a[k] != b[k]), min(len(a), len(b)))
        out["first_difference"] = {"text": i, "position": at, "llama.cpp": a[max(0, at - 2) : at + 3], "qembed": b[max(0, at - 2) : at + 3],
                                   "llama.cpp_tokens": len(a), "qembed_tokens": len(b)}  # fmt: skip
    return out


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# -- the engine, coordinator side ---------------------------------------------------------------
def context_tokens(batch_tokens: Sequence[int]) -> int:
    """n_ctx = n_batch = n_ubatch: the largest batch in tokens, so that one batch is one decode
    (rounded up to a multiple of 256, at least 512: llama.cpp pads its context to 256)."""
    need = max([512, *batch_tokens])
    return -(-need // 256) * 256


def engine_specs(status: LlamaCppStatus, ggufs: dict[str, Path], *, hf_model: Path, pooling: str, threads: int,
                 batch_tokens: Sequence[int], check_texts: Sequence[str], log_dir: Path) -> list[EngineSpec]:  # fmt: skip
    """One EngineSpec per quant (kind ``llamacpp``), all with the same context and threads."""
    from qembed.bench.spec import EngineSpec

    n = context_tokens(batch_tokens)
    specs = []
    for quant, path in ggufs.items():
        settings = {
            "python": status.python, "gguf": str(path), "quant": quant, "pooling_type": LLAMA_POOLING[_POOLING_FROM_PIPELINE.get(pooling, "last")],
            "n_ctx": n, "n_batch": n, "n_ubatch": n, "threads": threads, "flash_attn": True, "hf_model": str(hf_model),
            "check_texts": list(check_texts), "log": str(log_dir / f"llamacpp-{quant}.log"),
        }  # fmt: skip
        label = f"llama.cpp {quant.upper()} GGUF in process (llama-cpp-python {status.version}, {threads} threads, flash attention, n_batch {n})"
        specs.append(
            EngineSpec(f"llamacpp-{quant}", "llamacpp", "engine", str(path), label=label, settings=settings)
        )
    return specs


def plan(bench: Any) -> tuple[list[EngineSpec], list[tuple[str, str, str]], dict[str, Any]]:
    """For a ThroughputBench: (specs to load, (name, label, reason) of quants that cannot run,
    the peer section of the report). Builds/reuses the venv and the GGUFs; never raises."""
    from qembed.bench.workloads import PRESETS
    from qembed.model.backends.hardware import available_cores
    from qembed.model.pipeline import load_pipeline

    o = bench.o
    status = ensure_llamacpp(o.llamacpp_venv, install=o.peer_install, log_dir=o.log_dir)
    section: dict[str, Any] = {"status": asdict(status), "quants": list(o.llamacpp_quants), "gguf": {}}
    failed: list[tuple[str, str, str]] = []
    names = {q: (f"llamacpp-{q}", f"llama.cpp {q.upper()} GGUF (peer)") for q in o.llamacpp_quants}
    if not status.available:
        return [], [(*names[q], status.reason) for q in o.llamacpp_quants], section
    if bench.device != "cpu":
        reason = f"the peer build is CPU-only ({CMAKE_ARGS}); device {bench.device} is not measured"
        return [], [(*names[q], reason) for q in o.llamacpp_quants], section
    ggufs: dict[str, Path] = {}
    for quant in o.llamacpp_quants:
        bench.progress(
            f"llama.cpp: GGUF {quant} of {bench.model_path.name} (converted once, then cached) ..."
        )
        t0 = time.perf_counter()
        try:
            ggufs[quant] = gguf_file(status, bench.model_path, quant, export_dir=bench.settings.export_dir)
        except Exception as exc:  # noqa: BLE001 - reported, the run goes on without it
            failed.append((*names[quant], f"{type(exc).__name__}: {exc}"))
            continue
        section["gguf"][quant] = {
            "path": str(ggufs[quant]),
            "mb": round(ggufs[quant].stat().st_size / 2**20, 1),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    cells = bench.cells()
    batch_tokens = [c.batch_size * c.workload.tokens for c in cells] + [PRESETS["query"].tokens]
    longest = max(
        (c.workload for c in cells if not c.workload.mixed),
        key=lambda w: w.tokens,
        default=cells[0].workload if cells else None,
    )
    from qembed.bench.workloads import WARMUP_VARIANT

    check = (bench.workload(longest, WARMUP_VARIANT).texts[:6] if longest else []) + bench.workload(
        PRESETS["query"], WARMUP_VARIANT, 4
    ).texts
    pooling = load_pipeline(bench.model_path).pooling
    section["pooling"] = pooling
    threads = bench.settings.threads or available_cores()
    specs = engine_specs(
        status,
        ggufs,
        hf_model=bench.model_path,
        pooling=pooling,
        threads=threads,
        batch_tokens=batch_tokens,
        check_texts=check,
        log_dir=o.log_dir,
    )
    return specs, failed, section


def checks(engines: Sequence[Any], pooling: str | None) -> list[dict[str, Any]]:
    """Report checks for every loaded llama.cpp engine: pooling, EOS appended, same tokens."""
    out = []
    want = LLAMA_POOLING[_POOLING_FROM_PIPELINE.get(pooling or "lasttoken", "last")]
    for e in engines:
        if e.spec.kind != "llamacpp" or e.status != "ok":
            continue
        info, name = e.info, e.spec.name
        meta = info.get("gguf_metadata") or {}
        arch = meta.get("general.architecture", "")
        in_file = meta.get(f"{arch}.pooling_type")
        out.append({"name": f"{name}: pooling type {want} (LAST=3) in the GGUF and in the context", "ok": info.get("pooling_type") == want and str(in_file) == str(want),
                    "detail": f"GGUF {arch}.pooling_type={in_file}, context pooling_type={info.get('pooling_type')}"})  # fmt: skip
        tc = info.get("token_check") or {}
        if tc:
            detail = f"{tc['identical']} of {tc['texts']} texts identical; last ids {tc['last_ids']}"
            if "first_difference" in tc:
                detail += f"; first difference: {tc['first_difference']}"
            out.append(
                {
                    "name": f"{name}: token ids = qembed's (special tokens, EOS appended)",
                    "ok": tc["identical"] == tc["texts"],
                    "detail": detail,
                }
            )
    return out


def markdown(section: dict[str, Any] | None, engines: Sequence[dict[str, Any]]) -> list[str]:
    """The report's llama.cpp section, from the JSON only."""
    if not section:
        return []
    s = section["status"]
    lines = ["## Peer: llama.cpp", ""]
    if not s.get("available"):
        lines += [f"Not measured: {s.get('reason')}", ""]
        for a in s.get("attempts", []):
            lines += [f"- {a['step']}:", "", "```", a["error"], "```", ""]
        return lines
    lines += [f"llama-cpp-python {s['version']} built from the PyPI sdist with `CMAKE_ARGS={s.get('cmake_args')}` in {s['python']}; "
              f"converter `{s['converter']}` (gguf {s.get('gguf_version')}, transformers {s.get('transformers')}, torch {s.get('torch')}).", ""]  # fmt: skip
    for quant, g in (section.get("gguf") or {}).items():
        lines.append(f"- GGUF {quant}: `{g['path']}` ({g['mb']:,.1f} MB)")
    for e in engines:
        info = e.get("info") or {}
        if e.get("kind") != "llamacpp" or not info:
            continue
        meta = info.get("gguf_metadata") or {}
        tc = info.get("token_check") or {}
        lines.append(f"- {e['name']}: pooling_type {info.get('pooling_type')}, add_eos_token {meta.get('tokenizer.ggml.add_eos_token')}, "
                     f"eos {meta.get('tokenizer.ggml.eos_token_id')}, n_ctx/n_batch/n_ubatch {info.get('n_ctx')}/{info.get('n_batch')}/{info.get('n_ubatch')}, "
                     f"threads {info.get('threads')}, flash attention {info.get('flash_attn')}, token ids identical to qembed's on "
                     f"{tc.get('identical', '-')} of {tc.get('texts', '-')} texts, pipe round trip {info.get('pipe_roundtrip_ms')} ms")  # fmt: skip
    system = next(
        (e["info"].get("system_info") for e in engines if e.get("kind") == "llamacpp" and e.get("info")), None
    )
    if system:
        lines += ["", f"ggml CPU features: `{system}`"]
    return lines + [""]
