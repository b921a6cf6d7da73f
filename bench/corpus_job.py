"""Throughput of ``qembed embed-corpus``: one process, and ``--ray local`` with 1 and 2 workers.

    nice -n 10 .venv/bin/python bench/corpus_job.py --model minilm --docs 3000

Writes a JSONL corpus of short English passages (the shipped bench corpus, cut into
sentences, repeated with ids) to a temporary folder, runs the command as a subprocess for
each mode, and prints one JSON line per mode: the job's own report (documents and tokens
embedded, seconds from the first read to the last commit, docs/s, tokens/s) and the wall
time of the whole process (model loads and Ray start included).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def corpus(path: Path, n: int) -> Path:
    text = (ROOT / "src" / "qembed" / "bench" / "corpus" / "english.txt").read_text(encoding="utf-8")
    sentences = [s.strip() for s in text.replace("\n", " ").split(". ") if len(s.split()) >= 4]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            a, b = sentences[i % len(sentences)], sentences[(i * 7 + 3) % len(sentences)]
            fh.write(json.dumps({"id": f"d{i}", "text": f"{a}. {b}."}) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--docs", type=int, default=3000)
    parser.add_argument(
        "--modes",
        default="local,ray1,ray2",
        help="comma-separated: local, local-1t (--threads 1), ray1, ray2, ...",
    )
    parser.add_argument("--batch-tokens", type=int, default=8192)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = corpus(Path(tmp) / "docs.jsonl", args.docs)
        for mode in args.modes.split(","):
            out = Path(tmp) / f"out-{mode}"
            cmd = [sys.executable, "-m", "qembed.cli.main", "embed-corpus", str(source), "--out", str(out),
                   "--model", args.model, "--batch-tokens", str(args.batch_tokens), "--json"]  # fmt: skip
            if mode == "local-1t":  # one torch thread, as each Ray actor has with --cpus-per-worker 1
                cmd += ["--threads", "1"]
            if mode.startswith("ray"):
                workers = int(mode[3:] or 1)
                cmd += ["--ray", "local", "--workers", str(workers)]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - start
            if done.returncode != 0:
                print(json.dumps({"mode": mode, "error": done.stderr[-2000:]}))
                continue
            report = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                json.dumps(
                    {"mode": mode, "docs": args.docs, "model": args.model, "wall_s": round(wall, 1), **report}
                )
            )
            sys.stdout.flush()


if __name__ == "__main__":
    main()
