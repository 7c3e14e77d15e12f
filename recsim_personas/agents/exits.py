"""The rule-based exit model: a user's patience, set by the activity trait, runs out on bad items.

RecSim separates *deciding to leave* from *responding to an item*; this module is the documented,
language-model-free leave decision that ``PersonaRecEnv(exit="rule")`` and the cheap
:class:`~recsim_personas.agents.bias_agent.BiasUserAgent` use.

The rule
--------
1. A session starts with patience ``P0 = initial_patience[activity_level]`` where the activity level
   is 0 (low), 1 (mid) or 2 (high): the memory stage's ``profiles.parquet`` column
   ``activity_level`` (the paper's activity trait), or, for a user without a profile, the tercile of
   the user's train rating count within the population (:func:`activity_levels_from_counts`).
   Defaults: 3, 5 and 8 items' worth of patience.
2. After each step the patience drops by ``drop_per_unsatisfying`` (1) when the item was
   *unsatisfying*: rated below ``unsatisfying_below`` (3 stars), or not rated at all (an item the
   user had already seen, or a slate from which the user picked nothing). A liked item (rated at or
   above ``recover_at``, 4 stars) gives back ``recover_per_liked`` (0.5), never above ``P0``.
3. The probability of leaving after the step is
   ``p = base + (1 - base) * sigmoid(-steepness * patience)``: ``base`` (2 %) is the attrition of a
   user who is still patient, and the probability passes 50 % (plus base) when the patience is used
   up. Patience below zero makes leaving ever more likely.

Everything is vectorised over sessions (numpy only): the environments keep one patience value per
session and update it with :meth:`PatienceExitRule.update`; agents that only see the session's
events (the :class:`~recsim_personas.agents.protocol.UserAgent` protocol is stateless) replay them
with :meth:`PatienceExitRule.patience_after`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recsim_personas.config import Config
from recsim_personas.errors import ConfigError

__all__ = ["ExitRuleConfig", "PatienceExitRule", "activity_levels_from_counts", "train_activity_levels"]


def _field(default: Any, text: str) -> Any:
    """A config field with its help text (``ExitRuleConfig.field_help()`` reads it)."""
    return field(default=default, metadata={"help": text})


@dataclass(frozen=True)
class ExitRuleConfig(Config):
    """Parameters of the patience exit rule (see the module docstring for the rule itself)."""

    config_name = "exit rule"

    initial_patience: tuple[float, float, float] = _field(
        (3.0, 5.0, 8.0), "Patience at the start of a session for activity level low, mid, high.")
    unsatisfying_below: float = _field(3.0, "A rating strictly below this is unsatisfying (stars).")
    drop_per_unsatisfying: float = _field(1.0, "Patience lost per unsatisfying or unrated item.")
    recover_at: float = _field(4.0, "A rating at or above this is liked and restores some patience.")
    recover_per_liked: float = _field(0.5, "Patience regained per liked item (capped at the initial value).")
    base: float = _field(0.02, "Leave probability per step of a user with patience left, in [0, 1).")
    steepness: float = _field(1.5, "Slope of the sigmoid from patience to leave probability (> 0).")

    def __post_init__(self) -> None:
        errors: list[str] = []
        patience = self.initial_patience
        if not isinstance(patience, tuple):
            patience = tuple(patience)
            object.__setattr__(self, "initial_patience", patience)
        if len(patience) != 3 or not all(
            isinstance(p, (int, float)) and math.isfinite(p) and p > 0 for p in patience
        ):
            errors.append(
                "initial_patience must be three positive numbers (low, mid, high activity), "
                f"got {patience!r}"
            )
        elif list(patience) != sorted(patience):
            errors.append(
                f"initial_patience must not decrease with activity (low <= mid <= high), got {patience!r}"
            )
        for name in ("drop_per_unsatisfying", "recover_per_liked"):
            if not getattr(self, name) >= 0:
                errors.append(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.base < 1.0:
            errors.append(f"base must be in [0, 1), got {self.base!r}")
        if not self.steepness > 0:
            errors.append(f"steepness must be > 0, got {self.steepness!r}")
        if not self.recover_at >= self.unsatisfying_below:
            errors.append(
                f"recover_at ({self.recover_at}) must be >= unsatisfying_below ({self.unsatisfying_below})"
            )
        if errors:
            raise ConfigError("invalid ExitRuleConfig: " + "; ".join(errors))


def activity_levels_from_counts(counts: np.ndarray) -> np.ndarray:
    """Activity levels 0/1/2 from train rating counts: the terciles of ``counts`` in the population.

    Used for users without a distilled profile. Ties at a tercile boundary go to the lower level.

    Example:
        >>> activity_levels_from_counts(np.array([10, 20, 30, 40, 50, 60])).tolist()
        [0, 0, 1, 1, 2, 2]
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = np.quantile(counts, [1 / 3, 2 / 3])
    return np.where(counts <= lo, 0, np.where(counts <= hi, 1, 2)).astype(np.int64)


