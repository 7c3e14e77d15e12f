"""Mean rating predictors: the global mean, each user's mean, each item's mean.

Fallbacks (counted in ``fallback_count``): the user mean of an unknown user and the item mean of
an unknown item are the global train mean. The global mean never falls back.

``damping`` shrinks a user's or item's mean towards the global mean as if it had ``damping`` extra
ratings equal to the global mean: ``(sum + damping * mu) / (n + damping)``; 0 gives the plain mean.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from recsim_personas.baselines.params import DampingParams
from recsim_personas.baselines.protocol import BasePredictor

__all__ = ["GlobalMean", "ItemMean", "UserMean"]


def _damped_means(idx: np.ndarray, r: np.ndarray, n: int, mu: float, damping: float) -> np.ndarray:
    sums = np.bincount(idx, weights=r, minlength=n)
    counts = np.bincount(idx, minlength=n)
    return (sums + damping * mu) / (counts + damping)


class GlobalMean(BasePredictor):
    """Predicts the mean train rating for every (user, item).

    It ranks nothing (every item scores the same), so ``ranks_items`` is False.
    """

    name = "global-mean"
    ranks_items = False

    def _fit(self, u: np.ndarray, i: np.ndarray, r: np.ndarray) -> None:
        self.global_mean_ = float(r.mean())

    def _predict(self, u: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.full(len(u), self.global_mean_), np.zeros(len(u), dtype=bool)


class _SideMean(BasePredictor):
    """The damped mean train rating of one side (users or items); the global mean when unknown.

    The means are kept in ``user_mean_`` or ``item_mean_`` (by :attr:`side`).
    """

    params_type = DampingParams
    params: DampingParams
    side: ClassVar[Literal["user", "item"]]

    def _fit(self, u: np.ndarray, i: np.ndarray, r: np.ndarray) -> None:
        self.global_mean_ = float(r.mean())
        idx, ids = (u, self.user_ids_) if self.side == "user" else (i, self.item_ids_)
        means = _damped_means(idx, r, len(ids), self.global_mean_, self.params.damping)
        setattr(self, f"{self.side}_mean_", means)

    def _predict(self, u: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        idx = u if self.side == "user" else i
        unknown = idx < 0
        means = getattr(self, f"{self.side}_mean_")
        return np.where(unknown, self.global_mean_, means[idx]), unknown


class UserMean(_SideMean):
    """Predicts the user's mean train rating (global mean for unknown users).

    Args:
        damping: Shrinkage towards the global mean (see the module docstring).
        scale: Rating scale to clip to.
    """

    name = "user-mean"
    ranks_items = False
    side = "user"


class ItemMean(_SideMean):
    """Predicts the item's mean train rating (global mean for unknown items).

    Ranking by it favours items with a single high rating unless ``damping`` is set.

    Args:
        damping: Shrinkage towards the global mean (see the module docstring).
        scale: Rating scale to clip to.
    """

    name = "item-mean"
    side = "item"
