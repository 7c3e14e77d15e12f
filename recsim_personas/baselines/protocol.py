"""The recommender seams (:class:`Recommender`, :class:`RatingPredictor`) and their shared base.

Every baseline is fit on a train frame (``user_id, item_id, rating[, timestamp]``) and knows only
the users and items it saw there. :class:`BaseRecommender` does the id bookkeeping once for all of
them: ids to dense indices, the items each user has seen, ``recommend`` from ``score_items``, and
for rating predictors clipping to the scale and counting fallbacks.

Ranking rules shared by every model: ``recommend`` scores the candidates (default: every item in
train), drops the user's train items when ``exclude_seen``, and returns the ``k`` best item ids,
best first; equal scores break by ascending item id, so results are deterministic.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from recsim_personas.baselines.params import BaselineParams, NoParams
from recsim_personas.data.checks import first_true
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike
    from scipy.sparse import csr_matrix
    from typing_extensions import Self

__all__ = ["BasePredictor", "BaseRecommender", "RatingPredictor", "Recommender"]

_TRAIN_COLUMNS = ("user_id", "item_id", "rating")


@runtime_checkable
class Recommender(Protocol):
    """Anything that ranks items for a user after ``fit(train)``."""

    name: str

    def fit(self, train: pd.DataFrame) -> Self:
        """Learn from train interactions (``user_id, item_id, rating`` columns); returns ``self``."""
        ...

    def recommend(
        self, user_id: int, k: int, exclude_seen: bool = True, candidates: ArrayLike | None = None
    ) -> np.ndarray:
        """The ``k`` best item ids for ``user_id``, best first (fewer if fewer candidates)."""
        ...

    def score_items(self, user_id: int, item_ids: ArrayLike) -> np.ndarray:
        """One score per item in ``item_ids`` for ``user_id``; higher is better."""
        ...


@runtime_checkable
class RatingPredictor(Recommender, Protocol):
    """A :class:`Recommender` that also predicts explicit ratings on the dataset's scale."""

    fallback_count: int

    def predict(self, user_ids: ArrayLike, item_ids: ArrayLike) -> np.ndarray:
        """Predicted rating of ``user_ids[j]`` for ``item_ids[j]``, clipped to the scale."""
        ...


