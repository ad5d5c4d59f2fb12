"""Shared pieces of the quantizers: choosing Linear layers by name pattern, tied weights in state dicts
(safetensors stores each tensor once), and the default saving/loading of quantizers whose quantized
weights are plain tensors (:class:`PlainStateQuantizer`)."""
from __future__ import annotations

import fnmatch
import json

import torch
from plugformer import ConfigError
from plugformer.interfaces import Quantizer
from torch import nn

TIED_KEY = "tied"  # safetensors metadata: {"lm_head.weight": "tok_emb.weight"}


def embedding_weights(model: nn.Module) -> set[int]:
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}


def select_linears(model: nn.Module, patterns: list[str], family: str = "quantizer") -> list[tuple[str, nn.Linear]]:
    """``(name, module)`` of every plain ``nn.Linear`` whose name matches one of ``patterns`` (globs), except
    one sharing its weight with an embedding. Adapter layers (peft's ``lora_*``) are never chosen."""
    tied = embedding_weights(model)
    linears = [(n, m) for n, m in model.named_modules()
               if type(m) is nn.Linear and "lora_" not in n and id(m.weight) not in tied]
    chosen = [(n, m) for n, m in linears if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if not chosen:
        names = ", ".join(n for n, _ in linears[:8]) + (", ..." if len(linears) > 8 else "")
        raise ConfigError(f"{family}: modules {list(patterns)} match no Linear layer of the model "
                          f"(its Linear layers: {names or 'none'})")
    return chosen


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def split_tied(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(each tensor once, {dropped key: the key holding the same tensor})."""
    unique: dict[str, torch.Tensor] = {}
    tied: dict[str, str] = {}
    seen: dict[tuple[int, int, tuple[int, ...], torch.dtype], str] = {}
    for key, t in state.items():
        ident = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.dtype) \
            if type(t) is torch.Tensor else (id(t), 0, (), t.dtype)
        if ident in seen:
            tied[key] = seen[ident]
            continue
        seen[ident] = key
        unique[key] = t
    return unique, tied


def plain_state(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The model's state dict as contiguous CPU tensors stored once, with the ``tied`` metadata."""
    unique, tied = split_tied(model.state_dict())
    return {k: v.detach().cpu().contiguous() for k, v in unique.items()}, {TIED_KEY: json.dumps(tied)}


def restore_tied(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, torch.Tensor]:
    """``tensors`` with every tied key filled in again."""
    out = dict(tensors)
    for key, source in json.loads(metadata.get(TIED_KEY, "{}")).items():
        out[key] = out[source]
    return out


def retie(model: nn.Module, metadata: dict[str, str]) -> None:
    """Make each tied key share its source's parameter again (``load_state_dict(assign=True)`` unties)."""
    for key, source in json.loads(metadata.get(TIED_KEY, "{}")).items():
        owner, _, attr = key.rpartition(".")
        src_owner, _, src_attr = source.rpartition(".")
        setattr(model.get_submodule(owner), attr, getattr(model.get_submodule(src_owner), src_attr))


class PlainStateQuantizer(Quantizer):
    """A quantizer whose quantized model's state dict is plain tensors (casts, bitsandbytes' packed 4-bit
    data and quantization state): saved as that state dict with tied weights once, loaded by applying the
    quantizer to a fresh model and loading the state dict into it."""

    def quantized_state(self, model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        return plain_state(model)

    def load_quantized(self, model: nn.Module, tensors: dict[str, torch.Tensor],
                       metadata: dict[str, str]) -> nn.Module:
        model = self.apply(model)
        model.load_state_dict(restore_tied(tensors, metadata))
        return model
