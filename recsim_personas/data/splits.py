"""Train/test splits of a :class:`RatingDataset`, as a pure function of (dataset, config, seed).

The paper's protocol (:data:`PAPER_SPLIT`): keep users with 100-200 interactions, sample 200 of them
with the seed, and give each user's oldest 60% of interactions to train and the newest 40% to test.

Steps of :func:`make_split`, in order:

1. **Filter users** by interaction count, ``min_interactions <= n <= max_interactions`` (inclusive;
   ``None`` = no bound). A user also needs enough rows for a non-empty train *and* test part (2 rows
   for ``temporal``/``random``, ``last_n + 1`` for ``last``); users with fewer are left out.
2. **Sample** ``n_users`` of the remaining users without replacement (``None`` = keep all). Too few
   eligible users is a :class:`DataError`, never a silent shrink.
3. **Split each user's rows.** Rows are first put in a canonical order, (timestamp, item_id) per
   user, so timestamp ties break by item id and the result does not depend on the input row order.

   - ``temporal``: the oldest ``floor(train_fraction * n)`` rows train, the rest test.
   - ``random``: the same counts, but which rows train is a seeded per-user shuffle.
   - ``last``: the newest ``last_n`` rows test, the rest train (leave-last-n).

   The train count is clipped to ``[1, n - 1]``, so every kept user has at least one train and one
   test row.

The user sample and the random split draw from independent streams spawned from ``seed``, so the
temporal and the random split of one config pick the same users.

Example:
    >>> split = make_split(dataset, PAPER_SPLIT)                          # doctest: +SKIP
    >>> split.save(run_dir / "split"); Split.load(run_dir / "split")     # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import pandas as pd

from recsim_personas.artifacts import atomic_write_json, atomic_write_parquet
from recsim_personas.config import Config
from recsim_personas.data.dataset import INTERACTION_COLUMNS, RatingDataset, RatingScale
from recsim_personas.errors import ConfigError, DataError, closest, did_you_mean

__all__ = [
    "PAPER_SPLIT",
    "SPLIT_METHODS",
    "Split",
    "SplitConfig",
    "SplitMethod",
    "eligible_users",
    "make_split",
]

SplitMethod = Literal["temporal", "random", "last"]
#: The split methods :class:`SplitConfig` accepts.
SPLIT_METHODS: tuple[str, ...] = get_args(SplitMethod)

_SPEC_HELP = "temporal:0.6, random:0.8 or last:N (e.g. last:5)"


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class SplitConfig(Config):
    """How to pick users and split their interactions.

    Attributes:
        method: ``"temporal"`` (oldest fraction to train), ``"random"`` (seeded per-user shuffle)
            or ``"last"`` (newest ``last_n`` rows to test).
        train_fraction: Share of each user's rows in train for ``temporal`` and ``random``
            (exclusive 0-1); the count is ``floor(train_fraction * n)`` clipped to ``[1, n - 1]``.
        last_n: Rows per user in test for ``last``.
        min_interactions: Keep users with at least this many interactions (``None`` = no bound).
        max_interactions: Keep users with at most this many interactions (``None`` = no bound).
        n_users: Sample this many of the kept users (``None`` = all of them).
        seed: Seed of the user sample and of the ``random`` split.
    """

    config_name: ClassVar[str] = "split config"

    method: SplitMethod = field(
        default="temporal", metadata={"help": "temporal, random or last (see the module docstring)"}
    )
    train_fraction: float = field(
        default=0.6, metadata={"help": "share of each user's rows in train (temporal, random)"}
    )
    last_n: int = field(default=1, metadata={"help": "rows per user in test (last)"})
    min_interactions: int | None = field(
        default=None, metadata={"help": "keep users with at least this many interactions"}
    )
    max_interactions: int | None = field(
        default=None, metadata={"help": "keep users with at most this many interactions"}
    )
    n_users: int | None = field(
        default=None, metadata={"help": "sample this many of the kept users (None: all)"}
    )
    seed: int = field(default=0, metadata={"help": "seed of the user sample and the random split"})

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.method not in SPLIT_METHODS:
            close = closest(self.method, SPLIT_METHODS)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(
                f"method {self.method!r} is not one of {', '.join(SPLIT_METHODS)}{hint}"
            )
        if isinstance(self.train_fraction, bool) or not isinstance(
            self.train_fraction, (int, float, np.floating, np.integer)
        ):
            problems.append(f"train_fraction must be a number, got {self.train_fraction!r}")
        elif not 0.0 < float(self.train_fraction) < 1.0:
            problems.append(
                f"train_fraction must lie strictly between 0 and 1, got {self.train_fraction}"
            )
        if not _is_int(self.last_n) or self.last_n < 1:
            problems.append(f"last_n must be an integer >= 1, got {self.last_n!r}")
        for name in ("min_interactions", "max_interactions", "n_users"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 1):
                problems.append(f"{name} must be an integer >= 1 or None, got {value!r}")
        if (
            _is_int(self.min_interactions)
            and _is_int(self.max_interactions)
            and self.min_interactions > self.max_interactions
        ):
            problems.append(
                f"min_interactions ({self.min_interactions}) exceeds max_interactions "
                f"({self.max_interactions})"
            )
        if not _is_int(self.seed) or self.seed < 0:
            problems.append(f"seed must be an integer >= 0, got {self.seed!r}")
        if problems:
            raise ConfigError("invalid SplitConfig: " + "; ".join(problems))
        # One JSON-able type whatever number type came in (numpy scalars included).
        object.__setattr__(self, "train_fraction", float(self.train_fraction))

    @property
    def spec(self) -> str:
        """The split in ``--split`` syntax: ``"temporal:0.6"``, ``"random:0.8"``, ``"last:5"``."""
        if self.method == "last":
            return f"last:{self.last_n}"
        return f"{self.method}:{float(self.train_fraction):g}"

    @classmethod
    def from_spec(cls, spec: str, **kwargs: Any) -> SplitConfig:
        """Build a config from ``--split`` syntax plus any other fields.

        Args:
            spec: ``"temporal:0.6"``, ``"random:0.8"`` or ``"last:N"``; a bare method name takes
                the default fraction (0.6) or ``last_n`` (1).
            **kwargs: Other :class:`SplitConfig` fields (``n_users``, ``seed``, ...).

        Raises:
            ConfigError: The spec does not parse or a field is invalid.
        """
        method, _, arg = str(spec).strip().partition(":")
        method = method.strip().lower()
        if method not in SPLIT_METHODS:
            raise ConfigError(
                f"split {spec!r}: unknown method {method!r}; use {_SPEC_HELP}."
                f"{did_you_mean(method, SPLIT_METHODS)}"
            )
        arg = arg.strip()
        if arg:
            try:
                if method == "last":
                    kwargs["last_n"] = int(arg)
                else:
                    kwargs["train_fraction"] = float(arg)
            except ValueError:
                want = "an integer N" if method == "last" else "a fraction between 0 and 1"
                raise ConfigError(
                    f"split {spec!r}: {arg!r} is not {want}; use {_SPEC_HELP}"
                ) from None
        return cls(method=method, **kwargs)  # type: ignore[arg-type]

    def describe(self) -> str:
        """One line for tables and logs, e.g. ``temporal:0.6, users 100-200, 200 sampled, seed 0``."""
        if self.min_interactions is None and self.max_interactions is None:
            span = "any count"
        else:
            lo = self.min_interactions if self.min_interactions is not None else 1
            hi = self.max_interactions if self.max_interactions is not None else "inf"
            span = f"{lo}-{hi} interactions"
        users = "all users" if self.n_users is None else f"{self.n_users} sampled users"
        return f"{self.spec}, {users} with {span}, seed {self.seed}"


#: The paper's protocol: 200 users with 100-200 interactions, temporal 60:40 per user, seed 0.
PAPER_SPLIT = SplitConfig(
    method="temporal", train_fraction=0.6, min_interactions=100, max_interactions=200,
    n_users=200, seed=0,
)


@dataclass(frozen=True, eq=False)
class Split:
    """A train/test split: the rows of each part, the config and the dataset it came from.

    Attributes:
        train: Interaction rows (``user_id, item_id, rating, timestamp``) sorted by user, timestamp
            and item id.
        test: Same columns and order; every user in ``test`` is in ``train`` and vice versa.
        config: The :class:`SplitConfig` that made it.
        dataset_fingerprint: :meth:`RatingDataset.fingerprint` of the source dataset.
        dataset_name: Name of the source dataset.
        scale: The source dataset's rating scale (``None`` if unknown).
    """

    train: pd.DataFrame
    test: pd.DataFrame
    config: SplitConfig
    dataset_fingerprint: str
    dataset_name: str = ""
    scale: RatingScale | None = None

    FORMAT_VERSION = 1

    def __post_init__(self) -> None:
        for part in ("train", "test"):
            frame = getattr(self, part)
            missing = [c for c in INTERACTION_COLUMNS if c not in frame.columns]
            if missing:
                raise DataError(
                    f"split {part} is missing column(s) {', '.join(missing)}; expected "
                    f"{', '.join(INTERACTION_COLUMNS)}"
                )

    @property
    def users(self) -> np.ndarray:
        """Sorted ids of the users in the split (each has train and test rows)."""
        return np.unique(self.train["user_id"].to_numpy())

    def summary(self) -> dict[str, Any]:
        """Counts for reports: users, train/test rows, items and the split description."""
        return {
            "dataset": self.dataset_name,
            "dataset_fingerprint": self.dataset_fingerprint,
            "split": self.config.describe(),
            "users": len(self.users),
            "train_rows": len(self.train),
            "test_rows": len(self.test),
            "train_items": int(self.train["item_id"].nunique()),
            "test_items": int(self.test["item_id"].nunique()),
            "test_rows_unknown_item": int(
                (~self.test["item_id"].isin(self.train["item_id"])).sum()
            ),
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``train.parquet``, ``test.parquet`` and ``config.json`` into ``directory``.

        Each file is written atomically and ``config.json`` last, so a folder with a
        ``config.json`` always holds a complete split.

        Returns:
            The directory.
        """
        directory = Path(directory)
        atomic_write_parquet(directory / "train.parquet", self.train)
        atomic_write_parquet(directory / "test.parquet", self.test)
        atomic_write_json(
            directory / "config.json",
            {
                "format_version": self.FORMAT_VERSION,
                "config": self.config.to_dict(),
                "dataset_name": self.dataset_name,
                "dataset_fingerprint": self.dataset_fingerprint,
                "scale": self.scale.to_dict() if self.scale is not None else None,
                "n_users": len(self.users),
                "n_train": len(self.train),
                "n_test": len(self.test),
            },
        )
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> Split:
        """Read a split written by :meth:`save`.

        Raises:
            DataError: The folder has no ``config.json``, a parquet file is missing, or the row
                counts disagree with ``config.json`` (a damaged folder).
        """
        directory = Path(directory)
        cfg_path = directory / "config.json"
        try:
            meta = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise DataError(
                f"no split in {directory}: {cfg_path.name} is missing; create one with "
                "make_split(dataset, config).save(directory)"
            ) from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{cfg_path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
        parts = {}
        for part in ("train", "test"):
            path = directory / f"{part}.parquet"
            if not path.is_file():
                raise DataError(f"split folder {directory} has no {path.name}; re-create the split")
            frame = pd.read_parquet(path)
            expected = meta.get(f"n_{part}")
            if expected is not None and len(frame) != expected:
                raise DataError(
                    f"{path} has {len(frame)} rows but {cfg_path.name} says n_{part}={expected}; "
                    "the folder is damaged, re-create the split"
                )
            missing = [c for c in INTERACTION_COLUMNS if c not in frame.columns]
            if missing:
                raise DataError(
                    f"{path} lacks column(s) {', '.join(missing)}; re-create the split"
                )
            parts[part] = frame[list(INTERACTION_COLUMNS)].astype(INTERACTION_COLUMNS)
        scale = meta.get("scale")
        return cls(
            train=parts["train"],
            test=parts["test"],
            config=SplitConfig.from_dict(meta["config"]),
            dataset_fingerprint=str(meta.get("dataset_fingerprint", "")),
            dataset_name=str(meta.get("dataset_name", "")),
            scale=RatingScale(**scale) if scale else None,
        )


def _min_rows_needed(config: SplitConfig) -> int:
    return config.last_n + 1 if config.method == "last" else 2


def eligible_users(interactions: pd.DataFrame, config: SplitConfig) -> np.ndarray:
    """Sorted ids of the users that pass ``config``'s interaction-count filter (before sampling)."""
    counts = interactions.groupby("user_id", sort=True).size()
    lo = max(config.min_interactions or 1, _min_rows_needed(config))
    hi = config.max_interactions if config.max_interactions is not None else math.inf
    keep = (counts >= lo) & (counts <= hi)
    return counts.index.to_numpy(dtype=np.int64)[keep.to_numpy()]


def make_split(dataset: RatingDataset, config: SplitConfig) -> Split:
    """Split ``dataset`` as ``config`` says (see the module docstring for the exact rules).

    Args:
        dataset: The dataset; its interactions are not modified.
        config: Filter, sample and split settings, including the seed.

    Returns:
        The :class:`Split`; the same (dataset, config) always gives the same split.

    Raises:
        DataError: No user passes the filter, or fewer than ``config.n_users`` do.
    """
    inter = dataset.interactions
    missing = [c for c in INTERACTION_COLUMNS if c not in inter.columns]
    if missing:
        raise DataError(
            f"dataset {dataset.name!r} interactions lack column(s) {', '.join(missing)}"
        )
    inter = inter[list(INTERACTION_COLUMNS)]
    sample_seq, split_seq = np.random.SeedSequence(config.seed).spawn(2)

    users = eligible_users(inter, config)
    span = config.describe()
    if len(users) == 0:
        raise DataError(
            f"no user of dataset {dataset.name!r} qualifies for split {span}; widen "
            "min_interactions/max_interactions (--min-interactions/--max-interactions)"
        )
    if config.n_users is not None:
        if len(users) < config.n_users:
            raise DataError(
                f"dataset {dataset.name!r} has only {len(users)} users that qualify for split "
                f"{span}, fewer than n_users={config.n_users}; lower n_users (--users) or widen "
                "min_interactions/max_interactions"
            )
        rng = np.random.default_rng(sample_seq)
        users = np.sort(rng.choice(users, size=config.n_users, replace=False))

    rows = inter[inter["user_id"].isin(users)]
    u = rows["user_id"].to_numpy(np.int64)
    t = rows["timestamp"].to_numpy(np.int64)
    i = rows["item_id"].to_numpy(np.int64)
    # Canonical order (user, timestamp, item): ties on a timestamp break by item id.
    order = np.lexsort((i, t, u))
    if config.method == "random":
        keys = np.random.default_rng(split_seq).random(len(order))
        order = order[np.lexsort((keys, u[order]))]

    u_sorted = u[order]
    starts = np.flatnonzero(np.r_[True, u_sorted[1:] != u_sorted[:-1]])
    sizes = np.diff(np.r_[starts, len(u_sorted)])
    if config.method == "last":
        n_train = sizes - config.last_n
    else:
        # The epsilon keeps 0.6 * 5 = 3.0000000000000004 (and 2.9999999999999996) at 3.
        n_train = np.floor(float(config.train_fraction) * sizes + 1e-9).astype(np.int64)
    n_train = np.clip(n_train, 1, sizes - 1)
    position = np.arange(len(u_sorted)) - np.repeat(starts, sizes)
    in_train = position < np.repeat(n_train, sizes)

    ordered = rows.iloc[order]
    train = _canonical(ordered[in_train])
    test = _canonical(ordered[~in_train])
    return Split(
        train=train,
        test=test,
        config=config,
        dataset_fingerprint=dataset.fingerprint(),
        dataset_name=dataset.name,
        scale=dataset.scale,
    )


def _canonical(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by (user, timestamp, item) with a fresh index and the canonical dtypes."""
    out = frame.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    return out.reset_index(drop=True).astype(INTERACTION_COLUMNS)
