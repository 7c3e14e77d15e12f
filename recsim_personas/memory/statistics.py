"""Per-user rating statistics over a train split: the facts the template backend turns into text.

Everything here is computed from the **train** interactions only (test ratings never leak into
memories). For one user, over all or the first ``n`` of their chronologically sorted train ratings:

* ``n_ratings`` (activity), the mean rating;
* ``mean_abs_deviation``: mean of ``|rating - item's average over the other ratings|`` (conformity:
  a small distance means the user rates like everyone else);
* ``genre_entropy``: Shannon entropy (bits) of the user's genre distribution, each rated item
  counting once per genre it has (diversity);
* per-genre and per-decade *leans*: ``sum(rating - user mean) / (count + shrinkage)``, the mean
  deviation shrunk toward 0 so that one lucky film does not make a favourite genre;
* liked and disliked examples: the user's highest ratings at least half a point above their mean,
  and lowest at least half a point below.

Trait levels (:class:`TraitCuts`) use population quantiles over all users of the train split, as
Agent4Rec did (``datasets/ml-1m/2_get_user_statistic.py``): activity cuts at the 60th and 90th
percentile of the rating count; conformity cuts at the 25th and 80th percentile of the mean
distance to the items' averages (below the 25th = high conformity); diversity cuts at the 33rd and
66th percentile of genre entropy. Agent4Rec measured conformity with the squared distance and
diversity with the number of genres covering 80% of views; the absolute distance and the entropy
are used here because they are the quantities the issue names and are less sensitive to one outlier.

**Leave-one-out item averages.** Wherever a user's own rating is compared with or shown next to an
item's average (conformity, the "more generous than most viewers" habit, the liked / disliked
examples, the M_l explanation of that rating), the average is taken over the item's *other* ratings
(:func:`leave_one_out`): a self-including average would state the rating itself for an item with one
rating and pull towards it for an item with few, a shortcut that vanishes at test time (a test
rating is never part of the averages). An item whose only rating is the user's own has no average.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import pandas as pd

from recsim_personas.config import Config
from recsim_personas.data.dataset import ITEM_TEXT_COLUMNS, RatingDataset
from recsim_personas.data.item_catalog import ItemInfo, title_with_year
from recsim_personas.errors import ConfigError, DataError

__all__ = [
    "DEFAULT_TRAIT_QUANTILES",
    "ITEM_STATS_SOURCES",
    "ExampleItem",
    "Lean",
    "TrainStatistics",
    "TraitCuts",
    "UserStatistics",
    "leave_one_out",
    "rating_pool",
]

#: Population quantiles of the trait cut points (see the module docstring).
DEFAULT_TRAIT_QUANTILES: dict[str, tuple[float, float]] = {
    "activity": (0.60, 0.90),
    "deviation": (0.25, 0.80),
    "entropy": (1 / 3, 2 / 3),
}
#: Where item averages and counts come from (:func:`rating_pool`).
ItemStatsSource = Literal["dataset", "train"]
ITEM_STATS_SOURCES: tuple[str, ...] = ("dataset", "train")
#: Genre labels that mean "no genre" in MovieLens files.
_NO_GENRE = {"(no genres listed)", "unknown", ""}
#: How many liked / disliked examples a user's statistics keep.
_N_EXAMPLES = 3


@dataclass(frozen=True)
class Lean:
    """How much a user likes a genre or decade relative to their own mean rating.

    Attributes:
        name: ``"Horror"`` or ``"1980s"``.
        count: Rated items in the group.
        deviation: Shrunk mean of ``rating - user mean`` (positive = likes it).
        raw: Unshrunk mean of ``rating - user mean``.
    """

    name: str
    count: int
    deviation: float
    raw: float


@dataclass(frozen=True)
class ExampleItem:
    """A rated item quoted as an example of what the user liked or disliked."""

    item_id: int
    title: str
    year: int | None
    rating: float
    avg_rating: float | None

    @property
    def label(self) -> str:
        return title_with_year(self.title, self.year)


#: What prompts and explanations say about an item: the data layer's one item-facts type (kept under
#: its old name here for compatibility).
ItemFacts = ItemInfo


@dataclass(frozen=True)
class UserStatistics:
    """Statistics of one user's first ``n_ratings`` train ratings (see the module docstring)."""

    user_id: int
    n_ratings: int
    mean_rating: float
    mean_abs_deviation: float
    mean_item_offset: float
    genre_entropy: float
    genre_leans: tuple[Lean, ...]
    decade_leans: tuple[Lean, ...]
    liked: tuple[ExampleItem, ...]
    disliked: tuple[ExampleItem, ...]

    def genre(self, name: str) -> Lean | None:
        """The lean for genre ``name`` (``None`` if the user rated no item of it)."""
        return next((g for g in self.genre_leans if g.name == name), None)

    def decade(self, name: str) -> Lean | None:
        return next((d for d in self.decade_leans if d.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TraitCuts(Config):
    """Cut points mapping statistics to trait levels 0 (low) / 1 (mid) / 2 (high).

    ``activity``: rating count ``< activity[0]`` is low, ``< activity[1]`` mid, else high.
    ``deviation``: mean distance to items' averages ``< deviation[0]`` is *high* conformity,
    ``< deviation[1]`` mid, else low. ``entropy``: genre entropy (bits) ``< entropy[0]`` is low
    diversity, ``< entropy[1]`` mid, else high.
    """

    activity: tuple[float, float]
    deviation: tuple[float, float]
    entropy: tuple[float, float]

    config_name = "trait cut"

    def __post_init__(self) -> None:
        for name in ("activity", "deviation", "entropy"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise ConfigError(f"trait cuts {name}=({lo}, {hi}): need finite values, low <= high")
            object.__setattr__(self, name, (float(lo), float(hi)))

    @staticmethod
    def _bin(value: float, cuts: tuple[float, float]) -> int:
        if value < cuts[0]:
            return 0
        if value < cuts[1]:
            return 1
        return 2

    def levels(self, stats: UserStatistics) -> tuple[int, int, int]:
        """``(activity, conformity, diversity)`` levels of a user."""
        activity = self._bin(stats.n_ratings, self.activity)
        conformity = 2 - self._bin(stats.mean_abs_deviation, self.deviation)
        diversity = self._bin(stats.genre_entropy, self.entropy)
        return activity, conformity, diversity



_T = TypeVar("_T")


def rating_pool(
    dataset: RatingDataset, train: pd.DataFrame, test: pd.DataFrame, source: str = "dataset"
) -> pd.DataFrame:
    """The ratings item averages, item counts and the classic baselines are computed from.

    ``"dataset"`` (default, the paper's "historical rating"): every rating the dataset holds except
    the evaluated users' test rows, so a simulator knows how everyone else rated a film.
    ``"train"``: the split's train rows only (the sampled users' oldest ratings; the old behaviour).
    Either way no test rating is in the pool. Columns ``user_id, item_id, rating, timestamp``.

    Raises:
        ConfigError: unknown ``source``.
    """
    if source not in ITEM_STATS_SOURCES:
        raise ConfigError(f"item_stats must be one of {', '.join(ITEM_STATS_SOURCES)}, got {source!r}")
    cols = ["user_id", "item_id", "rating", "timestamp"]
    if source == "train":
        return train[cols].reset_index(drop=True)
    every = dataset.interactions[cols]
    key = pd.MultiIndex.from_frame(every[["user_id", "item_id"]])
    held = pd.MultiIndex.from_frame(test[["user_id", "item_id"]])
    return every[~key.isin(held)].reset_index(drop=True)


def leave_one_out(facts: _T, rating: float) -> _T:
    """``facts`` (an ``ItemInfo``) with one rating taken out of its average and count.

    The rating must be one of those the average was computed over (a train rating of the item):
    the result is the average of the item's *other* ratings, ``None`` when there are none.

    Raises:
        DataError: the facts count no rating (nothing to take out).
    """
    n = int(facts.n_ratings)
    avg = facts.avg_rating
    if n < 1 or avg is None:
        raise DataError(
            f"item {getattr(facts, 'item_id', '?')}: leave_one_out needs an item whose average counts "
            f"the rating {rating} (it has {n} rating(s)); pass item facts from the same ratings"
        )
    if n == 1:
        return dataclasses.replace(facts, avg_rating=None, n_ratings=0)  # type: ignore[type-var]
    others = (float(avg) * n - float(rating)) / (n - 1)
    return dataclasses.replace(facts, avg_rating=others, n_ratings=n - 1)  # type: ignore[type-var]


def _optional_text(value: Any) -> str | None:
    text = "" if value is None or pd.isna(value) else str(value).strip()
    return text or None


class TrainStatistics:
    """Item and user arrays over one train split, for fast per-user statistics.

    Args:
        dataset: The dataset (item titles, years, genres, text columns, rating scale).
        train: Train interactions (``user_id, item_id, rating, timestamp``).
        shrinkage: Pseudo-count of the per-genre / per-decade leans.
        catalog: Optional ``ItemCatalog``; when given, item averages, descriptions and cast come
            from ``catalog.info(item_id)`` so memories quote the same numbers as rating prompts.

    Raises:
        DataError: ``train`` lacks a column, or names items the dataset does not have.
    """

    def __init__(
        self,
        dataset: RatingDataset,
        train: pd.DataFrame,
        *,
        shrinkage: float = 5.0,
        catalog: Any = None,
    ) -> None:
        missing = [c for c in ("user_id", "item_id", "rating", "timestamp") if c not in train]
        if missing:
            raise DataError(
                f"train interactions lack column(s) {missing}; expected user_id, item_id, rating, "
                "timestamp (a Split's .train frame)"
            )
        if shrinkage < 0:
            raise ConfigError(f"shrinkage must be >= 0, got {shrinkage}")
        self.dataset = dataset
        self.shrinkage = float(shrinkage)
        self.catalog = catalog
        frame = train[["user_id", "item_id", "rating", "timestamp"]]
        # Chronological per user; ties broken by item id so the order never depends on row order.
        order = np.lexsort(
            (frame["item_id"].to_numpy(), frame["timestamp"].to_numpy(), frame["user_id"].to_numpy())
        )
        self._users_sorted = frame["user_id"].to_numpy(dtype=np.int64)[order]
        self._items_sorted = frame["item_id"].to_numpy(dtype=np.int64)[order]
        self._ratings_sorted = frame["rating"].to_numpy(dtype=np.float64)[order]
        self._times_sorted = frame["timestamp"].to_numpy(dtype=np.int64)[order]
        self.users, starts, counts = np.unique(
            self._users_sorted, return_index=True, return_counts=True
        )
        self._slices = {
            int(u): (int(s), int(s + c)) for u, s, c in zip(self.users, starts, counts, strict=True)
        }

        item_ids = np.unique(self._items_sorted)
        unknown = np.setdiff1d(item_ids, dataset.items.index.to_numpy())
        if len(unknown):
            raise DataError(
                f"train names {len(unknown)} item id(s) missing from dataset {dataset.name!r} "
                f"items table, e.g. {unknown[:5].tolist()}; use the split made from this dataset"
            )
        self.item_ids = item_ids
        self._row_of = pd.Series(np.arange(len(item_ids)), index=item_ids)
        self._item_rows_sorted = self._row_of.loc[self._items_sorted].to_numpy()
        sums = np.bincount(self._item_rows_sorted, weights=self._ratings_sorted, minlength=len(item_ids))
        n = np.bincount(self._item_rows_sorted, minlength=len(item_ids))
        if catalog is not None:
            # The catalog's averages may count more ratings than this split (the whole dataset);
            # use its sums so every text quotes the numbers the rating prompts show.
            cstats = catalog.stats().reindex(item_ids)
            n = cstats["n_ratings"].fillna(0).to_numpy(dtype=np.int64)
            sums = np.nan_to_num(cstats["avg_rating"].to_numpy(dtype=np.float64)) * n
            if (n[self._item_rows_sorted] < 1).any():
                raise DataError(
                    "the catalog counts no rating for some train items; build it from ratings that "
                    "include the split's train rows (ItemCatalog(dataset, pool))"
                )
        self.item_avg = sums / np.maximum(n, 1)
        self.item_n = n
        # Per train row, the item's average over its *other* ratings (NaN: no other rating).
        others = n[self._item_rows_sorted] - 1
        with np.errstate(invalid="ignore", divide="ignore"):
            self._others_avg_sorted = np.where(
                others > 0, (sums[self._item_rows_sorted] - self._ratings_sorted) / np.maximum(others, 1),
                np.nan,
            )

        items = dataset.items.loc[item_ids]
        self._titles = [str(t) for t in items["title"]]
        years = items["year"] if "year" in items else pd.Series([None] * len(items))
        self._years: list[int | None] = [None if pd.isna(y) else int(y) for y in years]
        genres_col = items["genres"] if "genres" in items else pd.Series([()] * len(items))
        self._genres: list[tuple[str, ...]] = [
            tuple(g for g in (gs if isinstance(gs, (tuple, list, np.ndarray)) else ()) if g not in _NO_GENRE)
            for gs in genres_col
        ]
        self.genre_names: list[str] = sorted({g for gs in self._genres for g in gs})
        col = {g: j for j, g in enumerate(self.genre_names)}
        self._genre_matrix = np.zeros((len(item_ids), len(self.genre_names)), dtype=np.float64)
        for i, gs in enumerate(self._genres):
            for g in gs:
                self._genre_matrix[i, col[g]] = 1.0
        decades = sorted({y // 10 * 10 for y in self._years if y is not None})
        self.decade_names = [f"{d}s" for d in decades]
        dcol = {d: j for j, d in enumerate(decades)}
        self._item_decade = np.array(
            [dcol[y // 10 * 10] if y is not None else -1 for y in self._years], dtype=np.int64
        )
        self._facts: dict[int, ItemInfo] = {}
        self._cuts: TraitCuts | None = None

    # -- users -----------------------------------------------------------------------------------
    def has_user(self, user_id: int) -> bool:
        return int(user_id) in self._slices

    def n_train(self, user_id: int) -> int:
        start, stop = self._slice(user_id)
        return stop - start

    def _slice(self, user_id: int) -> tuple[int, int]:
        try:
            return self._slices[int(user_id)]
        except KeyError:
            raise DataError(
                f"user id {user_id} has no train interactions ({len(self.users)} users in the split)"
            ) from None

    def history(self, user_id: int) -> pd.DataFrame:
        """The user's train interactions in chronological order (``item_id, rating, timestamp``)."""
        start, stop = self._slice(user_id)
        return pd.DataFrame(
            {
                "item_id": self._items_sorted[start:stop],
                "rating": self._ratings_sorted[start:stop],
                "timestamp": self._times_sorted[start:stop],
            }
        )

    def user_statistics(self, user_id: int, upto: int | None = None) -> UserStatistics:
        """Statistics over the user's first ``upto`` train ratings (all when ``None``).

        Raises:
            DataError: the user has no train interactions, or ``upto`` is not in ``1..n``.
        """
        start, stop = self._slice(user_id)
        if upto is not None:
            if not 1 <= upto <= stop - start:
                raise DataError(f"user {user_id}: upto={upto} outside 1..{stop - start}")
            stop = start + upto
        ratings = self._ratings_sorted[start:stop]
        rows = self._item_rows_sorted[start:stop]
        mean = float(ratings.mean())
        dev = ratings - mean
        # Leave-one-out: the user's own rating is not part of the average it is compared with.
        offset_raw = ratings - self._others_avg_sorted[start:stop]
        known = np.isfinite(offset_raw)
        offset = np.where(known, offset_raw, 0.0)

        gm = self._genre_matrix[rows]
        g_counts = gm.sum(axis=0)
        total = g_counts.sum()
        if total > 0:
            p = g_counts[g_counts > 0] / total
            entropy = float(-(p * np.log2(p)).sum())
        else:
            entropy = 0.0
        g_sums = dev @ gm
        genre_leans = self._leans(self.genre_names, g_counts, g_sums)

        dec = self._item_decade[rows]
        has = dec >= 0
        d_counts = np.bincount(dec[has], minlength=len(self.decade_names)).astype(np.float64)
        d_sums = np.bincount(dec[has], weights=dev[has], minlength=len(self.decade_names))
        decade_leans = self._leans(self.decade_names, d_counts, d_sums)

        items = self._items_sorted[start:stop]
        liked_idx = np.flatnonzero(dev >= 0.5)
        liked_idx = liked_idx[np.lexsort((items[liked_idx], -offset[liked_idx], -ratings[liked_idx]))]
        disliked_idx = np.flatnonzero(dev <= -0.5)
        disliked_idx = disliked_idx[
            np.lexsort((items[disliked_idx], offset[disliked_idx], ratings[disliked_idx]))
        ]
        return UserStatistics(
            user_id=int(user_id),
            n_ratings=int(stop - start),
            mean_rating=mean,
            mean_abs_deviation=float(np.abs(offset_raw[known]).mean()) if known.any() else 0.0,
            mean_item_offset=float(offset_raw[known].mean()) if known.any() else 0.0,
            genre_entropy=entropy,
            genre_leans=genre_leans,
            decade_leans=decade_leans,
            liked=tuple(self._example(rows[i], ratings[i]) for i in liked_idx[:_N_EXAMPLES]),
            disliked=tuple(self._example(rows[i], ratings[i]) for i in disliked_idx[:_N_EXAMPLES]),
        )

    def _leans(self, names: list[str], counts: np.ndarray, sums: np.ndarray) -> tuple[Lean, ...]:
        out = [
            Lean(
                name=names[j],
                count=int(counts[j]),
                deviation=float(sums[j] / (counts[j] + self.shrinkage)),
                raw=float(sums[j] / counts[j]),
            )
            for j in np.flatnonzero(counts > 0)
        ]
        # Strongest like first; ties by count then name so the order is deterministic.
        out.sort(key=lambda lean: (-lean.deviation, -lean.count, lean.name))
        return tuple(out)

    def _example(self, row: int, rating: float) -> ExampleItem:
        facts = self.item_facts_without(int(self.item_ids[row]), float(rating))
        return ExampleItem(
            item_id=facts.item_id,
            title=facts.title,
            year=facts.year,
            rating=float(rating),
            avg_rating=facts.avg_rating,
        )

    def item_facts_without(self, item_id: int, rating: float) -> ItemInfo:
        """:meth:`item_facts` with ``rating`` (a train rating of the item) left out of the average.

        What an explanation of that rating may quote: the average of everyone else's ratings.
        """
        return leave_one_out(self.item_facts(item_id), rating)

    # -- items -----------------------------------------------------------------------------------
    def item_facts(self, item_id: int) -> ItemInfo:
        """Facts about a train item (catalog values when a catalog was given)."""
        item_id = int(item_id)
        facts = self._facts.get(item_id)
        if facts is not None:
            return facts
        try:
            row = int(self._row_of.at[item_id])
        except KeyError:
            raise DataError(f"item id {item_id} is not in the train split") from None
        avg: float | None = float(self.item_avg[row])
        n_ratings = int(self.item_n[row])
        texts: dict[str, str | None] = dict.fromkeys(ITEM_TEXT_COLUMNS)
        if self.catalog is not None:
            info = self.catalog.info(item_id)
            avg = None if info.avg_rating is None else float(info.avg_rating)
            n_ratings = int(getattr(info, "n_ratings", n_ratings))
            texts = {name: _optional_text(getattr(info, name, None)) for name in ITEM_TEXT_COLUMNS}
        else:
            items = self.dataset.items
            texts = {name: _optional_text(items.at[item_id, name]) if name in items.columns else None
                     for name in ITEM_TEXT_COLUMNS}
        facts = ItemInfo(
            item_id=item_id,
            title=self._titles[row],
            year=self._years[row],
            genres=self._genres[row],
            avg_rating=avg,
            n_ratings=n_ratings,
            description=texts["description"],
            director=texts["director"],
            cast=texts["cast"],
        )
        self._facts[item_id] = facts
        return facts

    # -- traits ----------------------------------------------------------------------------------
    def trait_cuts(self, quantiles: dict[str, tuple[float, float]] | None = None) -> TraitCuts:
        """Trait cut points from population quantiles over every user of the train split."""
        if quantiles is None and self._cuts is not None:
            return self._cuts
        q = {**DEFAULT_TRAIT_QUANTILES, **(quantiles or {})}
        counts = np.array([stop - start for start, stop in self._slices.values()], dtype=np.float64)
        users = self._users_sorted
        dist = np.abs(self._ratings_sorted - self._others_avg_sorted)
        u_index = np.searchsorted(self.users, users)
        known = np.isfinite(dist)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_dist = np.bincount(u_index[known], weights=dist[known], minlength=len(self.users)) / (
                np.bincount(u_index[known], minlength=len(self.users))
            )
        mean_dist = np.where(np.isfinite(mean_dist), mean_dist, 0.0)
        ug = np.zeros((len(self.users), len(self.genre_names)))
        np.add.at(ug, u_index, self._genre_matrix[self._item_rows_sorted])
        totals = ug.sum(axis=1, keepdims=True)
        with np.errstate(divide="ignore", invalid="ignore"):
            p = np.where(totals > 0, ug / np.maximum(totals, 1e-12), 0.0)
            entropy = -(np.where(p > 0, p * np.log2(np.where(p > 0, p, 1.0)), 0.0)).sum(axis=1)
        cuts = TraitCuts(
            activity=tuple(np.quantile(counts, q["activity"])),
            deviation=tuple(np.quantile(mean_dist, q["deviation"])),
            entropy=tuple(np.quantile(entropy, q["entropy"])),
        )
        if quantiles is None:
            self._cuts = cuts
        return cuts
