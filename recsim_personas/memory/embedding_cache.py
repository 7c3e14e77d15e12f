"""An on-disk (SQLite) cache in front of any embedder, keyed by model name and text hash."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsim_personas.errors import BackendError
from recsim_personas.memory.embedder import Embedder, l2_normalize
from recsim_personas.paths import cache_dir

__all__ = ["CachedEmbedder"]

logger = logging.getLogger(__name__)


class CachedEmbedder:
    """Any :class:`Embedder` plus an on-disk cache keyed by ``(embedder.name, sha256(text))``.

    The cache is one SQLite file (default ``cache_dir("embeddings") / "embeddings.sqlite"``), safe
    for concurrent processes. Texts are de-duplicated, looked up, and only the misses go to the
    inner embedder, in chunks of ``chunk_size`` that are stored as soon as they are computed (an
    interrupted run keeps its finished chunks). A stored vector with the wrong length or non-finite
    values is treated as a miss and overwritten; an unreadable cache file is moved aside to
    ``*.corrupt`` and started afresh.

    Args:
        inner: The embedder to cache.
        path: The SQLite file; ``None`` = the default under the project's cache dir.
        chunk_size: Texts per call to ``inner.embed`` (and per cache commit).
        progress: Show a tqdm bar over chunks when there is more than one.
    """

    def __init__(self, inner: Embedder, path: str | os.PathLike[str] | None = None, *,
                 chunk_size: int = 512, progress: bool = False) -> None:
        self.inner = inner
        self.path = Path(path) if path is not None else cache_dir("embeddings") / "embeddings.sqlite"
        self.chunk_size = int(chunk_size)
        self.progress = progress
        #: Texts served from the cache / computed, since construction.
        self.hits = 0
        self.misses = 0
        self._dim: int | None = None

    @property
    def name(self) -> str:
        return self.inner.name

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._open()
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(self.path.name + ".corrupt")
            logger.warning("embedding cache %s is unreadable (%s); moved to %s", self.path, exc, aside)
            os.replace(self.path, aside)
            conn = self._open()
        try:
            yield conn
        finally:
            conn.close()

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60)
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS vectors (model TEXT NOT NULL, key TEXT NOT NULL, "
                "dim INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (model, key))"
            )
            conn.commit()
        except sqlite3.DatabaseError:
            conn.close()
            raise
        return conn

    @staticmethod
    def _key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        unique = list(dict.fromkeys(texts))
        keys = {t: self._key(t) for t in unique}
        found: dict[str, np.ndarray] = {}
        model = self.name
        with self._connect() as conn:
            for i in range(0, len(unique), 500):
                chunk = [keys[t] for t in unique[i:i + 500]]
                rows = conn.execute(
                    f"SELECT key, dim, vec FROM vectors WHERE model = ? AND key IN ({','.join('?' * len(chunk))})",
                    [model, *chunk],
                ).fetchall()
                for key, dim, blob in rows:
                    vec = self._decode(dim, blob)
                    if vec is not None:
                        found[key] = vec
            missing = [t for t in unique if keys[t] not in found]
            self.hits += len(unique) - len(missing)
            self.misses += len(missing)
            chunks = [missing[i:i + self.chunk_size] for i in range(0, len(missing), self.chunk_size)]
            from recsim_personas.progress import progress_bar

            bar = progress_bar(total=len(missing), desc=f"embed ({self.inner.name.split('@')[0]})",
                               unit="text", enabled=self.progress and len(chunks) > 1)
            for chunk in chunks:
                vecs = l2_normalize(self.inner.embed(chunk))
                if vecs.shape[0] != len(chunk):
                    raise BackendError(f"embedder {model} returned {vecs.shape[0]} vectors for {len(chunk)} texts")
                conn.executemany(
                    "INSERT OR REPLACE INTO vectors (model, key, dim, vec) VALUES (?, ?, ?, ?)",
                    [(model, keys[t], int(v.shape[0]), v.astype("<f4").tobytes()) for t, v in zip(chunk, vecs)],
                )
                conn.commit()
                for t, v in zip(chunk, vecs):
                    found[keys[t]] = v
                bar.update(len(chunk))
            bar.close()
        if not texts:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        dims = {v.shape[0] for v in found.values()}
        if len(dims) > 1:
            raise BackendError(
                f"embedding cache {self.path} holds vectors of dimensions {sorted(dims)} for model "
                f"{model}; delete the file to rebuild it"
            )
        out = np.stack([found[keys[t]] for t in texts]).astype(np.float32)
        self._dim = out.shape[1]
        return out

    @staticmethod
    def _decode(dim: Any, blob: Any) -> np.ndarray | None:
        if not isinstance(dim, int) or dim < 1 or not isinstance(blob, bytes) or len(blob) != 4 * dim:
            return None
        vec = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        norm = float(np.linalg.norm(vec)) if np.isfinite(vec).all() else -1.0
        if not (abs(norm - 1.0) < 1e-3 or norm == 0.0):  # unit rows, or the zero row of an empty text
            return None
        return vec

    def __repr__(self) -> str:
        return f"CachedEmbedder({self.inner!r}, path={str(self.path)!r})"
