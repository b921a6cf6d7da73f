"""Peer servers measured in the same run: today infinity-emb (michaelfeil/infinity).

A peer must not change the environment qembed is measured in, above all not replace its
torch build (a CUDA wheel instead of the CPU one, another version). So the peer lives in
its own venv, and that venv sees exactly *our* torch: a ``.pth`` file adds a folder that
holds links to torch's packages and nothing else, and pip runs with a constraint that pins
torch to our version. If pip still cannot install it (a dependency conflict, no network,
no wheel for this Python), or it installs but does not start, the report says so with
the actual error instead of a number.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from qembed.bench.procs import ManagedServer, free_port, tail

DEFAULT_VENV = Path("/tmp/qembed-peer-infinity")
_RECORD = "qembed-peer-install.json"
# Tried in order: the full set the infinity docs recommend, then the smallest set that
# serves a torch model over HTTP.
INFINITY_REQUIREMENTS = (["infinity-emb[all]"], ["infinity-emb[server,torch]"])


@dataclass
class PeerStatus:
    name: str
    available: bool
    reason: str = ""
    python: str | None = None
    version: str | None = None
    torch: str | None = None
    requirement: str | None = None  # what was installed, e.g. infinity-emb[server,torch]
    attempts: list[dict[str, str]] = field(default_factory=list)  # failed tries, with their errors


def _torch_files() -> tuple[str, list[Path]]:
    """Our torch version and the site-packages entries that make up the torch install."""
    import torch

    site = Path(torch.__file__).resolve().parents[1]
    entries = [site / name for name in ("torch", "functorch", "torchgen") if (site / name).exists()]
    entries += sorted(site.glob("torch-*.dist-info"))
    return torch.__version__, entries


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"


# Importing what serving needs (not just the package) catches broken installs early, e.g.
# a torchvision wheel built for another torch ("operator torchvision::nms does not exist").
_PROBE = (
    "import importlib.metadata as m, torch\n"
    "import infinity_emb.infinity_server\n"
    "from sentence_transformers import SentenceTransformer\n"
    "import infinity_emb.transformer.embedder.sentence_transformer\n"
    "print(m.version('infinity-emb')); print(torch.__version__)\n"
)


def _probe(python: Path) -> tuple[str | None, str | None, str]:
    """(infinity version, torch version, error) as the peer's interpreter sees them."""
    try:
        # INFINITY_HOME: importing infinity creates a cache folder, which belongs in its venv.
        env = {
            **os.environ,
            "INFINITY_HOME": str(python.parent.parent),
            "INFINITY_ANONYMOUS_USAGE_STATS": "0",
            "DO_NOT_TRACK": "1",
        }
        proc = subprocess.run(
            [str(python), "-c", _PROBE], capture_output=True, text=True, timeout=600, env=env
        )
    except subprocess.TimeoutExpired as exc:
        return None, None, str(exc)
    if proc.returncode != 0:
        return None, None, (proc.stderr or proc.stdout).strip()[-1500:]
    lines = proc.stdout.split()
    return lines[-2], lines[-1], ""


def _fresh_venv(venv: Path, entries: list[Path]) -> str | None:
    """A new venv that sees our torch (and nothing else of ours); None or the error."""
    if venv.exists():
        shutil.rmtree(venv)
    proc = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if proc.returncode != 0:
        return f"could not create a venv at {venv}: {proc.stderr.strip()[-1000:]}"
    link_dir = venv / "qembed-shared-torch"
    link_dir.mkdir()
    for entry in entries:
        (link_dir / entry.name).symlink_to(entry)
    (_site_packages(venv) / "qembed-shared-torch.pth").write_text(str(link_dir) + "\n")
    return None


def _last_lines(text: str, n: int = 15) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and "WARNING: Location" not in ln]
    return "\n".join(lines[-n:])


