"""Two toy retrieval components for tests that exercise the index, the commands or the server without any retrieval
plugin: a hashing bag-of-words embedder (texts sharing words are near) and an exact numpy retriever that saves
itself as JSON. :func:`toy_registries` registers them as ``hash`` and ``exact``."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

import numpy as np

from plugformer.errors import PlugformerError
from plugformer.interfaces.retrieval import Embedder, Hit, Retriever, check_vectors, normalize_rows
from plugformer.registry import Registries


@dataclass
class HashConfig:
    dim: int = 64
    salt: str = ""


class HashEmbedder(Embedder):
    """Words hashed into ``dim`` buckets (``salt`` changes the hash, so two salts embed differently)."""

    @property
    def dim(self) -> int:
        return self.config.dim

    def identity(self) -> dict:
        return {"name": "hash", "dim": self.config.dim, "salt": self.config.salt}

    def embed(self, texts, *, role="passage"):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = re.findall(r"\w+", text.lower())
            if not words:
                raise PlugformerError(f"cannot embed text {row} ({text!r}): it has no words")
            for word in words:
                out[row, int(hashlib.md5((self.config.salt + word).encode()).hexdigest(), 16) % self.dim] += 1
        return normalize_rows(out)


class ExactRetriever(Retriever):
    """Inner product against every stored vector."""

    def __init__(self, config, context):
        super().__init__(config, context)
        self.keys: list[str] = []
        self.matrix = np.zeros((0, context.dim), dtype=np.float32)

    @property
    def exact(self) -> bool:
        return True

    def add(self, chunks, vectors):
        vectors = check_vectors(vectors, len(chunks), self.dim)
        for c in chunks:
            if c.id in self.keys:
                raise PlugformerError(f"id {c.id!r} is already indexed")
        self.keys += [c.id for c in chunks]
        self.matrix = np.concatenate([self.matrix, vectors])

    def delete(self, ids):
        gone = set(ids)
        keep = [i for i, key in enumerate(self.keys) if key not in gone]
        removed = len(self.keys) - len(keep)
        self.keys, self.matrix = [self.keys[i] for i in keep], self.matrix[keep]
        return removed

    def search(self, texts, vectors, k, **options):
        scores = check_vectors(vectors, len(texts), self.dim) @ self.matrix.T
        return [[Hit(self.keys[j], float(row[j])) for j in np.argsort(-row, kind="stable")[:k]] for row in scores]

    def ids(self):
        return iter(self.keys)

    def save(self, directory):
        (directory / "exact.json").write_text(json.dumps({"ids": self.keys, "vectors": self.matrix.tolist()}))

    @classmethod
    def load(cls, config, context, directory):
        data = json.loads((directory / "exact.json").read_text())
        out = cls(config, context)
        out.keys, out.matrix = data["ids"], np.array(data["vectors"], dtype=np.float32).reshape(-1, context.dim)
        return out


def toy_registries() -> Registries:
    """Fresh registries holding only the toys: embedder ``hash``, retriever ``exact``."""
    regs = Registries()
    regs.embedder.register("hash", HashEmbedder, schema=HashConfig)
    regs.retriever.register("exact", ExactRetriever)
    return regs


__all__ = ["ExactRetriever", "HashConfig", "HashEmbedder", "toy_registries"]
