"""Builds the :class:`Transformer` a config describes, from the registries."""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from plugformer.build import build, entry_class
from plugformer.families import LAYER_FAMILIES, TRANSFORM_FAMILIES
from plugformer.interfaces import ModelDims
from plugformer.model.transformer import ModelParts, Transformer
from plugformer.registry import Registries


def model_dims(cfg: DictConfig, vocab_size: int, causal: bool) -> ModelDims:
    m = cfg.model
    return ModelDims(vocab_size=vocab_size, d_model=m.d_model, n_heads=m.n_heads,
                     n_kv_heads=m.n_kv_heads or m.n_heads, max_seq_len=m.max_seq_len or cfg.data.seq_len,
                     dropout=m.dropout, bias=m.bias, causal=causal)


def _plain(node: Any) -> dict[str, Any]:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})


def layer_spec(cfg: DictConfig, layer: int) -> dict[str, dict[str, Any]]:
    """The per-layer options for ``layer``: its ``layer_pattern`` item, then its ``layer_overrides``."""
    m, spec = cfg.model, {}
    pattern = _plain_list(m.get("layer_pattern"))
    if pattern:
        spec = {k: dict(v or {}) for k, v in pattern[layer % len(pattern)].items()}
    overrides = _plain(m.get("layer_overrides"))
    for key in (layer, layer - m.n_layers):
        for family, options in (overrides.get(key) or {}).items():
            spec[family] = {**spec.get(family, {}), **(options or {})}
    return spec


def _plain_list(node: Any) -> list[dict[str, Any]]:
    return list(OmegaConf.to_container(node, resolve=True)) if node is not None else []


def layer_node(cfg: DictConfig, family: str, layer: int) -> Any:
    """The config node that builds ``family`` in ``layer`` (layer -1: outside the blocks, the global node)."""
    base = cfg[family]
    part = layer_spec(cfg, layer).get(family) if layer >= 0 else None
    if not part:
        return base
    if part.get("name", base.name) != base.name:
        return part  # another implementation: its own schema defaults fill the rest
    return {**_plain(base), **part}


def model_parts(cfg: DictConfig, registries: Registries) -> ModelParts:
    """Factories that build each swappable piece from its (per-layer) config node."""

    def part(family: str) -> Any:
        return lambda dims: build(registries, family, layer_node(cfg, family, dims.layer), dims)

    return ModelParts(attention=part("attention"), norm=part("norm"), mlp=part("mlp"),
                      position=lambda dims: build(registries, "position", cfg.position, dims))


def model_components(cfg: DictConfig) -> list[tuple[str, str]]:
    """``(family, name)`` of every component rebuilding the model of ``cfg`` (a checkpoint's config) takes:
    its tokenizer, objective (causality), position encoding, each block's attention/norm/mlp and its
    adapter/quantizer transforms, in that order, without repeats."""
    wanted = [(family, cfg[family].name) for family in ("tokenizer", "objective", "position")]
    for layer in range(-1, int(cfg.model.n_layers)):
        wanted += [(family, _plain(layer_node(cfg, family, layer)).get("name", cfg[family].name))
                   for family in LAYER_FAMILIES]
    wanted += [(family, cfg[family].name) for family in TRANSFORM_FAMILIES if cfg.get(family) is not None]
    return list(dict.fromkeys(wanted))


def build_model(cfg: DictConfig, registries: Registries, vocab_size: int) -> Transformer:
    """The model for a train config (or a checkpoint's saved config)."""
    causal = bool(getattr(entry_class(registries, "objective", cfg.objective.name), "causal", True))
    return Transformer(model_dims(cfg, vocab_size, causal), cfg.model.n_layers, model_parts(cfg, registries),
                       tie_embeddings=cfg.model.tie_embeddings, init_std=cfg.model.init_std)
