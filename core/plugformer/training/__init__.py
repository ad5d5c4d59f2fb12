"""The training loop and what it needs around it (data, checkpoints, callbacks), plus the record and
chat-template helpers data plugins share (:func:`record_kind`, :class:`ChatTemplate`, ...).

Names load on first use, so a data plugin importing a record helper does not import the trainer.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from plugformer.training.supervised import (
        ROLES, ChatTemplate, Example, SupervisedData, encode_pieces, encode_record, exact_match, prompt_and_answer,
        record_kind,
    )
    from plugformer.training.data import training_data
    from plugformer.training.pairs import PairData, pad_texts
    from plugformer.training.trainer import Trainer, run_training

_HOME = {
    "Trainer": "trainer", "run_training": "trainer",
    "ROLES": "supervised", "ChatTemplate": "supervised", "Example": "supervised", "SupervisedData": "supervised",
    "encode_pieces": "supervised", "encode_record": "supervised", "exact_match": "supervised",
    "prompt_and_answer": "supervised", "record_kind": "supervised",
    "PairData": "pairs", "pad_texts": "pairs", "training_data": "data",
}


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module 'plugformer.training' has no attribute '{name}'")
    return getattr(importlib.import_module(f"plugformer.training.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})


__all__ = ["ROLES", "ChatTemplate", "Example", "SupervisedData", "Trainer", "encode_pieces", "encode_record",
           "exact_match", "prompt_and_answer", "record_kind", "run_training", "PairData", "pad_texts", "training_data"]
