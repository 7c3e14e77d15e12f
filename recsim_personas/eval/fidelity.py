"""Fidelity of simulated users: does the agent rate like each real user, beyond the rating marginal?

:func:`fidelity_metrics` scores one predictions frame (one row per test rating, with the agent's
rating distribution ``p_<level>``, its expectation and mode, as the Table-1 evaluation writes them)
and :func:`paired_difference` compares two predictors on the **same rows**. Metrics:

- ``rmse`` / ``mae`` of the expectation, ``rmse_mode`` / ``mae_mode`` of the most likely level
  (per rating);
- ``spearman``: per-user Spearman correlation of the expected rating with the real ratings over the
  user's test items, averaged over users with at least 3 items and some spread in both (per user);
- ``ndcg@10``: per-user NDCG of the user's test items ranked by the expected rating, gain = the
  real rating (graded), normalised by the ideal order (per user);
- ``auc_like``: ROC AUC of P(rating >= like threshold) for the real likes (per rating; a point
  predictor ranks by its prediction);
- ``hist_tv`` / ``hist_w1``: total-variation and Wasserstein-1 (in stars) distance between the
  predicted rating histogram (the mean predicted distribution; a point predictor's rounded
  predictions) and the real one;
- ``nll``: mean negative log-likelihood (nats) of the real rating under the predicted distribution
  (per rating; ``None`` for a point predictor), what a temperature calibration minimises;
- calibration of P(like): :func:`calibration_bins` (reliability diagram, :func:`plot_calibration`).

The paired bootstrap (:func:`paired_difference`) resamples test *users* (a user's ratings move
together; resampling rows would understate the spread) and reports the 95% percentile interval of
``agent - reference`` for RMSE and mean per-user Spearman; an interval below 0 (RMSE) or above 0
(Spearman) means the agent is better on these rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import DataError

__all__ = [
    "FIDELITY_METRICS",
    "calibration_bins",
    "fidelity_metrics",
    "level_columns",
    "paired_difference",
    "plot_calibration",
    "point_distribution",
]

#: Metric keys of :func:`fidelity_metrics`, in report order.
FIDELITY_METRICS: tuple[str, ...] = (
    "rmse", "mae", "rmse_mode", "mae_mode", "spearman", "ndcg@10", "auc_like", "hist_tv", "hist_w1", "nll",
)
_MIN_ITEMS_SPEARMAN = 3


def level_columns(frame: pd.DataFrame, scale: RatingScale) -> list[str]:
    """The ``p_<level>`` columns of ``frame`` in level order (as the evaluation names them)."""
    cols = [f"p_{scale.format(float(v))}" for v in scale.levels]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise DataError(
            f"predictions lack distribution column(s) {missing[:3]} for the scale "
            f"{scale.min}-{scale.max} step {scale.step}; score them with eval_mode='score'"
        )
    return cols


def point_distribution(predicted: np.ndarray, scale: RatingScale) -> np.ndarray:
    """A point predictor's rating as a one-hot distribution over the scale's levels (nearest level)."""
    levels = np.asarray(scale.levels, dtype=np.float64)
    idx = np.abs(np.asarray(predicted, dtype=np.float64)[:, None] - levels[None, :]).argmin(axis=1)
    out = np.zeros((len(idx), len(levels)))
    out[np.arange(len(idx)), idx] = 1.0
    return out


def _per_user_scores(users: np.ndarray, pred: np.ndarray, true: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per user: Spearman (NaN when undefined) and graded NDCG@k of ``pred`` against ``true``."""
    from scipy.stats import spearmanr

    order = np.argsort(users, kind="stable")
    users, pred, true = users[order], pred[order], true[order]
    bounds = np.flatnonzero(np.r_[True, users[1:] != users[:-1], True])
    rho, ndcg = [], []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for s, e in itertools.pairwise(bounds):
        p, t = pred[s:e], true[s:e]
        if e - s >= _MIN_ITEMS_SPEARMAN and np.ptp(p) > 0 and np.ptp(t) > 0:
            rho.append(float(spearmanr(p, t).statistic))
        else:
            rho.append(np.nan)
        n = min(k, e - s)
        # Ties in the prediction are broken by item position (stable), never by the label.
        ranked = t[np.argsort(-p, kind="stable")][:n]
        ideal = np.sort(t)[::-1][:n]
        dcg, idcg = float(ranked @ discounts[:n]), float(ideal @ discounts[:n])
        ndcg.append(dcg / idcg if idcg > 0 else np.nan)
    return np.asarray(rho), np.asarray(ndcg)


