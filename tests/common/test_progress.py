"""One progress library (rich, on stderr) behind every bar qembed draws."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from qembed.common.progress import Bar, progress_bar


def test_bar_counts_and_notes_on_its_console() -> None:
    out = io.StringIO()
    with Bar("exporting", 3, console=Console(file=out, width=120)) as bar:
        for step in ("a", "b", "c"):
            bar.note(f"step {step}")
            bar.update(1)
    text = out.getvalue()
    assert "exporting" in text and "3/3" in text and "step c" in text


def test_disabled_bar_draws_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with Bar("quiet", 2, enabled=False) as bar:
        bar.note("x")
        bar.update(2)
    assert capsys.readouterr() == ("", "")


def test_progress_bar_tasks_need_no_fields() -> None:
    out = io.StringIO()
    with progress_bar(Console(file=out, width=120)) as bar:
        task = bar.add_task("texts", total=4, completed=1)  # what qembed.eval.encode does
        bar.advance(task, 3)
    assert "4/4" in out.getvalue()


def test_export_steps_show_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from qembed.model.backends import artifacts

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")

    def build(tmp: Path, stage) -> None:
        with stage("writing"):
            (tmp / "model.bin").write_bytes(b"x")

    artifacts.cached_artifact("kind", folder, {}, build, steps=1, export_dir=tmp_path / "x", progress=True)
    captured = capsys.readouterr()
    assert captured.out == "" and "kind export of model" in captured.err and "1/1" in captured.err


def test_embedder_progress_bar(tiny_embedder, capsys: pytest.CaptureFixture[str]) -> None:
    quiet = tiny_embedder.encode(["a", "b c"])
    assert capsys.readouterr().err == ""
    shown = tiny_embedder.encode(["a", "b c"], show_progress_bar=True)
    assert "embedding" in capsys.readouterr().err
    np.testing.assert_array_equal(quiet, shown)
