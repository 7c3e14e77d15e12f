"""The users and items of a PersonaRec population as arrays: :class:`UserPopulation`.

A :class:`UserPopulation` holds everything the environment needs about its users and items, as
arrays (so that ``step`` never touches a file and the environment pickles):

* the users (sorted ids), each with a persona id, a fixed-size profile embedding and an activity
  level (0 low, 1 mid, 2 high: the patience of the rule-based exit);
* the **action catalogue**: the ids of the items in the split's *train* part, sorted ascending.
  Action index ``i`` recommends item ``item_ids[i]``; :meth:`UserPopulation.item_index` maps back;
* each user's train items (the items the user has "seen", see the environment's seen-item rule);
* the train and test interactions, and the logged ratings (:meth:`UserPopulation.logged_ratings`:
  the dataset's ratings but the test split) the cheap users and, by default, the recommenders fit on.

Where populations come from (run folders, the embedded default) is
:mod:`recsim_personas.envs.population`; :func:`synthetic_population` builds a small one with known
structure for tests and examples.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas.agents.exits import activity_levels_from_counts
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import EnvError, closest

__all__ = ["UserPopulation", "item_titles", "synthetic_population"]


@dataclass(eq=False)
class UserPopulation:
    """Users, the item catalogue and what the environment shows of them (module docstring).

    Build one with :meth:`from_split`, :func:`population_from_run_dir` or
    :func:`default_population`; all arrays are aligned with :attr:`user_ids` or :attr:`item_ids`.

    Attributes:
        name: Short description for messages and renders (``"ml-latest-small/paper-split"``).
        scale: The rating scale.
        user_ids: Sorted user ids (``int64``).
        item_ids: Sorted ids of the catalogue: every item in ``train`` (``int64``).
        item_titles: Title per catalogue item (``"Toy Story (1995)"``).
        personas: Persona id per user (``int64``, ``0 .. n_personas - 1``).
        n_personas: Number of personas (at least 1).
        profile_embeddings: ``(n_users, dim)`` float32 profile embedding per user, in [-1, 1].
        activity_levels: Activity level per user (0 low, 1 mid, 2 high).
        train: Train interactions (``user_id, item_id, rating, timestamp``).
        test: Test interactions (same columns; may be empty).
        run_dir: The run folder it was read from (``None`` for in-memory populations).
        store: The :class:`~recsim_personas.memory.store.MemoryStore` (for the LM agent) or None.
        catalog: The :class:`~recsim_personas.data.item_catalog.ItemCatalog` or None.
        dataset: The :class:`~recsim_personas.data.dataset.RatingDataset` or None.
    """

    name: str
    scale: RatingScale
    user_ids: np.ndarray
    item_ids: np.ndarray
    item_titles: np.ndarray
    personas: np.ndarray
    n_personas: int
    profile_embeddings: np.ndarray
    activity_levels: np.ndarray
    train: pd.DataFrame
    test: pd.DataFrame
    run_dir: Path | None = None
    store: Any = None
    catalog: Any = None
    dataset: Any = None
    seen_indptr: np.ndarray = field(init=False, repr=False)
    seen_indices: np.ndarray = field(init=False, repr=False)
    # Derived tables (logged ratings, feature matrices) computed once and shared by every env on
    # this population; keys are the computing function's name and its arguments.
    _derived: dict[Any, Any] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.user_ids = np.asarray(self.user_ids, dtype=np.int64)
        self.item_ids = np.asarray(self.item_ids, dtype=np.int64)
        n_users, n_items = len(self.user_ids), len(self.item_ids)
        if n_users == 0:
            raise EnvError(f"population {self.name!r} has no users; check the split's user filter")
        if n_items == 0:
            raise EnvError(f"population {self.name!r} has no items in train")
        if np.any(np.diff(self.user_ids) <= 0) or np.any(np.diff(self.item_ids) <= 0):
            raise EnvError(f"population {self.name!r}: user_ids and item_ids must be sorted and unique")
        self.item_titles = np.asarray(self.item_titles, dtype=object)
        self.personas = np.asarray(self.personas, dtype=np.int64)
        self.activity_levels = np.asarray(self.activity_levels, dtype=np.int64)
        emb = np.asarray(self.profile_embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != n_users or emb.shape[1] < 1:
            raise EnvError(
                f"population {self.name!r}: profile_embeddings must have shape (n_users={n_users}, "
                f"dim >= 1), got {emb.shape}"
            )
        self.profile_embeddings = np.clip(emb, -1.0, 1.0)
        for attr, length in (("item_titles", n_items), ("personas", n_users), ("activity_levels", n_users)):
            if len(getattr(self, attr)) != length:
                raise EnvError(
                    f"population {self.name!r}: {attr} has {len(getattr(self, attr))} entries, expected {length}"
                )
        if self.personas.min() < 0 or self.personas.max() >= self.n_personas:
            raise EnvError(
                f"population {self.name!r}: persona ids must lie in 0..{self.n_personas - 1}, got "
                f"{self.personas.min()}..{self.personas.max()}"
            )
        # The items each user rated in train, as catalogue indices in CSR form.
        tr = self.train
        u = np.searchsorted(self.user_ids, tr["user_id"].to_numpy(np.int64))
        known = (u < n_users) & (self.user_ids[np.minimum(u, n_users - 1)] == tr["user_id"].to_numpy(np.int64))
        i = np.searchsorted(self.item_ids, tr["item_id"].to_numpy(np.int64))
        u, i = u[known], i[known]
        order = np.lexsort((i, u))
        counts = np.bincount(u, minlength=n_users)
        self.seen_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.seen_indices = i[order].astype(np.int64)

    # -- what is known before a session ------------------------------------------------------------
    def logged_ratings(self) -> pd.DataFrame:
        """Every rating known before a session: the dataset's ratings except this population's test.

        With the population's dataset known (the embedded default, run folders) that is every rating
        of the dataset, other users' too, except the population's test interactions, so the test
        split stays unseen; otherwise the train split. The cheap simulated users are fitted on it
        (:func:`~recsim_personas.envs.user_models.simulator_ratings`) and, with
        ``recommender_data="logged"``, so are the built-in recommenders and the item features: the
        recommender sees the same log the simulator was built from, never the test rows.
        """
        # Cached with the objects it was computed from: a population whose dataset or splits are
        # replaced recomputes it.
        sources = (self.dataset, self.train, self.test)
        cached = self._derived.get("logged_ratings")
        if cached is None or any(a is not b for a, b in zip(cached[0], sources, strict=True)):
            cached = (sources, _logged_ratings(self))
            self._derived["logged_ratings"] = cached
        return cached[1]

    def recommender_ratings(self, source: str) -> pd.DataFrame:
        """The ratings a recommender is fitted on: ``logged`` (:meth:`logged_ratings`) or ``train``.

        Raises:
            EnvError: ``source`` is neither.
        """
        if source == "logged":
            return self.logged_ratings()
        if source == "train":
            return self.train
        raise EnvError(f"recommender data must be 'logged' or 'train', got {source!r}")

    def derived(self, key: Any, build: Callable[[], Any]) -> Any:
        """``build()`` once per ``key`` on this population (feature tables and cheap user models
        shared by its envs); built again when :meth:`logged_ratings` changes."""
        full = (key, id(self.logged_ratings()))
        if full not in self._derived:
            self._derived[full] = build()
        return self._derived[full]

    # -- sizes --------------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def embedding_dim(self) -> int:
        return int(self.profile_embeddings.shape[1])

    # -- lookups ------------------------------------------------------------------------------------
    def user_position(self, user_id: Any) -> int:
        """Row of ``user_id`` in the user arrays.

        Raises:
            EnvError: The user is not in the population (with the closest ids as suggestions).
        """
        try:
            uid = int(user_id)
            if uid != user_id:
                raise ValueError
        except (TypeError, ValueError):
            raise EnvError(
                f"user_id must be an integer user id, got {user_id!r}; pick one of "
                "env.unwrapped.population.user_ids"
            ) from None
        pos = _position(self.user_ids, uid)
        if pos is not None:
            return pos
        hint = _closest_ids(uid, self.user_ids)
        raise EnvError(
            f"unknown user id {uid}: the population {self.name!r} has {self.n_users} users "
            f"(ids {self.user_ids[0]}..{self.user_ids[-1]}, see env.unwrapped.population.user_ids).{hint}"
        )

    def item_index(self, item_id: Any) -> int:
        """Action index of ``item_id`` (its position in the sorted catalogue).

        Raises:
            EnvError: The item is not in the catalogue (items of the train split).
        """
        iid = int(item_id)
        pos = _position(self.item_ids, iid)
        if pos is not None:
            return pos
        hint = _closest_ids(iid, self.item_ids)
        raise EnvError(
            f"item id {iid} is not in the catalogue of {self.name!r} (the {self.n_items} items of the "
            f"train split, env.unwrapped.item_ids).{hint}"
        )

    def seen_items(self, position: int) -> np.ndarray:
        """Catalogue indices of the items the user at row ``position`` rated in train."""
        return self.seen_indices[self.seen_indptr[position] : self.seen_indptr[position + 1]]

    # -- construction -------------------------------------------------------------------------------
    @classmethod
    def from_split(
        cls,
        train: pd.DataFrame,
        test: pd.DataFrame | None,
        scale: RatingScale,
        *,
        name: str = "in-memory",
        items: pd.DataFrame | None = None,
        personas: Mapping[int, int] | None = None,
        profile_embeddings: Mapping[int, np.ndarray] | np.ndarray | None = None,
        activity_levels: Mapping[int, int] | None = None,
        **extra: Any,
    ) -> UserPopulation:
        """A population over the users and items of ``train``.

        Args:
            train: Train interactions; its users are the population, its items the catalogue.
            test: Test interactions (``None`` = empty).
            scale: The rating scale.
            name: Description for messages.
            items: Item table indexed by ``item_id`` with ``title`` (and ``year``) for titles;
                ``None`` = titles ``"item <id>"``.
            personas: ``{user_id: persona}``; ``None`` = everyone in persona 0.
            profile_embeddings: ``{user_id: vector}`` or an ``(n_users, dim)`` array in sorted user
                order; ``None`` = a single zero feature (no profile).
            activity_levels: ``{user_id: 0|1|2}``; ``None`` = terciles of train rating counts.
            **extra: ``run_dir``, ``store``, ``catalog``, ``dataset``.
        """
        user_ids = np.unique(train["user_id"].to_numpy(np.int64))
        item_ids = np.unique(train["item_id"].to_numpy(np.int64))
        titles = item_titles(items, item_ids)
        if personas is None:
            persona_arr = np.zeros(len(user_ids), dtype=np.int64)
        else:
            persona_arr = np.array([int(personas[int(u)]) for u in user_ids], dtype=np.int64)
        n_personas = int(persona_arr.max()) + 1 if len(persona_arr) else 1
        if profile_embeddings is None:
            emb = np.zeros((len(user_ids), 1), dtype=np.float32)
        elif isinstance(profile_embeddings, np.ndarray):
            emb = profile_embeddings
        else:
            emb = np.stack([np.asarray(profile_embeddings[int(u)]) for u in user_ids])
        if activity_levels is None:
            counts = train.groupby("user_id").size().reindex(user_ids).to_numpy()
            act = activity_levels_from_counts(counts)
        else:
            act = np.array([int(activity_levels.get(int(u), 1)) for u in user_ids], dtype=np.int64)
        if test is None:
            test = train.iloc[:0]
        return cls(
            name=name,
            scale=scale,
            user_ids=user_ids,
            item_ids=item_ids,
            item_titles=titles,
            personas=persona_arr,
            n_personas=max(n_personas, 1),
            profile_embeddings=emb,
            activity_levels=act,
            train=train.reset_index(drop=True),
            test=test.reset_index(drop=True),
            **extra,
        )

    def __repr__(self) -> str:
        return (
            f"UserPopulation({self.name!r}, users={self.n_users}, items={self.n_items}, "
            f"personas={self.n_personas}, embedding_dim={self.embedding_dim})"
        )


def item_titles(items: pd.DataFrame | None, item_ids: np.ndarray) -> np.ndarray:
    """``"Title (year)"`` per item id (``"item <id>"`` where the table has no title)."""
    out = np.empty(len(item_ids), dtype=object)
    if items is None or "title" not in items.columns:
        out[:] = [f"item {int(i)}" for i in item_ids]
        return out
    table = items.reindex(item_ids)
    years = table["year"] if "year" in table.columns else pd.Series(pd.NA, index=table.index)
    for j, (iid, title, year) in enumerate(zip(item_ids, table["title"], years, strict=True)):
        if not isinstance(title, str) or not title:
            out[j] = f"item {int(iid)}"
        elif year is not None and not pd.isna(year):
            out[j] = f"{title} ({int(year)})"
        else:
            out[j] = title
    return out


def synthetic_population(
    n_users: int = 60,
    n_items: int = 300,
    n_personas: int = 3,
    ratings_per_user: tuple[int, int] = (20, 60),
    scale: RatingScale | None = None,
    seed: int = 0,
) -> UserPopulation:
    """A small population with known structure, for tests, examples and quick RL experiments.

    User ``u`` belongs to persona ``u % n_personas``; item ``i`` to genre ``i % n_personas``. A rating
    is ``3.4 + b_u + q_i + a + noise`` snapped to the scale, with user bias ``b_u ~ N(0, 0.4)``,
    item quality ``q_i ~ N(0, 0.6)``, affinity ``a = +0.8`` when the item's genre is the user's
    persona and ``-0.3`` otherwise, and ``noise ~ N(0, 0.5)``. Each user rates a random number of
    distinct items in ``ratings_per_user``; the oldest 60% are train, the rest test. Profile
    embeddings (dimension 8) are the persona's direction plus noise, L2-normalised.
    """
    scale = scale or RatingScale(1, 5, 1)
    rng = np.random.default_rng(seed)
    user_ids = np.arange(1, n_users + 1)
    quality = rng.normal(0.0, 0.6, n_items)
    user_bias = rng.normal(0.0, 0.4, n_users)
    rows = []
    for j, u in enumerate(user_ids):
        n = int(rng.integers(ratings_per_user[0], ratings_per_user[1] + 1))
        items = rng.choice(n_items, size=min(n, n_items), replace=False)
        affinity = np.where(items % n_personas == u % n_personas, 0.8, -0.3)
        mean = 3.4 + user_bias[j] + quality[items] + affinity
        ratings = scale.snap(mean + rng.normal(0.0, 0.5, len(items)))
        for t, (i, r) in enumerate(zip(items.tolist(), ratings.tolist(), strict=True)):
            rows.append((int(u), int(i), float(r), t))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    frame = frame.astype({"user_id": "int64", "item_id": "int64", "rating": "float64", "timestamp": "int64"})
    n_train = frame.groupby("user_id")["timestamp"].transform(lambda s: int(0.6 * len(s)))
    train = frame[frame["timestamp"] < n_train]
    test = frame[frame["timestamp"] >= n_train]
    directions = rng.normal(size=(n_personas, 8))
    emb = directions[user_ids % n_personas] + 0.3 * rng.normal(size=(n_users, 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    items_table = pd.DataFrame(
        {"title": [f"Item {i} (genre {i % n_personas})" for i in range(n_items)]},
        index=pd.Index(np.arange(n_items), name="item_id"),
    )
    return UserPopulation.from_split(
        train,
        test,
        scale,
        name=f"synthetic-{n_users}x{n_items}-seed{seed}",
        items=items_table,
        personas={int(u): int(u % n_personas) for u in user_ids},
        profile_embeddings=emb,
    )


def _closest_ids(value: int, ids: np.ndarray) -> str:
    """`` Did you mean a, b?`` with up to three ids that read like ``value`` (or ``""``)."""
    close = closest(str(value), [str(i) for i in ids.tolist()], n=3)
    return f" Did you mean {', '.join(close)}?" if close else ""


def _position(ids: np.ndarray, value: int) -> int | None:
    """Index of ``value`` in the sorted ``ids``, or None when it is not there."""
    pos = int(np.searchsorted(ids, value))
    return pos if pos < len(ids) and ids[pos] == value else None


def _logged_ratings(population: UserPopulation) -> pd.DataFrame:
    data = getattr(population.dataset, "interactions", None)
    if data is None or len(data) == 0:
        return population.train
    cols = ["user_id", "item_id", "rating"]
    if len(population.test) == 0:
        return data[cols]
    test = pd.MultiIndex.from_frame(population.test[["user_id", "item_id"]].astype("int64"))
    keys = pd.MultiIndex.from_frame(data[["user_id", "item_id"]].astype("int64"))
    return data.loc[~keys.isin(test), cols].reset_index(drop=True)
