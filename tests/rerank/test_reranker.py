"""Reranker parity with the references, written here with plain transformers / sentence-transformers:

- Qwen3-Reranker: the model card's own code (AutoModelForCausalLM, its prefix/suffix, left
  padding, log_softmax over the [no, yes] logits of the last position) on the tiny fixture;
- cross-encoders: ``sentence_transformers.CrossEncoder(folder).predict``.

Within 1e-5 in float32 in every batch shape: one pair alone, mixed lengths, equal lengths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qembed.errors import InputError, InputTooLong
from qembed.rerank import prompts
from qembed.rerank.protocol import relevance
from tests.rerank.conftest import SMALL_WINDOW

pytestmark = pytest.mark.integration

TASK = "Given a web search query, retrieve relevant passages that answer the query"
QUERIES = ["What is the capital of China?", "Explain gravity"]
DOCUMENTS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other. It gives weight to physical objects and "
    "is responsible for the movement of planets around the sun.",
]
MIXED = [(q, d) for q in QUERIES for d in DOCUMENTS] + [
    ("x", "short"),
    ("南京在哪里？", "南京是江苏省的省会。"),
]
EQUAL = [("which number?", f"number {i}") for i in range(1, 6)]  # digits are single tokens: same length


class CardReference:
    """Qwen/Qwen3-Reranker-0.6B's README code, verbatim but for the model path and max_length."""

    def __init__(self, folder: Path, max_length: int = 8192) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
        self.token_false_id = self.tokenizer.convert_tokens_to_ids("no")
        self.token_true_id = self.tokenizer.convert_tokens_to_ids("yes")
        self.max_length = max_length
        prefix = (
            "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
            'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
        )
        suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
        self.prefix_tokens = self.tokenizer.encode(prefix, add_special_tokens=False)
        self.suffix_tokens = self.tokenizer.encode(suffix, add_special_tokens=False)

    @staticmethod
    def format_instruction(instruction, query, doc):
        if instruction is None:
            instruction = "Given a web search query, retrieve relevant passages that answer the query"
        return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"

    def process_inputs(self, pairs):
        inputs = self.tokenizer(
            pairs,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=self.max_length - len(self.prefix_tokens) - len(self.suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = self.prefix_tokens + ele + self.suffix_tokens
        return self.tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=self.max_length)

    def compute_logits(self, inputs):
        with self.torch.no_grad():
            batch_scores = self.model(**inputs).logits[:, -1, :]
            true_vector = batch_scores[:, self.token_true_id]
            false_vector = batch_scores[:, self.token_false_id]
            batch_scores = self.torch.stack([false_vector, true_vector], dim=1)
            batch_scores = self.torch.nn.functional.log_softmax(batch_scores, dim=1)
            return batch_scores[:, 1].exp().numpy(), (batch_scores[:, 1] - batch_scores[:, 0]).numpy()

    def scores(self, pairs, instruction=TASK, *, alone: bool = True):
        """(probabilities, log-odds) of each (query, doc); ``alone``: one pair per forward pass."""
        texts = [self.format_instruction(instruction, q, d) for q, d in pairs]
        if not alone:
            return self.compute_logits(self.process_inputs(texts))
        out = [self.compute_logits(self.process_inputs([t])) for t in texts]
        return np.concatenate([p for p, _ in out]), np.concatenate([r for _, r in out])


@pytest.fixture(scope="module")
def card(reranker_dir: Path) -> CardReference:
    return CardReference(reranker_dir)


def test_prompt_strings_are_the_model_cards() -> None:
    assert prompts.PREFIX.endswith("<|im_end|>\n<|im_start|>user\n")
    assert prompts.SUFFIX == "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert prompts.body("I", "q", "d") == "<Instruct>: I\n<Query>: q\n<Document>: d"
    assert prompts.DEFAULT_INSTRUCTION == TASK


@pytest.mark.parametrize("pairs", [MIXED, EQUAL], ids=["mixed-lengths", "equal-lengths"])
def test_qwen3_parity_with_the_model_card_in_every_batch_shape(tiny_reranker, card, pairs) -> None:
    ref_prob, ref_raw = card.scores(pairs, alone=True)
    _, card_batched = card.scores(pairs, alone=False)
    lengths = {len(w.ids) for w in tiny_reranker.prepare(pairs).windows}
    assert (len(lengths) == 1) == (pairs is EQUAL)  # the shapes are what their names say
    for batch_size in (1, 2, 3, len(pairs)):
        raw = tiny_reranker.score(pairs, raw=True, batch_size=batch_size)
        assert raw.dtype == np.float32 and raw.shape == (len(pairs),)
        np.testing.assert_allclose(raw, ref_raw, atol=1e-5, rtol=0)
        np.testing.assert_allclose(raw, card_batched, atol=1e-5, rtol=0)
    np.testing.assert_allclose(tiny_reranker.score(pairs), ref_prob, atol=1e-5, rtol=0)
    # the scores are not all alike (a constant model would pass any parity on equal inputs)
    assert np.ptp(ref_raw) > 1e-3


def test_qwen3_run_any_batch_composition_gives_the_same_score(tiny_reranker) -> None:
    windows = tiny_reranker.prepare(MIXED).windows
    alone = np.array([tiny_reranker.run([w])[0] for w in windows])
    together = tiny_reranker.run(windows)
    reversed_ = tiny_reranker.run(windows[::-1])[::-1]
    np.testing.assert_allclose(together, alone, atol=1e-5, rtol=0)
    np.testing.assert_allclose(reversed_, alone, atol=1e-5, rtol=0)
    assert [w.owner for w in windows] == list(range(len(MIXED)))


def test_qwen3_caller_instruction_reaches_the_model(tiny_reranker, card) -> None:
    instruction = "Find the passage in the same language"
    _, ref = card.scores(MIXED[:3], instruction=instruction)
    raw = tiny_reranker.score(MIXED[:3], instruction=instruction, raw=True)
    np.testing.assert_allclose(raw, ref, atol=1e-5, rtol=0)
    assert np.abs(raw - tiny_reranker.score(MIXED[:3], raw=True)).max() > 1e-4


def test_rank_orders_by_score_with_top_n_and_documents(tiny_reranker) -> None:
    query = "Explain gravity"
    docs = [d for _, d in MIXED]
    scores = tiny_reranker.score([(query, d) for d in docs])
    ranked = tiny_reranker.rank(query, docs)
    expected = sorted(range(len(docs)), key=lambda i: (-scores[i], i))
    assert [r.index for r in ranked] == expected
    assert [r.score for r in ranked] == pytest.approx([float(scores[i]) for i in expected], abs=1e-6)
    assert all(r.document is None for r in ranked)
    assert all(abs(relevance(np.array([r.raw_score]))[0] - r.score) < 1e-6 for r in ranked)
    top = tiny_reranker.rank(query, docs, top_n=2, return_documents=True)
    assert [(r.index, r.document) for r in top] == [(i, docs[i]) for i in expected[:2]]
    assert len(tiny_reranker.rank(query, docs, top_n=100)) == len(docs)


def test_rank_ties_keep_the_callers_order(tiny_reranker) -> None:
    ranked = tiny_reranker.rank("q", ["same text", "other", "same text"])
    same = [r.index for r in ranked if r.index in (0, 2)]
    assert same == [0, 2]


def test_truncation_keeps_prompt_query_and_suffix_like_the_card(small_window_reranker, reranker_dir) -> None:
    rr = small_window_reranker
    long_doc = "Gravity pulls things down. " * 20
    pairs = [("Explain gravity", long_doc), ("Explain gravity", "short")]
    prepared = rr.prepare(pairs)
    assert prepared.truncated == [True, False]
    first = prepared.windows[0].ids
    assert len(first) == SMALL_WINDOW == prepared.tokens[0]
    assert first[: len(rr.prefix_ids)] == rr.prefix_ids and first[-len(rr.suffix_ids) :] == rr.suffix_ids
    body = rr.tokenizer.encode(prompts.body(TASK, "Explain gravity", long_doc))
    assert (
        first[len(rr.prefix_ids) : -len(rr.suffix_ids)]
        == body[: SMALL_WINDOW - len(rr.prefix_ids) - len(rr.suffix_ids)]
    )
    _, ref = CardReference(reranker_dir, max_length=SMALL_WINDOW).scores(pairs)
    np.testing.assert_allclose(rr.score(pairs, raw=True), ref, atol=1e-5, rtol=0)


@pytest.mark.parametrize("which", ["qwen3", "cross-encoder"])
def test_max_doc_tokens_scores_the_first_n_tokens_of_each_document(
    which: str, tiny_reranker, tiny_cross_encoder
) -> None:
    """Cohere v2's max_tokens_per_doc: the same windows as sending each document's first N
    tokens (cut in the text where the N-th token ends); shorter documents are untouched."""
    rr = tiny_reranker if which == "qwen3" else tiny_cross_encoder
    doc = "Gravity pulls things down, and 重力 keeps the Moon in orbit around the Earth."
    ids = rr.tokenizer(doc, add_special_tokens=False)["input_ids"]
    first = rr.tokenizer.decode(ids[:5])
    pairs = [("Explain gravity", doc), ("Explain gravity", "short")]
    cut = rr.prepare(pairs, max_doc_tokens=5)
    manual = rr.prepare([("Explain gravity", first), ("Explain gravity", "short")])
    assert [w.ids for w in cut.windows] == [w.ids for w in manual.windows]
    assert cut.windows[0].ids != rr.prepare(pairs).windows[0].ids
    with pytest.raises(InputError, match="max_tokens_per_doc"):
        rr.prepare(pairs, max_doc_tokens=0)


def test_too_long_is_an_error_when_asked(small_window_reranker) -> None:
    long_doc = "Gravity pulls things down. " * 20
    total = small_window_reranker.count_tokens([("Explain gravity", long_doc)])[0]
    assert total > SMALL_WINDOW
    with pytest.raises(InputTooLong, match=rf"documents\[1\].* {total} tokens; the limit is {SMALL_WINDOW}"):
        small_window_reranker.prepare(
            [("Explain gravity", "ok"), ("Explain gravity", long_doc)], long_text="error"
        )
    with pytest.raises(InputTooLong):
        small_window_reranker.rank("Explain gravity", [long_doc], long_text="error")


def test_query_that_fills_the_window_is_an_input_error(small_window_reranker) -> None:
    with pytest.raises(InputError, match="query and instruction alone") as info:
        small_window_reranker.prepare([("gravity " * 60, "a document")])
    assert not isinstance(info.value, InputTooLong) and info.value.param == "query"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda r: r.rank("", ["doc"]), "query must be a non-empty string"),
        (lambda r: r.rank("   ", ["doc"]), "query must be a non-empty string"),
        (lambda r: r.rank("q", []), "documents is empty"),
        (lambda r: r.rank("q", "one string"), "documents must be a list"),
        (lambda r: r.rank("q", ["ok", 3]), r"documents\[1\] is a int, not a string"),
        (lambda r: r.rank("q", ["ok", {"text": "x"}]), r"documents\[1\] is a dict"),
        (lambda r: r.rank("q", ["ok", ""]), r"documents\[1\] is empty"),
        (lambda r: r.rank("q", ["ok"], top_n=0), "top_n must be a positive integer"),
        (lambda r: r.score([]), "No pairs"),
        (lambda r: r.score([("q",)]), r"pairs\[0\] must be a \(query, document\) pair"),
        (lambda r: r.score([("q", "d")], instruction=""), "instruction must be a non-empty string"),
        (lambda r: r.prepare([("q", "d")], long_text="chunk"), "long_text must be 'truncate' or 'error'"),
    ],
)
def test_bad_input_is_an_input_error(tiny_reranker, call, message) -> None:
    with pytest.raises(InputError, match=message):
        call(tiny_reranker)


