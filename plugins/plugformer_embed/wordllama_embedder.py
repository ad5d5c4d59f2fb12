"""The ``wordllama`` embedder: WordLlama's token embeddings, average-pooled, loaded from its installed wheel.

WordLlama (a small static embedding model distilled from a large LM's token embeddings) ships the weights and
tokenizer of its ``l2_supercat`` config inside the package, so it embeds on a fresh machine without a network:
the files are looked up in the installed package, and ``WordLlama.load`` is given that directory as its
``cache_dir`` (its own lookup of the packaged tokenizer misses ``tokenizers/``; the cache layout matches the
package's) with ``disable_download=True``, so it only reads those local files. Smaller vectors are the leading
coordinates of the packaged ones (the model is trained Matryoshka-style, so a prefix is itself an embedding).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plugformer import ConfigError
from plugformer.interfaces import Embedder, normalize_rows

if TYPE_CHECKING:
    import numpy as np

    from plugformer_embed.schemas import WordLlamaConfig

NAME = "wordllama"
ROLES = ("query", "passage")


def import_wordllama() -> Any:
    """``import wordllama`` without its import-time ``logging.basicConfig(level=INFO)``, which would otherwise
    turn on INFO output of every library in this process: the root logger is restored as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        import wordllama
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)
    return wordllama


def packaged_model(wordllama: Any, config: str) -> tuple[Any, int, Path, Path]:
    """(the config's ``ModelURI``, the dimension of its packaged weights, the weights file, the tokenizer file)
    of ``config`` inside the installed package; one line naming what ships when it is not there."""
    from wordllama import WordLlama
    from wordllama.config import WordLlamaModels

    package = Path(wordllama.__file__).parent
    shipped = {}
    for name in WordLlamaModels.list_configs():
        uri = getattr(WordLlamaModels, name)
        for dim in sorted(uri.available_dims, reverse=True):
            weights = package / "weights" / WordLlama.get_filename(name, dim)
            tokenizer = package / "tokenizers" / str(uri.tokenizer_config)
            if weights.is_file() and tokenizer.is_file():
                shipped[name] = (uri, dim, weights, tokenizer)
                break
    if config not in shipped:
        have = ", ".join(f"{n} (dim {d})" for n, (_, d, _, _) in shipped.items()) or "none"
        raise ConfigError(f"embedder '{NAME}': config {config!r} has no weights in the installed wordllama "
                          f"{wordllama.__version__} at {package} (downloads are disabled); packaged: {have}")
    return shipped[config]


class WordLlamaEmbedder(Embedder):
    """WordLlama's packaged model: average-pooled token embeddings, truncated to ``dim``, L2-normalised. Queries
    and passages embed alike. Never downloads."""

    def __init__(self, config: WordLlamaConfig):
        super().__init__(config)
        wordllama = import_wordllama()
        from wordllama import WordLlama

        uri, shipped_dim, weights, _ = packaged_model(wordllama, config.config)
        dims = [d for d in sorted(uri.available_dims) if d <= shipped_dim]
        if config.dim not in dims:
            raise ConfigError(f"embedder '{NAME}': dim={config.dim} is not one of {', '.join(map(str, dims))} "
                              f"(the packaged {config.config} weights are {shipped_dim}-dimensional)")
        self.version = wordllama.__version__
        self.model_config = config.config
        self._dim = int(config.dim)
        self.model = WordLlama.load(config=config.config, dim=shipped_dim,
                                    trunc_dim=None if config.dim == shipped_dim else config.dim,
                                    cache_dir=weights.parent.parent, disable_download=True)

    @property
    def dim(self) -> int:
        return self._dim

    def identity(self) -> dict[str, Any]:
        return {"name": NAME, "config": self.model_config, "dim": self.dim, "version": self.version}

    def embed(self, texts: Sequence[str], *, role: str = "passage") -> np.ndarray:
        import numpy as np

        if role not in ROLES:
            raise ConfigError(f"embedding role {role!r} is not one of {', '.join(ROLES)}")
        texts = list(texts)
        if not texts:
            return np.empty((0, self.dim), dtype=np.float32)
        vectors = np.asarray(self.model.embed(texts, norm=False, batch_size=self.batch_size), dtype=np.float32)
        empty = np.flatnonzero(~np.any(vectors != 0, axis=1))
        if empty.size:
            i = int(empty[0])
            raise ConfigError(f"cannot embed text {i} ({texts[i]!r}): it has no tokens")
        return normalize_rows(vectors)


__all__ = ["NAME", "WordLlamaEmbedder", "import_wordllama", "packaged_model"]
