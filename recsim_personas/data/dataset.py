"""The in-memory dataset type shared by every stage: interactions, items, users and the rating scale."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsim_personas.errors import DataError

__all__ = ["INTERACTION_COLUMNS", "ITEM_TEXT_COLUMNS", "RatingDataset", "RatingScale"]

#: Columns (and dtypes) of :attr:`RatingDataset.interactions`.
INTERACTION_COLUMNS: dict[str, str] = {
    "user_id": "int64",
    "item_id": "int64",
    "rating": "float64",
    "timestamp": "int64",
}
#: Optional free-text item columns filled by enrichment tables (missing values are ``None``).
ITEM_TEXT_COLUMNS: tuple[str, ...] = ("description", "director", "cast")


@dataclass(frozen=True)
class RatingScale:
    """An explicit rating scale: ``min`` to ``max`` in steps of ``step`` (1-5 by 1, 0.5-5 by 0.5)."""

    min: float
    max: float
    step: float

    def __post_init__(self) -> None:
        if not self.step > 0:
            raise DataError(f"rating scale step must be positive, got {self.step}")
        if not self.max > self.min:
            raise DataError(f"rating scale max ({self.max}) must exceed min ({self.min})")
        n = (self.max - self.min) / self.step
        if abs(n - round(n)) > 1e-9:
            raise DataError(
                f"rating scale {self.min}-{self.max} is not a whole number of steps of {self.step}"
            )

    @property
    def levels(self) -> np.ndarray:
        """All valid rating values, ascending."""
        n = round((self.max - self.min) / self.step) + 1
        return np.round(self.min + self.step * np.arange(n), 6)

    @property
    def n_levels(self) -> int:
        return len(self.levels)

    def contains(self, values: np.ndarray | pd.Series | float) -> np.ndarray:
        """Boolean mask: which values lie on the scale (in range and on a step)."""
        v = np.asarray(values, dtype=np.float64)
        k = (v - self.min) / self.step
        on_step = np.abs(k - np.round(k)) < 1e-6
        return on_step & (v >= self.min - 1e-9) & (v <= self.max + 1e-9)

    def clip(self, values: np.ndarray | float) -> np.ndarray:
        """Clip predictions into ``[min, max]`` (predictors may output off-step values)."""
        return np.clip(np.asarray(values, dtype=np.float64), self.min, self.max)

    def snap(self, values: np.ndarray | float) -> np.ndarray:
        """Round values to the nearest level on the scale."""
        v = self.clip(values)
        return np.round(np.round((v - self.min) / self.step) * self.step + self.min, 6)

    def format(self, value: float) -> str:
        """Text of one level as a prompt shows it: ``"4"`` on integer scales, ``"3.5"`` on half stars."""
        if float(self.step).is_integer() and float(self.min).is_integer():
            return str(round(value))
        return f"{value:.1f}"

    def to_dict(self) -> dict[str, float]:
        return {"min": self.min, "max": self.max, "step": self.step}


@dataclass
class RatingDataset:
    """Explicit-feedback data in one canonical shape.

    Attributes:
        name: Short identifier, e.g. ``"ml-1m"``.
        interactions: One row per (user, item) with columns ``user_id`` (int64), ``item_id``
            (int64), ``rating`` (float64, on ``scale``) and ``timestamp`` (int64, seconds).
            (user, item) pairs are unique.
        items: Indexed by ``item_id``; columns ``title`` (str), ``year`` (nullable Int64),
            ``genres`` (tuple of str), and ``description``, ``director``, ``cast`` (str or None).
        users: Indexed by ``user_id``; demographic columns where the dataset has them (may be empty).
        scale: The rating scale.
    """

    name: str
    interactions: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    scale: RatingScale
    source: dict[str, str] = field(default_factory=dict)

    @property
    def n_ratings(self) -> int:
        return len(self.interactions)

    @property
    def n_users(self) -> int:
        return int(self.interactions["user_id"].nunique())

    @property
    def n_items(self) -> int:
        """Number of distinct rated items."""
        return int(self.interactions["item_id"].nunique())

    def summary(self) -> dict[str, float | int | str]:
        return {
            "name": self.name,
            "ratings": self.n_ratings,
            "users": self.n_users,
            "items": self.n_items,
            "mean_rating": float(self.interactions["rating"].mean()),
            "scale": f"{self.scale.min}-{self.scale.max} step {self.scale.step}",
        }

    def fingerprint(self) -> str:
        """A content hash of the interactions (stable across processes), for caches and manifests."""
        cols = self.interactions[list(INTERACTION_COLUMNS)]
        h = hashlib.sha256(pd.util.hash_pandas_object(cols, index=False).values.tobytes())
        h.update(repr(self.scale.to_dict()).encode())
        return h.hexdigest()[:16]

    def item_title(self, item_id: int) -> str:
        try:
            return str(self.items.at[item_id, "title"])
        except KeyError:
            raise DataError(f"unknown item id {item_id} in dataset {self.name!r}") from None
