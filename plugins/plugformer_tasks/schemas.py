"""Config schemas of the built-in tasks (torch-free)."""
from dataclasses import dataclass
from enum import Enum
from typing import Optional

from plugformer.config import bounded


class TaskFormat(str, Enum):
    """What each record holds."""

    sft = "sft"  # {"prompt", "response"}
    preference = "preference"  # {"prompt", "chosen" (the right answer), "rejected" (a near miss)}


@dataclass
class TaskConfig:
    n_train: int = bounded(2000, ge=1)  # training records (distinct problems)
    n_val: int = bounded(200, ge=1)  # held-out records (problems never in the train split)
    val_fraction: float = bounded(0.1, gt=0, lt=1)  # share of the problem space reserved for held-out records
    seed: int = bounded(0, ge=0)  # which problems are drawn (the train/held-out partition does not depend on it)
    format: TaskFormat = TaskFormat.sft


@dataclass
class AdditionConfig(TaskConfig):
    digits: int = bounded(2, ge=1, le=18)  # operands are drawn from [0, 10**digits)
    prompt: str = "{a}+{b}="  # how a problem is written ({a} and {b}: the operands)


@dataclass
class ReverseConfig(TaskConfig):
    min_len: int = bounded(3, ge=1)
    max_len: int = bounded(6, ge=1)
    alphabet: str = "abcdefghijklmnopqrstuvwxyz"
    prompt: str = "rev {text}="  # how a problem is written ({text}: the input string)


@dataclass
class UppercaseConfig(ReverseConfig):
    prompt: str = "up {text}="


@dataclass
class FactsQAConfig:
    seed: int = bounded(0, ge=0)  # which fictional entities and facts are generated
    entities: int = bounded(1000, ge=2)  # entities in the knowledge base (each: one passage, five questions)
    val_fraction: float = bounded(0.2, gt=0, lt=1)  # share of entities held out (their facts never in train)
    facts: int = bounded(5, ge=1, le=5)  # facts (and questions) per entity, of the five attributes of its kind
    distractors: int = bounded(2, ge=0)  # other passages beside the gold one in each prompt (k = distractors + 1)
    questions_per_document: int = bounded(8, ge=1)  # questions (with answers) per document for `plugformer train`
    questions_per_record: int = bounded(1, ge=1)  # >1: train records are chats asking this many questions
    template: Optional[str] = None  # the RAG prompt ({passages}, {question}); None: plugformer.retrieval's default
