"""The training loop and what it needs around it (data, checkpoints, callbacks), and the record/chat
template helpers data plugins use."""
from plugformer.training.supervised import ChatTemplate, Example, encode_record, prompt_and_answer, record_kind
from plugformer.training.trainer import Trainer, run_training

__all__ = ["ChatTemplate", "Example", "Trainer", "encode_record", "prompt_and_answer", "record_kind", "run_training"]