def test_info_describes_the_model(tiny_reranker, reranker_dir: Path) -> None:
    info = tiny_reranker.info
    assert (info.model_id, info.kind, info.max_length) == (reranker_dir.name, "qwen3-reranker", 8192)
    assert info.default_instruction == TASK and (info.device, info.dtype) == ("cpu", "float32")
    assert tiny_reranker.count_tokens([("q", "d")]) == [
        len(tiny_reranker.prepare([("q", "d")]).windows[0].ids)
    ]


# -- cross-encoders ----------------------------------------------------------------------------
CE_PAIRS = [(q, d) for q in QUERIES for d in DOCUMENTS] + [
    ("a much longer query with many words in it", "tiny")
]


def test_cross_encoder_equals_sentence_transformers_predict(tiny_cross_encoder, cross_encoder_dir) -> None:
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(cross_encoder_dir), device="cpu")
    expected = ce.predict(CE_PAIRS)
    for batch_size in (1, 2, len(CE_PAIRS)):
        np.testing.assert_allclose(
            tiny_cross_encoder.score(CE_PAIRS, batch_size=batch_size), expected, atol=1e-5
        )
    alone = np.array([ce.predict([p])[0] for p in CE_PAIRS])
    np.testing.assert_allclose(tiny_cross_encoder.score(CE_PAIRS), alone, atol=1e-5)
    raw = tiny_cross_encoder.score(CE_PAIRS, raw=True)
    np.testing.assert_allclose(relevance(raw), expected, atol=1e-5)
    assert np.ptp(expected) > 1e-4
    info = tiny_cross_encoder.info
    assert (info.kind, info.max_length, info.default_instruction) == ("cross-encoder", 512, None)


