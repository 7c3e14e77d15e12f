"""The simulated user population of ``PersonaRec-v0``: who can start a session, and what they know.

A :class:`UserPopulation` holds everything the environment needs about its users and items, as
arrays (so that ``step`` never touches a file and the environment pickles):

* the users (sorted ids), each with a persona id, a fixed-size profile embedding and an activity
  level (0 low, 1 mid, 2 high: the patience of the rule-based exit);
* the **action catalogue**: the ids of the items in the split's *train* part, sorted ascending.
  Action index ``i`` recommends item ``item_ids[i]``; :meth:`UserPopulation.item_index` maps back;
* each user's train items (the items the user has "seen", see the environment's seen-item rule);
* the train and test interactions (policies fit on train; ``simulate`` scores them on test).

Where a population comes from (:func:`load_population`):

``run_dir`` set
    A run folder of the memory stage (see ``docs/design.md``): the split in ``split/``, the profiles
    (``profiles.parquet``: ``activity_level``), the persona of each user (``personas.parquet``) and
    the L2-normalised profile embeddings (``embeddings/profiles.npy``), read through
    :class:`~recsim_personas.memory.store.MemoryStore`. The language-model agent also needs one
    trained adapter per persona under ``adapters/persona_<k>__<memory_mode>``; a folder without them
    is an :class:`~recsim_personas.errors.EnvError` that names the missing adapters and the command
    that trains them.

``run_dir`` None: the embedded default
    ml-latest-small (shipped inside the package), the paper's split (users with 100-200 ratings,
    temporal 60:40, seed 0; all 115 qualifying users, as fewer than the paper's 200 qualify), and
    profiles from the memory stage's ``template`` backend (deterministic, no language model), K = 4
    personas and all-MiniLM-L6-v2 embeddings, computed on first use and cached under
    ``recsim_personas.paths.cache_dir("envs", ...)``. Later ``gym.make`` calls read the cache. The
    default user agent on this population is the cheap
    :class:`~recsim_personas.agents.bias_agent.BiasUserAgent` (no adapters are trained yet); point
    the environment at a trained run folder with ``gym.make("PersonaRec-v0", run_dir=...)`` to get
    the persona-LoRA language-model users.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from recsim_personas.adapter_names import persona_adapter_name
from recsim_personas.agents.exits import activity_levels_from_counts
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import EnvError

if TYPE_CHECKING:
    from recsim_personas.envs.config import PersonaRecConfig

__all__ = [
    "UserPopulation",
    "adapter_name",
    "build_agent",
    "build_lm_agent",
    "default_population",
    "default_run_dir",
    "default_split_config",
    "item_titles",
    "load_population",
    "missing_adapters",
    "population_from_run_dir",
    "simulator_ratings",
    "synthetic_population",
]

logger = logging.getLogger(__name__)

#: Bump when the default population's construction changes (its cache folder name carries it).
_DEFAULT_VERSION = "2"  # 2: leave-one-out memories, whole-dataset item averages (issue 12)


def adapter_name(persona: int, memory_mode: str) -> str:
    """Folder name of persona ``persona``'s adapter for ``memory_mode`` (``persona_2__ms``)."""
    return persona_adapter_name(persona, memory_mode)


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
        pos = int(np.searchsorted(self.user_ids, uid))
        if pos < self.n_users and self.user_ids[pos] == uid:
            return pos
        close = difflib.get_close_matches(str(uid), [str(u) for u in self.user_ids], n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
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
        pos = int(np.searchsorted(self.item_ids, iid))
        if pos < self.n_items and self.item_ids[pos] == iid:
            return pos
        close = difflib.get_close_matches(str(iid), [str(i) for i in self.item_ids], n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
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


# -- run folders ------------------------------------------------------------------------------------
#: Files the environment reads from a run folder (all written by `recsim-personas memory`).
_RUN_FILES = ("split/config.json", "profiles.parquet", "personas.parquet", "embeddings/profiles.npy")


def missing_adapters(run_dir: str | Path, n_personas: int, memory_mode: str) -> list[str]:
    """Names of persona adapters the LM agent needs that ``run_dir/adapters/`` lacks."""
    root = Path(run_dir) / "adapters"
    return [
        adapter_name(k, memory_mode)
        for k in range(n_personas)
        if not (root / adapter_name(k, memory_mode) / "adapter_config.json").is_file()
    ]


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise EnvError(
            f"run_dir {str(run_dir)!r} does not exist; make one with `recsim-personas memory --out "
            f"{run_dir}` (then `recsim-personas train` for the LM agent), or leave run_dir unset for "
            "the embedded default"
        )
    missing = [name for name in _RUN_FILES if not (run_dir / name).is_file()]
    if missing:
        raise EnvError(
            f"run folder {run_dir} is incomplete: missing {', '.join(missing)}; run "
            f"`recsim-personas memory --out {run_dir}` first"
        )


def _dataset_for_run(dataset_name: str, data_dir: str | None) -> Any:
    """The dataset a run folder was built from (item titles, the LM agent's item text).

    ml-latest-small is embedded; other datasets come from ``data_dir`` or the download cache
    (``load_dataset`` names both fixes when neither has them).
    """
    from recsim_personas.data.registry import load_dataset

    return load_dataset(dataset_name, data_dir)


def population_from_run_dir(
    run_dir: str | Path,
    *,
    require_adapters: str | None = None,
    data_dir: str | None = None,
    dataset: Any = None,
) -> UserPopulation:
    """The population of a memory-stage run folder.

    Args:
        run_dir: The run folder (see the module docstring for the files it needs).
        require_adapters: A memory mode (``"ms"`` or ``"msml"``) whose persona adapters must exist
            (the LM agent needs them); ``None`` = no check.
        data_dir: Folder of the dataset files when the run was not built on the embedded dataset.
        dataset: The already loaded dataset (skips loading it again).

    Raises:
        EnvError: The folder is missing, incomplete, or lacks a persona's adapter.
    """
    from recsim_personas.data.splits import Split
    from recsim_personas.integrity import check_structure, verify_run_folder
    from recsim_personas.memory.store import MemoryStore

    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    # Damaged or stale files are refused with one line naming the file and the repairing command.
    verify_run_folder(run_dir, check=("memory",))
    check_structure(run_dir, ("personas.parquet",))
    if require_adapters is not None:
        # Checked before anything heavy loads: personas.parquet alone says which adapters are needed.
        n_personas = int(pd.read_parquet(run_dir / "personas.parquet")["persona"].max()) + 1
        missing = missing_adapters(run_dir, n_personas, require_adapters)
        if missing:
            raise EnvError(
                f"run folder {run_dir} is missing persona adapter(s) {', '.join(missing)} under "
                f"{run_dir / 'adapters'} (the LM agent needs one per persona for memory mode "
                f"{require_adapters!r}); train them with `recsim-personas train {run_dir} "
                f"--memory {require_adapters} --adapters persona`, or use the cheap agent: "
                "gym.make('PersonaRec-v0', run_dir=..., agent='bias')"
            )
        verify_run_folder(run_dir, adapters=[adapter_name(k, require_adapters) for k in range(n_personas)],
                          check=("memory",))
    check_structure(run_dir, (*_RUN_FILES, "memories.parquet", "split/train.parquet", "split/test.parquet"))
    split = Split.load(run_dir / "split")
    store = MemoryStore.from_run_dir(run_dir)
    users = np.unique(split.train["user_id"].to_numpy(np.int64))
    personas = {int(u): int(store.persona(int(u))) for u in users}
    if dataset is None:
        dataset = _dataset_for_run(split.dataset_name or "ml-latest-small", data_dir)
    from recsim_personas.memory.pipeline import run_item_catalog

    activity = {int(u): int(store.profile_row(int(u))["activity_level"]) for u in users}
    embeddings = {int(u): np.asarray(store.profile_embedding(int(u))) for u in users}
    return UserPopulation.from_split(
        split.train,
        split.test,
        split.scale or dataset.scale,
        name=f"{run_dir.name}",
        items=dataset.items,
        personas=personas,
        profile_embeddings=embeddings,
        activity_levels=activity,
        run_dir=run_dir,
        store=store,
        catalog=run_item_catalog(run_dir, dataset, split),
        dataset=dataset,
    )


def default_run_dir(dataset: str = "ml-latest-small", data_dir: str | None = None) -> Path:
    """The cached run folder of the default population (built on first use)."""
    from recsim_personas.artifacts import stable_hash
    from recsim_personas.paths import cache_dir

    tag = dataset if data_dir is None else f"{dataset}-{stable_hash(str(Path(data_dir).resolve()))[:8]}"
    return cache_dir("envs", f"default-v{_DEFAULT_VERSION}-{tag}")


def default_split_config(dataset: Any) -> Any:
    """The paper's split (100-200 ratings, temporal 60:40, seed 0), with at most 200 users.

    ml-latest-small has only 115 users with 100-200 ratings, so its default population is all of
    them (the paper samples 200 of the ML-1M users that qualify).
    """
    from recsim_personas.data.splits import PAPER_SPLIT, SplitConfig, eligible_users

    n_eligible = len(eligible_users(dataset.interactions, PAPER_SPLIT))
    if n_eligible == 0:
        raise EnvError(
            f"dataset {dataset.name!r} has no user with 100-200 ratings for the default population; "
            "build a run folder with your own split (`recsim-personas memory --out DIR`) and pass run_dir="
        )
    if PAPER_SPLIT.n_users is not None and n_eligible < PAPER_SPLIT.n_users:
        return SplitConfig.from_dict({**PAPER_SPLIT.to_dict(), "n_users": None})
    return PAPER_SPLIT


def default_population(dataset: str = "ml-latest-small", data_dir: str | None = None) -> UserPopulation:
    """The embedded default population: ``dataset``, the paper split, template profiles (cached).

    The first call runs the memory pipeline (:func:`~recsim_personas.memory.pipeline.build_memories`
    with the paper's settings: the deterministic ``template`` distillation backend, all-MiniLM-L6-v2
    embeddings shipped offline, K = 4 personas) on the paper split and writes a run folder under
    ``cache_dir("envs")``; later calls find every stage up to date and only read it.
    """
    from recsim_personas.data.registry import load_dataset
    from recsim_personas.memory.pipeline import MemoryPipelineConfig, build_memories

    run_dir = default_run_dir(dataset, data_dir)
    ds = load_dataset(dataset, data_dir)
    split = default_split_config(ds)
    if not (run_dir / "personas.parquet").is_file():
        logger.warning(
            "building the default PersonaRec-v0 population (%s, paper split, template profiles) in %s; "
            "this happens once", dataset, run_dir,
        )
    build_memories(ds, split, MemoryPipelineConfig.paper(), run_dir, progress=False)
    return population_from_run_dir(run_dir, data_dir=data_dir, dataset=ds)


def load_population(config: PersonaRecConfig) -> UserPopulation:
    """The population ``config`` names: its ``run_dir``, else the embedded default."""
    if config.run_dir is None:
        return default_population(config.dataset, config.data_dir)
    require = config.memory_mode if config.resolved_agent == "lm" else None
    return population_from_run_dir(config.run_dir, require_adapters=require, data_dir=config.data_dir)


# -- agents -----------------------------------------------------------------------------------------
def simulator_ratings(population: UserPopulation) -> pd.DataFrame:
    """The ratings a cheap user model may be fitted on: everything but the population's test part.

    With the population's dataset known (the embedded default, run folders), that is every rating
    of the dataset (other users' too) except the population's test interactions, so the test split
    stays unseen by the simulator as by the policies; otherwise the population's train split.
    """
    data = getattr(population.dataset, "interactions", None)
    if data is None or len(data) == 0:
        return population.train
    cols = ["user_id", "item_id", "rating"]
    if len(population.test) == 0:
        return data[cols]
    test = pd.MultiIndex.from_frame(population.test[["user_id", "item_id"]].astype("int64"))
    keys = pd.MultiIndex.from_frame(data[["user_id", "item_id"]].astype("int64"))
    return data.loc[~keys.isin(test), cols].reset_index(drop=True)


def build_agent(config: PersonaRecConfig, population: UserPopulation) -> Any:
    """The user agent ``config.agent`` names, on ``population``.

    ``bias``: :class:`~recsim_personas.agents.bias_agent.BiasUserAgent` fitted on the population's
    train split, with the population's activity levels and ``config.exit_rule``. ``mf``:
    :class:`~recsim_personas.agents.mf_agent.LatentFactorUserAgent` fitted on
    :func:`simulator_ratings`. ``lm``: :func:`build_lm_agent`.
    """
    kind = config.resolved_agent
    activity = dict(zip(population.user_ids.tolist(), population.activity_levels.tolist(), strict=True))
    if kind == "mf":
        from recsim_personas.agents.mf_agent import LatentFactorUserAgent

        return LatentFactorUserAgent.fit(
            simulator_ratings(population),
            population.scale,
            noise_std=config.noise_std,
            activity_levels=activity,
            exit_rule=config.exit_rule,
            table_users=population.user_ids,
            table_items=population.item_ids,
        )
    if kind == "bias":
        from recsim_personas.agents.bias_agent import BiasUserAgent

        return BiasUserAgent.fit(
            population.train,
            population.scale,
            noise_std=config.noise_std,
            activity_levels=activity,
            exit_rule=config.exit_rule,
        )
    return build_lm_agent(config, population)


def build_lm_agent(config: PersonaRecConfig, population: UserPopulation) -> Any:
    """The persona-LoRA language-model agent of a run folder.

    Loads the base model (``config.model``; None = the default SmolLM2-135M-Instruct) on
    ``config.device`` in ``config.dtype``, puts every persona's adapter
    ``adapters/persona_<k>__<memory_mode>`` on it by name, and wraps it in a
    :class:`~recsim_personas.agents.scoring.RatingScorer` (batched scoring, mixed adapters, prefix
    cache) and a :class:`~recsim_personas.agents.lm_agent.LMUserAgent` that gives each user their
    persona's adapter. With ``config.server`` no model is loaded here: a
    :class:`~recsim_personas.agents.served.ServedRatingScorer` asks that server (which must serve the
    base model and every persona adapter under the run's names) and only the tokenizer is loaded.
    """
    if population.run_dir is None or population.store is None or population.catalog is None:
        raise EnvError(
            "the LM agent needs a run folder with profiles, memories and trained adapters: "
            "gym.make('PersonaRec-v0', run_dir=...); this population has none, use agent='bias'"
        )
    from recsim_personas.agents.llm import load_adapters, load_causal_lm
    from recsim_personas.agents.lm_agent import LMUserAgent, adapter_naming
    from recsim_personas.agents.scoring import RatingScorer

    run_dir, mode = population.run_dir, config.memory_mode
    missing = missing_adapters(run_dir, population.n_personas, mode)
    if missing:  # population_from_run_dir checked already; this covers hand-built populations
        raise EnvError(
            f"run folder {run_dir} is missing persona adapter(s) {', '.join(missing)}; train them "
            f"with `recsim-personas train {run_dir} --memory {mode} --adapters persona`"
        )
    if config.server is not None:
        from recsim_personas.agents.llm import load_tokenizer, served_model_path
        from recsim_personas.agents.served import ServedRatingScorer

        scorer: Any = ServedRatingScorer(
            config.server, load_tokenizer(config.model), population.scale,
            base_model=served_model_path(config.model),
        )
    else:
        model, tokenizer = load_causal_lm(config.model, device=config.device, dtype=config.dtype)
        names = {
            adapter_name(k, mode): run_dir / "adapters" / adapter_name(k, mode)
            for k in range(population.n_personas)
        }
        model = load_adapters(model, names)
        scorer = RatingScorer(model, tokenizer, population.scale)
    return LMUserAgent(
        scorer,
        population.store,
        population.catalog,
        memory_mode=mode,
        adapter_for=adapter_naming(population.store, "persona", mode),
        exit_calibration=config.exit_calibration,
        exit_hazard=config.exit_hazard,
    )
