"""Building an implementation the way the core does, with its schema defaults and the kit's tiny sizes.

Components are constructed from their schema defaults (``component_config``, exactly as a config node
with only ``name`` would bind), so the kit tests what a user gets by naming the component. A schema
field without a default (or with Hydra's ``???``) needs the user, unless :data:`CONFIG_PROVIDERS`
knows how to fill it in for a test.
"""
from __future__ import annotations

import dataclasses
import functools
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from plugformer.build import component_config
from plugformer.registry import Entry, Registries
from plugformer.testing.samples import FIT_TEXTS, SAMPLES

MISSING_VALUE = "???"


def registries() -> Registries:
    """This process's registries: every installed plugin, as ``plugformer`` itself would load them."""
    from plugformer import load_plugins

    return load_plugins().registries


def _bpe_registered() -> bool:
    return "bpe" in registries().tokenizer


def _fitted_bpe_dir() -> dict[str, Any]:
    """A directory holding a ``tokenizer.json`` (a BPE fitted on the kit's samples), for ``hf``."""
    bpe = registries().tokenizer.get("bpe")
    directory = Path(tempfile.mkdtemp(prefix="plugformer-kit-hf-"))
    fitted_tokenizer(bpe).save(directory)
    return {"path": str(directory)}


def _sample_text_dir() -> dict[str, Any]:
    """A directory of ``.txt`` files (the kit's samples), for the ``text`` source."""
    directory = Path(tempfile.mkdtemp(prefix="plugformer-kit-text-"))
    for i, text in enumerate(SAMPLES):
        (directory / f"sample{i:02d}.txt").write_text(text, encoding="utf-8")
    return {"path": str(directory)}


def _byte_registered() -> bool:
    return "byte" in registries().tokenizer


#: the kit's checkpoint model: one block of 4 heads over bytes (a few thousand weights, written in a blink)
TINY_CHECKPOINT_OVERRIDES = ("tokenizer=byte", "model.n_layers=1", "model.d_model=32", "model.n_heads=4",
                             "model.max_seq_len=64", "data.seq_len=16")


def tiny_checkpoint(out: str | Path, *overrides: str, seed: int = 0, records: dict[str, Any] | None = None) -> Path:
    """A random tiny model (:data:`TINY_CHECKPOINT_OVERRIDES` plus train-config ``overrides``) written as a
    checkpoint into ``out`` by the core's checkpoint writer, for components that load one (``embedder:
    pooled``). ``records``: config keys set in the saved config as a finished run records them (e.g.
    ``{"objective": {"name": "clm", "pooling": "last"}}``). The global torch RNG is left as it was."""
    import torch
    from omegaconf import OmegaConf

    from plugformer.checkpoint import write_model_checkpoint
    from plugformer.config import compose_checked, prepare
    from plugformer.model import build_model

    host = prepare()
    cfg = compose_checked("train", [*TINY_CHECKPOINT_OVERRIDES, *overrides], host)
    tokenizer = fitted_tokenizer(host.registries.tokenizer.get(cfg.tokenizer.name))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg, host.registries, tokenizer.vocab_size)
    config = OmegaConf.merge(OmegaConf.to_container(cfg, resolve=True), records or {})  # plain: records add keys
    return write_model_checkpoint(out, config, model.state_dict(), tokenizer=tokenizer)


def _kit_checkpoint() -> dict[str, Any]:
    """A tiny checkpoint for ``embedder: pooled``, with instruction prefixes so its ``roles`` claim is tested."""
    directory = Path(tempfile.mkdtemp(prefix="plugformer-kit-pooled-")) / "checkpoint"
    return {"checkpoint": str(tiny_checkpoint(directory)), "query_prefix": "query: ", "passage_prefix": "passage: "}


#: (family, name) → (can it supply them here?, values for required schema fields the kit supplies itself)
CONFIG_PROVIDERS: dict[tuple[str, str], tuple[Callable[[], bool], Callable[[], dict[str, Any]]]] = {
    ("tokenizer", "hf"): (_bpe_registered, _fitted_bpe_dir),
    ("data", "text"): (lambda: True, _sample_text_dir),
    ("embedder", "pooled"): (_byte_registered, _kit_checkpoint),
}


