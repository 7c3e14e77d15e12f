"""How well a simulated user rates held-out items: RMSE, MAE, URR and outside mass, overall and per persona.

:func:`evaluate_agent` asks any :class:`~recsim_personas.agents.protocol.UserAgent` (the LM agent, the
bias agent, ...) for its rating distribution on every test row and scores three point ratings taken
from it:

``expectation`` (**headline**)
    The distribution's mean. It minimises the expected squared error, so it is the fair comparison
    with rating predictors (the classic baselines also output a continuous estimate).
``mode``
    The most likely level (ties: the lower level). Closest to the paper's decoding (4 tokens at
    temperature 0.3 pick the top level most of the time).
``sample``
    One level drawn from the distribution with a seeded generator: what the environment's simulated
    user answers. Its error includes the agent's own randomness, so it is the largest of the three.

In ``generate`` mode the agent's distribution is one-hot on the parsed answer, so the three agree
on valid rows. Errors are computed over rows with a valid answer; URR is the share of the others
(the paper reports RMSE/MAE and URR the same way). In ``score`` mode every row is valid and URR is 0
by construction; ``outside_mass`` (the probability the model put on tokens that are no rating level,
before renormalisation) is the score-mode analogue of URR.

Errors average per rating (every test rating weighs the same); ``*_per_user`` variants average each
user's error. Results go to one JSON file per configuration with the config, git state, package
versions and hardware.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsim_personas.artifacts import atomic_write_json, environment_info, git_info
from recsim_personas.data.checks import first_true
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError, DataError
from recsim_personas.eval.metrics import mae, rmse, urr

__all__ = ["HEADLINE", "POINT_ESTIMATES", "AgentEvaluation", "evaluate_agent", "point_metrics"]

#: The point estimates scored, in report order; :data:`HEADLINE` is the one in ``rmse`` / ``mae``.
POINT_ESTIMATES: tuple[str, ...] = ("expectation", "mode", "sample")
HEADLINE = "expectation"
_FORMAT_VERSION = 1


@dataclass
class AgentEvaluation:
    """The outcome of :func:`evaluate_agent`.

    Attributes:
        name: Label of the configuration (e.g. ``"persona__msml"``).
        metrics: Overall metrics (see :func:`point_metrics`).
        per_persona: Persona id -> the same metrics over that persona's users (empty without personas).
        predictions: One row per test row: ``user_id, item_id, rating, persona, expectation, mode,
            sample, valid, outside_mass`` and ``p_<level>`` per level.
        seconds: Wall time of the agent calls.
        config: What was evaluated (free-form; stored in the JSON).
    """

    name: str
    metrics: dict[str, Any]
    per_persona: dict[int, dict[str, Any]]
    predictions: pd.DataFrame
    seconds: float
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def rmse(self) -> float:
        """Headline RMSE (NaN when no answer was valid)."""
        value = self.metrics["rmse"]
        return float("nan") if value is None else float(value)

    @property
    def mae(self) -> float:
        """Headline MAE (NaN when no answer was valid)."""
        value = self.metrics["mae"]
        return float("nan") if value is None else float(value)

    @property
    def urr(self) -> float:
        return float(self.metrics["urr"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (without the per-row predictions)."""
        return {
            "name": self.name,
            "headline": HEADLINE,
            "averaging": "per rating (rmse, mae); per user in *_per_user",
            "metrics": self.metrics,
            "per_persona": {str(k): v for k, v in sorted(self.per_persona.items())},
            "seconds": round(self.seconds, 3),
            "ratings_per_second": round(len(self.predictions) / self.seconds, 3) if self.seconds else None,
            "config": self.config,
        }

    def write_json(self, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None) -> Path:
        """Write the results JSON (summary + ``config``, ``git``, ``versions``, ``hardware``)."""
        doc = {"format_version": _FORMAT_VERSION, **self.to_dict(), **dict(extra or {}),
               "git": git_info(), **environment_info(),
               "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        atomic_write_json(path, doc)
        return Path(path)


def point_metrics(
    frame: pd.DataFrame, scale: RatingScale | None = None
) -> dict[str, Any]:
    """Metrics of a predictions frame (as :attr:`AgentEvaluation.predictions`).

    Returns:
        ``n``, ``n_valid``, ``urr``, ``outside_mass`` (mean), ``rmse`` / ``mae`` (headline =
        expectation), ``rmse_<estimate>`` / ``mae_<estimate>`` for each of :data:`POINT_ESTIMATES`,
        the same ``*_per_user``, ``mean_prediction``, ``mean_rating``, and ``n_users``. Errors are over
        valid rows; ``None`` when no row is valid.
    """
    valid = frame["valid"].to_numpy(dtype=bool)
    out: dict[str, Any] = {
        "n": len(frame),
        "n_valid": int(valid.sum()),
        "n_users": int(frame["user_id"].nunique()),
        "urr": urr(valid) if len(frame) else None,
        "outside_mass": float(frame["outside_mass"].mean()) if len(frame) else None,
        "mean_rating": float(frame["rating"].mean()) if len(frame) else None,
    }
    ok = frame[valid]
    for est in POINT_ESTIMATES:
        if len(ok):
            out[f"rmse_{est}"] = rmse(ok[est], ok["rating"])
            out[f"mae_{est}"] = mae(ok[est], ok["rating"])
            out[f"rmse_{est}_per_user"] = rmse(ok[est], ok["rating"], user_ids=ok["user_id"], average="user")
            out[f"mae_{est}_per_user"] = mae(ok[est], ok["rating"], user_ids=ok["user_id"], average="user")
        else:
            for key in ("rmse", "mae"):
                out[f"{key}_{est}"] = out[f"{key}_{est}_per_user"] = None
    out["rmse"] = out[f"rmse_{HEADLINE}"]
    out["mae"] = out[f"mae_{HEADLINE}"]
    out["rmse_per_user"] = out[f"rmse_{HEADLINE}_per_user"]
    out["mae_per_user"] = out[f"mae_{HEADLINE}_per_user"]
    out["mean_prediction"] = float(ok[HEADLINE].mean()) if len(ok) else None
    if scale is not None and len(ok):
        # How often the mode is exactly right: a readable companion to the errors.
        out["accuracy_mode"] = float(np.mean(np.isclose(ok["mode"], ok["rating"])))
    return out


def _persona_lookup(personas: Mapping[int, int] | Callable[[int], int] | None) -> Callable[[int], int] | None:
    if personas is None:
        return None
    if callable(personas):
        return personas
    table = {int(k): int(v) for k, v in personas.items()}

    def lookup(user_id: int) -> int:
        if user_id not in table:
            raise DataError(f"user {user_id} of the test rows has no persona in the given mapping")
        return table[user_id]

    return lookup


def evaluate_agent(
    agent: Any,
    test: pd.DataFrame,
    *,
    personas: Mapping[int, int] | Callable[[int], int] | None = None,
    name: str = "agent",
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    config: Mapping[str, Any] | None = None,
    out_path: str | os.PathLike[str] | None = None,
) -> AgentEvaluation:
    """Score ``agent`` on the test rows: RMSE / MAE / URR / outside mass, overall and per persona.

    Args:
        agent: A :class:`~recsim_personas.agents.protocol.UserAgent` (``scale`` and ``rate``).
        test: Test interactions with ``user_id``, ``item_id``, ``rating``.
        personas: ``user_id -> persona`` (a mapping or a callable such as ``store.persona``); with it
            the result has per-persona metrics. ``None``: overall only.
        name: Label stored in the result.
        batch_size: Requests per ``agent.rate`` call. Rows are sorted by user first, so a user's
            profile prefix is encoded once and reused from the scorer's cache.
        seed: Seed of the ``sample`` estimate.
        progress: Show a tqdm bar.
        config: Free-form description of the configuration, stored in the JSON.
        out_path: If given, the results JSON is written there.

    Returns:
        :class:`AgentEvaluation`.

    Raises:
        DataError: Empty test rows, missing columns, a rating off the agent's scale, or an agent that
            returns a malformed batch.
        ConfigError: ``batch_size < 1``.
    """
    missing = [c for c in ("user_id", "item_id", "rating") if c not in test.columns]
    if missing:
        raise DataError(f"test rows lack column(s) {', '.join(missing)}; pass split.test")
    if len(test) == 0:
        raise DataError("no test rows to evaluate")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    scale: RatingScale = agent.scale
    rows = test[["user_id", "item_id", "rating"]].sort_values(["user_id", "item_id"], kind="stable")
    rows = rows.reset_index(drop=True)
    ratings = rows["rating"].to_numpy(dtype=np.float64)
    j = first_true(~scale.contains(ratings))
    if j is not None:
        raise DataError(
            f"test rating {ratings[j]} (user {rows['user_id'].iat[j]}, item {rows['item_id'].iat[j]}) is "
            f"not on the agent's scale {scale.min}-{scale.max} step {scale.step}"
        )
    lookup = _persona_lookup(personas)
    n, k = len(rows), scale.n_levels
    probs = np.zeros((n, k))
    outside = np.zeros(n)
    valid = np.zeros(n, dtype=bool)
    from recsim_personas.progress import progress_bar

    bar = progress_bar(total=n, desc=f"evaluate {name}", unit="rating", leave=False, enabled=progress)
    users = rows["user_id"].to_numpy(dtype=np.int64)
    items = rows["item_id"].to_numpy(dtype=np.int64)
    t0 = time.perf_counter()
    try:
        for start in range(0, n, batch_size):
            sl = slice(start, min(n, start + batch_size))
            batch = agent.rate(users[sl].tolist(), items[sl].tolist())
            m = sl.stop - sl.start
            if batch.probs.shape != (m, k):
                raise DataError(
                    f"agent {name!r} returned probs of shape {batch.probs.shape} for {m} requests on a "
                    f"{k}-level scale"
                )
            probs[sl] = batch.probs
            outside[sl] = batch.outside_mass
            valid[sl] = batch.valid
            bar.update(m)
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    levels = scale.levels
    rng = np.random.default_rng(seed)
    u = rng.random(n)
    cdf = np.cumsum(probs, axis=1)
    sample_idx = np.minimum((cdf < u[:, None] * cdf[:, -1:]).sum(axis=1), k - 1)
    pred = rows.copy()
    pred["persona"] = [lookup(int(x)) for x in users] if lookup is not None else -1
    pred["expectation"] = probs @ levels
    pred["mode"] = levels[np.argmax(probs, axis=1)]
    pred["sample"] = levels[sample_idx]
    pred["valid"] = valid
    pred["outside_mass"] = outside
    for j, level in enumerate(levels):
        pred[f"p_{scale.format(float(level))}"] = probs[:, j]
    metrics = point_metrics(pred, scale)
    per_persona: dict[int, dict[str, Any]] = {}
    if lookup is not None:
        for persona, part in pred.groupby("persona", sort=True):
            per_persona[int(persona)] = point_metrics(part, scale)
    result = AgentEvaluation(
        name=name, metrics=metrics, per_persona=per_persona, predictions=pred, seconds=seconds,
        config=dict(config or {}),
    )
    if out_path is not None:
        result.write_json(out_path)
    return result
