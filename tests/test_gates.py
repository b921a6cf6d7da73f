"""Quality gates run as tests (issue #12): mypy with the pydantic plugin is clean on src.

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
