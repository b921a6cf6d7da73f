"""Part files: whole or absent, ids for resume, and the identity every part records."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from qembed.corpus.output import CORPUS_KEY, IDENTITY_KEY, CorpusIdentity, CorpusOutput, read_output
from qembed.embedding.identity import VectorIdentity
from qembed.errors import InputError

VECTORS = VectorIdentity(
    model_id="Org/Model-A",
    revision="a" * 64,
    dimension=4,
    normalize=True,
    document_prompt="",
    query_prompt="Instruct: find\nQuery:",
    dtype="float32",
    backend="torch",
)
IDENTITY = CorpusIdentity(VECTORS, input_type="document", prompt="", long_text="chunk", max_tokens=512)


def rows(ids: list[str], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((len(ids), 4)).astype(np.float32)


def test_a_part_holds_id_vector_tokens_and_the_identity(tmp_path):
    out = CorpusOutput(tmp_path / "out")
    ids = ["a", "b", "c"]
    path = out.write_part(0, ids, rows(ids), [3, 4, 5], IDENTITY)
    assert path.name == "part-000000.parquet"
    schema = pq.read_schema(path)
    assert str(schema.field("vector").type) == "fixed_size_list<element: float>[4]"
    assert json.loads(schema.metadata[IDENTITY_KEY])["model_id"] == "Org/Model-A"
    assert json.loads(schema.metadata[CORPUS_KEY])["input_type"] == "document"
    got_ids, got, tokens = read_output(out.folder)
    assert got_ids == ids and tokens == [3, 4, 5]
    np.testing.assert_array_equal(got, rows(ids))
    assert out.identity() == IDENTITY
    assert not list(out.folder.glob(".*.tmp"))


def test_parts_are_read_in_commit_order_and_give_the_done_ids(tmp_path):
    out = CorpusOutput(tmp_path)
    for index in (0, 1, 10):
        ids = [f"{index}-{k}" for k in range(2)]
        out.write_part(index, ids, rows(ids), [1, 1], IDENTITY)
    assert [p.name for p in out.parts()] == [
        "part-000000.parquet",
        "part-000001.parquet",
        "part-000010.parquet",
    ]
    assert out.next_index() == 11
    assert out.done_ids() == {"0-0", "0-1", "1-0", "1-1", "10-0", "10-1"}
    assert read_output(tmp_path)[0][-2:] == ["10-0", "10-1"]


def test_a_killed_runs_temporary_part_is_never_read_and_is_cleaned(tmp_path):
    out = CorpusOutput(tmp_path)
    out.write_part(0, ["a"], rows(["a"]), [1], IDENTITY)
    (tmp_path / ".part-000001.parquet.tmp").write_bytes(b"PAR1 half written")
    assert out.done_ids() == {"a"} and out.next_index() == 1
    out.clean_temp()
    assert not (tmp_path / ".part-000001.parquet.tmp").exists()
    assert (tmp_path / "part-000000.parquet").exists()


def test_another_model_is_refused_naming_both(tmp_path):
    out = CorpusOutput(tmp_path)
    out.write_part(0, ["a"], rows(["a"]), [1], IDENTITY)
    other = dataclasses.replace(
        IDENTITY, vectors=dataclasses.replace(VECTORS, model_id="Org/Model-B", revision="b" * 64)
    )
    with pytest.raises(InputError) as err:
        out.check_identity(other)
    message = err.value.message
    assert "Org/Model-A@aaaaaaaaaaaa" in message and "Org/Model-B@bbbbbbbbbbbb" in message
    assert "model_id: 'Org/Model-A' recorded, 'Org/Model-B' now" in message
    assert "--overwrite" in message
    assert out.done_ids() == {"a"}  # refused: nothing deleted


def test_another_prompt_or_window_policy_is_refused(tmp_path):
    out = CorpusOutput(tmp_path)
    out.write_part(0, ["a"], rows(["a"]), [1], IDENTITY)
    with pytest.raises(InputError, match="prompt: '' recorded, 'passage: ' now"):
        out.check_identity(dataclasses.replace(IDENTITY, prompt="passage: "))
    with pytest.raises(InputError, match="long_text: 'chunk' recorded, 'truncate' now"):
        out.check_identity(dataclasses.replace(IDENTITY, long_text="truncate"))


def test_the_same_model_on_another_engine_is_a_warning(tmp_path):
    out = CorpusOutput(tmp_path)
    out.write_part(0, ["a"], rows(["a"]), [1], IDENTITY)
    bf16 = dataclasses.replace(IDENTITY, vectors=dataclasses.replace(VECTORS, dtype="bfloat16"))
    assert out.check_identity(bf16) == ["dtype: 'float32' recorded, 'bfloat16' now"]


def test_overwrite_deletes_the_parts_and_nothing_else(tmp_path):
    out = CorpusOutput(tmp_path)
    out.write_part(0, ["a"], rows(["a"]), [1], IDENTITY)
    (tmp_path / "README.txt").write_text("mine")
    other = dataclasses.replace(IDENTITY, prompt="passage: ")
    assert out.check_identity(other, overwrite=True) == []
    assert out.parts() == [] and (tmp_path / "README.txt").read_text() == "mine"


def test_a_folder_of_foreign_parquet_is_not_taken_for_an_output(tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"id": ["x"]}), tmp_path / "part-000000.parquet")
    with pytest.raises(InputError, match="not the output of qembed embed-corpus"):
        CorpusOutput(tmp_path).identity()


def test_parts_of_two_models_are_reported(tmp_path):
    out = CorpusOutput(tmp_path)
    out.write_part(0, ["a"], rows(["a"]), [1], IDENTITY)
    out.write_part(1, ["b"], rows(["b"]), [1], dataclasses.replace(IDENTITY, prompt="passage: "))
    with pytest.raises(
        InputError, match="mixes vectors of two models: part-000000.parquet has .* part-000001.parquet has"
    ):
        out.identity()


def test_out_must_be_a_folder(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(InputError, match="is a file"):
        CorpusOutput(tmp_path / "f")


def test_a_second_writer_is_refused(tmp_path):
    from qembed.corpus.job import locked

    out = CorpusOutput(tmp_path)
    lock = locked(out)
    try:
        with pytest.raises(InputError, match="another qembed embed-corpus run is writing"):
            locked(CorpusOutput(tmp_path))
    finally:
        lock.release()
    locked(out).release()