def test_cross_encoder_truncation_follows_sentence_transformers(cross_encoder_dir) -> None:
    from sentence_transformers import CrossEncoder

    from qembed import Reranker

    rr = Reranker(cross_encoder_dir, device="cpu", dtype="float32", rerank_max_length=16)
    ce = CrossEncoder(str(cross_encoder_dir), device="cpu", max_length=16)
    prepared = rr.prepare(CE_PAIRS)
    assert max(len(w.ids) for w in prepared.windows) == 16 and any(prepared.truncated)
    np.testing.assert_allclose(rr.score(CE_PAIRS), ce.predict(CE_PAIRS), atol=1e-5)
    with pytest.raises(InputTooLong, match="the limit is 16"):
        rr.prepare(CE_PAIRS, long_text="error")


def test_cross_encoder_takes_no_instruction(tiny_cross_encoder) -> None:
    with pytest.raises(InputError, match="takes no instruction"):
        tiny_cross_encoder.rank("q", ["d"], instruction="Judge")


def test_window_beyond_the_models_positions_is_refused(cross_encoder_dir) -> None:
    from qembed import Reranker

    with pytest.raises(InputError, match=r"rerank_max_length=1024 is more than .* \(512 positions\)"):
        Reranker(cross_encoder_dir, device="cpu", rerank_max_length=1024)
