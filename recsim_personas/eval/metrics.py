"""Offline metrics: rating errors, unrelated-response rate, top-k ranking quality, coverage.

Conventions, stated in every report:

- **Error averaging.** :func:`rmse` and :func:`mae` average *per rating* by default (every test
  rating weighs the same, heavy users dominate). With ``average="user"`` they compute each user's
  error first and average those (every user weighs the same).
- **Missing predictions raise.** A NaN or infinite prediction is a :class:`DataError` naming the
  row, never silently dropped: averaging over fewer rows would flatter the model.
- **Ranking.** ``recommended`` is one user's list, best first, without duplicates; ``relevant`` is
  that user's set of relevant items. Precision divides by ``k`` (a list shorter than ``k`` is
  penalised); recall divides by the number of relevant items; NDCG uses binary gains with
  ``1 / log2(rank + 1)`` discounts, normalised by the ideal list of ``min(k, |relevant|)`` hits.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

import numpy as np

from recsim_personas.data.checks import first_true
from recsim_personas.errors import ConfigError, DataError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = [
    "Averaging",
    "coverage",
    "mae",
    "ndcg_at_k",
    "precision_at_k",
    "recall_at_k",
    "rmse",
    "urr",
]

Averaging = Literal["rating", "user"]


def _errors(
    predicted: ArrayLike,
    actual: ArrayLike,
    user_ids: ArrayLike | None,
    average: str,
    metric: str,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Signed errors ``predicted - actual`` after all checks, plus the user ids if needed."""
    if average not in ("rating", "user"):
        raise ConfigError(f"{metric}: average must be 'rating' or 'user', got {average!r}")
    pred = np.asarray(predicted, dtype=np.float64).ravel()
    true = np.asarray(actual, dtype=np.float64).ravel()
    if len(pred) != len(true):
        raise DataError(
            f"{metric}: {len(pred)} predictions for {len(true)} ratings; predict every test row"
        )
    if len(pred) == 0:
        raise DataError(f"{metric}: no ratings to score")
    users = None
    if user_ids is not None:
        users = np.asarray(user_ids).ravel()
        if len(users) != len(pred):
            raise DataError(f"{metric}: {len(users)} user ids for {len(pred)} predictions")
    elif average == "user":
        raise ConfigError(f"{metric}: average='user' needs user_ids")
    missing = ~np.isfinite(pred)
    row = first_true(missing)
    if row is not None:
        who = f" (user_id={users[row]})" if users is not None else ""
        raise DataError(
            f"{metric}: prediction missing at row {row}{who}: got {pred[row]}; "
            f"{int(missing.sum())} of {len(pred)} predictions are NaN or infinite. Every test rating "
            "needs a prediction; use a model with a fallback for unknown users and items"
        )
    row = first_true(~np.isfinite(true))
    if row is not None:
        raise DataError(f"{metric}: true rating at row {row} is {true[row]}; fix the test data")
    return pred - true, users


