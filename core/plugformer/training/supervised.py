"""Supervised fine-tuning data: records → chat-templated token rows with a loss mask → batches by step,
and the held-out exact-match score of greedy completions.

A record is ``{"prompt", "response"}``, chat ``{"messages": [{"role", "content"}, ...]}`` or a
preference pair ``{"prompt", "chosen", "rejected"}``. The :class:`ChatTemplate` renders each part as
text; every part is tokenized on its own and concatenated, so the boundary between what the model
reads (prompt: loss masked) and what it learns (responses, each followed by ``assistant_end``, and
the closing ``eos_id``) is exact. An example starts with its first prompt token at position 0, exactly
as ``plugformer generate`` prompts the model.
"""
from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from plugformer.config.schema import ChatTemplateConfig
from plugformer.errors import ConfigError
from plugformer.generation import Sampling, generate
from plugformer.interfaces import (
    PreferenceBatch,
    SupervisedBatch,
    TextSource,
    Tokenizer,
)

ROLES = ("system", "user", "assistant")


@dataclass
class ChatTemplate(ChatTemplateConfig):
    """A chat template ready to render records: the ``template`` config node (its keys and defaults are
    :class:`plugformer.config.schema.ChatTemplateConfig`'s, the one place they are defined), checked.
    ``{content}`` in ``system``/``user`` is replaced by the message; an assistant turn is
    ``assistant_start + content + assistant_end`` (the model learns content and end)."""

    def __post_init__(self) -> None:
        for key in ("system", "user"):
            value = getattr(self, key)
            if "{content}" not in value:
                raise ConfigError(f"template.{key}={value!r} must contain '{{content}}'")

    @classmethod
    def from_config(cls, node: Any) -> ChatTemplate:
        """The template of a ``template`` config node (missing keys take the defaults)."""
        names = [f.name for f in fields(ChatTemplateConfig)]
        return cls(**{k: str(node[k]) for k in names if node is not None and k in node})


@dataclass
class Example:
    """Token ids of one record and, per id, whether the model learns to produce it."""

    ids: list[int]
    learn: list[bool]


def record_kind(record: dict[str, Any], where: str = "record") -> str:
    """``sft``, ``chat``, ``preference`` or ``pairs`` (texts to embed, for ``objective=contrastive``); a one-line
    error for anything else."""
    if "messages" in record:
        return "chat"
    if {"prompt", "chosen", "rejected"} <= record.keys():
        return "preference"
    if {"prompt", "response"} <= record.keys():
        return "sft"
    if {"query", "positive"} <= record.keys():
        return "pairs"
    raise ConfigError(f"{where} has keys {sorted(record)}; expected prompt+response, messages, or "
                      "prompt+chosen+rejected (or query+positive[+negative] for objective=contrastive)")


def _turns(record: dict[str, Any], template: ChatTemplate, response_key: str = "response",
           where: str = "record") -> list[tuple[str, bool]]:
    """(text, learn?) pieces of a record, in order."""
    if "messages" not in record:
        return [(template.user.format(content=record["prompt"]) + template.assistant_start, False),
                (str(record[response_key]) + template.assistant_end, True)]
    pieces: list[tuple[str, bool]] = []
    for m in record["messages"]:
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            raise ConfigError(f"{where}: message role {role!r} is not one of {', '.join(ROLES)}")
        if role == "assistant":
            pieces += [(template.assistant_start, False), (str(m["content"]) + template.assistant_end, True)]
        else:
            pieces.append((getattr(template, role).format(content=m["content"]), False))
    if not any(learn for _, learn in pieces):
        raise ConfigError(f"{where}: a chat record needs at least one assistant message")
    return pieces


def encode_pieces(pieces: list[tuple[str, bool]], tokenizer: Tokenizer, close: bool = True) -> Example:
    ids: list[int] = []
    learn: list[bool] = []
    texts = [t for t, _ in pieces if t]
    encoded = iter(tokenizer.encode_batch(texts))
    for text, flag in pieces:
        if text:
            piece = next(encoded)
            ids += piece
            learn += [flag] * len(piece)
    if close:
        ids.append(tokenizer.eos_id)
        learn.append(True)
    return Example(ids, learn)


