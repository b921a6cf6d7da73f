"""qembed.common is the bottom layer: it imports no other qembed module and no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

COMMON = Path(__file__).resolve().parents[2] / "src" / "qembed" / "common"


def test_common_imports_nothing_above_it() -> None:
    above = []
    for path in sorted(COMMON.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else []
            )
            above += [
                f"{path.name}: {n}"
                for n in names
                if n.startswith("qembed") and not n.startswith("qembed.common")
            ]
    assert above == []


def test_importing_common_loads_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "import qembed\n"
        "before = set(sys.modules)\n"
        "import qembed.common.paths, qembed.common.fingerprint, qembed.common.topk, qembed.common.progress\n"
        "new = sorted(m for m in set(sys.modules) - before if m.startswith('qembed') and not m.startswith('qembed.common'))\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'rich') if m in sys.modules)\n"
        "print(new, heavy)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[] []"
