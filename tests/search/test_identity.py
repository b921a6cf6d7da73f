"""Model identity in every vector artifact: the record (``qembed.embedding.identity``), an
index refusing a different model with both named, warnings for precision/backend changes,
old indexes upgraded on their next write, and ``qembed index --reembed``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from qembed.embedding.identity import VectorIdentity

BASE = VectorIdentity(
    model_id="Org/Model-A", revision="a" * 64, dimension=64, normalize=True, document_prompt="",
    query_prompt="Instruct: x\nQuery:", dtype="float32", backend="torch", model="model-a",
)  # fmt: skip


def test_identity_round_trips_and_ignores_keys_a_later_version_adds() -> None:
    data = {**BASE.to_dict(), "added_later": 1}
    assert VectorIdentity.from_dict(data) == BASE
    assert VectorIdentity.from_json(BASE.to_json()) == BASE


@pytest.mark.parametrize(
    ("change", "severity"),
    [
        ({"model_id": "Org/Model-B"}, "error"),
        ({"revision": "b" * 64}, "error"),
        ({"dimension": 32}, "error"),
        ({"normalize": False}, "error"),
        ({"document_prompt": "passage: "}, "error"),
        ({"query_prompt": "query: "}, "error"),
        ({"dtype": "bfloat16"}, "warning"),
        ({"backend": "onnx"}, "warning"),
        ({"quantization": "int8:w8a8"}, "warning"),
    ],
)
def test_each_field_differs_with_its_severity(change: dict, severity: str) -> None:
    (diff,) = BASE.compare(replace(BASE, **change))
    (field,) = change
    assert (diff.field, diff.severity) == (field, severity)
    assert diff.recorded == getattr(BASE, field) and diff.current == change[field]


def test_the_name_used_to_load_is_not_compared_and_a_shared_hub_commit_is_one_revision() -> None:
    assert BASE.compare(replace(BASE, model="Org/Model-A")) == []
    a = replace(BASE, hub_commit="c0ffee", revision="1" * 64)
    assert a.compare(replace(a, revision="2" * 64)) == []  # same commit, re-downloaded elsewhere
    assert [d.field for d in a.compare(replace(a, hub_commit="beef", revision="2" * 64))] == ["revision"]
    assert BASE.compare(replace(BASE, revision="")) == []  # unknown (an HTTP encoder): not a difference


def test_identity_of_an_embedder_records_prompts_revision_dimensions(tiny_embedder) -> None:
    from qembed.common.fingerprint import model_fingerprint

    ident = VectorIdentity.of(tiny_embedder)
    info = tiny_embedder.info
    assert ident.model_id == info.model_id and ident.dimension == info.dimension
    assert ident.revision == model_fingerprint(Path(info.path))
    assert ident.query_prompt == tiny_embedder.resolve(task="retrieval", input_type="query").prefix
    assert ident.query_prompt.startswith("Instruct:") and ident.document_prompt == ""
    assert (ident.dtype, ident.backend, ident.quantization) == (info.dtype, info.backend, "none")
    small = VectorIdentity.of(tiny_embedder, dimensions=info.min_dimensions)
    assert [d.field for d in ident.compare(small)] == ["dimension"]


def test_same_weights_in_bfloat16_agree_with_float32_within_1e3_cosine(tiny_embedder) -> None:
    """The measurement behind 'a dtype change is a warning, not an error' (the session's
    embedder is bfloat16 or float32 by the CPU; the other precision is loaded here)."""
    from qembed import Embedder

    texts = ["hello world", "the pod stays pending: not enough cpu", "zwei drei vier", "a b c d e f g"]
    other_dtype = "float32" if tiny_embedder.info.dtype == "bfloat16" else "bfloat16"
    other = Embedder(tiny_embedder.info.path, device="cpu", dtype=other_dtype)
    diffs = VectorIdentity.of(tiny_embedder).compare(VectorIdentity.of(other))
    assert [(d.field, d.severity) for d in diffs] == [("dtype", "warning")]
    cos = (np.asarray(tiny_embedder.encode(texts)) * np.asarray(other.encode(texts))).sum(axis=1)
    assert cos.min() > 1 - 1e-3


# -- an index records the identity and refuses another ----------------------------------------------
DIM = 16


class IdentityHashEncoder:
    """Deterministic vectors from (weights, text) with a word-count tokenizer and a full identity:
    ``weights`` plays the model revision, so two weights give unrelated vectors."""

    model = model_id = "hash-model"
    window = 512

    def __init__(
        self,
        weights: str = "w1",
        *,
        dimension: int = DIM,
        dtype: str = "float32",
        fail_after: int | None = None,
    ) -> None:
        self.weights, self.dimension, self.fail_after = weights, dimension, fail_after
        self.identity = VectorIdentity(
            model_id=self.model_id, revision=weights, dimension=dimension, normalize=True, document_prompt="",
            query_prompt="query: ", dtype=dtype, backend="hash", model=self.model,
        )  # fmt: skip
        self.embedded: list[str] = []
        self.calls = 0

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(t.split()) for t in texts]

    def vector(self, text: str) -> np.ndarray:
        import hashlib

        seed = int.from_bytes(hashlib.sha256(f"{self.weights}\0{text}".encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(self.dimension).astype(np.float32)
        return v / np.linalg.norm(v)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise KeyboardInterrupt  # a kill between two commits
        self.calls += 1
        self.embedded.extend(texts)
        return np.stack([self.vector(t) for t in texts])

    def encode_query(self, text: str) -> np.ndarray:
        return self.vector(text)


class LegacyHashEncoder(IdentityHashEncoder):
    """An encoder as before identities (only model, model_id, dimension): writes legacy meta."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        del self.identity


