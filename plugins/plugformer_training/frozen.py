"""Frozen models an objective compares against (a distillation teacher, a DPO reference), loaded
from plugformer checkpoint directories."""
from __future__ import annotations

from typing import Any

from plugformer import load_plugins
from plugformer import ConfigError
from plugformer.checkpoint import check_checkpoint_dir
from plugformer.generation import Generator
from torch import nn


def load_frozen(path: str, tokenizer: Any, role: str) -> nn.Module:
    """The model of checkpoint ``path`` on the CPU, in eval mode with gradients off. Its tokenizer must
    be the one the run uses (same id mapping), else a one-line :class:`ConfigError`."""
    if not path or path == "???":
        raise ConfigError(f"objective.{role} is required: set objective.{role}=<checkpoint dir>")
    check_checkpoint_dir(path)
    loaded = Generator.from_checkpoint(path, load_plugins().registries, device="cpu")
    theirs, ours = loaded.tokenizer, tokenizer
    if theirs.vocab_size != ours.vocab_size or theirs.fingerprint() != ours.fingerprint():
        raise ConfigError(f"objective.{role}={path} uses a different tokenizer ({type(theirs).__name__}, "
                          f"{theirs.vocab_size} ids) than this run ({type(ours).__name__}, {ours.vocab_size} "
                          "ids); both models must share one tokenizer")
    model = loaded.model.eval()
    model.requires_grad_(False)
    return model
