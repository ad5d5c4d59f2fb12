"""Checks a composed config before any heavy work: names resolve, parameters bind, the combination and
the device fit. Every problem found is reported at once, on one line."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from omegaconf import DictConfig, ListConfig

from plugformer.build import component_config
from plugformer.config.schema import COMPONENT_GROUPS
from plugformer.errors import ConfigError, PlugformerError, UnknownComponentError, unknown_components
from plugformer.interfaces.parallel import resolve_device
from plugformer.registry import Entry, Registries


def validate_train(cfg: DictConfig, registries: Registries) -> dict[str, Entry]:
    """Validate a ``train`` config; return the resolved entry of each component group."""
    problems: list[str] = []
    unknown: list[UnknownComponentError] = []  # every unknown name is reported, all at once
    entries: dict[str, Entry] = {}
    for family in COMPONENT_GROUPS:
        try:
            entry, ok, reason = effective_entry(registries, family, cfg[family])
            entries[family] = entry
            if not ok:
                problems.append(f"{family} '{entry.name}' is unavailable here: {reason}")
        except UnknownComponentError as exc:
            unknown.append(exc)
        except PlugformerError as exc:
            problems.append(str(exc))
    for name in cfg.trainer.callbacks:
        try:
            registries.callback.get(name)
        except UnknownComponentError as exc:
            unknown.append(exc)
    problems += _check_model(cfg)
    layer_attention = _check_layers(cfg, registries, problems, unknown)
    device = "cpu"
    try:
        device = resolve_device(cfg.device).split(":")[0]
    except ConfigError as exc:
        problems.append(str(exc))
    problems += _check_capabilities(entries, device, registries, layer_attention)
    problems += _check_transform_groups(entries, registries)
    if unknown:
        if not problems:
            raise unknown_components(unknown)
        problems.insert(0, str(unknown_components(unknown)))
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
    return entries


def unknown_choices(overrides: Iterable[str], registries: Registries,
                    options_of: Callable[[str], Iterable[str]]) -> list[UnknownComponentError]:
    """Every ``family=name`` override naming neither a registered component nor a config option of that group
    (``options_of(family)``, e.g. a plugin's YAML preset), so a compose that fails on one unknown name can
    report them all at once."""
    unknown = []
    for override in overrides:
        key, eq, name = override.lstrip("+~").partition("=")
        if not eq or key not in COMPONENT_GROUPS or name in registries[key]:
            continue
        options = list(options_of(key))
        if name not in options:
            choices = {option: "config file" for option in options}
            choices.update({e.name: e.provided_by for e in registries[key]})
            unknown.append(UnknownComponentError(key, name, choices, registries.failure_lines()))
    return unknown


def effective_entry(registries: Registries, family: str, node: Any) -> tuple[Entry, bool, str]:
    """(entry that will run, available?, why not) for a node whose schema binds. A node with a
    ``fallback`` option names the implementation that steps in when its own cannot run here."""
    entry = registries[family].get(node.get("name"))
    component_config(entry, node)
    ok, reason = entry.availability()
    fallback = node.get("fallback")
    if not ok and fallback:
        entry = registries[family].get(getattr(fallback, "value", fallback))
        ok, reason = entry.availability()
    return entry, ok, reason


def _check_model(cfg: DictConfig) -> list[str]:
    m, problems = cfg.model, []
    if m.d_model % m.n_heads:
        problems.append(f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}")
    kv = m.n_kv_heads or m.n_heads
    if m.n_heads % kv:
        problems.append(f"model.n_heads={m.n_heads} is not divisible by model.n_kv_heads={kv}")
    if m.max_seq_len is not None and m.max_seq_len < cfg.data.seq_len:
        problems.append(f"data.seq_len={cfg.data.seq_len} exceeds model.max_seq_len={m.max_seq_len}")
    t = cfg.trainer
    for key in ("max_steps", "batch_size", "grad_accum", "log_every"):
        if t[key] < 1:
            problems.append(f"trainer.{key}={t[key]} must be >= 1")
    return problems


def _check_layers(cfg: DictConfig, registries: Registries, problems: list[str],
                  unknown: list[UnknownComponentError] | None = None) -> list[Entry]:
    """Per-layer layouts: every layer's attention/norm/mlp must resolve and bind. Returns the attention
    entries in use beyond the global one; unknown names go to ``unknown`` (raised at once without it)."""
    from plugformer.model.assemble import LAYER_FAMILIES, layer_node, layer_spec

    m = cfg.model
    if not (m.get("layer_pattern") or m.get("layer_overrides")):
        return []
    pattern, overrides = m.get("layer_pattern"), m.get("layer_overrides")
    if pattern is not None and not (isinstance(pattern, ListConfig) and all(isinstance(i, DictConfig) for i in pattern)):
        problems.append("model.layer_pattern must be a list of {attention|norm|mlp: options} items, "
                        f"got {pattern}")
        return []
    if overrides is not None and not isinstance(overrides, DictConfig):
        problems.append(f"model.layer_overrides must map layer indices to {{attention|norm|mlp: options}}, got {overrides}")
        return []
    for key in (overrides or {}):
        if not -m.n_layers <= int(key) < m.n_layers:
            problems.append(f"model.layer_overrides key '{key}' is not a layer index in "
                            f"[{-m.n_layers}, {m.n_layers - 1}]")
    attention: list[Entry] = []
    found: dict[str, list[int]] = {}  # problem → layers that have it
    for layer in range(m.n_layers):
        try:
            spec = layer_spec(cfg, layer)
        except (AttributeError, TypeError) as exc:
            problems.append(f"model.layer_pattern/layer_overrides must map attention/norm/mlp to options: {exc}")
            return attention
        for family in spec:
            if family not in LAYER_FAMILIES:
                found.setdefault(f"'{family}' cannot vary per layer (choose from: {', '.join(LAYER_FAMILIES)})",
                                 []).append(layer)
        for family in LAYER_FAMILIES:
            try:
                entry, ok, reason = effective_entry(registries, family, layer_node(cfg, family, layer))
            except UnknownComponentError as exc:
                if unknown is None:
                    raise
                unknown.append(exc)
                continue
            except PlugformerError as exc:
                found.setdefault(str(exc), []).append(layer)
                continue
            if not ok:
                found.setdefault(f"{family} '{entry.name}' is unavailable here: {reason}", []).append(layer)
            if family == "attention" and all(entry is not e for e in attention):
                attention.append(entry)
    problems += [f"layer{'s' if len(ls) > 1 else ''} {', '.join(map(str, ls))}: {msg}" for msg, ls in found.items()]
    return attention


def _check_capabilities(entries: dict[str, Entry], device: str, registries: Registries,
                        layer_attention: list[Entry] = ()) -> list[str]:
    """Refuse combinations the components declare they cannot run, naming both sides and what works."""
    problems = []
    extra = [("attention", e) for e in layer_attention if e is not entries.get("attention")]
    for family, entry in [*entries.items(), *extra]:
        devices = entry.capabilities.get("devices")
        if devices is not None and device not in devices:
            works = [e.name for e in registries[family] if device in e.capabilities.get("devices", [device])]
            problems.append(f"{family} '{entry.name}' does not run on {device} (it supports: {', '.join(devices)}; "
                            f"these run on {device}: {', '.join(works) or 'none'})")
    attentions = {e.name: e for e in [entries.get("attention"), *layer_attention] if e is not None}
    objective = entries.get("objective")
    needs_from = [(f, e, need) for f, e in entries.items() for need in e.capabilities.get("needs_attention", [])]
    if objective is not None and objective.capabilities.get("causal") is False:
        needs_from.append(("objective", objective, "bidirectional"))
    for attention in attentions.values():
        for family, entry, need in needs_from:
            if not attention.capabilities.get(need, False):
                works = [e.name for e in registries.attention if e.capabilities.get(need)]
                problems.append(f"{family} '{entry.name}' needs attention with {need}, which attention "
                                f"'{attention.name}' lacks (these have it: {', '.join(works) or 'none'})")
    return problems


def _check_transform_groups(entries: dict[str, Entry], registries: Registries) -> list[str]:
    """An adapter must list the parallel strategy (capability ``parallel``); a quantizer in training must
    leave trainable weights (capability ``training``) and list the chosen adapter (capability ``adapters``)."""
    quantizer, adapter, parallel = entries.get("quantizer"), entries.get("adapter"), entries.get("parallel")
    strategies = adapter.capabilities.get("parallel") if adapter is not None else None
    if parallel is not None and strategies is not None and parallel.name not in strategies:
        return [(f"adapter '{adapter.name}' does not compose with parallel '{parallel.name}' (it composes with: "
                 f"{', '.join(strategies)}; see `plugformer plugins --family adapter --capabilities`)")]
    if quantizer is None:
        return []
    caps = quantizer.capabilities
    if caps.get("training") is False:
        works = [e.name for e in registries.quantizer if e.capabilities.get("training")]
        return [(f"quantizer '{quantizer.name}' makes weights that cannot be trained (these can: "
                 f"{', '.join(works) or 'none'}); quantize after training with `plugformer quantize "
                 f"checkpoint=... quantizer={quantizer.name} out=...`, or train adapter=qlora on a 4-bit base")]
    allowed = caps.get("adapters")
    if adapter is not None and allowed is not None and adapter.name not in allowed:
        return [(f"quantizer '{quantizer.name}' does not compose with adapter '{adapter.name}' "
                 f"(it composes with: {', '.join(allowed) or 'no adapter'})")]
    return []