def ensure_infinity(
    venv: Path = DEFAULT_VENV, *, install: bool = True, log_dir: Path | None = None
) -> PeerStatus:
    """A venv with infinity-emb that shares our torch; installs it when asked to.

    Each requirement set is tried in a fresh venv, so a failed attempt (say, one that
    pulled an incompatible torchvision) leaves nothing behind for the next one."""
    status = PeerStatus("infinity", False)
    python = venv / "bin" / "python"
    our_torch, entries = _torch_files()
    if python.exists():
        version, torch_version, error = _probe(python)
        if version:
            record = venv / _RECORD
            if record.exists():  # how it was installed, failed tries included
                saved = json.loads(record.read_text())
                status.requirement, status.attempts = saved.get("requirement"), saved.get("attempts", [])
            return _judge(status, python, version, torch_version, our_torch)
        status.attempts.append({"step": f"use the existing venv {venv}", "error": _last_lines(error, 6)})
    if not install:
        status.reason = (
            f"infinity-emb is not usable in {venv} (run with --peer-install to try installing it from PyPI)"
        )
        if status.attempts:
            status.reason += ": " + status.attempts[-1]["error"].splitlines()[-1]
        return status
    log_dir = log_dir or venv.parent
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / "peer-infinity-pip.log"
    for requirement in INFINITY_REQUIREMENTS:
        venv_error = _fresh_venv(venv, entries)
        if venv_error:
            status.reason = venv_error
            return status
        constraint = venv / "torch-constraint.txt"
        constraint.write_text(f"torch=={our_torch.split('+')[0]}\n")
        cmd = [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "-c",
            str(constraint),
            *requirement,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
            output, code = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as exc:
            output, code = f"{exc}", -1
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n{output}\n")
        step = f"pip install {' '.join(requirement)} (torch=={our_torch.split('+')[0]} pinned)"
        if code != 0:
            status.attempts.append({"step": step, "error": _last_lines(output)})
            continue
        version, torch_version, error = _probe(python)
        if version:
            status.requirement = " ".join(requirement)
            (venv / _RECORD).write_text(
                json.dumps({"requirement": status.requirement, "attempts": status.attempts}, indent=1)
            )
            return _judge(status, python, version, torch_version, our_torch)
        status.attempts.append(
            {"step": f"{step}: installed, but importing its server fails", "error": _last_lines(error, 6)}
        )
    status.reason = "infinity-emb could not be installed and started without replacing torch: " + " | ".join(
        f"{a['step']}: {a['error'].splitlines()[-1] if a['error'] else '?'}" for a in status.attempts
    )
    return status


def _judge(
    status: PeerStatus, python: Path, version: str, torch_version: str | None, our_torch: str
) -> PeerStatus:
    status.python, status.version, status.torch = str(python), version, torch_version
    if torch_version != our_torch:
        status.reason = (
            f"the peer venv runs torch {torch_version}, not ours ({our_torch}); refusing to compare"
        )
        return status
    status.available = True
    return status


def infinity_server(
    status: PeerStatus,
    model_path: Path,
    *,
    device: str,
    dtype: str,
    batch_size: int,
    log_path: Path,
    port: int | None = None,
) -> ManagedServer:
    """The command that serves ``model_path`` with infinity's torch engine on 127.0.0.1."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    infinity_device = "cuda" if device.startswith("cuda") else "cpu"
    command = [
        str(status.python), "-m", "infinity_emb.cli", "v2",
        "--model-id", str(model_path), "--served-model-name", "peer",
        "--host", "127.0.0.1", "--port", str(port), "--url-prefix", "/v1",
        "--engine", "torch", "--device", infinity_device, "--dtype", dtype, "--batch-size", str(batch_size),
    ]  # fmt: skip
    # INFINITY_HOME: its cache folder goes next to its log, not into the working directory.
    env = {
        "INFINITY_ANONYMOUS_USAGE_STATS": "0",
        "DO_NOT_TRACK": "1",
        "HF_HUB_OFFLINE": "1",
        "INFINITY_HOME": str(log_path.parent),
    }
    return ManagedServer("infinity", command, f"{base}/health", base + "/v1", log_path, env=env)


def describe_failure(server: ManagedServer) -> str:
    return tail(server.log_path, 1500)