def encode_record(record: dict[str, Any], template: ChatTemplate, tokenizer: Tokenizer,
                  where: str = "record") -> Example | tuple[Example, Example]:
    """One example (or a (chosen, rejected) pair) for ``record``."""
    kind = record_kind(record, where)
    if kind == "pairs":
        raise ConfigError(f"{where} is a query/positive pair: pairs train an embedder (objective=contrastive), "
                          "not a generative fine-tuning objective")
    if kind == "preference":
        return (encode_pieces(_turns(record, template, "chosen", where), tokenizer),
                encode_pieces(_turns(record, template, "rejected", where), tokenizer))
    return encode_pieces(_turns(record, template, where=where), tokenizer)


def prompt_and_answer(record: dict[str, Any], template: ChatTemplate, where: str = "record") -> tuple[
        list[tuple[str, bool]], str]:
    """The pieces the model is given at evaluation (everything before the last answer, plus
    ``assistant_start``) and the expected answer (the response, the chosen one, or the last assistant
    message)."""
    kind = record_kind(record, where)
    key = "chosen" if kind == "preference" else "response"
    pieces = _turns(record, template, key, where)
    last = max(i for i, (_, learn) in enumerate(pieces) if learn)
    answer = pieces[last][0]
    if template.assistant_end and answer.endswith(template.assistant_end):
        answer = answer[:-len(template.assistant_end)]
    return pieces[:last], answer


# -- batches ------------------------------------------------------------------------------------------
def collate(examples: list[Example], max_tokens: int, pad_id: int) -> SupervisedBatch:
    """Right-padded rows of at most ``max_tokens`` ids (longer examples are cut)."""
    width = min(max_tokens, max(len(e.ids) for e in examples))
    tokens = torch.full((len(examples), width), pad_id, dtype=torch.long)
    learn = torch.zeros((len(examples), width), dtype=torch.bool)
    for row, e in enumerate(examples):
        n = min(width, len(e.ids))
        tokens[row, :n] = torch.tensor(e.ids[:n])
        learn[row, :n] = torch.tensor(e.learn[:n])
    return SupervisedBatch(tokens, learn[:, 1:])


def pack(examples: list[Example], max_tokens: int) -> list[Example]:
    """Concatenate examples into rows of at most ``max_tokens`` ids (an example never straddles two
    rows; one longer than a row is cut). Attention is not reset between packed examples."""
    rows: list[Example] = []
    current = Example([], [])
    for e in examples:
        ids, learn = e.ids[:max_tokens], e.learn[:max_tokens]
        if current.ids and len(current.ids) + len(ids) > max_tokens:
            rows.append(current)
            current = Example([], [])
        current.ids += ids
        current.learn += learn
    if current.ids:
        rows.append(current)
    return rows


