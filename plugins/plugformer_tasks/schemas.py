"""Config schemas of the built-in tasks (torch-free)."""
from dataclasses import dataclass
from enum import Enum


class TaskFormat(str, Enum):
    """What each record holds."""

    sft = "sft"  # {"prompt", "response"}
    preference = "preference"  # {"prompt", "chosen" (the right answer), "rejected" (a near miss)}


@dataclass
class TaskConfig:
    n_train: int = 2000  # training records (distinct problems)
    n_val: int = 200  # held-out records (problems never in the train split)
    val_fraction: float = 0.1  # share of the problem space reserved for held-out records
    seed: int = 0  # which problems are drawn (the train/held-out partition does not depend on it)
    format: TaskFormat = TaskFormat.sft


@dataclass
class AdditionConfig(TaskConfig):
    digits: int = 2  # operands are drawn from [0, 10**digits)
    prompt: str = "{a}+{b}="  # how a problem is written ({a} and {b}: the operands)


@dataclass
class ReverseConfig(TaskConfig):
    min_len: int = 3
    max_len: int = 6
    alphabet: str = "abcdefghijklmnopqrstuvwxyz"
    prompt: str = "rev {text}="  # how a problem is written ({text}: the input string)


@dataclass
class UppercaseConfig(ReverseConfig):
    prompt: str = "up {text}="
