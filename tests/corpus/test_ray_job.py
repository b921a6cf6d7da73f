"""``--ray``: a local Ray cluster, 2 embedder actors: the same rows as one machine, and it
resumes a run that one machine started."""

from __future__ import annotations

import pytest

from qembed.corpus import CorpusInput, CorpusOutput, read_output, run_local
from tests.corpus.conftest import min_cosine, write_jsonl, write_parquet

ray = pytest.importorskip("ray")

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield
    ray.shutdown()


def settings_for(model_dir):
    from qembed import Settings

    return Settings().overlay(model=str(model_dir), device="cpu", dtype="float32")


@pytest.mark.parametrize("kind", ["jsonl", "parquet"])
def test_two_workers_write_the_rows_one_machine_writes(
    local_ray, tmp_path, tiny_model_dir, tiny_embedder, corpus_docs, corpus_reference, kind
):
    from qembed.corpus.ray_job import run_ray

    write = write_jsonl if kind == "jsonl" else write_parquet
    write(tmp_path / "in" / "a.data", corpus_docs[:120])
    write(tmp_path / "in" / "b.data", corpus_docs[120:])
    for f in (tmp_path / "in").iterdir():
        f.rename(f.with_suffix(f".{kind}"))
    source = CorpusInput.of(tmp_path / "in")
    report = run_ray(
        "local", settings_for(tiny_model_dir), source, CorpusOutput(tmp_path / "ray"),
        workers=2, cpus_per_worker=0.5, batch_tokens=300, commit_every=50,
    )  # fmt: skip
    assert report.embedded == len(corpus_docs) and report.duplicates == 0
    assert len(report.rows_per_worker) == 2, report.rows_per_worker  # both actors embedded rows
    assert sum(report.rows_per_worker.values()) == len(corpus_docs)
    run_local(tiny_embedder, source, CorpusOutput(tmp_path / "local"), commit_every=50)
    ray_ids, ray_vectors, ray_tokens = read_output(tmp_path / "ray")
    ids, vectors, tokens = read_output(tmp_path / "local")
    assert sorted(ray_ids) == sorted(ids) and len(set(ray_ids)) == len(ray_ids)
    by_id = dict(zip(ids, range(len(ids)), strict=True))
    order = [by_id[i] for i in ray_ids]
    assert min_cosine(ray_vectors, vectors[order]) >= 0.99999
    assert min_cosine(ray_vectors, [corpus_reference[i] for i in ray_ids]) >= 0.99999
    assert ray_tokens == [tokens[k] for k in order]
    assert CorpusOutput(tmp_path / "ray").identity() == CorpusOutput(tmp_path / "local").identity()


def test_ray_resumes_a_run_one_machine_started(
    local_ray, tmp_path, tiny_model_dir, tiny_embedder, corpus_docs
):
    from qembed.corpus.ray_job import run_ray

    docs = [*corpus_docs, corpus_docs[0] | {"text": "a later duplicate"}]
    source = CorpusInput.of(write_jsonl(tmp_path / "docs.jsonl", docs))
    out = CorpusOutput(tmp_path / "out")
    run_local(
        tiny_embedder,
        CorpusInput.of(write_jsonl(tmp_path / "head.jsonl", corpus_docs[:70])),
        out,
        commit_every=35,
    )
    report = run_ray(
        "local", settings_for(tiny_model_dir), source, out, workers=2, cpus_per_worker=0.5, commit_every=50
    )
    assert report.already_done == 70
    assert report.embedded == len(corpus_docs) - 70
    ids, _, _ = read_output(out.folder)
    assert sorted(ids) == sorted(d["id"] for d in corpus_docs)