class SupervisedData:
    """Serves supervised (or preference) batches by step, the way :class:`TrainingData` serves windows.

    Rows are drawn epoch by epoch from a permutation seeded by ``(seed, epoch)``, so the batch of step
    ``s`` depends only on ``(seed, s)`` (exact resume). Rows hold at most ``seq_len + 1`` ids.
    """

    def __init__(self, source: TextSource, tokenizer: Tokenizer, template: ChatTemplate, *, seq_len: int,
                 batch_size: int, eval_batches: int, seed: int, dp_rank: int = 0, packing: bool = False,
                 eval_examples: int = 200, max_new_tokens: int = 32):
        if not getattr(source, "has_records", False):
            raise ConfigError(f"data '{type(source).__name__}' yields plain documents, not records; fine-tuning "
                              "needs records: data=<file.jsonl>, data=jsonl data.path=..., or a task (data=addition)")
        self.tokenizer, self.template, self.seq_len = tokenizer, template, seq_len
        self.batch_size, self.eval_batches, self.seed, self.dp_rank = batch_size, eval_batches, seed, dp_rank
        self.eval_examples, self.max_new_tokens = eval_examples, max_new_tokens
        self.pad_id = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
        self.train_records = list(source.records("train"))
        self.val_records = list(source.records("val"))
        for split, recs in (("train", self.train_records), ("val", self.val_records)):
            if not recs:
                raise ConfigError(f"the {split} split of data '{type(source).__name__}' has no records")
        self.train = self._encode(self.train_records, "train")
        self.val = self._encode(self.val_records, "val")
        self.preference = isinstance(self.train[0], tuple)
        if packing:
            if self.preference:
                raise ConfigError("data.packing=true does not apply to preference pairs (dpo): set packing=false")
            self.train = pack(self._shuffled(self.train, -1), seq_len + 1)

    def _encode(self, records: list[dict[str, Any]], split: str) -> list[Any]:
        out = [encode_record(r, self.template, self.tokenizer, f"{split} record {i}") for i, r in enumerate(records)]
        kinds = {isinstance(e, tuple) for e in out}
        if len(kinds) > 1:
            raise ConfigError(f"the {split} split mixes preference pairs with prompt/response records")
        return out

    def _shuffled(self, items: list[Any], epoch: int) -> list[Any]:
        order = list(range(len(items)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return [items[i] for i in order]

    def _collate(self, items: list[Any]) -> SupervisedBatch | PreferenceBatch:
        if self.preference:
            return PreferenceBatch(collate([c for c, _ in items], self.seq_len + 1, self.pad_id),
                                   collate([r for _, r in items], self.seq_len + 1, self.pad_id))
        return collate(items, self.seq_len + 1, self.pad_id)

    def train_batch(self, step: int, rows_per_rank: int) -> SupervisedBatch | PreferenceBatch:
        """This rank's rows of the global batch of ``step`` (1-based)."""
        n = len(self.train)
        first = (step - 1) * self.batch_size + self.dp_rank * rows_per_rank
        perms: dict[int, list[int]] = {}
        picked = []
        for i in range(first, first + rows_per_rank):
            epoch = i // n
            if epoch not in perms:
                perms[epoch] = self._shuffled(list(range(n)), epoch)
            picked.append(self.train[perms[epoch][i % n]])
        return self._collate(picked)

    def val_batches(self, rows_per_rank: int) -> Iterator[SupervisedBatch | PreferenceBatch]:
        """Fixed batches from the start of the held-out split (at most ``eval_batches``)."""
        for b in range(self.eval_batches):
            start = b * self.batch_size + self.dp_rank * rows_per_rank
            chunk = self.val[start:start + rows_per_rank]
            if not chunk:
                return
            yield self._collate(chunk)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``exact_match`` of greedy completions on the first ``eval_examples`` held-out records."""
        records = self.val_records[:self.eval_examples]
        return {"exact_match": exact_match(model, self.tokenizer, self.template, records, self.max_new_tokens)}


# -- exact match ---------------------------------------------------------------------------------------
def exact_match(model: nn.Module, tokenizer: Tokenizer, template: ChatTemplate, records: Iterable[dict[str, Any]],
                max_new_tokens: int = 32) -> float:
    """Share of records whose greedy completion (:func:`plugformer.generation.generate`, exactly what
    ``plugformer generate`` would produce at temperature 0) equals the expected answer (both stripped of
    surrounding whitespace; the completion is cut at ``template.assistant_end`` when that is set)."""
    records = list(records)
    if not records:
        return 0.0
    prompts, answers = [], []
    for i, r in enumerate(records):
        pieces, answer = prompt_and_answer(r, template, f"record {i}")
        prompts.append(encode_pieces(pieces, tokenizer, close=False).ids)
        answers.append(answer.strip())
    greedy = Sampling(max_new_tokens=max_new_tokens, temperature=0.0)
    hits = 0
    for completion, answer in zip(generate(model, prompts, greedy, eos_id=tokenizer.eos_id, crop_prompts=True),
                                  answers):
        text = tokenizer.decode(completion.tokens)
        if template.assistant_end and template.assistant_end in text:
            text = text[:text.index(template.assistant_end)]
        hits += text.strip() == answer
    return hits / len(records)


__all__ = ["ChatTemplate", "Example", "SupervisedData", "collate", "encode_record", "exact_match",
           "pack", "prompt_and_answer", "record_kind"]
