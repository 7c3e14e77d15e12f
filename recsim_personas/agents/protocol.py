"""The user-agent seam: what a simulated user answers when an item is recommended.

Following RecSim's decomposition, a user model separates *responding* to a recommendation
(:meth:`UserAgent.rate`) from *deciding to leave* (:meth:`UserAgent.leave_probability`); sampling a
user and updating the session state live in the environment. Every call is batched: the vector
environment sends one request per sub-environment and the language-model agent answers all of them
in one forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from recsim_personas.data.dataset import RatingScale

__all__ = ["RatingBatch", "Scorer", "SessionEvent", "UserAgent"]


@dataclass(frozen=True)
class SessionEvent:
    """One step of a session so far: the item shown and the rating the user gave it."""

    item_id: int
    rating: float


@dataclass
class RatingBatch:
    """An agent's answer for ``n`` (user, item) requests.

    Attributes:
        probs: ``(n, n_levels)`` probability of each level of ``scale.levels``; rows sum to 1.
        outside_mass: ``(n,)`` probability mass the model put outside the scale's tokens before
            renormalisation (0 for agents that are not language models).
        valid: ``(n,)`` False where the agent produced no valid rating (``generate`` mode); such
            rows count in URR and their ``probs`` are uniform.
    """

    probs: np.ndarray
    outside_mass: np.ndarray
    valid: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def __post_init__(self) -> None:
        if self.valid.size == 0:
            self.valid = np.ones(len(self.probs), dtype=bool)

    def expectation(self, scale: RatingScale) -> np.ndarray:
        """Expected rating per request."""
        return self.probs @ scale.levels

    def sample(self, scale: RatingScale, rng: np.random.Generator) -> np.ndarray:
        """One rating per request drawn from ``probs`` with ``rng`` (inverse-CDF, one uniform each)."""
        u = rng.random(len(self.probs))
        cdf = np.cumsum(self.probs, axis=1)
        idx = np.minimum((cdf < u[:, None]).sum(axis=1), self.probs.shape[1] - 1)
        return scale.levels[idx]


@runtime_checkable
class UserAgent(Protocol):
    """A simulated user population: rates items and decides when to leave, in batches."""

    scale: RatingScale

    def rate(self, user_ids: Sequence[int], item_ids: Sequence[int]) -> RatingBatch:
        """Rating distributions of ``user_ids[j]`` for ``item_ids[j]``."""
        ...

    def leave_probability(
        self, user_ids: Sequence[int], sessions: Sequence[Sequence[SessionEvent]]
    ) -> np.ndarray:
        """Probability that each user leaves now, given the session so far (``(n,)`` array)."""
        ...


@runtime_checkable
class Scorer(Protocol):
    """What the LM agent needs from a scorer: the in-process
    :class:`~recsim_personas.agents.scoring.RatingScorer` or the served
    :class:`~recsim_personas.agents.served.ServedRatingScorer` (``None`` adapter = base model)."""

    scale: RatingScale
    tokenizer: Any
    stats: dict[str, int]

    @property
    def adapters(self) -> tuple[str, ...]: ...

    @property
    def max_prompt_tokens(self) -> int: ...

    def check_adapters(self, names: Sequence[str | None]) -> None: ...

    def score(self, prompts: Sequence[Any], adapter_names: Any = None) -> RatingBatch: ...

    def choice_probs(
        self, prompts: Sequence[Any], adapter_names: Any = None, options: Sequence[str] = ("A", "B")
    ) -> tuple[np.ndarray, np.ndarray]: ...

    def generate(
        self, prompts: Sequence[Any], adapter_names: Any = None, seed: int | None = None
    ) -> tuple[list[str], RatingBatch]: ...

    def warm(self, prompts: Sequence[Any], adapter_names: Any = None) -> int: ...

    def cache_info(self) -> dict[str, int]: ...

    def clear_cache(self) -> None: ...
