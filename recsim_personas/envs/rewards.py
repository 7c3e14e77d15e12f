"""The reward of a ``PersonaRec`` step, from what the user did: RecSim's reward-function seam.

:class:`StepReward` turns the step's ratings into rewards as the ``reward`` option says (``rating``,
``normalized``, ``like``) and adds ``seen_penalty`` per penalised seen item. Replace it with any
object of the same call signature (``env.unwrapped._engine.reward_fn = my_reward``).

Example:
    >>> from recsim_personas.data.dataset import RatingScale
    >>> fn = StepReward("normalized", like_threshold=4.0, seen_penalty=-1.0, scale=RatingScale(1, 5, 1))
    >>> fn(np.array([5.0, 0.0]), np.array([True, False]), np.array([0, 1])).tolist()
    [1.0, -1.0]
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from recsim_personas.data.dataset import RatingScale

__all__ = ["RewardFunction", "StepReward"]


class RewardFunction(Protocol):
    """``(ratings, rated, n_seen_penalised) -> rewards``, all ``(m,)``."""

    def __call__(self, rating: np.ndarray, rated: np.ndarray, n_penalised: np.ndarray) -> np.ndarray: ...


class StepReward:
    """The built-in reward (module docstring).

    Args:
        kind: ``rating`` (the rating), ``normalized`` ((rating - min) / (max - min)) or ``like``
            (1.0 at or above ``like_threshold``).
        like_threshold: Stars that count as a like.
        seen_penalty: Added once per penalised seen item.
        scale: The rating scale.
    """

    def __init__(self, kind: str, like_threshold: float, seen_penalty: float, scale: RatingScale) -> None:
        self.kind = kind
        self.like_threshold = float(like_threshold)
        self.seen_penalty = float(seen_penalty)
        self._lo = float(scale.min)
        self._inv_range = 1.0 / (float(scale.max) - float(scale.min))

    def __call__(self, rating: np.ndarray, rated: np.ndarray, n_penalised: np.ndarray) -> np.ndarray:
        if self.kind == "rating":
            reward = rating.copy()
        elif self.kind == "normalized":
            reward = (rating - self._lo) * self._inv_range
        else:
            reward = (rating >= self.like_threshold).astype(np.float64)
        if not rated.all():
            reward[~rated] = 0.0
        if n_penalised.any():
            reward = reward + self.seen_penalty * n_penalised
        return reward