def _docs(folder: Path, n: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"p{i}.md").write_text(
            f"# Page {i}\n\nParagraph {i} about topic {i * 7}.\n\n## More\n\nWords {i} here.\n"
        )
    return folder


def _build(tmp_path: Path, encoder, n: int = 6):
    from qembed.search.api import SearchIndex

    data = tmp_path / "data"
    with SearchIndex.open("notes", encoder=encoder, data_dir=str(data), create=True) as idx:
        idx.index([str(_docs(tmp_path / "docs", n))])
    return data


def _all_vectors(data: Path) -> dict[str, np.ndarray]:
    from qembed.search.store import open_store

    with open_store("notes", data_dir=str(data), create=False) as store:
        hashes = [c.content_hash for d in store.doc_hashes() for c in store.chunks_of(d)]
        assert hashes
        return {h: store.vectors_for([h])[h] for h in hashes}


def _texts(data: Path) -> dict[str, str]:
    from qembed.search.store import open_store

    with open_store("notes", data_dir=str(data), create=False) as store:
        return {c.content_hash: c.embed_text for d in store.doc_hashes() for c in store.chunks_of(d)}


def test_an_index_records_the_identity_and_refuses_other_weights_naming_both(tmp_path: Path) -> None:
    from qembed.errors import InputError
    from qembed.search.api import SearchIndex
    from qembed.search.store import open_store

    data = _build(tmp_path, IdentityHashEncoder("w1"))
    with open_store("notes", data_dir=str(data), create=False) as store:
        assert VectorIdentity.from_json(store.get_meta()["identity"]) == IdentityHashEncoder("w1").identity
    with pytest.raises(InputError) as exc:
        SearchIndex.open("notes", encoder=IdentityHashEncoder("w2"), data_dir=str(data))
    message = exc.value.message
    assert "revision: 'w1' recorded, 'w2' now" in message
    assert "hash-model@w1" in message and "hash-model@w2" in message
    assert "qembed index --reembed --index notes" in message


def test_another_dtype_of_the_same_weights_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from qembed.search.api import SearchIndex

    data = _build(tmp_path, IdentityHashEncoder("w1"))
    with caplog.at_level("WARNING", logger="qembed.search.index"):
        with SearchIndex.open(
            "notes", encoder=IdentityHashEncoder("w1", dtype="bfloat16"), data_dir=str(data)
        ) as idx:
            assert idx.search("topic 7", k=2)
    assert "dtype: 'float32' recorded, 'bfloat16' now" in caplog.text


def test_an_index_without_identity_keeps_working_and_gets_it_on_the_next_write(tmp_path: Path) -> None:
    from qembed.search.api import SearchIndex
    from qembed.search.store import open_store

    data = _build(tmp_path, LegacyHashEncoder("w1"))
    with open_store("notes", data_dir=str(data), create=False) as store:
        assert "identity" not in store.get_meta() and store.get_meta()["model_id"] == "hash-model"
    current = IdentityHashEncoder("w1")
    with SearchIndex.open("notes", encoder=current, data_dir=str(data)) as idx:
        assert idx.search("topic 7", k=2)
        assert "identity" not in idx.store.get_meta()  # reading writes nothing
        idx.add_documents([{"id": "extra", "text": "one more page"}])
        assert VectorIdentity.from_json(idx.store.get_meta()["identity"]) == current.identity


