"""Quality gates run as tests (issue #12): mypy with the pydantic plugin is clean on src, and
src, tests and bench are `ruff format`-ted and pass `ruff check`.

The configuration ([tool.mypy] in pyproject.toml: files, plugins, the untyped third-party
packages) is the one a developer runs as plain ``mypy``; the incremental cache
(.mypy_cache, git-ignored) keeps repeated runs fast."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.e2e
def test_mypy_clean_on_src() -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (pip install -e '.[test]')")
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, f"mypy found errors:\n{out.stdout[-8000:]}{out.stderr[-2000:]}"


def _ruff(*args: str) -> subprocess.CompletedProcess[str]:
    ruff = Path(sys.executable).parent / "ruff"
    if not ruff.exists():
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    return subprocess.run(
        [str(ruff), *args, "src", "tests", "bench"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_ruff_format_check() -> None:
    """One formatting (`ruff format`, pyproject's line length): a diff never hides in reformatting noise."""
    out = _ruff("format", "--check")
    assert out.returncode == 0, (
        f"run `ruff format src tests bench`:\n{out.stdout[-4000:]}{out.stderr[-1000:]}"
    )


def test_ruff_check() -> None:
    out = _ruff("check")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-1000:]
