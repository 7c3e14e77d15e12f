"""Mean rating predictors: the global mean, each user's mean, each item's mean.

Fallbacks (counted in ``fallback_count``): the user mean of an unknown user and the item mean of
an unknown item are the global train mean. The global mean never falls back.

``damping`` shrinks a user's or item's mean towards the global mean as if it had ``damping`` extra
ratings equal to the global mean: ``(sum + damping * mu) / (n + damping)``; 0 gives the plain mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recsim_personas.baselines.protocol import BasePredictor
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError

__all__ = ["GlobalMean", "ItemMean", "UserMean"]


def _check_damping(damping: float) -> float:
    if isinstance(damping, bool) or not isinstance(damping, (int, float)) or damping < 0:
        raise ConfigError(f"damping must be a number >= 0, got {damping!r}")
    return float(damping)


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


class UserMean(BasePredictor):
    """Predicts the user's mean train rating (global mean for unknown users).

    Args:
        damping: Shrinkage towards the global mean (see the module docstring).
        scale: Rating scale to clip to.
    """

    name = "user-mean"
    ranks_items = False

    def __init__(self, damping: float = 0.0, scale: RatingScale | None = None) -> None:
        super().__init__(scale)
        self.damping = _check_damping(damping)

    def get_params(self) -> dict[str, Any]:
        return {"damping": self.damping}

    def _fit(self, u: np.ndarray, i: np.ndarray, r: np.ndarray) -> None:
        self.global_mean_ = float(r.mean())
        self.user_mean_ = _damped_means(u, r, len(self.user_ids_), self.global_mean_, self.damping)

    def _predict(self, u: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        unknown = u < 0
        return np.where(unknown, self.global_mean_, self.user_mean_[u]), unknown


class ItemMean(BasePredictor):
    """Predicts the item's mean train rating (global mean for unknown items).

    Ranking by it favours items with a single high rating unless ``damping`` is set.

    Args:
        damping: Shrinkage towards the global mean (see the module docstring).
        scale: Rating scale to clip to.
    """

    name = "item-mean"

    def __init__(self, damping: float = 0.0, scale: RatingScale | None = None) -> None:
        super().__init__(scale)
        self.damping = _check_damping(damping)

    def get_params(self) -> dict[str, Any]:
        return {"damping": self.damping}

    def _fit(self, u: np.ndarray, i: np.ndarray, r: np.ndarray) -> None:
        self.global_mean_ = float(r.mean())
        self.item_mean_ = _damped_means(i, r, len(self.item_ids_), self.global_mean_, self.damping)

    def _predict(self, u: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        unknown = i < 0
        return np.where(unknown, self.global_mean_, self.item_mean_[i]), unknown
