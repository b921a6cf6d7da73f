"""The server's docs cannot drift: generated tables are current, the documented error codes
are exactly those the server sends (read from the AST), the curl examples work.
(`qembed serve`'s flags: tests/cli/test_serve.py.)"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest

from qembed.server import docs
from qembed.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def documents() -> list[Path]:
    return [README]


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.name)
def test_generated_tables_are_current(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "<!-- qembed:settings-table -->" in text and "<!-- qembed:errors-table -->" in text
    assert docs.render(text) == text, f"run: python -m qembed.server.docs {path.relative_to(ROOT)}"
    for name in Settings.model_fields:
        assert f"`QEMBED_{name.upper()}`" in text


def _results(value: ast.expr) -> set[str]:
    """The string literals an expression can evaluate to (``"a"``, ``x if c else "b"``)."""
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return {value.value}
    if isinstance(value, ast.IfExp):
        return _results(value.body) | _results(value.orelse)
    return set()


def sent_codes() -> dict[str, set[int | None]]:
    """Every ``code`` the server can put in an error body, with the statuses it goes with,
    read from the code itself (the AST, so comments and docstrings do not count):

    - ``APIError(status, ..., code="...")`` anywhere under ``qembed/server`` (status ``None``
      when it is not a literal), and string literals assigned to a variable named ``code``
      there (``message, code = ..., "not_found"``);
    - the ``code`` class attribute of every qembed error class the server maps to a status
      (``qembed.server.errors.STATUS``), with that status."""
    from qembed.server.errors import STATUS

    out: dict[str, set[int | None]] = {}
    for path in (ROOT / "src" / "qembed" / "server").rglob("*.py"):
        if path.name == "docs.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and (getattr(node.func, "id", None) or getattr(node.func, "attr", None)) == "APIError"
            ):
                status = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
                for kw in node.keywords:
                    if (
                        kw.arg == "code"
                        and isinstance(kw.value, ast.Constant)
                        and isinstance(kw.value.value, str)
                    ):
                        out.setdefault(kw.value.value, set()).add(status)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    names = target.elts if isinstance(target, ast.Tuple) else [target]
                    values = (
                        node.value.elts
                        if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple)
                        else [node.value]
                    )
                    for name, value in zip(names, values, strict=False):
                        if isinstance(name, ast.Name) and name.id == "code":
                            for literal in _results(value):
                                out.setdefault(literal, set()).add(None)
    for cls, status, _ in STATUS:
        out.setdefault(cls.code, set()).add(status)
    return out


def test_documented_error_codes_are_exactly_the_codes_the_server_sends() -> None:
    sent = sent_codes()
    documented = {code: status for status, code, _, _ in docs.ERRORS}
    assert len(documented) == len(docs.ERRORS), "a code is documented twice"
    assert sorted(set(documented) - set(sent)) == [], "documented, but no code sends it"
    assert sorted(set(sent) - set(documented)) == [], (
        "sent by the server, but not in docs.ERRORS (the README's table)"
    )
    for code, status in documented.items():
        known = sent[code] - {None}
        assert known <= {status}, f"{code} is documented as {status}, sent as {sorted(known)}"


def curl_examples() -> list[tuple[str, dict]]:
    text = README.read_text(encoding="utf-8")
    found = re.findall(r"curl -s http://127\.0\.0\.1:30000(/\S+)[^\n]*(?:\\\n\s*)?-d '([^']*)'", text)
    return [(path, json.loads(body)) for path, body in found]


def test_curl_examples_work(tiny_client) -> None:
    examples = curl_examples()
    assert len(examples) >= 7
    for path, body in examples:
        if "dimensions" in body:
            body = {**body, "dimensions": 32}  # the tiny test model has 64 dimensions
        r = tiny_client.post(path, json=body)
        assert r.status_code == 200, (path, body, r.text)
