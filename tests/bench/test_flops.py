"""Model FLOPs for MFU: parameter counts from safetensors headers match the loaded model."""

from __future__ import annotations

from pathlib import Path

from qembed.bench.flops import model_facts


def test_parameter_counts_match_the_loaded_model(tiny_model_dir: Path) -> None:
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(tiny_model_dir))
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight.numel()
    facts = model_facts(tiny_model_dir)
    assert facts.params == total
    assert facts.non_embedding_params == total - embedding
    assert facts.layers == model.config.num_hidden_layers
    assert facts.attention_dim == model.config.num_attention_heads * model.config.head_dim


def test_flops_formula(tiny_model_dir: Path) -> None:
    facts = model_facts(tiny_model_dir)
    p, layers, d = facts.non_embedding_params, facts.layers, facts.attention_dim
    assert facts.flops([10]) == 2 * p * 10 + 4 * layers * d * 100
    # Attention grows with the square of the length: one 20-token text costs more than two 10-token ones.
    assert facts.flops([20]) - facts.flops([10, 10]) == 4 * layers * d * (400 - 200)


def test_minilm_counts_exclude_all_three_bert_embeddings(minilm_dir: Path) -> None:
    facts = model_facts(minilm_dir)
    assert facts.model_type == "bert"
    assert 22_000_000 < facts.params < 23_000_000  # all-MiniLM-L6-v2 has 22.7 M parameters
    assert facts.non_embedding_params < facts.params - 30522 * 384  # word embeddings at least
