"""The retrieval core's shared pieces: pooled hidden states, reciprocal-rank fusion, the RAG prompt, identity checks."""
import numpy as np
import pytest
import torch

from plugformer.errors import ConfigError, PlugformerError
from plugformer.interfaces import Hit, check_vectors, normalize_rows, reciprocal_rank_fusion
from plugformer.interfaces.retrieval import identity_mismatch
from plugformer.retrieval import pool, pooled_embeddings, rag_prompt
from plugformer.testing.toy import language_model


def test_hidden_states_are_what_the_lm_head_reads():
    model = language_model(vocab_size=32, causal=True).eval()
    tokens = torch.randint(0, 32, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = model.hidden_states(tokens)
        assert torch.allclose(model.lm_head(hidden), model(tokens), atol=1e-5)


def test_a_texts_vector_does_not_depend_on_its_batch_or_padding():
    model = language_model(vocab_size=32, causal=True).eval()
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[3, 4, 5, 0, 0], [6, 7, 8, 9, 10]])
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    for pooling in ("mean", "last"):
        with torch.no_grad():
            alone = pooled_embeddings(model, short, torch.ones_like(short, dtype=torch.bool), pooling)
            batched = pooled_embeddings(model, padded, mask, pooling)
        assert torch.allclose(alone[0], batched[0], atol=1e-5)
        assert torch.allclose(batched.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_pooling_refuses_unknown_modes_and_empty_rows():
    with pytest.raises(ConfigError, match="'max' is not one of mean, last"):
        pool(torch.zeros(1, 2, 4), torch.ones(1, 2, dtype=torch.bool), "max")
    with pytest.raises(ConfigError, match="empty text"):
        pool(torch.zeros(1, 2, 4), torch.zeros(1, 2, dtype=torch.bool))


def test_reciprocal_rank_fusion_rewards_agreement():
    lexical = [Hit("a", 9.0), Hit("b", 5.0), Hit("c", 1.0)]
    dense = [Hit("b", 0.9), Hit("d", 0.8), Hit("a", 0.1)]
    fused = reciprocal_rank_fusion([lexical, dense], k=3)
    assert [h.id for h in fused] == ["b", "a", "d"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)


def test_vectors_are_checked_at_the_boundary():
    with pytest.raises(PlugformerError, match=r"expected shape \(2, 4\), got \(2, 3\)"):
        check_vectors(np.zeros((2, 3)), 2, 4)
    with pytest.raises(PlugformerError, match="NaN"):
        check_vectors(np.full((1, 2), np.nan), 1, 2)
    unit = normalize_rows(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    assert np.allclose(unit, [[0.6, 0.8], [0.0, 0.0]])


def test_an_index_refuses_a_different_query_embedder_naming_the_field():
    built = {"name": "pooled", "checkpoint": "abc", "pooling": "mean"}
    assert identity_mismatch(built, dict(built)) is None
    assert "pooling='mean'" in identity_mismatch(built, {**built, "pooling": "last"})
    assert "without an embedder" in identity_mismatch(None, built)


def test_the_rag_prompt_numbers_passages_and_checks_its_template():
    assert rag_prompt("Who?", ["A is\nB.", "C."]) == "Passages:\n[1] A is B.\n[2] C.\n\nQuestion: Who?\nAnswer:"
    with pytest.raises(ConfigError, match="must contain {question}"):
        rag_prompt("q", [], template="{passages}")
    with pytest.raises(ConfigError, match="only {passages} and {question}"):
        rag_prompt("q", [], template="{passages}{question}{other}")
