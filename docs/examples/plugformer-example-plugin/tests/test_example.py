"""The example plugin's own tests: what the conformance kit cannot know (soft-capping, T5 buckets, the
CSV file). Run the kit as well: ``pytest --plugformer-conformance --plugformer-provider=plugformer-example-plugin``."""
from __future__ import annotations

import csv
import math

import plugformer
import torch
from plugformer import RunInfo
from plugformer.interfaces import ModelDims, Positions

from plugformer_example.callbacks import CSVLogger
from plugformer_example.position import relative_buckets
from plugformer_example.schemas import ChunkedAttentionConfig, T5BiasConfig

DIST = "plugformer-example-plugin"


def registries():
    return plugformer.load_plugins().registries


def test_components_are_registered_by_this_distribution():
    for family, name in (("attention", "chunked"), ("position", "t5_bias"), ("callback", "csv_log")):
        entry = registries()[family].get(name)
        assert entry.provider == DIST, entry
        assert entry.availability() == (True, "")


def _dims(**kw):
    return ModelDims(**{"vocab_size": 16, "d_model": 32, "n_heads": 4, "n_kv_heads": 4, "max_seq_len": 64, **kw})


def _qkv(t=11, seed=0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(2, 4, t, 8, generator=g) for _ in range(3))


def test_every_chunk_size_gives_the_same_result_as_one_block():
    q, k, v = _qkv()
    attention = registries().attention.load("chunked")
    whole = attention(ChunkedAttentionConfig(chunk_size=64), _dims())(q, k, v, causal=True)
    for chunk in (1, 3, 4, 10):
        out = attention(ChunkedAttentionConfig(chunk_size=chunk), _dims())(q, k, v, causal=True)
        torch.testing.assert_close(out, whole, atol=1e-5, rtol=1e-5)


def test_ragged_batches_give_every_row_its_own_result_at_any_chunk_size():
    """Plugin API 1.1: rows at their own positions (``q_offset`` per row) with their own numbers of real keys
    (``kv_lengths``): each row equals that row decoded alone, whatever the chunk size."""
    q, k, v = _qkv(t=11, seed=2)
    q = q[:, :, :3]
    offsets, lengths = torch.tensor([8, 2]), torch.tensor([11, 4])  # row 1: 1 real query, 7 padding keys
    attention = registries().attention.load("chunked")
    for chunk in (1, 3, 64):
        attn = attention(ChunkedAttentionConfig(chunk_size=chunk), _dims())
        out = attn(q, k, v, causal=True, q_offset=offsets, kv_lengths=lengths)
        torch.testing.assert_close(out[:1], attn(q[:1], k[:1], v[:1], causal=True, q_offset=8), atol=1e-5, rtol=1e-5)
        alone = attn(q[1:, :, :2], k[1:, :, :4], v[1:, :, :4], causal=True, q_offset=2)
        torch.testing.assert_close(out[1:, :, :2], alone, atol=1e-5, rtol=1e-5)


def test_softcap_bounds_the_scores_like_gemma():
    q, k, v = _qkv(seed=1)
    q = q * 20  # large scores, where the cap matters
    cap = 5.0
    out = registries().attention.load("chunked")(ChunkedAttentionConfig(chunk_size=4, softcap=cap), _dims())(
        q, k, v, causal=False)
    scores = cap * torch.tanh((q @ k.transpose(-2, -1)) / math.sqrt(8) / cap)
    torch.testing.assert_close(out, torch.softmax(scores, dim=-1) @ v, atol=1e-5, rtol=1e-5)
    plain = registries().attention.load("chunked")(ChunkedAttentionConfig(), _dims())(q, k, v, causal=False)
    assert not torch.allclose(out, plain, atol=1e-3)


def test_t5_buckets_are_exact_near_log_spaced_far_and_saturate():
    distance = torch.arange(0, 400)
    causal = relative_buckets(-distance, causal=True, num_buckets=32, max_distance=128)
    assert causal[:16].tolist() == list(range(16))  # half the buckets: exact distances
    assert (causal.diff() >= 0).all() and causal.max().item() == 31
    assert (causal[128:] == 31).all()  # max_distance and beyond share the last bucket
    assert (relative_buckets(distance, causal=True, num_buckets=32, max_distance=128) == 0).all()  # future keys
    both = relative_buckets(torch.tensor([-3, 3]), causal=False, num_buckets=32, max_distance=128)
    assert both.tolist() == [3, 16 + 3]  # keys after the query use the upper half


def test_t5_bias_is_relative_so_decoding_offsets_agree():
    pe = registries().position.load("t5_bias")(T5BiasConfig(), _dims())
    full = pe.attention_bias(Positions(0, 10), Positions(0, 10))
    assert full.shape == (1, 4, 10, 10)
    step = pe.attention_bias(Positions(9, 1), Positions(0, 10))
    torch.testing.assert_close(step, full[:, :, 9:10])
    rows = torch.tensor([[9], [4]])  # a ragged batch (plugin API 1.1): one bias row per sequence
    ragged = pe.attention_bias(Positions.ragged(rows, 4, 10), Positions(0, 10))
    assert ragged.shape == (2, 4, 1, 10)
    torch.testing.assert_close(ragged[1:], full[:, :, 4:5])
    torch.testing.assert_close(ragged[:1], step)


def test_csv_logger_writes_rows_and_truncates_on_resume(tmp_path):
    logger = CSVLogger(None, tmp_path)
    run = RunInfo(tmp_path, {}, max_steps=4)
    logger.plugformer_train_start(run)
    for step in (1, 2, 3):
        logger.plugformer_step_end(run, step, {"loss": 3.0 - step, "lr": 0.1, "tokens_per_s": 100.0, "extra": 1})
    logger.plugformer_evaluate(run, 3, {"val_loss": 1.5, "val_perplexity": math.exp(1.5)})
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert [r["step"] for r in rows] == ["1", "2", "3", "3"] and rows[-1]["val_loss"] == "1.5"
    logger.plugformer_train_start(RunInfo(tmp_path, {}, max_steps=4, start_step=2))
    assert [r["step"] for r in csv.DictReader((tmp_path / "metrics.csv").open())] == ["1", "2"]
