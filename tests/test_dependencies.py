"""Every import in src/qembed (and in the bench/ scripts) is declared in pyproject.toml, so
an undeclared one fails CI.

- A module-level import (runs when qembed is imported) must be the standard library,
  qembed itself or a core dependency (``[project] dependencies``).
- An import inside a function, a ``try`` or ``if TYPE_CHECKING`` runs only on the path that
  needs it: it may also come from an optional extra (not ``test``).

Import names map to distributions with ``importlib.metadata.packages_distributions()``;
a module that is not installed here (an extra this venv lacks) is looked up by its own
name (or ``NOT_INSTALLED_NAMES``). The few exceptions are listed below with their reason, and checked to still hold.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "qembed"

# Imported directly, installed by the declared dependency that makes them part of its API.
VIA = {
    "starlette": "fastapi",  # fastapi's Request/Response/middleware types are starlette's
    "pydantic_core": "pydantic",  # pydantic pins its core exactly
}
# Import names of extras whose distribution is named otherwise, for venvs without them.
NOT_INSTALLED_NAMES = {"faiss": "faiss-cpu"}
# Run only inside another tool's own environment, never in qembed's.
FOREIGN = {
    "llama_cpp": {"bench/llamacpp_runner.py"},  # the worker script run by llama.cpp's venv
}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return normalize(match.group(1))


def declared(pyproject: Path) -> tuple[set[str], set[str]]:
    """(core dependency names, optional-extra names except ``test``), normalized."""
    project = tomllib.loads(pyproject.read_text())["project"]
    core = {requirement_name(r) for r in project.get("dependencies", [])}
    extras = {
        requirement_name(r)
        for extra, reqs in project.get("optional-dependencies", {}).items()
        if extra != "test"
        for r in reqs
    }
    return core, extras


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Imports(ast.NodeVisitor):
    """(top-level name, guarded?) of every absolute import in one module."""

    def __init__(self) -> None:
        self.found: list[tuple[str, bool]] = []
        self._depth = 0

    def _guarded(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = visit_Try = visit_TryStar = _guarded

    def visit_If(self, node: ast.If) -> None:
        if _type_checking(node.test):
            self._guarded(node)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.found.append((alias.name.split(".")[0], self._depth > 0))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level == 0 and node.module:
            self.found.append((node.module.split(".")[0], self._depth > 0))


def _imports_in(path: Path) -> list[tuple[str, bool]]:
    visitor = _Imports()
    visitor.visit(ast.parse(path.read_text(), filename=str(path)))
    return visitor.found


def _distributions(name: str, distributions: dict[str, list[str]]) -> set[str]:
    return {normalize(d) for d in distributions.get(name, [NOT_INSTALLED_NAMES.get(name, name)])}


def undeclared_imports(src: Path, pyproject: Path, package: str = "qembed") -> list[str]:
    """One line per import of ``src`` that pyproject.toml does not cover."""
    core, extras = declared(pyproject)
    distributions = md.packages_distributions()
    problems = []
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        for name, guarded in _imports_in(path):
            if name in sys.stdlib_module_names or name == package or rel in FOREIGN.get(name, ()):
                continue
            dists = _distributions(name, distributions)
            allowed = core | extras if guarded else core
            if dists & allowed or (name in VIA and normalize(VIA[name]) in core):
                continue
            where = "inside a function/try" if guarded else "at module level"
            need = (
                "a dependency or an extra"
                if guarded
                else "a core dependency (or import it inside the function that needs it)"
            )
            problems.append(
                f"{rel}: `{name}` ({', '.join(sorted(dists))}) imported {where} is not {need} in pyproject.toml"
            )
    return problems


def test_every_import_in_src_is_declared() -> None:
    assert undeclared_imports(SRC, ROOT / "pyproject.toml") == []


# bench/ scripts run where the extras they need are installed (the bench extra, the backends'),
# so any extra may be imported anywhere in them; scipy comes with sentence-transformers (bench).
BENCH = ROOT / "bench"
BENCH_VIA = {"scipy": "sentence-transformers"}


def undeclared_bench_imports(bench: Path, pyproject: Path) -> list[str]:
    core, extras = declared(pyproject)
    distributions = md.packages_distributions()
    siblings = {p.stem for p in bench.glob("*.py")}  # `from ann_bench import ...` beside it
    problems = []
    for path in sorted(bench.glob("*.py")):
        for name, _ in _imports_in(path):
            if name in sys.stdlib_module_names or name == "qembed" or name in siblings:
                continue
            dists = _distributions(name, distributions)
            if dists & (core | extras) or name in BENCH_VIA:
                continue
            problems.append(
                f"bench/{path.name}: `{name}` ({', '.join(sorted(dists))}) is in no extra of pyproject.toml"
            )
    return problems


def test_every_import_in_bench_is_declared() -> None:
    assert undeclared_bench_imports(BENCH, ROOT / "pyproject.toml") == []
    for name, parent in BENCH_VIA.items():
        assert any(requirement_name(r) == normalize(name) for r in md.requires(parent) or []), (name, parent)


def test_the_exceptions_still_hold() -> None:
    for name, parent in VIA.items():  # the parent still installs it
        assert any(requirement_name(r) == normalize(name) for r in md.requires(parent) or []), (name, parent)
    for name, files in FOREIGN.items():
        for rel in files:
            assert f"import {name}" in (SRC / rel).read_text(), (name, rel)


def test_tqdm_is_not_used() -> None:
    """One progress library (rich, qembed.common.progress)."""
    users = [
        p.relative_to(SRC).as_posix()
        for p in SRC.rglob("*.py")
        if re.search(r"^\s*(from|import) tqdm\b", p.read_text(), re.M)
    ]
    assert users == []


@pytest.mark.parametrize(
    ("source", "flagged"),
    [
        ("import tqdm\n", True),  # declared nowhere
        ("def f():\n    import tqdm\n", True),  # guarded, but declared nowhere either
        ("import faiss\n", True),  # an extra, imported at module level
        ("def f():\n    import faiss\n", False),
        ("try:\n    import faiss\nexcept ImportError:\n    faiss = None\n", False),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import faiss\n", False),
        ("import numpy, json\nfrom qembed.x import y\nfrom . import z\n", False),
        ("class A:\n    import faiss\n", True),  # a class body runs at import
        ("def f():\n    import pytest\n", True),  # the test extra is not for src
    ],
)
def test_the_check_catches_undeclared_imports(tmp_path: Path, source: str, flagged: bool) -> None:
    src = tmp_path / "qembed"
    src.mkdir()
    (src / "mod.py").write_text(source)
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "qembed"\ndependencies = ["numpy>=1.26", "uvicorn[standard]>=0.30"]\n'
        '[project.optional-dependencies]\nfaiss = ["faiss-cpu>=1.8"]\ntest = ["pytest>=8"]\n'
    )
    assert bool(undeclared_imports(src, pyproject)) is flagged


def test_the_bench_check_catches_an_undeclared_import(tmp_path: Path) -> None:
    (tmp_path / "helper.py").write_text("import numpy\n")
    (tmp_path / "run.py").write_text(
        "import helper\nimport json\ndef f():\n    import faiss\n    import tqdm\n"
    )
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text(
        '[project]\nname = "qembed"\ndependencies = ["numpy>=1.26"]\n'
        '[project.optional-dependencies]\nfaiss = ["faiss-cpu>=1.8"]\n'
    )
    problems = undeclared_bench_imports(tmp_path, pyproject)
    assert len(problems) == 1 and problems[0].startswith("bench/run.py: `tqdm`"), problems