def required_fields(entry: Entry) -> list[str]:
    """Schema fields that have no usable default (no default at all, or ``???``)."""
    schema = entry.load_schema()
    if schema is None:
        return []
    out = []
    for f in dataclasses.fields(schema):
        no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if no_default or f.default == MISSING_VALUE:
            out.append(f.name)
    return out


def unfilled_fields(entry: Entry) -> list[str]:
    """Required fields the kit cannot fill in: the entry then needs a user's configuration."""
    provider = CONFIG_PROVIDERS.get((entry.family, entry.name))
    if provider is not None and provider[0]():
        return []
    return required_fields(entry)


@functools.cache
def _provided(family: str, name: str, provider: str) -> tuple[tuple[str, Any], ...]:
    provider = CONFIG_PROVIDERS.get((family, name))
    return tuple(provider[1]().items()) if provider and provider[0]() else ()


def config_for(entry: Entry, **overrides: Any) -> Any:
    """The entry's schema instance: defaults, kit-provided required values, then ``overrides``."""
    values = dict(_provided(entry.family, entry.name, entry.provider)) if required_fields(entry) else {}
    return component_config(entry, {**values, **overrides})


def build(entry: Entry, *args: Any, **overrides: Any) -> Any:
    """``impl(config, *args)`` as :func:`plugformer.build.build` does it, from the schema defaults."""
    return entry.load()(config_for(entry, **overrides), *args)


_FITTED: dict[tuple[str, str, str], Any] = {}


def fitted_tokenizer(entry: Entry) -> Any:
    """The entry's tokenizer built from schema defaults and, if it needs fitting, fitted on the samples.

    Cached per entry: fitting is the slowest thing the tokenizer contract does. Tests must not mutate it.
    """
    key = (entry.family, entry.name, entry.provider)
    if key not in _FITTED:
        tokenizer = build(entry)
        if tokenizer.needs_fit:
            tokenizer.fit(list(FIT_TEXTS))
        _FITTED[key] = tokenizer
    return _FITTED[key]


def tiny_dims(**changes: Any) -> Any:
    """The kit's model sizes: 4 heads of 8 channels, so tests take milliseconds on a CPU."""
    from plugformer.interfaces import ModelDims

    dims = ModelDims(vocab_size=64, d_model=32, n_heads=4, n_kv_heads=4, max_seq_len=64)
    return dataclasses.replace(dims, **changes)


def devices(entry: Entry) -> list[str]:
    """The declared devices present here (``cpu``; ``cuda`` too when a GPU is visible); skip if none."""
    import torch

    declared = list(entry.capabilities.get("devices", ["cpu"]))
    usable = [d for d in ("cpu", "cuda") if d in declared and (d == "cpu" or torch.cuda.is_available())]
    if not usable:
        pytest.skip(f"{entry.family} '{entry.name}' runs on {', '.join(declared) or 'no device'}; "
                    "none of them is present here")
    return usable


def dtypes(entry: Entry) -> list[Any]:
    """The floating dtypes an entry declares (``float32`` when it declares none)."""
    import torch

    names = list(entry.capabilities.get("dtypes", ["float32"]))
    found = []
    for name in names:
        dtype = getattr(torch, str(name), None)
        assert isinstance(dtype, torch.dtype) and dtype.is_floating_point, \
            f"{entry.family} '{entry.name}' declares dtype {name!r}, which is not a torch floating dtype"
        found.append(dtype)
    return found


def randn(*shape: int, seed: int = 0, device: str = "cpu", dtype: Any = None) -> Any:
    """Reproducible standard-normal values (drawn on the CPU, then moved), so devices see the same data."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(device=device, dtype=dtype or torch.float32)


def label(entry: Entry, **context: Any) -> str:
    """``attention 'sdpa' (device=cpu, dtype=float32)``: the start of every failure message."""
    where = ", ".join(f"{k}={str(v).replace('torch.', '')}" for k, v in context.items())
    return f"{entry.family} '{entry.name}' from {entry.provided_by or entry.plugin}" + (f" ({where})" if where else "")
