"""``qembed embed-corpus`` as a process: killed in the middle and run again, and its flag errors.

(Another model or prompt on an existing output is tested in process, in test_job.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from qembed.corpus import CorpusOutput, read_output
from tests.corpus.conftest import make_docs, min_cosine, write_jsonl

pytestmark = pytest.mark.e2e

N = 800  # with parts of 20 rows: a fast machine still has ~40 parts to go when the first one lands


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "qembed.cli.main", "embed-corpus", *args]


def wait_for_a_part(proc: subprocess.Popen, out: CorpusOutput, log, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not out.parts():
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(
                f"embed-corpus exited ({proc.returncode}) before committing a part:\n{log.read()[-3000:]}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail("no part committed within the timeout")
        time.sleep(0.02)  # polling for the condition, not a fixed wait


def test_killed_in_the_middle_then_rerun_every_id_exactly_once(tmp_path, tiny_model_dir, tiny_embedder):
    docs = make_docs(N, seed=3)
    source = write_jsonl(tmp_path / "docs.jsonl", docs)
    out = CorpusOutput(tmp_path / "out")
    args = command(str(source), "--out", str(out.folder), "--model", str(tiny_model_dir), "--commit-every", "20", "--batch-tokens", "150", "--json")  # fmt: skip
    with open(tmp_path / "first.log", "w+") as log:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)
        wait_for_a_part(proc, out, log)
        proc.kill()  # SIGKILL: no handler runs, a part may be half written under its temp name
        proc.wait(timeout=30)
    first = out.done_ids()
    assert 20 <= len(first) < N, "the run was not stopped in the middle"

    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    report = json.loads(again.stdout)
    assert report["already_done"] == len(first)
    assert report["embedded"] == N - len(first)
    assert report["rows_in_output"] == N
    ids, vectors, _ = read_output(out.folder)
    assert sorted(ids) == sorted(d["id"] for d in docs) and len(set(ids)) == N
    texts = {d["id"]: d["text"] for d in docs}
    reference = tiny_embedder.encode([texts[i] for i in ids], task="retrieval", input_type="document")
    assert min_cosine(vectors, reference) >= 0.99999
    assert not list(out.folder.glob(".part-*")), "the killed run's temporary part was left behind"


def test_flag_mistakes_fail_before_the_model_loads(tmp_path):
    source = write_jsonl(tmp_path / "docs.jsonl", make_docs(3))
    done = subprocess.run(
        command(str(source), "--out", str(tmp_path / "out"), "--model", str(tmp_path / "no-such-model"), "--prompt", "a", "--instruction", "b"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    assert "at most one of --prompt-name, --prompt, --instruction" in done.stderr
    missing = subprocess.run(command(str(tmp_path / "nothing.jsonl"), "--out", str(tmp_path / "out")), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert missing.returncode == 2 and "does not exist" in missing.stderr