def fidelity_metrics(
    frame: pd.DataFrame,
    scale: RatingScale,
    *,
    predicted: str = "expectation",
    distribution: np.ndarray | None = None,
    like_threshold: float | None = None,
    k: int = 10,
) -> dict[str, Any]:
    """The fidelity metrics of one predictor on ``frame`` (see the module docstring).

    Args:
        frame: One row per test rating: ``user_id``, ``rating`` and the ``predicted`` column; with
            the ``p_<level>`` columns the distribution comes from them, ``mode`` too when present.
        scale: The rating scale.
        predicted: Column of the point prediction (the expectation for an agent).
        distribution: ``(rows, levels)`` predicted distribution for a frame without ``p_`` columns
            (a point predictor: :func:`point_distribution`).
        like_threshold: Rating counted as a like (default: the ranking metrics' relevance
            threshold, 4 on 1-5).
        k: Cut-off of the per-user NDCG.

    Raises:
        DataError: a missing column or a missing (NaN) prediction.
    """
    for col in ("user_id", "rating", predicted):
        if col not in frame.columns:
            raise DataError(f"fidelity: predictions lack column {col!r} (have {', '.join(frame.columns)})")
    pred = frame[predicted].to_numpy(dtype=np.float64)
    true = frame["rating"].to_numpy(dtype=np.float64)
    if len(pred) == 0:
        raise DataError("fidelity: no predictions to score")
    if not np.isfinite(pred).all():
        j = int(np.flatnonzero(~np.isfinite(pred))[0])
        raise DataError(f"fidelity: prediction {predicted!r} of row {j} is missing; predict every test row")
    levels = np.asarray(scale.levels, dtype=np.float64)
    if distribution is None:
        dist = frame[level_columns(frame, scale)].to_numpy(dtype=np.float64)
        dist = dist / np.maximum(dist.sum(axis=1, keepdims=True), 1e-12)
        mode = frame["mode"].to_numpy(dtype=np.float64) if "mode" in frame.columns else levels[dist.argmax(axis=1)]
    else:
        dist = np.asarray(distribution, dtype=np.float64)
        mode = levels[dist.argmax(axis=1)]
    from recsim_personas.eval.offline import default_relevance_threshold

    threshold = default_relevance_threshold(scale) if like_threshold is None else float(like_threshold)
    # A point predictor's one-hot "distribution" would make P(like) 0 / 1: rank by its prediction.
    p_like = dist[:, levels >= threshold - 1e-9].sum(axis=1) if distribution is None else pred
    liked = true >= threshold - 1e-9
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(liked, p_like)) if 0 < liked.sum() < len(liked) else None
    rho, ndcg = _per_user_scores(frame["user_id"].to_numpy(), pred, true, k)
    real_hist = np.array([(np.abs(true - v) < 1e-9).mean() for v in levels])
    pred_hist = dist.mean(axis=0)
    from scipy.stats import wasserstein_distance

    nll = None
    if distribution is None:
        idx = np.abs(true[:, None] - levels[None, :]).argmin(axis=1)
        if np.allclose(levels[idx], true):  # every real rating is a level of the scale
            nll = float(-np.log(np.maximum(dist[np.arange(len(idx)), idx], 1e-12)).mean())
    return {
        "n": len(frame),
        "users": int(frame["user_id"].nunique()),
        "rmse": float(np.sqrt(np.mean((pred - true) ** 2))),
        "mae": float(np.mean(np.abs(pred - true))),
        "rmse_mode": float(np.sqrt(np.mean((mode - true) ** 2))),
        "mae_mode": float(np.mean(np.abs(mode - true))),
        "spearman": float(np.nanmean(rho)) if np.isfinite(rho).any() else None,
        "spearman_users": int(np.isfinite(rho).sum()),
        f"ndcg@{k}": float(np.nanmean(ndcg)) if np.isfinite(ndcg).any() else None,
        "auc_like": auc,
        "like_threshold": float(threshold),
        "hist_tv": float(0.5 * np.abs(pred_hist - real_hist).sum()),
        "hist_w1": float(wasserstein_distance(levels, levels, pred_hist, real_hist)),
        "nll": nll,
        "pred_std": float(pred.std()),
        "real_std": float(true.std()),
        "histogram": {"levels": levels.tolist(), "predicted": pred_hist.tolist(), "real": real_hist.tolist()},
    }