# -- qembed index --reembed -------------------------------------------------------------------------
def test_reembed_replaces_every_vector_without_the_sources_and_records_the_new_identity(
    tmp_path: Path,
) -> None:
    import shutil

    from qembed.errors import InputError
    from qembed.search.api import SearchIndex

    data = _build(tmp_path, IdentityHashEncoder("w1"))
    before = _all_vectors(data)
    shutil.rmtree(tmp_path / "docs")  # the chunks are in the index: no source is read
    new = IdentityHashEncoder("w2")
    with SearchIndex.open("notes", encoder=new, data_dir=str(data), reembed=True) as idx:
        report = idx.reembed(commit_every=2)
        stats = idx.stats()
    assert report.documents_updated == 6 and report.chunks_written == stats.chunks == len(before)
    texts = _texts(data)
    assert sorted(new.embedded) == sorted(texts.values())  # each chunk text once
    after = _all_vectors(data)
    for h, text in texts.items():
        np.testing.assert_allclose(after[h], new.vector(text), atol=1e-6)
        assert float(after[h] @ before[h]) < 0.99  # really replaced
    with SearchIndex.open("notes", encoder=IdentityHashEncoder("w2"), data_dir=str(data)) as idx:
        # the hash encoder's query vector of a chunk's exact text is that chunk's new vector
        target, text = next((h, t) for h, t in texts.items() if "Page 3" in t)
        hit = idx.search(text, k=1)[0]
        assert VectorIdentity.from_json(idx.store.get_meta()["identity"]).revision == "w2"
        assert idx.store.get_meta()["reembed"] == ""
    assert hit.chunk.content_hash == target and hit.score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(InputError, match="revision: 'w2' recorded, 'w1' now"):
        SearchIndex.open("notes", encoder=IdentityHashEncoder("w1"), data_dir=str(data))


def test_a_killed_reembed_is_refused_until_resumed_and_the_resume_embeds_only_the_rest(
    tmp_path: Path,
) -> None:
    from qembed.errors import InputError
    from qembed.search.api import SearchIndex

    data = _build(tmp_path, IdentityHashEncoder("w1"))
    texts = _texts(data)
    killed = IdentityHashEncoder("w2", fail_after=1)
    with SearchIndex.open("notes", encoder=killed, data_dir=str(data), reembed=True) as idx:
        with pytest.raises(KeyboardInterrupt):
            idx.reembed(commit_every=2)
    first = set(killed.embedded)
    assert 0 < len(first) < len(texts)
    for enc in (IdentityHashEncoder("w1"), IdentityHashEncoder("w2")):  # mixed vectors: nobody may use it
        with pytest.raises(InputError, match="half re-embedded.*--reembed --index notes --model hash-model"):
            SearchIndex.open("notes", encoder=enc, data_dir=str(data))
    resumed = IdentityHashEncoder("w2")
    with SearchIndex.open("notes", encoder=resumed, data_dir=str(data), reembed=True) as idx:
        idx.reembed(commit_every=2)
    assert not first & set(resumed.embedded)  # the committed batch is not embedded again
    assert first | set(resumed.embedded) == set(texts.values())
    after = _all_vectors(data)
    for h, text in texts.items():
        np.testing.assert_allclose(after[h], resumed.vector(text), atol=1e-6)
    with SearchIndex.open("notes", encoder=IdentityHashEncoder("w2"), data_dir=str(data)) as idx:
        assert idx.search("topic 7", k=1)


def test_reembed_to_another_dimension_is_refused_with_the_rebuild_command(tmp_path: Path) -> None:
    from qembed.errors import InputError
    from qembed.search.api import SearchIndex

    data = _build(tmp_path, IdentityHashEncoder("w1"))
    with SearchIndex.open(
        "notes", encoder=IdentityHashEncoder("w2", dimension=8), data_dir=str(data), reembed=True
    ) as idx:
        with pytest.raises(InputError, match=r"holds 16-dimension vectors.*--rebuild --index notes"):
            idx.reembed()
        assert "reembed" not in idx.store.get_meta()  # refused before anything was written
    assert len(_all_vectors(data)) > 0


