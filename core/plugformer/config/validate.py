"""Checks a composed config before any heavy work: every key is one its schema declares and every number is in
its declared range, names resolve, parameters bind, the combination and the device fit. Every problem found is
reported at once, on one line."""
from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from plugformer.build import component_config
from plugformer.config.ranges import field_range
from plugformer.config.schema import COMPONENT_GROUPS, OPTIONAL_GROUPS, FinetuneConfig, GenerateConfig, TrainConfig
from plugformer.errors import ConfigError, PlugformerError, UnknownComponentError, unknown_components
from plugformer.interfaces.parallel import resolve_device
from plugformer.registry import Entry, Registries


#: the schema of each top-level config (``conf/<name>.yaml``) whose keys and ranges compose-time checks enforce
CONFIG_SCHEMAS: dict[str, type] = {"train": TrainConfig, "validate": TrainConfig, "generate": GenerateConfig,
                                   "finetune": FinetuneConfig}
TARGET_KEY = "_target_"


def check_composed(cfg: DictConfig, config_name: str, registries: Registries) -> None:
    """Refuse, in one line, keys no schema declares (``+model.extra=1``), ``_target_`` anywhere and numbers out
    of their declared range, for the top-level config ``config_name`` (see :data:`CONFIG_SCHEMAS`; other
    names are only searched for ``_target_``). Every composition of a command goes through here."""
    schema = CONFIG_SCHEMAS.get(config_name)
    problems = schema_problems(cfg, schema, registries) if schema is not None else _target_problems(cfg, "")
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))


