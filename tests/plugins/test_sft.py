"""Supervised fine-tuning data and objective: the chat template renders records, the loss counts only
response tokens, packing keeps every target, batches depend only on (seed, step), and exact match
scores greedy completions."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from plugformer.build import build
from plugformer.errors import ConfigError
from plugformer.generation import Generator, Sampling, generate
from plugformer.interfaces import SupervisedBatch
from plugformer.model import build_model
from plugformer.training.supervised import (
    ChatTemplate,
    SupervisedData,
    collate,
    encode_record,
    exact_match,
    pack,
)
from plugformer_text.byte_tokenizer import ByteTokenizer

TOK = ByteTokenizer(None)
CHATML = ChatTemplate(system="<s>{content}</s>", user="<u>{content}</u>", assistant_start="<a>", assistant_end="</a>")


def learned_text(example):
    return bytes(i for i, learn in zip(example.ids, example.learn) if learn and i < 256).decode()


def test_only_the_response_and_the_closing_eos_are_learned():
    ex = encode_record({"prompt": "12+35=", "response": "47"}, ChatTemplate(), TOK)
    assert ex.ids == [*b"12+35=47", TOK.eos_id]  # the prompt starts at position 0, as generate feeds it
    assert ex.learn == [False] * 6 + [True, True, True]


def test_a_chat_record_learns_every_assistant_turn_with_its_end_marker():
    record = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "yo"}, {"role": "user", "content": "bye"},
                           {"role": "assistant", "content": "ciao"}]}
    ex = encode_record(record, CHATML, TOK)
    assert bytes(i for i in ex.ids if i < 256).decode() == \
        "<s>be brief</s><u>hi</u><a>yo</a><u>bye</u><a>ciao</a>"
    assert learned_text(ex) == "yo</a>ciao</a>" and ex.learn[-1]


@pytest.mark.parametrize("record, message", [
    ({"messages": [{"role": "robot", "content": "x"}]}, "role 'robot' is not one of system, user, assistant"),
    ({"messages": [{"role": "user", "content": "x"}]}, "needs at least one assistant message"),
    ({"question": "x"}, "expected prompt+response, messages, or prompt+chosen+rejected"),
])
def test_malformed_records_are_one_line_errors(record, message):
    with pytest.raises(ConfigError, match=None) as info:
        encode_record(record, CHATML, TOK)
    assert message in str(info.value)


def test_collate_pads_on_the_right_and_never_learns_padding():
    a = encode_record({"prompt": "1+1=", "response": "2"}, ChatTemplate(), TOK)
    b = encode_record({"prompt": "10+10=", "response": "20"}, ChatTemplate(), TOK)
    batch = collate([a, b], 64, TOK.pad_id)
    assert batch.tokens.shape == (2, len(b.ids)) and batch.loss_mask.shape == (2, len(b.ids) - 1)
    assert (batch.tokens[0, len(a.ids):] == TOK.pad_id).all() and not batch.loss_mask[0, len(a.ids) - 1:].any()
    assert int(batch.loss_mask.sum()) == 2 + 3
    assert collate([b], 5, TOK.pad_id).tokens.shape == (1, 5)  # cut to the row limit


def test_packing_fills_rows_without_splitting_or_losing_a_target():
    examples = [encode_record({"prompt": f"{i}+{i}=", "response": str(2 * i)}, ChatTemplate(), TOK) for i in range(40)]
    rows = pack(examples, 32)
    assert len(rows) < len(examples) and all(len(r.ids) <= 32 for r in rows)
    assert sum(sum(r.learn) for r in rows) == sum(sum(e.learn) for e in examples)


def test_the_sft_loss_is_the_cross_entropy_of_the_response_tokens_only(registries):
    objective = build(registries, "objective", {"name": "sft"}, TOK)
    torch.manual_seed(0)
    logits = torch.randn(2, 7, TOK.vocab_size, requires_grad=True)

    def model(tokens):
        return logits[:, :tokens.shape[1]]

    tokens = torch.randint(0, 256, (2, 8))
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, 4:6], mask[1, 2] = True, True
    out = objective(model, SupervisedBatch(tokens, mask))
    expected = F.cross_entropy(logits[mask], tokens[:, 1:][mask])
    assert torch.allclose(out.loss, expected)
    out.loss.backward()
    assert (logits.grad[~mask] == 0).all()  # prompt and padding positions get no gradient
    windows = objective(model, tokens)  # plain windows: every target counts, like clm
    assert torch.allclose(windows.loss, F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()))


class Records:
    """A records source built in memory."""

    has_records = True

    def __init__(self, train, val):
        self.splits = {"train": train, "val": val}

    def records(self, split):
        return iter(self.splits[split])


def sums(n, offset=0):
    return [{"prompt": f"{i}+{offset}=", "response": str(i + offset)} for i in range(n)]


def test_batches_depend_only_on_seed_and_step_and_ranks_share_the_global_batch():
    def data(rank=0):
        return SupervisedData(Records(sums(50), sums(10, 1)), TOK, ChatTemplate(), seq_len=32,
                              batch_size=8, eval_batches=2, seed=3, dp_rank=rank)

    a, b = data(), data()
    for step in (1, 7, 13):  # 13 crosses into the third epoch
        assert torch.equal(a.train_batch(step, 8).tokens, b.train_batch(step, 8).tokens)
    whole = a.train_batch(5, 8)
    halves = [data(rank).train_batch(5, 4) for rank in (0, 1)]
    assert sorted(map(tuple, whole.tokens.tolist())) == sorted(
        tuple(row) for h in halves for row in F.pad(h.tokens, (0, whole.tokens.shape[1] - h.tokens.shape[1]),
                                                    value=TOK.pad_id).tolist())
    epoch = [tuple(i for i in r if i != TOK.pad_id) for s in range(1, 8) for r in a.train_batch(s, 8).tokens.tolist()]
    epoch = epoch[:50]
    assert len(set(epoch)) == 50  # one epoch visits every record once
    assert [b.tokens.shape[0] for b in a.val_batches(8)] == [8, 2]


def test_plain_documents_are_refused_for_fine_tuning():
    class Docs:
        pass

    with pytest.raises(ConfigError, match="yields plain documents, not records"):
        SupervisedData(Docs(), TOK, ChatTemplate(), seq_len=8, batch_size=2, eval_batches=1, seed=0)


class Oracle(torch.nn.Module):
    """Predicts the right sum for '<a>+<b>=' prompts, one character after another, then eos."""

    def __init__(self, wrong=()):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.wrong = set(wrong)

    def forward(self, tokens):
        out = torch.zeros(*tokens.shape, TOK.vocab_size)
        for row, ids in enumerate(tokens.tolist()):
            text = bytes(i for i in ids if i < 256).decode()
            prompt, _, done = text.partition("=")
            a, b = prompt.split("+")
            answer = str(int(a) + int(b) + (1 if prompt in self.wrong else 0))
            out[row, -1, answer.encode()[len(done)] if len(done) < len(answer) else TOK.eos_id] = 1.0
        return out


def test_exact_match_counts_greedy_completions_equal_to_the_answer():
    records = sums(6) + [{"prompt": "12+35=", "response": "47"}]
    assert exact_match(Oracle(), TOK, ChatTemplate(), records) == 1.0
    assert exact_match(Oracle(wrong={"3+0", "12+35"}), TOK, ChatTemplate(), records) == pytest.approx(5 / 7)


def test_exact_match_decodes_like_the_generator_in_the_middle_of_training(builtin_host, tiny_config):
    cfg = tiny_config().copy()
    cfg.model.max_seq_len, cfg.model.init_std = 32, 0.3
    torch.manual_seed(0)
    model = build_model(cfg, builtin_host.registries, TOK.vocab_size)
    prompts = [list(b"ab"), list(b"xy"), list(b"hello"), list(b"ab")]
    model.train()
    batched = [c.tokens for c in generate(model, prompts, Sampling(max_new_tokens=8, temperature=0), eos_id=TOK.eos_id)]
    assert model.training  # the evaluation leaves a training model in training mode
    gen = Generator(model, TOK, torch.device("cpu"))
    assert batched == [gen.generate_ids(p, Sampling(max_new_tokens=8, temperature=0)) for p in prompts]


def test_packed_data_serves_full_rows_holding_every_response():
    records = sums(60)
    plain = SupervisedData(Records(records, sums(4, 1)), TOK, ChatTemplate(), seq_len=31, batch_size=4,
                           eval_batches=1, seed=0)
    packed = SupervisedData(Records(records, sums(4, 1)), TOK, ChatTemplate(), seq_len=31, batch_size=4,
                            eval_batches=1, seed=0, packing=True)
    assert len(packed.train) < len(plain.train) // 2
    assert sum(sum(r.learn) for r in packed.train) == sum(sum(e.learn) for e in plain.train)
    batch = packed.train_batch(1, 4)
    assert batch.tokens.shape[1] <= 32 and int(batch.loss_mask.sum()) > int(plain.train_batch(1, 4).loss_mask.sum())


def test_a_template_without_content_is_refused_in_one_line():
    with pytest.raises(ConfigError, match=r"template.user='<u>' must contain '\{content\}'"):
        ChatTemplate.from_config({"user": "<u>"})
    assert ChatTemplate.from_config({"assistant_end": "</a>"}) == ChatTemplate(assistant_end="</a>")
