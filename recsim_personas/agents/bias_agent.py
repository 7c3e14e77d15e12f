"""The cheap simulated user: user + item biases, Gaussian noise, and the patience exit rule.

:class:`BiasUserAgent` implements the :class:`~recsim_personas.agents.protocol.UserAgent` protocol
without a language model, for tests and for RL code that needs millions of steps (numpy only; the
vector environment runs it at well over 10,000 steps per second on one CPU core).

Responding to an item
    The mean rating is the regularised user + item bias estimate
    ``mu(u, i) = global_mean + b_u + b_i`` of :class:`~recsim_personas.baselines.bias.BiasPredictor`
    fitted on the train split. The user's rating is ``mu + eps`` with ``eps ~ N(0, noise_std^2)``,
    rounded to the nearest level of the scale: level ``l`` gets the Gaussian mass of
    ``[l - step/2, l + step/2)``, the lowest level also the lower tail and the highest the upper tail.
    ``noise_std`` defaults to the predictor's residual RMSE on train, so the spread of simulated
    ratings matches how far real ratings fall from the bias estimate.

Deciding to leave
    The patience rule of :mod:`recsim_personas.agents.exits`: the starting patience comes from the
    user's activity level (the distilled profile's ``activity_level`` when known, else the tercile of
    the user's train rating count), and drops with every unsatisfying item of the session.

Example:
    >>> import pandas as pd
    >>> from recsim_personas.data.dataset import RatingScale
    >>> train = pd.DataFrame({"user_id": [1, 1, 2, 2], "item_id": [10, 11, 10, 11],
    ...                       "rating": [5.0, 4.0, 2.0, 1.0]})
    >>> agent = BiasUserAgent.fit(train, RatingScale(1, 5, 1), noise_std=0.5)
    >>> batch = agent.rate([1, 2], [10, 10])
    >>> batch.probs.shape
    (2, 5)
    >>> bool(batch.expectation(agent.scale)[0] > batch.expectation(agent.scale)[1])
    True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from recsim_personas.agents.exits import (
    ExitRuleConfig,
    PatienceExitRule,
    train_activity_levels,
)
from recsim_personas.agents.protocol import RatingBatch, SessionEvent
from recsim_personas.data.dataset import RatingScale
from recsim_personas.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pandas as pd

    from recsim_personas.baselines.bias import BiasPredictor

__all__ = ["BiasUserAgent", "discretized_gaussian"]

# Abramowitz & Stegun 7.1.26: |error| < 1.5e-7, numpy only (no scipy in the hot path).
_P = 0.3275911
_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    x = np.abs(z) / np.sqrt(2.0)
    t = 1.0 / (1.0 + _P * x)
    poly = t * (_A[0] + t * (_A[1] + t * (_A[2] + t * (_A[3] + t * _A[4]))))
    erf = 1.0 - poly * np.exp(-x * x)
    return 0.5 * (1.0 + np.sign(z) * erf)


def discretized_gaussian(mean: np.ndarray, std: float, scale: RatingScale) -> np.ndarray:
    """``(n, n_levels)`` probabilities of rounding ``N(mean, std^2)`` to each level of ``scale``.

    Level ``l`` gets the mass of ``[l - step/2, l + step/2)``; the end levels also get the tails.
    ``std = 0`` puts all mass on the nearest level (a mean exactly between two levels splits it).

    Example:
        >>> p = discretized_gaussian(np.array([3.0]), 0.0, RatingScale(1, 5, 1))
        >>> p.round(3).tolist()
        [[0.0, 0.0, 1.0, 0.0, 0.0]]
    """
    edges = scale.levels[:-1] + scale.step / 2.0  # K-1 inner edges
    return _discretize(np.asarray(mean, dtype=np.float64), float(std), edges)


def _discretize(mean: np.ndarray, std: float, edges: np.ndarray) -> np.ndarray:
    n = mean.size
    sigma = max(std, 1e-9)
    full = np.empty((n, len(edges) + 2))
    full[:, 0] = 0.0
    full[:, -1] = 1.0
    full[:, 1:-1] = _normal_cdf((edges[None, :] - mean.reshape(-1, 1)) * (1.0 / sigma))
    probs = full[:, 1:] - full[:, :-1]
    np.maximum(probs, 0.0, out=probs)
    probs /= probs.sum(axis=1, keepdims=True)
    return probs


class BiasUserAgent:
    """User + item bias ratings with Gaussian noise, and the patience exit (module docstring).

    Build one with :meth:`fit` (from a train split) or from an already fitted predictor.

    Args:
        predictor: A fitted :class:`~recsim_personas.baselines.bias.BiasPredictor`.
        scale: The dataset's rating scale.
        noise_std: Standard deviation of the rating noise, in stars (>= 0).
        activity_levels: ``{user_id: 0|1|2}``; users missing here get level 1 (mid).
        exit_rule: Parameters of the patience exit rule.
    """

    #: ``leave_probability`` understands ``SessionEvent(item, NaN)`` (a step without a rating).
    accepts_unrated_events = True

    def __init__(
        self,
        predictor: BiasPredictor,
        scale: RatingScale,
        *,
        noise_std: float,
        activity_levels: Mapping[int, int] | None = None,
        exit_rule: ExitRuleConfig | None = None,
    ) -> None:
        if not (isinstance(noise_std, (int, float)) and noise_std >= 0):
            raise ConfigError(f"BiasUserAgent: noise_std must be a number >= 0, got {noise_std!r}")
        for attr in ("global_mean_", "user_ids_", "item_ids_"):
            if getattr(predictor, attr, None) is None:
                raise ConfigError(
                    f"BiasUserAgent needs a fitted BiasPredictor (missing {attr}); call "
                    "predictor.fit(train) first or use BiasUserAgent.fit(train, scale)"
                )
        self.scale = scale
        self.noise_std = float(noise_std)
        self.predictor = predictor
        self._lo, self._hi = float(scale.min), float(scale.max)
        self._levels = np.asarray(scale.levels, dtype=np.float64)
        self._edges = self._levels[:-1] + float(scale.step) / 2.0
        self._mu = float(predictor.global_mean_)
        self._user_ids = np.asarray(predictor.user_ids_, dtype=np.int64)
        self._item_ids = np.asarray(predictor.item_ids_, dtype=np.int64)
        self._user_bias = np.asarray(predictor.user_bias(self._user_ids), dtype=np.float64)
        self._item_bias = np.asarray(predictor.item_bias(self._item_ids), dtype=np.float64)
        levels = activity_levels or {}
        self._activity = np.array(
            [int(levels.get(int(u), 1)) for u in self._user_ids], dtype=np.int64
        )
        self._activity_extra = {int(k): int(v) for k, v in levels.items()}
        self.exit_rule = PatienceExitRule(exit_rule)
        self._replay_memo: dict[int, tuple[Any, int, float, float, Any]] = {}

    @classmethod
    def fit(
        cls,
        train: pd.DataFrame,
        scale: RatingScale,
        *,
        noise_std: float | None = None,
        activity_levels: Mapping[int, int] | None = None,
        exit_rule: ExitRuleConfig | None = None,
    ) -> BiasUserAgent:
        """Fit the bias predictor on ``train`` and build the agent.

        Args:
            train: Train interactions (``user_id, item_id, rating``).
            scale: The rating scale.
            noise_std: Rating noise in stars; ``None`` = the predictor's residual RMSE on ``train``.
            activity_levels: ``{user_id: level}`` from distilled profiles; ``None`` = terciles of
                the users' train rating counts (:func:`~recsim_personas.agents.exits.activity_levels_from_counts`).
            exit_rule: Parameters of the patience exit rule.
        """
        from recsim_personas.baselines.bias import BiasPredictor

        predictor = BiasPredictor(scale=scale).fit(train)
        if noise_std is None:
            pred = predictor.predict(train["user_id"].to_numpy(), train["item_id"].to_numpy())
            noise_std = float(np.sqrt(np.mean((pred - train["rating"].to_numpy(np.float64)) ** 2)))
        if activity_levels is None:
            activity_levels = train_activity_levels(train)
        return cls(
            predictor, scale, noise_std=noise_std, activity_levels=activity_levels, exit_rule=exit_rule
        )

    # -- responding ----------------------------------------------------------------------------------
    def mean_rating(self, user_ids: Sequence[int] | np.ndarray, item_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """``mu + b_u + b_i`` clipped to the scale (unknown users or items get a zero bias)."""
        users, items = pair_ids(user_ids, item_ids, "BiasUserAgent.rate")
        bu = _lookup(users, self._user_ids, self._user_bias)
        bi = _lookup(items, self._item_ids, self._item_bias)
        return np.minimum(np.maximum(self._mu + bu + bi, self._lo), self._hi)

    def rate(self, user_ids: Sequence[int], item_ids: Sequence[int]) -> RatingBatch:
        """Rating distributions: the discretised ``N(mean_rating, noise_std^2)`` per request."""
        mean = self.mean_rating(user_ids, item_ids)
        probs = _discretize(mean, self.noise_std, self._edges)
        return RatingBatch(
            probs=probs, outside_mass=np.zeros(len(mean)), valid=np.ones(len(mean), dtype=bool)
        )

    # -- leaving -------------------------------------------------------------------------------------
    def activity_level(self, user_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Activity level (0 low, 1 mid, 2 high) per user; 1 for users the agent does not know."""
        users = np.asarray(user_ids, dtype=np.int64).ravel()
        if len(self._user_ids) == 0:
            return np.array([self._activity_extra.get(int(u), 1) for u in users], dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._user_ids, users), len(self._user_ids) - 1)
        found = self._user_ids[pos] == users
        out = np.where(found, self._activity[pos], 1)
        for j in np.flatnonzero(~found):
            out[j] = self._activity_extra.get(int(users[j]), 1)
        return out

    def leave_probability(
        self, user_ids: Sequence[int], sessions: Sequence[Sequence[SessionEvent]]
    ) -> np.ndarray:
        """The patience rule replayed over each session's ratings (NaN ratings count as unrated).

        Environments pass the same growing list per session at every step; the agent remembers how
        far it replayed each list (keyed by the list object, checked by its last event), so a step
        costs one rule update per session instead of a replay of the whole session.
        """
        if len(user_ids) != len(sessions):
            raise DataError(
                f"BiasUserAgent.leave_probability: {len(user_ids)} users but {len(sessions)} sessions"
            )
        initial = self.exit_rule.initial(self.activity_level(user_ids))
        patience = np.empty(len(sessions))
        memo = self._replay_memo
        new_memo: dict[int, tuple[Any, int, float, float, Any]] = {}
        for j, (session, cap) in enumerate(zip(sessions, initial.tolist(), strict=True)):
            start, p = 0, cap
            seen = memo.get(id(session))
            if seen is not None:
                obj, n_done, p_done, cap_done, last = seen
                if obj is session and cap_done == cap and 0 < n_done <= len(session) and session[n_done - 1] is last:
                    start, p = n_done, p_done
            n = len(session)
            p = self.exit_rule.replay(p, cap, (session[k].rating for k in range(start, n)))
            patience[j] = p
            if n:
                new_memo[id(session)] = (session, n, p, cap, session[n - 1])
        self._replay_memo = new_memo
        return self.exit_rule.leave_probability(patience)

    def __repr__(self) -> str:
        return (
            f"BiasUserAgent(users={len(self._user_ids)}, items={len(self._item_ids)}, "
            f"noise_std={self.noise_std:.3f}, scale={self.scale.min}-{self.scale.max})"
        )


def pair_ids(
    user_ids: Sequence[int] | np.ndarray, item_ids: Sequence[int] | np.ndarray, where: str
) -> tuple[np.ndarray, np.ndarray]:
    """``(users, items)`` as int64 vectors of the same length (one pair per request).

    Raises:
        DataError: the lengths differ (``where`` names the call).
    """
    users = np.asarray(user_ids, dtype=np.int64).ravel()
    items = np.asarray(item_ids, dtype=np.int64).ravel()
    if len(users) != len(items):
        raise DataError(
            f"{where}: {len(users)} user ids but {len(items)} item ids; pass one user and one item "
            "per request"
        )
    return users, items


def _lookup(ids: np.ndarray, known: np.ndarray, values: np.ndarray) -> np.ndarray:
    if len(known) == 0:
        return np.zeros(len(ids))
    pos = np.minimum(np.searchsorted(known, ids), len(known) - 1)
    return np.where(known[pos] == ids, values[pos], 0.0)