def paired_difference(
    frame: pd.DataFrame,
    agent: str,
    reference: str,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Paired bootstrap over users of ``agent - reference`` on the same rows: RMSE and mean Spearman.

    Args:
        frame: ``user_id``, ``rating`` and the two prediction columns, one row per test rating.
        agent: Column of the agent's predictions.
        reference: Column of the reference (e.g. the bias predictor's) predictions.

    Returns:
        ``rmse_diff`` / ``spearman_diff`` (on all rows) with ``*_ci`` ``[low, high]`` intervals,
        ``n_boot``, ``users`` and ``rows``.
    """
    users = frame["user_id"].to_numpy()
    uniq, inverse = np.unique(users, return_inverse=True)
    true = frame["rating"].to_numpy(dtype=np.float64)
    a = frame[agent].to_numpy(dtype=np.float64)
    b = frame[reference].to_numpy(dtype=np.float64)
    n_users = len(uniq)
    # Per-user sums of squared errors and counts: a resample of users is a weighted sum of them.
    sse_a = np.bincount(inverse, weights=(a - true) ** 2, minlength=n_users)
    sse_b = np.bincount(inverse, weights=(b - true) ** 2, minlength=n_users)
    count = np.bincount(inverse, minlength=n_users).astype(np.float64)
    rho_a, _ = _per_user_scores(users, a, true, 10)
    rho_b, _ = _per_user_scores(users, b, true, 10)
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(n_users, np.full(n_users, 1.0 / n_users), size=n_boot).astype(np.float64)
    rmse_diff = np.sqrt(draws @ sse_a / (draws @ count)) - np.sqrt(draws @ sse_b / (draws @ count))
    both = np.isfinite(rho_a) & np.isfinite(rho_b)
    d_rho = np.where(both, np.nan_to_num(rho_a) - np.nan_to_num(rho_b), 0.0)
    w = draws * both[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        rho_diff = (w @ d_rho) / w.sum(axis=1)
    q = [0.5 - level / 2, 0.5 + level / 2]
    point_rmse = float(np.sqrt(sse_a.sum() / count.sum()) - np.sqrt(sse_b.sum() / count.sum()))
    out: dict[str, Any] = {
        "rmse_diff": point_rmse,
        "rmse_diff_ci": [float(x) for x in np.quantile(rmse_diff, q)],
        "spearman_diff": float(d_rho[both].mean()) if both.any() else None,
        "spearman_diff_ci": (
            [float(x) for x in np.nanquantile(rho_diff, q)] if both.any() else None
        ),
        "n_boot": int(n_boot),
        "users": int(n_users),
        "rows": len(frame),
        "resampled": "users",
    }
    return out


def calibration_bins(p_like: np.ndarray, liked: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Reliability of P(like): per equal-width bin, mean predicted probability, observed like rate, count."""
    p = np.asarray(p_like, dtype=np.float64)
    y = np.asarray(liked, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            out.append({"low": float(edges[b]), "high": float(edges[b + 1]), "predicted": float(p[sel].mean()),
                        "observed": float(y[sel].mean()), "count": int(sel.sum())})
    return out


def plot_calibration(curves: Mapping[str, Sequence[Mapping[str, float]]], path: str | Path, *, title: str) -> Path:
    """Reliability diagram: one line per predictor (``{name: calibration_bins(...)}``), PNG."""
    from recsim_personas.figures import pyplot, save_png

    fig, ax = pyplot().subplots(figsize=(5.6, 4.6))
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="perfectly calibrated")
    for name, bins in curves.items():
        if not bins:
            continue
        xs = [b["predicted"] for b in bins]
        ys = [b["observed"] for b in bins]
        sizes = [12 + 60 * b["count"] / max(c["count"] for c in bins) for b in bins]
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
        ax.scatter(xs, ys, s=sizes, alpha=0.35)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("predicted P(like)")
    ax.set_ylabel("observed like rate")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save_png(fig, path)
