"""`qembed bench` without the bench extra says that it made no plots (log and report), instead
of silently leaving them out."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from qembed.bench import report as report_mod


def test_missing_matplotlib_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_matplotlib(report, out):
        raise ImportError("No module named 'matplotlib'")

    monkeypatch.setattr(report_mod, "throughput_plots", no_matplotlib)
    monkeypatch.setattr(report_mod, "throughput_markdown", lambda report, plots: "# report\n")
    with caplog.at_level(logging.WARNING, logger="qembed.bench.report"):
        paths = report_mod.write_report({"kind": "throughput"}, tmp_path, name="r")
    assert "qembed-server[bench]" in paths["markdown"].read_text()
    assert json.loads(paths["json"].read_text())["plots"] == []
    assert any("no plots" in r.getMessage() for r in caplog.records)
