"""The collaborative cue: numbers a strong classic predictor knows, stated in the rating prompt.

A prompt with the cue tells the language model the user's mean rating and count, the item's mean
and count, and a damped user + item bias estimate (Koren's baseline predictor in one pass):

    mu  = mean of the pool,
    b_i = (S_i - n_i mu) / (n_i + damping),        item i's S_i, n_i over the pool,
    b_u = (S_u - n_u mu) / (n_u + damping),        user u's S_u, n_u over the user's train rows,
    estimate = clip(mu + b_u + b_i) to the rating scale.

The pool is the ratings behind the item averages (``item_stats``: every rating of the dataset but
the evaluated users' test rows, or the train split); the user's numbers come from the user's train
rows. **No leakage:** for a training row, :meth:`CueStatistics.cues` takes the row's own rating out
of every sum it is part of (global, user and item: leave-one-out), so the numbers a training prompt
shows are knowable without its label; a test row's rating is in none of the sums.

Comparing adapters trained with and without the cue shows what the language model adds beyond the
numbers (issue: "a collaborative cue, measured").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import DataError

__all__ = ["CUE_COLUMNS", "CueNumbers", "CueStatistics"]

#: Columns of :meth:`CueStatistics.cues`.
CUE_COLUMNS: tuple[str, ...] = ("user_mean", "user_count", "item_mean", "item_count", "estimate")


@dataclass(frozen=True)
class CueNumbers:
    """The cue of one (user, item) as a prompt states it (see the rating prompt's ``numbers`` section).

    Attributes:
        user_mean: The user's mean rating (``None``: the user has no other rating).
        user_count: How many ratings ``user_mean`` is over.
        item_mean: The item's mean rating (``None``: the item has no other rating).
        item_count: How many ratings ``item_mean`` is over.
        estimate: The damped user + item bias estimate, on the scale's range.
    """

    user_mean: float | None
    user_count: int
    item_mean: float | None
    item_count: int
    estimate: float


def _sums(frame: pd.DataFrame, key: str) -> tuple[dict[int, float], dict[int, int]]:
    grouped = frame.groupby(key)["rating"]
    sums = grouped.sum()
    counts = grouped.size()
    return ({int(k): float(v) for k, v in sums.items()}, {int(k): int(v) for k, v in counts.items()})


def _check(frame: pd.DataFrame, what: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{what} lacks column(s) {', '.join(missing)}")


@dataclass(frozen=True)
class CueStatistics:
    """Rating sums behind the cue; build with :meth:`fit`.

    Attributes:
        scale: The rating scale (the estimate is clipped to it).
        damping: Pseudo-count of the user and item biases (>= 0).
    """

    scale: RatingScale
    total: float
    count: int
    user_sum: dict[int, float]
    user_n: dict[int, int]
    item_sum: dict[int, float]
    item_n: dict[int, int]
    damping: float = 5.0

    @classmethod
    def fit(cls, pool: pd.DataFrame, train: pd.DataFrame, scale: RatingScale, *, damping: float = 5.0) -> CueStatistics:
        """Sums over ``pool`` (global and item numbers) and ``train`` (user numbers).

        Raises:
            DataError: a frame lacks ``user_id``/``item_id``/``rating``, or ``pool`` is empty.
        """
        _check(pool, "cue pool", ("item_id", "rating"))
        _check(train, "cue train rows", ("user_id", "rating"))
        if pool.empty:
            raise DataError("cue pool is empty: the item statistics need at least one rating")
        if not (isinstance(damping, (int, float)) and math.isfinite(damping) and damping >= 0):
            raise DataError(f"cue damping must be a finite number >= 0, got {damping!r}")
        user_sum, user_n = _sums(train, "user_id")
        item_sum, item_n = _sums(pool, "item_id")
        return cls(scale, float(pool["rating"].sum()), len(pool), user_sum, user_n, item_sum, item_n,
                   float(damping))

    def cues(self, user_ids: np.ndarray, item_ids: np.ndarray, own_ratings: np.ndarray | None = None) -> pd.DataFrame:
        """One row of :data:`CUE_COLUMNS` per (user, item); means are NaN where the count is 0.

        Args:
            user_ids, item_ids: The rows to describe.
            own_ratings: For training rows, each row's own rating, taken out of the global, user and
                item sums (the row must be in the train rows and in the pool). ``None`` for test rows.
        """
        users = np.asarray(user_ids, dtype=np.int64)
        items = np.asarray(item_ids, dtype=np.int64)
        if users.shape != items.shape:
            raise DataError(f"cue rows: {len(users)} user ids but {len(items)} item ids")
        s_u = np.array([self.user_sum.get(int(u), 0.0) for u in users])
        n_u = np.array([self.user_n.get(int(u), 0) for u in users], dtype=np.float64)
        s_i = np.array([self.item_sum.get(int(i), 0.0) for i in items])
        n_i = np.array([self.item_n.get(int(i), 0) for i in items], dtype=np.float64)
        total = np.full(len(users), self.total)
        count = np.full(len(users), float(self.count))
        if own_ratings is not None:
            own = np.asarray(own_ratings, dtype=np.float64)
            if own.shape != users.shape:
                raise DataError(f"cue rows: {len(users)} rows but {len(own)} own ratings")
            absent = (n_u < 1) | (n_i < 1) | (count < 2)
            if absent.any():
                k = int(np.flatnonzero(absent)[0])
                raise DataError(
                    f"cue row {k} (user {users[k]}, item {items[k]}) is not among the ratings the cue was "
                    "fitted on; leave-one-out needs training rows from the same train split and pool"
                )
            s_u, n_u, s_i, n_i = s_u - own, n_u - 1, s_i - own, n_i - 1
            total, count = total - own, count - 1
        mu = total / count
        with np.errstate(invalid="ignore", divide="ignore"):
            user_mean = np.where(n_u > 0, s_u / np.maximum(n_u, 1), np.nan)
            item_mean = np.where(n_i > 0, s_i / np.maximum(n_i, 1), np.nan)
        b_u = (s_u - n_u * mu) / (n_u + self.damping) if self.damping > 0 else np.nan_to_num(user_mean - mu)
        b_i = (s_i - n_i * mu) / (n_i + self.damping) if self.damping > 0 else np.nan_to_num(item_mean - mu)
        estimate = np.clip(mu + b_u + b_i, self.scale.min, self.scale.max)
        return pd.DataFrame({
            "user_mean": user_mean, "user_count": n_u.astype(np.int64), "item_mean": item_mean,
            "item_count": n_i.astype(np.int64), "estimate": estimate,
        })

    def numbers(self, user_ids: np.ndarray, item_ids: np.ndarray,
                own_ratings: np.ndarray | None = None) -> list[CueNumbers]:
        """:meth:`cues` as one :class:`CueNumbers` per row (what the prompt builders take)."""
        frame = self.cues(user_ids, item_ids, own_ratings)
        return [
            CueNumbers(None if math.isnan(um) else float(um), int(uc), None if math.isnan(im) else float(im),
                       int(ic), float(est))
            for um, uc, im, ic, est in zip(frame["user_mean"], frame["user_count"], frame["item_mean"],
                                           frame["item_count"], frame["estimate"], strict=True)
        ]
