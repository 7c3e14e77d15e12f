"""Read access to a run folder's memories: profiles (M_s), personas, and retrieval over M_l.

:class:`MemoryStore` is what agents, training-row builders and the environment use; it never writes.
It loads ``profiles.parquet``, ``memories.parquet``, ``embeddings/*.npy`` and (when the personas
stage ran) ``personas.parquet`` from a folder written by :func:`recsim_personas.memory.pipeline.build_memories`.

Retrieval (the paper's RAFT step) follows docs/design.md: the query is the embedding of the text of the
item to rate, the keys are the embeddings of the items the user rated in **train**, and each hit
returns the M_l text of that train interaction. Only the user's own memories are searched, and
``memories.parquet`` holds train interactions only, so test-time retrieval cannot see a test rating.
When building training rows pass ``exclude_item=item_id``: the row's own interaction is then never
returned (no label leakage).

Example:
    >>> store = MemoryStore.from_run_dir("runs/demo")                         # doctest: +SKIP
    >>> store.profile(42)[:40]                                                  # doctest: +SKIP
    'PERSONA: You excel at role-playing. Pict'
    >>> store.retrieve(42, item_id=1193, k=1)                                   # doctest: +SKIP
    [Memory(item_id=858, rating=5.0, text='I rated The Godfather 5 because ...', similarity=0.71)]
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas.errors import DataError
from recsim_personas.memory.retrieval import MemoryIndex, id_hint

__all__ = ["Memory", "MemoryStore"]


@dataclass(frozen=True)
class Memory:
    """One retrieved enriched interaction (M_l).

    Attributes:
        item_id: The remembered item (rated by the user in train).
        rating: The user's train rating of it.
        text: The M_l text explaining that rating.
        similarity: Cosine similarity between the queried item's text and this item's text.
    """

    item_id: int
    rating: float
    text: str
    similarity: float


class MemoryStore:
    """Profiles, personas and per-user retrieval over one run folder.

    Build with :meth:`from_run_dir`. All lookups are by ``user_id`` / ``item_id``; an unknown user raises
    :class:`DataError` with "Did you mean" suggestions.
    """

    def __init__(self, path: Path, profiles: pd.DataFrame, memories: pd.DataFrame,
                 profile_vectors: np.ndarray, profile_user_ids: np.ndarray, item_vectors: np.ndarray,
                 item_ids: np.ndarray, personas: pd.DataFrame | None = None, *,
                 embedder_spec: dict[str, Any] | None = None, catalog: Any = None, embedder: Any = None,
                 device: str = "auto") -> None:
        self.path = Path(path)
        self._profiles = profiles.drop_duplicates("user_id").set_index("user_id", drop=False).sort_index()
        self._memories = memories.reset_index(drop=True)
        self._profile_pos = {int(u): i for i, u in enumerate(profile_user_ids)}
        self._profile_vectors = np.asarray(profile_vectors, dtype=np.float32)
        self._item_pos = {int(i): n for n, i in enumerate(item_ids)}
        self._item_vectors = np.asarray(item_vectors, dtype=np.float32)
        self._personas = None if personas is None else {
            int(u): int(p) for u, p in zip(personas["user_id"], personas["persona"])
        }
        self._embedder_spec = embedder_spec or {}
        self._catalog = catalog
        self._embedder = embedder
        self._extra_items: dict[int, np.ndarray] = {}
        self._device = device
        self._index: MemoryIndex | None = None
        self._users = self._profiles.index.to_numpy(dtype=np.int64)
        missing = sorted(set(self._memories["item_id"].astype(int)) - set(self._item_pos))
        if missing:
            raise DataError(
                f"{self.path / 'memories.parquet'}: item(s) {missing[:5]} have no embedding in "
                "embeddings/items.npy; re-run the embed stage (recsim-personas memory --stages embed)"
            )
        no_vec = [int(u) for u in self._users if int(u) not in self._profile_pos]
        if no_vec:
            raise DataError(
                f"{self.path}: user(s) {no_vec[:5]} have a profile but no profile embedding; "
                "re-run the embed stage"
            )

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_run_dir(cls, path: str | os.PathLike[str], *, catalog: Any = None, embedder: Any = None,
                     device: str = "auto") -> MemoryStore:
        """Open a run folder written by ``build_memories`` (distill and embed stages done).

        Args:
            path: The run folder.
            catalog: Optional :class:`~recsim_personas.data.item_catalog.ItemCatalog`; with it, items
                outside the split (no stored embedding) are embedded on first use with the run's
                embedder, so retrieval works for any catalogue item.
            embedder: The embedder for such items (default: rebuilt from the manifest's embed stage).
            device: faiss device, ``"auto"`` / ``"cpu"`` / ``"cuda"``.

        Raises:
            DataError: The folder or a required file is missing or inconsistent.
        """
        root = Path(path)
        if not root.is_dir():
            raise DataError(f"run folder {root} does not exist; create it with `recsim-personas memory --out {root}`")
        needed = ["profiles.parquet", "memories.parquet", "embeddings/profiles.npy",
                  "embeddings/profile_user_ids.npy", "embeddings/items.npy", "embeddings/item_ids.npy"]
        absent = [n for n in needed if not (root / n).is_file()]
        if absent:
            stage = "distill" if any(n.endswith(".parquet") for n in absent) else "embed"
            raise DataError(
                f"run folder {root} lacks {', '.join(absent)}; run the {stage} stage "
                f"(recsim-personas memory --out {root})"
            )
        manifest: dict[str, Any] = {}
        if (root / "manifest.json").is_file():
            try:
                manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
            except json.JSONDecodeError:
                manifest = {}
        stages = manifest.get("stages", {})
        embed_inputs = (stages.get("embed") or {}).get("inputs", {})
        _check_fresh(root, "embed", embed_inputs.get("profiles"), ["profiles.parquet"])
        personas_path = root / "personas.parquet"
        if personas_path.is_file():
            _check_fresh(root, "personas", ((stages.get("personas") or {}).get("inputs") or {}).get("embeddings"),
                         ["embeddings/profiles.npy", "embeddings/profile_user_ids.npy"])
        personas = pd.read_parquet(personas_path) if personas_path.is_file() else None
        return cls(
            root,
            pd.read_parquet(root / "profiles.parquet"),
            pd.read_parquet(root / "memories.parquet"),
            _load_npy(root / "embeddings/profiles.npy"),
            _load_npy(root / "embeddings/profile_user_ids.npy"),
            _load_npy(root / "embeddings/items.npy"),
            _load_npy(root / "embeddings/item_ids.npy"),
            personas,
            embedder_spec=embed_inputs.get("embedder"),
            catalog=catalog,
            embedder=embedder,
            device=device,
        )

    # -- users and profiles ----------------------------------------------------------------
    @property
    def users(self) -> np.ndarray:
        """Sorted ids of the users with a profile."""
        return self._users.copy()

    def __contains__(self, user_id: object) -> bool:
        try:
            return int(user_id) in self._profiles.index  # type: ignore[call-overload]
        except (TypeError, ValueError):
            return False

    def _check_user(self, user_id: Any) -> int:
        try:
            uid = int(user_id)
        except (TypeError, ValueError):
            raise DataError(f"user id must be an integer, got {user_id!r}") from None
        if uid not in self._profiles.index:
            raise DataError(
                f"unknown user id {user_id} in run folder {self.path} ({len(self._users)} users, "
                f"ids {self._users.min()}..{self._users.max()}).{id_hint(uid, self._users)}"
            )
        return uid

    def profile(self, user_id: int) -> str:
        """The user's M_s: the paper's PERSONA paragraph (``profile_text``)."""
        return str(self._profiles.at[self._check_user(user_id), "profile_text"])

    def profile_row(self, user_id: int) -> dict[str, Any]:
        """The user's ``profiles.parquet`` row as a dict (traits, levels, taste, profile_text)."""
        row = self._profiles.loc[self._check_user(user_id)].to_dict()
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}

    def profile_embedding(self, user_id: int) -> np.ndarray:
        """The L2-normalised embedding of the user's ``profile_text``."""
        return self._profile_vectors[self._profile_pos[self._check_user(user_id)]].copy()

    # -- personas --------------------------------------------------------------------------
    @property
    def has_personas(self) -> bool:
        return self._personas is not None

    @property
    def n_personas(self) -> int:
        """Number of personas (0 before the personas stage ran)."""
        return 0 if self._personas is None else len(set(self._personas.values()))

    def persona(self, user_id: int) -> int:
        """The user's persona, 0..K-1.

        Raises:
            DataError: Unknown user, or the personas stage has not run.
        """
        uid = self._check_user(user_id)
        if self._personas is None:
            raise DataError(
                f"run folder {self.path} has no personas.parquet; run the personas stage "
                f"(recsim-personas memory --stages personas --out {self.path})"
            )
        if uid not in self._personas:
            raise DataError(f"user {uid} has no persona in {self.path / 'personas.parquet'}; re-run the personas stage")
        return self._personas[uid]

    def persona_users(self, persona: int) -> np.ndarray:
        """Sorted ids of the users of ``persona``."""
        if self._personas is None:
            raise DataError(f"run folder {self.path} has no personas.parquet; run the personas stage")
        users = sorted(u for u, p in self._personas.items() if p == int(persona))
        if not users:
            raise DataError(
                f"no persona {persona} in {self.path / 'personas.parquet'}; personas are 0..{self.n_personas - 1}"
            )
        return np.asarray(users, dtype=np.int64)

    # -- memories and retrieval ------------------------------------------------------------
    def memories(self, user_id: int) -> pd.DataFrame:
        """The user's M_l rows (``user_id, item_id, rating, timestamp, text``), oldest first."""
        uid = self._check_user(user_id)
        rows = self._memories[self._memories["user_id"] == uid]
        return rows.sort_values(["timestamp", "item_id"], kind="stable").reset_index(drop=True)

    @property
    def index(self) -> MemoryIndex:
        """The faiss index over all memories (built on first use)."""
        if self._index is None:
            items = self._memories["item_id"].to_numpy(dtype=np.int64)
            keys = self._item_vectors[[self._item_pos[int(i)] for i in items]] if len(items) else \
                np.zeros((0, self._item_vectors.shape[1]), dtype=np.float32)
            self._index = MemoryIndex(self._memories["user_id"].to_numpy(dtype=np.int64), items, keys,
                                      device=self._device)
        return self._index

    def has_item_embedding(self, item_id: int) -> bool:
        return int(item_id) in self._item_pos or int(item_id) in self._extra_items

    def item_embedding(self, item_id: int) -> np.ndarray:
        """The L2-normalised embedding of the item's text (the retrieval query/key).

        Items outside the split are embedded on first use when the store has a ``catalog``.

        Raises:
            DataError: The item has no stored embedding and the store has no catalog.
        """
        iid = int(item_id)
        if iid in self._item_pos:
            return self._item_vectors[self._item_pos[iid]].copy()
        if iid not in self._extra_items:
            self._embed_new_items([iid])
        return self._extra_items[iid].copy()

    def _embed_new_items(self, item_ids: Sequence[int]) -> None:
        todo = [int(i) for i in dict.fromkeys(item_ids) if int(i) not in self._item_pos and int(i) not in self._extra_items]
        if not todo:
            return
        if self._catalog is None:
            raise DataError(
                f"item {todo[0]} has no embedding in {self.path / 'embeddings/items.npy'} (the embed stage "
                "embeds the items of the split's users); pass catalog= to MemoryStore.from_run_dir to embed "
                "other items on the fly"
            )
        from recsim_personas.memory.item_text import item_embedding_text

        if self._embedder is None:
            from recsim_personas.memory.embeddings import make_embedder

            spec = self._embedder_spec
            if not spec.get("spec"):
                raise DataError(
                    f"{self.path / 'manifest.json'} does not record the embed stage's embedder; pass "
                    "embedder= to MemoryStore.from_run_dir"
                )
            self._embedder = make_embedder(spec["spec"], base_url=spec.get("base_url"))
        vecs = self._embedder.embed([item_embedding_text(self._catalog, i) for i in todo])
        if vecs.shape[1] != self._item_vectors.shape[1]:
            raise DataError(
                f"the embedder gives {vecs.shape[1]}-d vectors but the run's item embeddings are "
                f"{self._item_vectors.shape[1]}-d; pass the run's embedder"
            )
        for i, v in zip(todo, vecs):
            self._extra_items[i] = np.asarray(v, dtype=np.float32)

    def retrieve(self, user_id: int, item_id: int, k: int = 1, delta: float = 0.0,
                 exclude_item: int | None = None) -> list[Memory]:
        """The user's ``k`` train memories most similar to ``item_id`` (cosine >= ``delta``).

        Args:
            user_id: Whose memories to search; only this user's train interactions are candidates.
            item_id: The item to rate (the query).
            k: At most this many memories (the paper: 1).
            delta: Minimum cosine similarity.
            exclude_item: Never return this item's memory; pass the row's own item when building
                training rows.

        Returns:
            Memories, most similar first (possibly fewer than ``k``, or none).
        """
        excl = None if exclude_item is None else [exclude_item]
        return self.retrieve_batch([user_id], [item_id], k=k, delta=delta, exclude_items=excl)[0]

    def retrieve_batch(self, user_ids: Sequence[int] | np.ndarray, item_ids: Sequence[int] | np.ndarray,
                       k: int = 1, delta: float = 0.0,
                       exclude_items: Sequence[int | None] | np.ndarray | None = None) -> list[list[Memory]]:
        """:meth:`retrieve` for many (user, item) pairs at once (one faiss call per user).

        Returns:
            One list of memories per pair, in input order.
        """
        users = [self._check_user(u) for u in np.asarray(user_ids).tolist()]
        items = [int(i) for i in np.asarray(item_ids).tolist()]
        if len(users) != len(items):
            raise DataError(f"retrieve_batch got {len(users)} user ids but {len(items)} item ids")
        if exclude_items is not None and len(exclude_items) != len(users):
            raise DataError(f"retrieve_batch got {len(exclude_items)} exclude_items for {len(users)} pairs")
        if not users:
            return []
        self._embed_new_items([i for i in items if i not in self._item_pos])
        queries = np.stack([self.item_embedding(i) for i in items])
        out: list[list[Memory]] = [[] for _ in users]
        have = [n for n, u in enumerate(users) if u in self.index]
        if not have:
            return out
        if exclude_items is None:
            excl = None
        else:
            all_excl = list(exclude_items)
            excl = [all_excl[n] for n in have]
        hits = self.index.search_batch([users[n] for n in have], queries[have], k=k, delta=delta,
                                       exclude_items=excl)
        ratings = self._memories["rating"].to_numpy(dtype=np.float64)
        texts = self._memories["text"]
        for n, row_hits in zip(have, hits):
            out[n] = [Memory(item_id=h.item_id, rating=float(ratings[h.row]), text=str(texts.iat[h.row]),
                             similarity=h.similarity) for h in row_hits]
        return out

    def __repr__(self) -> str:
        return (f"MemoryStore({str(self.path)!r}, users={len(self._users)}, memories={len(self._memories)}, "
                f"personas={self.n_personas})")


def _check_fresh(root: Path, stage: str, recorded: Any, files: list[str]) -> None:
    """Raise if ``stage`` was computed from other versions of ``files`` than the folder holds now."""
    if not recorded:
        return  # no manifest record (a hand-made folder): nothing to compare
    from recsim_personas.artifacts import file_digest

    current = [file_digest(root / f) for f in files]
    if list(recorded) != current:
        raise DataError(
            f"run folder {root}: the {stage} stage's outputs were computed from another "
            f"{', '.join(files)} than the folder holds now (an earlier stage re-ran since); re-run it with "
            f"`recsim-personas memory --stages {stage} --out {root}`"
        )


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path} is unreadable ({exc}); re-run the embed stage") from None
