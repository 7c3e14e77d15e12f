"""Offline evaluation of fitted recommenders on a :class:`~recsim_personas.data.splits.Split`.

Rating predictors are scored on every test row: RMSE and MAE averaged per rating (``rmse``,
``mae``) and per user (``rmse_per_user``, ``mae_per_user``), plus ``fallback_count``, the test
predictions that used the model's documented fallback for a user or item missing from train.

Rankers (every model whose scores depend on the item) are scored per test user:

- **Relevant items** are the user's test items rated at or above the relevance threshold. The
  default is the lowest scale level at or above 75% of the scale's range: **4 on 1-5 stars and 4.0
  on the 0.5-5 half-star scale** (``min + 0.75 * (max - min)`` = 4.0 and 3.875, rounded up to a
  level).
- Each user gets ``recommend(user, k, exclude_seen=True)`` over every item in train; relevant test
  items that never occur in train cannot be recommended and still count in recall's denominator.
- ``precision@k``, ``recall@k``, ``ndcg@k`` average **per user** over users with at least one
  relevant test item (``ranking_users``; users without one are counted in
  ``users_without_relevant``). ``coverage@k`` is the share of train items shown in at least one
  test user's list.
- For rankers, ``fallback_count`` counts ranked lists that used the fallback (unknown users).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from recsim_personas.baselines.protocol import RatingPredictor, Recommender
from recsim_personas.config import Config
from recsim_personas.data.dataset import RatingScale
from recsim_personas.data.splits import Split
from recsim_personas.errors import ConfigError, DataError
from recsim_personas.eval.metrics import coverage, mae, rmse

__all__ = [
    "EvalConfig",
    "default_relevance_threshold",
    "evaluate_baselines",
    "evaluate_predictor",
    "evaluate_ranker",
    "ranking_metric_names",
]


def default_relevance_threshold(scale: RatingScale | None) -> float:
    """Lowest level of ``scale`` at or above ``min + 0.75 * (max - min)``; 4.0 without a scale.

    This is 4 on 1-5 stars and 4.0 on 0.5-5 half stars.
    """
    if scale is None:
        return 4.0
    target = scale.min + 0.75 * (scale.max - scale.min)
    levels = scale.levels
    return float(levels[np.argmax(levels >= target - 1e-9)])


def ranking_metric_names(k: int) -> tuple[str, ...]:
    """Result keys of the ranking metrics at ``k``: precision, recall, ndcg, coverage."""
    return (f"precision@{k}", f"recall@{k}", f"ndcg@{k}", f"coverage@{k}")


@dataclass(frozen=True)
class EvalConfig(Config):
    """Settings of an offline evaluation.

    Attributes:
        k: Length of the ranked lists.
        relevance_threshold: Test ratings at or above this are relevant; ``None`` = the scale's
            default (:func:`default_relevance_threshold`: 4 on 1-5 and on half stars).
    """

    config_name: ClassVar[str] = "EvalConfig"

    k: int = field(default=10, metadata={"help": "length of the ranked lists"})
    relevance_threshold: float | None = field(
        default=None, metadata={"help": "test ratings at or above this are relevant (None: 4 stars)"}
    )

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ConfigError(f"EvalConfig.k must be a positive integer, got {self.k!r}")
        t = self.relevance_threshold
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))):
            raise ConfigError(f"EvalConfig.relevance_threshold must be a number, got {t!r}")

    def threshold_for(self, scale: RatingScale | None) -> float:
        """The threshold to use on ``scale``."""
        if self.relevance_threshold is not None:
            return float(self.relevance_threshold)
        return default_relevance_threshold(scale)


def evaluate_predictor(model: RatingPredictor, split: Split) -> dict[str, float | int]:
    """Predict every test rating of ``split`` with a fitted ``model`` and score the errors.

    Returns:
        ``rmse``, ``mae`` (per rating), ``rmse_per_user``, ``mae_per_user``, ``fallback_count``
        (predictions that used the fallback) and ``n_predictions``.

    Raises:
        DataError: The model returned a missing (NaN) prediction or the wrong number of them.
    """
    test = split.test
    users = test["user_id"].to_numpy()
    before = model.fallback_count
    pred = np.asarray(model.predict(users, test["item_id"].to_numpy()), dtype=np.float64)
    true = test["rating"].to_numpy(np.float64)
    return {
        "rmse": rmse(pred, true, user_ids=users),
        "mae": mae(pred, true, user_ids=users),
        "rmse_per_user": rmse(pred, true, user_ids=users, average="user"),
        "mae_per_user": mae(pred, true, user_ids=users, average="user"),
        "fallback_count": int(model.fallback_count - before),
        "n_predictions": len(pred),
    }


def evaluate_ranker(
    model: Recommender,
    split: Split,
    *,
    k: int = 10,
    relevance_threshold: float | None = None,
    progress: bool = False,
) -> dict[str, float | int]:
    """Rank the train items for each test user with a fitted ``model`` and score the lists.

    Args:
        model: A fitted recommender.
        split: The split ``model`` was fitted on (``split.train``).
        k: List length.
        relevance_threshold: Relevance cut-off; ``None`` = :func:`default_relevance_threshold`.
        progress: Show a progress bar over users (on a terminal).

    Returns:
        ``precision@k``, ``recall@k``, ``ndcg@k`` (per-user means), ``coverage@k``,
        ``ranking_users``, ``users_without_relevant``, ``relevance_threshold`` and, for models
        with a ``fallback_count``, ``fallback_count`` (lists that used the fallback).

    Raises:
        DataError: No test user has a relevant item, or the model returned a duplicate item.
    """
    from recsim_personas.progress import progress_bar

    EvalConfig(k=k, relevance_threshold=relevance_threshold)  # validates k and the threshold
    threshold = (
        float(relevance_threshold)
        if relevance_threshold is not None
        else default_relevance_threshold(split.scale)
    )
    test = split.test
    relevant_rows = test[test["rating"] >= threshold - 1e-9]
    relevant = {
        int(u): g.to_numpy() for u, g in relevant_rows.groupby("user_id", sort=True)["item_id"]
    }
    users = np.unique(test["user_id"].to_numpy())
    ranked = [u for u in users if int(u) in relevant]
    if not ranked:
        raise DataError(
            f"no test user of split {split.config.describe()} has a test rating >= {threshold}; "
            "lower the relevance threshold (--relevance-threshold)"
        )
    before = getattr(model, "fallback_count", 0)
    lists: list[np.ndarray] = []
    hits = np.zeros((len(ranked), k), dtype=bool)
    n_rel = np.zeros(len(ranked))
    row = 0
    for user in progress_bar(users, desc=f"rank {getattr(model, 'name', 'model')}", leave=False,
                             enabled=progress):
        rec = np.asarray(model.recommend(int(user), k, exclude_seen=True), dtype=np.int64)
        if len(np.unique(rec)) != len(rec):
            raise DataError(
                f"{getattr(model, 'name', 'model')}.recommend returned a duplicate item for "
                f"user_id={user}; recommended lists must be unique"
            )
        lists.append(rec)
        rel = relevant.get(int(user))
        if rel is None:
            continue
        hits[row, : len(rec)] = np.isin(rec[:k], rel)
        n_rel[row] = len(rel)
        row += 1

    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.cumsum(discounts)[np.minimum(n_rel, k).astype(int) - 1]
    n_hits = hits.sum(axis=1)
    p_key, r_key, n_key, c_key = ranking_metric_names(k)
    out: dict[str, float | int] = {
        p_key: float(np.mean(n_hits / k)),
        r_key: float(np.mean(n_hits / n_rel)),
        n_key: float(np.mean((hits * discounts).sum(axis=1) / ideal)),
        c_key: coverage(lists, split.train["item_id"].to_numpy()),
        "ranking_users": len(ranked),
        "users_without_relevant": int(len(users) - len(ranked)),
        "relevance_threshold": threshold,
    }
    if hasattr(model, "fallback_count"):
        out["fallback_count"] = int(model.fallback_count - before)
    return out


def evaluate_baselines(
    split: Split,
    names: Sequence[str] | None = None,
    *,
    config: EvalConfig | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Fit each named baseline on ``split.train`` and evaluate it on ``split.test``.

    Args:
        split: The split.
        names: Registry names (default: all, in report order).
        config: k and relevance threshold (default :class:`EvalConfig`).
        params: Extra constructor arguments per model name, e.g. ``{"biased-mf": {"n_factors": 50}}``.
        seed: Seed for seeded models (default: the split's seed).
        progress: Progress bars on a terminal.

    Returns:
        One dict per model: ``model``, ``kind``, ``params``, ``fit_seconds``, ``eval_seconds``,
        the prediction metrics (``None`` for rankers), the ranking metrics (``None`` for models
        whose scores ignore the item: global and user mean) and ``fallback_count`` (see
        :func:`evaluate_predictor` / :func:`evaluate_ranker`).

    Raises:
        ConfigError: An unknown model name or parameter.
    """
    from recsim_personas.baselines.registry import (
        baseline_names,
        get_baseline_spec,
        make_baseline,
    )
    from recsim_personas.progress import progress_bar

    config = config or EvalConfig()
    names = list(names) if names is not None else list(baseline_names())
    params = dict(params or {})
    specs = [get_baseline_spec(n) for n in names]  # all unknown names fail before any fitting
    for key in params:
        if key not in names:
            raise ConfigError(f"params given for {key!r}, which is not among the models {names}")
    seed = split.config.seed if seed is None else seed
    threshold = config.threshold_for(split.scale)
    rank_keys = ranking_metric_names(config.k)

    results: list[dict[str, Any]] = []
    for spec in progress_bar(specs, desc="baselines", enabled=progress):
        kwargs = dict(params.get(spec.name, {}))
        if spec.kind == "predictor" and "scale" in spec.parameters:
            kwargs.setdefault("scale", split.scale)
        if spec.seeded:
            kwargs.setdefault("seed", seed)
        model = make_baseline(spec.name, **kwargs)
        start = time.perf_counter()
        model.fit(split.train)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        row: dict[str, Any] = {"model": spec.name, "kind": spec.kind, "params": model.get_params()}
        for key in ("rmse", "mae", "rmse_per_user", "mae_per_user", *rank_keys):
            row[key] = None
        if spec.kind == "predictor":
            row.update(evaluate_predictor(model, split))
        if model.ranks_items:
            ranking = evaluate_ranker(
                model, split, k=config.k, relevance_threshold=threshold, progress=progress
            )
            if spec.kind == "predictor":
                ranking.pop("fallback_count", None)  # keep the prediction fallbacks
            row.update(ranking)
        row["relevance_threshold"] = threshold
        row["fit_seconds"] = round(fit_seconds, 3)
        row["eval_seconds"] = round(time.perf_counter() - start, 3)
        results.append(row)
    return results