def train_activity_levels(train: Any) -> dict[int, int]:
    """``{user_id: activity level}`` from a train frame (``user_id`` column): the terciles of the
    users' train rating counts (:func:`activity_levels_from_counts`)."""
    counts = train.groupby("user_id").size()
    levels = activity_levels_from_counts(counts.to_numpy())
    return dict(zip(counts.index.to_numpy().tolist(), levels.tolist(), strict=True))


class PatienceExitRule:
    """The vectorised patience rule (see the module docstring).

    Example:
        >>> rule = PatienceExitRule()
        >>> p = rule.initial(np.array([0, 2]))
        >>> p.tolist()
        [3.0, 8.0]
        >>> p = rule.update(p, np.array([1.0, np.nan]))   # both unsatisfying
        >>> p.tolist()
        [2.0, 7.0]
        >>> bool(rule.leave_probability(p)[0] > rule.leave_probability(p)[1])
        True
    """

    def __init__(self, config: ExitRuleConfig | None = None) -> None:
        self.config = config or ExitRuleConfig()
        self._initial = np.asarray(self.config.initial_patience, dtype=np.float64)

    def initial(self, activity_levels: np.ndarray) -> np.ndarray:
        """Starting patience per session from activity levels (0 low, 1 mid, 2 high)."""
        levels = np.asarray(activity_levels, dtype=np.int64)
        return self._initial[np.minimum(np.maximum(levels, 0), 2)]

    def update(
        self,
        patience: np.ndarray,
        ratings: np.ndarray,
        initial: np.ndarray | None = None,
    ) -> np.ndarray:
        """Patience after one more item per session; ``ratings`` NaN = not rated (unsatisfying).

        Args:
            patience: ``(n,)`` current patience.
            ratings: ``(n,)`` the step's ratings (NaN where the user rated nothing).
            initial: ``(n,)`` each session's starting patience, the cap for recovery (no cap if None).
        """
        cfg = self.config
        r = np.asarray(ratings, dtype=np.float64)
        unsatisfying = np.isnan(r) | (r < cfg.unsatisfying_below)
        liked = ~np.isnan(r) & (r >= cfg.recover_at)
        out = patience - cfg.drop_per_unsatisfying * unsatisfying + cfg.recover_per_liked * liked
        if initial is not None:
            out = np.minimum(out, initial)
        return out

    def leave_probability(self, patience: np.ndarray) -> np.ndarray:
        """``base + (1 - base) * sigmoid(-steepness * patience)`` per session."""
        cfg = self.config
        z = np.minimum(np.maximum(cfg.steepness * np.asarray(patience, dtype=np.float64), -50.0), 50.0)
        return cfg.base + (1.0 - cfg.base) / (1.0 + np.exp(z))

    def patience_after(
        self, activity_levels: np.ndarray, sessions: Sequence[Sequence[float]]
    ) -> np.ndarray:
        """Replay whole sessions (rating sequences, NaN = unrated) from their starting patience."""
        initial = self.initial(activity_levels)
        patience = initial.copy()
        for j, ratings in enumerate(sessions):
            patience[j] = self.replay(float(initial[j]), float(initial[j]), ratings)
        return patience

    def replay(self, patience: float, cap: float, ratings: Iterable[float]) -> float:
        """One session's patience after ``ratings`` (NaN = unrated), starting from ``patience``,
        recovering up to ``cap``.

        Plain Python: sessions are short and ragged, and this runs inside every env step.
        """
        cfg = self.config
        drop, gain = cfg.drop_per_unsatisfying, cfg.recover_per_liked
        low, high = cfg.unsatisfying_below, cfg.recover_at
        p = patience
        for r in ratings:
            if r != r or r < low:  # NaN (unrated) or unsatisfying
                p -= drop
            elif r >= high:
                p = min(p + gain, cap)
        return p
