"""A deterministic bag-of-words embedder by feature hashing: no model, no network.

It is what the unit tests use and a legitimate offline option where lexical overlap is enough; it
carries no semantics beyond shared words.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections.abc import Sequence

import numpy as np

from recsim_personas.errors import ConfigError
from recsim_personas.memory.embedder import l2_normalize

__all__ = ["HashingEmbedder"]


class HashingEmbedder:
    """Feature hashing of lowercase word unigrams and bigrams into ``dim`` signed buckets.

    Deterministic across processes and platforms (BLAKE2b, not Python's salted ``hash``); counts are
    log-scaled (``1 + log(tf)``) and rows L2-normalised, so the inner product is the cosine of
    sublinear term-frequency vectors. Two texts sharing no word have similarity close to 0.

    Args:
        dim: Number of buckets (vector dimension).
        seed: Salt of the hash; different seeds give unrelated projections.
    """

    def __init__(self, dim: int = 256, seed: int = 0) -> None:
        if dim < 2:
            raise ConfigError(f"HashingEmbedder dim must be >= 2, got {dim}")
        self.dim = int(dim)
        self.seed = int(seed)
        self._salt = str(self.seed).encode()

    @property
    def name(self) -> str:
        return f"hashing-d{self.dim}-s{self.seed}"

    def _bucket(self, token: str) -> tuple[int, float]:
        digest = hashlib.blake2b(token.encode(), digest_size=8, key=self._salt).digest()
        value = int.from_bytes(digest, "little")
        return value % self.dim, (1.0 if (value >> 63) & 1 else -1.0)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = re.findall(r"[a-z0-9']+", str(text).lower())
            counts: dict[str, int] = {}
            for tok in [*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))]:
                counts[tok] = counts.get(tok, 0) + 1
            for tok, n in counts.items():
                idx, sign = self._bucket(tok)
                out[row, idx] += sign * (1.0 + math.log(n))
        return l2_normalize(out)

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim}, seed={self.seed})"
