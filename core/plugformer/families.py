"""The component families, one record each: everything the core knows about a family in one place.

A family is a kind of swappable component (``attention``, ``optimizer``, ...). Its :class:`Family` record
says what it is for, which interface an implementation honours, whether a train config chooses it as a
Hydra config group, whether a model may vary it per layer, which model-transform stage it runs at (for
``adapter`` and ``quantizer``), and which fields the core itself adds to its config nodes. The registries,
the config schemas and store, the builder and the model assembly all read these records instead of
keeping their own lists. Torch-free: ``plugformer plugins`` reads it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, Optional


class CoreField(NamedTuple):
    """A field the core adds to (and reads from) every config node of a family; never passed to the
    implementation (``data.seq_len``: the trainer's window length, whatever the source)."""

    name: str
    type: Any
    default: Any


@dataclass(frozen=True)
class Family:
    """One component family. ``interface`` is a lazy ``"module:attr"`` reference to its contract."""

    name: str
    description: str
    interface: str | None
    #: a Hydra config group of ``train``: the config picks one implementation as ``<family>=<name>``
    config_group: bool = False
    #: ``model.layer_pattern``/``model.layer_overrides`` may choose it per transformer block
    per_layer: bool = False
    #: the :class:`plugformer.interfaces.Stage` member name its implementations run at, when they are
    #: :class:`~plugformer.interfaces.ModelTransform` objects built from the config
    transform_stage: str | None = None
    #: fields the core adds to this family's config nodes (besides ``name``)
    core_fields: tuple[CoreField, ...] = ()


FAMILY_RECORDS: tuple[Family, ...] = (
    Family("tokenizer", "text <-> token ids; trained or loaded", "plugformer.interfaces.tokenizer:Tokenizer",
           config_group=True),
    Family("attention", "attention kernel over projected q, k, v (causal, bias, KV cache)",
           "plugformer.interfaces.attention:Attention", config_group=True, per_layer=True),
    Family("position", "positional information: embedding, q/k rotation or attention bias",
           "plugformer.interfaces.position:PositionEncoding", config_group=True),
    Family("norm", "normalisation layer over the model dimension", "plugformer.interfaces.layers:NormFactory",
           config_group=True, per_layer=True),
    Family("mlp", "position-wise feed-forward block", "plugformer.interfaces.layers:MLPFactory",
           config_group=True, per_layer=True),
    Family("objective", "training loss over a batch of token windows", "plugformer.interfaces.objective:Objective",
           config_group=True),
    Family("optimizer", "builds a torch optimizer for the model's parameters",
           "plugformer.interfaces.optim:OptimizerFactory", config_group=True),
    Family("scheduler", "learning-rate schedule over training steps", "plugformer.interfaces.optim:SchedulerFactory",
           config_group=True),
    Family("parallel", "how processes, devices and model copies cooperate",
           "plugformer.interfaces.parallel:ParallelStrategy", config_group=True),
    Family("data", "a source of training/validation text", "plugformer.interfaces.data:TextSource",
           config_group=True,
           core_fields=(CoreField("seq_len", int, 128), CoreField("cache_dir", Optional[str], None))),
    Family("callback", "lifecycle hook implementations: loggers, progress bars",
           "plugformer.interfaces.callback:CallbackFactory"),
    Family("adapter", "parameter-efficient model transform (LoRA, ...)",
           "plugformer.interfaces.transform:ModelTransform", config_group=True, transform_stage="ADAPT"),
    Family("quantizer", "weight/activation quantization transform", "plugformer.interfaces.transform:ModelTransform",
           config_group=True, transform_stage="QUANTIZE"),
    Family("server", "serves a loaded model over a protocol", "plugformer.interfaces.server:Server"),
    Family("guide", "structured output: masks tokens so text follows a schema/regex/choice",
           "plugformer.interfaces.guide:Guide"),
    Family("embedder", "text -> unit-length vectors for retrieval (pooled hidden states, packaged models)",
           "plugformer.interfaces.retrieval:Embedder"),
    Family("retriever", "indexes chunks and finds the nearest ones to a query (dense, lexical, fused, a database)",
           "plugformer.interfaces.retrieval:Retriever"),
)

#: family name -> :class:`Family`, in listing order (read-only)
FAMILIES: Mapping[str, Family] = MappingProxyType({f.name: f for f in FAMILY_RECORDS})

#: the families a train config chooses as Hydra config groups, in config order
CONFIG_GROUPS: tuple[str, ...] = tuple(f.name for f in FAMILY_RECORDS if f.config_group)

#: the families a model may choose per transformer block
LAYER_FAMILIES: tuple[str, ...] = tuple(f.name for f in FAMILY_RECORDS if f.per_layer)

#: the config groups whose component is a model transform, in the order they are built
TRANSFORM_FAMILIES: tuple[str, ...] = tuple(f.name for f in FAMILY_RECORDS if f.transform_stage)


__all__ = ["CONFIG_GROUPS", "FAMILIES", "FAMILY_RECORDS", "LAYER_FAMILIES", "TRANSFORM_FAMILIES", "CoreField",
           "Family"]