@pytest.mark.slow  # five model loads in one process: ~25 s on 2 busy cores
def test_cli_reembed_moves_a_tiny_model_index_to_new_weights(tmp_path: Path, tiny_model_dir: Path) -> None:
    """End to end with real models: the same model id, other weights (another seed) is another
    revision; the CLI names it, and ``qembed index --reembed`` migrates without the sources."""
    import json
    import shutil

    from click.testing import CliRunner

    from qembed.cli.main import cli
    from qembed.dev.make_model import make_model

    other = make_model(tmp_path / "other" / tiny_model_dir.name, shape="tiny", seed=1)
    data = str(tmp_path / "data")
    run = lambda *a: CliRunner().invoke(cli(), [*a, "--index", "notes", "--data-dir", data])  # noqa: E731
    built = run("index", str(_docs(tmp_path / "docs")), "--model", str(tiny_model_dir), "--json")
    assert built.exit_code == 0, built.output
    shutil.rmtree(tmp_path / "docs")
    refused = run("search", "topic 7", "--model", str(other))
    assert (
        refused.exit_code == 2
        and "revision:" in refused.output
        and "--reembed --index notes" in refused.output
    )
    moved = run("index", "--reembed", "--model", str(other), "--json")
    assert moved.exit_code == 0, moved.output
    report = json.loads(moved.output.strip().splitlines()[-1])
    assert report["documents_updated"] == 6 and report["chunks_written"] == report["index"]["chunks"]
    found = run("search", "topic 7", "--model", str(other))
    assert found.exit_code == 0, found.output
    again = run("search", "topic 7", "--model", str(tiny_model_dir))
    assert again.exit_code == 2 and "revision:" in again.output


@pytest.mark.slow  # Milvus Lite's start: ~6 s; the flow is the Store interface the embedded tests cover
def test_reembed_on_the_milvus_store(tmp_path: Path) -> None:
    """The same flow through the Store interface on Milvus Lite (identity in its meta collection)."""
    pytest.importorskip("milvus_lite", reason="pip install 'qembed-server[milvus]'")
    from qembed.errors import InputError
    from qembed.search.api import SearchIndex
    from qembed.search.store import open_store

    uri = str(tmp_path / "milvus.db")
    docs = _docs(tmp_path / "docs", 3)
    with SearchIndex(open_store("notes", store_uri=uri), IdentityHashEncoder("w1")) as idx:
        idx.index([str(docs)])
    new = IdentityHashEncoder("w2")
    with pytest.raises(InputError, match="revision: 'w1' recorded, 'w2' now"):
        SearchIndex(open_store("notes", store_uri=uri), new)
    with SearchIndex(open_store("notes", store_uri=uri), new, reembedding=True) as idx:
        report = idx.reembed(commit_every=2)
        store = idx.store
        chunks = [c for d in store.doc_hashes() for c in store.chunks_of(d)]
        assert report.chunks_written == len(chunks) == idx.stats().chunks
        for c in chunks:
            np.testing.assert_allclose(
                store.vectors_for([c.content_hash])[c.content_hash], new.vector(c.embed_text), atol=1e-5
            )
    with SearchIndex(open_store("notes", store_uri=uri), IdentityHashEncoder("w2")) as idx:
        hit = idx.search(chunks[0].embed_text, k=1)[0]  # its exact text: its own new vector
        assert hit.chunk.chunk_id == chunks[0].chunk_id and hit.score == pytest.approx(1.0, abs=1e-4)


def test_a_reembed_to_another_model_after_a_killed_one_starts_over(tmp_path: Path) -> None:
    from qembed.search.api import SearchIndex

    data = _build(tmp_path, IdentityHashEncoder("w1"))
    texts = _texts(data)
    with SearchIndex.open(
        "notes", encoder=IdentityHashEncoder("w2", fail_after=1), data_dir=str(data), reembed=True
    ) as idx:
        with pytest.raises(KeyboardInterrupt):
            idx.reembed(commit_every=2)
    third = IdentityHashEncoder("w3")
    with SearchIndex.open("notes", encoder=third, data_dir=str(data), reembed=True) as idx:
        idx.reembed(commit_every=2)
    assert sorted(third.embedded) == sorted(texts.values())  # the w2 batch is not kept
    for h, vec in _all_vectors(data).items():
        np.testing.assert_allclose(vec, third.vector(texts[h]), atol=1e-6)


def test_cli_reembed_takes_no_paths_and_needs_an_index(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from qembed.cli.main import cli

    with_paths = CliRunner().invoke(cli(), ["index", str(tmp_path), "--reembed", "--index", "x"])
    assert with_paths.exit_code == 2 and "--reembed takes no PATHS" in with_paths.output
    no_index = CliRunner().invoke(cli(), ["index", "--reembed"])
    assert no_index.exit_code == 2 and "--reembed --index NAME" in no_index.output
