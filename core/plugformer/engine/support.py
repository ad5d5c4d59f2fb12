"""Which models the engine can batch: every attention backend and the position encoding must declare
the ``ragged`` capability (plugin API 1.1). Anything else is refused in one line, by name."""
from __future__ import annotations

from torch import nn

from plugformer.errors import ConfigError
from plugformer.interfaces import PositionEncoding
from plugformer.registry import Entry, Registries


class RaggedUnsupported(ConfigError):
    """A component of the model cannot take rows at different positions in one forward pass."""


def _entry_of(module: nn.Module, registry) -> Entry | None:
    cls = type(module)
    spelled = f"{cls.__module__}:{cls.__qualname__}"
    for entry in registry:
        if entry.target is cls or entry.target == spelled:
            return entry
    return None


def check_ragged_support(model: nn.Module, registries: Registries) -> None:
    """Raise :class:`RaggedUnsupported` naming the first attention backend or position encoding of
    ``model`` that does not declare ``ragged``."""
    from plugformer.model import SelfAttention

    parts = [("attention", m.backend) for m in model.modules() if isinstance(m, SelfAttention)]
    parts += [("position", m) for m in model.modules() if isinstance(m, PositionEncoding)]
    seen: set[type] = set()
    for family, module in parts:
        if type(module) in seen:
            continue
        seen.add(type(module))
        entry = _entry_of(module, getattr(registries, family))
        if entry is not None and entry.capabilities.get("ragged"):
            continue
        what = (f"{family} '{entry.name}' (package {entry.provider})" if entry is not None
                else f"{family} class {type(module).__qualname__} (not a registered component)")
        raise RaggedUnsupported(
            f"{what} does not declare the 'ragged' capability (plugin API 1.1), which the inference engine needs "
            "to batch sequences; it still trains and decodes one sequence at a time with "
            "plugformer.generation.generate")


__all__ = ["RaggedUnsupported", "check_ragged_support"]
