"""Option parsing of `qembed bench`: mistakes are one clear message, before anything loads."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from qembed.cli.bench import _variant, bench_group


def test_a_variant_is_settings_overrides() -> None:
    assert _variant("int8:quantize=int8,threads=1") == ("int8", {"quantize": "int8", "threads": "1"})
    assert _variant("t2:threads=2") == ("t2", {"threads": "2"})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("int8", "NAME:field=value"),
        ("x:nosuchfield=1", "not field=value with a Settings field"),
        ("x:quantize=int9", "quantize"),
        ("x:threads=0", "threads"),
    ],
)
def test_bad_variants_say_what_to_write(text: str, message: str) -> None:
    result = CliRunner().invoke(bench_group, ["throughput", "--model", "/nonexistent", "--variant", text])
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workload", "paragraph"], "unknown workload"),
        (["--endpoint", "tei"], "NAME=http://host:port"),
        (["--sweep-batch-sizes", "8,x"], "comma-separated list of integers"),
        (["--sweep-workload", "chapter"], "choose one of"),
    ],
)
def test_bad_throughput_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(bench_group, ["throughput", "--model", "/nonexistent", *args])
    assert result.exit_code == 2 and message in result.output


def test_load_needs_an_endpoint_or_serve() -> None:
    result = CliRunner().invoke(bench_group, ["load"])
    assert result.exit_code == 2 and "--endpoint URL, or --serve" in result.output
