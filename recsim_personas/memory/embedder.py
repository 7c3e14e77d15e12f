"""The embedder protocol: texts in, one L2-normalised float32 row per text out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

__all__ = ["EXAMPLE_SPECS", "Embedder", "l2_normalize"]

#: Embedder specs named in error messages (see :func:`~recsim_personas.memory.embeddings.make_embedder`).
EXAMPLE_SPECS: tuple[str, ...] = ("minilm", "hashing", "openai:<model>", "sentence-transformers/all-MiniLM-L6-v2")


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (all-zero rows stay zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {v.shape}")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, 1e-12), dtype=np.float32)


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text, in input order."""

    @property
    def name(self) -> str:
        """A stable identity of the model (the cache key's first half; recorded in manifests)."""
        ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; returns an array of shape ``(len(texts), dim)``, dtype float32."""
        ...