def schema_problems(node: DictConfig, schema: type, registries: Registries, path: str = "") -> list[str]:
    """Every key of ``node`` not declared by ``schema`` (a dataclass), every ``_target_`` and every number
    outside its field's declared range, recursively: nested dataclasses, and each component group's node
    against the schema of the entry it names (a name that does not resolve is reported by validation)."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = typing.get_type_hints(schema)
    problems: list[str] = []
    for key in node.keys():
        where = f"{path}.{key}" if path else str(key)
        if key == TARGET_KEY:
            problems.append(_target_message(where))
        elif key not in fields:
            problems.append(f"unknown config key '{where}' (keys of {f'{path!r}' if path else 'the top level'}: "
                            f"{', '.join(fields)}); plugformer accepts only the keys its schemas declare")
    for name, f in fields.items():
        if name not in node:
            continue
        where = f"{path}.{name}" if path else name
        value = node._get_node(name)
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, DictConfig):
            problems += schema_problems(value, hint, registries, where)
        elif path == "" and name in (*COMPONENT_GROUPS, *OPTIONAL_GROUPS) and isinstance(value, DictConfig):
            problems += _component_problems(value, name, registries, where)
        elif field_range(f) is not None:
            problem = field_range(f).problem(where, _plain(node[name]))
            problems += [problem] if problem else []
        else:
            problems += _target_problems(value, where)
    if path == "" and schema is TrainConfig and isinstance(node.get("model"), DictConfig):
        problems += _layer_problems(node, registries)
    return problems


def _component_problems(node: DictConfig, family: str, registries: Registries, where: str) -> list[str]:
    from plugformer.config.store import node_class

    try:
        entry = registries[family].get(node.get("name"))
    except PlugformerError:
        return _target_problems(node, where)  # validation names the unknown component with its choices
    return schema_problems(node, node_class(entry), registries, where)


def _layer_problems(cfg: DictConfig, registries: Registries) -> list[str]:
    """Ranges of the per-layer options in ``model.layer_pattern``/``model.layer_overrides``, against the
    schema of the implementation each item runs (its own ``name`` or its group's); their keys and shapes are
    checked by validation."""
    from plugformer.config.store import node_class

    problems: list[str] = []
    pattern, overrides = cfg.model.get("layer_pattern"), cfg.model.get("layer_overrides")
    items = [(f"model.layer_pattern[{i}]", item) for i, item in enumerate(pattern)] \
        if isinstance(pattern, ListConfig) else []
    items += [(f"model.layer_overrides.{k}", item) for k, item in overrides.items()] \
        if isinstance(overrides, DictConfig) else []
    for where, item in items:
        if not isinstance(item, DictConfig):
            continue
        for family, options in item.items():
            if family not in registries.families() or not isinstance(options, DictConfig) or \
                    not isinstance(cfg.get(family), DictConfig):
                continue
            try:
                entry = registries[family].get(options.get("name") or cfg[family].get("name"))
            except PlugformerError:
                continue
            declared = {f.name: field_range(f) for f in dataclasses.fields(node_class(entry))}
            for key in options:
                if declared.get(key) is not None:
                    problem = declared[key].problem(f"{where}.{family}.{key}", _plain(options[key]))
                    problems += [problem] if problem else []
    return problems


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value) if isinstance(value, (DictConfig, ListConfig)) else value


def _target_message(where: str) -> str:
    return (f"'{where}' is not allowed: plugformer never instantiates classes from a config; choose components "
            "by registry name (`plugformer plugins`)")


def _target_problems(value: Any, where: str) -> list[str]:
    """A ``_target_`` key anywhere under ``value`` (a free-form node such as ``model.layer_pattern``)."""
    if isinstance(value, DictConfig):
        return [p for key in value.keys() for p in (
            [_target_message(f"{where}.{key}" if where else str(key))] if key == TARGET_KEY else
            _target_problems(value._get_node(key), f"{where}.{key}" if where else str(key)))]
    if isinstance(value, ListConfig):
        return [p for i in range(len(value)) for p in _target_problems(value._get_node(i), f"{where}[{i}]")]
    return []


def config_warnings(cfg: DictConfig) -> list[str]:
    """Settings that are legal but almost certainly not what was meant, one line each (the trainer prints
    them when a run starts)."""
    warnings = []
    trainer, scheduler = cfg.get("trainer"), cfg.get("scheduler")
    if isinstance(trainer, DictConfig) and isinstance(scheduler, DictConfig) and \
            isinstance(scheduler.get("warmup_steps"), int) and scheduler.warmup_steps > trainer.max_steps:
        warnings.append(f"scheduler.warmup_steps={scheduler.warmup_steps} is longer than the run "
                        f"(trainer.max_steps={trainer.max_steps}): the learning rate never reaches optimizer.lr")
    return warnings


#: settings a resumed run takes from its checkpoint (optimizer and scheduler state), not from the command line
RESUMED_FROM_CHECKPOINT = ("optimizer.lr",)


def resume_warnings(saved: DictConfig, cfg: DictConfig) -> list[str]:
    """One line per setting changed for a resumed run that the checkpoint's state overrides (``saved``: the
    checkpoint's config), so a changed ``optimizer.lr`` is not silently ignored."""
    lines = []
    for key in RESUMED_FROM_CHECKPOINT:
        before, now = OmegaConf.select(saved, key), OmegaConf.select(cfg, key)
        same_component = OmegaConf.select(saved, key.split(".")[0] + ".name") == OmegaConf.select(
            cfg, key.split(".")[0] + ".name")
        if before is not None and now is not None and same_component and before != now:
            lines.append(f"{key}={now} is ignored on resume=true: the run continues from the checkpoint's "
                         f"optimizer and schedule state ({key}={before}); start a new run to change it")
    return lines


def validate_train(cfg: DictConfig, registries: Registries) -> dict[str, Entry]:
    """Validate a ``train`` config; return the resolved entry of each component group."""
    problems: list[str] = schema_problems(cfg, TrainConfig, registries)  # keys and ranges
    unknown: list[UnknownComponentError] = []  # every unknown name is reported, all at once
    entries: dict[str, Entry] = {}
    # every component group, and each optional group that is chosen (plugformer.config.schema.OPTIONAL_GROUPS)
    chosen = [*COMPONENT_GROUPS, *(f for f in OPTIONAL_GROUPS if cfg.get(f) is not None)]
    for family in chosen:
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
    """Shapes that must agree across fields (each field's own range is checked by :func:`schema_problems`)."""
    m, problems = cfg.model, []
    if m.n_heads >= 1 and m.d_model % m.n_heads:
        problems.append(f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}")
    kv = m.n_kv_heads or m.n_heads
    if kv >= 1 and m.n_heads % kv:
        problems.append(f"model.n_heads={m.n_heads} is not divisible by model.n_kv_heads={kv}")
    if m.max_seq_len is not None and m.max_seq_len < cfg.data.seq_len:
        problems.append(f"data.seq_len={cfg.data.seq_len} exceeds model.max_seq_len={m.max_seq_len}")
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
    if pattern is not None and not (isinstance(pattern, ListConfig)
                                    and all(isinstance(i, DictConfig) for i in pattern)):
        problems.append("model.layer_pattern must be a list of {attention|norm|mlp: options} items, "
                        f"got {pattern}")
        return []
    if overrides is not None and not isinstance(overrides, DictConfig):
        problems.append("model.layer_overrides must map layer indices to {attention|norm|mlp: options}, "
                        f"got {overrides}")
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

