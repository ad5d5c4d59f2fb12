"""Builds the :class:`Transformer` a config describes, from the registries."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from plugformer.build import build, entry_class
from plugformer.interfaces import ModelDims
from plugformer.model.transformer import ModelParts, Transformer
from plugformer.registry import Registries


def model_dims(cfg: DictConfig, vocab_size: int, causal: bool) -> ModelDims:
    m = cfg.model
    return ModelDims(vocab_size=vocab_size, d_model=m.d_model, n_heads=m.n_heads,
                     n_kv_heads=m.n_kv_heads or m.n_heads, max_seq_len=m.max_seq_len or cfg.data.seq_len,
                     dropout=m.dropout, bias=m.bias, causal=causal)


def model_parts(cfg: DictConfig, registries: Registries) -> ModelParts:
    """Factories that build each swappable piece from its config node."""

    def part(family: str) -> Any:
        return lambda dims: build(registries, family, cfg[family], dims)

    return ModelParts(attention=part("attention"), position=part("position"), norm=part("norm"), mlp=part("mlp"))


def build_model(cfg: DictConfig, registries: Registries, vocab_size: int) -> Transformer:
    """The model for a train config (or a checkpoint's saved config)."""
    causal = bool(getattr(entry_class(registries, "objective", cfg.objective.name), "causal", True))
    return Transformer(model_dims(cfg, vocab_size, causal), cfg.model.n_layers, model_parts(cfg, registries),
                       tie_embeddings=cfg.model.tie_embeddings, init_std=cfg.model.init_std)