def _per_user(values: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Mean of ``values`` per distinct user."""
    _, inverse, counts = np.unique(users, return_inverse=True, return_counts=True)
    return np.bincount(inverse, weights=values) / counts


def rmse(
    predicted: ArrayLike, actual: ArrayLike, *, user_ids: ArrayLike | None = None,
    average: Averaging = "rating",
) -> float:
    """Root mean squared error.

    Args:
        predicted: Predictions, one per rating.
        actual: True ratings.
        user_ids: User of each rating; needed for ``average="user"``, and named in errors.
        average: ``"rating"``: over all ratings; ``"user"``: mean over users of each user's RMSE.

    Raises:
        DataError: A prediction is NaN/infinite (missing), lengths differ, or there are no rows.
        ConfigError: ``average="user"`` without ``user_ids``, or an unknown ``average``.
    """
    err, users = _errors(predicted, actual, user_ids, average, "rmse")
    if average == "user":
        return float(np.mean(np.sqrt(_per_user(err**2, users))))
    return float(np.sqrt(np.mean(err**2)))


def mae(
    predicted: ArrayLike, actual: ArrayLike, *, user_ids: ArrayLike | None = None,
    average: Averaging = "rating",
) -> float:
    """Mean absolute error; arguments and errors as for :func:`rmse`."""
    err, users = _errors(predicted, actual, user_ids, average, "mae")
    if average == "user":
        return float(np.mean(_per_user(np.abs(err), users)))
    return float(np.mean(np.abs(err)))


def urr(valid_mask: ArrayLike) -> float:
    """Unrelated response rate: the share of responses that held no valid rating.

    Args:
        valid_mask: One boolean per response, True where a valid rating was parsed.

    Raises:
        DataError: No responses, or the mask is not boolean.
    """
    valid = np.asarray(valid_mask).ravel()
    if len(valid) == 0:
        raise DataError("urr: no responses to score")
    if valid.dtype != np.bool_:
        raise DataError(f"urr: valid_mask must be boolean, got dtype {valid.dtype}")
    return float(1.0 - valid.mean())


def _check_k(k: int, metric: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ConfigError(f"{metric}: k must be a positive integer, got {k!r}")
    return int(k)


def _hits(recommended: ArrayLike, relevant: ArrayLike, k: int, metric: str) -> np.ndarray:
    rec = np.asarray(recommended).ravel()
    if len(np.unique(rec)) != len(rec):
        raise DataError(f"{metric}: the recommended list repeats an item; lists must be unique")
    rel = np.asarray(list(relevant) if isinstance(relevant, (set, frozenset)) else relevant).ravel()
    return np.isin(rec[: _check_k(k, metric)], rel)


def _n_relevant(relevant: ArrayLike, metric: str) -> int:
    n = len(set(relevant) if isinstance(relevant, (set, frozenset)) else np.unique(relevant))
    if n == 0:
        raise DataError(
            f"{metric}: the user has no relevant items, so the metric is undefined; "
            "skip such users (the offline evaluator does and counts them)"
        )
    return n


def precision_at_k(recommended: ArrayLike, relevant: ArrayLike, k: int) -> float:
    """Share of the first ``k`` recommendations that are relevant (always divided by ``k``)."""
    return float(_hits(recommended, relevant, k, "precision_at_k").sum() / k)


def recall_at_k(recommended: ArrayLike, relevant: ArrayLike, k: int) -> float:
    """Share of the relevant items found in the first ``k`` recommendations.

    Raises:
        DataError: ``relevant`` is empty.
    """
    n_rel = _n_relevant(relevant, "recall_at_k")
    return float(_hits(recommended, relevant, k, "recall_at_k").sum() / n_rel)


def ndcg_at_k(recommended: ArrayLike, relevant: ArrayLike, k: int) -> float:
    """Normalised discounted cumulative gain of the first ``k`` items, binary relevance.

    ``DCG = sum over hits at rank r (1-based) of 1 / log2(r + 1)``; the ideal DCG places
    ``min(k, |relevant|)`` hits at the top.

    Raises:
        DataError: ``relevant`` is empty.
    """
    n_rel = _n_relevant(relevant, "ndcg_at_k")
    hits = _hits(recommended, relevant, k, "ndcg_at_k")
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float(discounts[: len(hits)][hits].sum())
    idcg = float(discounts[: min(k, n_rel)].sum())
    return dcg / idcg


def coverage(recommendations: Iterable[ArrayLike], catalogue: int | ArrayLike) -> float:
    """Catalogue coverage: the share of the catalogue that appears in at least one list.

    Args:
        recommendations: One list of item ids per user.
        catalogue: The catalogue's item ids, or its size. With ids, recommended items outside the
            catalogue do not count.

    Raises:
        DataError: The catalogue is empty.
    """
    lists = [np.asarray(r).ravel() for r in recommendations]
    shown = np.unique(np.concatenate(lists)) if lists else np.zeros(0, dtype=np.int64)
    if isinstance(catalogue, (int, np.integer)) and not isinstance(catalogue, bool):
        size = int(catalogue)
        n_shown = len(shown)
    else:
        items = np.unique(np.asarray(catalogue).ravel())
        size = len(items)
        n_shown = int(np.isin(shown, items).sum())
    if size <= 0:
        raise DataError("coverage: the catalogue is empty")
    return float(n_shown / size)