def _as_ids(values: ArrayLike, what: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        as_int = arr.astype(np.int64, copy=False) if np.issubdtype(arr.dtype, np.number) else None
        if as_int is None or not np.array_equal(as_int, arr):
            raise DataError(f"{what} must be integer ids, got dtype {arr.dtype}")
        arr = as_int
    return arr.astype(np.int64, copy=False).ravel()


class BaseRecommender(ABC):
    """Shared implementation of :class:`Recommender` over dense user and item indices.

    Subclasses implement :meth:`_fit` (on dense indices) and :meth:`_score_user`, and name their
    hyperparameters in :attr:`params_type`; the constructor takes those as keywords, validates them
    there and sets each as an attribute. After ``fit``: ``user_ids_`` and ``item_ids_`` hold the
    sorted known ids (index ``j`` is id ``ids_[j]``).

    Args:
        **params: Fields of :attr:`params_type`.

    Attributes:
        name: Registry name of the model.
        params_type: The model's hyperparameters (a :class:`BaselineParams` dataclass).
        params: This instance's hyperparameters.
        ranks_items: False for models whose scores do not depend on the item (global and user
            mean): their ranking metrics are meaningless and reports leave them out.
        fallback_count: How often the documented fallback was used since the last ``fit`` (for
            predictors: predicted ratings; for rankers: ``recommend`` calls for unknown users).
    """

    name: ClassVar[str] = "base"
    ranks_items: ClassVar[bool] = True
    params_type: ClassVar[type[BaselineParams]] = NoParams

    def __init__(self, **params: Any) -> None:
        self.params = self.params_type(**params)
        for key, value in self.get_params().items():
            setattr(self, key, value)
        self.fallback_count = 0
        self.user_ids_: np.ndarray | None = None
        self.item_ids_: np.ndarray | None = None
        self._seen: csr_matrix | None = None

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    def get_params(self) -> dict[str, Any]:
        """Constructor arguments of this instance (for results files)."""
        return {f.name: getattr(self.params, f.name) for f in dataclasses.fields(self.params)}

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, train: pd.DataFrame) -> Self:
        """Learn from ``train``; resets :attr:`fallback_count`.

        Raises:
            DataError: A column is missing, ``train`` is empty, a rating is NaN, or a (user, item)
                pair occurs twice.
        """
        from scipy.sparse import csr_matrix

        users, items, ratings = _validate_train(train, self.name)
        self.user_ids_ = np.unique(users)
        self.item_ids_ = np.unique(items)
        u = np.searchsorted(self.user_ids_, users)
        i = np.searchsorted(self.item_ids_, items)
        seen = csr_matrix(
            (np.ones(len(u), dtype=np.float32), (u, i)),
            shape=(len(self.user_ids_), len(self.item_ids_)),
        )
        if seen.nnz != len(u):
            key = u * len(self.item_ids_) + i
            _, first, counts = np.unique(key, return_index=True, return_counts=True)
            row = int(first[np.argmax(counts > 1)])
            raise DataError(
                f"{self.name}.fit: (user_id={users[row]}, item_id={items[row]}) occurs more than "
                "once in train; keep one rating per (user, item) pair"
            )
        seen.sort_indices()
        self._seen = seen
        self.fallback_count = 0
        self._fit(u, i, ratings)
        return self

    @abstractmethod
    def _fit(self, u: np.ndarray, i: np.ndarray, r: np.ndarray) -> None:
        """Fit on dense indices ``u`` (into ``user_ids_``), ``i`` (into ``item_ids_``), ratings ``r``."""

    def _check_fitted(self) -> None:
        if self.user_ids_ is None or self.item_ids_ is None:
            raise ModelError(f"{self.name} is not fitted; call fit(train) first")

    # -- id lookup -------------------------------------------------------------------------------
    @staticmethod
    def _lookup(ids: np.ndarray, known: np.ndarray) -> np.ndarray:
        """Dense index of each id in sorted ``known``; -1 for unknown ids."""
        if len(known) == 0:
            return np.full(len(ids), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
        return np.where(known[pos] == ids, pos, -1).astype(np.int64)

    def user_index(self, user_ids: ArrayLike) -> np.ndarray:
        """Dense index of each user id (-1 if the user was not in train)."""
        self._check_fitted()
        return self._lookup(_as_ids(user_ids, "user_ids"), self.user_ids_)

    def item_index(self, item_ids: ArrayLike) -> np.ndarray:
        """Dense index of each item id (-1 if the item was not in train)."""
        self._check_fitted()
        return self._lookup(_as_ids(item_ids, "item_ids"), self.item_ids_)

    def seen_items(self, user_id: int) -> np.ndarray:
        """Sorted ids of the items ``user_id`` rated in train (empty for unknown users)."""
        u = int(self.user_index([user_id])[0])
        if u < 0:
            return np.zeros(0, dtype=np.int64)
        seen = self._seen
        return self.item_ids_[seen.indices[seen.indptr[u] : seen.indptr[u + 1]]]

    # -- ranking ---------------------------------------------------------------------------------
    @abstractmethod
    def _score_user(self, u: int, i: np.ndarray) -> np.ndarray:
        """Scores of item indices ``i`` (-1 = unknown item) for user index ``u`` (-1 = unknown)."""

    def _score_candidates(
        self, user_id: int, u: int, item_ids: np.ndarray, i: np.ndarray
    ) -> np.ndarray:
        """Scores of items (ids and indices) for a user (id and index); override to use ids."""
        return self._score_user(u, i)

    def score_items(self, user_id: int, item_ids: ArrayLike) -> np.ndarray:
        """One score per item for ``user_id``; higher is better. Never NaN."""
        self._check_fitted()
        ids = _as_ids(item_ids, "item_ids")
        u = int(self.user_index([user_id])[0])
        scores = self._score_candidates(int(user_id), u, ids, self._lookup(ids, self.item_ids_))
        return scores.astype(np.float64, copy=False)

    def recommend(
        self, user_id: int, k: int, exclude_seen: bool = True, candidates: ArrayLike | None = None
    ) -> np.ndarray:
        """The ``k`` best item ids for ``user_id``, best first.

        Args:
            user_id: The user; an unknown user gets the model's documented fallback ranking.
            k: Number of items to return (fewer if fewer candidates remain).
            exclude_seen: Drop the items the user rated in train.
            candidates: Item ids to rank (duplicates ignored; unknown items allowed); ``None`` =
                every item seen in train.

        Raises:
            ConfigError: ``k`` is not a positive integer.
        """
        self._check_fitted()
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ConfigError(f"{self.name}.recommend: k must be a positive integer, got {k!r}")
        u = int(self.user_index([user_id])[0])
        if u < 0:
            self._on_unknown_user_recommend()
        if candidates is None:
            cand = self.item_ids_
            cidx = np.arange(len(cand), dtype=np.int64)
        else:
            cand = np.unique(_as_ids(candidates, "candidates"))
            cidx = self._lookup(cand, self.item_ids_)
        scores = self._score_candidates(int(user_id), u, cand, cidx).astype(np.float64, copy=False)
        if exclude_seen and u >= 0:
            seen = self._seen.indices[self._seen.indptr[u] : self._seen.indptr[u + 1]]
            keep = ~np.isin(cidx, seen)
            cand, scores = cand[keep], scores[keep]
        k = min(int(k), len(cand))
        if k == 0:
            return np.zeros(0, dtype=np.int64)
        if k < len(cand):
            # Keep everything tied with the k-th best score, then order exactly.
            kth = np.partition(scores, len(scores) - k)[len(scores) - k]
            top = np.flatnonzero(scores >= kth)
            cand, scores = cand[top], scores[top]
        order = np.lexsort((cand, -scores))[:k]
        return cand[order].astype(np.int64, copy=False)

    def _on_unknown_user_recommend(self) -> None:
        """Rankers count fallback rankings; predictors count predictions instead."""
        self.fallback_count += 1


class BasePredictor(BaseRecommender):
    """Shared implementation of :class:`RatingPredictor`.

    Subclasses implement :meth:`_predict`, returning raw estimates and a mask of the rows that used
    the fallback. ``predict`` clips to ``scale`` (or, without one, to the range of train ratings)
    and adds the fallback rows to :attr:`fallback_count`. ``score_items`` ranks by the unclipped
    estimate, so clipping never creates ties at the top of the scale.

    Args:
        scale: The rating scale to clip predictions to; ``None`` = the train ratings' min-max.
        **params: Fields of :attr:`params_type`.
    """

    def __init__(self, *, scale: RatingScale | None = None, **params: Any) -> None:
        super().__init__(**params)
        if scale is not None and not isinstance(scale, RatingScale):
            raise ConfigError(f"scale must be a RatingScale or None, got {type(scale).__name__}")
        self.scale = scale
        self._bounds: tuple[float, float] = (-np.inf, np.inf)

    def fit(self, train: pd.DataFrame) -> Self:
        super().fit(train)
        if self.scale is not None:
            self._bounds = (float(self.scale.min), float(self.scale.max))
        else:
            r = train["rating"].to_numpy(np.float64)
            self._bounds = (float(r.min()), float(r.max()))
        return self

    @abstractmethod
    def _predict(self, u: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw estimates for index pairs (-1 = unknown) and the boolean fallback mask."""

    def predict(self, user_ids: ArrayLike, item_ids: ArrayLike) -> np.ndarray:
        """Predicted ratings, clipped to the scale; fallback rows are counted.

        Raises:
            DataError: ``user_ids`` and ``item_ids`` differ in length.
            ModelError: The model is not fitted.
        """
        self._check_fitted()
        users = _as_ids(user_ids, "user_ids")
        items = _as_ids(item_ids, "item_ids")
        if len(users) != len(items):
            raise DataError(
                f"{self.name}.predict: {len(users)} user ids but {len(items)} item ids; pass one "
                "user and one item per prediction"
            )
        est, fallback = self._predict(
            self._lookup(users, self.user_ids_), self._lookup(items, self.item_ids_)
        )
        self.fallback_count += int(np.count_nonzero(fallback))
        return np.clip(est, *self._bounds)

    def _score_user(self, u: int, i: np.ndarray) -> np.ndarray:
        return self._predict(np.full(len(i), u, dtype=np.int64), i)[0]

    def _on_unknown_user_recommend(self) -> None:
        pass


def _validate_train(train: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not isinstance(train, pd.DataFrame):
        raise DataError(f"{name}.fit expects a pandas DataFrame, got {type(train).__name__}")
    missing = [c for c in _TRAIN_COLUMNS if c not in train.columns]
    if missing:
        raise DataError(
            f"{name}.fit: train lacks column(s) {', '.join(missing)}; it needs "
            f"{', '.join(_TRAIN_COLUMNS)} (got {', '.join(map(str, train.columns))})"
        )
    if len(train) == 0:
        raise DataError(f"{name}.fit: train is empty")
    users = _as_ids(train["user_id"].to_numpy(), "train user_id")
    items = _as_ids(train["item_id"].to_numpy(), "train item_id")
    ratings = train["rating"].to_numpy(np.float64)
    row = first_true(~np.isfinite(ratings))
    if row is not None:
        raise DataError(
            f"{name}.fit: train row {row} (user_id={users[row]}, item_id={items[row]}) has rating "
            f"{ratings[row]}; drop or fix it"
        )
    return users, items, ratings
