"""The ``pooled`` embedder: any plugformer checkpoint as a bi-encoder.

A text is tokenized with the checkpoint's own tokenizer: its role's instruction prefix first, then cut to
``max_tokens`` tokens, no special tokens added, as the ``contrastive`` objective's training data is. The texts
are right-padded into a batch with a padding mask and run through the model;
:func:`plugformer.retrieval.pooled_embeddings` (the one pooling definition, shared with the ``contrastive``
objective) pools the final hidden states into unit vectors. Padding is masked out of attention, so a text's
vector does not depend on the rest of its batch; a checkpoint whose attention backend cannot mask padding is
run one text at a time instead.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugformer import ConfigError
from plugformer.interfaces import Embedder
from plugformer_embed.fingerprint import checkpoint_fingerprint

if TYPE_CHECKING:
    import numpy as np

    from plugformer_embed.schemas import PooledConfig

NAME = "pooled"
#: where a contrastively trained checkpoint records the pooling it was trained with (its objective's option)
RECORDED_POOLING = ("objective", "pooling")
DEFAULT_POOLING = "mean"


def recorded_pooling(config: Any) -> str | None:
    """The pooling a checkpoint's saved ``config`` says its model was trained with (``objective.pooling``),
    or None when it records none (a language model trained with ``clm``, ...)."""
    node: Any = config
    for key in RECORDED_POOLING:
        node = node.get(key) if hasattr(node, "get") else None
    return None if node is None else str(node)


def choose_pooling(requested: str | None, recorded: str | None) -> str:
    """The pooling to embed with: the one asked for, else the checkpoint's, else ``mean``; one line if it is not
    a pooling the core knows."""
    from plugformer.retrieval import POOLINGS

    pooling = requested if requested is not None else recorded if recorded is not None else DEFAULT_POOLING
    if pooling not in POOLINGS:
        where = "embedder.pooling" if requested is not None else "the checkpoint's objective.pooling"
        raise ConfigError(f"embedder '{NAME}': pooling {pooling!r} ({where}) is not one of {', '.join(POOLINGS)}")
    return pooling


def choose_max_tokens(requested: int | None, config: Any, where: Path) -> int:
    """How many tokens of a text the model reads: ``requested``, else the length the checkpoint was trained on
    (its ``data.seq_len``: a contrastive run cuts texts there, a language model never saw later positions), never
    more than the model's ``max_seq_len`` (one line if ``requested`` is)."""
    from plugformer.model import model_dims

    max_seq_len = int(model_dims(config, vocab_size=1, causal=True).max_seq_len)  # model.max_seq_len or data.seq_len
    if requested is not None:
        if requested > max_seq_len:
            raise ConfigError(f"embedder '{NAME}': max_tokens={requested} is more than the model's "
                              f"max_seq_len={max_seq_len} ({where})")
        return int(requested)
    data = config.get("data")
    trained = data.get("seq_len") if hasattr(data, "get") else None
    return min(int(trained), max_seq_len) if isinstance(trained, int) and trained > 0 else max_seq_len


def _masks_padding(model_config: Any, registries: Any) -> bool:
    """True when every attention backend of the model declares ``padding_mask`` (padded batches are exact)."""
    from plugformer.model import model_components

    return all(registries.attention.get(name).capabilities.get("padding_mask", False)
               for family, name in model_components(model_config) if family == "attention")


class PooledEmbedder(Embedder):
    """Unit vectors from a plugformer checkpoint's pooled final hidden states (``mean`` or ``last`` token).

    Loads the checkpoint when built (a missing or broken one is a one-line error naming it). Its
    :meth:`identity` holds the checkpoint's content fingerprint (not its path), the pooling, ``max_tokens``, the
    prefixes and the dimension.
    """

    def __init__(self, config: PooledConfig):
        super().__init__(config)
        from plugformer import get_registries
        from plugformer.checkpoint import check_checkpoint_dir, load_model_for_inference, resolve_checkpoint

        if config.checkpoint in (None, "", "???"):
            raise ConfigError(f"embedder '{NAME}' needs a checkpoint: embedder.checkpoint=PATH (a checkpoint "
                              "directory such as runs/emb/checkpoints/last, or a run directory)")
        if not resolve_checkpoint(config.checkpoint).exists():
            raise ConfigError(f"embedder '{NAME}': checkpoint {config.checkpoint} does not exist")
        if config.pooling is not None:
            choose_pooling(config.pooling, None)  # a bad choice fails before the model loads
        path = check_checkpoint_dir(config.checkpoint)
        registries = get_registries()
        loaded = load_model_for_inference(path, registries, device=config.device)
        self.model, self.tokenizer, self.device = loaded.model, loaded.tokenizer, loaded.device
        self.pooling = choose_pooling(config.pooling, recorded_pooling(loaded.config))
        self.max_tokens = choose_max_tokens(config.max_tokens, loaded.config, path)
        self.prefixes = {"query": config.query_prefix, "passage": config.passage_prefix}
        self._dim = int(loaded.config.model.d_model)
        self._pad_id = self.tokenizer.pad_id if self.tokenizer.pad_id is not None else self.tokenizer.eos_id
        self._padded_batches = _masks_padding(loaded.config, registries)
        self.checkpoint = Path(path)
        self.fingerprint = checkpoint_fingerprint(path)

    @property
    def dim(self) -> int:
        return self._dim

    def identity(self) -> dict[str, Any]:
        return {"name": NAME, "checkpoint": self.fingerprint, "pooling": self.pooling, "max_tokens": self.max_tokens,
                "query_prefix": self.prefixes["query"], "passage_prefix": self.prefixes["passage"], "dim": self.dim}

    def token_ids(self, texts: Sequence[str], role: str = "passage") -> list[list[int]]:
        """Each text's ids as the model sees them: the role's prefix, the text, cut to ``max_tokens``."""
        if role not in self.prefixes:
            raise ConfigError(f"embedding role {role!r} is not one of {', '.join(self.prefixes)}")
        prefix = self.prefixes[role]
        rows = self.tokenizer.encode_batch([prefix + text for text in texts])
        for i, row in enumerate(rows):
            if not row:
                raise ConfigError(f"cannot embed text {i} ({texts[i]!r}): it has no tokens")
        return [list(row[:self.max_tokens]) for row in rows]

    def embed(self, texts: Sequence[str], *, role: str = "passage") -> np.ndarray:
        import numpy as np
        import torch

        from plugformer.retrieval import pooled_embeddings

        texts = list(texts)
        ids = self.token_ids(texts, role)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # similar lengths together: less padding
        step = self.batch_size if self._padded_batches else 1
        with torch.inference_mode():
            for start in range(0, len(order), step):
                rows = order[start:start + step]
                width = len(ids[rows[0]])
                tokens = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.bool)
                for j, i in enumerate(rows):
                    tokens[j, :len(ids[i])] = torch.tensor(ids[i], dtype=torch.long)
                    mask[j, :len(ids[i])] = True
                vectors = pooled_embeddings(self.model, tokens.to(self.device), mask.to(self.device), self.pooling)
                out[rows] = vectors.float().cpu().numpy()
        return out


__all__ = ["DEFAULT_POOLING", "NAME", "PooledEmbedder", "choose_max_tokens", "choose_pooling", "recorded_pooling"]
