"""Checks a composed config before any heavy work: names resolve, parameters bind, the combination and
the device fit. Every problem found is reported at once, on one line."""
from __future__ import annotations

from omegaconf import DictConfig

from plugformer.build import component_config
from plugformer.config.schema import COMPONENT_GROUPS
from plugformer.errors import ConfigError, PlugformerError, UnknownComponentError
from plugformer.interfaces.parallel import resolve_device
from plugformer.registry import Entry, Registries


def validate_train(cfg: DictConfig, registries: Registries) -> dict[str, Entry]:
    """Validate a ``train`` config; return the resolved entry of each component group."""
    problems: list[str] = []
    entries: dict[str, Entry] = {}
    for family in COMPONENT_GROUPS:
        try:
            entry = registries[family].get(cfg[family].name)
            component_config(entry, cfg[family])
            entries[family] = entry
            ok, reason = entry.availability()
            if not ok:
                problems.append(f"{family} '{entry.name}' is unavailable here: {reason}")
        except UnknownComponentError:
            raise
        except PlugformerError as exc:
            problems.append(str(exc))
    for name in cfg.trainer.callbacks:
        registries.callback.get(name)
    problems += _check_model(cfg)
    device = "cpu"
    try:
        device = resolve_device(cfg.device).split(":")[0]
    except ConfigError as exc:
        problems.append(str(exc))
    problems += _check_capabilities(entries, device, registries)
    if problems:
        raise ConfigError("invalid config: " + "; ".join(problems))
    return entries


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


def _check_capabilities(entries: dict[str, Entry], device: str, registries: Registries) -> list[str]:
    """Refuse combinations the components declare they cannot run, naming both sides."""
    problems = []
    for family, entry in entries.items():
        devices = entry.capabilities.get("devices")
        if devices is not None and device not in devices:
            problems.append(f"{family} '{entry.name}' does not run on {device} (it supports: {', '.join(devices)})")
    attention = entries.get("attention")
    if attention is not None:
        caps = attention.capabilities
        for family, entry in entries.items():
            for need in entry.capabilities.get("needs_attention", []):
                if not caps.get(need, False):
                    works = [e.name for e in registries.attention if e.capabilities.get(need)]
                    problems.append(f"{family} '{entry.name}' needs attention with {need}, which attention "
                                    f"'{attention.name}' lacks (these have it: {', '.join(works) or 'none'})")
    return problems

