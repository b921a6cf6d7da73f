"""Local processes a benchmark runs or watches: servers it starts, and their memory.

Memory is read from the operating system, not from the process itself, so that every
engine (in-process worker, qembed server, a peer server in another venv) is measured the
same way. On Linux ``VmHWM`` in /proc/<pid>/status is the kernel's own peak resident set
size: no sampling gaps. Elsewhere we fall back to psutil's current RSS.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from qembed.errors import StartError


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _children(pid: int) -> list[int]:
    try:
        import psutil

        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except Exception:  # psutil missing or the process is gone
        return []


def rss_bytes(pid: int, *, children: bool = True) -> int | None:
    """Current resident set size of ``pid`` (and its children), or None when it is gone."""
    pids = [pid, *(_children(pid) if children else [])]
    total, seen = 0, False
    for p in pids:
        kb = _status_kb(p, "VmRSS")
        if kb is None:
            try:
                import psutil

                total += psutil.Process(p).memory_info().rss
                seen = True
            except Exception:
                continue
        else:
            total += kb * 1024
            seen = True
    return total if seen else None


def peak_rss_bytes(pid: int, *, children: bool = True) -> int | None:
    """Peak resident set size of ``pid`` (plus its children's peaks) since it started."""
    pids = [pid, *(_children(pid) if children else [])]
    total, seen = 0, False
    for p in pids:
        kb = _status_kb(p, "VmHWM")
        if kb is not None:
            total += kb * 1024
            seen = True
    if seen:
        return total
    return rss_bytes(pid, children=children)


def pid_listening_on(port: int) -> int | None:
    """The local process listening on TCP ``port`` (psutil; None when unknown or not ours)."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return int(conn.pid)
    except Exception:  # psutil missing, or no permission to map sockets to processes
        return None
    return None


def tail(path: Path, chars: int = 2000) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return text[-chars:].strip()


@dataclass
class ManagedServer:
    """A server subprocess we started, ready once ``ready_url`` answers 200."""

    name: str
    command: list[str]
    ready_url: str
    base_url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    startup_seconds: float | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, timeout: float) -> ManagedServer:
        """Start and poll the ready URL until 200, the process exits, or ``timeout`` passes."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        began = time.perf_counter()
        self.process = subprocess.Popen(
            self.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        log.close()
        deadline = began + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self.process.poll()
                if code is not None:
                    raise StartError(
                        f"{self.name} exited with code {code} before it was ready: {tail(self.log_path, 1500)}"
                    )
                try:
                    if client.get(self.ready_url).status_code == 200:
                        self.startup_seconds = time.perf_counter() - began
                        return self
                except httpx.HTTPError:
                    pass
                if time.perf_counter() > deadline:
                    self.stop()
                    raise StartError(
                        f"{self.name} did not answer GET {self.ready_url} with 200 within {timeout:.0f} s: {tail(self.log_path, 1500)}"
                    )
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=0.25)  # wakes early if it dies

    def stop(self, grace: float = 20.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=grace)
        return self.process.returncode

    def __enter__(self) -> ManagedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def settings_env(values: Mapping[str, object], skip: Sequence[str] = ()) -> dict[str, str]:
    """Settings field values -> QEMBED_* environment variables (how a child qembed process
    gets exactly our settings without knowing its command-line flags)."""
    from pydantic import SecretStr

    env: dict[str, str] = {}
    for key, value in values.items():
        if key in skip or value is None:
            continue
        if isinstance(value, list | tuple):
            value = ",".join(v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in value)
            if not value:
                continue
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[f"QEMBED_{key.upper()}"] = str(value)
    return env
