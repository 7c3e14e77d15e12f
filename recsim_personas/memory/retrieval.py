"""Per-user nearest-neighbour search over memory keys with faiss (inner product = cosine).

A :class:`MemoryIndex` holds one key vector per memory (in this project: the embedding of the text of
the item the user rated in train) and the user each memory belongs to. A search for user ``u`` only
ever sees ``u``'s own memories: each user gets a small exact ``faiss.IndexFlatIP`` over their rows
(built on first use and kept), so no other user's memory can be returned and no approximate search
can drop a neighbour. Vectors are L2-normalised, so the inner product is the cosine similarity.

When CUDA and faiss-gpu are both present (``device="auto"``), the per-user indexes live on the GPU;
otherwise on the CPU (faiss-cpu).

Leakage rules the index enforces:
    * ``exclude_item`` is never returned (training rows pass their own item, so a row's own rating
      cannot leak into its prompt);
    * a hit needs ``similarity >= delta`` (the paper's threshold);
    * only memories the index was built from exist: the pipeline builds it from train interactions
      only, so test-time retrieval sees train memories only.

Example:
    >>> import numpy as np
    >>> keys = np.eye(3, dtype="float32")
    >>> index = MemoryIndex(user_ids=[7, 7, 8], item_ids=[10, 11, 12], vectors=keys)
    >>> [(h.item_id, round(h.similarity, 3)) for h in index.search(7, keys[1], k=2)]
    [(11, 1.0), (10, 0.0)]
    >>> [h.item_id for h in index.search(7, keys[1], k=2, exclude_item=11)]
    [10]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from recsim_personas.errors import ConfigError, DataError, closest, did_you_mean

__all__ = ["MemoryHit", "MemoryIndex", "faiss_device", "id_hint"]


@dataclass(frozen=True)
class MemoryHit:
    """One retrieved memory.

    Attributes:
        row: Position of the memory in the arrays the index was built from.
        item_id: The memory's item.
        similarity: Cosine similarity between the query and the memory's key.
    """

    row: int
    item_id: int
    similarity: float


def faiss_device(device: str = "auto") -> str:
    """``"cuda"`` if asked for (or ``"auto"``) and faiss has GPUs, else ``"cpu"``.

    Raises:
        ConfigError: ``device="cuda"`` but faiss-gpu or a GPU is missing, or an unknown device.
    """
    if device not in ("auto", "cpu", "cuda"):
        hint = did_you_mean(device, ("auto", "cpu", "cuda"))
        raise ConfigError(f"retrieval device {device!r} is not auto, cpu or cuda.{hint}")
    if device == "cpu":
        return "cpu"
    import faiss

    n_gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    if n_gpus > 0 and hasattr(faiss, "StandardGpuResources"):
        return "cuda"
    if device == "cuda":
        raise ConfigError(
            "retrieval device 'cuda' needs faiss-gpu and a GPU (pip install 'recsim-personas[gpu]'); "
            "use device='auto' or 'cpu'"
        )
    return "cpu"


def id_hint(value: Any, known: Sequence[int] | np.ndarray) -> str:
    """A "Did you mean ...?" suffix for an unknown integer id.

    Ids that look alike (typos such as ``1239`` for ``1293``) come first; when none does, the
    numerically nearest known ids are offered. Empty when ``known`` is empty.
    """
    ids = [int(k) for k in known]
    if not ids:
        return ""
    close = closest(value, ids, n=3, cutoff=0.5)
    if not close:
        try:
            v = int(value)
        except (TypeError, ValueError):
            return ""
        close = [str(k) for k in sorted(ids, key=lambda k: (abs(k - v), k))[:2]]
    return f" Did you mean {', '.join(close)}?"


#: Extra faiss candidates re-scored per query, so that a near-tie at the k-th place is decided by
#: the exact float64 re-scoring rather than by faiss's float32 order.
_RERANK_MARGIN = 8


class MemoryIndex:
    """Exact per-user inner-product search over memory keys.

    Args:
        user_ids: Owner of each memory, shape ``(n,)``.
        item_ids: Item of each memory, shape ``(n,)``; ``(user, item)`` pairs should be unique.
        vectors: Key of each memory, shape ``(n, d)``; L2-normalised here (float32).
        device: ``"auto"`` (faiss-gpu when CUDA is present), ``"cpu"`` or ``"cuda"``.

    Raises:
        DataError: Lengths disagree or vectors are not 2-d / finite.
    """

    def __init__(self, user_ids: Sequence[int] | np.ndarray, item_ids: Sequence[int] | np.ndarray,
                 vectors: np.ndarray, *, device: str = "auto") -> None:
        from recsim_personas.memory.embedder import l2_normalize

        users = np.asarray(user_ids, dtype=np.int64)
        items = np.asarray(item_ids, dtype=np.int64)
        vecs = np.asarray(vectors)
        if vecs.ndim != 2 or not (len(users) == len(items) == len(vecs)):
            raise DataError(
                f"memory index needs user_ids, item_ids and 2-d vectors of one length; got "
                f"{len(users)}, {len(items)} and shape {vecs.shape}"
            )
        if len(vecs) and not np.isfinite(vecs).all():
            raise DataError("memory index vectors contain NaN or infinity; re-run the embed stage")
        self.user_ids = users
        self.item_ids = items
        self.vectors = l2_normalize(vecs) if len(vecs) else vecs.astype(np.float32)
        self.dim = int(vecs.shape[1])
        self.device = faiss_device(device)
        # Rows of each user, in input order (stable sort keeps it).
        order = np.argsort(users, kind="stable")
        uniq, starts = np.unique(users[order], return_index=True)
        bounds = np.r_[starts, len(order)]
        self._rows: dict[int, np.ndarray] = {
            int(u): order[bounds[i]:bounds[i + 1]] for i, u in enumerate(uniq)
        }
        # Most copies of one item among a user's memories (1 when pairs are unique): how many extra
        # neighbours a search needs so that dropping ``exclude_item`` still leaves k hits.
        self._dups: dict[int, int] = {
            u: int(np.unique(items[r], return_counts=True)[1].max()) for u, r in self._rows.items()
        }
        self._indexes: dict[int, Any] = {}
        self._gpu_res: Any = None

    @property
    def users(self) -> np.ndarray:
        """Sorted ids of the users with at least one memory."""
        return np.asarray(sorted(self._rows), dtype=np.int64)

    def __len__(self) -> int:
        return len(self.user_ids)

    def __contains__(self, user_id: object) -> bool:
        try:
            return int(user_id) in self._rows  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False

    def rows(self, user_id: int) -> np.ndarray:
        """Positions of ``user_id``'s memories.

        Raises:
            DataError: The user has no memory in the index.
        """
        try:
            return self._rows[int(user_id)]
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"user {user_id!r} has no memories in this index ({len(self._rows)} users)."
                f"{id_hint(user_id, list(self._rows))}"
            ) from None

    def _index_for(self, user_id: int) -> Any:
        index = self._indexes.get(user_id)
        if index is None:
            import faiss

            rows = self._rows[user_id]
            index = faiss.IndexFlatIP(self.dim)
            index.add(np.ascontiguousarray(self.vectors[rows]))
            if self.device == "cuda":  # pragma: no cover - no GPU on the test machines
                if self._gpu_res is None:
                    self._gpu_res = faiss.StandardGpuResources()
                index = faiss.index_cpu_to_gpu(self._gpu_res, 0, index)
            self._indexes[user_id] = index
        return index

    def search(self, user_id: int, query: np.ndarray, k: int = 1, delta: float = 0.0,
               exclude_item: int | None = None) -> list[MemoryHit]:
        """The top-``k`` memories of ``user_id`` by cosine similarity to ``query``.

        Args:
            user_id: Whose memories to search (only these are candidates).
            query: One query vector, shape ``(d,)`` (normalised here).
            k: At most this many hits.
            delta: Minimum similarity of a hit.
            exclude_item: Never return a memory of this item.

        Returns:
            Hits, most similar first; fewer than ``k`` when the user has
            fewer eligible memories or fewer pass ``delta``.
        """
        q = np.asarray(query, dtype=np.float32)
        if q.ndim != 1:
            raise DataError(f"search takes one query vector of shape (d,), got shape {q.shape}; use search_batch")
        excl = None if exclude_item is None else [exclude_item]
        return self.search_batch([user_id], q[None, :], k=k, delta=delta, exclude_items=excl)[0]

    def search_batch(self, user_ids: Sequence[int] | np.ndarray, queries: np.ndarray, k: int = 1,
                     delta: float = 0.0,
                     exclude_items: Sequence[int | None] | np.ndarray | None = None
                     ) -> list[list[MemoryHit]]:
        """:meth:`search` for many (user, query) pairs; one faiss call per distinct user.

        Args:
            user_ids: The user of each query, shape ``(m,)``.
            queries: Query vectors, shape ``(m, d)``.
            k: At most this many hits per query.
            delta: Minimum similarity of a hit.
            exclude_items: Per query, an item never to return (``None`` entries allowed), or ``None``.

        Returns:
            One list of hits per query, in query order.

        Raises:
            ConfigError: ``k < 1``.
            DataError: A user without memories, or mismatched shapes.
        """
        if int(k) < 1:
            raise ConfigError(f"retrieval k must be >= 1, got {k}")
        k = int(k)
        users = np.asarray(user_ids, dtype=np.int64)
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim != 2 or len(q) != len(users) or (len(q) and q.shape[1] != self.dim):
            raise DataError(
                f"search_batch needs {len(users)} query vectors of dimension {self.dim}, got shape "
                f"{q.shape}"
            )
        if exclude_items is None:
            excl = [None] * len(users)
        else:
            excl = list(exclude_items)
            if len(excl) != len(users):
                raise DataError(f"exclude_items has {len(excl)} entries for {len(users)} queries")
        from recsim_personas.memory.embedder import l2_normalize

        q = l2_normalize(q) if len(q) else q
        results: list[list[MemoryHit]] = [[] for _ in range(len(users))]
        for user in np.unique(users):
            positions = np.flatnonzero(users == user)
            rows = self.rows(int(user))
            kk = min(k + self._dups[int(user)] + _RERANK_MARGIN, len(rows))
            _, idx = self._index_for(int(user)).search(np.ascontiguousarray(q[positions]), kk)
            for pos, irow in zip(positions, idx):
                hits: list[MemoryHit] = []
                skip = excl[pos]
                # faiss's float32 scores depend on how many queries share a call (BLAS for a batch,
                # SIMD loops for one), so near-ties could swap between a batched and a single search.
                # The candidates are re-scored one query at a time in float64 and ordered by
                # (similarity, item id): the same hits whatever the batch.
                cand = irow[irow >= 0]
                exact = self.vectors[rows[cand]].astype(np.float64) @ q[pos].astype(np.float64)
                cand_items = self.item_ids[rows[cand]]
                order = np.lexsort((cand_items, -exact))
                for local, sim in zip(cand[order], exact[order]):
                    if sim < delta:
                        continue
                    row = int(rows[local])
                    item = int(self.item_ids[row])
                    if skip is not None and item == int(skip):
                        continue
                    hits.append(MemoryHit(row=row, item_id=item, similarity=float(sim)))
                    if len(hits) == k:
                        break
                results[pos] = hits
        return results
