"""The contracts each component family honours. Plugin authors subclass or follow these.

Each family's registry names its interface (``plugformer plugins --family attention`` prints it);
the docstrings here are the complete contract: construction, shapes, dtypes, protocols.
"""
from plugformer.interfaces.attention import Attention, DecodeCache, KVCache, LayerKV, RaggedBatch, causal_mask
from plugformer.interfaces.callback import CallbackFactory
from plugformer.interfaces.data import SPLITS, Batch, Batches, DocumentPart, TextSource
from plugformer.interfaces.dims import ModelDims
from plugformer.interfaces.guide import (
    Guide,
    GuideMatcher,
    GuideSpec,
    Vocabulary,
    bitmask_words,
    build_guide,
    mask_logits,
    new_bitmask,
    pack_allowed,
    unpack_bitmask,
)
from plugformer.interfaces.layers import MLPFactory, NormFactory
from plugformer.interfaces.objective import (
    Objective,
    ObjectiveOutput,
    PairBatch,
    PreferenceBatch,
    SupervisedBatch,
)
from plugformer.interfaces.optim import (
    NO_DECAY_KINDS,
    OptimizerFactory,
    SchedulerFactory,
    check_no_decay,
    param_groups,
    param_kinds,
)
from plugformer.interfaces.parallel import ParallelStrategy, resolve_device
from plugformer.interfaces.position import PositionEncoding, Positions
from plugformer.interfaces.retrieval import (
    ROLES,
    Role,
    Chunk,
    Embedder,
    Hit,
    Retriever,
    RetrieverContext,
    check_k,
    check_search_options,
    check_vectors,
    normalize_rows,
    reciprocal_rank_fusion,
)
from plugformer.interfaces.server import Server
from plugformer.interfaces.tokenizer import Tokenizer
from plugformer.interfaces.transform import Adapter, ModelTransform, Quantizer, Stage

__all__ = [
    "NO_DECAY_KINDS", "SPLITS", "Adapter", "Attention", "Batch", "Batches", "CallbackFactory", "DecodeCache", "KVCache",
    "LayerKV", "RaggedBatch",
    "MLPFactory", "ModelDims", "ModelTransform", "NormFactory", "Objective", "ObjectiveOutput", "OptimizerFactory",
    "ParallelStrategy", "PositionEncoding", "Positions", "PreferenceBatch", "Quantizer", "SchedulerFactory", "Server",
    "Stage", "SupervisedBatch", "TextSource", "DocumentPart",
    "Tokenizer", "causal_mask",
    "Guide", "GuideMatcher", "GuideSpec", "Vocabulary", "bitmask_words", "build_guide", "mask_logits",
    "new_bitmask", "pack_allowed", "unpack_bitmask", "check_no_decay", "param_groups", "param_kinds", "resolve_device",
    "ROLES", "Role", "Chunk", "Embedder", "Hit", "Retriever", "RetrieverContext", "check_vectors", "normalize_rows",
    "reciprocal_rank_fusion", "check_k", "check_search_options", "PairBatch",
]
